"""The paper's experiment in miniature (issue 12), on the package's one pretraining pipeline.

    python training/reproduce.py            # or: make reproduce (about an hour on one core)
    python training/reproduce.py --quick    # a smoke run (minutes), writes to --work only
    python training/reproduce.py --render-only   # re-render from docs/comparison.json

The settings live in ``training/recipes/comparison.json`` (``--quick`` applies its ``quick``
part; ``--set KEY.PATH=VALUE`` overrides any value). Stages, once per pretraining seed
(``pretrain_seeds``: the seed sets every run's chips, masks and the base's initialisation):

1. Encoders, all from :mod:`momo_geo.training` and :mod:`momo_geo.merge` — the code
   ``momo-geo pretrain | evl | merge`` runs: :func:`momo_geo.training.pipeline.run_momo` trains
   the **base** (MAE on all sensors), one continuation per sensor (**HiRISE-only**,
   **CTX-only**, **THEMIS-only**; each logs its own-sensor loss ``val_loss_SENSOR`` and the
   common all-sensor ``val_loss`` at every checkpoint) and the **joint** baseline;
   :func:`momo_geo.merge.evl.select_checkpoints` + :func:`momo_geo.merge.recipe.merge_checkpoints`
   build the λ sweep of the **EVL merge** (paper rule) and the other merges: **last
   checkpoints**, **early stopping**, **EVL min-spread**, **MagMax**, **TIES**. Plus
   **scratch** (a random encoder).
2. The λ sweep is probed on the *selection* images (whole groups held out of each task's train
   split; the probes train on the rest) and λ is chosen there; every row, the chosen EVL merge
   included, is reported on the *validation* split.
3. Probes: frozen encoder, several probe seeds per cell (:mod:`momo_geo.training.probes`).

Outputs: ``docs/comparison.json`` (the state), ``docs/comparison.md`` and the comparison section
of ``docs/results.md`` (both rendered by :func:`render_comparison`; the rest of results.md is
``training/report_models.py``'s).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from momo_geo.evaluate import (
    TaskData,
    classification_report,
    load_task_data,
    pixel_counts,
    segmentation_report,
)
from momo_geo.training.recipes import TASK_FOLDERS, apply_override, load_recipe, merged

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "training" / "recipes" / "comparison.json"
SENSORS = ("hirise", "ctx", "themis")
ENCODER_ROWS = ("scratch", "base", "hirise-only", "ctx-only", "themis-only", "joint",
                "last-merge", "early-stop-merge", "evl-merge", "evl-min-spread", "magmax",
                "ties")
BUNDLED = ("crater-seg", "landmarks")


def log(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:7.1f} s] {message}", flush=True)


# ----------------------------------------------------------------------------- encoders


def pipeline_kwargs(recipe: dict[str, Any], data_root: str | Path,
                    threads: int | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`momo_geo.training.pipeline.run_momo` for a comparison
    recipe: its ``pretrain`` part, the data folder and the CPU threads."""
    kwargs = dict(recipe["pretrain"], data_root=str(data_root))
    if threads:
        kwargs.setdefault("threads", threads)
    return kwargs


def build_encoders(recipe: dict[str, Any], data_root: str | Path, work: Path,
                   threads: int | None = None, verbose: bool = True, seed: int | None = None
                   ) -> tuple[dict[str, Path | None], str, dict[str, Any]]:
    """Stage 1 for one pretraining seed: the package pipeline's base, sensor runs and joint
    run, and every merge of the recipe's ``merges`` and ``sweep`` (all through
    :func:`select_checkpoints` and :func:`merge_checkpoints`). Returns the encoders as bundle
    paths (``None``: scratch; the sweep's as ``evl-merge@LAMBDA``), the EVL reports and what
    the run chose. ``seed`` (default: the recipe's) seeds every pretraining run: chips, masks,
    initialisation of the base."""
    from momo_geo.training.pipeline import run_momo

    kwargs = pipeline_kwargs(recipe, data_root, threads)
    if seed is not None:
        kwargs["seed"] = seed
    if not kwargs.get("joint_samples"):
        kwargs["joint_samples"] = 3 * kwargs["sensor_samples"]  # the three runs' compute
    out = work / "momo"
    run_momo(out, overwrite=True, verbose=verbose, **kwargs)
    base = out / "base" / "encoder.bundle"
    encoders: dict[str, Path | None] = {"scratch": None, "base": base}
    for sensor in SENSORS:
        encoders[f"{sensor}-only"] = out / sensor / "encoder.bundle"
    encoders["joint"] = out / "joint" / "encoder.bundle"
    sweep = recipe["sweep"]
    for lam in sweep["lams"]:
        encoders[sweep_name(lam)] = merge_row(out, work, sweep_name(lam), dict(sweep, lam=lam))
    lam = recipe.get("chosen_lam")
    if lam is not None:  # stage 3: the other rows, once λ is chosen
        encoders.update(merge_rows(recipe, out, work, lam))
    reports = {m: select(out, m).report().rstrip() for m in ("evl", "evl_min_spread")}
    return encoders, "\n\n".join(reports.values()), {
        "evl_choice": {s: c.checkpoint for s, c in select(out, "evl").chosen.items()},
        "seconds": json.loads((out / "pipeline.json").read_text())["seconds"]}


def select(out: Path, method: str) -> Any:
    """The checkpoints ``method`` selects from the sensor runs in ``out``."""
    from momo_geo.merge.evl import read_val_log, select_checkpoints

    return select_checkpoints({s: read_val_log(out / s) for s in SENSORS}, method)


def sweep_name(lam: float) -> str:
    return f"evl-merge@{lam:g}"


def merge_row(out: Path, work: Path, name: str, spec: dict[str, Any]) -> Path:
    """One merge row: ``spec``'s selection of the runs in ``out``, merged onto their base."""
    from momo_geo.merge.recipe import merge_checkpoints

    selection = select(out, spec.get("selection", "evl"))
    return merge_checkpoints(out / "base" / "encoder.bundle", selection.paths,
                             work / f"{name.replace('@', '-')}.bundle", spec["method"],
                             spec.get("lam"), spec.get("trim", 0.2), selection, overwrite=True,
                             name=f"momo-{name}")


def merge_rows(recipe: dict[str, Any], out: Path, work: Path, lam: float
               ) -> dict[str, Path | None]:
    """The recipe's ``merges``; a task-arithmetic merge without a λ of its own takes the
    sweep's chosen ``lam`` (chosen on the selection split)."""
    rows: dict[str, Path | None] = {}
    for name, spec in recipe["merges"].items():
        spec = dict(spec)
        if spec.get("lam") is None:
            spec["lam"] = lam
        rows[name] = merge_row(out, work, name, spec)
    return rows


def encoder_state(bundle: Path | None, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """An encoder's weights for the grey (1-channel) probes: a bundle's, adapted (the RGB patch
    kernels summed), or a seeded random encoder's for ``None``."""
    from momo_geo.bundle import load_bundle
    from momo_geo.models.vit import adapt_state_dict, create_encoder

    torch.manual_seed(seed)
    encoder = create_encoder("vit_tiny", img_size=size, in_chans=1)
    if bundle is None:
        return encoder.state_dict()
    return adapt_state_dict(load_bundle(bundle).state_dict, encoder)


# ----------------------------------------------------------------------------- probes

KEEP = {"landmarks": ("f1_weighted", "f1_macro", "accuracy"),
        "ctx-craters": ("iou", "iou_per_image_mean"),
        "themis-craters": ("iou", "iou_per_image_mean")}
"""The scores kept in the state (docs/comparison.json stays small)."""
HEADLINE = {"landmarks": "f1_weighted", "ctx-craters": "iou", "themis-craters": "iou"}
TASK_NAMES = {"landmarks": "Landmarks (HiRISE) F1 weighted", "ctx-craters": "CTX crater IoU",
              "themis-craters": "THEMIS crater IoU"}


def probe_inputs(data: dict[str, TaskData], probes: dict[str, Any]) -> dict[str, Any]:
    """The fixed chips and tiles every encoder is probed on: ``train`` (the train split less
    the selection images), ``val`` (the validation split) and ``sel`` (the selection images)."""
    from momo_geo.training.finetune import Recipe
    from momo_geo.training.probes import grid_tiles
    from momo_geo.training.task_data import crater_chips, normalise, resize_crops

    size, grey = probes["img_size"], Recipe(in_chans=1)
    rng = np.random.default_rng(7)

    def crops(split: str) -> tuple[torch.Tensor, np.ndarray]:
        part = data["landmarks" + split]
        keep = np.arange(len(part.images))
        if probes.get("max_crops") and len(keep) > probes["max_crops"]:  # --quick only
            keep = np.sort(np.random.default_rng(3).permutation(keep)[:probes["max_crops"]])
        return (normalise(resize_crops([part.images[i] for i in keep], size), grey),
                np.asarray(part.targets)[keep])

    x, y = crops("")
    inputs: dict[str, Any] = {"landmarks": {"train": (x, torch.tensor(y)),
                                            "val": crops(":val"), "sel": crops(":sel")}}
    for task in ("ctx-craters", "themis-craters"):
        raw, mask, _ = crater_chips(data[task], probes["train_chips"], size, rng)
        inputs[task] = {"train": (normalise(raw, grey), mask)}
        for split in ("val", "sel"):
            side = probes["themis_val_side"] if task == "themis-craters" else probes.get(
                "sel_side" if split == "sel" else "val_side")
            vraw, vmask, owner = grid_tiles(data[f"{task}:{split}"], size, side)
            inputs[task][split] = (normalise(vraw, grey), (vmask, np.array(owner)))
    return inputs


def _seg_report(pred: np.ndarray, vmask: torch.Tensor, owner: np.ndarray) -> dict[str, Any]:
    counts = np.zeros((owner.max() + 1, 3), dtype=np.int64)
    for k in range(len(pred)):
        counts[owner[k]] += pixel_counts(pred[k], vmask[k].numpy())
    return segmentation_report(counts, n_boot=0)


def probe_encoder(state: dict[str, torch.Tensor], inputs: dict[str, Any],
                  probes: dict[str, Any], splits: tuple[str, ...] = ("val",)
                  ) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Scores of one encoder: ``{split: {task: [one report per probe seed]}}``; each probe is
    trained on the ``train`` chips once per seed and scored on every split in ``splits``."""
    from momo_geo.models.heads import ViTClassifier, ViTSegmenter
    from momo_geo.models.vit import create_encoder
    from momo_geo.training.probes import (
        LinearProbe,
        TokenProbe,
        head_predict,
        probe_features,
        train_head,
    )

    size = probes["img_size"]
    encoder = create_encoder("vit_tiny", img_size=size, in_chans=1)
    encoder.load_state_dict(state)
    results: dict[str, dict[str, list[dict[str, float]]]] = {
        s: {t: [] for t in KEEP} for s in splits}

    def keep(task: str, report: dict[str, Any]) -> dict[str, float]:
        return {k: float(report[k]) for k in KEEP[task]}

    cls = ViTClassifier(copy.deepcopy(encoder), 8)
    x, y = inputs["landmarks"]["train"]
    f = probe_features(cls, x)
    feats = {s: probe_features(cls, inputs["landmarks"][s][0]) for s in splits}
    for seed in range(probes["seeds"]):
        torch.manual_seed(seed)
        head = LinearProbe(f.shape[1], 8)
        train_head(head, f, y, probes["steps_cls"], seed, size, "ce")
        for s in splits:
            pred = head_predict(head, feats[s], size).numpy()
            results[s]["landmarks"].append(keep("landmarks", classification_report(
                inputs["landmarks"][s][1], pred, 8, n_boot=0)))
    seg = ViTSegmenter(encoder, 2, 1)
    for task in ("ctx-craters", "themis-craters"):
        x, y = inputs[task]["train"]
        f = probe_features(seg, x)
        feats = {s: probe_features(seg, inputs[task][s][0]) for s in splits}
        for seed in range(probes["seeds"]):
            torch.manual_seed(seed)
            head = TokenProbe(f[0].shape[1], len(f))
            train_head(head, f, y, probes["steps_seg"], seed, size, "dice_ce", batch=64)
            for s in splits:
                pred = head_predict(head, feats[s], size).numpy()
                results[s][task].append(keep(task, _seg_report(pred, *inputs[task][s][1])))
    return results


# ----------------------------------------------------------------------------- report


def trivial_baselines(data: dict[str, TaskData]) -> dict[str, dict[str, float]]:
    """What a model that learned nothing scores: the majority landmark class everywhere, and
    "crater" on every pixel (its IoU is the crater fraction). The table must beat these."""
    val = data["landmarks:val"]
    counts = np.bincount(data["landmarks"].targets, minlength=len(val.classes))
    majority = classification_report(val.targets, [int(counts.argmax())] * len(val.targets),
                                     len(val.classes), n_boot=0)
    out = {"landmarks": {k: float(majority[k]) for k in KEEP["landmarks"]}}
    for task in ("ctx-craters", "themis-craters"):
        rows = [pixel_counts(np.ones_like(m), m) for m in data[f"{task}:val"].targets]
        report = segmentation_report(np.array(rows), n_boot=0)
        out[task] = {k: float(report[k]) for k in KEEP[task]}
    return out


def check_splits(data: dict[str, TaskData]) -> None:
    """The probes' training images, the selection images and the validation split share no
    group (tile, crop, HiRISE product)."""
    for task in TASK_FOLDERS:
        parts = {s: set(data[task + s].groups) for s in ("", ":sel", ":val")}
        for a, b in (("", ":sel"), ("", ":val"), (":sel", ":val")):
            shared = parts[a] & parts[b]
            if shared:
                raise SystemExit(f"{task}: {a or 'train'} and {b} share {sorted(shared)[:3]}")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- state access


def scores(state: dict[str, Any], row: str, task: str, metric: str | None = None,
           seed: str | None = None) -> list[float]:
    """A row's scores on the validation split: every (pretraining seed, probe seed) pair, or
    one pretraining seed's."""
    metric = metric or HEADLINE[task]
    runs = state["runs"] if seed is None else {seed: state["runs"][seed]}
    return [r[metric] for run in runs.values() for r in run["table"][row][task]]


def sweep_scores(state: dict[str, Any], lam: str, split: str, task: str) -> list[float]:
    return [r[HEADLINE[task]] for run in state["runs"].values()
            for r in run["sweep"][lam][split][task]]


def choose_lambda(runs: dict[str, Any], lams: list[float]) -> tuple[float, dict[str, float]]:
    """λ with the best mean headline score over the three tasks on the *selection* images
    (all pretraining and probe seeds); the first of equals."""
    state = {"runs": runs}
    score = {f"{lam:g}": float(np.mean([np.mean(sweep_scores(state, f"{lam:g}", "sel", t))
                                        for t in HEADLINE])) for lam in lams}
    best = max(lams, key=lambda lam: score[f"{lam:g}"])
    return best, score


def cell(values: list[float]) -> str:
    m, h = mean_ci(values)
    return f"{m:.3f} ± {h:.3f}"


def rank_encoders(state: dict[str, Any]) -> list[str]:
    """Rows by mean rank over the three tasks' headline metric."""
    rows = rows_of(state)
    names = list(rows)
    ranks = np.zeros(len(names))
    for task in HEADLINE:
        means = [-np.mean(scores(state, n, task)) for n in names]
        ranks += np.argsort(np.argsort(means))
    return [names[i] for i in np.argsort(ranks, kind="stable")]


# ----------------------------------------------------------------------------- report


ROW_LABELS = {
    "scratch": "scratch (random encoder, seeded by the pretraining seed)",
    "base": "base (MAE on all sensors)", "hirise-only": "HiRISE-only", "ctx-only": "CTX-only",
    "themis-only": "THEMIS-only", "joint": "joint (all sensors, the three runs' compute)",
    "last-merge": "merge of last checkpoints", "early-stop-merge":
    "merge of early-stopping checkpoints", "evl-merge": "EVL merge (paper rule, chosen λ)",
    "evl-min-spread": "EVL (min-spread rule)", "magmax": "MagMax (EVL checkpoints)",
    "ties": "TIES (EVL checkpoints)",
    "evl-merge-random-base": "EVL merge from a random base (sensor runs from one batch of MAE)"}


def render_comparison(state: dict[str, Any], full: bool = False) -> list[str]:
    """The comparison section (docs/comparison.md and docs/results.md) from a run's state
    (docs/comparison.json); ``full`` adds the EVL selection reports."""
    rows = rows_of(state)
    recipe, seeds = state["recipe"], list(state["runs"])
    pre, probes, merges = recipe["pretrain"], recipe["probes"], recipe["merges"]
    lam = state["chosen_lam"]
    n_pairs = len(seeds) * probes["seeds"]
    lines = [
        "## The encoder comparison (MOMO's experiment in miniature)", "",
        f"Generated by `{state['command']}` ({state['seconds'] / 60:.0f} min on one CPU "
        "thread); state in `docs/comparison.json`, rendered by "
        "`training/reproduce.py:render_comparison` into both comparison.md and results.md.", "",
        f"- Pretraining (`momo_geo.training.pipeline.run_momo`, once per **pretraining seed** "
        f"{', '.join(seeds)}; the seed sets the chips, the masks and the base's initialisation): "
        f"ViT-Tiny, {pre['img_size']} px chips, {pre['pool_size']} training-split chips per "
        f"sensor, base {pre['base_samples']} samples on all sensors (MAE from random "
        f"initialisation), each sensor run {pre['sensor_samples']} samples continued from the "
        f"base with a checkpoint every {pre['checkpoint_every']} samples, joint "
        f"{state['joint_samples']} samples (all sensors, from the base). Each sensor run is "
        f"validated on {pre['val_size']} chips per sensor of all three sensors "
        f"(`validation: {pre['validation']}`): the log holds each sensor's own loss "
        "(`val_loss_SENSOR`, read by the paper's EVL rule and by early stopping) and the "
        "common all-sensor loss (`val_loss`, read by the min-spread rule); one setting gives "
        "both, so every row is from the same runs.",
        "- Merges (`select_checkpoints` + `merge_checkpoints`): " + "; ".join(
            f"**{n}** = {m['method']} of the `{m.get('selection', 'evl')}` checkpoints, λ "
            + (f"{m['lam']}" if m.get("lam") is not None else f"= chosen λ ({lam:g})")
            for n, m in merges.items()) + f"; **evl-merge** = task arithmetic of the `evl` "
        f"checkpoints at the λ chosen by the sweep below ({lam:g}).",
        f"- Scoring: frozen encoder, {probes['seeds']} probe seeds per encoder: a linear "
        f"classifier on pooled tokens for landmarks ({probes['steps_cls']} steps), a linear "
        f"per-token crater probe (Dice+CE, {probes['steps_seg']} steps, {probes['train_chips']} "
        "chips). Three disjoint splits per task (checked): the probes train on the train split "
        "**less the selection images** (a held-out "
        f"{probes['selection_fraction']:.0%} of its groups: HiRISE products, CTX tiles, THEMIS "
        "crops); λ is chosen on the **selection** images; every table reports the "
        "**validation** split. No row is selected on the split it is reported on (the EVL "
        "rules read pretraining losses on train-split chips only).",
        f"- Cells: mean ± half-width of the 95 % t-interval over all {n_pairs} (pretraining "
        f"seed × probe seed) pairs. The pairs are not independent (probe seeds share an "
        "encoder), so the per-pretraining-seed means are shown too: when they differ by more "
        "than the interval, pretraining variance dominates.", "",
        "| encoder | " + " | ".join(TASK_NAMES[t] for t in HEADLINE)
        + " | Landmarks F1 macro | CTX IoU per image | THEMIS IoU per image |",
        "|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [cell(scores(state, row, t)) for t in HEADLINE]
        cells += [cell(scores(state, row, "landmarks", "f1_macro")),
                  cell(scores(state, row, "ctx-craters", "iou_per_image_mean")),
                  cell(scores(state, row, "themis-craters", "iou_per_image_mean"))]
        lines.append(f"| {ROW_LABELS[row]} | " + " | ".join(cells) + " |")
    b = state.get("baselines")
    if b:
        lines.append("| *trivial (majority class / all crater)* | "
                     + " | ".join(f"{b[t][HEADLINE[t]]:.3f}" for t in HEADLINE)
                     + f" | {b['landmarks']['f1_macro']:.3f} | "
                     f"{b['ctx-craters']['iou_per_image_mean']:.3f} | "
                     f"{b['themis-craters']['iou_per_image_mean']:.3f} |")
    lines += ["", f"Rows by mean rank over the three tasks: {', '.join(rank_encoders(state))}.",
              "", "### Per pretraining seed (mean over probe seeds)", "",
              "| encoder | " + " | ".join(f"{TASK_NAMES[t]}, seed {s}" for t in HEADLINE
                                          for s in seeds) + " |",
              "|---|" + "---|" * (len(HEADLINE) * len(seeds))]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(
            f"{np.mean(scores(state, row, t, seed=s)):.3f}" for t in HEADLINE for s in seeds)
            + " |")
    lines += ["", "### λ sweep of the EVL merge (task arithmetic, paper rule)", "",
              "λ is chosen by the mean of the three headline scores on the selection images "
              "(all seed pairs); the validation columns are reported, never used to choose.", "",
              "| λ | selection: mean of 3 | selection: " + " | selection: ".join(
                  TASK_NAMES[t] for t in HEADLINE) + " | validation: " + " | validation: ".join(
                  TASK_NAMES[t] for t in HEADLINE) + " |",
              "|---|---|" + "---|" * (2 * len(HEADLINE))]
    for key in state["selection_scores"]:
        mark = " **← chosen**" if float(key) == lam else ""
        lines.append(f"| {key}{mark} | {state['selection_scores'][key]:.3f} | "
                     + " | ".join(cell(sweep_scores(state, key, "sel", t)) for t in HEADLINE)
                     + " | " + " | ".join(cell(sweep_scores(state, key, "val", t))
                                          for t in HEADLINE) + " |")
    lines += ["", "### EVL choices", ""]
    for s, run in state["runs"].items():
        lines.append(f"- pretraining seed {s}: paper rule chose "
                     + ", ".join(f"{k} `{v}`" for k, v in run["evl_choice"].items()) + ".")
    if full:
        for s, run in state["runs"].items():
            lines += ["", f"Selection reports, pretraining seed {s} (the rule is named in "
                      "each report's first line; `*` the choice, `E` early stopping):", "",
                      "```", run["evl_report"], "```"]
    lines += ["", *reading(state)]
    return lines


def _verdict(a: tuple[float, float], b: tuple[float, float]) -> str:
    if a[0] - a[1] > b[0] + b[1]:
        return "higher, intervals disjoint"
    if a[0] + a[1] < b[0] - b[1]:
        return "lower, intervals disjoint"
    return "within the intervals"


TRIVIAL_MARGIN = 0.01
"""A task whose best row is closer than this to the trivial score says nothing about rows."""


def reading(state: dict[str, Any]) -> list[str]:
    """The reading, computed from the state (so it cannot contradict the tables)."""
    rows = rows_of(state)
    out = ["### Reading (computed from the numbers above)", ""]
    base_rows = [r for r in rows if r != "evl-merge"]
    for task in HEADLINE:
        ci = {r: mean_ci(scores(state, r, task)) for r in rows}
        best = max(rows, key=lambda r: ci[r][0])
        pairs = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]]
        apart = [(a, b) for a, b in pairs if _verdict(ci[a], ci[b]) != "within the intervals"]
        below = [r for r in rows if r != best and ci[r][0] + ci[r][1] < ci[best][0]
                 - ci[best][1]]
        near = [r for r in rows if r not in below and r != best]
        out.append(
            f"- **{TASK_NAMES[task]}**: best row {best} ({ci[best][0]:.3f} ± {ci[best][1]:.3f}); "
            f"{len(apart)} of {len(pairs)} row pairs differ by more than their intervals. "
            f"Clearly below the best: {', '.join(below) or 'none'}; within the best's "
            f"interval: {', '.join(near) or 'none'}. "
            "EVL merge vs " + "; ".join(
                f"{r} {ci[r][0]:.3f}: {_verdict(ci['evl-merge'], ci[r])}" for r in base_rows)
            + ".")
        seed_means = {r: [np.mean(scores(state, r, task, seed=s)) for s in state["runs"]]
                      for r in rows}
        spread = np.mean([max(v) - min(v) for v in seed_means.values()])
        half = np.mean([ci[r][1] for r in rows])
        out.append(f"  Pretraining seeds: the per-seed means of a row differ by {spread:.3f} on "
                   f"average, against a mean interval half-width of {half:.3f}"
                   + (" — pretraining variance is as large as the intervals, so differences "
                      "of that size are not findings." if spread >= half else "."))
        b = state.get("baselines")
        if b:
            floor = b[task][HEADLINE[task]]
            above = [r for r in rows if ci[r][0] - ci[r][1] > floor]
            out.append(f"  Trivial score {floor:.3f}; rows whose whole interval is above it: "
                       f"{', '.join(above) or 'none'}.")
            if ci[best][0] - floor < TRIVIAL_MARGIN:
                out.append(f"  Every row is within {TRIVIAL_MARGIN} of the trivial score: the "
                           "probe learned next to nothing from any encoder (it answers the "
                           "majority class / the crater prior), so the pairs that \"differ\" "
                           "above differ in the third decimal and rank nothing.")
    lam = state["chosen_lam"]
    val = {k: float(np.mean([np.mean(sweep_scores(state, k, "val", t)) for t in HEADLINE]))
           for k in state["selection_scores"]}
    best_val = max(val, key=val.get)
    out += ["", f"- λ: chosen {lam:g} on the selection images; on the validation split the "
            f"best λ would have been {best_val} (mean of 3 {val[best_val]:.3f} vs "
            f"{val[f'{lam:g}']:.3f} at the chosen λ)"
            + (" — the selection split picked the validation optimum." if best_val == f"{lam:g}"
               else ", a difference the reported EVL row does not benefit from."),
            "- The paper's merge ablation (CraterBinary mIoU: EVL .54, last .50, early stopping "
            ".50): here " + "; ".join(
                f"{TASK_NAMES[t]} EVL {np.mean(scores(state, 'evl-merge', t)):.3f}, last "
                f"{np.mean(scores(state, 'last-merge', t)):.3f}, early stopping "
                f"{np.mean(scores(state, 'early-stop-merge', t)):.3f}" for t in HEADLINE) + ".",
            "",
            "Deviation of the base: the paper continues every sensor run from one generic "
            "ImageNet-supervised ViT; ImageNet weights cannot be downloaded here, so the base is "
            "a short MAE run on all three sensors from random initialisation, and the sensor "
            "runs' task vectors are small edits of a jointly trained model. Its effect "
            + (base_effect(state) if state.get("random_base") else
               "was not measured in this run: an EVL merge from a randomly initialised base "
               "(no base pretraining) did not fit the one-core, 75-minute budget beside two "
               "pretraining seeds; the `scratch` row bounds what no pretraining gives."),
            "",
            "What this run can and cannot say: every encoder saw a few thousand 64 px chips "
            "(minutes of one CPU core, against MOMO's days of GPU on millions of tiles), so the "
            "task vectors are short and merging has little to reconcile. Differences within the "
            "intervals above are not evidence for or against the paper's ranking."]
    return out


def render_results(state: dict[str, Any], cards: dict[str, Any],
                   sample_iou: float | None) -> str:
    """docs/comparison.md: a header, the comparison section and the bundled models."""
    from momo_geo import __version__

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), "
               f"torch {torch.__version__}, {torch.get_num_threads()} threads, no GPU")
    lines = ["# MOMO's comparison in miniature", "",
             f"Rendered on {now} ({machine}; momo-geo {__version__}). Do not edit by hand: "
             "`make reproduce` reruns it (`python training/reproduce.py --render-only` "
             "re-renders from `docs/comparison.json`). The same section is in "
             "[results.md](results.md).", "",
             "Data: `../shared/data` (see its README): HiRISE landmark crops (Wagstaff et al., "
             "Zenodo 10.5281/zenodo.2538136), CTX tiles of the Mars Crater Catalogue (CC BY "
             "4.0), THEMIS crops with Robbins & Hynek boxes (Apache-2.0).", "",
             *render_comparison(state, full=True)]
    lines += bundled_section(cards, sample_iou)
    return "\n".join(lines) + "\n"


def bundled_section(cards: dict[str, Any], sample_iou: float | None) -> list[str]:
    """What comparison.md says about the bundled models, read from their cards."""
    if not cards:
        return []
    lines = ["", "## The bundled default models", "",
             "Built by `make models` (`training/build_models.py` on "
             "`training/recipes/{crater-seg,landmarks}.json`): the MOMO pipeline above, then "
             "full fine-tuning with Lightning, layer-wise lr decay, AdamW, warm-up + cosine, "
             "flips and 90° rotations; saved in fp16.", ""]
    for name, card in cards.items():
        training = card["training"]
        lines.append(f"- `{name}.bundle` ({card['name']}): fine-tuned from the "
                     f"`{training.get('finetune_from', training.get('encoder_bundle'))}` encoder; "
                     + recipe_text(training["recipe"], card["task"]) + ".")
    lines += ["", "`momo-geo evaluate --task TASK --data ../shared/data/FOLDER --json` "
              "(validation split; sliding window with the card's tile and overlap, as "
              "`momo-geo map`); 95 % bootstrap intervals over images:", "",
              "| task | model | n | metric | value | 95 % CI |", "|---|---|---|---|---|---|"]
    for card in cards.values():
        for task, ev in card["metrics"].items():
            if task == "split":
                continue
            keys = (("f1_weighted", "f1_macro", "accuracy") if task == "landmarks"
                    else ("iou", "iou_per_image_mean", "f1_pixel"))
            for key in keys:
                lo, hi = ev[f"{key}_ci"]
                lines.append(f"| {task} | {ev['model']} | {ev['n']} | {key} | {ev[key]:.4f} | "
                             f"[{lo:.4f}, {hi:.4f}] |")
    if sample_iou is not None:
        lines += ["", f"`momo-geo map sample_data/crater_field.tif` with the default model: "
                  f"crater IoU against `crater_field_truth.tif` = **{sample_iou:.3f}** "
                  "(regression test: `tests/test_default_models.py`)."]
    return lines


def recipe_text(r: dict[str, Any], task: str) -> str:
    """One sentence on a bundle's fine-tuning recipe (from its card, so it cannot drift)."""
    if task == "segmentation":
        return (f"{r['input_size']} px chips, {r['chips']} chips per epoch, {r['epochs']} "
                f"epochs, lr {r['lr']}, {r['loss']}; training data include "
                f"{r.get('extra', {}).get('synthetic_fields', 0)} synthetic crater fields "
                "(`momo_geo.synthetic`, seeds 1000+, never the sample scene's 42), so that the "
                "synthetic sample scene is in its domain")
    stem = (f", a {r['cls_stem_dim']}-channel conv stem beside the ViT"
            if r.get("cls_stem_dim") else "")
    return (f"the 227 px crops resized to {r['input_size']} px{stem}, {r['epochs']} epochs, "
            f"lr {r['lr']}, {r['loss']} with {r['class_weighting']} class weighting and "
            f"{r['sampling']} sampling, per-crop flips/90° rotations and brightness/contrast "
            f"jitter ±{r['jitter']} (chosen on the validation split, so its score there is "
            "slightly optimistic)")


def sample_scene_iou(work: Path) -> float | None:
    """IoU of the default crater model on the bundled synthetic sample scene."""
    import rasterio

    from momo_geo.inference import map_scene

    scene = ROOT / "sample_data" / "crater_field.tif"
    truth_path = ROOT / "sample_data" / "crater_field_truth.tif"
    if not scene.exists():
        return None
    out = work / "crater_field_mask.tif"
    map_scene(scene, out, model="default", overwrite=True)
    with rasterio.open(out) as a, rasterio.open(truth_path) as b:
        pred, truth = a.read(1), b.read(1)
    valid = truth != 255
    tp, fp, fn = pixel_counts(pred, truth, valid=valid)
    return tp / max(tp + fp + fn, 1)


# ----------------------------------------------------------------------------- run


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval over seeds."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(half)


def bundled_cards(weights_dir: Path) -> dict[str, Any]:
    """The cards of the bundled models that exist in ``weights_dir``."""
    cards = {}
    for name in BUNDLED:
        path = weights_dir / f"{name}.bundle" / "card.json"
        if path.is_file():
            cards[name] = json.loads(path.read_text())
    return cards


def load_data(data_root: Path, fraction: float = 0.2, seed: int = 1) -> dict[str, TaskData]:
    """Each task's train split less the selection images (``TASK``), the selection images
    (``TASK:sel``, whole groups held out by :func:`momo_geo.training.task_data.hold_out`) and
    the validation split (``TASK:val``)."""
    from momo_geo.training.task_data import hold_out

    data: dict[str, TaskData] = {}
    for task, folder in TASK_FOLDERS.items():
        train = load_task_data(task, str(data_root / folder), "train")
        data[task], data[f"{task}:sel"] = hold_out(train, fraction, seed)
        data[f"{task}:val"] = load_task_data(task, str(data_root / folder), "val")
    check_splits(data)
    return data


def comparison(recipe: dict[str, Any], data: dict[str, TaskData], data_root: Path, work: Path,
               threads: int, start: float) -> dict[str, Any]:
    """Stages 1-3 for every pretraining seed: encoders, the λ sweep (selection and validation),
    λ chosen on the selection images, the other merges, every row probed (the state)."""
    probes, size = recipe["probes"], recipe["probes"]["img_size"]
    lams = recipe["sweep"]["lams"]
    inputs = probe_inputs(data, probes)
    log("probe inputs: " + ", ".join(f"{t} {s} {len(v[s][0])}" for t, v in inputs.items()
                                     for s in ("train", "sel", "val")), start)
    runs: dict[str, Any] = {}
    for seed in recipe["pretrain_seeds"]:
        encoders, report, chosen = build_encoders(recipe, data_root, work / f"seed{seed}",
                                                  threads, seed=seed)
        log(f"seed {seed}: encoders built by the package pipeline: {chosen['seconds']}", start)
        sweep = {}
        for lam in lams:
            res = probe_encoder(encoder_state(encoders[sweep_name(lam)], size), inputs, probes,
                                ("sel", "val"))
            sweep[f"{lam:g}"] = res
            log(f"seed {seed}: λ {lam:g}: " + ", ".join(
                f"{t} sel {np.mean([r[HEADLINE[t]] for r in res['sel'][t]]):.3f} val "
                f"{np.mean([r[HEADLINE[t]] for r in res['val'][t]]):.3f}" for t in HEADLINE),
                start)
        runs[str(seed)] = {"sweep": sweep, "evl_report": report,
                           "evl_choice": chosen["evl_choice"], "seconds": chosen["seconds"],
                           "table": {}}
    lam, selection_scores = choose_lambda(runs, lams)
    log(f"λ chosen on the selection images: {lam:g} ({selection_scores})", start)
    for seed in recipe["pretrain_seeds"]:
        sw = work / f"seed{seed}"
        out = sw / "momo"
        encoders: dict[str, Path | None] = {"scratch": None, "base": out / "base" /
                                             "encoder.bundle"}
        for sensor in SENSORS:
            encoders[f"{sensor}-only"] = out / sensor / "encoder.bundle"
        encoders["joint"] = out / "joint" / "encoder.bundle"
        encoders.update(merge_rows(recipe, out, sw, lam))
        table = runs[str(seed)]["table"]
        for name in ENCODER_ROWS:
            if name == "evl-merge":
                table[name] = runs[str(seed)]["sweep"][f"{lam:g}"]["val"]
                continue
            t = time.perf_counter()
            table[name] = probe_encoder(encoder_state(encoders[name], size, seed), inputs,
                                        probes)["val"]
            log(f"seed {seed}: probed {name}: " + ", ".join(
                f"{task} {cell([r[HEADLINE[task]] for r in rs])}"
                for task, rs in table[name].items()) + f" ({time.perf_counter() - t:.0f} s)",
                start)
    state = {"runs": runs, "chosen_lam": lam, "selection_scores": selection_scores,
            "recipe": recipe, "joint_samples": recipe["pretrain"].get(
                "joint_samples", 3 * recipe["pretrain"]["sensor_samples"]),
            "splits": {t: {s: len(data[t + k].images) for s, k in
                           (("train", ""), ("sel", ":sel"), ("val", ":val"))}
                       for t in TASK_FOLDERS}}
    if recipe.get("random_base"):
        add_random_base(state, data, data_root, work, threads, start)
    return state


RANDOM_BASE = "evl-merge-random-base"


def add_random_base(state: dict[str, Any], data: dict[str, TaskData], data_root: Path,
                    work: Path, threads: int, start: float) -> None:
    """The base's effect (issue 12, item 2): per pretraining seed, the sensor runs and their
    EVL merge at the chosen λ again, continued from a base of one batch of MAE steps (in effect
    the seeded random initialisation) instead of the pretrained base; probed as every row."""
    from momo_geo.training.pipeline import run_momo

    recipe, lam = state["recipe"], state["chosen_lam"]
    probes, size = recipe["probes"], recipe["probes"]["img_size"]
    inputs = probe_inputs(data, probes)
    for seed, run in state["runs"].items():
        kwargs = pipeline_kwargs(recipe, data_root, threads)
        kwargs.update(seed=int(seed), base_samples=kwargs["batch_size"], joint_samples=0,
                      lam=lam, selection="evl", merge_method="task-arithmetic")
        merged = run_momo(work / f"seed{seed}" / "random-base", overwrite=True, **kwargs)
        t = time.perf_counter()
        run["table"][RANDOM_BASE] = probe_encoder(encoder_state(merged, size, int(seed)),
                                                  inputs, probes)["val"]
        log(f"seed {seed}: probed {RANDOM_BASE} ({time.perf_counter() - t:.0f} s)", start)
    state["random_base"] = {"base_samples": recipe["pretrain"]["batch_size"]}


def base_effect(state: dict[str, Any]) -> str:
    """The random-base row against the EVL merge from the pretrained base, per task."""
    parts = []
    for task in HEADLINE:
        pre = mean_ci(scores(state, "evl-merge", task))
        rnd = mean_ci(scores(state, RANDOM_BASE, task))
        parts.append(f"{TASK_NAMES[task]} {pre[0]:.3f} ± {pre[1]:.3f} from the MAE base vs "
                     f"{rnd[0]:.3f} ± {rnd[1]:.3f} from a random one ({_verdict(pre, rnd)})")
    return ("was measured (row *EVL merge from a random base*: the same sensor runs and EVL "
            "merge at the chosen λ, continued from a base of one batch of MAE steps): "
            + "; ".join(parts) + ".")


def rows_of(state: dict[str, Any]) -> tuple[str, ...]:
    """The table's rows: every encoder row, and the random-base merge when it was run."""
    return ENCODER_ROWS + ((RANDOM_BASE,) if state.get("random_base") else ())


def write_results_page(state: dict[str, Any], results: Path) -> None:
    """docs/results.md: its comparison section re-rendered from ``state`` (the rest of the
    page is training/report_models.py's)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from training.report_models import write_comparison_section

    write_comparison_section(results, state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--work", default=str(ROOT / "build" / "reproduce"))
    parser.add_argument("--quick", action="store_true",
                        help="the recipe's 'quick' sizes (minutes); writes only to --work")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY.PATH=VALUE", help="override a recipe value (repeatable)")
    parser.add_argument("--render-only", action="store_true",
                        help="re-render comparison.md and results.md from the last run's "
                             "state (docs/comparison.json; with --quick, --work/state.json)")
    parser.add_argument("--add-random-base", action="store_true",
                        help="add only the random-base row to the last run's state (its "
                             "recipe, seeds and λ), then re-render")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared CPU more threads fight and crawl)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    work, data_root = Path(args.work), Path(args.data)
    docs = work if args.quick else ROOT / "docs"
    state_path = docs / ("state.json" if args.quick else "comparison.json")
    weights_dir = ROOT / "momo_geo" / "weights"
    if args.render_only or args.add_random_base:
        if not state_path.is_file():
            print(f"Error: no comparison state {state_path}; run `make reproduce` first",
                  file=sys.stderr)
            return 1
        state = json.loads(state_path.read_text())
        if args.add_random_base:
            probes = state["recipe"]["probes"]
            data = load_data(data_root, probes["selection_fraction"],
                             probes.get("selection_seed", 1))
            t = time.perf_counter()
            add_random_base(state, data, data_root, work, args.threads, start)
            state["seconds"] += time.perf_counter() - t
            state["recipe"]["random_base"] = True
            _write_atomic(state_path, json.dumps(state, indent=1) + "\n")
    else:
        recipe = load_recipe(args.recipe)
        if args.quick:
            recipe = merged(recipe, recipe.get("quick", {}))
        for item in args.overrides:
            apply_override(recipe, item)
        probes = recipe["probes"]
        data = load_data(data_root, probes["selection_fraction"], probes.get("selection_seed", 1))
        command = "python training/reproduce.py" + (" --quick" if args.quick else "")
        log(f"{command}: data {data_root}, pretraining seeds {recipe['pretrain_seeds']}, "
            f"pretrain {json.dumps(recipe['pretrain'])}, probes {json.dumps(probes)}", start)
        work.mkdir(parents=True, exist_ok=True)
        state = comparison(recipe, data, data_root, work, args.threads, start)
        state.update(command=command, seconds=time.perf_counter() - start,
                     baselines=trivial_baselines(data))
        _write_atomic(state_path, json.dumps(state, indent=1) + "\n")
        log(f"wrote {state_path}", start)
    sample_iou = None
    if not args.quick:
        try:
            sample_iou = sample_scene_iou(work)
        except Exception as exc:  # noqa: BLE001 - the comparison must still be written
            print(f"sample scene not mapped: {exc}", file=sys.stderr)
    _write_atomic(docs / "comparison.md",
                  render_results(state, bundled_cards(weights_dir), sample_iou))
    write_results_page(state, docs / "results.md")
    log(f"wrote {docs / 'comparison.md'} and {docs / 'results.md'}", start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
