"""``momo-geo evl``: choose one checkpoint per sensor run, by the paper's EVL rule or a baseline.

A thin shell over :mod:`momo_geo.merge.evl` (pure Python, no torch): it names each run's sensor,
reads the logs, prints the report that explains the choice and optionally saves it.
``momo-geo merge --runs`` selects through :func:`select_runs` too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from momo_geo.cli.inputs import existing_paths
from momo_geo.errors import MomoGeoError

METHOD_NAMES = ("evl", "evl-min-spread", "best", "last", "same-epoch", "same-step")
"""What ``--method`` accepts (underscores and the alias ``early-stop`` = ``best`` work too)."""


def method_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--method``/``--select``: a known method, as :mod:`momo_geo.merge.evl` spells it."""
    from momo_geo.merge.evl import canonical_method

    try:
        return canonical_method(value)
    except MomoGeoError as exc:
        raise click.BadParameter(str(exc)) from None


def sensor_of_run(run: Path) -> str:
    """The run's sensor: its ``config.json`` when it trained on one sensor, else its name."""
    config = run / "config.json"
    if config.is_file():
        try:
            sensors = json.loads(config.read_text()).get("sensors")
        except json.JSONDecodeError:
            sensors = None
        if isinstance(sensors, list) and len(sensors) == 1:
            return str(sensors[0])
    return run.name


def select_runs(runs: tuple[str, ...], method: str, tolerance: float | None,
                epoch: int | None) -> Any:
    """Read one log per run (a run folder or its ``val_log.csv``) and select checkpoints."""
    from momo_geo.merge.evl import read_val_log, select_checkpoints

    logs = {}
    for run in runs:
        path = Path(run)
        name = sensor_of_run(path if path.is_dir() else path.parent)
        if name in logs:
            raise MomoGeoError(f"two runs for {name!r}; give one run per sensor")
        logs[name] = read_val_log(path)
    return select_checkpoints(logs, method, tolerance, epoch)


@click.command()
@click.argument("runs", nargs=-1, required=True, callback=existing_paths)
@click.option("--method", default="evl", show_default=True, callback=method_option,
              help=f"Selection rule: {', '.join(METHOD_NAMES)} (early-stop = best).")
@click.option("--tolerance", type=float,
              help="ε of evl (default 0.01: losses closer than that are within validation "
                   "noise); for evl-min-spread, accept spreads up to the smallest + this "
                   "(default 0).")
@click.option("--epoch", type=int, help="The epoch for --method same-epoch (default: last "
                                        "shared).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Save the selection as JSON (and the report as .txt beside it).")
@click.option("--overwrite", is_flag=True)
def evl(runs: tuple[str, ...], method: str, tolerance: float | None, epoch: int | None,
        output: str | None, overwrite: bool) -> None:
    """Choose one checkpoint per sensor run by Equal Validation Loss (MOMO's EVL).

    RUNS are the per-sensor run folders (or their val_log.csv), one per sensor; a run's sensor
    comes from its config.json (else the folder's name).

    \b
    evl (default), the paper's rule:
      1. per-sensor validation: each run is scored on its OWN sensor's validation
         set (the val_loss_<sensor> column when the run was validated on several
         sensors, else val_loss);
      2. early stopping: each sensor's checkpoint of lowest own loss (E);
      3. keep the checkpoint tuples whose losses lie within ε (--tolerance, default
         0.01) of each other; if none does, ε widens to the smallest spread;
      4. of those, take the tuple nearest to early stopping: the smallest total
         |samples seen - early-stop samples seen| over sensors; ties: lower mean
         loss, then later checkpoints.

    \b
    Alternatives and baselines:
      evl-min-spread  momo-geo's earlier rule: the smallest spread (max - min) of
                      the log's val_loss, then the lowest mean, then the latest
      best            early stopping: lowest own-sensor loss per sensor
      last            each run's final checkpoint
      same-epoch      the last checkpoint of one epoch all runs reached (--epoch)
      same-step       the largest samples-seen count every run logged

    The report lists every checkpoint (* chosen, E early stop), the losses compared and why
    the tuple was chosen.
    """
    from momo_geo.merge.evl import save_selection
    from momo_geo.outputs import check_target

    if output:
        check_target(output, overwrite=overwrite, inputs=runs)
    selection = select_runs(runs, method, tolerance, epoch)
    click.echo(selection.report())
    if output:
        json_path, text_path = save_selection(selection, output, overwrite)
        click.echo(f"Saved {json_path} and {text_path}")
