"""Equal Validation Loss checkpoint selection — the paper's rule, momo-geo's earlier min-spread
rule and the baselines — on hand-checkable curves, and the ``momo-geo evl`` command."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from momo_geo.cli import cli
from momo_geo.errors import MomoGeoError
from momo_geo.merge.evl import (
    _paper_rank,
    _rank,
    _select_brute,
    _select_evl,
    _select_paper,
    _select_paper_brute,
    as_log,
    read_val_log,
    save_selection,
    select_checkpoints,
)

# three loss curves, one checkpoint every 100 samples, two checkpoints per epoch
CURVES = {
    "hirise": [1.00, 0.80, 0.60, 0.50, 0.45],
    "ctx": [0.90, 0.70, 0.62, 0.58],
    "themis": [1.20, 0.95, 0.75, 0.64, 0.55],
}


def _write_log(folder, losses) -> None:
    folder.mkdir(parents=True)
    with open(folder / "val_log.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["checkpoint", "samples_seen", "epoch", "val_loss"])
        for i, loss in enumerate(losses):
            writer.writerow([f"checkpoints/step_{i + 1:06d}.safetensors", (i + 1) * 100, i // 2,
                             loss])


@pytest.fixture()
def runs(tmp_path):
    for sensor, losses in CURVES.items():
        _write_log(tmp_path / sensor, losses)
    return {s: read_val_log(tmp_path / s) for s in CURVES}


def test_min_spread_picks_the_hand_computed_tuple(runs, tmp_path) -> None:
    sel = select_checkpoints(runs, "evl-min-spread")
    # by hand: (0.60, 0.62, 0.64) has spread 0.04; the next best, (0.60, 0.58, 0.55), 0.05
    assert sel.losses == {"hirise": 0.60, "ctx": 0.62, "themis": 0.64}
    assert [c.samples_seen for c in sel.chosen.values()] == [300, 300, 400]
    assert sel.spread == pytest.approx(0.04)
    assert sel.paths["themis"] == str(tmp_path / "themis" / "checkpoints/step_000004.safetensors")
    text = sel.report()
    assert "spread (max - min val_loss): 0.040000" in text
    assert "step_000003.safetensors" in text
    assert text.count("*") == 3
    json_path, text_path = save_selection(sel, tmp_path / "report.json")
    saved = json.loads(json_path.read_text())
    assert saved["spread"] == pytest.approx(0.04)
    assert saved["chosen"]["ctx"]["val_loss"] == 0.62
    assert text_path.read_text().startswith("Checkpoint selection: evl_min_spread")


def test_min_spread_tolerance_trades_spread_for_lower_mean(runs) -> None:
    # spread <= 0.04 + 0.10: the lowest-mean tuple is every run's minimum (spread 0.13)
    sel = select_checkpoints(runs, "evl_min_spread", tolerance=0.10)
    assert sel.losses == {"hirise": 0.45, "ctx": 0.58, "themis": 0.55}
    sel = select_checkpoints(runs, "min-spread", tolerance=0.05)  # limit 0.09: (.50, .58, .55)
    assert sel.losses == {"hirise": 0.50, "ctx": 0.58, "themis": 0.55}


def test_baselines(runs) -> None:
    best = select_checkpoints(runs, "best")
    assert best.losses == {"hirise": 0.45, "ctx": 0.58, "themis": 0.55}
    last = select_checkpoints(runs, "last")
    assert [c.samples_seen for c in last.chosen.values()] == [500, 400, 500]
    same = select_checkpoints(runs, "same_epoch")  # epochs: hirise 0-2, ctx 0-1 -> epoch 1
    assert same.losses == {"hirise": 0.50, "ctx": 0.58, "themis": 0.64}
    assert select_checkpoints(runs, "same-epoch", epoch=0).losses["ctx"] == 0.70
    with pytest.raises(MomoGeoError, match="epoch 2"):
        select_checkpoints(runs, "same_epoch", epoch=2)
    with pytest.raises(MomoGeoError, match="unknown selection method"):
        select_checkpoints(runs, "median")
    # early stopping is `best`; its losses are each run's own-sensor loss
    early = select_checkpoints(runs, "early-stop")
    assert early.method == "best" and early.chosen == best.chosen == early.early_stop
    # same step: the largest samples-seen count all runs logged (ctx stops at 400)
    step = select_checkpoints(runs, "same-step")
    assert [c.samples_seen for c in step.chosen.values()] == [400, 400, 400]
    with pytest.raises(MomoGeoError, match="share no samples-seen"):
        select_checkpoints({"a": [("a1", 100, 0, 0.5)], "b": [("b1", 200, 0, 0.5)]}, "same_step")


def test_min_spread_ties_go_to_lowest_mean_then_latest() -> None:
    # spreads tie exactly (0.125): the lower-loss tuple wins
    sel = select_checkpoints({"a": [("a1", 100, 0, 0.5), ("a2", 200, 0, 0.25)],
                              "b": [("b1", 100, 0, 0.625), ("b2", 200, 0, 0.375)]},
                             "evl_min_spread")
    assert [c.checkpoint for c in sel.chosen.values()] == ["a2", "b2"]
    # equal losses within a run: the later checkpoint
    sel = select_checkpoints({"a": [("a1", 100, 0, 0.5), ("a2", 200, 1, 0.5)],
                              "b": [("b1", 100, 0, 0.5)]}, "evl_min_spread")
    assert sel.chosen["a"].checkpoint == "a2"


def test_bad_logs_are_clear_errors(tmp_path) -> None:
    with pytest.raises(MomoGeoError, match="no validation-loss log"):
        read_val_log(tmp_path)
    (tmp_path / "val_log.csv").write_text("checkpoint,val_loss\nx,1\n")
    with pytest.raises(MomoGeoError, match="missing columns"):
        read_val_log(tmp_path)


logs_strategy = st.dictionaries(
    st.sampled_from(["hirise", "ctx", "themis", "x"]),
    st.lists(st.sampled_from([0.25, 0.5, 0.625, 0.75, 1.0, 1.25, 2.0]), min_size=1, max_size=6),
    min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(logs_strategy, st.sampled_from([0.0, 0.125, 0.5]))
def test_sorted_sweep_equals_brute_force(curves, tolerance) -> None:
    logs = {s: as_log([(f"{s}{i}", 10 * (i + 1), i, v) for i, v in enumerate(vals)]).candidates
            for s, vals in curves.items()}
    sweep = _select_evl(logs, tolerance)
    brute = _select_brute(logs, tolerance)
    spread = lambda t: max(c.val_loss for c in t.values()) - min(c.val_loss for c in t.values())  # noqa: E731
    assert spread(sweep) == pytest.approx(spread(brute))
    assert _rank(sweep) == _rank(brute)


# ------------------------------------------------------------------ the paper's rule (evl)


def test_paper_rule_matches_the_hand_worked_example(runs) -> None:
    """The curves above, one checkpoint every 100 samples (losses are own-sensor losses)::

        samples   100   200   300   400   500
        hirise   1.00  0.80  0.60  0.50  0.45   early stop: 500 (0.45)
        ctx      0.90  0.70  0.62  0.58         early stop: 400 (0.58)
        themis   1.20  0.95  0.75  0.64  0.55   early stop: 500 (0.55)

    ε = 0.10: the early-stopping tuple (0.45, 0.58, 0.55) spreads 0.13 > ε, so distance 0 is
    out. Distance 100 moves one sensor one checkpoint: hirise to 400 gives (0.50, 0.58, 0.55),
    spread 0.08 ≤ ε; ctx to 300 gives (0.45, 0.62, 0.55), spread 0.17; themis to 400 gives
    (0.45, 0.58, 0.64), spread 0.19. So the answer is hirise 400, ctx 400, themis 500 (total
    distance 100). The min-spread rule would take (0.60, 0.62, 0.64) instead.

    ε = 0.055: the tuples within ε are (0.60, 0.62, 0.64) (spread 0.04, distance 200 + 100 +
    100 = 400) and (0.60, 0.58, 0.55) (spread 0.05, distance 200 + 0 + 0 = 200); every other
    tuple spreads more (e.g. (0.60, 0.58, 0.64) 0.06, (0.50, 0.58, 0.55) 0.08). Answer: hirise
    300, ctx 400, themis 500.

    ε = 0.15 ≥ 0.13: the early-stopping tuple itself (distance 0), i.e. ``best``.

    ε = 0.01 (the default) < the smallest spread 0.04: ε widens to 0.04, leaving only
    (0.60, 0.62, 0.64) — the min-spread tuple — and the report says so.
    """
    sel = select_checkpoints(runs, "evl", tolerance=0.10)
    assert [c.samples_seen for c in sel.chosen.values()] == [400, 400, 500]
    assert sel.losses == {"hirise": 0.50, "ctx": 0.58, "themis": 0.55}
    assert sel.distances == {"hirise": 100, "ctx": 0, "themis": 0}
    assert {s: c.samples_seen for s, c in sel.early_stop.items()} == {
        "hirise": 500, "ctx": 400, "themis": 500}
    assert sel.effective_tolerance == 0.10 and sel.smallest_spread == pytest.approx(0.04)

    sel = select_checkpoints(runs, "evl", tolerance=0.055)
    assert [c.samples_seen for c in sel.chosen.values()] == [300, 400, 500]
    assert sel.losses == {"hirise": 0.60, "ctx": 0.58, "themis": 0.55}

    assert select_checkpoints(runs, "evl", tolerance=0.15).chosen == \
        select_checkpoints(runs, "best").chosen

    sel = select_checkpoints(runs)  # the default: evl, ε 0.01
    assert sel.method == "evl" and sel.tolerance == 0.01
    assert sel.losses == {"hirise": 0.60, "ctx": 0.62, "themis": 0.64}
    assert sel.effective_tolerance == pytest.approx(0.04)
    text = sel.report()
    assert text.startswith("Checkpoint selection: evl (paper rule: per-sensor validation, "
                           "tolerance ε 0.01)")
    assert "no tuple lies within ε 0.01" in text and "ε widened to 0.040000" in text
    assert "nearest to early stopping: hirise 200 samples, ctx 100 samples, themis 100 " \
           "samples (total 400)" in text
    assert "early stopping (lowest own-sensor loss, E): hirise=step_000005.safetensors" in text
    saved = sel.to_dict()
    assert saved["distance_to_early_stop"] == {"hirise": 200, "ctx": 100, "themis": 100}
    assert saved["early_stop"]["ctx"]["samples_seen"] == 400


def test_paper_rule_ties_go_to_lower_mean_then_later() -> None:
    # b's one checkpoint (0.375); ε 0.125 keeps a1 and a3 (a2 spreads 0.25): both are 100
    # samples from a's early stop a2, so the lower loss wins (a3, 0.25 < 0.5) ...
    sel = select_checkpoints({"a": [("a1", 100, 0, 0.5), ("a2", 200, 0, 0.125),
                                    ("a3", 300, 0, 0.25)],
                              "b": [("b1", 200, 0, 0.375)]}, "evl", tolerance=0.125)
    assert sel.chosen["a"].checkpoint == "a3"
    # ... and with equal losses, the later one
    sel = select_checkpoints({"a": [("a1", 100, 0, 0.25), ("a2", 200, 0, 0.125),
                                    ("a3", 300, 0, 0.25)],
                              "b": [("b1", 200, 0, 0.375)]}, "evl", tolerance=0.125)
    assert sel.chosen["a"].checkpoint == "a3"


def test_paper_rule_reads_each_runs_own_sensor_column(tmp_path) -> None:
    """A run validated on all sensors logs val_loss_<sensor> columns; the rule and `best` take
    the run's own sensor's, min-spread the mixed val_loss."""
    for sensor, own in (("hirise", [0.9, 0.5, 0.7]), ("ctx", [0.8, 0.52, 0.4])):
        folder = tmp_path / sensor
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(
            {"sensors": [sensor], "val_sensors": ["hirise", "ctx"]}))
        with open(folder / "val_log.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["checkpoint", "samples_seen", "epoch", "val_loss", "train_loss",
                             "val_loss_hirise", "val_loss_ctx"])
            for i, loss in enumerate(own):
                other = 1.0 - loss / 2
                row = [loss, other] if sensor == "hirise" else [other, loss]
                writer.writerow([f"c{i}", (i + 1) * 10, i, 0.3 - 0.1 * i, "", *row])
    logs = {s: read_val_log(tmp_path / s) for s in ("hirise", "ctx")}
    best = select_checkpoints(logs, "best")
    assert best.losses == {"hirise": 0.5, "ctx": 0.4}  # not the mixed val_loss (0.1 at c2)
    assert best.sources["ctx"] == "val_loss_ctx (own-sensor validation)"
    # early stops c1 (0.5) and c2 (0.4) spread 0.1 > ε 0.05; one step away, (c1, c1) =
    # (0.5, 0.52) spreads 0.02; (c0 or c2, c2) = (0.9 or 0.7, 0.4) do not fit
    sel = select_checkpoints(logs, "evl", tolerance=0.05)
    assert [c.checkpoint for c in sel.chosen.values()] == ["c1", "c1"]
    assert sel.distances == {"hirise": 0, "ctx": 10}
    # min-spread: the mixed val_loss is equal across runs; lowest mean = c2 for both
    spread = select_checkpoints(logs, "evl_min_spread")
    assert [c.checkpoint for c in spread.chosen.values()] == ["c2", "c2"]
    # without per-sensor columns, a mixed validation set is flagged in the report
    mixed = as_log([("c0", 10, 0, 0.5)])
    mixed.val_sensors = ["hirise", "ctx"]
    text = select_checkpoints({"hirise": mixed}).report()
    assert "NOT the paper's per-sensor validation" in text


paper_logs = st.dictionaries(
    st.sampled_from(["hirise", "ctx", "themis"]),
    st.lists(st.sampled_from([0.25, 0.5, 0.625, 0.75, 1.0, 1.25]), min_size=1, max_size=5),
    min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(paper_logs, st.sampled_from([0.0, 0.125, 0.25, 0.5]))
def test_paper_rule_window_search_equals_brute_force(curves, tolerance) -> None:
    logs = {s: as_log([(f"{s}{i}", 10 * (i + 1), i, v) for i, v in enumerate(vals)]).candidates
            for s, vals in curves.items()}
    fast, early, eff, _ = _select_paper(logs, tolerance)
    brute = _select_paper_brute(logs, tolerance)
    assert _paper_rank(fast, early) == _paper_rank(brute, early)
    assert max(c.val_loss for c in fast.values()) - min(c.val_loss for c in fast.values()) \
        <= eff + 1e-9


# ------------------------------------------------------------------ momo-geo evl


def test_cli_explains_the_paper_rule_and_saves_the_report(runs, tmp_path) -> None:
    folders = [str(tmp_path / s) for s in CURVES]
    result = CliRunner().invoke(cli, ["evl", *folders, "--tolerance", "0.1", "-o",
                                      str(tmp_path / "evl.json")])
    assert result.exit_code == 0, result.output
    assert "Checkpoint selection: evl (paper rule" in result.output
    assert "hirise=step_000004.safetensors (0.50000), ctx=step_000004.safetensors" in \
        result.output
    saved = json.loads((tmp_path / "evl.json").read_text())
    assert saved["method"] == "evl" and saved["tolerance"] == 0.1
    assert saved["distance_to_early_stop"] == {"hirise": 100, "ctx": 0, "themis": 0}
    # a val_log.csv path works too; baselines by name
    result = CliRunner().invoke(cli, ["evl", str(tmp_path / "ctx" / "val_log.csv"),
                                      "--method", "same_epoch"])
    assert result.exit_code == 0 and "Checkpoint selection: same_epoch" in result.output
    help_text = CliRunner().invoke(cli, ["evl", "--help"]).output
    for words in ("per-sensor validation", "early stopping", "ε", "evl-min-spread", "best",
                  "last", "same-epoch", "same-step"):
        assert words in help_text, words


def test_cli_bad_log_is_one_line_and_exit_1(tmp_path: Path) -> None:
    run = tmp_path / "hirise"
    run.mkdir()
    (run / "val_log.csv").write_text("checkpoint,val_loss\nx,1\n")
    proc = subprocess.run([sys.executable, "-c", "from momo_geo.cli import main; main()", "evl",
                           str(run)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"Error: {run / 'val_log.csv'}: missing columns epoch, samples_seen"]
    assert proc.stdout == ""


def test_per_sensor_validation_losses_of_a_mixed_pool() -> None:
    """runs.sensor_losses scores each sensor's chips as a pool of its own (what a run validated
    on that sensor alone logs), and keeps the whole pool's per-term parts."""
    torch = pytest.importorskip("torch")
    from momo_geo.training.pretrain_data import ChipPool
    from momo_geo.training.runs import sensor_losses

    class Module:
        last_val_parts = {"pixel": 7.0}

        def validation_loss(self, pool):  # mean pixel value, indices restart per pool
            self.last_val_parts = {"pixel": -1.0}
            return float(pool.images.mean())

    images = torch.tensor([1.0, 3.0, 10.0, 20.0, 5.0]).reshape(5, 1, 1, 1)
    pool = ChipPool(images, ["hirise", "hirise", "ctx", "ctx", "themis"])
    module = Module()
    assert sensor_losses(module, pool) == {"hirise": 2.0, "ctx": 15.0, "themis": 5.0}
    assert module.last_val_parts == {"pixel": 7.0}
    assert sensor_losses(module, ChipPool(images[:2], ["ctx", "ctx"])) == {}
