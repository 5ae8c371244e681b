"""Synthetic Mars crater fields with exact ground truth.

Why this exists: the demo, the tests and the benchmarks need a georeferenced scene whose every
crater is known. Real labelled Mars scenes are either small, unlicensed for redistribution or not
georeferenced, so momo-geo renders its own, physically plausible ones:

* **Craters** are placed uniformly at random; diameters follow a truncated power-law
  size-frequency distribution (cumulative ``N(>D) ∝ D^-slope``, slope ≈ 2 as for small fresh
  Martian craters). Each is a simple crater: a parabolic bowl of depth ≈ 0.2 D, a raised rim
  (≈ 0.04 D) and an ejecta blanket whose thickness falls off as ``r^-3`` to 3 radii. A later
  crater overprints (erases) the relief of earlier ones inside its rim.
* **Surface**: regional undulation plus multi-scale "regolith" roughness (value noise, octaves from
  2 to 32 px), an albedo pattern, and sensor noise.
* **Image**: slopes of that elevation model, Lambertian shading under the given sun azimuth
  (clockwise from the image's up direction = grid north) and elevation, to 8-bit DN. Shadows are
  not ray-traced (low sun elevations darken sun-facing-away walls only).
* **Georeference**: a real Mars CRS (default ``IAU_2015:49910``, equirectangular) centred on a
  chosen lon/lat. The pixel size in CRS units is chosen so that one pixel is ``gsd`` metres *on the
  ground* at the scene centre; craters are therefore round on the ground.

Every random quantity is a pure function of the seed and of *global* pixel coordinates (hashed
value noise), and each crater is rendered into every block it overlaps, so a scene written block by
block (:func:`write_crater_field_streaming`, bounded memory, used for 16384² benchmark scenes) is
identical to the same scene rendered in one piece (:func:`render_crater_field`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from affine import Affine
from pyproj import CRS, Transformer

from momo_geo import crs as mcrs
from momo_geo.errors import MomoGeoError

NODATA = 0
"""Image value reserved for nodata (the frame) when a scene has one."""
TRUTH_NODATA = 255
"""Truth-mask value where the image is nodata."""

CRATER_COLUMNS = ["id", "x_m", "y_m", "lon", "lat", "diameter_m", "depth", "rim_height",
                  "col", "row", "visible"]
"""Columns of the crater table. ``x_m``/``y_m`` are CRS coordinates of the centre, ``col``/``row``
its pixel position (pixel-corner convention), ``depth`` and ``rim_height`` are in metres,
``visible`` says whether the centre lies on valid (non-frame) pixels."""

_EJECTA_REACH = 3.0  # ejecta blanket extent, in crater radii


@dataclass
class CraterField:
    """A rendered scene: image, truth mask, crater table and georeference."""

    image: np.ndarray
    """uint8 (H, W); 0 only where nodata (frame) when ``nodata`` is set."""
    truth: np.ndarray
    """uint8 (H, W): 1 inside crater rims, 0 background, 255 where the image is nodata."""
    craters: pd.DataFrame
    """One row per crater whose centre lies in the scene (see :data:`CRATER_COLUMNS`)."""
    crs: CRS
    transform: Affine
    gsd: float
    nodata: int | None
    tags: dict[str, str] = field(default_factory=dict)
    """GeoTIFF metadata: synthetic flag, generator, sun geometry, GSD, seed, instrument."""


@dataclass(frozen=True)
class _Scene:
    """Everything that fixes a scene, independent of how it is cut into blocks."""

    height: int
    width: int
    gsd: float
    seed: int
    sun_azimuth: float
    sun_elevation: float
    crs: CRS
    transform: Affine
    frame: int
    craters: pd.DataFrame
    tags: dict[str, str]


# --------------------------------------------------------------------------------------------
# scene set-up


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int | np.integer):
        height = width = int(size)
    else:
        height, width = (int(v) for v in size)
    if height < 16 or width < 16:
        raise MomoGeoError(f"scene size {height} x {width} px is too small (at least 16 x 16)")
    return height, width


def _georeference(crs: Any, center_lonlat: tuple[float, float], gsd: float,
                  height: int, width: int) -> tuple[CRS, Affine]:
    """Transform whose pixels measure ``gsd`` metres on the ground at the scene centre."""
    crs = mcrs.as_crs(crs)
    if not mcrs.is_mars(crs):
        raise MomoGeoError(f"synthetic scenes are Martian; {mcrs.describe(crs)} is not a Mars CRS")
    lon, lat = center_lonlat
    if not (-90.0 < lat < 90.0):
        raise MomoGeoError(f"centre latitude {lat} is outside (-90, 90)")
    to_crs = Transformer.from_crs(mcrs.geographic_of(crs), crs, always_xy=True)
    geod = mcrs.geod_of(crs)
    step = 100.0  # metres on the ground, to measure the local scale of the projection
    east_lon, east_lat, _ = geod.fwd(lon, lat, 90.0, step)
    north_lon, north_lat, _ = geod.fwd(lon, lat, 0.0, step)
    xs, ys = to_crs.transform([lon, east_lon, north_lon], [lat, east_lat, north_lat])
    if not np.all(np.isfinite(xs)) or not np.all(np.isfinite(ys)):
        raise MomoGeoError(f"centre {lon}, {lat} cannot be projected to {crs.name}")
    scale_x = math.hypot(xs[1] - xs[0], ys[1] - ys[0]) / step
    scale_y = math.hypot(xs[2] - xs[0], ys[2] - ys[0]) / step
    px_x, px_y = gsd * scale_x, gsd * scale_y
    transform = Affine(px_x, 0.0, xs[0] - width / 2 * px_x, 0.0, -px_y, ys[0] + height / 2 * px_y)
    return crs, transform


def _instrument_for(gsd: float) -> str | None:
    """The camera whose nominal GSD the scene imitates (so detection sees a plausible sensor)."""
    from momo_geo.sensors import SENSORS

    for sensor in SENSORS.values():
        low, high = sensor.gsd_range
        if low <= gsd <= high:
            return f"{sensor.instrument.split(' (')[0].upper()} (simulated)"
    return None


def _power_law_diameters(rng: np.random.Generator, n: int, d_min: float, d_max: float,
                         slope: float) -> np.ndarray:
    """Inverse-CDF samples of a truncated cumulative power law N(>D) ∝ D^-slope."""
    u = rng.random(n)
    ratio = (d_min / d_max) ** slope
    return d_min * (1.0 - u * (1.0 - ratio)) ** (-1.0 / slope)


def _mean_disc_area(d_min: float, d_max: float, slope: float) -> float:
    d = np.geomspace(d_min, d_max, 2048)
    pdf = slope * d_min**slope * d ** (-slope - 1) / (1 - (d_min / d_max) ** slope)
    # numpy 2 removed trapz; numpy 1.x has no trapezoid
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    return float(trapezoid(math.pi / 4 * d**2 * pdf, d))


def _make_scene(size: int | tuple[int, int], gsd: float, seed: int, sun_azimuth: float,
                sun_elevation: float, min_diameter_m: float | None,
                max_diameter_m: float | None, crater_cover: float,
                density_per_km2: float | None, sfd_slope: float, depth_ratio: float, crs: Any,
                center_lonlat: tuple[float, float], nodata_frame: bool | int) -> _Scene:
    height, width = _size(size)
    if not gsd > 0:
        raise MomoGeoError(f"GSD must be positive, got {gsd}")
    if not 0 < sun_elevation <= 90:
        raise MomoGeoError(f"sun elevation must be in (0, 90] degrees, got {sun_elevation}")
    d_min = float(min_diameter_m) if min_diameter_m is not None else 8.0 * gsd
    d_max = float(max_diameter_m) if max_diameter_m is not None else 60.0 * gsd
    if not 0 < d_min < d_max:
        raise MomoGeoError(f"need 0 < min diameter < max diameter, got {d_min} and {d_max} m")
    frame = 0 if nodata_frame is False else (16 if nodata_frame is True else int(nodata_frame))
    if frame < 0 or 2 * frame >= min(height, width):
        raise MomoGeoError(f"nodata frame of {frame} px does not fit a {height} x {width} scene")
    crs, transform = _georeference(crs, center_lonlat, gsd, height, width)

    rng = np.random.default_rng(seed)
    margin = d_max / gsd / 2 * _EJECTA_REACH  # px: craters outside still reach in
    area_km2 = (height + 2 * margin) * (width + 2 * margin) * gsd**2 / 1e6
    if density_per_km2 is None:
        density_per_km2 = crater_cover * 1e6 / _mean_disc_area(d_min, d_max, sfd_slope)
    n = int(rng.poisson(density_per_km2 * area_km2))
    diameter = _power_law_diameters(rng, n, d_min, d_max, sfd_slope)
    col = rng.uniform(-margin, width + margin, n)
    row = rng.uniform(-margin, height + margin, n)
    depth = depth_ratio * diameter * rng.uniform(0.8, 1.2, n)
    rim = 0.2 * depth * rng.uniform(0.8, 1.2, n)
    x, y = transform @ (col, row)
    lon, lat = mcrs.lonlat_transformer(crs).transform(x, y)
    lon = (np.asarray(lon) + 180.0) % 360.0 - 180.0
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    visible = ((col >= frame) & (col < width - frame) & (row >= frame) & (row < height - frame))
    craters = pd.DataFrame({
        "id": np.arange(n), "x_m": x, "y_m": y, "lon": lon, "lat": np.asarray(lat),
        "diameter_m": diameter, "depth": depth, "rim_height": rim, "col": col, "row": row,
        "visible": visible,
    })
    # Rows outside the scene are kept internally (they still shape its edges) but flagged.
    craters["inside"] = inside

    from momo_geo import __version__

    tags = {
        "SYNTHETIC": "YES",
        "GENERATOR": f"momo-geo {__version__} synthetic crater field",
        "TARGET_NAME": "MARS",
        "SEED": str(seed),
        "GSD_M": f"{gsd:g}",
        "SUN_AZIMUTH": f"{sun_azimuth:g}",
        "SUN_ELEVATION": f"{sun_elevation:g}",
        "CRATER_SFD_SLOPE": f"{sfd_slope:g}",
        "CRATER_DIAMETER_RANGE_M": f"{d_min:g} {d_max:g}",
    }
    instrument = _instrument_for(gsd)
    if instrument:
        tags["INSTRUMENT_NAME"] = instrument
    return _Scene(height, width, float(gsd), int(seed), float(sun_azimuth),
                  float(sun_elevation), crs, transform, frame, craters, tags)


# --------------------------------------------------------------------------------------------
# seamless noise: pure functions of global pixel coordinates


_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x165667B19E3779F9)


def _hash01(iy: np.ndarray, ix: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) from integer lattice coordinates (splitmix64 finaliser), broadcasting."""
    with np.errstate(over="ignore"):
        h = (iy.astype(np.int64).astype(np.uint64) * _M1) ^ (
            ix.astype(np.int64).astype(np.uint64) * _M2) ^ (np.uint64(seed & 0xFFFFFFFF) * _M3)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return ((h >> np.uint64(40)).astype(np.float32)) * np.float32(2.0**-24)


def _value_noise(rows: np.ndarray, cols: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth noise in [-1, 1] with feature size ``scale`` px, at integer pixel rows x cols."""
    gy, gx = (rows + 0.5) / scale, (cols + 0.5) / scale
    iy, ix = np.floor(gy).astype(np.int64), np.floor(gx).astype(np.int64)
    ty, tx = gy - iy, gx - ix
    ty = (ty * ty * (3 - 2 * ty)).astype(np.float32)
    tx = (tx * tx * (3 - 2 * tx)).astype(np.float32)
    y0, x0 = iy.min(), ix.min()
    lattice = _hash01(np.arange(y0, iy.max() + 2)[:, None], np.arange(x0, ix.max() + 2)[None, :],
                      seed)
    ri, ci = iy - y0, ix - x0
    # Separable: interpolate along x on the (few) lattice rows, then pick and blend rows.
    along_x = lattice[:, ci] * (1 - tx) + lattice[:, ci + 1] * tx
    top, bottom = along_x[ri], along_x[ri + 1]
    return (top * (1 - ty)[:, None] + bottom * ty[:, None]) * 2 - 1


def _gaussian_noise(rows: np.ndarray, cols: np.ndarray, seed: int) -> np.ndarray:
    """Approximately standard-normal per-pixel noise (Irwin–Hall of four hashes)."""
    total = np.zeros((rows.size, cols.size), np.float32)
    for k in range(4):
        total += _hash01(rows[:, None], cols[None, :], seed * 7919 + 101 + k)
    return (total - 2.0) * np.float32(math.sqrt(3.0))


# --------------------------------------------------------------------------------------------
# rendering


def _render_block(scene: _Scene, row0: int, col0: int, height: int, width: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Image and truth of the block [row0:row0+height, col0:col0+width] of ``scene``."""
    gsd = scene.gsd
    # One pixel of halo all round so slopes at the block edge are those of the whole scene.
    rows = np.arange(row0 - 1, row0 + height + 1)
    cols = np.arange(col0 - 1, col0 + width + 1)
    relief = np.zeros((rows.size, cols.size), np.float32)
    truth = np.zeros((rows.size, cols.size), np.uint8)

    c = scene.craters
    radius_px = c["diameter_m"].to_numpy() / gsd / 2
    reach = radius_px * _EJECTA_REACH + 1
    ccol, crow = c["col"].to_numpy(), c["row"].to_numpy()
    hits = np.flatnonzero((ccol + reach > cols[0]) & (ccol - reach < cols[-1] + 1)
                          & (crow + reach > rows[0]) & (crow - reach < rows[-1] + 1))
    depth, rim = c["depth"].to_numpy(), c["rim_height"].to_numpy()
    for i in hits:  # chronological: later craters overprint earlier ones
        r0 = max(int(math.floor(crow[i] - reach[i])) - rows[0], 0)
        r1 = min(int(math.ceil(crow[i] + reach[i])) - rows[0], rows.size)
        c0 = max(int(math.floor(ccol[i] - reach[i])) - cols[0], 0)
        c1 = min(int(math.ceil(ccol[i] + reach[i])) - cols[0], cols.size)
        if r0 >= r1 or c0 >= c1:
            continue
        dy = (rows[r0:r1] + 0.5 - crow[i]).astype(np.float32)[:, None]
        dx = (cols[c0:c1] + 0.5 - ccol[i]).astype(np.float32)[None, :]
        r = np.sqrt(dx * dx + dy * dy) / np.float32(radius_px[i])
        bowl = rim[i] + depth[i] * (r * r - 1)
        taper = 1.0 / _EJECTA_REACH**3
        ejecta = rim[i] * (np.maximum(r, 1) ** -3 - taper) / (1 - taper)
        profile = np.where(r < 1, bowl, np.maximum(ejecta, 0)).astype(np.float32)
        # Inside the rim the new crater replaces older relief; outside, ejecta add to it.
        keep = np.clip((r - 0.9) / 0.2, 0, 1).astype(np.float32)
        window = relief[r0:r1, c0:c1]
        window *= keep
        window += profile
        truth[r0:r1, c0:c1] |= (r <= 1).astype(np.uint8)

    seed = scene.seed
    elevation = relief
    # Regional undulation and regolith roughness: RMS slope ~0.04 per octave.
    elevation += _value_noise(rows, cols, 256.0, seed + 1) * np.float32(0.02 * 256 * gsd)
    for k, scale in enumerate((2.0, 4.0, 8.0, 16.0, 32.0)):
        elevation += _value_noise(rows, cols, scale, seed + 10 + k) * np.float32(0.04 * scale * gsd)

    # Slopes (x east, y up the image) and Lambertian shading.
    dz_dx = (elevation[1:-1, 2:] - elevation[1:-1, :-2]) / np.float32(2 * gsd)
    dz_dy = (elevation[:-2, 1:-1] - elevation[2:, 1:-1]) / np.float32(2 * gsd)
    az, el = math.radians(scene.sun_azimuth), math.radians(scene.sun_elevation)
    sx, sy, sz = math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)
    lambert = (-dz_dx * sx - dz_dy * sy + sz) / np.sqrt(1 + dz_dx * dz_dx + dz_dy * dz_dy)
    shade = np.maximum(lambert, 0) / np.float32(sz)  # 1 on flat ground

    inner_rows, inner_cols = rows[1:-1], cols[1:-1]
    albedo = (1.0 + 0.10 * _value_noise(inner_rows, inner_cols, 160.0, seed + 30)
              + 0.05 * _value_noise(inner_rows, inner_cols, 24.0, seed + 31))
    dn = 25.0 + 100.0 * albedo * (0.15 + 0.85 * shade)
    dn += 3.0 * _gaussian_noise(inner_rows, inner_cols, seed + 40)
    image = np.clip(np.rint(dn), 1, 255).astype(np.uint8)
    truth = truth[1:-1, 1:-1]

    if scene.frame:
        f = scene.frame
        valid = (((inner_rows >= f) & (inner_rows < scene.height - f))[:, None]
                 & ((inner_cols >= f) & (inner_cols < scene.width - f))[None, :])
        image[~valid] = NODATA
        truth = np.where(valid, truth, TRUTH_NODATA).astype(np.uint8)
    return image, truth


def render_crater_field(size: int | tuple[int, int] = (1024, 1024), gsd: float = 6.0,
                        seed: int = 0, sun_azimuth: float = 315.0, sun_elevation: float = 30.0,
                        min_diameter_m: float | None = None,
                        max_diameter_m: float | None = None, crater_cover: float = 0.08,
                        density_per_km2: float | None = None, sfd_slope: float = 2.0,
                        depth_ratio: float = 0.2, crs: Any = "IAU_2015:49910",
                        center_lonlat: tuple[float, float] = (77.0, 18.0),
                        nodata_frame: bool | int = False) -> CraterField:
    """Render a whole crater field in memory (use the streaming writer for big scenes).

    ``size`` is ``(height, width)`` in pixels (or one int), ``gsd`` metres per pixel on the ground.
    Diameters default to 8–60 px. ``crater_cover`` is the expected fraction of the surface inside
    crater rims before overlaps, used unless ``density_per_km2`` (craters ≥ the minimum diameter
    per km²) is given. ``nodata_frame``: ``True`` for a 16 px nodata border, an int for its width.
    """
    scene = _make_scene(size, gsd, seed, sun_azimuth, sun_elevation, min_diameter_m,
                        max_diameter_m, crater_cover, density_per_km2, sfd_slope, depth_ratio,
                        crs, center_lonlat, nodata_frame)
    image, truth = _render_block(scene, 0, 0, scene.height, scene.width)
    return CraterField(image=image, truth=truth, craters=_public_table(scene.craters),
                       crs=scene.crs, transform=scene.transform, gsd=scene.gsd,
                       nodata=NODATA if scene.frame else None, tags=dict(scene.tags))


def _public_table(craters: pd.DataFrame) -> pd.DataFrame:
    table = craters[craters["inside"]][CRATER_COLUMNS].reset_index(drop=True)
    return table


# --------------------------------------------------------------------------------------------
# writing


def _paths(path: str | os.PathLike[str]) -> dict[str, Path]:
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise MomoGeoError(f"{path}: the sample scene is written as GeoTIFF; use a .tif name")
    stem = path.with_suffix("")
    return {"image": path, "truth": Path(f"{stem}_truth.tif"),
            "craters": Path(f"{stem}_craters.csv")}


def _profile(scene_like: Any, height: int, width: int, nodata: int | None) -> dict[str, Any]:
    import rasterio.crs

    tile = 256 if min(height, width) >= 256 else 16
    return {
        "driver": "GTiff", "height": height, "width": width, "count": 1, "dtype": "uint8",
        "crs": rasterio.crs.CRS.from_wkt(scene_like.crs.to_wkt()),
        "transform": scene_like.transform, "nodata": nodata, "tiled": True,
        "blockxsize": tile, "blockysize": tile, "compress": "deflate", "predictor": 2,
    }


def _blocks(height: int, width: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    for row0 in range(0, height, block):
        for col0 in range(0, width, block):
            yield row0, col0, min(block, height - row0), min(block, width - col0)


def _write(paths: dict[str, Path], scene_like: Any, height: int, width: int, nodata: int | None,
           tags: dict[str, str], blocks: Iterator[tuple[int, int, np.ndarray, np.ndarray]],
           craters: pd.DataFrame, overwrite: bool) -> dict[str, Path]:
    import rasterio
    from rasterio.windows import Window

    from momo_geo.io import atomic_output

    truth_tags = {"SYNTHETIC": "YES", "VALUES": "1=crater (inside rim), 0=background, "
                  f"{TRUTH_NODATA}=nodata", "GENERATOR": tags.get("GENERATOR", "")}
    with (atomic_output(paths["image"], overwrite) as image_tmp,
          atomic_output(paths["truth"], overwrite) as truth_tmp,
          atomic_output(paths["craters"], overwrite) as csv_tmp):
        profile = _profile(scene_like, height, width, nodata)
        truth_profile = {**profile, "nodata": TRUTH_NODATA if nodata is not None else None}
        with (rasterio.open(image_tmp, "w", **profile) as dst,
              rasterio.open(truth_tmp, "w", **truth_profile) as tdst):
            dst.update_tags(**tags)
            dst.set_band_description(1, "synthetic CTX-like brightness (DN)")
            tdst.update_tags(**truth_tags)
            tdst.set_band_description(1, "crater truth mask")
            for row0, col0, image, truth in blocks:
                window = Window(col0, row0, image.shape[1], image.shape[0])
                dst.write(image, 1, window=window)
                tdst.write(truth, 1, window=window)
        craters.to_csv(csv_tmp, index=False, float_format="%.6f")
    return paths


def write_crater_field(field: CraterField, path_tif: str | os.PathLike[str],
                       overwrite: bool = False) -> dict[str, Path]:
    """Write ``<stem>.tif``, ``<stem>_truth.tif`` and ``<stem>_craters.csv`` atomically."""
    paths = _paths(path_tif)
    height, width = field.image.shape
    blocks = iter([(0, 0, field.image, field.truth)])
    return _write(paths, field, height, width, field.nodata, field.tags, blocks, field.craters,
                  overwrite)


def write_crater_field_streaming(path: str | os.PathLike[str],
                                 size: int | tuple[int, int] = (1024, 1024), gsd: float = 6.0,
                                 seed: int = 0, block: int = 2048, overwrite: bool = False,
                                 **params: Any) -> dict[str, Path]:
    """Render and write a scene block by block; memory is bounded by ``block`` not by ``size``.

    Takes the same scene parameters as :func:`render_crater_field` and produces the same pixels.
    """
    if block < 16:
        raise MomoGeoError(f"block size must be at least 16 px, got {block}")
    paths = _paths(path)
    defaults = {"sun_azimuth": 315.0, "sun_elevation": 30.0, "min_diameter_m": None,
                "max_diameter_m": None, "crater_cover": 0.08, "density_per_km2": None,
                "sfd_slope": 2.0, "depth_ratio": 0.2, "crs": "IAU_2015:49910",
                "center_lonlat": (77.0, 18.0), "nodata_frame": False}
    unknown = set(params) - set(defaults)
    if unknown:
        raise TypeError(f"unknown scene parameters: {', '.join(sorted(unknown))}")
    p = {**defaults, **params}
    scene = _make_scene(size, gsd, seed, p["sun_azimuth"], p["sun_elevation"],
                        p["min_diameter_m"], p["max_diameter_m"], p["crater_cover"],
                        p["density_per_km2"], p["sfd_slope"], p["depth_ratio"], p["crs"],
                        p["center_lonlat"], p["nodata_frame"])

    def blocks() -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        for row0, col0, h, w in _blocks(scene.height, scene.width, block):
            image, truth = _render_block(scene, row0, col0, h, w)
            yield row0, col0, image, truth

    return _write(paths, scene, scene.height, scene.width, NODATA if scene.frame else None,
                  scene.tags, blocks(), _public_table(scene.craters), overwrite)


def read_crater_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a ``*_craters.csv`` written by this module."""
    path = Path(path)
    if not path.is_file():
        raise MomoGeoError(f"{path}: no such crater table")
    return pd.read_csv(path)


__all__ = [
    "CRATER_COLUMNS", "NODATA", "TRUTH_NODATA", "CraterField", "read_crater_table",
    "render_crater_field", "write_crater_field", "write_crater_field_streaming",
]
