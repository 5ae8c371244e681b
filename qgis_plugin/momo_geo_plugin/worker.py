"""The mapping engine in its own Python process: what the plugin runs, and how it talks to it.

Why a separate process: QGIS links its own GDAL, GEOS and PROJ into the application, and the
pip wheels momo-geo needs (rasterio, shapely, pyproj) carry their own copies of the same libraries.
Loaded into one process, their symbols collide (``qgis_process`` aborts with "double free or
corruption" inside shapely). A child Python process that never imports QGIS keeps them apart, and
QGIS stays responsive and safe whatever the engine does.

The worker's Python need not be QGIS's (:mod:`.interpreter`): it is the only place that imports
momo-geo, and the only place that builds a :class:`momo_geo.inference.options.MapOptions`; the
plugin holds no defaults of its own.

Protocol (text lines, JSON): the parent runs ``python worker.py VERB`` and writes one request
object on stdin; the worker answers with ``{"progress": [done, total]}``, ``{"log": text}`` and
finally ``{"done": {...}}`` or ``{"error": text}`` on stdout. Verbs:

- ``defaults``: momo-geo's version, the option schema (names, defaults, choices, help), output
  naming and background class names, and which engine modules are missing (the plugin's
  dependency check);
- ``describe``: a model card (classes with colours, tiling) and the scene/model fit warnings;
- ``map``: one ``map_scene`` run. A line ``cancel`` on stdin (or stdin closing because QGIS went
  away) makes the engine stop within one batch; it writes through ``atomic_output``, so no file
  appears.
- ``archive``: one ``momo_geo.archive.map_archive`` run (many scenes on a Dask cluster, one
  catalogue); progress counts finished scenes. Cancel stops it as Ctrl-C would: finished scenes
  stay in the archive's manifest.

Run as a script; imports only the standard library at module level and ``momo_geo`` inside
functions.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from typing import Any

ENGINE_MODULES = ("torch", "rasterio", "shapely", "pyproj", "pyogrio")
"""Besides momo_geo: located (not imported, which would take seconds) by ``defaults``."""

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


def card_dict(card: Any) -> dict[str, Any]:
    """What the plugin needs of a card: name, tiling, classes with colours and background flag."""
    from momo_geo.inference.options import is_background

    return {"name": card.name, "task": card.task, "tile_size": card.tile_size,
            "tile_overlap": card.tile_overlap,
            "classes": [{"id": c.id, "name": c.name, "color": c.color,
                         "background": is_background(c.name)} for c in card.classes]}


def describe(scene_path: str, model: str) -> dict[str, Any]:
    """``{"summary": card text or "", "card": {...} or None, "warnings": [...]}``; bad input
    becomes a warning."""
    from momo_geo.bundle import load_card
    from momo_geo.errors import MomoGeoError
    from momo_geo.inference.fit import fit_warnings
    from momo_geo.io import open_scene

    try:
        card = load_card(model or "default")
    except MomoGeoError as exc:
        return {"summary": "", "card": None, "warnings": [str(exc)]}
    answer = {"summary": card_summary(card), "card": card_dict(card), "warnings": []}
    if scene_path:
        try:
            answer["warnings"] = fit_warnings(open_scene(scene_path), card)
        except MomoGeoError as exc:
            answer["warnings"] = [str(exc)]
    return answer


def defaults() -> dict[str, Any]:
    """momo-geo's version, option schema and naming, and the engine modules that are missing."""
    import momo_geo
    from momo_geo.inference.options import schema

    missing = [name for name in ENGINE_MODULES if importlib.util.find_spec(name) is None]
    return {"version": momo_geo.__version__, "python": sys.executable, "missing": missing,
            **schema()}


# --------------------------------------------------------------------------------------------
# the worker process


def map_request(request: dict[str, Any], emit: Any, cancelled: threading.Event) -> dict:
    """Run ``map_scene`` for a request (scene, outputs, model, ``options`` as a dict of
    :class:`MapOptions` fields; absent ones take its defaults); return a JSON-able summary."""
    from momo_geo.errors import MomoGeoError
    from momo_geo.inference import map_scene
    from momo_geo.inference.options import MapOptions

    try:
        options = MapOptions(**request.get("options", {}))
    except TypeError as exc:  # an option this momo-geo does not know: plugin and engine differ
        raise MomoGeoError(f"{exc}; update momo-geo or the plugin") from None
    result = map_scene(
        request["scene"], request["mask_path"], request["vector_path"],
        request.get("model") or "default", options,
        progress=lambda done, total: emit(progress=[int(done), int(total)]),
        cancel=cancelled.is_set, log=lambda message: emit(log=str(message)))
    return {"mask_path": str(result.mask_path), "vector_path": str(result.vector_path),
            "feature_counts": dict(result.feature_counts), "seconds": result.seconds,
            "tiles_total": result.tiles_total, "model": result.model,
            "device": result.device, "class_names": list(result.class_names)}


def archive_request(request: dict[str, Any], emit: Any) -> dict:
    """Run ``map_archive`` for a request (:class:`.client.ArchiveRequest` as a dict) on a local
    Dask cluster or the scheduler it names; return a JSON-able summary."""
    from momo_geo.archive import map_archive
    from momo_geo.errors import MomoGeoError
    from momo_geo.inference.options import MapOptions

    try:
        options = MapOptions(**request.get("options", {}))
    except TypeError as exc:
        raise MomoGeoError(f"{exc}; update momo-geo or the plugin") from None

    def progress(event: Any) -> None:
        emit(progress=[event.finished, event.total])
        emit(log=event.line)

    result = map_archive(
        request["scenes"], request["out_dir"], request.get("model") or "default", options,
        scheduler=request.get("scheduler") or None, workers=request.get("workers") or None,
        catalogue_crs=request.get("catalogue_crs") or "IAU_2015:49900", progress=progress,
        log=lambda message: emit(log=str(message)))
    catalogue = result.catalogue
    return {"catalogue": str(catalogue.path) if catalogue else "",
            "features": catalogue.features if catalogue else 0,
            "manifest": str(result.manifest), "mapped": result.mapped,
            "skipped": result.skipped, "failed": result.failed, "seconds": result.seconds}


class _Interrupter:
    """Turns a cancel into Ctrl-C for ``map_archive`` (which then stops its cluster cleanly and
    keeps finished scenes), unless the run has already finished."""

    def __init__(self, cancelled: threading.Event) -> None:
        import signal

        # The cancel arrives as a simulated SIGINT, which Python drops when the process was
        # started with SIGINT ignored (a parent started in the background): handle it here.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.cancelled = cancelled
        self.lock = threading.Lock()
        self.finished = False
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        import _thread

        self.cancelled.wait()
        with self.lock:
            if not self.finished:
                _thread.interrupt_main()

    def finish(self) -> None:
        with self.lock:
            self.finished = True


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
        if command == "defaults":
            emit(done=defaults())
        elif command == "describe":
            emit(done=describe(request.get("scene", ""), request.get("model", "default")))
        elif command == "map":
            cancelled = threading.Event()
            threading.Thread(target=_watch_stdin, args=(cancelled,), daemon=True).start()
            emit(done=map_request(request, emit, cancelled))
        elif command == "archive":
            cancelled = threading.Event()
            threading.Thread(target=_watch_stdin, args=(cancelled,), daemon=True).start()
            interrupter = _Interrupter(cancelled)
            try:
                summary = archive_request(request, emit)
                interrupter.finish()
            except KeyboardInterrupt:  # a cancel (the interrupt may land just after the end)
                interrupter.finish()
                emit(error="cancelled")
                return 1
            emit(done=summary)
        else:
            emit(error=f"unknown worker command {command!r} (defaults, describe, map or "
                 "archive)")
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
    # Run as a script, this folder is sys.path[0]; its module names (plugin, task, ...) must not
    # shadow the engine's imports.
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]
    sys.exit(main())
