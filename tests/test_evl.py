"""Equal Validation Loss checkpoint selection and its baselines, on hand-checkable curves."""

from __future__ import annotations

import csv
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from momo_geo.errors import MomoGeoError
from momo_geo.merge.evl import (
    _rank,
    _select_brute,
    _select_evl,
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


def test_evl_picks_the_hand_computed_tuple(runs, tmp_path) -> None:
    sel = select_checkpoints(runs)
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
    assert text_path.read_text().startswith("Checkpoint selection: evl")


def test_tolerance_trades_spread_for_lower_mean(runs) -> None:
    # spread <= 0.04 + 0.10: the lowest-mean tuple is every run's minimum (spread 0.13)
    sel = select_checkpoints(runs, tolerance=0.10)
    assert sel.losses == {"hirise": 0.45, "ctx": 0.58, "themis": 0.55}
    sel = select_checkpoints(runs, tolerance=0.05)  # limit 0.09: (0.50, 0.58, 0.55)
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


def test_ties_go_to_lowest_mean_then_latest() -> None:
    # spreads tie exactly (0.125): the lower-loss tuple wins
    sel = select_checkpoints({"a": [("a1", 100, 0, 0.5), ("a2", 200, 0, 0.25)],
                              "b": [("b1", 100, 0, 0.625), ("b2", 200, 0, 0.375)]})
    assert [c.checkpoint for c in sel.chosen.values()] == ["a2", "b2"]
    # equal losses within a run: the later checkpoint
    sel = select_checkpoints({"a": [("a1", 100, 0, 0.5), ("a2", 200, 1, 0.5)],
                              "b": [("b1", 100, 0, 0.5)]})
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
