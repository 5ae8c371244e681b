"""Equal Validation Loss (EVL): pick one checkpoint per sensor at matching convergence stages.

MOMO's observation: merging per-sensor models works best when each was taken at the same stage
of convergence, measured by validation loss, not by step count.

**The paper's rule** (``evl``, the default). Each sensor run s is scored on *its own sensor's*
validation set, giving a loss ``L_s(c)`` per checkpoint c (the ``val_loss_<s>`` column of the
run's ``val_log.csv`` when the run was validated on several sensors, else ``val_loss``, which is
then the own-sensor loss: see :func:`own_loss`). Then

1. *early stopping*: ``e_s`` = the checkpoint with the lowest ``L_s`` (ties: the later one) — the
   ``best`` baseline;
2. *equal loss*: keep the tuples ``(c_s)`` whose losses lie within ε of each other,
   ``max_s L_s(c_s) − min_s L_s(c_s) ≤ ε``;
3. *nearest to early stopping*: among those, take the tuple with the smallest total distance
   ``Σ_s |samples_seen(c_s) − samples_seen(e_s)|`` (samples seen is the log's common clock:
   step × batch size); ties go to the lower mean loss, then to the later tuple (more samples).

If no tuple lies within ε (the sensors' losses never come that close), ε is widened to the
smallest spread any tuple reaches, and the report says so. ε = 0 therefore degenerates to "the
smallest spread" (with continuous losses one tuple) and step 3 has nothing to choose from, so
the default is :data:`DEFAULT_TOLERANCE` = 0.01: about 1 % of a normalised-pixel MAE loss
(~0.9-1.1 here), and about the checkpoint-to-checkpoint jitter of a validation loss measured on
a few hundred chips (docs/comparison.md: 0.01-0.03), so losses closer than that are not
distinguishable and the rule should prefer the early-stopping neighbourhood among them.

The search is exact and O(N²) in the number N of checkpoints: an admissible tuple has its
minimum at some checkpoint's loss ``a``, so it lies in the product of the per-sensor windows
``[a, a + ε]``; in a product the lexicographic minimum of (distance, loss, −samples) summed over
sensors is the sum of per-sensor minima, so each anchor ``a`` costs one pass over the
candidates. :func:`_select_paper_brute` (every tuple of the product) is the tests' reference.

**Alternatives and baselines.** ``evl_min_spread`` is momo-geo's earlier rule: the tuple with
the smallest spread of the ``val_loss`` column (for runs validated on one common all-sensor set,
the same data for every run), ties to the lowest mean loss, then the latest; ``tolerance``
widens it to "within ``tolerance`` of the smallest spread" (a sorted sweep, O(N log N), checked
against :func:`_select_brute`). ``best`` (early stopping: lowest own-sensor loss per sensor),
``last`` (final checkpoint per sensor), ``same_epoch`` (the last epoch every run reached, its
last checkpoint) and ``same_step`` (the largest samples-seen count every run logged).
"""

from __future__ import annotations

import bisect
import csv
import itertools
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from momo_geo.errors import MomoGeoError

LOG_NAME = "val_log.csv"
LOG_COLUMNS = ("checkpoint", "samples_seen", "epoch", "val_loss")
SENSOR_COLUMN = "val_loss_"
"""Prefix of the per-sensor loss columns (``val_loss_hirise`` ...) of a multi-sensor val set."""
METHODS = ("evl", "evl_min_spread", "best", "last", "same_epoch", "same_step")
ALIASES = {"paper": "evl", "min_spread": "evl_min_spread", "early_stop": "best",
           "early_stopping": "best"}
DEFAULT_TOLERANCE = 0.01
"""The paper rule's ε (see the module docstring for why 0.01)."""
_EPS = 1e-12


@dataclass(frozen=True)
class Candidate:
    """One row of a validation-loss log; ``sensor_losses``: its per-sensor columns, if any."""

    checkpoint: str
    samples_seen: int
    epoch: int
    val_loss: float
    sensor_losses: tuple[tuple[str, float], ...] = ()


@dataclass
class ValLog:
    """A run's validation-loss log; ``run_dir`` resolves relative checkpoint paths;
    ``val_sensors``: the sensors of its validation set, from the run's ``config.json``."""

    candidates: list[Candidate]
    run_dir: Path | None = None
    val_sensors: list[str] | None = None

    def checkpoint_path(self, candidate: Candidate) -> Path:
        path = Path(candidate.checkpoint)
        if not path.is_absolute() and self.run_dir is not None:
            path = self.run_dir / path
        return path


def _run_val_sensors(run_dir: Path) -> list[str] | None:
    """What the run was validated on: ``val_sensors`` (or, unset, its own ``sensors``)."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    value = config.get("val_sensors") or config.get("sensors")
    return [str(v) for v in value] if isinstance(value, list) else None


def read_val_log(path: str | os.PathLike[str]) -> ValLog:
    """Read ``val_log.csv`` (or a run folder holding one). Columns: :data:`LOG_COLUMNS`, plus
    optional per-sensor ``val_loss_<sensor>`` columns."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.is_file():
        raise MomoGeoError(f"{path}: no validation-loss log")
    rows: list[Candidate] = []
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            names = list(reader.fieldnames or ())
            missing = set(LOG_COLUMNS) - set(names)
            if missing:
                raise MomoGeoError(f"{path}: missing columns {', '.join(sorted(missing))}")
            extra = [n for n in names if n.startswith(SENSOR_COLUMN)]
            for row in reader:
                per = tuple((n[len(SENSOR_COLUMN):], float(row[n])) for n in extra if row[n])
                rows.append(Candidate(row["checkpoint"], int(row["samples_seen"]),
                                      int(row["epoch"]), float(row["val_loss"]), per))
    except (ValueError, KeyError, TypeError) as exc:
        raise MomoGeoError(f"{path}: malformed validation-loss log ({exc})") from None
    if not rows:
        raise MomoGeoError(f"{path}: the validation-loss log has no checkpoints")
    return ValLog(rows, path.parent, _run_val_sensors(path.parent))


def as_log(value: ValLog | list[Candidate] | list[tuple] | str | os.PathLike[str]) -> ValLog:
    """Accept a :class:`ValLog`, a path, or a list of candidates / tuples
    ``(checkpoint, samples_seen, epoch, val_loss[, {sensor: loss}])`` (for quick use)."""
    if isinstance(value, ValLog):
        return value
    if isinstance(value, (str, os.PathLike)):
        return read_val_log(value)
    rows = [c if isinstance(c, Candidate) else
            Candidate(str(c[0]), int(c[1]), int(c[2]), float(c[3]),
                      tuple((str(k), float(v)) for k, v in (c[4] if len(c) > 4 else {}).items()))
            for c in value]
    if not rows:
        raise MomoGeoError("an empty validation-loss log")
    return ValLog(rows)


def own_loss(candidate: Candidate, sensor: str) -> float:
    """The run's loss on its own sensor's validation set: ``val_loss_<sensor>`` if logged,
    else ``val_loss``."""
    return dict(candidate.sensor_losses).get(sensor, candidate.val_loss)


def loss_source(log: ValLog, sensor: str) -> str:
    """Which loss :func:`own_loss` reads for this run, in words (for the report)."""
    if all(sensor in dict(c.sensor_losses) for c in log.candidates):
        return f"{SENSOR_COLUMN}{sensor} (own-sensor validation)"
    vs = log.val_sensors
    if vs is not None and vs != [sensor]:
        return (f"val_loss on {', '.join(vs)} chips: NOT the paper's per-sensor validation "
                "(no per-sensor column logged)")
    if vs == [sensor]:
        return "val_loss (own-sensor validation)"
    return "val_loss (validation set not recorded)"


@dataclass
class Selection:
    """The chosen checkpoint per sensor, with the evidence for the choice.

    ``candidates`` hold the loss each method compared as ``val_loss`` (the own-sensor loss for
    ``evl`` and ``best``; the log's ``val_loss`` column for the others)."""

    method: str
    chosen: dict[str, Candidate]
    candidates: dict[str, list[Candidate]]
    tolerance: float = 0.0
    paths: dict[str, str] = field(default_factory=dict)
    early_stop: dict[str, Candidate] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    effective_tolerance: float | None = None
    smallest_spread: float | None = None

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

    @property
    def distances(self) -> dict[str, int]:
        """Samples between each chosen checkpoint and its sensor's early-stopping one."""
        return {s: abs(c.samples_seen - self.early_stop[s].samples_seen)
                for s, c in self.chosen.items() if s in self.early_stop}

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "tolerance": self.tolerance,
            "effective_tolerance": self.effective_tolerance,
            "smallest_spread": self.smallest_spread,
            "spread": self.spread,
            "mean_loss": self.mean_loss,
            "chosen": {s: asdict(c) for s, c in self.chosen.items()},
            "early_stop": {s: asdict(c) for s, c in self.early_stop.items()},
            "distance_to_early_stop": self.distances,
            "loss_source": dict(self.sources),
            "paths": dict(self.paths),
            "candidates": {s: [asdict(c) for c in cs] for s, cs in self.candidates.items()},
        }

    def report(self) -> str:
        """A plain-text table of all candidates (``*`` chosen, ``E`` early stopping), the tuple,
        its spread and, for the paper rule, why this tuple."""
        head = f"Checkpoint selection: {self.method}"
        if self.method == "evl":
            head += f" (paper rule: per-sensor validation, tolerance ε {self.tolerance:g})"
        elif self.tolerance:
            head += f" (tolerance {self.tolerance:g})"
        lines = [head]
        for sensor, source in self.sources.items():
            lines.append(f"loss of {sensor}: {source}")
        lines.append(f"{'sensor':<10} {'checkpoint':<34} {'samples':>9} {'epoch':>5} "
                     f"{'val_loss':>10}")
        for sensor, rows in self.candidates.items():
            for c in rows:
                mark = "*" if c == self.chosen[sensor] else " "
                if self.early_stop.get(sensor) == c:
                    mark += "E"
                lines.append(f"{sensor:<10} {Path(c.checkpoint).name:<34} {c.samples_seen:>9} "
                             f"{c.epoch:>5} {c.val_loss:>10.5f} {mark}".rstrip())
        if self.early_stop:
            lines.append("early stopping (lowest own-sensor loss, E): " + ", ".join(
                f"{s}={Path(c.checkpoint).name} ({c.samples_seen} samples, {c.val_loss:.5f})"
                for s, c in self.early_stop.items()))
        tuple_text = ", ".join(f"{s}={Path(c.checkpoint).name} ({c.val_loss:.5f})"
                               for s, c in self.chosen.items())
        lines.append(f"chosen: {tuple_text}")
        if self.method == "evl" and self.effective_tolerance is not None:
            lines.extend(self._why())
        lines.append(f"spread (max - min val_loss): {self.spread:.6f}; "
                     f"mean val_loss: {self.mean_loss:.6f}")
        return "\n".join(lines)

    def _why(self) -> list[str]:
        eff, smallest = self.effective_tolerance or 0.0, self.smallest_spread or 0.0
        if eff > self.tolerance + _EPS:
            within = (f"no tuple lies within ε {self.tolerance:g} (the smallest spread is "
                      f"{smallest:.6f}); ε widened to {eff:.6f}")
        else:
            within = (f"tuples within ε {self.tolerance:g} are kept (the smallest spread is "
                      f"{smallest:.6f})")
        dist = self.distances
        return [f"why: {within}; of those, this one is nearest to early stopping: "
                + ", ".join(f"{s} {d} samples" for s, d in dist.items())
                + f" (total {sum(dist.values())}); ties: lower mean loss, then later."]


def _later(a: Candidate, b: Candidate) -> bool:
    return (a.samples_seen, a.epoch) > (b.samples_seen, b.epoch)


def _rank(tup: Mapping[str, Candidate]) -> tuple[float, int]:
    """Sort key among equally acceptable tuples: lowest mean, then latest (most samples)."""
    values = [c.val_loss for c in tup.values()]
    return (round(sum(values) / len(values), 12), -sum(c.samples_seen for c in tup.values()))


def _spread(tup: Mapping[str, Candidate]) -> float:
    values = [c.val_loss for c in tup.values()]
    return max(values) - min(values)


def _smallest_spread(logs: Mapping[str, list[Candidate]]) -> float:
    """The smallest max − min over all tuples: a sliding window over all losses sorted."""
    events = sorted((c.val_loss, s) for s, rows in logs.items() for c in rows)
    need, have, count = len(logs), dict.fromkeys(logs, 0), 0
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
    return best


def _select_evl(logs: Mapping[str, list[Candidate]], tolerance: float) -> dict[str, Candidate]:
    """The min-spread rule's exact sorted sweep (see the module docstring)."""
    # per sensor: candidates sorted by loss, equal losses latest first
    per = {s: sorted(rows, key=lambda c: (c.val_loss, -c.samples_seen, -c.epoch))
           for s, rows in logs.items()}
    keys = {s: [c.val_loss for c in rows] for s, rows in per.items()}
    limit = _smallest_spread(logs) + tolerance + _EPS
    # among tuples within the limit: per anchor, each sensor's lowest loss >= anchor
    chosen: dict[str, Candidate] | None = None
    for anchor in sorted({c.val_loss for rows in logs.values() for c in rows}):
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


def _paper_key(c: Candidate, early: Candidate) -> tuple[int, float, int, int]:
    """Per-sensor order of the paper rule: nearest to early stopping, lower loss, later."""
    return (abs(c.samples_seen - early.samples_seen), c.val_loss, -c.samples_seen, -c.epoch)


def _paper_rank(tup: Mapping[str, Candidate], early: Mapping[str, Candidate]
                ) -> tuple[int, float, int]:
    """Total distance to early stopping, then mean loss, then latest."""
    return (sum(abs(c.samples_seen - early[s].samples_seen) for s, c in tup.items()),
            *_rank(tup))


def _select_paper(logs: Mapping[str, list[Candidate]], tolerance: float
                  ) -> tuple[dict[str, Candidate], dict[str, Candidate], float, float]:
    """The paper rule (module docstring): (chosen, early stops, ε used, smallest spread)."""
    early = {s: _best(rows) for s, rows in logs.items()}
    smallest = _smallest_spread(logs)
    eff = max(tolerance, smallest)
    chosen: dict[str, Candidate] | None = None
    for anchor in sorted({c.val_loss for rows in logs.values() for c in rows}):
        tup = {}
        for s, rows in logs.items():
            window = [c for c in rows if anchor <= c.val_loss <= anchor + eff + _EPS]
            if not window:
                break
            tup[s] = min(window, key=lambda c, s=s: _paper_key(c, early[s]))
        else:
            if chosen is None or _paper_rank(tup, early) < _paper_rank(chosen, early):
                chosen = tup
    assert chosen is not None  # the smallest-spread tuple lies in its anchor's window
    return chosen, early, eff, smallest


def _select_paper_brute(logs: Mapping[str, list[Candidate]], tolerance: float
                        ) -> dict[str, Candidate]:
    """Reference for :func:`_select_paper`: every tuple of the product."""
    early = {s: _best(rows) for s, rows in logs.items()}
    sensors = list(logs)
    tuples = [dict(zip(sensors, combo, strict=True))
              for combo in itertools.product(*(logs[s] for s in sensors))]
    eff = max(tolerance, min(_spread(t) for t in tuples))
    ok = [t for t in tuples if _spread(t) <= eff + _EPS]
    return min(ok, key=lambda t: _paper_rank(t, early))


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


def canonical_method(method: str) -> str:
    """``evl-min-spread`` -> ``evl_min_spread``; aliases (``early-stop``) -> their method."""
    name = method.lower().replace("-", "_")
    name = ALIASES.get(name, name)
    if name not in METHODS:
        raise MomoGeoError(f"unknown selection method {method!r}; known: "
                           f"{', '.join(m.replace('_', '-') for m in METHODS)}")
    return name


def _same(rows: Mapping[str, list[Candidate]], method: str, epoch: int | None
          ) -> dict[str, Candidate]:
    """``same_epoch`` (``epoch``, default the last shared) or ``same_step`` (last shared
    samples-seen count)."""
    if method == "same_step":
        common = set.intersection(*({c.samples_seen for c in r} for r in rows.values()))
        if not common:
            raise MomoGeoError("the runs share no samples-seen count; same_step selection is "
                               "impossible")
        step = max(common)
        return {s: _last([c for c in r if c.samples_seen == step]) for s, r in rows.items()}
    common = set.intersection(*({c.epoch for c in r} for r in rows.values()))
    if epoch is None:
        if not common:
            raise MomoGeoError("the runs share no epoch; same_epoch selection is impossible")
        epoch = max(common)
    elif epoch not in common:
        raise MomoGeoError(f"not every run has a checkpoint in epoch {epoch} "
                           f"(shared epochs: {sorted(common) or 'none'})")
    return {s: _last([c for c in r if c.epoch == epoch]) for s, r in rows.items()}


def select_checkpoints(logs: Mapping[str, ValLog | list[Candidate] | str | os.PathLike[str]],
                       method: str = "evl", tolerance: float | None = None,
                       epoch: int | None = None) -> Selection:
    """Choose one checkpoint per sensor from each run's validation-loss log.

    ``method``: ``evl`` (the paper's rule), ``evl_min_spread``, ``best`` (early stopping),
    ``last``, ``same_epoch`` (``epoch`` picks which; by default the last epoch every run
    reached) or ``same_step``; hyphens work too. ``tolerance``: ε of ``evl`` (default
    :data:`DEFAULT_TOLERANCE`) or the slack of ``evl_min_spread`` (default 0). The keys of
    ``logs`` are the sensors: they name each run's own per-sensor loss column.
    """
    method = canonical_method(method)
    if tolerance is None:
        tolerance = DEFAULT_TOLERANCE if method == "evl" else 0.0
    if tolerance < 0:
        raise MomoGeoError(f"tolerance must be >= 0, got {tolerance}")
    if not logs:
        raise MomoGeoError("checkpoint selection needs at least one run")
    vlogs = {s: as_log(v) for s, v in logs.items()}
    rows = {s: log.candidates for s, log in vlogs.items()}
    early: dict[str, Candidate] = {}
    sources: dict[str, str] = {}
    eff = smallest = None
    if method in ("evl", "best"):
        # compare each run's loss on its own sensor's validation set
        rows = {s: [replace(c, val_loss=own_loss(c, s)) for c in r] for s, r in rows.items()}
        sources = {s: loss_source(vlogs[s], s) for s in rows}
        early = {s: _best(r) for s, r in rows.items()}
    if method == "evl":
        chosen, early, eff, smallest = _select_paper(rows, tolerance)
    elif method == "evl_min_spread":
        chosen = _select_evl(rows, tolerance)
        sources = {s: "val_loss (the log's main column)" for s in rows}
    elif method == "best":
        chosen = dict(early)
    elif method == "last":
        chosen = {s: _last(r) for s, r in rows.items()}
    else:
        chosen = _same(rows, method, epoch)
    chosen = {s: chosen[s] for s in rows}  # keep the caller's sensor order
    paths = {s: str(vlogs[s].checkpoint_path(c)) for s, c in chosen.items()}
    return Selection(method, chosen, rows, tolerance, paths, early, sources, eff, smallest)


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
