"""``momo-geo finetune``: an encoder bundle + a labelled task -> a task bundle.

The work happens in :mod:`momo_geo.training.finetune` (it needs Lightning, the ``[train]``
extra); it is imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from momo_geo.cli.inputs import existing_folders, known_model
from momo_geo.errors import MomoGeoError
from momo_geo.evaluate import TASKS


@click.command("finetune")
@click.option("--task", required=True, type=click.Choice(TASKS))
@click.option("--data", "data", required=True, multiple=True, type=click.Path(file_okay=False),
              callback=existing_folders,
              help="Task folder(s) like ../shared/data/...; repeat to train one crater model "
                   "on CTX and THEMIS together.")
@click.option("--encoder", default=None, callback=known_model,
              help="Pretrain (encoder) bundle to start from; default: random (scratch).")
@click.option("--out", required=True, type=click.Path(), help="Output bundle folder.")
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(1))
@click.option("--chips", default=3000, show_default=True, type=click.IntRange(1),
              help="Crater chips per epoch (segmentation).")
@click.option("--input-size", default=64, show_default=True, type=click.IntRange(16))
@click.option("--lr", default=1e-3, show_default=True, type=float)
@click.option("--layer-decay", default=0.75, show_default=True, type=float)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--loss", default="", type=click.Choice(["", "ce", "dice_ce"]),
              help="Default: ce for landmarks, dice_ce for craters.")
@click.option("--frozen", is_flag=True, help="Frozen encoder (linear probe / head only).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--accelerator", default="cpu", show_default=True,
              type=click.Choice(["cpu", "gpu", "auto"]))
@click.option("--precision", default="32-true", show_default=True,
              help="Lightning precision, e.g. bf16-mixed on a GPU.")
@click.option("--arch", "arch", default="vit_tiny", show_default=True,
              help="Encoder size when training from scratch (with --encoder, the bundle's).")
@click.option("--half", is_flag=True, help="Store the weights in fp16.")
@click.option("--overwrite", is_flag=True)
def finetune(task: str, data: tuple[str, ...], encoder: str | None, out: str, epochs: int,
             chips: int, input_size: int, lr: float, layer_decay: float, batch_size: int,
             loss: str, frozen: bool, seed: int, accelerator: str, precision: str, arch: str,
             half: bool, overwrite: bool) -> None:
    """Fine-tune ENCODER on TASK and write a task bundle (card with classes, colours,
    validation metrics, data and recipe)."""
    import json

    if Path(out).exists() and not overwrite:
        raise MomoGeoError(f"{out} exists; pass --overwrite to replace it")
    if task == "landmarks" and len(data) > 1:
        raise MomoGeoError("landmarks trains on one folder")
    if input_size % 16:
        raise MomoGeoError(f"--input-size {input_size} is not a multiple of the patch size 16")
    from momo_geo.training._lightning import require_lightning
    from momo_geo.training.finetune import Recipe, task_of_root
    from momo_geo.training.finetune import finetune as run_finetune

    require_lightning("fine-tuning")
    recipe = Recipe(input_size=input_size, frozen=frozen, epochs=epochs, chips=chips,
                    batch_size=batch_size, lr=lr, layer_decay=layer_decay, loss=loss, seed=seed,
                    accelerator=accelerator, precision=precision, encoder=arch)
    roots = list(data)
    eval_tasks = [(task_of_root(task, r), r) for r in roots]
    path, metrics = run_finetune(task, roots if len(roots) > 1 else roots[0], out,
                                 encoder_bundle=encoder, recipe=recipe,
                                 eval_tasks=eval_tasks, overwrite=overwrite, half=half)
    click.echo(f"wrote {path}")
    click.echo(json.dumps(metrics))
