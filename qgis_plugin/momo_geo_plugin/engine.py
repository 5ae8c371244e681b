"""The plugin's one way into momo-geo: a request, its checks, and the call to the engine.

The dialog, the background task and the Processing algorithm all build a :class:`MapRequest` and
hand it to :func:`run_map`, which calls :func:`momo_geo.inference.map_scene` with the same
parameter names as ``momo-geo map``. Nothing here imports QGIS, and ``momo_geo`` is imported only
inside functions, so the plugin loads (and reports) even when momo-geo is not installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "fp16", "bf16")
VECTOR_FORMATS = {"GeoPackage": ".gpkg", "ESRI Shapefile": ".shp"}


@dataclass
class MapRequest:
    """Everything one mapping run needs; field names are ``map_scene``'s parameter names."""

    scene: str
    mask_path: str
    vector_path: str
    model: str = "default"
    tile: int | None = None
    """Tile size in pixels; ``None`` takes the model card's ``tile_size``."""
    overlap: int | None = None
    """Tile overlap in pixels; ``None`` takes the model card's ``tile_overlap``."""
    batch_size: int = 8
    device: str = "auto"
    precision: str = "fp32"
    min_area: float = 0.0
    """Smallest feature kept in the vector layer, square metres on Mars."""
    simplify: float = 0.0
    circles: bool = False
    overwrite: bool = False


def run_map(request: MapRequest, progress: Callable[[int, int], None] | None = None,
            cancel: Callable[[], bool] | None = None,
            log: Callable[[str], None] | None = None) -> Any:
    """Run the mapping engine; raises ``MomoGeoError`` with a one-line message on bad input.

    ``cancel()`` returning True stops the engine within one batch and leaves no output files
    (the engine writes through ``momo_geo.io.atomic_output``).
    """
    from momo_geo.inference import map_scene

    return map_scene(
        request.scene, mask_path=request.mask_path, vector_path=request.vector_path,
        model=request.model or "default", tile=request.tile or None,
        overlap=request.overlap if request.overlap not in (None, -1) else None,
        batch_size=request.batch_size, device=request.device, precision=request.precision,
        min_area=request.min_area, simplify=request.simplify, circles=request.circles,
        overwrite=request.overwrite, progress=progress, cancel=cancel, log=log)


def default_outputs(scene: str | Path, vector_ext: str = ".gpkg") -> tuple[str, str]:
    """Output paths beside the scene: ``<stem>_mask.tif`` and ``<stem>_features.gpkg``."""
    scene = Path(scene)
    stem = scene.name.split(".")[0] or "scene"
    return (str(scene.with_name(f"{stem}_mask.tif")),
            str(scene.with_name(f"{stem}_features{vector_ext}")))


def card_summary(card: Any) -> str:
    """A few lines about a model card, as the dialog shows it (plain text)."""
    classes = ", ".join(f"{c.id} {c.name}" for c in card.classes) or "none"
    gsd = _gsd_text(card)
    return "\n".join([
        f"Model: {card.name} ({card.task})",
        f"Classes: {classes}",
        f"Sensors: {', '.join(s.upper() if len(s) <= 3 else s.capitalize() for s in card.sensors)}",
        f"GSD: {gsd}",
        f"Tiles: {card.tile_size} px, overlap {card.tile_overlap} px",
    ])


def _gsd_text(card: Any) -> str:
    parts = []
    if card.gsd:
        parts.append(f"trained at {card.gsd:g} m/px")
    if card.gsd_range:
        lo, hi = card.gsd_range
        parts.append(f"range {lo:g}–{hi:g} m/px")
    return ", ".join(parts) or "not stated"


def fit_warnings(scene: Any, card: Any) -> list[str]:
    """Why a scene may not suit a model: its sensor or its GSD outside the card's.

    ``scene`` is a :class:`momo_geo.io.Scene`. Warnings, not errors: the engine still runs (it
    resamples to the model's GSD), but a geologist should know the model was not trained for it.
    """
    warnings = []
    if scene.sensor is not None and card.sensors and scene.sensor.name not in card.sensors:
        warnings.append(f"the scene looks like {scene.sensor.title}, but the model was trained on "
                        f"{', '.join(card.sensors)}")
    if scene.sensor is None and card.sensors:
        warnings.append("the scene's sensor is unknown (no HiRISE/CTX/THEMIS product ID or "
                        f"label); the model was trained on {', '.join(card.sensors)}")
    if card.gsd_range:
        lo, hi = card.gsd_range
        if not lo <= scene.gsd <= hi:
            warnings.append(f"the scene's GSD is {scene.gsd:.3g} m/px, outside the model's "
                            f"range {lo:g}–{hi:g} m/px")
    return warnings


def scene_warnings(scene_path: str, model: str) -> tuple[str, list[str]]:
    """(model card summary, warnings) for the dialog; a bad scene/model becomes a warning."""
    from momo_geo.bundle import load_card
    from momo_geo.errors import MomoGeoError
    from momo_geo.io import open_scene

    try:
        card = load_card(model or "default")
    except MomoGeoError as exc:
        return "", [str(exc)]
    summary = card_summary(card)
    if not scene_path:
        return summary, []
    try:
        scene = open_scene(scene_path)
    except MomoGeoError as exc:
        return summary, [str(exc)]
    return summary, fit_warnings(scene, card)
