"""TorchGeo raster datasets for map-projected HiRISE, CTX and THEMIS products.

Each class finds its sensor's files by product ID in the file name (the names PDS and the
instrument teams use) or, for files with other names, by the instrument named in their GDAL
metadata. Images are single-band ("grey"; the first band of multi-band products). The source CRS
is kept as read — IAU_2015 codes, ESRI Mars codes or custom WKT — unless ``crs`` is given; mixing
files or a target CRS of different celestial bodies is refused rather than silently reprojected.
Every sample carries ``valid``, the (H, W) mask of pixels holding data, so nodata collars can be
ignored in losses; use :class:`~momo_geo.datasets.samplers.ValidGeoSampler` not to sample them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import rasterio
import torch
from affine import Affine
from rasterio.errors import RasterioIOError
from torchgeo.datasets import RasterDataset

from momo_geo import crs as mcrs
from momo_geo.datasets.samplers import valid_mask
from momo_geo.errors import MomoGeoError
from momo_geo.sensors import CTX as CTX_SENSOR
from momo_geo.sensors import HIRISE as HIRISE_SENSOR
from momo_geo.sensors import THEMIS as THEMIS_SENSOR
from momo_geo.sensors import Sensor, detect_sensor

_RASTER_SUFFIX = r"\.(?:tif|tiff|jp2|img|cub|vrt)$"
# Metadata of elevation products (HiRISE/CTX DTMs name the camera too, but are not images).
_ELEVATION = re.compile(r"(?<![A-Z])(?:DTM|DEM|DIGITAL TERRAIN|ELEVATION)(?![A-Z])")


class MarsRasterDataset(RasterDataset):
    """Georeferenced single-band Mars rasters of one sensor (or any, for this base class).

    Args:
        paths: folders to search (recursively) or files.
        crs: CRS to warp to (default: that of the first file). Must be on the files' body.
        res: pixel size in units of the CRS (metres for projected Mars CRSs, degrees for
            geographic ones; default: that of the first file).
        transforms: a function applied to each sample dict.
        cache: keep file handles open between samples.
        by_metadata: also accept files whose name has no product ID of this sensor but whose
            GDAL metadata names its instrument (e.g. mosaics, momo-geo's synthetic scenes).
    """

    filename_glob = "*"
    filename_regex = r"(?i)^.*" + _RASTER_SUFFIX
    all_bands = ("grey",)
    is_image = True
    sensor: ClassVar[Sensor | None] = None

    def __init__(self, paths: str | Path | Iterable[str | Path] = "data", crs: Any = None,
                 res: float | tuple[float, float] | None = None,
                 transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 cache: bool = True, by_metadata: bool = True) -> None:
        self.paths = paths
        self.by_metadata = by_metadata
        target = mcrs.as_crs(crs) if crs is not None else None
        files, crss = self._select_files()
        if not files:
            what = self.sensor.title if self.sensor else "Mars raster"
            raise MomoGeoError(f"no georeferenced {what} files found in {paths}")
        mcrs.check_same_body(*([target] if target is not None else []), *crss)
        # TorchGeo matches file names against filename_regex; the selection is done already.
        self.product_regex = type(self).filename_regex
        self.filename_regex = ".*"
        super().__init__(files, crs=target, res=res, transforms=transforms, cache=cache)

    def _select_files(self) -> tuple[list[str], list[Any]]:
        pattern = re.compile(type(self).filename_regex, re.VERBOSE)
        files, crss = [], []
        for filepath in RasterDataset.files.fget(self):  # type: ignore[attr-defined]
            name = Path(filepath).name
            by_name = pattern.match(name) is not None
            if not by_name and not (self.by_metadata and self.sensor is not None):
                continue
            try:
                with rasterio.open(filepath) as src:
                    tags = dict(src.tags())
                    crs, transform = src.crs, src.transform
            except RasterioIOError:
                continue
            if not by_name and (detect_sensor(None, tags) is not self.sensor
                                or _ELEVATION.search(" ".join(tags.values()).upper())):
                continue
            if crs is None or transform == Affine.identity():
                if by_name:
                    raise MomoGeoError(f"{filepath}: has no georeference (no CRS or geotransform)")
                continue
            files.append(filepath)
            crss.append(crs)
        return files, crss

    def __getitem__(self, query: Any) -> dict[str, Any]:
        sample = super().__getitem__(query)
        sample["valid"] = torch.from_numpy(valid_mask(self, query))
        return sample


class HiRISE(MarsRasterDataset):
    """HiRISE (MRO) map-projected RDR images, e.g. ``ESP_037156_1800_RED.JP2``.

    Source: HiRISE PDS archive, https://hirise-pds.lpl.arizona.edu/PDS/RDR/ (NASA/JPL/University
    of Arizona). RED products are 0.25-0.5 m/px; momo-geo's scene tests use a 25 m/px reduction.
    """

    filename_regex = (r"(?i)^(?P<product_id>(?P<phase>ESP|PSP|AEB|INT|CAL)_(?P<orbit>\d{6})_"
                      r"(?P<target>\d{4})(?:_(?P<product>[A-Z]+\d*))?)[._A-Za-z0-9-]*"
                      + _RASTER_SUFFIX)
    sensor = HIRISE_SENSOR


class CTX(MarsRasterDataset):
    """CTX (MRO Context Camera) map-projected images, e.g. ``B01_009910_1810_XI_01N077W.tif``.

    Source: CTX EDRs in the PDS Imaging Node (https://pds-imaging.jpl.nasa.gov/volumes/mro.html),
    map-projected with ISIS (~5-6 m/px), or the Murray Lab global CTX mosaic tiles.
    """

    filename_regex = (r"(?i)^(?P<product_id>(?P<phase>[A-Z]\d{2})_(?P<orbit>\d{6})_"
                      r"(?P<target>\d{4})_(?P<mode>X[A-Z])_(?P<lat>\d{2}[NS])(?P<lon>\d{3}[EW]))"
                      r"[._A-Za-z0-9-]*" + _RASTER_SUFFIX)
    sensor = CTX_SENSOR


class THEMIS(MarsRasterDataset):
    """THEMIS (Mars Odyssey) images, e.g. ``I01234002_RI.tif``, or THEMIS mosaic tiles.

    Source: THEMIS RDRs/PBT products from the ASU THEMIS archive (https://themis-data.asu.edu)
    and PDS; the global daytime-IR mosaic (100 m/px) names its tiles ``THEMIS_...``.
    """

    filename_regex = (r"(?i)^(?:(?P<band>[IV])(?P<orbit>\d{5})(?P<seq>\d{3})(?![0-9])|"
                      r".*THEMIS)[._A-Za-z0-9-]*" + _RASTER_SUFFIX)
    sensor = THEMIS_SENSOR


RASTER_DATASETS: dict[str, type[MarsRasterDataset]] = {
    "hirise": HiRISE, "ctx": CTX, "themis": THEMIS,
}
