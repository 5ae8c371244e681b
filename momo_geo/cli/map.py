"""``momo-geo map SCENE…``: class mask GeoTIFF (COG) and vector layer of mapped features.

A thin shell over :func:`momo_geo.inference.map_scene`: the mapping flags are generated from
:class:`~momo_geo.inference.options.MapOptions` (names, defaults, choices, help), so they cannot
drift from the API or the QGIS plugin; a progress bar shows tiles done / total with an ETA,
a one-screen summary follows each scene.
Ctrl-C (or SIGTERM) stops cleanly: the staging files are removed, nothing half-written is left,
and the exit status is 130.
"""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import click

from momo_geo.cli.inputs import check_model, existing_files, output_folder
from momo_geo.errors import MomoGeoError
from momo_geo.inference.options import MapOptions, default_vector_path, option_fields

TASK_MODELS = {"craters": "craters", "landmarks": "landmarks"}


def _map_options(command: Any) -> Any:
    """One click option per :class:`MapOptions` field, with its name, default, choices, help."""
    for name, kind, default, meta in reversed(option_fields()):
        flag = "--" + name.replace("_", "-")
        if kind is bool:  # an option on by default is turned off by --no-NAME (--no-frame)
            flags = f"{flag}/--no-{flag[2:]}" if default else flag
            option = click.option(flags, name, is_flag=True, default=default, help=meta["help"])
        else:
            if "choices" in meta:
                ptype: Any = click.Choice(list(meta["choices"]))
            elif "minimum" not in meta:
                ptype = int if kind is int else float
            elif kind is int:
                ptype = click.IntRange(min=meta.get("minimum"))
            else:
                ptype = click.FloatRange(min=meta.get("minimum"))
            option = click.option(flag, type=ptype, default=default, help=meta["help"],
                                  show_default=default is not None)
        command = option(command)
    return command


@click.command("map")
@click.argument("scenes", nargs=-1, required=True, type=click.Path(dir_okay=False),
                callback=existing_files)
@click.option("-o", "--output", "mask", type=click.Path(dir_okay=False), callback=output_folder,
              help="Class mask GeoTIFF (COG). Default: SCENE_mask.tif beside the scene.")
@click.option("--vector", type=click.Path(dir_okay=False), callback=output_folder,
              help="Vector layer: .gpkg, .shp or .geojson. Default: SCENE_features.gpkg.")
@click.option("--no-vector", is_flag=True, help="Write only the class mask.")
@click.option("--model", default=None,
              help="Model bundle folder or bundled model name. Default: the bundled crater "
                   "segmenter.")
@click.option("--task", type=click.Choice(sorted(TASK_MODELS)), default=None,
              help="Use the bundled model for this task (landmarks: tile-level classes).")
@_map_options
@click.option("--probabilities", type=click.Path(dir_okay=False), callback=output_folder,
              help="Also write per-class probabilities (float32 COG) here.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Map several scenes in parallel processes.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def map_command(scenes: tuple[str, ...], mask: str | None, vector: str | None, no_vector: bool,
                model: str | None, task: str | None, probabilities: str | None, workers: int,
                quiet: bool, **option_values: Any) -> None:
    """Map craters (or other features) in SCENES: a class mask and a vector layer each."""
    if len(scenes) > 1 and (mask or vector or probabilities):
        raise MomoGeoError("-o, --vector and --probabilities name one scene's outputs; with "
                           "several scenes, outputs are named after each scene")
    if vector and no_vector:
        raise MomoGeoError("--vector and --no-vector contradict each other")
    if model and task:
        raise MomoGeoError("give either --model or --task, not both")
    options = MapOptions(**option_values)  # every option checked before anything is read
    model_name = model or (TASK_MODELS[task] if task else "default")
    # reads the card only: a bad --model fails before torch is imported
    check_model(model_name, options.trust_unhashed)
    jobs = [dict(scene=scene, mask_path=mask,
                 vector_path=None if no_vector else (vector or default_vector_path(scene)),
                 model=model_name, options=options, probabilities=probabilities)
            for scene in scenes]
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    # open_scene reports a missing georeference as a one-line error; GDAL's warning is noise
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    previous = _terminate_as_interrupt()
    try:
        if workers > 1 and len(jobs) > 1:
            _run_parallel(jobs, workers)
        else:
            _run_serial(jobs, quiet)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_as_interrupt() -> Any:
    """Make SIGTERM behave like Ctrl-C so staging files are cleaned up (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _run_serial(jobs: list[dict], quiet: bool) -> None:
    from momo_geo.bundle import load_bundle
    from momo_geo.inference import Predictor, map_scene

    predictor = None
    for job in jobs:
        if predictor is None:  # load the model once for all scenes
            options = job["options"]
            bundle = load_bundle(job["model"], trust_unhashed=options.trust_unhashed)
            predictor = Predictor(bundle, options.device, options.precision)
        bar = _Bar(Path(job["scene"]).name, quiet)
        try:
            result = map_scene(**job, progress=bar, log=_warn, predictor=predictor)
        finally:
            bar.close()
        click.echo(summary(result))


def _run_parallel(jobs: list[dict], workers: int) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    failures = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_map_one, job): job["scene"] for job in jobs}
        try:
            for future in as_completed(futures):
                try:
                    click.echo(future.result())
                except MomoGeoError as exc:
                    failures += 1
                    click.echo(f"Error: {exc}", err=True)
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    if failures:
        raise MomoGeoError(f"{failures} of {len(jobs)} scenes failed")


def _map_one(job: dict) -> str:
    from momo_geo.inference import map_scene

    messages: list[str] = []
    try:
        result = map_scene(**job, log=messages.append)
    except MomoGeoError as exc:
        raise MomoGeoError(f"{job['scene']}: {exc}") from None
    return "\n".join([*messages, summary(result)])


def _warn(message: str) -> None:
    click.echo(message, err=True)


class _Bar:
    """A click progress bar created on the first progress call (when the total is known)."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.label, self.quiet = label, quiet
        self.bar: Any = None
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, show_eta=True,
                                         show_pos=True, item_show_func=None, file=None)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def summary(result: Any) -> str:
    """One screen about one mapped scene: outputs, speed, features and area per class."""
    outputs = ", ".join(str(p) for p in result.paths)
    lines = [f"{result.scene} -> {outputs}",
             f"  model {result.model} ({result.task}) on {result.device}"
             + (f", scene read at x{1 / result.resample_factor:.3g} (the model's scale)"
                if result.resample_factor != 1 else ""),
             f"  {result.tiles_total} tiles ({result.tiles_skipped} all-nodata, skipped): "
             f"inference {result.inference_seconds:.1f} s, {result.tiles_per_s:.1f} tiles/s; "
             f"total {result.seconds:.1f} s"]
    width = max([len(n) for n in result.class_names] + [5])
    header = f"  {'class':<{width}}  {'mask area km²':>14}"
    if result.vector_path is not None:
        header += f"  {'features':>9}  {'feature area km²':>17}"
    lines.append(header)
    for name in result.class_names:
        line = f"  {name:<{width}}  {result.class_areas_m2.get(name, 0) / 1e6:>14.4f}"
        if result.vector_path is not None:
            if name in result.feature_counts:
                line += (f"  {result.feature_counts[name]:>9d}"
                         f"  {result.feature_areas_m2[name] / 1e6:>17.4f}")
            else:
                line += f"  {'-':>9}  {'-':>17}"
        lines.append(line)
    if result.vector_path is not None:
        lines.append(f"  {'total':<{width}}  {sum(result.class_areas_m2.values()) / 1e6:>14.4f}"
                     f"  {sum(result.feature_counts.values()):>9d}"
                     f"  {sum(result.feature_areas_m2.values()) / 1e6:>17.4f}")
    return "\n".join(lines)
