"""``momo-geo evaluate``: score a model on a labelled folder, through the mapping engine."""

from __future__ import annotations

import json
from typing import Any

import click

from momo_geo.cli.inputs import existing_folders, finite, known_model
from momo_geo.evaluate import SPLITS, TASKS
from momo_geo.metrics import MIN_DIAMETER_PX


@click.command("evaluate")
@click.option("--task", required=True, type=click.Choice(TASKS),
              help="landmarks (HiRISE classes), ctx-craters or themis-craters (crater maps).")
@click.option("--data", "data", required=True, type=click.Path(file_okay=False),
              callback=existing_folders,
              help="Folder laid out like ../shared/data/<hirise_landmarks|ctx_craters|"
                   "themis_craters>.")
@click.option("--model", default=None, callback=known_model,
              help="Bundle folder or bundled name; default: the bundled model for the task.")
@click.option("--split", default="auto", type=click.Choice(SPLITS), show_default=True,
              help="auto: 'val' for the project's reference folders (named as in "
                   "../shared/data), 'all' for any other folder.")
@click.option("--min-diameter", default=MIN_DIAMETER_PX, show_default=True,
              type=click.FloatRange(min=0.0), callback=finite,
              help="Smallest crater diameter scored, in pixels (smaller labelled craters and "
                   "the predictions matching them are ignored).")
@click.option("--gsd", default=None, type=click.FloatRange(min=0.0, min_open=True),
              callback=finite,
              help="Metres per pixel of the images, for the diameter bins in metres "
                   "[default: 6 for CTX, 100 for THEMIS].")
@click.option("--bootstrap", "n_boot", default=1000, show_default=True, type=click.IntRange(0),
              help="Bootstrap resamples over images for the 95 % intervals (0: none).")
@click.option("--trust-unhashed", is_flag=True,
              help="Use a model bundle whose card has no weights SHA-256.")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
def evaluate(task: str, data: str, model: str | None, split: str, min_diameter: float,
             gsd: float | None, n_boot: int, trust_unhashed: bool, as_json: bool) -> None:
    """Evaluate MODEL on TASK, running the same engine as `momo-geo map` on whole images.

    Landmarks: weighted/macro F1, accuracy and F1 per class. Craters: crater IoU (pixels),
    crater precision/recall/F1 (objects: fitted circles matched to labelled circles) and recall
    by diameter. Bootstrap 95 % intervals over images. The matching rule is in docs/training.md.
    """
    from momo_geo.evaluate import evaluate_bundle

    result = evaluate_bundle(task, data, model, split=split, n_boot=n_boot, gsd=gsd,
                             min_diameter=min_diameter, trust_unhashed=trust_unhashed)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['task']}: model {result['model']}, {result['split']} split, "
               f"n = {result['n']}")
    for key, value in result.items():
        if isinstance(value, float):
            ci = result.get(f"{key}_ci")
            interval = f"  (95 % CI {ci[0]:.4f} - {ci[1]:.4f})" if ci else ""
            click.echo(f"  {key:<30} {value:.4f}{interval}")
        elif isinstance(value, int) and key != "n":
            click.echo(f"  {key:<30} {value}")
    _echo_per_class(result.get("per_class", {}))
    _echo_bins(result.get("crater_recall_by_diameter", []))


def _echo_per_class(per_class: dict[str, dict[str, Any]]) -> None:
    if per_class:
        click.echo("  per class:                      F1      support")
    for name, row in per_class.items():
        f1 = "     -" if row["f1"] is None else f"{row['f1']:.4f}"
        click.echo(f"    {name:<28} {f1}  {row['support']:>7}")


def _echo_bins(bins: list[dict[str, Any]]) -> None:
    if bins:
        click.echo("  crater recall by labelled diameter:")
    for row in bins:
        hi = "inf" if row["max_px"] is None else f"{row['max_px']:g}"
        metres = ""
        if "min_m" in row:
            hi_m = "inf" if row["max_m"] is None else f"{row['max_m']:g}"
            metres = f" ({row['min_m']:g}-{hi_m} m)"
        recall = "     -" if row["recall"] is None else f"{row['recall']:.4f}"
        label = f"{row['min_px']:g}-{hi} px{metres}"
        click.echo(f"    {label:<34} {recall}  ({row['tp']}/{row['n']})")
