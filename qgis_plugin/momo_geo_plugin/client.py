"""The plugin's one way into momo-geo: the worker process, and what it answers.

The dialog, the background task and the Processing algorithm build a :class:`MapRequest` and hand
it to :func:`run_map`, which runs :func:`momo_geo.inference.map_scene` in a child Python process
(:mod:`.worker` says why; :mod:`.interpreter` says which Python). Progress and cancel cross the
process boundary as JSON lines. The plugin has no mapping defaults of its own: option names,
defaults, choices, output naming and background classes come from the worker's ``defaults``
answer (:func:`engine_info`), i.e. from ``momo_geo.inference.options`` in the engine's own
Python. Nothing here imports QGIS or momo_geo, so the plugin loads, and reports, without them.
"""

from __future__ import annotations

import json
import queue
import subprocess  # nosec B404 # only our own worker script: fixed argv list, never a shell
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .interpreter import Interpreter, configured, detected, qgis_interpreter, worker_env

VECTOR_FORMATS = {"GeoPackage": ".gpkg", "ESRI Shapefile": ".shp"}
WORKER = Path(__file__).with_name("worker.py")
CANCEL_GRACE_S = 60.0
"""How long a cancelled worker may take to finish its batch and clean up before it is killed."""
CHECK_TIMEOUT_S = 60.0


class MappingError(Exception):
    """The run failed (one-line reason) or was cancelled (``cancelled`` True)."""

    def __init__(self, message: str, cancelled: bool = False) -> None:
        super().__init__(" ".join(str(message).split()))
        self.cancelled = cancelled


@dataclass
class MapRequest:
    """One mapping run: ``map_scene``'s scene, outputs and model, and ``options`` as a dict of
    ``MapOptions`` field names; options left out take the engine's defaults."""

    scene: str
    mask_path: str
    vector_path: str
    model: str = "default"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ArchiveRequest:
    """Many scenes into one archive folder (``momo_geo.archive.map_archive``): ``scenes`` as
    paths; ``options`` as for :class:`MapRequest`; ``workers`` 0 for the engine's default,
    ``scheduler`` empty for a local cluster."""

    scenes: list[str]
    out_dir: str
    model: str = "default"
    options: dict[str, Any] = field(default_factory=dict)
    workers: int = 0
    scheduler: str = ""
    catalogue_crs: str = "IAU_2015:49900"


@dataclass
class ClassStyle:
    id: int
    name: str
    color: str
    background: bool


@dataclass
class CardInfo:
    """What the plugin shows and styles from a model card (as the worker read it)."""

    name: str
    task: str
    tile_size: int
    tile_overlap: int
    classes: list[ClassStyle]

    @classmethod
    def from_dict(cls, card: dict[str, Any]) -> CardInfo:
        return cls(card["name"], card["task"], int(card["tile_size"]), int(card["tile_overlap"]),
                   [ClassStyle(**c) for c in card["classes"]])

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]


# --------------------------------------------------------------------------------------------
# the engine's interpreter and its answer to "defaults"


@dataclass
class EngineInfo:
    """The worker's ``defaults`` answer for one interpreter, or why there is none."""

    interpreter: Interpreter
    answer: dict[str, Any] | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.answer is not None and not self.answer.get("missing")

    @property
    def options(self) -> dict[str, dict[str, Any]]:
        return (self.answer or {}).get("options", {})

    def default_outputs(self, scene: str | Path, vector_ext: str = ".gpkg") -> tuple[str, str]:
        """The engine's output names beside the scene (``<stem>_mask.tif`` and so on)."""
        scene = Path(scene)
        answer = self.answer or {}
        return (str(scene.with_name(scene.stem + answer["mask_suffix"])),
                str(scene.with_name(scene.stem + answer["vector_stem_suffix"] + vector_ext)))


_ENGINE: EngineInfo | None = None


def engine_info(refresh: bool = False) -> EngineInfo:
    """The engine to use (cached): the configured interpreter, else the first detected one that
    can map, else QGIS's own Python. ``refresh`` after the setting changed or an install."""
    global _ENGINE
    if _ENGINE is None or refresh:
        _ENGINE = find_engine()
    return _ENGINE


def find_engine() -> EngineInfo:
    chosen = configured()
    if chosen is not None:
        return ask_defaults(chosen)
    tried = []
    for candidate in [*detected(), qgis_interpreter()]:
        info = ask_defaults(candidate)
        if info.ok:
            return info
        tried.append(info)
    return tried[-1]


def ask_defaults(interpreter: Interpreter) -> EngineInfo:
    """Run the worker's ``defaults`` with ``interpreter``: momo-geo's option schema, or why not."""
    try:
        answer = call(interpreter, "defaults", {}, timeout=CHECK_TIMEOUT_S)
    except MappingError as exc:
        return EngineInfo(interpreter, problem=str(exc))
    info = EngineInfo(interpreter, answer)
    if answer.get("missing"):
        info.problem = (f"{interpreter.python} has momo-geo but cannot import "
                        f"{', '.join(answer['missing'])}")
    return info


# --------------------------------------------------------------------------------------------
# talking to the worker


def _popen(interpreter: Interpreter, command: str) -> subprocess.Popen:
    creation = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console window on Windows
    try:
        # Fixed argv: the engine's python, our worker.py, a verb (defaults, describe or map).
        return subprocess.Popen(  # nosec B603
            [interpreter.python, str(WORKER), command], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            env=worker_env(interpreter), creationflags=creation)
    except OSError as exc:
        raise MappingError(f"cannot start the momo-geo worker ({interpreter.python}): "
                           f"{exc.strerror or exc}") from None


def call(interpreter: Interpreter, command: str, request: dict[str, Any],
         timeout: float) -> dict[str, Any]:
    """One request, one answer (``defaults``, ``describe``); :class:`MappingError` if none."""
    with _popen(interpreter, command) as process:
        try:
            out, err = process.communicate(json.dumps(request) + "\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise MappingError(f"the momo-geo worker did not answer within {timeout:.0f} s"
                               ) from None
    for line in reversed(out.splitlines()):
        message = _parse(line)
        if "done" in message:
            return message["done"]
        if "error" in message:
            raise MappingError(message["error"])
    tail = err.strip().splitlines()[-1:] or [f"exit code {process.returncode}"]
    raise MappingError(f"the momo-geo worker ({interpreter.python}) failed: {tail[0]}")


def describe(scene: str, model: str, timeout: float = 60.0) -> dict[str, Any]:
    """Card summary, card (:class:`CardInfo` or None) and scene/model fit warnings."""
    try:
        answer = call(engine_info().interpreter, "describe", {"scene": scene, "model": model},
                      timeout)
    except MappingError as exc:
        return {"summary": "", "card": None, "warnings": [str(exc)]}
    card = answer.get("card")
    return {**answer, "card": CardInfo.from_dict(card) if card else None}


def load_card(model: str) -> CardInfo:
    """The model's card as the worker reads it; :class:`MappingError` if it cannot."""
    answer = call(engine_info().interpreter, "describe", {"scene": "", "model": model}, 60.0)
    if not answer.get("card"):
        raise MappingError("; ".join(answer.get("warnings", [])) or f"no model {model!r}")
    return CardInfo.from_dict(answer["card"])


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
    return _run_verb("map", asdict(request), progress, cancel, log,
                     cancelled_message="cancelled; no files were written")


def run_archive(request: ArchiveRequest, progress: Callable[[int, int], None] | None = None,
                cancel: Callable[[], bool] | None = None,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Map many scenes on a Dask cluster in the worker (``momo_geo.archive.map_archive``).

    ``progress(scenes finished, scenes to map)``; ``log`` gets one line per finished scene.
    Cancel stops the cluster; finished scenes stay in the archive's manifest, and running the
    same request again goes on from there. Returns the run's summary (``catalogue``,
    ``manifest``, ``mapped``, ``skipped``, ``failed``, ``features``).
    """
    return _run_verb("archive", asdict(request), progress, cancel, log,
                     cancelled_message="cancelled; finished scenes are kept in the archive's "
                                       "manifest: run it again to go on")


def _run_verb(verb: str, payload: dict[str, Any], progress: Any, cancel: Any, log: Any, *,
              cancelled_message: str) -> dict[str, Any]:
    """One worker run of ``verb``: progress and log relayed, cancel passed on."""
    stderr: list[str] = []
    with _popen(engine_info().interpreter, verb) as process:
        process.stdin.write(json.dumps(payload) + "\n")
        process.stdin.flush()
        err_thread = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
        err_thread.start()
        done, error, cancelled = _relay(process, progress, cancel, log)
        process.wait()
        err_thread.join(timeout=5)
    if cancelled:
        raise MappingError(cancelled_message, cancelled=True)
    if done is not None and process.returncode == 0:
        return done
    if not error:
        tail = "".join(stderr).strip().splitlines()[-1:] or ["no message"]
        error = f"the momo-geo worker stopped (exit code {process.returncode}): {tail[0]}"
    raise MappingError(error)


def _relay(process: subprocess.Popen, progress: Any, cancel: Any,
           log: Any) -> tuple[dict[str, Any] | None, str, bool]:
    """Pass the worker's messages on until it closes stdout; send ``cancel`` when asked."""
    stdout: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, stdout), daemon=True).start()
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
            return done, error, cancelled_at is not None
        message = _parse(line)
        if "progress" in message and progress is not None:
            progress(*message["progress"])
        elif "log" in message and log is not None:
            log(message["log"])
        elif "done" in message:
            done = message["done"]
        elif "error" in message:
            error = message["error"]


def _parse(line: str) -> dict[str, Any]:
    line = line.strip()
    if not line.startswith("{"):
        return {}
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        return {}
    return message if isinstance(message, dict) else {}
