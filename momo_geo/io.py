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
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.crs
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from momo_geo import crs as mcrs
from momo_geo.errors import MomoGeoError
from momo_geo.outputs import staged_output
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
    declared_crs: str | None = None
    """The CRS the file declares, when ``assume_mars`` read its coordinates on Mars (``crs`` is
    then the Mars equivalent); ``None`` when ``crs`` is the file's own."""

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


def open_scene(path: str | os.PathLike[str], require_georeference: bool = True, *,
               assume_mars: bool = False) -> Scene:
    """Open a raster and describe it, or raise a one-line :class:`MomoGeoError`.

    The georeference is checked here, once: a NaN or zero pixel size, a rotated or sheared grid,
    or an outline past the poles is refused in one line (a GSD of "nan" or a latitude of 215°S
    would otherwise reach the user, or an internal error the engine). ``assume_mars`` reads the
    coordinates of a scene labelled with another body's CRS on the Mars sphere
    (:func:`momo_geo.crs.on_mars`); the scene's ``crs`` is then the Mars equivalent.
    """
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
    _check_grid(path, transform)
    declared = None
    if crs is not None and assume_mars and mcrs.body_of(crs) != "Mars":
        declared = mcrs.label(crs)
        try:
            crs = rasterio.crs.CRS.from_wkt(mcrs.on_mars(crs).to_wkt())
        except MomoGeoError as exc:
            raise MomoGeoError(f"{path}: {exc}") from None
    body = mcrs.body_of(crs) if crs is not None else "unknown"
    if crs is not None:
        with np.errstate(all="ignore"):
            gsd_xy = mcrs.pixel_size_m(crs, transform, width / 2, height / 2)
    else:
        gsd_xy = (abs(transform.a), abs(transform.e))
    scene = Scene(
        path=path, width=width, height=height, count=count, dtype=dtype, crs=crs,
        transform=transform, gsd=float(np.sqrt(gsd_xy[0] * gsd_xy[1])), gsd_xy=gsd_xy,
        nodata=nodata, body=body, sensor=detect_sensor(path, tags), declared_crs=declared,
    )
    if crs is not None:
        _check_outline(scene)
    if not np.isfinite(scene.gsd) or scene.gsd <= 0:
        raise MomoGeoError(f"{path}: degenerate georeference: the pixel size on the ground at "
                           "the scene centre is zero or cannot be measured in "
                           f"{mcrs.describe(crs)}")
    return scene


MAX_ROTATION_DEG = 45.0
"""A map-projected product is north-up or close to it; a grid turned further is a broken
geotransform (or one a GIS should warp first), not a Mars product to map tile by tile."""
MAX_SHEAR_DEG = 5.0
"""Rows and columns of a real product are perpendicular on the map, to well within this."""


def _check_grid(path: Path, transform: Affine) -> None:
    """One line for a geotransform with NaN, a zero pixel size, an absurd rotation or shear."""
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    gdal = ", ".join(f"{v:g}" for v in (c, a, b, f, d, e))  # GDAL's order, as gdalinfo shows
    if not all(np.isfinite([a, b, c, d, e, f])):
        raise MomoGeoError(f"{path}: degenerate georeference: the geotransform holds NaN or "
                           f"infinity ({gdal})")
    column, row = np.hypot(a, d), np.hypot(b, e)
    if column == 0 or row == 0 or a * e - b * d == 0:
        raise MomoGeoError(f"{path}: degenerate georeference: the pixel size is zero "
                           f"(geotransform {gdal})")
    rotation = float(np.degrees(np.arctan2(d, a)))
    if abs(rotation) > MAX_ROTATION_DEG:
        raise MomoGeoError(f"{path}: degenerate georeference: the pixel grid is rotated by "
                           f"{rotation:.0f}° from map east (at most {MAX_ROTATION_DEG:g}° is "
                           "plausible); fix the geotransform or warp the scene north-up")
    shear = 90.0 - float(np.degrees(np.arccos(min(1.0, abs(a * b + d * e) / (column * row)))))
    if shear > MAX_SHEAR_DEG:
        raise MomoGeoError(f"{path}: degenerate georeference: pixel rows and columns are "
                           f"{90 - shear:.0f}° apart on the map, not 90°")


def _check_outline(scene: Scene) -> None:
    """One line for a scene whose outline leaves its body: past a pole, or off the projection."""
    with np.errstate(all="ignore"):
        try:
            west, south, east, north = scene.bounds_lonlat()
        except Exception:  # PROJ refuses points outside the projection's domain
            west = south = east = north = float("nan")
    if not all(np.isfinite([west, south, east, north])):
        raise MomoGeoError(f"{scene.path}: degenerate georeference: parts of the scene lie "
                           f"outside {mcrs.describe(scene.crs)} (past a pole, or off the "
                           "projection)")
    # a global mosaic registered at pixel centres reaches half a pixel past the poles: allowed
    metres_per_degree = np.pi * mcrs.as_crs(scene.crs).ellipsoid.semi_major_metre / 180.0
    pixel = max(scene.gsd_xy) if np.isfinite(scene.gsd) else 0.0
    tolerance = 1e-6 + pixel / metres_per_degree
    if south < -90.0 - tolerance or north > 90.0 + tolerance:
        pole = f"{abs(south):.1f}°S" if south < -90.0 - tolerance else f"{north:.1f}°N"
        raise MomoGeoError(f"{scene.path}: degenerate georeference: the scene reaches {pole}, "
                           "past the pole (check the geotransform's origin and pixel size)")


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


def nodata_fraction(path: str | os.PathLike[str], max_pixels: int = 4_000_000,
                    nodata: float | None = None) -> float:
    """Fraction of nodata pixels, from a decimated read (overviews when present) for big scenes.

    ``nodata``: a value that is nodata besides what the file declares (``--nodata``).
    """
    try:
        with rasterio.open(path) as src:
            factor = max(1, int(np.ceil(np.sqrt(src.width * src.height / max_pixels))))
            shape = (max(1, src.height // factor), max(1, src.width // factor))
            valid = src.dataset_mask(out_shape=shape) > 0
            if nodata is not None:
                data = src.read(out_shape=(src.count, *shape))
                valid &= (data != np.asarray(nodata, data.dtype)).any(axis=0)
    except RasterioIOError as exc:
        raise MomoGeoError(f"{path}: cannot read its pixels, the file may be truncated or "
                           f"corrupt ({_first_line(exc)})") from None
    return float((~valid).mean())


def check_nodata(scene: Scene, nodata: float | None) -> None:
    """One line unless ``nodata`` (``--nodata``) is a value the scene's pixels can hold."""
    if nodata is None:
        return
    if not np.isfinite(nodata):
        raise MomoGeoError(f"--nodata must be a finite number, not {nodata}; NaN pixels of "
                           "float scenes are always nodata")
    kind = np.dtype(scene.dtype)
    if kind.kind in "iu":
        info = np.iinfo(kind)
        if nodata != int(nodata) or not info.min <= nodata <= info.max:
            raise MomoGeoError(f"--nodata {nodata:g} is not a value {scene.path.name}'s "
                               f"{scene.dtype} pixels can hold ({info.min} to {info.max})")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], overwrite: bool = False,
                  inputs: Iterable[str | os.PathLike[str]] = ()) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` to; move it (and sidecars) into place on success.

    The file is reserved first (a second run writing it fails at once), written under a neutral
    name in a hidden staging folder beside ``path`` (same file system, so the final move is a
    rename) and renamed into place with every sidecar written beside it (a shapefile's
    ``.shx``/``.dbf``/``.prj``; the main file last). On any exception, including
    KeyboardInterrupt, the staging folder and the reservation go and nothing appears at ``path``.
    ``overwrite`` replaces an existing file, never a folder (:mod:`momo_geo.outputs`).
    """
    with staged_output(path, overwrite, inputs) as staged:
        yield staged
