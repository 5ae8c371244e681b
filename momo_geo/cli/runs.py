"""Mapping a batch of scenes, one after another or in worker processes: stoppable, and every
scene accounted for.

Why a module of its own: a batch is where a run meets the outside world. QGIS, systemd, SLURM
and ``timeout`` stop programs with SIGTERM, a closed terminal sends SIGHUP, a user presses
Ctrl-C (twice); one unreadable scene among a hundred must not cost the other ninety-nine. The
rules, the same serially and with ``--workers``:

- **Every scene is reported.** A scene that fails gets one line on stderr, ``Error: SCENE:
  reason``, and the others are still mapped; the run then exits 1 (the summary on stdout says
  how many were mapped).
- **Stopping is prompt and clean.** The first SIGINT, SIGTERM or SIGHUP is remembered; the scene
  being mapped stops at its next tile (``map_scene`` polls it per tile), its staged files and
  reservations are removed, scenes already complete stay complete, no new scene starts. With
  ``--workers`` the parent forwards SIGTERM to every worker and waits for them. One line says
  which scenes were completed, and the exit status is 128 + the signal's number: 130 (Ctrl-C),
  143 (SIGTERM), 129 (SIGHUP), the shell convention that ``timeout``, SLURM and systemd read.
  Further signals while stopping are ignored: no second-Ctrl-C traceback.
- **Workers are capped**: each loads its own copy of the model (about 1.3 GB for the default
  ViT, more while mapping), so ``--workers`` is limited to the number of scenes, the CPU cores
  and one worker per 2 GiB of memory; a cap below the request is said in one line.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import click

from momo_geo.cli import Interrupted
from momo_geo.errors import MomoGeoError

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, n))
WORKER_MEMORY = 2 * 2**30
"""Memory set aside per worker process: the model (~1.3 GB for the default ViT) and its tiles."""


class Stop:
    """The first stopping signal, remembered; callable as a signal handler.

    Outside mapping (loading the model, between scenes) the signal raises KeyboardInterrupt at
    once; while a scene is mapped (:meth:`mapping`) it only sets the flag that ``map_scene``
    polls per tile, so a scene either completes (its outputs committed) or leaves nothing.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.interruptible = True

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            return  # a second Ctrl-C while stopping: ignored, no traceback
        self.signum = signum
        if self.interruptible:
            raise KeyboardInterrupt

    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    @contextlib.contextmanager
    def mapping(self) -> Iterator[None]:
        self.interruptible = False
        try:
            yield
        finally:
            self.interruptible = True

    @contextlib.contextmanager
    def installed(self, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
        """This object as the handler of ``signals`` (main thread only), restored afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self) for s in signals}
        try:
            yield
        finally:
            for s, handler in previous.items():
                # once stopping, stay deaf to further signals until the process has exited
                signal.signal(s, signal.SIG_IGN if self.requested() else handler)


@dataclass
class Report:
    """Which scenes of a batch were completed and which failed (and why)."""

    scenes: list[str]
    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def fail(self, scene: str, exc: BaseException) -> None:
        message = " ".join(str(exc).split()) or type(exc).__name__
        if not message.startswith(scene):
            message = f"{scene}: {message}"
        self.failed[scene] = message
        click.echo(f"Error: {message}", err=True)

    def finish(self, stop: Stop) -> None:
        """Raise :class:`Interrupted` after a signal; exit 1 when any scene failed."""
        if stop.requested():
            done = [Path(s).name for s in self.scenes if s in self.completed]
            which = (f"{len(done)} of {len(self.scenes)} scenes completed ({', '.join(done)})"
                     if done else "no scene was completed")
            raise Interrupted(f"Interrupted: {which}; no partial output was left behind.",
                              stop.exit_code)
        if self.failed:
            if len(self.scenes) > 1:
                click.echo(f"Mapped {len(self.completed)} of {len(self.scenes)} scenes; failed: "
                           + ", ".join(Path(s).name for s in self.failed))
            raise click.exceptions.Exit(1)


def run_serial(jobs: list[dict], quiet: bool, summary: Callable[[Any], str],
               progress_bar: Callable[[str, bool], Any]) -> None:
    """Map ``jobs`` one after another with the model loaded once."""
    from momo_geo.bundle import load_bundle
    from momo_geo.inference import Predictor, map_scene

    stop = Stop()
    report = Report([job["scene"] for job in jobs])
    with stop.installed():
        try:
            jobs = preflight(jobs, report)
            if not jobs:
                report.finish(stop)
            options = jobs[0]["options"]
            predictor = Predictor(load_bundle(jobs[0]["model"], **_trust(options)),
                                  options.device, options.precision, options.tta)
            for job in jobs:
                if stop.requested():
                    break
                bar = progress_bar(Path(job["scene"]).name, quiet)
                try:
                    with stop.mapping():
                        result = map_scene(**job, progress=bar, log=_warn, predictor=predictor,
                                           cancel=stop.requested)
                except MomoGeoError as exc:
                    bar.close()
                    if stop.requested():
                        break
                    if len(jobs) == 1:
                        raise
                    report.fail(job["scene"], exc)
                    continue
                bar.close()
                report.completed.append(job["scene"])
                click.echo(summary(result))
        except KeyboardInterrupt:
            if not stop.requested():
                stop.signum = signal.SIGINT
        report.finish(stop)


def preflight(jobs: list[dict], report: Report) -> list[dict]:
    """The jobs whose scene can be mapped; each other one is reported (one line) and dropped.

    Opening a scene is cheap, loading a model is not: a batch of unreadable or mislabelled scenes
    is told so in a second, before torch is imported. A single scene's problem is its run's one
    error line.
    """
    from momo_geo.inference.fit import open_mappable

    good = []
    for job in jobs:
        try:
            open_mappable(job["scene"], job["options"])
        except MomoGeoError as exc:
            if len(jobs) == 1:
                raise
            report.fail(job["scene"], exc)
            continue
        good.append(job)
    return good


def _trust(options: Any) -> dict[str, Any]:
    """``trust_unhashed`` for :func:`load_bundle`, where this momo-geo has that option."""
    value = getattr(options, "trust_unhashed", None)
    return {} if value is None else {"trust_unhashed": value}


def _warn(message: str) -> None:
    click.echo(message, err=True)


# --------------------------------------------------------------------------------------------
# worker processes


def worker_cap(requested: int, scenes: int) -> tuple[int, str | None]:
    """Workers to start, and the reason when fewer than ``requested`` for the machine's sake."""
    cores = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = cores * WORKER_MEMORY
    by_memory = max(1, memory // WORKER_MEMORY)
    machine = min(cores, by_memory)
    workers = max(1, min(requested, scenes, machine))
    if requested > machine and scenes > machine:
        return workers, (f"using {workers} worker processes, not {requested}: each loads its own "
                         f"model, and this machine has {cores} CPU cores and "
                         f"{memory / 2**30:.0f} GiB of memory (one worker per core and per "
                         f"{WORKER_MEMORY // 2**30} GiB)")
    return workers, None


def run_parallel(jobs: list[dict], workers: int, verbose: bool) -> None:
    """Map ``jobs`` in ``workers`` spawned processes, each loading the model once."""
    import multiprocessing

    if not verbose:
        # multiprocessing's resource tracker (its own interpreter, started with our
        # environment) warns about a queue semaphore of workers stopped by a signal: noise
        # after a clean stop, not the one line the user should get.
        quiet = "ignore::UserWarning:multiprocessing.resource_tracker"
        current = os.environ.get("PYTHONWARNINGS")
        os.environ["PYTHONWARNINGS"] = f"{current},{quiet}" if current else quiet
    context = multiprocessing.get_context("spawn")
    stop = Stop()
    report = Report([job["scene"] for job in jobs])
    jobs = preflight(jobs, report)
    if not jobs:
        report.finish(stop)
    workers = min(workers, len(jobs))
    tasks: Any = context.Queue()
    results: Any = context.Queue()
    for index, job in enumerate(jobs):
        tasks.put((index, job))
    for _ in range(workers):
        tasks.put(None)
    stop.interruptible = False  # the parent never unwinds mid-way: it forwards and waits
    with stop.installed():
        processes = [context.Process(target=_worker, args=(tasks, results, verbose),
                                     name=f"momo-geo-worker-{i}") for i in range(workers)]
        for process in processes:
            process.start()
        running: dict[int, int] = {}  # worker pid -> index of the scene it maps
        forwarded = False
        while True:
            if stop.requested() and not forwarded:
                forwarded = True
                for process in processes:
                    if process.is_alive() and process.pid is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(process.pid, signal.SIGTERM)
            try:
                kind, pid, index, payload = results.get(timeout=0.2)
            except queue.Empty:
                if all(p.exitcode is not None for p in processes):
                    break
                continue
            scene = jobs[index]["scene"]
            if kind == "start":
                running[pid] = index
            elif kind == "done":
                running.pop(pid, None)
                report.completed.append(scene)
                _say_done(payload)
            elif kind == "failed":
                running.pop(pid, None)
                if not stop.requested():
                    report.fail(scene, MomoGeoError(payload))
            else:  # "stopped"
                running.pop(pid, None)
        for process in processes:
            process.join()
        _drain(results, jobs, report, running, stop)
        for pid, index in running.items():
            if not stop.requested():
                code = next((p.exitcode for p in processes if p.pid == pid), None)
                report.fail(jobs[index]["scene"],
                            MomoGeoError(f"its worker process died (exit status {code})"))
        for job in jobs:  # never started: every worker died before taking it
            scene = job["scene"]
            if not stop.requested() and scene not in report.completed + list(report.failed):
                report.fail(scene, MomoGeoError("not mapped: every worker process died"))
        tasks.cancel_join_thread()
        results.cancel_join_thread()
    report.finish(stop)


def _drain(results: Any, jobs: list[dict], report: Report, running: dict[int, int],
           stop: Stop) -> None:
    """Results that arrived while the last workers exited."""
    while True:
        try:
            kind, pid, index, payload = results.get(timeout=0.5)
        except queue.Empty:
            return
        if kind == "start":
            running[pid] = index
            continue
        running.pop(pid, None)
        if kind == "done":
            report.completed.append(jobs[index]["scene"])
            _say_done(payload)
        elif kind == "failed" and not stop.requested():
            report.fail(jobs[index]["scene"], MomoGeoError(payload))


def _worker(tasks: Any, results: Any, verbose: bool) -> None:
    """One worker process: map scenes from ``tasks`` until told to stop or none are left."""
    from momo_geo.cli import quiet_libraries

    quiet_libraries(verbose)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which decides
    stop = Stop()
    pid, parent = os.getpid(), os.getppid()
    predictor = None
    with stop.installed(tuple(s for s in STOP_SIGNALS if s != signal.SIGINT)):
        try:
            while not stop.requested():
                try:
                    item = tasks.get(timeout=1.0)
                except queue.Empty:
                    if os.getppid() != parent:
                        break  # the parent was killed outright: nobody to report to
                    continue
                if item is None:
                    break
                index, job = item
                results.put(("start", pid, index, None))
                kind, predictor, payload = _map_job(job, predictor, stop)
                results.put((kind, pid, index, payload))
                if kind == "stopped":
                    break
        except KeyboardInterrupt:
            pass  # stopped while loading the model or waiting for a scene
    time.sleep(0)  # let the queue's feeder thread flush before the process ends


def _say_done(payload: tuple[list[str], str]) -> None:
    """A worker's finished scene: its notices (frame, assumed body, GSD) on stderr as in a
    serial run, its summary on stdout."""
    notices, text = payload
    for line in notices:
        click.echo(line, err=True)
    click.echo(text)


def _map_job(job: dict, predictor: Any, stop: Stop) -> tuple[str, Any, Any]:
    """(``done``, ``failed`` or ``stopped``, the model for the next scene, the summary or the
    reason) for one scene."""
    from momo_geo.bundle import load_bundle
    from momo_geo.cli.map import summary
    from momo_geo.inference import Predictor, map_scene

    messages: list[str] = []
    try:
        if predictor is None:
            options = job["options"]
            predictor = Predictor(load_bundle(job["model"], **_trust(options)), options.device,
                                  options.precision, options.tta)
        with stop.mapping():
            result = map_scene(**job, log=messages.append, predictor=predictor,
                               cancel=stop.requested)
    except MomoGeoError as exc:
        if stop.requested():
            return "stopped", predictor, None
        return "failed", predictor, str(exc)
    except Exception as exc:  # noqa: BLE001 - reported as this scene's one line
        return "failed", predictor, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return "done", predictor, (messages, summary(result))
