"""The merged catalogue: every mapped scene's features in one GeoPackage layer on one Mars CRS.

Each scene's layer is in the scene's own projection; a survey wants one table. Features are
reprojected (Mars to Mars, never across bodies) to a common CRS, geographic ``IAU_2015:49900`` by
default, tagged with their ``scene`` and ``sensor``, and where scene footprints overlap the same
crater is mapped twice: a pair of features of the same class from different scenes that cover
each other (their intersection is at least :data:`DUPLICATE_OVERLAP` of the smaller one) is one
feature, and the more confident one (``mean_conf``, then the larger) is kept.

Written like every output (:func:`momo_geo.io.atomic_output`), with the CRS as WKT without its
authority id and GeoPackage 1.2, as :mod:`momo_geo.vectorize` writes scene layers (QGIS 3.22
reads both).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from momo_geo import crs as mcrs
from momo_geo.errors import MomoGeoError
from momo_geo.io import atomic_output

DEFAULT_CRS = "IAU_2015:49900"
"""Mars (2015) geographic, longitudes and latitudes in degrees: the planetary web-map convention."""
CATALOGUE_NAME = "catalogue.gpkg"
LAYER = "features"
DUPLICATE_OVERLAP = 0.5
"""Share of the smaller feature another scene's feature must cover to be the same feature."""
FIRST_COLUMNS = ["scene", "sensor", "class_id", "class_name", "area_m2", "perimeter_m",
                 "mean_conf"]


@dataclass
class CatalogueSummary:
    path: Path
    features: int
    duplicates: int
    """Features dropped as duplicates at overlapping footprints."""
    scenes: int


@dataclass(frozen=True)
class SceneLayer:
    """One mapped scene's vector layer and what the catalogue says about it."""

    scene: str
    sensor: str | None
    vector_path: str


def check_catalogue_crs(crs: Any) -> Any:
    """The catalogue CRS as a pyproj CRS; a one-line error unless it is a Mars CRS."""
    target = mcrs.as_crs(crs)
    if not mcrs.is_mars(target):
        raise MomoGeoError(f"catalogue CRS {crs!r} is not a Mars CRS ({mcrs.describe(target)})")
    return target


def read_layers(layers: Iterable[SceneLayer], crs: Any = DEFAULT_CRS) -> Any:
    """All layers as one GeoDataFrame on ``crs``, with ``scene`` and ``sensor`` columns."""
    import geopandas as gpd
    import pandas as pd
    from pyogrio import read_dataframe

    target = check_catalogue_crs(crs)
    frames = []
    for layer in layers:
        try:
            frame = read_dataframe(layer.vector_path)
        except Exception as exc:  # pyogrio's errors: a layer deleted or damaged since
            message = " ".join(str(exc).split()) or type(exc).__name__
            raise MomoGeoError(f"{layer.vector_path}: cannot read {layer.scene}'s features for "
                               f"the catalogue ({message}); remove the file and run again: the "
                               "scene is mapped again") from None
        if frame.crs is not None:
            mcrs.check_same_body(frame.crs, target)
            frame = frame.to_crs(target)
        frame.insert(0, "sensor", layer.sensor or "")
        frame.insert(0, "scene", layer.scene)
        frames.append(frame)
    if not frames:
        return gpd.GeoDataFrame({c: [] for c in FIRST_COLUMNS}, geometry=[], crs=target)
    merged = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=target)
    rest = [c for c in merged.columns if c not in FIRST_COLUMNS and c != merged.geometry.name]
    return merged[[c for c in FIRST_COLUMNS if c in merged.columns] + rest
                  + [merged.geometry.name]]


def drop_duplicates(frame: Any, overlap: float = DUPLICATE_OVERLAP) -> tuple[Any, int]:
    """Resolve features mapped twice by overlapping scenes: keep the more confident of each pair.

    Greedy from the most confident down: a feature is kept unless a kept feature of the same
    class from another scene covers ``overlap`` of the smaller of the two. Features of one scene
    never overlap each other and are never dropped against each other.
    """
    import shapely

    if len(frame) < 2 or frame["scene"].nunique() < 2:
        return frame, 0
    geoms = frame.geometry.values
    conf = (np.nan_to_num(frame["mean_conf"].to_numpy(dtype=float), nan=-1.0)
            if "mean_conf" in frame.columns else np.zeros(len(frame)))
    areas = shapely.area(geoms)
    order = np.lexsort((-areas, -conf))  # most confident first, then the larger
    tree = shapely.STRtree(geoms)
    scenes = frame["scene"].to_numpy()
    classes = frame["class_id"].to_numpy()
    kept = np.zeros(len(frame), bool)
    for i in order:
        partners = tree.query(geoms[i], predicate="intersects")
        partners = partners[kept[partners] & (scenes[partners] != scenes[i])
                            & (classes[partners] == classes[i])]
        if len(partners):
            shared = shapely.area(shapely.intersection(geoms[i], geoms[partners]))
            smaller = np.minimum(areas[i], areas[partners])
            if np.any(shared >= overlap * np.maximum(smaller, 1e-30)):
                continue
        kept[i] = True
    return frame[kept].reset_index(drop=True), int((~kept).sum())


def write_catalogue(layers: Iterable[SceneLayer], path: str | os.PathLike[str],
                    crs: Any = DEFAULT_CRS, overlap: float = DUPLICATE_OVERLAP
                    ) -> CatalogueSummary:
    """Merge ``layers`` into one GeoPackage layer at ``path`` (replaced atomically)."""
    from pyogrio import write_dataframe

    from momo_geo.vectorize import GPKG_VERSION

    layers = list(layers)
    frame = read_layers(layers, crs)
    frame, duplicates = drop_duplicates(frame, overlap)
    frame = frame.astype({"scene": "str", "sensor": "str", "class_id": "int32",
                          "class_name": "str"})
    frame = frame.set_crs(mcrs.wkt_without_id(frame.crs), allow_override=True)
    with atomic_output(path, overwrite=True) as tmp:
        write_dataframe(frame, tmp, layer=LAYER, driver="GPKG", geometry_type="Polygon",
                        promote_to_multi=False, dataset_options={"VERSION": GPKG_VERSION})
    return CatalogueSummary(Path(path), len(frame), duplicates, len(layers))
