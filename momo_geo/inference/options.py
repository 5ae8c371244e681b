"""The one definition of a mapping run's options, their defaults and the default output names.

``momo-geo map`` (its flags), :func:`momo_geo.inference.map_scene` (its ``options``) and the QGIS
plugin (its dialog and Processing parameters, through the worker's ``defaults`` answer) all take
names, defaults, choices and help text from here, so they cannot drift apart. Also here: which
class names mean "no feature" (the vectoriser skips them, QGIS draws them transparent) and how
outputs are named beside a scene.

Imports nothing heavy (no torch, numpy or rasterio): the CLI reads it before checking its
arguments, and the plugin's worker answers from it in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from momo_geo.errors import MomoGeoError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
BLENDS = ("crop", "smooth")
TTAS = ("auto", "none", "d4")
VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson")
"""Vector formats ``map_scene`` writes, by file name suffix; the first is the default."""

BACKGROUND_NAMES = frozenset(
    {"background", "other", "none", "bg", "nodata", "no_crater", "unlabelled"})
"""Class names (lower case) that mean the absence of a feature: not outlined, drawn transparent."""

MASK_SUFFIX = "_mask.tif"
VECTOR_STEM_SUFFIX = "_features"


def _option(default: Any, help: str, **meta: Any) -> Any:  # noqa: A002 - click's word
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class MapOptions:
    """The knobs of a mapping run. Field names are the CLI's flags (``batch_size`` is
    ``--batch-size``) and the plugin's parameter names; values are checked once, here."""

    tile: int | None = _option(None, "Tile size in model pixels. Default: the model card's.",
                               minimum=1)
    overlap: int | None = _option(
        None, "Overlap of neighbouring tiles in model pixels. Default: the model card's.",
        minimum=0)
    batch_size: int = _option(8, "Tiles per forward pass of the model.", minimum=1)
    device: str = _option("auto", "Where the model runs (auto: CUDA, then MPS, then CPU).",
                          choices=DEVICES)
    precision: str = _option("fp32", "Numeric precision of the model (fp16 needs a GPU).",
                             choices=PRECISIONS)
    tta: str = _option("auto", "Test-time augmentation: d4 averages the model over the eight "
                       "flips and quarter turns of each tile (8x the time); none: one pass; "
                       "auto: what the model card chose.", choices=TTAS)
    blend: str = _option("crop", "crop: each pixel from the tile whose centre holds it; smooth: "
                         "weighted blend of overlapping tiles' probabilities.", choices=BLENDS)
    coarse: bool = _option(True, "Run the model card's coarse passes, if it has any: the "
                           "scene is also mapped at lower resolutions for craters larger than "
                           "the model's view (--no-coarse: one resolution only).")
    min_area: float = _option(0.0, "Drop features smaller than this many m² (measured on Mars).",
                              minimum=0.0)
    simplify: float = _option(0.0, "Simplify outlines with this tolerance in metres "
                              "(0: exact pixel outlines).", minimum=0.0)
    circles: bool = _option(False, "Fit circles to crater features: diameter_m, centre_lon, "
                            "centre_lat.")
    geojson_lonlat: bool = _option(
        True, "Write a .geojson layer in Mars longitude/latitude (IAU_2015:49900, the planetary "
        "web-map convention); --no-geojson-lonlat keeps the scene's CRS.")
    frame: bool = _option(True, "Treat a constant-valued frame around the image (an "
                          "undeclared black collar of a map-projected product) as nodata.")
    nodata: float | None = _option(
        None, "Also read pixels of this value as nodata (for a scene that does not declare its "
        "nodata). Default: only what the file declares.", type=float)
    assume_mars: bool = _option(False, "Read a scene labelled with an Earth or Moon CRS (e.g. "
                                "EPSG:4326) on the Mars sphere, so areas are measured on Mars; "
                                "without it such a scene is refused.")
    trust_unhashed: bool = _option(False, "Use a model bundle whose card has no weights "
                                   "SHA-256 (its weights cannot be checked).")
    overwrite: bool = _option(False, "Replace existing outputs.")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))

    def replace(self, **changes: Any) -> MapOptions:
        """A copy with some options changed (checked again)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _kind(f: dataclasses.Field) -> type:
    """An option's type: its default's, else the ``type`` its metadata names, else ``int``."""
    return f.metadata.get("type") or (type(f.default) if f.default is not None else int)


def _check(f: dataclasses.Field, value: Any) -> None:
    name = f.name.replace("_", " ")
    if value is None and f.default is None:
        return
    kind = _kind(f)
    if kind is bool:
        if not isinstance(value, bool):
            raise MomoGeoError(f"{name} must be true or false, not {value!r}")
        return
    allowed = (int,) if kind is int else (int, float)
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, allowed)):
        raise MomoGeoError(f"{name} must be a{'n integer' if kind is int else ' number'}, "
                           f"not {value!r}")
    if kind in (int, float) and not math.isfinite(value):
        raise MomoGeoError(f"{name} must be a finite number, not {value}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise MomoGeoError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    minimum = f.metadata.get("minimum")
    if minimum is not None and value < minimum:
        raise MomoGeoError(f"{name} must be at least {minimum}, not {value}")


def option_fields() -> list[tuple[str, type, Any, dict[str, Any]]]:
    """``(name, type, default, metadata)`` for each option, in order; metadata holds ``help``
    and, where they apply, ``choices`` and ``minimum``. A ``None`` default means "the model
    card's" (``int`` options, which have a ``minimum``) or "not set" (``nodata``, a ``float``
    with no minimum)."""
    return [(f.name, _kind(f), f.default,
             {k: v for k, v in f.metadata.items() if k != "type"})
            for f in dataclasses.fields(MapOptions)]


def schema() -> dict[str, Any]:
    """Everything a shell needs to offer the options, as JSON-able values.

    ``options``: name -> ``{"type", "default", "help"}`` plus ``choices`` or ``minimum`` where
    they apply (``type`` is ``int``, ``float``, ``bool`` or ``str``; ``default`` may be ``None``:
    "the model card's"); the output naming rule; the background class names.
    """
    options = {}
    for name, kind, default, meta in option_fields():
        entry = {"type": kind.__name__, "default": default, **meta}
        if "choices" in entry:
            entry["choices"] = list(entry["choices"])
        options[name] = entry
    return {"options": options, "mask_suffix": MASK_SUFFIX,
            "vector_stem_suffix": VECTOR_STEM_SUFFIX, "vector_suffixes": list(VECTOR_SUFFIXES),
            "background_names": sorted(BACKGROUND_NAMES)}


def default_mask_path(scene: str | os.PathLike[str]) -> Path:
    """``scene.v2.tif`` -> ``scene.v2_mask.tif`` beside it (only the last suffix goes)."""
    scene = Path(scene)
    return scene.with_name(f"{scene.stem}{MASK_SUFFIX}")


def default_vector_path(scene: str | os.PathLike[str], suffix: str = VECTOR_SUFFIXES[0],
                        mask: str | os.PathLike[str] | None = None) -> Path:
    """``scene.v2.tif`` -> ``scene.v2_features.gpkg`` (or ``.shp``, ``.geojson``) beside it,
    or beside the class ``mask`` when one is named: a mask written elsewhere puts nothing into
    the scene's folder, which may be a read-only data archive."""
    scene = Path(scene)
    name = f"{scene.stem}{VECTOR_STEM_SUFFIX}{suffix}"
    return scene.with_name(name) if mask is None else Path(mask).parent / name


RASTER_SUFFIXES = (".tif", ".tiff")
"""Names the class mask and probabilities may have: they are GeoTIFFs (COG), whatever the name."""


def output_paths(scene: str | os.PathLike[str], mask_path: str | os.PathLike[str] | None = None,
                 vector_path: str | os.PathLike[str] | None = None,
                 probabilities: str | os.PathLike[str] | None = None,
                 ) -> tuple[Path, Path | None, Path | None]:
    """(mask, vector, probabilities) paths of one scene, their formats checked by name.

    ``-o mask.png`` is refused rather than silently given a GeoTIFF under a PNG name; a vector
    layer is ``.gpkg``, ``.shp`` or ``.geojson``. Cheap (no file is opened): called before a
    model loads, so a bad output name never costs an inference.
    """
    from momo_geo.outputs import check_not_a_folder

    mask = Path(mask_path) if mask_path is not None else default_mask_path(scene)
    vector = Path(vector_path) if vector_path is not None else None
    prob = Path(probabilities) if probabilities is not None else None
    for path in (mask, vector, prob):
        if path is not None:  # "-o ." is about the folder, not the missing .tif
            check_not_a_folder(path, inputs=[scene])
    for what, path in (("class mask", mask), ("probabilities", prob)):
        if path is not None and path.suffix.lower() not in RASTER_SUFFIXES:
            raise MomoGeoError(f"{path}: the {what} is written as a GeoTIFF; give it a .tif or "
                               ".tiff name")
    if vector is not None and vector.suffix.lower() not in (*VECTOR_SUFFIXES, ".json"):
        raise MomoGeoError(f"{vector}: vector format must be .gpkg, .shp or .geojson")
    return mask, vector, prob


def check_outputs(scene: str | os.PathLike[str], mask_path: str | os.PathLike[str] | None = None,
                  vector_path: str | os.PathLike[str] | None = None,
                  probabilities: str | os.PathLike[str] | None = None, *,
                  overwrite: bool = False) -> tuple[Path, Path | None, Path | None]:
    """:func:`output_paths`, and each output may be written now (:mod:`momo_geo.outputs`:
    not existing or ``overwrite``, sidecars included; not a folder, not the scene, not being
    written by another run)."""
    from momo_geo.outputs import check_target

    paths = output_paths(scene, mask_path, vector_path, probabilities)
    given = [p for p in paths if p is not None]
    if len({os.path.realpath(p) for p in given}) != len(given):
        raise MomoGeoError("mask, probabilities and vector outputs must be different files")
    for path in given:
        check_target(path, overwrite=overwrite, inputs=[scene])
    return paths


def is_background(name: str) -> bool:
    """True for a class name that means "no feature" (see :data:`BACKGROUND_NAMES`)."""
    return name.strip().lower() in BACKGROUND_NAMES
