"""``map_archive``: many scenes on a Dask cluster, resumable, with one merged catalogue.

Why Dask (``dask.distributed``): it is the distributed engine the geospatial Python world already
runs (xarray, dask-geopandas, Pangeo), with a ``LocalCluster`` for one machine, ``dask scheduler``
/ ``dask worker`` for several, dask-jobqueue for SLURM/PBS and dask-kubernetes, a dashboard, and
a scheduler that gives a dead worker's task to another worker. momo-geo adds only what is
particular to mapping: one task per scene running :func:`~momo_geo.inference.map_scene` with the
model loaded once per worker (:mod:`.scene_task`), the manifest that makes a run resumable
(:mod:`.manifest`), and the merged catalogue (:mod:`.catalogue`).

The way of a run: check scenes and names -> read the manifest: scenes done with the same model and
options are skipped, failed ones are tried again until ``max_attempts`` -> one task per remaining
scene -> each finished scene is committed to the manifest as it arrives (Ctrl-C loses nothing
done) -> the catalogue of every done scene -> a summary.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from momo_geo.archive import require_dask
from momo_geo.archive.catalogue import (
    CATALOGUE_NAME,
    DEFAULT_CRS,
    CatalogueSummary,
    SceneLayer,
    check_catalogue_crs,
    write_catalogue,
)
from momo_geo.archive.manifest import (
    DONE,
    FAILED,
    MANIFEST_NAME,
    Manifest,
    SceneRecord,
    now,
    options_hash,
)
from momo_geo.errors import MomoGeoError
from momo_geo.inference.options import MapOptions, default_mask_path, default_vector_path

SCENES_FOLDER = "scenes"
"""Inside the archive folder: each scene's class mask and vector layer."""
RUN_LOCK = ".map-archive.lock"
DEFAULT_MAX_ATTEMPTS = 3

Log = Callable[[str], None]


@dataclass
class ArchiveResult:
    """What a run did; ``failed`` maps scene names to their one-line errors."""

    folder: Path
    manifest: Path
    mapped: list[str] = field(default_factory=list)
    """Scenes mapped by this run."""
    skipped: list[str] = field(default_factory=list)
    """Scenes already mapped with the same model and options (not recomputed)."""
    failed: dict[str, str] = field(default_factory=dict)
    catalogue: CatalogueSummary | None = None
    dashboard: str | None = None
    seconds: float = 0.0
    model_loads: dict[str, int] = field(default_factory=dict)
    """Worker -> models it has loaded so far (one each, however many scenes)."""


def model_identity(model: str | os.PathLike[str]) -> tuple[str, str]:
    """``(model as the workers should name it, hash of its card and weights)``; reads no weights.

    A bundled model keeps its name (each worker finds its own installed copy); a bundle folder
    becomes an absolute path (on a cluster it must be on a file system every worker sees).
    """
    from momo_geo.bundle import BUNDLED_MODELS, load_card, resolve_bundle_path

    path = resolve_bundle_path(model)
    card = load_card(path)
    text = str(model)
    name = text if text in BUNDLED_MODELS else str(path.resolve())
    card_text = (path / "card.json").read_bytes()
    weights = card.weights_sha256 or _file_identity(path / "weights.safetensors")
    return name, hashlib.sha256(card_text + weights.encode()).hexdigest()[:16]


def _file_identity(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def scene_paths(scenes: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Absolute scene paths, each a file, no file name twice (names name the outputs)."""
    paths: list[Path] = []
    seen: dict[str, Path] = {}
    for scene in scenes:
        path = Path(os.path.abspath(Path(scene).expanduser()))  # a link keeps its own name
        if not path.is_file():
            raise MomoGeoError(f"{scene}: no such file")
        if path.name in seen:
            if seen[path.name] == path:
                continue
            raise MomoGeoError(f"two scenes are named {path.name} ({seen[path.name]} and {path}); "
                               "outputs are named after the scene, rename one")
        seen[path.name] = path
        paths.append(path)
    if not paths:
        raise MomoGeoError("no scenes to map")
    return paths


def read_scene_list(path: str | os.PathLike[str]) -> list[str]:
    """Scene paths from a text file, one a line; blank lines and ``#`` comments skipped;
    relative paths are relative to the list's folder."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MomoGeoError(f"{path}: cannot read the scene list ({exc})") from None
    scenes = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            scene = Path(line).expanduser()
            scenes.append(str(scene if scene.is_absolute() else path.parent / scene))
    return scenes


def map_archive(scenes: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
                model: str | os.PathLike[str] = "default", options: MapOptions | None = None, *,
                scheduler: str | None = None, workers: int | None = None,
                threads_per_worker: int = 1, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                catalogue_crs: Any = DEFAULT_CRS,
                progress: Callable[[ArchiveProgress], None] | None = None,
                log: Log | None = None) -> ArchiveResult:
    """Map ``scenes`` into ``out_dir`` on a Dask cluster; resume what an earlier run left.

    ``out_dir`` gets ``scenes/<scene>_mask.tif`` and ``scenes/<scene>_features.gpkg`` per scene,
    ``manifest.sqlite`` and ``catalogue.gpkg``. ``scheduler``: a running scheduler's address
    (``tcp://host:8786``); default a ``LocalCluster`` of ``workers`` processes (default: half the
    CPU cores, at most 4), each mapping one scene at a time with ``threads_per_worker`` CPU
    threads. ``options.overwrite`` maps again scenes already done. ``progress(event)`` is called
    per finished scene (:class:`ArchiveProgress`; ``event.line`` says it all), ``log(line)`` with
    the rest (dashboard link, scene warnings). Raises :class:`MomoGeoError` for bad arguments;
    failed scenes are reported in the result and the manifest, not raised.
    """
    started = time.monotonic()
    options = options if options is not None else MapOptions()
    say = log or (lambda line: None)
    paths = scene_paths(scenes)
    if max_attempts < 1:
        raise MomoGeoError("max attempts must be at least 1")
    if threads_per_worker < 1 or (workers is not None and workers < 1):
        raise MomoGeoError("workers and threads per worker must be at least 1")
    target_crs = check_catalogue_crs(catalogue_crs)
    model_name, model_hash = model_identity(model)
    require_dask()
    folder = archive_folder(out_dir)
    result = ArchiveResult(folder=folder, manifest=folder / MANIFEST_NAME)
    values = {**options.as_dict(), "overwrite": True}  # the archive folder is the run's own
    opt_hash = options_hash(values)
    with _run_lock(folder), Manifest(folder) as manifest:
        _remove_staging(folder / SCENES_FOLDER)
        todo = _plan(manifest, paths, folder, model_name, model_hash, opt_hash, options.overwrite,
                     max_attempts, result)
        if todo:
            given_up = len(paths) - len(todo) - len(result.skipped)
            say(f"map-archive: {len(todo)} scene(s) to map, {len(result.skipped)} already mapped"
                + (f", {given_up} failed {max_attempts} times (left failed)" if given_up else ""))
            try:
                _run(todo, manifest, values, model_name, scheduler, workers, threads_per_worker,
                     result, progress, say)
            except BaseException:
                # Our local workers are gone: remove what they staged, and the outputs of a
                # scene that finished after the stop but is not in the manifest. A remote
                # cluster may still be finishing a cancelled scene; the next run redoes it.
                if scheduler is None:
                    _remove_staging(folder / SCENES_FOLDER)
                    _remove_unrecorded(manifest, todo)
                raise
            _remove_staging(folder / SCENES_FOLDER)  # every task of ours has finished
        done = [r for r in manifest.records() if r.status == DONE and r.name in
                {p.name for p in paths}]
        result.failed = {r.name: r.error or "" for r in manifest.records()
                         if r.status == FAILED and r.name in {p.name for p in paths}}
    result.catalogue = write_catalogue(
        [SceneLayer(r.name, r.sensor, r.vector_path) for r in done if r.vector_path],
        folder / CATALOGUE_NAME, target_crs)
    result.seconds = time.monotonic() - started
    return result


def archive_folder(out_dir: str | os.PathLike[str]) -> Path:
    """The archive folder, made if new; a one-line error for a folder that holds other things.

    A run replaces files in it (the catalogue, scene outputs), so a folder with files but no
    manifest, e.g. a user's project folder given by mistake, is refused, not written into.
    """
    folder = Path(out_dir).expanduser().resolve()
    if not folder.parent.is_dir():
        raise MomoGeoError(f"{folder.parent}: output folder does not exist")
    if folder.exists() and not folder.is_dir():
        raise MomoGeoError(f"{folder}: is a file, not an archive folder")
    ours = {SCENES_FOLDER, MANIFEST_NAME, CATALOGUE_NAME, RUN_LOCK}
    foreign = [p for p in folder.iterdir() if p.name not in ours] if folder.is_dir() else []
    if foreign and not (folder / MANIFEST_NAME).is_file():
        raise MomoGeoError(f"{folder}: holds files but no {MANIFEST_NAME}, so it is not an "
                           "archive folder of momo-geo; give a new or empty folder")
    (folder / SCENES_FOLDER).mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def _run_lock(folder: Path) -> Any:
    """One run at a time per archive folder: a second one fails at once, naming the first.

    A lock left by a run that was killed (its process is gone, same machine) is taken over.
    """
    import socket

    lock = folder / RUN_LOCK
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = lock.read_text().split() if lock.exists() else []
            if len(owner) == 2 and owner[1] == socket.gethostname() and not _alive(owner[0]):
                lock.unlink(missing_ok=True)  # left by a killed run
                continue
            raise MomoGeoError(f"{folder}: another map-archive run is using it (process "
                               f"{' on '.join(owner) or 'unknown'}); wait for it or stop it"
                               ) from None
        with os.fdopen(fd, "w") as handle:
            handle.write(me)
        break
    else:
        raise MomoGeoError(f"{folder}: could not take its run lock {lock}")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _plan(manifest: Manifest, paths: list[Path], folder: Path, model: str, model_hash: str,
          opt_hash: str, overwrite: bool, max_attempts: int, result: ArchiveResult
          ) -> list[SceneRecord]:
    """The scenes this run maps, as manifest rows (new scenes are inserted as pending)."""
    todo, new = [], []
    for path in paths:
        record = manifest.get(path.name)
        same = (record is not None and record.model_hash == model_hash
                and record.options_hash == opt_hash)
        if (record is not None and same and not overwrite and record.status == DONE
                and _outputs_exist(record)):
            result.skipped.append(path.name)
            continue
        if record is not None and same and not overwrite and record.status == FAILED \
                and record.attempts >= max_attempts:
            continue  # reported with the failed scenes at the end
        out = folder / SCENES_FOLDER / path.name
        if record is None or not same or overwrite or record.status != FAILED:
            record = SceneRecord(name=path.name, path=str(path))  # fresh: attempts from 0
        record.path = str(path)  # a failed scene keeps its status, error and attempts till tried
        record.mask_path = str(default_mask_path(out))
        record.vector_path = str(default_vector_path(out))
        record.model, record.model_hash, record.options_hash = model, model_hash, opt_hash
        new.append(record)
        todo.append(record)
    manifest.put_many(new)
    return todo


def _outputs_exist(record: SceneRecord) -> bool:
    return all(p and Path(p).is_file() for p in (record.mask_path, record.vector_path))


def _remove_unrecorded(manifest: Manifest, records: list[SceneRecord]) -> None:
    """Outputs of scenes the manifest does not call done: only done scenes have outputs."""
    for record in records:
        current = manifest.get(record.name)
        if current is None or current.status != DONE:
            for path in (record.mask_path, record.vector_path):
                if path:
                    Path(path).unlink(missing_ok=True)


def _remove_staging(folder: Path) -> None:
    """Staging folders and output locks a killed worker left (``atomic_output`` removes its
    own unless killed); called only when no scene is running. Only entries momo-geo names
    and whose process is gone are removed (:func:`momo_geo.outputs.remove_leftovers`), never
    another hidden file a user or a file manager put there."""
    from momo_geo.outputs import remove_leftovers

    remove_leftovers(folder)


# --------------------------------------------------------------------------------------------
# the cluster


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int | None, threads: int) -> Any:
    """A Dask client: on ``scheduler``, or on a new LocalCluster of worker processes."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise MomoGeoError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from None
        with client:
            yield client
        return
    import importlib.util

    n = workers or max(1, min(4, (os.cpu_count() or 2) // 2))
    dashboard = ":0" if importlib.util.find_spec("bokeh") is not None else None
    with _interrupts_ignored(), dask.config.set(
            {"distributed.nanny.pre-spawn-environ": _worker_environ(threads)}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=dashboard, silence_logs=logging.ERROR)
    try:
        with Client(cluster) as client:
            client.register_plugin(IgnoreInterrupts(), name="momo-geo-ignore-interrupts")
            yield client
    finally:
        cluster.close()


def _worker_environ(threads: int) -> dict[str, str | None]:
    """Dask's environment for worker processes, with ``threads`` for OpenMP, MKL and OpenBLAS
    (Dask's default is 1); set before a worker starts, as numpy and torch read it on import."""
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    count = str(threads)
    environ.update(OMP_NUM_THREADS=count, MKL_NUM_THREADS=count, OPENBLAS_NUM_THREADS=count)
    return environ


@contextlib.contextmanager
def _interrupts_ignored() -> Any:
    """SIGINT ignored while local worker processes start: they inherit the disposition.

    Ctrl-C in a terminal reaches the whole process group, and each worker would print a
    traceback while the client stops them anyway (it records what is done, then closes the
    cluster). Blocking the signal instead is not enough (the client's other threads take it and
    the nannies spawn from them). The cost: a Ctrl-C during the seconds of start-up is ignored.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_plugin_base() -> type:
    try:
        from distributed import WorkerPlugin
    except ImportError:  # without Dask the class is never used
        return object
    return WorkerPlugin


class IgnoreInterrupts(_worker_plugin_base()):  # type: ignore[misc]
    """Local workers ignore Ctrl-C, also those a nanny starts to replace a dead one (after
    start-up, when the client no longer ignores it, so they would not inherit it)."""

    def setup(self, worker: Any) -> None:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(todo: list[SceneRecord], manifest: Manifest, options: dict[str, Any], model: str,
         scheduler: str | None, workers: int | None, threads: int, result: ArchiveResult,
         progress: Callable[[ArchiveProgress], None] | None, say: Log) -> None:
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    with _client(scheduler, workers, threads) as client:
        count = len(client.scheduler_info().get("workers", {}))
        say(f"Dask cluster at {client.scheduler.address}: {count} worker(s)"
            + (" (local)" if scheduler is None else ""))
        link = _dashboard(client)
        if link:
            result.dashboard = link
            say(f"Dask dashboard: {link}")
        futures = {}
        for record in todo:
            job = {"scene": record.path, "mask_path": record.mask_path,
                   "vector_path": record.vector_path, "model": model, "options": options,
                   "torch_threads": threads if scheduler is None else None}
            future = client.submit(_task(), job, key=f"map-{record.name}-{token}", pure=False)
            futures[future] = record
        meter = _Progress(len(todo), progress)
        try:
            for future in as_completed(futures):
                record = futures[future]
                answer = _answer(future)
                _apply(record, answer)
                manifest.put(record)
                if record.status == DONE:
                    result.mapped.append(record.name)
                if answer.get("worker") and "model_loads" in answer:
                    result.model_loads[answer["worker"]] = answer["model_loads"]
                for message in answer.get("messages", []):
                    say(message)
                meter.add(record)
        except BaseException:  # Ctrl-C: stop the rest; what is done is in the manifest
            client.cancel(list(futures), force=True)
            raise


def _task() -> Callable[[dict], dict]:
    from momo_geo.archive.scene_task import map_one

    return map_one


def _dashboard(client: Any) -> str | None:
    with contextlib.suppress(Exception):
        import importlib.util

        if importlib.util.find_spec("bokeh") is not None:
            return str(client.dashboard_link)
    return None


def _answer(future: Any) -> dict[str, Any]:
    """The worker's record, or a failed one when the task itself could not run."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        return {"status": FAILED, "error": "the worker mapping this scene died each time it was "
                "tried (out of memory, or a crash in a library); see the workers' logs"}
    except MomoGeoError as exc:
        return {"status": FAILED, "error": str(exc)}
    except Exception as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        return {"status": FAILED, "error": f"{type(exc).__name__}: {message}"}


def _apply(record: SceneRecord, answer: dict[str, Any]) -> None:
    import datetime as dt

    def stamp(seconds: float | None) -> str | None:
        if seconds is None:
            return None
        return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds")

    record.status = answer["status"]
    record.attempts += 1
    record.started = stamp(answer.get("started"))
    record.finished = stamp(answer.get("finished")) or now()
    if answer.get("started") and answer.get("finished"):
        record.seconds = round(answer["finished"] - answer["started"], 3)
    record.worker = answer.get("worker")
    record.error = answer.get("error") if record.status == FAILED else None
    record.features = answer.get("features") if record.status == DONE else None
    record.sensor = answer.get("sensor", record.sensor)
    if record.status == FAILED:  # the worker removed them, unless it died first
        for path in (record.mask_path, record.vector_path):
            if path:
                Path(path).unlink(missing_ok=True)


@dataclass(frozen=True)
class ArchiveProgress:
    """One scene finished: counts so far for the whole run and a line that says it all."""

    finished: int
    total: int
    done: int
    failed: int
    scene: str
    line: str


class _Progress:
    """Counts finished scenes and makes each :class:`ArchiveProgress` (with an ETA)."""

    def __init__(self, total: int, sink: Callable[[ArchiveProgress], None] | None) -> None:
        self.total, self.sink = total, sink
        self.done = self.failed = 0
        self.start = time.monotonic()

    def add(self, record: SceneRecord) -> None:
        if record.status == DONE:
            self.done += 1
        else:
            self.failed += 1
        if self.sink is None:
            return
        finished = self.done + self.failed
        elapsed = time.monotonic() - self.start
        eta = elapsed / finished * (self.total - finished)
        what = (f"{record.features} features" if record.status == DONE
                else f"FAILED: {record.error}")
        line = (f"[{finished}/{self.total}] {record.name}: {what} | done {self.done}, "
                f"failed {self.failed}, elapsed {_duration(elapsed)}, ETA {_duration(eta)}")
        self.sink(ArchiveProgress(finished, self.total, self.done, self.failed, record.name,
                                  line))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
