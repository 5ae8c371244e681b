"""``momo-geo map-archive SCENE… --out DIR``: many scenes on a Dask cluster, one catalogue.

A thin shell over :func:`momo_geo.archive.map_archive`. The mapping flags are ``momo-geo map``'s
(generated from :class:`~momo_geo.inference.options.MapOptions` by the same decorator), so a
scene mapped here is mapped exactly as ``map`` would. Paths, the model and Dask's presence are
checked before anything heavy is imported. Progress (one line per finished scene with done /
failed / ETA) goes to stderr, the summary to stdout; the exit status is 1 when a scene failed,
130 after Ctrl-C or SIGTERM (finished scenes stay in the manifest: run the command again to go on).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import click

from momo_geo.cli.inputs import check_model, existing_files, output_folder
from momo_geo.cli.map import TASK_MODELS
from momo_geo.cli.map import _map_options as map_options
from momo_geo.errors import MomoGeoError


@click.command("map-archive")
@click.argument("scenes", nargs=-1, type=click.Path(dir_okay=False), callback=existing_files)
@click.option("--list", "scene_list", type=click.Path(dir_okay=False), callback=existing_files,
              help="A text file of scene paths, one a line (# comments), added to SCENES.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              callback=output_folder,
              help="Archive folder: scenes/ (each scene's mask and features), manifest.sqlite, "
                   "catalogue.gpkg. Made if missing; an earlier run's is resumed.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="A running Dask scheduler (tcp://host:8786). Default: a local cluster.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes of the local cluster (each loads the model once). "
                   "Default: half the CPU cores, at most 4.")
@click.option("--threads-per-worker", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU threads each local worker maps its scene with.")
@click.option("--model", default=None,
              help="Model bundle folder or bundled model name. Default: the bundled crater "
                   "segmenter.")
@click.option("--task", type=click.Choice(sorted(TASK_MODELS)), default=None,
              help="Use the bundled model for this task.")
@map_options
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs that try a failed scene again before it is left failed.")
@click.option("--catalogue-crs", default="IAU_2015:49900", show_default=True,
              help="Mars CRS of the merged catalogue (e.g. IAU_2015:49910).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def map_archive_command(scenes: tuple[str, ...], scene_list: str | None, out_dir: str,
                        scheduler: str | None, workers: int | None, threads_per_worker: int,
                        model: str | None, task: str | None, max_attempts: int,
                        catalogue_crs: str, quiet: bool, **option_values: Any) -> None:
    """Map many SCENES on a Dask cluster into one folder: resumable, with one catalogue."""
    from momo_geo.archive import require_dask
    from momo_geo.inference.options import MapOptions

    if scheduler and workers:
        raise MomoGeoError("--workers sizes a local cluster; with --scheduler the cluster's own "
                           "workers run the scenes")
    if model and task:
        raise MomoGeoError("give either --model or --task, not both")
    model_name = model or (TASK_MODELS[task] if task else "default")
    check_model(model_name)  # reads the card only
    options = MapOptions(**option_values)
    paths = list(scenes)
    if scene_list:
        from momo_geo.archive.run import read_scene_list

        paths += read_scene_list(scene_list)
    if not paths:
        raise MomoGeoError("no scenes: give SCENE paths or --list FILE")
    require_dask()
    from momo_geo.archive import map_archive

    def say(line: str) -> None:
        click.echo(line, err=True)

    previous = _terminate_as_interrupt()
    try:
        result = map_archive(paths, out_dir, model_name, options, scheduler=scheduler,
                             workers=workers, threads_per_worker=threads_per_worker,
                             max_attempts=max_attempts, catalogue_crs=catalogue_crs,
                             progress=None if quiet else lambda event: say(event.line),
                             log=None if quiet else say)
    except KeyboardInterrupt:
        click.echo(f"Interrupted: finished scenes are recorded in {out_dir}/manifest.sqlite; "
                   "run the same command again to map the rest.", err=True)
        sys.exit(130)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    click.echo(summary(result))
    if result.failed:
        raise MomoGeoError(f"{len(result.failed)} scene(s) failed; their errors are above and "
                           f"in {result.manifest}")


def _terminate_as_interrupt() -> dict[int, Any]:
    """SIGTERM (SLURM, systemd, timeout) and SIGHUP stop like Ctrl-C (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signum = getattr(signal, name)
            previous[signum] = signal.signal(signum, handler)
    return previous


def summary(result: Any) -> str:
    """The end of a run: counts, where things are, each failed scene with its reason."""
    total = len(result.mapped) + len(result.skipped) + len(result.failed)
    lines = [f"{total} scenes in {result.folder}: {len(result.mapped)} mapped now, "
             f"{len(result.skipped)} already mapped, {len(result.failed)} failed "
             f"({result.seconds:.1f} s)"]
    if result.catalogue is not None:
        c = result.catalogue
        lines.append(f"  catalogue {c.path}: {c.features} features from {c.scenes} scenes "
                     f"({c.duplicates} duplicates at overlapping footprints dropped)")
    lines.append(f"  manifest {result.manifest}")
    lines += [f"  failed {name}: {error}" for name, error in sorted(result.failed.items())]
    return "\n".join(lines)
