"""``momo-geo evaluate``: score a model on a task's validation split."""

from __future__ import annotations

import json

import click

from momo_geo.cli.inputs import existing_folders, known_model
from momo_geo.evaluate import TASKS


@click.command("evaluate")
@click.option("--task", required=True, type=click.Choice(TASKS),
              help="landmarks (HiRISE classes), ctx-craters or themis-craters (crater masks).")
@click.option("--data", "data", required=True, type=click.Path(file_okay=False),
              callback=existing_folders,
              help="Folder laid out like ../shared/data/<hirise_landmarks|ctx_craters|"
                   "themis_craters>.")
@click.option("--model", default=None, callback=known_model,
              help="Bundle folder or bundled name; default: the bundled model for the task.")
@click.option("--split", default="val", type=click.Choice(["val", "train"]), show_default=True)
@click.option("--bootstrap", "n_boot", default=1000, show_default=True, type=click.IntRange(0),
              help="Bootstrap resamples for the 95 % intervals (0: none).")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
def evaluate(task: str, data: str, model: str | None, split: str, n_boot: int,
             as_json: bool) -> None:
    """Evaluate MODEL on TASK: weighted/macro F1 and accuracy for landmarks; crater IoU over the
    dataset, mean per-image IoU and pixel F1 for craters; bootstrap 95 % intervals."""
    from momo_geo.evaluate import evaluate_bundle

    result = evaluate_bundle(task, data, model, split=split, n_boot=n_boot)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['task']}: model {result['model']}, {result['split']} split, "
               f"n = {result['n']}")
    for key, value in result.items():
        if isinstance(value, float):
            ci = result.get(f"{key}_ci")
            interval = f"  (95 % CI {ci[0]:.4f} - {ci[1]:.4f})" if ci else ""
            click.echo(f"  {key:<20} {value:.4f}{interval}")
