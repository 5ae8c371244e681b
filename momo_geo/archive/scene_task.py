"""One scene on a Dask worker: the same :func:`~momo_geo.inference.map_scene` as ``momo-geo map``.

Runs inside worker processes, which may be on other machines: it takes and returns plain dicts
(cheap to pickle, no torch objects cross the network) and never raises for a bad scene; the
record it returns says ``failed`` with a one-line error, so a corrupt scene is one row of the
manifest, not a stopped run. A worker process that dies (out of memory, a crash, a killed node)
is Dask's business: the scheduler gives the scene to another worker.

The model is loaded once per worker process (:data:`_PREDICTORS`), not once per scene: loading a
ViT takes seconds and a gigabyte, mapping a small scene less.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from momo_geo.errors import MomoGeoError

_PREDICTORS: dict[tuple[str, str, str], Any] = {}
"""Loaded models of this worker process, by (model, device, precision)."""
_LOCK = threading.Lock()
MODEL_LOADS = 0
"""How many times this process loaded a model (the tests check it stays at one)."""


def _predictor(model: str, device: str, precision: str, tta: str) -> Any:
    global MODEL_LOADS
    key = (model, device, precision, tta)
    with _LOCK:  # a worker with several threads loads the model once, not once per thread
        if key not in _PREDICTORS:
            from momo_geo.bundle import load_bundle
            from momo_geo.inference import Predictor

            _PREDICTORS[key] = Predictor(load_bundle(model), device, precision, tta)
            MODEL_LOADS += 1
        return _PREDICTORS[key]


def check_body(info: Any, assume_mars: bool) -> None:
    """Refuse a scene that is not on Mars (an EPSG:4326 or UTM label is the usual mistake).

    Checked here whatever ``map_scene`` does about it (it warned, then refused): in an archive a
    scene on the wrong body would put features at the wrong place of the merged catalogue, so it
    is a failed scene with a one-line reason, found before the model is used.
    """
    if info.body == "Mars" or assume_mars:
        return
    from momo_geo.inference.options import MapOptions

    article = "an" if info.body[:1] in "AEIOU" else "a"
    where = (f"{article} {info.body} CRS" if info.body != "unknown"
             else "a CRS of no known body")
    way_out = (" (or --assume-mars to read its coordinates on Mars)"
               if "assume_mars" in MapOptions.__dataclass_fields__ else "")
    raise MomoGeoError(f"{info.path.name} is in {where} ({info.crs_description}), not a Mars "
                       f"one; give the scene its Mars CRS{way_out}")


def map_one(job: dict[str, Any]) -> dict[str, Any]:
    """Map one scene; return its manifest fields (``status`` ``done`` or ``failed``).

    ``job``: ``scene``, ``mask_path``, ``vector_path``, ``model`` (bundle folder or bundled
    name), ``options`` (:class:`~momo_geo.inference.options.MapOptions` fields) and optionally
    ``torch_threads``.
    """
    started = time.time()
    record: dict[str, Any] = {"started": started, "worker": _worker_address(),
                              "pid": os.getpid()}
    try:
        record.update(_map(job))
        record["status"] = "done"
    except MomoGeoError as exc:
        record.update(status="failed", error=str(exc))
    except Exception as exc:  # one line in the manifest; the run goes on
        message = " ".join(str(exc).split()) or type(exc).__name__
        record.update(status="failed", error=f"{type(exc).__name__}: {message}")
    if record["status"] == "failed":
        _remove(job["mask_path"], job["vector_path"])  # never a half-done scene
    record.update(finished=time.time(), model_loads=MODEL_LOADS)
    return record


def _map(job: dict[str, Any]) -> dict[str, Any]:
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    from momo_geo.inference import map_scene
    from momo_geo.inference.options import MapOptions
    from momo_geo.io import open_scene

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    if job.get("torch_threads"):
        import torch

        torch.set_num_threads(int(job["torch_threads"]))
    values = dict(job["options"])
    assume_mars = bool(values.get("assume_mars", False))
    options = MapOptions(**values)
    # with assume_mars, open_scene reads the coordinates on Mars (as map_scene does)
    info = open_scene(job["scene"], **({"assume_mars": True} if assume_mars else {}))
    check_body(info, assume_mars)
    predictor = _predictor(job["model"], options.device, options.precision, options.tta)
    _clear_stale_locks(job["mask_path"], job["vector_path"])
    messages: list[str] = []
    result = map_scene(info.path, job["mask_path"], job["vector_path"], job["model"], options,
                       predictor=predictor, log=messages.append)
    return {"features": int(sum(result.feature_counts.values())),
            "sensor": info.sensor.name if info.sensor is not None else None,
            "mask_path": str(result.mask_path), "vector_path": str(result.vector_path),
            "messages": messages}


def _clear_stale_locks(*paths: str | None) -> None:
    """Remove the output reservations (:mod:`momo_geo.outputs`) a dead worker left on this
    scene's outputs.

    Why it is safe and needed: the archive's run lock lets one run at a time into the folder,
    and the scheduler gives a scene to a new worker only once its old worker is gone, so a
    reservation found now is stale. ``outputs`` takes over a dead process's lock only on the
    machine that holds it; on a multi-machine cluster the retry runs elsewhere and would be
    refused as "in use".
    """
    try:
        from momo_geo.outputs import _lock_path
    except ImportError:  # a momo-geo without output reservations
        return
    for path in paths:
        if path:
            _lock_path(Path(path)).unlink(missing_ok=True)


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def _remove(*paths: str | None) -> None:
    for path in paths:
        if path:
            Path(path).unlink(missing_ok=True)
