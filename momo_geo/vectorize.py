"""Class mask -> polygons with Mars measurements -> GeoPackage, shapefile or GeoJSON.

The mask is read block by block; :func:`rasterio.features.shapes` outlines the connected regions
of each feature class in a block (4-connected, holes kept). Pieces that touch an inner block
seam are held back and merged (exact union on the pixel grid) with their neighbours from the
next blocks; a feature is written as soon as it can no longer grow, so memory stays bounded by
one row of blocks plus the features crossing it. Areas and perimeters are geodesic on the CRS's
own body (:mod:`momo_geo.crs`), so a ``--min-area`` in m² means m² on Mars in any projection.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio import features
from rasterio.windows import Window
from scipy import ndimage
from shapely.geometry import shape

from momo_geo import crs as mcrs
from momo_geo.bundle import ClassInfo
from momo_geo.errors import MomoGeoError
from momo_geo.inference.floor import FOUR_CONNECTED
from momo_geo.inference.options import is_background
from momo_geo.io import atomic_output

FORMATS = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON"}
GPKG_VERSION = "1.2"
"""GeoPackage version written: GDAL >= 3.8 writes 1.4 by default, which QGIS 3.22 warns about."""
ATTRIBUTES = ("class_id", "class_name", "area_m2", "perimeter_m", "mean_conf")
CIRCLE_ATTRIBUTES = ("diameter_m", "centre_lon", "centre_lat", "fit_residual")


@dataclass
class VectorSummary:
    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    areas_m2: dict[str, float] = field(default_factory=dict)


@dataclass
class _Piece:
    """A polygon in pixel coordinates with its confidence sum and pixel count."""

    geom: shapely.Polygon
    class_id: int
    conf_sum: float
    pixels: int


def check_vector_path(path: str | os.PathLike[str]) -> str:
    """The OGR driver for ``path``'s extension, or a one-line error."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise MomoGeoError(f"{path}: vector format must be .gpkg, .shp or .geojson")
    return FORMATS[suffix]


def layer_name(path: str | os.PathLike[str]) -> str:
    """The layer name for a vector file: its stem, made acceptable to every OGR driver.

    GeoPackage refuses names that begin with ``(``, ``[``, ``#``, ``.``, ``-``, ``'`` (and other
    punctuation) or with ``gpkg``; a scene called ``(copy) ESP_….tif`` must still map. Leading
    punctuation is dropped, a ``gpkg`` prefix gets an underscore; the rest is kept as it is.
    """
    path = Path(path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    name = re.sub(r"^[\W]+", "", stem)
    if name.lower().startswith("gpkg"):
        name = "_" + name
    return name or "features"


def feature_classes(classes: Iterable[ClassInfo]) -> list[ClassInfo]:
    """Classes that are features (not background) and get outlined."""
    return [c for c in classes if not is_background(c.name)]


def is_crater_class(c: ClassInfo) -> bool:
    return "crater" in c.name.lower()


def fit_circle(points: np.ndarray) -> tuple[float, float, float]:
    """Least-squares (Kåsa) circle through ``(N, 2)`` points: centre x, centre y, radius."""
    x, y = points[:, 0], points[:, 1]
    a = np.column_stack([x, y, np.ones_like(x)])
    b = x * x + y * y
    (c0, c1, c2), *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = c0 / 2, c1 / 2
    return float(cx), float(cy), float(math.sqrt(max(c2 + cx * cx + cy * cy, 0.0)))


NUMERIC = {"class_id": "int32", "area_m2": "float64", "perimeter_m": "float64",
           "mean_conf": "float64", **dict.fromkeys(CIRCLE_ATTRIBUTES, "float64")}
"""Field types, set on every chunk: an empty layer (no feature mapped) keeps them too, so the
layers of many scenes merge (pandas would make the columns of an empty frame text)."""


class _Writer:
    """Appends features to an OGR file in chunks (pyogrio), with a Mars-readable CRS.

    GeoJSON is written in Mars longitude/latitude (:data:`momo_geo.crs.MARS_GEOGRAPHIC`, the
    planetary web-map convention) when ``geojson_lonlat``: the caller then adds geometries in
    lon/lat on the scene's own body (see :attr:`lonlat`).
    """

    def __init__(self, path: Path, crs, circles: bool, chunk: int = 5000,  # noqa: ANN001
                 layer: str | None = None, geojson_lonlat: bool = False) -> None:
        self.path, self.driver = path, check_vector_path(path)
        self.layer = layer or layer_name(path)
        self.lonlat = self.driver == "GeoJSON" and geojson_lonlat
        """Geometries come in lon/lat on the scene's geographic CRS, written on Mars lon/lat."""
        self._to_mars = None
        if self.lonlat:
            mars = mcrs.as_crs(mcrs.MARS_GEOGRAPHIC)
            source = mcrs.geographic_of(crs)
            if not source.equals(mars, ignore_axis_order=True):
                from pyproj import Transformer

                self._to_mars = Transformer.from_crs(source, mars, always_xy=True)
            crs = mars
        self.crs_text = mcrs.wkt_without_id(crs)
        self.esri = mcrs.esri_wkt(crs) if self.driver == "ESRI Shapefile" else None
        self.columns = list(ATTRIBUTES) + (list(CIRCLE_ATTRIBUTES) if circles else [])
        self.rows: list[dict] = []
        self.geoms: list[shapely.Geometry] = []
        self.written = 0
        self.chunk = chunk

    def add(self, geom: shapely.Geometry, row: dict) -> None:
        if self._to_mars is not None:
            to_mars = self._to_mars
            geom = shapely.transform(geom, lambda xy: np.column_stack(
                to_mars.transform(xy[:, 0], xy[:, 1])))
        if self.lonlat:
            geom = _unwrap_longitudes(geom)
        self.geoms.append(geom)
        self.rows.append(row)
        if len(self.rows) >= self.chunk:
            self.flush()

    def flush(self, final: bool = False) -> None:
        import geopandas as gpd
        import pandas as pd
        from pyogrio import write_dataframe

        if not self.rows and not (final and self.written == 0):
            return
        frame = pd.DataFrame(self.rows, columns=self.columns)
        frame = frame.astype({"class_name": "str", **{name: kind for name, kind in
                                                       NUMERIC.items() if name in self.columns}})
        gdf = gpd.GeoDataFrame(frame, geometry=self.geoms, crs=self.crs_text)
        options = ({"VERSION": GPKG_VERSION}
                   if self.driver == "GPKG" and self.written == 0 else {})
        write_dataframe(gdf, self.path, layer=self.layer, driver=self.driver,
                        append=self.written > 0, geometry_type="Polygon",
                        promote_to_multi=False, dataset_options=options)
        self.written += len(self.rows)
        self.rows, self.geoms = [], []

    def close(self) -> None:
        self.flush(final=True)
        if self.esri is not None:
            self.path.with_suffix(".prj").write_text(self.esri)
        if self.driver == "GeoJSON":
            _add_geojson_crs(self.path, self.crs_text)


def _unwrap_longitudes(geom: shapely.Geometry) -> shapely.Geometry:
    """A feature across the 180° meridian in continuous longitudes (179.9 to 180.1, not 179.9
    and -179.9, which would draw it around the planet)."""
    west, _, east, _ = geom.bounds
    if east - west <= 180.0:
        return geom
    return shapely.transform(geom, lambda xy: np.column_stack(
        [np.where(xy[:, 0] < 0, xy[:, 0] + 360.0, xy[:, 0]), xy[:, 1]]))


def _add_geojson_crs(path: Path, wkt: str) -> None:
    """Name the CRS in a GeoJSON file as WKT, streaming (GDAL writes none for non-EPSG CRSs).

    RFC 7946 GeoJSON knows only WGS 84; GDAL and QGIS still honour a ``crs`` member, and GDAL
    reads a WKT there, so the file opens on Mars instead of silently on Earth.
    """
    member = '"crs": ' + json.dumps({"type": "name", "properties": {"name": wkt}}) + ",\n"
    staged = path.with_name(path.name + ".crs")
    done = False
    with open(path, encoding="utf-8") as src, open(staged, "w", encoding="utf-8") as dst:
        for line in src:
            if not done and line.startswith('"crs"'):
                continue
            if not done and line.startswith('"features"'):
                dst.write(member)
                done = True
            dst.write(line)
    os.replace(staged, path)


def vectorize(mask_path: str | os.PathLike[str], vector_path: str | os.PathLike[str],
              classes: list[ClassInfo], *, confidence_path: str | os.PathLike[str] | None = None,
              min_area: float = 0.0, simplify: float = 0.0, circles: bool = False,
              overwrite: bool = False, block: int = 1024,
              cancel: Callable[[], bool] | None = None,
              geojson_lonlat: bool = True) -> VectorSummary:
    """Outline the feature classes of a class mask into ``vector_path`` (atomically).

    Attributes: ``class_id``, ``class_name``, ``area_m2``, ``perimeter_m`` (geodesic on the
    mask CRS's body), ``mean_conf`` (mean of ``confidence_path`` inside the feature, NaN without
    one); with ``circles``, crater classes also get a fitted circle's ``diameter_m`` and centre
    ``centre_lon``/``centre_lat`` in degrees on Mars. ``min_area`` (m²) drops small features;
    ``simplify`` (metres) simplifies outlines, topology kept. Shapefiles cut field names to 10
    characters (``perimeter_m`` becomes ``perimeter_``). A ``.geojson`` layer is in Mars
    longitude/latitude (IAU_2015:49900, recorded in its ``crs`` member) unless
    ``geojson_lonlat`` is false; GeoPackage and shapefile keep the mask's CRS.
    """
    vector_path = Path(vector_path)
    check_vector_path(vector_path)
    if min_area < 0 or simplify < 0:
        raise MomoGeoError("min-area and simplify must not be negative")
    with atomic_output(vector_path, overwrite) as tmp:
        summary = write_features(Path(mask_path), tmp, classes, layer=layer_name(vector_path),
                                 confidence_path=confidence_path, min_area=min_area,
                                 simplify=simplify, circles=circles, block=block, cancel=cancel,
                                 geojson_lonlat=geojson_lonlat)
    summary.path = vector_path
    return summary


def write_features(mask_path: str | os.PathLike[str], out: Path, classes: list[ClassInfo], *,
                   layer: str | None = None,
                   confidence_path: str | os.PathLike[str] | None = None,
                   min_area: float = 0.0, simplify: float = 0.0, circles: bool = False,
                   block: int = 1024, cancel: Callable[[], bool] | None = None,
                   geojson_lonlat: bool = True) -> VectorSummary:
    """:func:`vectorize` into ``out`` directly (a staged path: the caller commits it), the
    layer named ``layer`` (default: from ``out``'s name, :func:`layer_name`)."""
    mask_path = Path(mask_path)
    wanted = {c.id: c for c in feature_classes(classes)}
    with rasterio.open(mask_path) as src:
        crs, transform = src.crs, src.transform
        if crs is None:
            raise MomoGeoError(f"{mask_path}: the mask has no CRS; cannot measure features")
        width, height = src.width, src.height
        gsd = mcrs.pixel_size_m(crs, transform, width / 2, height / 2)
        tolerance_px = simplify / math.sqrt(gsd[0] * gsd[1]) if simplify else 0.0
        conf_src = rasterio.open(confidence_path) if confidence_path else None
        writer = _Writer(out, crs, circles, layer=layer, geojson_lonlat=geojson_lonlat)
        emitter = _Emitter(writer, wanted, crs, transform, min_area, tolerance_px, circles)
        try:
            for piece in finished_pieces(src, conf_src, wanted, block, cancel):
                emitter.emit(piece)
            emitter.flush()
            writer.close()
        finally:
            if conf_src is not None:
                conf_src.close()
    return VectorSummary(out, emitter.counts, emitter.areas)


def finished_pieces(src: rasterio.DatasetReader, conf_src: rasterio.DatasetReader | None,
                    wanted: dict[int, ClassInfo], block: int = 1024,
                    cancel: Callable[[], bool] | None = None) -> Iterable[_Piece]:
    """Every whole feature of the wanted classes in an open class mask, in pixel coordinates,
    with its confidence sum (from ``conf_src``) and pixel count.

    Read block by block; a feature is yielded as soon as it can no longer grow (see the module
    docstring), so memory stays bounded by one row of blocks plus the features crossing it.
    """
    width, height = src.width, src.height
    # features still open at the current row seam, each as its block pieces (unioned only
    # once, when the feature is complete: re-unioning a growing feature every block row
    # would cost quadratic time for features that span many blocks)
    pending: list[list[_Piece]] = []
    for row0 in range(0, height, block):
        if cancel is not None and cancel():
            raise MomoGeoError("cancelled")
        row1 = min(row0 + block, height)
        open_pieces: list[_Piece] = []
        for col0 in range(0, width, block):
            col1 = min(col0 + block, width)
            window = Window(col0, row0, col1 - col0, row1 - row0)
            data = src.read(1, window=window)
            conf = conf_src.read(1, window=window) if conf_src else None
            for piece in _pieces(data, conf, wanted, col0, row0):
                x0, y0, x1, y1 = piece.geom.bounds
                on_seam = ((x0 == col0 and col0 > 0) or (x1 == col1 and col1 < width)
                           or (y0 == row0 and row0 > 0) or (y1 == row1 and row1 < height))
                if on_seam:
                    open_pieces.append(piece)
                else:
                    yield piece
        groups = _join(pending, open_pieces, row0)
        pending = []
        for group in groups:
            if row1 < height and any(p.geom.bounds[3] >= row1 for p in group):
                pending.append(group)
            else:
                yield from _union(group)


def _pieces(data: np.ndarray, conf: np.ndarray | None, wanted: dict[int, ClassInfo],
            col0: int, row0: int) -> Iterable[_Piece]:
    """Connected regions of each wanted class in one block, as pixel-coordinate polygons."""
    offset = rasterio.Affine.translation(col0, row0)
    for class_id in np.unique(data):
        if int(class_id) not in wanted:
            continue
        region = data == class_id
        labels, n = ndimage.label(region, structure=FOUR_CONNECTED)
        if n == 0:
            continue
        pixels = np.bincount(labels.ravel(), minlength=n + 1)
        sums = (np.bincount(labels.ravel(), weights=conf.ravel().astype(np.float64),
                            minlength=n + 1) if conf is not None else np.full(n + 1, np.nan))
        for geom, label in features.shapes(labels.astype(np.int32), mask=region,
                                           connectivity=4, transform=offset):
            label = int(label)
            yield _Piece(shape(geom), int(class_id), float(sums[label]), int(pixels[label]))


def _join(pending: list[list[_Piece]], pieces: list[_Piece], seam: int
          ) -> list[list[_Piece]]:
    """Group open features and new seam pieces that touch (same class) into features.

    Only pending pieces on the ``seam`` row and the new pieces (each at most one block) are
    tested, so the cost does not grow with the size of a feature.
    """
    nodes = len(pending) + len(pieces)
    geoms: list[shapely.Geometry] = []
    owner: list[int] = []
    classes: list[int] = []
    for g, group in enumerate(pending):
        for piece in group:
            if piece.geom.bounds[3] >= seam:
                geoms.append(piece.geom)
                owner.append(g)
                classes.append(piece.class_id)
    for i, piece in enumerate(pieces):
        geoms.append(piece.geom)
        owner.append(len(pending) + i)
        classes.append(piece.class_id)
    members = [*pending, *([p] for p in pieces)]
    parent = list(range(nodes))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if len(geoms) > 1:
        left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
        for a, b in zip(left.tolist(), right.tolist(), strict=True):
            if classes[a] == classes[b]:
                ra, rb = root(owner[a]), root(owner[b])
                if ra != rb:
                    parent[ra] = rb
    groups: dict[int, list[_Piece]] = {}
    for node in range(nodes):
        groups.setdefault(root(node), []).extend(members[node])
    return list(groups.values())


def _union(group: list[_Piece]) -> list[_Piece]:
    """One feature's pieces (same class, touching) as polygons, sums carried along."""
    if len(group) == 1:
        return group
    class_id = group[0].class_id
    union = shapely.union_all([p.geom for p in group])
    parts = list(getattr(union, "geoms", [union]))
    if len(parts) == 1:
        return [_Piece(parts[0], class_id, sum(p.conf_sum for p in group),
                       sum(p.pixels for p in group))]
    # pieces touching only at corners stay separate polygons (4-connectivity): give each
    # polygon the sums of the pieces inside it
    tree = shapely.STRtree(parts)
    owner = tree.query([p.geom.representative_point() for p in group], predicate="within")
    conf = np.zeros(len(parts))
    count = np.zeros(len(parts), np.int64)
    for i, j in zip(*owner, strict=True):
        conf[j] += group[i].conf_sum
        count[j] += group[i].pixels
    return [_Piece(part, class_id, float(conf[j]), int(count[j]))
            for j, part in enumerate(parts)]


class _Emitter:
    """Turns finished pixel-space pieces into measured, filtered features for the writer.

    Pieces are measured in batches with one transformer and one ``Geod`` (building them is far
    slower than measuring a polygon), geodesically on the CRS's own body.
    """

    def __init__(self, writer: _Writer, wanted: dict[int, ClassInfo], crs, transform,  # noqa: ANN001
                 min_area: float, tolerance_px: float, circles: bool,
                 batch: int = 2000) -> None:
        self.writer, self.wanted, self.transform = writer, wanted, transform
        self.crs = mcrs.as_crs(crs)
        self.min_area, self.tolerance_px, self.circles = min_area, tolerance_px, circles
        self.counts = {c.name: 0 for c in wanted.values()}
        self.areas = {c.name: 0.0 for c in wanted.values()}
        self.to_lonlat = mcrs.lonlat_transformer(self.crs)
        self.geod = mcrs.geod_of(self.crs)
        unit = self.crs.axis_info[0].unit_conversion_factor if self.crs.axis_info else 1.0
        # densify edges to ~1 km on the ground so they follow the projection's curvature
        self.segment = 0.02 if self.crs.is_geographic else 1000.0 / (unit or 1.0)
        self.pending: list[_Piece] = []
        self.batch = batch

    def emit(self, piece: _Piece) -> None:
        self.pending.append(piece)
        if len(self.pending) >= self.batch:
            self.flush()

    def _to_map(self, geoms: np.ndarray) -> np.ndarray:
        t = self.transform
        matrix = np.array([[t.a, t.b], [t.d, t.e]])
        offset = np.array([t.c, t.f])
        return shapely.transform(geoms, lambda xy: xy @ matrix.T + offset)

    def _project(self, xy: np.ndarray) -> np.ndarray:
        lon, lat = self.to_lonlat.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([lon, lat])

    def flush(self) -> None:
        if not self.pending:
            return
        pieces, self.pending = self.pending, []
        geoms = np.array([p.geom for p in pieces], dtype=object)
        if self.tolerance_px:
            geoms = shapely.simplify(geoms, self.tolerance_px, preserve_topology=True)
        mapped = self._to_map(geoms)
        # densify only outlines longer than a segment (most craters are far smaller)
        bounds = shapely.bounds(mapped)
        large = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]) > self.segment
        dense = mapped.copy()
        if large.any():
            dense[large] = shapely.segmentize(mapped[large], self.segment)
        lonlat = shapely.transform(dense, self._project)
        for piece, pixel_geom, geom, ll in zip(pieces, geoms, mapped, lonlat, strict=True):
            if geom.is_empty:
                continue
            area, perimeter = self.geod.geometry_area_perimeter(ll)
            area = abs(float(area))
            if area < self.min_area:
                continue
            info = self.wanted[piece.class_id]
            row = {"class_id": info.id, "class_name": info.name, "area_m2": area,
                   "perimeter_m": float(perimeter),
                   "mean_conf": piece.conf_sum / piece.pixels if piece.pixels else math.nan}
            if self.circles:
                row.update(self._circle(pixel_geom) if is_crater_class(info) else
                           dict.fromkeys(CIRCLE_ATTRIBUTES, math.nan))
            self.counts[info.name] += 1
            self.areas[info.name] += area
            self.writer.add(ll if self.writer.lonlat else geom, row)

    def _circle(self, geom: shapely.Polygon) -> dict[str, float]:
        outline = np.asarray(geom.exterior.coords)[:-1]
        cx, cy, r = fit_circle(outline)
        # How round the outline is: RMS distance of the outline from the fitted circle, in
        # radii (0 for a perfect circle; merged craters and irregular blobs score high).
        residual = np.hypot(outline[:, 0] - cx, outline[:, 1] - cy) - r
        fit = float(np.sqrt(np.mean(residual**2)) / r) if r > 0 else math.nan
        pixels = np.array([[cx, cy], [cx + r, cy], [cx, cy + r]])
        t = self.transform
        xy = pixels @ np.array([[t.a, t.b], [t.d, t.e]]).T + np.array([t.c, t.f])
        lon, lat = self.to_lonlat.transform(xy[:, 0], xy[:, 1])
        _, _, dx = self.geod.inv(lon[0], lat[0], lon[1], lat[1])
        _, _, dy = self.geod.inv(lon[0], lat[0], lon[2], lat[2])
        centre_lon = ((lon[0] + 180.0) % 360.0) - 180.0
        return {"diameter_m": float(dx + dy), "centre_lon": float(centre_lon),
                "centre_lat": float(lat[0]), "fit_residual": fit}
