"""``momo-geo map SCENE…``: class mask GeoTIFF (COG) and vector layer of mapped features.

A thin shell over :func:`momo_geo.inference.map_scene`: the mapping flags are generated from
:class:`~momo_geo.inference.options.MapOptions` (names, defaults, choices, help), so they cannot
drift from the API or the QGIS plugin; a progress bar shows tiles done / total with an ETA,
a one-screen summary follows each scene. Every output name is checked for every scene before a
model loads. Batches, workers and stopping (Ctrl-C, SIGTERM, SIGHUP: exit 130, 143, 129, nothing
half-written left) are :mod:`momo_geo.cli.runs`.
"""

from __future__ import annotations

import os
from typing import Any

import click

from momo_geo.cli.inputs import check_model, existing_files, output_folder
from momo_geo.errors import MomoGeoError
from momo_geo.inference.options import (
    MapOptions,
    check_outputs,
    default_vector_path,
    option_fields,
)

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
@click.option("-o", "--output", "mask", type=click.Path(), callback=output_folder,
              help="Class mask GeoTIFF (COG). Default: SCENE_mask.tif beside the scene.")
@click.option("--vector", type=click.Path(), callback=output_folder,
              help="Vector layer: .gpkg, .shp or .geojson. Default: SCENE_features.gpkg "
                   "beside the class mask.")
@click.option("--no-vector", is_flag=True, help="Write only the class mask.")
@click.option("--model", default=None,
              help="Model bundle folder or bundled model name. Default: the bundled crater "
                   "segmenter.")
@click.option("--task", type=click.Choice(sorted(TASK_MODELS)), default=None,
              help="Use the bundled model for this task (landmarks: tile-level classes).")
@_map_options
@click.option("--probabilities", type=click.Path(), callback=output_folder,
              help="Also write per-class probabilities (float32 COG) here.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Map several scenes in parallel processes (at most one per scene, CPU core "
                   "and 2 GiB of memory: each loads its own model).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("-v", "--verbose", is_flag=True,
              help="Also show the libraries' own warnings (GDAL, pyogrio, numpy, torch).")
def map_command(scenes: tuple[str, ...], mask: str | None, vector: str | None, no_vector: bool,
                model: str | None, task: str | None, probabilities: str | None, workers: int,
                quiet: bool, verbose: bool, **option_values: Any) -> None:
    """Map craters (or other features) in SCENES: a class mask and a vector layer each."""
    from momo_geo.cli import quiet_libraries
    from momo_geo.outputs import QUIET_LIBRARIES

    if verbose:
        quiet_libraries(True)
    verbose = not QUIET_LIBRARIES["quiet"]  # `momo-geo -v map` too: the workers are told
    if len(scenes) > 1 and (mask or vector or probabilities):
        raise MomoGeoError("-o, --vector and --probabilities name one scene's outputs; with "
                           "several scenes, outputs are named after each scene")
    if vector and no_vector:
        raise MomoGeoError("--vector and --no-vector contradict each other")
    if model and task:
        raise MomoGeoError("give either --model or --task, not both")
    if len({os.path.realpath(s) for s in scenes}) != len(scenes):
        raise MomoGeoError("a scene is given twice; its outputs would be written twice")
    options = MapOptions(**option_values)  # every option checked before anything is read
    model_name = model or (TASK_MODELS[task] if task else "default")
    # reads the card only: a bad --model fails before torch is imported
    check_model(model_name, options.trust_unhashed)
    jobs = [dict(scene=scene, mask_path=mask,
                 vector_path=None if no_vector
                 else (vector or default_vector_path(scene, mask=mask)),
                 model=model_name, options=options, probabilities=probabilities)
            for scene in scenes]
    # Output names, formats and existing files: checked for every scene before any model loads.
    for job in jobs:
        try:
            check_outputs(job["scene"], job["mask_path"], job["vector_path"],
                          job["probabilities"], overwrite=options.overwrite)
        except MomoGeoError as exc:
            if len(jobs) == 1 or str(exc).startswith(job["scene"]):
                raise
            raise MomoGeoError(f"{job['scene']}: {exc}") from None
    from momo_geo.cli.runs import run_parallel, run_serial, worker_cap

    count, note = worker_cap(workers, len(jobs))
    if note:
        click.echo(f"Note: {note}", err=True)
    if count > 1:
        run_parallel(jobs, count, verbose)
    else:
        run_serial(jobs, quiet, summary, _Bar)


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
