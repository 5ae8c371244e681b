"""The mapping engine in its own Python process: what the plugin runs, and how it talks to it.

Why a separate process: QGIS links its own GDAL, GEOS and PROJ into the application, and the
pip wheels momo-geo needs (rasterio, shapely, pyproj) carry their own copies of the same libraries.
Loaded into one process, their symbols collide (``qgis_process`` aborts with "double free or
corruption" inside shapely). A child Python process that never imports QGIS keeps them apart, and
QGIS stays responsive and safe whatever the engine does.

Protocol (text lines, JSON): the parent writes one request object on stdin; the worker answers with
``{"progress": [done, total]}``, ``{"log": text}`` and finally ``{"done": {...}}`` or
``{"error": text}`` on stdout. A line ``cancel`` on stdin (or stdin closing because QGIS went away)
makes the engine stop within one batch; it writes through ``atomic_output``, so no file appears.

This file is run as a script (``python worker.py map|describe``) and is imported by the plugin
for :func:`card_summary` and :func:`fit_warnings`; it imports only the standard library at module
level and ``momo_geo`` inside functions.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

# --------------------------------------------------------------------------------------------
# model card and scene checks (shared with the dialog)


def card_summary(card: Any) -> str:
    """A few lines about a model card, as the dialog shows it (plain text)."""
    classes = ", ".join(f"{c.id} {c.name}" for c in card.classes) or "none"
    sensors = ", ".join({"hirise": "HiRISE", "ctx": "CTX", "themis": "THEMIS"}.get(s, s)
                        for s in card.sensors)
    return "\n".join([
        f"Model: {card.name} ({card.task})",
        f"Classes: {classes}",
        f"Sensors: {sensors or 'not stated'}",
        f"GSD: {_gsd_text(card)}",
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


def describe(scene_path: str, model: str) -> dict[str, Any]:
    """``{"summary": card text or "", "warnings": [...]}``; bad input becomes a warning."""
    from momo_geo.bundle import load_card
    from momo_geo.errors import MomoGeoError
    from momo_geo.io import open_scene

    try:
        card = load_card(model or "default")
    except MomoGeoError as exc:
        return {"summary": "", "warnings": [str(exc)]}
    if not scene_path:
        return {"summary": card_summary(card), "warnings": []}
    try:
        scene = open_scene(scene_path)
    except MomoGeoError as exc:
        return {"summary": card_summary(card), "warnings": [str(exc)]}
    return {"summary": card_summary(card), "warnings": fit_warnings(scene, card)}


# --------------------------------------------------------------------------------------------
# the worker process


def map_request(request: dict[str, Any], emit: Any, cancelled: threading.Event) -> dict:
    """Run ``map_scene`` for a request dict (MapRequest's fields); return a JSON-able summary."""
    from momo_geo.inference import map_scene

    overlap = request.get("overlap")
    result = map_scene(
        request["scene"], mask_path=request["mask_path"], vector_path=request["vector_path"],
        model=request.get("model") or "default", tile=request.get("tile") or None,
        overlap=None if overlap is None or overlap < 0 else int(overlap),
        batch_size=int(request.get("batch_size", 8)), device=request.get("device", "auto"),
        precision=request.get("precision", "fp32"), blend=request.get("blend", "crop"),
        min_area=float(request.get("min_area", 0)),
        simplify=float(request.get("simplify", 0)), circles=bool(request.get("circles")),
        overwrite=bool(request.get("overwrite")),
        progress=lambda done, total: emit(progress=[int(done), int(total)]),
        cancel=cancelled.is_set, log=lambda message: emit(log=str(message)))
    return {"mask_path": str(result.mask_path), "vector_path": str(result.vector_path),
            "feature_counts": dict(result.feature_counts), "seconds": result.seconds,
            "tiles_total": result.tiles_total, "model": result.model,
            "device": result.device, "class_names": list(result.class_names)}


def _watch_stdin(cancelled: threading.Event) -> None:
    for line in sys.stdin:
        if line.strip() == "cancel":
            break
    cancelled.set()  # "cancel", or stdin closed because the parent (QGIS) is gone


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    lock = threading.Lock()

    def emit(**message: Any) -> None:
        with lock:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    command = args[0] if args else ""
    request = json.loads(sys.stdin.readline() or "{}")
    try:
        from momo_geo.errors import MomoGeoError
    except Exception as exc:
        emit(error=f"momo_geo cannot be imported by {sys.executable}: {exc}")
        return 1
    try:
        if command == "describe":
            emit(done=describe(request.get("scene", ""), request.get("model", "default")))
        elif command == "map":
            cancelled = threading.Event()
            threading.Thread(target=_watch_stdin, args=(cancelled,), daemon=True).start()
            emit(done=map_request(request, emit, cancelled))
        else:
            emit(error=f"unknown worker command {command!r} (map or describe)")
            return 2
    except MomoGeoError as exc:
        emit(error=str(exc))
        return 1
    except Exception as exc:  # reported to QGIS as one line; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        emit(error=f"unexpected error in the mapping engine: {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
