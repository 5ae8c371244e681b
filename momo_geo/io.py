"""Opening scenes and writing outputs safely.

:func:`open_scene` turns any GDAL-readable raster into a :class:`Scene` record (size, CRS,
transform, GSD on its body, nodata, sensor) or a one-line :class:`~momo_geo.errors.MomoGeoError`.
:func:`atomic_output` is how every output file is written: into a hidden temporary folder beside
the target, moved into place only when complete, removed on any failure, so a crash or Ctrl-C never
leaves a half-written file under the user's chosen name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from momo_geo import crs as mcrs
from momo_geo.errors import MomoGeoError
from momo_geo.sensors import Sensor, detect_sensor


@dataclass(frozen=True)
class Scene:
    """What momo-geo knows about an input raster; a plain value, cheap to pass around."""

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: object  # rasterio.crs.CRS, kept exactly as read
    transform: Affine
    gsd: float
    """Ground sampling distance in metres per pixel on the scene's body, at the scene centre."""
    gsd_xy: tuple[float, float]
    nodata: float | None
    body: str
    sensor: Sensor | None

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def crs_description(self) -> str:
        return mcrs.describe(self.crs)

    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees on the scene's body, from the full outline."""
        rows = np.linspace(0, self.height, 33)
        cols = np.linspace(0, self.width, 33)
        edge = np.concatenate([
            np.column_stack([cols, np.zeros_like(cols)]),
            np.column_stack([cols, np.full_like(cols, self.height)]),
            np.column_stack([np.zeros_like(rows), rows]),
            np.column_stack([np.full_like(rows, self.width), rows]),
        ])
        xs, ys = self.transform @ (edge[:, 0], edge[:, 1])
        lon, lat = mcrs.lonlat_transformer(self.crs).transform(xs, ys)
        # Longitudes as PROJ gives them ([-180, 180]) unless a scene smaller than a hemisphere
        # crosses the antimeridian: then in [0, 360) so west < east stays true.
        lon = np.asarray(lon, dtype=float)
        lon360 = lon % 360.0
        if np.ptp(lon) > 180.0 and np.ptp(lon360) < 180.0:
            lon = lon360
        return float(lon.min()), float(np.min(lat)), float(lon.max()), float(np.max(lat))


# GDAL metadata domains whose values quote the file's own path (a folder called "hirise_scene" or
# "ctx" must not decide the sensor).
_PATH_DOMAINS = frozenset({"DERIVED_SUBDATASETS", "SUBDATASETS"})


def open_scene(path: str | os.PathLike[str], require_georeference: bool = True) -> Scene:
    """Open a raster and describe it, or raise a one-line :class:`MomoGeoError`."""
    path = Path(path)
    if not path.exists():
        raise MomoGeoError(f"{path}: no such file")
    if path.is_dir():
        raise MomoGeoError(f"{path}: is a folder, not a raster")
    try:
        with warnings.catch_warnings():
            # An ungeoreferenced file is reported below in one line, not as a library warning.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
        with src:
            tags = dict(src.tags())
            for domain in src.tag_namespaces() or []:
                if domain in _PATH_DOMAINS:
                    continue  # these repeat the file's path: its folder names are not metadata
                with contextlib.suppress(Exception):
                    tags.update({f"{domain}:{k}": v for k, v in src.tags(ns=domain).items()})
            crs, transform = src.crs, src.transform
            width, height, count = src.width, src.height, src.count
            dtype, nodata = src.dtypes[0], src.nodata
            # A truncated or damaged file often opens (its header is intact) and fails on the
            # first pixel read; reading the first and the last block finds that cheaply.
            src.read(1, window=Window(0, 0, 1, 1))
            src.read(1, window=Window(width - 1, height - 1, 1, 1))
    except RasterioIOError as exc:
        raise MomoGeoError(f"{path}: not a readable raster, or truncated or corrupt "
                           f"({_first_line(_root_cause(exc))})") from None
    if require_georeference and (crs is None or transform == Affine.identity()):
        raise MomoGeoError(
            f"{path}: has no georeference (no CRS or geotransform); momo-geo needs a map-projected "
            "scene to write georeferenced outputs"
        )
    body = mcrs.body_of(crs) if crs is not None else "unknown"
    if crs is not None:
        gsd_xy = mcrs.pixel_size_m(crs, transform, width / 2, height / 2)
    else:
        gsd_xy = (abs(transform.a), abs(transform.e))
    return Scene(
        path=path, width=width, height=height, count=count, dtype=dtype, crs=crs,
        transform=transform, gsd=float(np.sqrt(gsd_xy[0] * gsd_xy[1])), gsd_xy=gsd_xy,
        nodata=nodata, body=body, sensor=detect_sensor(path, tags),
    )


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception (rasterio's "Read failed" wraps GDAL's actual reason)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_valid_mask(src: rasterio.DatasetReader, window: Window) -> np.ndarray:
    """Valid pixels in ``window``, from GDAL's dataset mask (nodata value, alpha or mask band)."""
    return src.dataset_mask(window=window, boundless=False) > 0


def nodata_fraction(path: str | os.PathLike[str], max_pixels: int = 4_000_000) -> float:
    """Fraction of nodata pixels, from a decimated read (overviews when present) for big scenes."""
    try:
        with rasterio.open(path) as src:
            factor = max(1, int(np.ceil(np.sqrt(src.width * src.height / max_pixels))))
            shape = (max(1, src.height // factor), max(1, src.width // factor))
            mask = src.dataset_mask(out_shape=shape)
    except RasterioIOError as exc:
        raise MomoGeoError(f"{path}: cannot read its pixels, the file may be truncated or "
                           f"corrupt ({_first_line(exc)})") from None
    return float((mask == 0).mean())


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` to; move it (and sidecars) into place on success.

    The temporary file lives in a hidden folder next to ``path`` (same file system, so the final
    move is a rename). Every file written there whose name starts with the target's stem is moved
    (a shapefile's ``.shx``/``.dbf``/``.prj`` come along; the main file is moved last). On any
    exception, including KeyboardInterrupt, the folder is removed and nothing appears at ``path``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise MomoGeoError(f"{path} exists; pass --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise MomoGeoError(f"{parent}: output folder does not exist")
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=parent))
    try:
        yield staging / path.name
        produced = sorted(staging.iterdir(), key=lambda p: p.name == path.name)
        if not any(p.name == path.name for p in produced):
            raise MomoGeoError(f"{path}: nothing was written")
        stem = path.name[: -len(path.suffix)] if path.suffix else path.name
        for item in produced:
            if item.name == path.name or item.name.startswith(stem + "."):
                target = parent / item.name
                if target.exists() and overwrite:
                    _remove(target)
                os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove(target: Path) -> None:
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
