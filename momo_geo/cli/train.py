"""``momo-geo pretrain | merge | import-weights``: the MOMO model-building commands.

Thin shells: the work happens in :mod:`momo_geo.training` (pretraining, λ search),
:mod:`momo_geo.merge` (merging) and :mod:`momo_geo.weights_import` (released checkpoints);
EVL selection is ``momo-geo evl`` (:mod:`momo_geo.cli.evl`), which ``merge --runs`` reuses.
Heavy modules are imported inside the commands, so ``momo-geo --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from momo_geo.cli.evl import method_option, select_runs, sensor_of_run
from momo_geo.cli.inputs import check_file, existing_files, existing_folders, existing_paths
from momo_geo.errors import MomoGeoError
from momo_geo.outputs import check_target


def _loss_weights(items: tuple[str, ...]) -> dict[str, float]:
    from momo_geo.models.losses import ALIASES

    weights = {"pixel": 1.0, "ssim": 0.0, "gradient": 0.0, "feature": 0.0}
    for item in items:
        key, _, value = item.partition("=")
        key = ALIASES.get(key, key)
        if key not in weights or not value:
            raise MomoGeoError(f"--loss {item!r}: use NAME=WEIGHT with NAME one of "
                               f"{', '.join(weights)}")
        try:
            weights[key] = float(value)
        except ValueError:
            raise MomoGeoError(f"--loss {item!r}: {value!r} is not a number") from None
    return weights


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              callback=existing_files,
              help="JSON config (fields of PretrainConfig); options below override it.")
@click.option("-o", "--output", help="Run folder.")
@click.option("--sensors", help="hirise, ctx, themis or all (comma-separated).")
@click.option("--data-root", callback=existing_folders,
              help="Folder of the real data (default ../shared/data).")
@click.option("--encoder", help="vit_tiny | vit_small | vit_base | vit_large.")
@click.option("--img-size", type=int, help="Chip size in pixels (multiple of 16).")
@click.option("--samples", type=int, help="Training budget in samples.")
@click.option("--batch-size", type=int, help="Global batch size.")
@click.option("--lr", type=float, help="Learning rate (default 1e-3 x batch / 256).")
@click.option("--warmup-samples", type=int, help="Warm-up length in samples.")
@click.option("--checkpoint-every", type=int, help="Samples between checkpoints.")
@click.option("--pool-size", type=int, help="Training chips per sensor.")
@click.option("--val-size", type=int, help="Validation chips per sensor.")
@click.option("--init-from", help="Run folder, bundle or .safetensors to start from.")
@click.option("--resume", help="last.ckpt (or its run folder) to continue.")
@click.option("--seed", type=int)
@click.option("--loss", "losses", multiple=True,
              help="Loss weight NAME=W (pixel, ssim, gradient, feature; 'perceptual' is the old "
                   "name of feature); repeatable. Each term > 0 is logged in val_log.csv.")
@click.option("--accelerator", help="cpu, gpu or auto.")
@click.option("--devices", help="Number of devices (processes).")
@click.option("--strategy", help="auto or ddp.")
@click.option("--num-nodes", type=int)
@click.option("--precision", help="32-true, bf16-mixed, 16-mixed (default: bf16 on GPU).")
@click.option("--threads", type=int, help="torch CPU threads (1 is fastest for tiny models).")
def pretrain(config_path: str | None, losses: tuple[str, ...], **options: Any) -> None:
    """MAE-pretrain a MOMO encoder (one sensor or all) with checkpoints and a val-loss log."""
    from momo_geo.training._lightning import require_lightning
    from momo_geo.training.pretrain import PretrainConfig, run_pretrain

    data: dict[str, Any] = {}
    if config_path:
        try:
            data = json.loads(Path(config_path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MomoGeoError(f"{config_path}: unreadable config ({exc})") from None
    for key, value in options.items():
        if value is not None:
            data[key] = value
    if "devices" in data and str(data["devices"]).isdigit():
        data["devices"] = int(data["devices"])
    if losses:
        data["loss_weights"] = _loss_weights(losses)
    config = PretrainConfig.from_dict(data)
    require_lightning("pretraining")
    run_dir = run_pretrain(config)
    if _is_rank_zero():
        click.echo(f"Run folder: {run_dir}")
        click.echo(f"Encoder bundle: {run_dir / 'encoder.bundle'}")


def _is_rank_zero() -> bool:
    import os

    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


@click.command()
@click.option("--base", type=click.Path(), callback=existing_paths,
              help="Base encoder bundle (or its run folder).")
@click.option("--checkpoints", multiple=True,
              help="Checkpoint per sensor: SENSOR=PATH or PATH (repeatable; or several after "
                   "one option).")
@click.option("--runs", multiple=True, callback=existing_paths,
              help="Sensor run folders: choose checkpoints by --select.")
@click.argument("more", nargs=-1)
@click.option("--select", "select_method", default="evl", show_default=True,
              callback=method_option, help="Checkpoint rule for --runs (see momo-geo evl "
                                           "--help): evl, evl-min-spread, best, last, ...")
@click.option("--tolerance", type=float,
              help="ε of evl (default 0.01) / slack of evl-min-spread (default 0).")
@click.option("--method", type=click.Choice(["task-arithmetic", "magmax", "ties"]),
              default="task-arithmetic", show_default=True)
@click.option("--lam", help="λ (default 0.5; 1.0 for ties), or 'search' (needs the base run "
              "folder: λ in 0.25..1 chosen by the merged encoder's MAE validation loss).")
@click.option("--trim", type=float, default=0.2, show_default=True,
              help="TIES: fraction of each task vector kept.")
@click.option("-o", "--output", required=True, type=click.Path(), help="Merged bundle folder.")
@click.option("--name", help="Name in the model card.")
@click.option("--overwrite", is_flag=True)
def merge(base: str | None, checkpoints: tuple[str, ...], runs: tuple[str, ...],
          more: tuple[str, ...], select_method: str, tolerance: float | None, method: str,
          lam: str | None, trim: float, output: str, name: str | None,
          overwrite: bool) -> None:
    """Merge per-sensor checkpoints onto a base encoder: θ = θ_base + λ·Σ τ.

    Either --checkpoints (explicit files) or --runs (checkpoints chosen by EVL). Extra
    arguments continue whichever list was given (``--checkpoints a b c``).
    """
    from momo_geo.merge.recipe import merge_checkpoints

    given = [*(c.partition("=")[2] or c for c in checkpoints), *runs, *([base] if base else [])]
    check_target(output, overwrite=overwrite, inputs=given, bundle=True)
    if checkpoints and runs:
        raise MomoGeoError("give --checkpoints or --runs, not both")
    if more:
        if runs:
            runs = runs + more
        elif checkpoints:
            checkpoints = checkpoints + more
        else:
            raise MomoGeoError(f"unexpected arguments {' '.join(more)}")
    selection = None
    if runs:
        selection = select_runs(runs, select_method, tolerance, None)
        chosen = dict(selection.paths)
        click.echo(selection.report())
        if base is None:
            base = _base_of_runs(runs)
    elif checkpoints:
        chosen = {}
        for i, item in enumerate(checkpoints):
            sensor, sep, path = item.partition("=")
            if not sep:
                sensor, path = _sensor_of_checkpoint(Path(item), i), item
            chosen[sensor] = path
    else:
        raise MomoGeoError("nothing to merge: give --checkpoints or --runs")
    if base is None:
        raise MomoGeoError("--base is required with --checkpoints")
    notes = None
    if lam == "search":
        value, notes = _search_lambda(Path(base), chosen, method)
        click.echo(f"λ search: {notes['lambda_search']['scores']} -> {value}")
    else:
        value = _number(lam)
    path = merge_checkpoints(base, chosen, output, method, value, trim, selection, overwrite,
                             name, notes, inputs=[base, *chosen.values(), *runs])
    click.echo(f"Merged {len(chosen)} checkpoints ({method}) into {path}")


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise MomoGeoError(f"--lam {text!r}: give a number or 'search'") from None


def _search_lambda(base: Path, chosen: dict[str, str], method: str
                   ) -> tuple[float, dict[str, Any]]:
    """λ by MAE validation loss, with the base run's decoder and data settings."""
    if not (base / "mae.safetensors").is_file() or not (base / "config.json").is_file():
        raise MomoGeoError(f"--lam search needs the base *run folder* (with mae.safetensors and "
                           f"config.json), not {base}")
    from momo_geo.training.pipeline import search_merge_lambda
    from momo_geo.training.pretrain import PretrainConfig

    data = json.loads((base / "config.json").read_text())
    data.pop("world_size", None)
    data.update(init_from=str(base), resume=None, devices=1, strategy="auto")
    config = PretrainConfig.from_dict(data)
    best, scores = search_merge_lambda(base, chosen, method, (0.25, 0.5, 0.75, 1.0), config)
    return best, {"lambda_search": {"criterion": "MAE val loss, base decoder, base's sensors",
                                    "scores": {str(k): v for k, v in scores.items()}}}


def _sensor_of_checkpoint(path: Path, index: int) -> str:
    # .../RUN/checkpoints/step_X.safetensors -> the run's sensor
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    name = sensor_of_run(run)
    return name if name else f"checkpoint{index + 1}"


def _base_of_runs(runs: tuple[str, ...]) -> str:
    bases = set()
    for run in runs:
        config = Path(run) / "config.json"
        try:
            init = json.loads(config.read_text()).get("init_from")
        except (OSError, json.JSONDecodeError):
            init = None
        if init:
            bases.add(init)
    if len(bases) != 1:
        raise MomoGeoError("cannot tell the runs' common base from their config.json; "
                           "pass --base")
    return bases.pop()


@click.command("import-weights")
@click.argument("checkpoint", required=False)
@click.option("--arch", required=True, help="vit_small | vit_base | vit_large (| vit_tiny).")
@click.option("-o", "--output", required=True, type=click.Path(), help="Bundle folder to write.")
@click.option("--img-size", type=int, default=224, show_default=True,
              help="Input size; the 14x14 position embedding is resized to fit.")
@click.option("--global-pool", type=click.Choice(["avg", "token"]), default="avg",
              show_default=True)
@click.option("--in-chans", type=click.Choice(["3", "1"]), default="3", show_default=True,
              help="3: as released, ImageNet per-channel statistics in the card; 1: a grey "
                   "encoder with those statistics folded exactly into its patch kernel.")
@click.option("--name", help="Name in the model card.")
@click.option("--hub", help="Download CHECKPOINT from this Hugging Face repo first (optional).")
@click.option("--overwrite", is_flag=True)
def import_weights(checkpoint: str | None, arch: str, output: str, img_size: int,
                   global_pool: str, in_chans: str, name: str | None, hub: str | None,
                   overwrite: bool) -> None:
    """Convert a released MOMO checkpoint (momo.pth, hirise.pth, ...) into a bundle."""
    if checkpoint is not None and hub is None:
        check_file(checkpoint)  # before torch is imported
    inputs = [checkpoint] if checkpoint is not None and hub is None else []
    check_target(output, overwrite=overwrite, inputs=inputs, bundle=True)  # before torch too
    from momo_geo.weights_import import download_released
    from momo_geo.weights_import import import_weights as run_import

    if checkpoint is None:
        raise MomoGeoError("give the checkpoint file (e.g. momo.pth)")
    source = download_released(hub, checkpoint) if hub else Path(checkpoint)
    path = run_import(source, arch, output, img_size=img_size, global_pool=global_pool,
                      in_chans=int(in_chans), name=name, overwrite=overwrite, inputs=[source])
    click.echo(f"Imported {Path(source).name} ({arch}, {img_size} px) into {path}")
