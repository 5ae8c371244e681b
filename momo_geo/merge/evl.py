"""Equal Validation Loss (EVL): pick one checkpoint per sensor at matching convergence stages.

MOMO's observation: merging per-sensor models works best when each was taken at the same stage
of convergence, measured by validation loss, not by step count. So from each sensor run's
validation-loss log, choose one checkpoint per sensor so that their losses are as equal as
possible — minimise the spread max − min — breaking ties by the lowest mean loss, then by the
latest checkpoints. ``tolerance`` widens "as equal as possible" to "within ``tolerance`` of the
smallest spread", which lets the mean-loss tie-break prefer better-converged tuples.

The exact search is a sorted sweep, O(N log N) in the number N of checkpoints over all runs: the
tuple with the smallest spread has its minimum at some checkpoint's loss ``l``; for an anchor
``l`` the best tuple takes, per sensor, the lowest loss ≥ ``l`` (found by bisection), and is
valid when all of them lie within ``l + spread``. (A brute force over the product of candidates,
:func:`_select_brute`, is kept as the reference the tests check the sweep against.)

Baselines the paper compares: ``best`` (lowest validation loss per sensor), ``last`` (final
checkpoint per sensor), ``same_epoch`` (the last epoch every run reached, its last checkpoint).
"""

from __future__ import annotations

import bisect
import csv
import itertools
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from momo_geo.errors import MomoGeoError

LOG_NAME = "val_log.csv"
LOG_COLUMNS = ("checkpoint", "samples_seen", "epoch", "val_loss")
METHODS = ("evl", "best", "last", "same_epoch")
_EPS = 1e-12


@dataclass(frozen=True)
class Candidate:
    """One row of a validation-loss log."""

    checkpoint: str
    samples_seen: int
    epoch: int
    val_loss: float


@dataclass
class ValLog:
    """A run's validation-loss log; ``run_dir`` resolves relative checkpoint paths."""

    candidates: list[Candidate]
    run_dir: Path | None = None

    def checkpoint_path(self, candidate: Candidate) -> Path:
        path = Path(candidate.checkpoint)
        if not path.is_absolute() and self.run_dir is not None:
            path = self.run_dir / path
        return path


def read_val_log(path: str | os.PathLike[str]) -> ValLog:
    """Read ``val_log.csv`` (or a run folder holding one). Columns: :data:`LOG_COLUMNS`."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.is_file():
        raise MomoGeoError(f"{path}: no validation-loss log")
    rows: list[Candidate] = []
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = set(LOG_COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise MomoGeoError(f"{path}: missing columns {', '.join(sorted(missing))}")
            for row in reader:
                rows.append(Candidate(row["checkpoint"], int(row["samples_seen"]),
                                      int(row["epoch"]), float(row["val_loss"])))
    except (ValueError, KeyError) as exc:
        raise MomoGeoError(f"{path}: malformed validation-loss log ({exc})") from None
    if not rows:
        raise MomoGeoError(f"{path}: the validation-loss log has no checkpoints")
    return ValLog(rows, path.parent)


def as_log(value: ValLog | list[Candidate] | list[tuple] | str | os.PathLike[str]) -> ValLog:
    """Accept a :class:`ValLog`, a path, or a list of candidates / 4-tuples (for quick use)."""
    if isinstance(value, ValLog):
        return value
    if isinstance(value, (str, os.PathLike)):
        return read_val_log(value)
    rows = [c if isinstance(c, Candidate) else Candidate(str(c[0]), int(c[1]), int(c[2]),
                                                         float(c[3])) for c in value]
    if not rows:
        raise MomoGeoError("an empty validation-loss log")
    return ValLog(rows)


@dataclass
class Selection:
    """The chosen checkpoint per sensor, with the evidence for the choice."""

    method: str
    chosen: dict[str, Candidate]
    candidates: dict[str, list[Candidate]]
    tolerance: float = 0.0
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def losses(self) -> dict[str, float]:
        return {s: c.val_loss for s, c in self.chosen.items()}

    @property
    def spread(self) -> float:
        values = list(self.losses.values())
        return max(values) - min(values)

    @property
    def mean_loss(self) -> float:
        values = list(self.losses.values())
        return sum(values) / len(values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "tolerance": self.tolerance,
            "spread": self.spread,
            "mean_loss": self.mean_loss,
            "chosen": {s: asdict(c) for s, c in self.chosen.items()},
            "paths": dict(self.paths),
            "candidates": {s: [asdict(c) for c in cs] for s, cs in self.candidates.items()},
        }

    def report(self) -> str:
        """A plain-text table of all candidates (chosen ones starred), the tuple and its spread."""
        lines = [f"Checkpoint selection: {self.method}"
                 + (f" (tolerance {self.tolerance:g})" if self.tolerance else "")]
        lines.append(f"{'sensor':<10} {'checkpoint':<34} {'samples':>9} {'epoch':>5} "
                     f"{'val_loss':>10}")
        for sensor, rows in self.candidates.items():
            for c in rows:
                mark = "*" if c == self.chosen[sensor] else " "
                lines.append(f"{sensor:<10} {Path(c.checkpoint).name:<34} {c.samples_seen:>9} "
                             f"{c.epoch:>5} {c.val_loss:>10.5f} {mark}")
        tuple_text = ", ".join(f"{s}={Path(c.checkpoint).name} ({c.val_loss:.5f})"
                               for s, c in self.chosen.items())
        lines.append(f"chosen: {tuple_text}")
        lines.append(f"spread (max - min val_loss): {self.spread:.6f}; "
                     f"mean val_loss: {self.mean_loss:.6f}")
        return "\n".join(lines)


def _later(a: Candidate, b: Candidate) -> bool:
    return (a.samples_seen, a.epoch) > (b.samples_seen, b.epoch)


def _rank(tup: Mapping[str, Candidate]) -> tuple[float, int]:
    """Sort key among equally acceptable tuples: lowest mean, then latest (most samples)."""
    values = [c.val_loss for c in tup.values()]
    return (round(sum(values) / len(values), 12), -sum(c.samples_seen for c in tup.values()))


def _spread(tup: Mapping[str, Candidate]) -> float:
    values = [c.val_loss for c in tup.values()]
    return max(values) - min(values)


def _select_evl(logs: Mapping[str, list[Candidate]], tolerance: float) -> dict[str, Candidate]:
    """The exact sorted sweep (see the module docstring)."""
    # per sensor: candidates sorted by loss, equal losses latest first
    per = {s: sorted(rows, key=lambda c: (c.val_loss, -c.samples_seen, -c.epoch))
           for s, rows in logs.items()}
    keys = {s: [c.val_loss for c in rows] for s, rows in per.items()}
    # 1) the smallest spread: a sliding window over all losses sorted, covering every sensor
    events = sorted((c.val_loss, s) for s, rows in per.items() for c in rows)
    need, have, count = len(per), dict.fromkeys(per, 0), 0
    best = float("inf")
    left = 0
    for loss_r, sensor_r in events:
        have[sensor_r] += 1
        count += have[sensor_r] == 1
        while count == need:
            loss_l, sensor_l = events[left]
            best = min(best, loss_r - loss_l)
            have[sensor_l] -= 1
            count -= have[sensor_l] == 0
            left += 1
    limit = best + tolerance + _EPS
    # 2) among tuples within the limit: per anchor, each sensor's lowest loss >= anchor
    chosen: dict[str, Candidate] | None = None
    for anchor in sorted({loss for loss, _ in events}):
        tup = {}
        for s, rows in per.items():
            i = bisect.bisect_left(keys[s], anchor)
            if i == len(rows) or rows[i].val_loss > anchor + limit:
                break
            tup[s] = rows[i]
        else:
            if chosen is None or _rank(tup) < _rank(chosen):
                chosen = tup
    assert chosen is not None  # the smallest-spread window always yields a tuple
    return chosen


def _select_brute(logs: Mapping[str, list[Candidate]], tolerance: float
                  ) -> dict[str, Candidate]:
    """Reference: every tuple of the product, same criteria (for small sets and tests)."""
    sensors = list(logs)
    tuples = [dict(zip(sensors, combo, strict=True))
              for combo in itertools.product(*(logs[s] for s in sensors))]
    smallest = min(_spread(t) for t in tuples)
    ok = [t for t in tuples if _spread(t) <= smallest + tolerance + _EPS]
    return min(ok, key=_rank)


def _best(rows: list[Candidate]) -> Candidate:
    pick = rows[0]
    for c in rows[1:]:
        if c.val_loss < pick.val_loss or (c.val_loss == pick.val_loss and _later(c, pick)):
            pick = c
    return pick


def _last(rows: list[Candidate]) -> Candidate:
    pick = rows[0]
    for c in rows[1:]:
        if _later(c, pick):
            pick = c
    return pick


def select_checkpoints(logs: Mapping[str, ValLog | list[Candidate] | str | os.PathLike[str]],
                       method: str = "evl", tolerance: float = 0.0,
                       epoch: int | None = None) -> Selection:
    """Choose one checkpoint per sensor from each run's validation-loss log.

    ``method``: ``evl`` (equal validation loss), ``best``, ``last`` or ``same_epoch``
    (``epoch`` picks which; by default the last epoch every run reached).
    """
    method = method.lower().replace("-", "_")
    if method not in METHODS:
        raise MomoGeoError(f"unknown selection method {method!r}; known: {', '.join(METHODS)}")
    if tolerance < 0:
        raise MomoGeoError(f"tolerance must be >= 0, got {tolerance}")
    if not logs:
        raise MomoGeoError("checkpoint selection needs at least one run")
    vlogs = {s: as_log(v) for s, v in logs.items()}
    rows = {s: log.candidates for s, log in vlogs.items()}
    if method == "evl":
        chosen = _select_evl(rows, tolerance)
    elif method == "best":
        chosen = {s: _best(r) for s, r in rows.items()}
    elif method == "last":
        chosen = {s: _last(r) for s, r in rows.items()}
    else:
        common = set.intersection(*({c.epoch for c in r} for r in rows.values()))
        if epoch is None:
            if not common:
                raise MomoGeoError("the runs share no epoch; same_epoch selection is impossible")
            epoch = max(common)
        elif epoch not in common:
            raise MomoGeoError(f"not every run has a checkpoint in epoch {epoch} "
                               f"(shared epochs: {sorted(common) or 'none'})")
        chosen = {s: _last([c for c in r if c.epoch == epoch]) for s, r in rows.items()}
    chosen = {s: chosen[s] for s in rows}  # keep the caller's sensor order
    paths = {s: str(vlogs[s].checkpoint_path(c)) for s, c in chosen.items()}
    return Selection(method, chosen, rows, tolerance, paths)


def save_selection(selection: Selection, path: str | os.PathLike[str],
                   overwrite: bool = True) -> tuple[Path, Path]:
    """Write ``report.json`` and the text table beside it (``report.txt``), atomically."""
    from momo_geo.io import atomic_output

    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        # the .txt is a sidecar of the .json: both appear together or not at all
        Path(tmp).with_suffix(".txt").write_text(selection.report() + "\n")
        Path(tmp).write_text(json.dumps(selection.to_dict(), indent=2) + "\n")
    return path, path.with_suffix(".txt")
