"""The plugin's one way into momo-geo: a request, and the worker process that maps it.

The dialog, the background task and the Processing algorithm all build a :class:`MapRequest` and
hand it to :func:`run_map`, which runs :func:`momo_geo.inference.map_scene` (same parameter names
as ``momo-geo map``) in a child Python process (:mod:`.worker` says why). Progress and cancel
cross the process boundary as JSON lines. Nothing here imports QGIS or momo_geo, so the plugin
loads, and reports, even when momo-geo is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess  # nosec B404 # only our own worker script: fixed argv list, never a shell
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .deps import qgis_python
from .worker import card_summary, fit_warnings  # noqa: F401 - re-exported for the dialog

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "fp16", "bf16")
BLENDS = ("crop", "smooth")
VECTOR_FORMATS = {"GeoPackage": ".gpkg", "ESRI Shapefile": ".shp"}
WORKER = Path(__file__).with_name("worker.py")
CANCEL_GRACE_S = 60.0
"""How long a cancelled worker may take to finish its batch and clean up before it is killed."""


class MappingError(Exception):
    """The run failed (one-line reason) or was cancelled (``cancelled`` True)."""

    def __init__(self, message: str, cancelled: bool = False) -> None:
        super().__init__(" ".join(str(message).split()))
        self.cancelled = cancelled


@dataclass
class MapRequest:
    """Everything one mapping run needs; field names are ``map_scene``'s parameter names."""

    scene: str
    mask_path: str
    vector_path: str
    model: str = "default"
    tile: int | None = None
    """Tile size in pixels; ``None`` or 0 takes the model card's ``tile_size``."""
    overlap: int | None = None
    """Tile overlap in pixels; ``None`` or negative takes the model card's ``tile_overlap``."""
    batch_size: int = 8
    device: str = "auto"
    precision: str = "fp32"
    blend: str = "crop"
    min_area: float = 0.0
    """Smallest feature kept in the vector layer, square metres on Mars."""
    simplify: float = 0.0
    circles: bool = False
    overwrite: bool = False


def worker_command(command: str) -> list[str]:
    return [qgis_python(), str(WORKER), command]


WHEEL_DATA_VARIABLES = ("PROJ_LIB", "PROJ_DATA", "GDAL_DATA", "GDAL_DRIVER_PATH")
"""Set by QGIS for *its* GDAL/PROJ; the worker's rasterio/pyproj find their own data without them
(a newer pyproj refuses an older proj.db, so QGIS's would break it)."""


def worker_env() -> dict[str, str]:
    """The child sees exactly the modules QGIS's interpreter sees (its ``sys.path``)."""
    env = {k: v for k, v in os.environ.items() if k not in WHEEL_DATA_VARIABLES}
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def _start(command: str, request: dict[str, Any]) -> subprocess.Popen:
    creation = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console window on Windows
    try:
        # Fixed argv: QGIS's python, our worker.py, a verb ("map" or "describe").
        process = subprocess.Popen(  # nosec B603
            worker_command(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", env=worker_env(),
            creationflags=creation)
    except OSError as exc:
        raise MappingError(f"cannot start the momo-geo worker ({qgis_python()}): {exc}") from None
    process.stdin.write(json.dumps(request) + "\n")
    process.stdin.flush()
    return process


def _lines(stream: Any, sink: queue.Queue) -> None:
    for line in stream:
        sink.put(line)
    sink.put(None)


def run_map(request: MapRequest, progress: Callable[[int, int], None] | None = None,
            cancel: Callable[[], bool] | None = None,
            log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Map ``request`` in the worker; return its summary (paths, ``feature_counts``, ...).

    ``progress(done, total)`` after each batch; ``cancel()`` polled ten times a second: True
    stops the engine within one batch, leaves no files and raises ``MappingError(cancelled=True)``.
    Any failure raises :class:`MappingError` with the engine's one-line message.
    """
    process = _start("map", asdict(request))
    stdout: queue.Queue = queue.Queue()
    stderr: list[str] = []
    threading.Thread(target=_lines, args=(process.stdout, stdout), daemon=True).start()
    err_thread = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    err_thread.start()
    done: dict[str, Any] | None = None
    error = ""
    cancelled_at: float | None = None
    while True:
        if cancelled_at is None and cancel is not None and cancel():
            cancelled_at = time.monotonic()
            try:
                process.stdin.write("cancel\n")
                process.stdin.flush()
            except OSError:
                pass
        if cancelled_at is not None and time.monotonic() - cancelled_at > CANCEL_GRACE_S:
            process.kill()
        try:
            line = stdout.get(timeout=0.1)
        except queue.Empty:
            continue
        if line is None:
            break
        message = _parse(line)
        if "progress" in message and progress is not None:
            progress(*message["progress"])
        elif "log" in message and log is not None:
            log(message["log"])
        elif "done" in message:
            done = message["done"]
        elif "error" in message:
            error = message["error"]
    process.wait()
    err_thread.join(timeout=5)
    with contextlib.suppress(OSError):
        process.stdin.close()
    if cancelled_at is not None:
        raise MappingError("cancelled; no files were written", cancelled=True)
    if done is not None and process.returncode == 0:
        return done
    if not error:
        tail = "".join(stderr).strip().splitlines()[-1:] or ["no message"]
        error = f"the momo-geo worker stopped (exit code {process.returncode}): {tail[0]}"
    raise MappingError(error)


def describe(scene: str, model: str, timeout: float = 60.0) -> dict[str, Any]:
    """Card summary and scene/model fit warnings, computed in the worker (it opens the scene)."""
    process = _start("describe", {"scene": scene, "model": model})
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return {"summary": "", "warnings": ["reading the scene took too long"]}
    for line in reversed(out.splitlines()):
        message = _parse(line)
        if "done" in message:
            return message["done"]
        if "error" in message:
            return {"summary": "", "warnings": [message["error"]]}
    tail = err.strip().splitlines()[-1:] or ["no message"]
    return {"summary": "", "warnings": [f"the momo-geo worker failed: {tail[0]}"]}


def _parse(line: str) -> dict[str, Any]:
    line = line.strip()
    if not line.startswith("{"):
        return {}
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        return {}
    return message if isinstance(message, dict) else {}


def default_outputs(scene: str | Path, vector_ext: str = ".gpkg") -> tuple[str, str]:
    """Output paths beside the scene: ``<stem>_mask.tif`` and ``<stem>_features.gpkg``."""
    scene = Path(scene)
    stem = scene.name.split(".")[0] or "scene"
    return (str(scene.with_name(f"{stem}_mask.tif")),
            str(scene.with_name(f"{stem}_features{vector_ext}")))
