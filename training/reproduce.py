"""The paper's comparison in miniature, on the package's one pretraining pipeline.

    python training/reproduce.py            # or: make reproduce (about half an hour on 2 cores)
    python training/reproduce.py --quick    # a smoke run (minutes), writes to build/ only
    python training/reproduce.py --render-only   # rewrite docs/comparison.md from the last run

The settings live in ``training/recipes/comparison.json`` (``--quick`` applies its ``quick``
part; ``--set KEY.PATH=VALUE`` overrides any value). Stages (seeds fixed; each prints its time):

1. Encoders, all from :mod:`momo_geo.training` — the code ``momo-geo pretrain | evl | merge``
   runs: :func:`momo_geo.training.pipeline.run_momo` trains the **base** (all sensors), one
   continuation per sensor (**HiRISE-only**, **CTX-only**, **THEMIS-only**, validation loss at
   every checkpoint on one common all-sensor set), the **joint** baseline (all sensors from the
   base, the compute of the three runs together), selects checkpoints by EVL and merges them
   (**EVL merge**); :func:`momo_geo.merge.recipe.merge_checkpoints` adds the **naive merge**
   (last checkpoints) and **EVL + TIES**. Plus **scratch** (a random encoder).
2. Each encoder is scored on the three tasks (landmarks, CTX craters, THEMIS craters) with the
   frozen-encoder protocol of :mod:`momo_geo.training.probes`, several seeds per cell: a linear
   classifier on the pooled features, a linear per-token crater probe (Dice+CE), both trained
   on cached features; validation images cut into non-overlapping tiles.
3. ``docs/comparison.md``: the table (mean ± 95 % t-interval over seeds), the EVL selection report,
   the bundled models' validation metrics as their cards record them (``make models`` builds
   the bundles from ``training/recipes/{crater-seg,landmarks}.json``), the sample-scene IoU of
   the default crater model, the command, date, machine and an honest reading.
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
                "naive-merge", "evl-merge", "evl-ties")
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
                   threads: int | None = None, verbose: bool = True
                   ) -> tuple[dict[str, Path | None], str, dict[str, Any]]:
    """Stage 1: every encoder of the comparison as a bundle path (``None``: scratch), the EVL
    report and what the run chose (for comparison.md)."""
    from momo_geo.merge.evl import read_val_log, select_checkpoints
    from momo_geo.merge.recipe import merge_checkpoints
    from momo_geo.training.pipeline import run_momo

    kwargs = pipeline_kwargs(recipe, data_root, threads)
    if not kwargs.get("joint_samples"):
        kwargs["joint_samples"] = 3 * kwargs["sensor_samples"]  # the three runs' compute
    out = work / "momo"
    evl_merge = run_momo(out, overwrite=True, verbose=verbose, **kwargs)
    base = out / "base" / "encoder.bundle"
    encoders: dict[str, Path | None] = {"scratch": None, "base": base}
    for sensor in SENSORS:
        encoders[f"{sensor}-only"] = out / sensor / "encoder.bundle"
    encoders["joint"] = out / "joint" / "encoder.bundle"
    logs = {s: read_val_log(out / s) for s in SENSORS}
    for name, spec in recipe["merges"].items():
        selection = select_checkpoints(logs, spec.get("selection", "evl"))
        encoders[name] = merge_checkpoints(
            base, selection.paths, work / f"{name}.bundle", spec["method"], spec.get("lam"),
            spec.get("trim", 0.2), selection, overwrite=True, name=f"momo-{name}")
    encoders["evl-merge"] = evl_merge
    chosen = select_checkpoints(logs, kwargs.get("selection", "evl"))
    return encoders, (out / "evl_report.txt").read_text().rstrip(), {
        "evl_choice": {s: c.checkpoint for s, c in chosen.chosen.items()},
        "seconds": json.loads((out / "pipeline.json").read_text())["seconds"]}


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


def probe_inputs(data: dict[str, TaskData], probes: dict[str, Any]) -> dict[str, Any]:
    """The fixed chips and validation tiles every encoder is probed on."""
    from momo_geo.training.finetune import Recipe
    from momo_geo.training.probes import grid_tiles
    from momo_geo.training.task_data import crater_chips, normalise, resize_crops

    size, grey = probes["img_size"], Recipe(in_chans=1)
    rng = np.random.default_rng(7)
    lm, lm_val = data["landmarks"], data["landmarks:val"]
    inputs: dict[str, Any] = {"landmarks": (
        normalise(resize_crops(lm.images, size), grey),
        torch.tensor(lm.targets), normalise(resize_crops(lm_val.images, size), grey),
        np.array(lm_val.targets))}
    for task in ("ctx-craters", "themis-craters"):
        raw, mask = crater_chips(data[task], probes["train_chips"], size, rng)
        side = probes["themis_val_side"] if task == "themis-craters" else probes.get("val_side")
        vraw, vmask, owner = grid_tiles(data[f"{task}:val"], size, side)
        inputs[task] = (normalise(raw, grey), mask, normalise(vraw, grey),
                        (vmask, np.array(owner)))
    return inputs


def probe_encoder(state: dict[str, torch.Tensor], inputs: dict[str, Any],
                  probes: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Scores of one encoder on the three tasks, one report per seed."""
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
    results: dict[str, list[dict[str, Any]]] = {}
    cls = ViTClassifier(copy.deepcopy(encoder), 8)
    x, y, vx, vy = inputs["landmarks"]
    f, vf = probe_features(cls, x), probe_features(cls, vx)
    results["landmarks"] = []
    for seed in range(probes["seeds"]):
        torch.manual_seed(seed)
        head = LinearProbe(f.shape[1], 8)
        train_head(head, f, y, probes["steps_cls"], seed, size, "ce")
        pred = head_predict(head, vf, size).numpy()
        results["landmarks"].append(classification_report(vy, pred, 8, n_boot=200))
    seg = ViTSegmenter(encoder, 2, 1)
    for task in ("ctx-craters", "themis-craters"):
        x, y, vx, (vmask, owner) = inputs[task]
        f, vf = probe_features(seg, x), probe_features(seg, vx)
        results[task] = []
        for seed in range(probes["seeds"]):
            torch.manual_seed(seed)
            head = TokenProbe(f[0].shape[1], len(f))
            train_head(head, f, y, probes["steps_seg"], seed, size, "dice_ce", batch=64)
            pred = head_predict(head, vf, size).numpy()
            counts = np.zeros((owner.max() + 1, 3), dtype=np.int64)
            for k in range(len(pred)):
                counts[owner[k]] += pixel_counts(pred[k], vmask[k].numpy())
            results[task].append(segmentation_report(counts, n_boot=200))
    return results


# ----------------------------------------------------------------------------- report


def trivial_baselines(data: dict[str, TaskData]) -> dict[str, dict[str, float]]:
    """What a model that learned nothing scores: the majority landmark class everywhere, and
    "crater" on every pixel (its IoU is the crater fraction). The table must beat these."""
    val = data["landmarks:val"]
    counts = np.bincount(data["landmarks"].targets, minlength=len(val.classes))
    majority = classification_report(val.targets, [int(counts.argmax())] * len(val.targets),
                                     len(val.classes), n_boot=0)
    out = {"landmarks": majority}
    for task in ("ctx-craters", "themis-craters"):
        rows = [pixel_counts(np.ones_like(m), m) for m in data[f"{task}:val"].targets]
        out[task] = segmentation_report(np.array(rows), n_boot=0)
    return out


def check_splits(data: dict[str, TaskData]) -> None:
    for task in TASK_FOLDERS:
        shared = set(data[task].groups) & set(data[f"{task}:val"].groups)
        if shared:
            raise SystemExit(f"{task}: train and val share {sorted(shared)[:3]}")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def rank_encoders(table: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """Encoders by mean rank over the three tasks' headline metric (ties: crater IoU)."""
    names = list(table)
    ranks = np.zeros(len(names))
    for task, metric in (("landmarks", "f1_weighted"), ("ctx-craters", "iou"),
                         ("themis-craters", "iou")):
        scores = [-np.mean([r[metric] for r in table[n][task]]) for n in names]
        ranks += np.argsort(np.argsort(scores))
    return [names[i] for i in np.argsort(ranks, kind="stable")]


def render_results(state: dict[str, Any], cards: dict[str, Any], sample_iou: float | None,
                   baselines: dict[str, dict[str, float]] | None = None) -> str:
    """docs/comparison.md from a comparison run's ``state`` and the bundled models' ``cards``."""
    from momo_geo import __version__

    table, pre, probes = state["table"], state["recipe"]["pretrain"], state["recipe"]["probes"]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), "
               f"torch {torch.__version__}, {torch.get_num_threads()} threads, no GPU")
    ties = state["recipe"]["merges"].get("evl-ties", {})
    lines = [
        "# Results: MOMO's comparison in miniature, and the bundled default models",
        "",
        f"Generated by `{state['command']}` on {now} ({machine}; momo-geo {__version__}). "
        f"Comparison wall time: **{state['seconds'] / 60:.1f} min**. Do not edit by hand: "
        "rerun the command (`make reproduce`; `make models` rebuilds the bundles and re-renders "
        "this page).",
        "",
        "Data: `../shared/data` (see its README): HiRISE landmark crops (Wagstaff et al., Zenodo "
        "10.5281/zenodo.2538136), CTX tiles of the Mars Crater Catalogue (CC BY 4.0), THEMIS "
        "crops with Robbins & Hynek boxes (Apache-2.0). Validation splits: landmarks by HiRISE "
        "product_id, CTX by tile, THEMIS by crop; checked disjoint before training.",
        "",
        "## Set-up (sizes chosen to fit a shared 2-core CPU)",
        "",
        f"- Encoder: ViT-Tiny (192 wide, 12 blocks), patch 16, **{pre['img_size']} px chips**, "
        "MAE mask ratio 0.75, light decoder (128 wide, 2 blocks). Pretraining is "
        "`momo_geo.training.pipeline.run_momo` — the code `momo-geo pretrain | evl | merge` runs "
        "— with the settings of `training/recipes/comparison.json`.",
        f"- Pretraining chips from the *training* splits only (labels unused), "
        f"{pre['pool_size']} per sensor, normalised per sensor, random flips and quarter turns, "
        f"masks seeded per chip: base {pre['base_samples']} samples (all sensors), each "
        f"single-sensor run {pre['sensor_samples']} (continued from base, a checkpoint every "
        f"{pre['checkpoint_every']} samples), joint {state['joint_samples']} (all sensors from "
        f"base, the three runs' compute), batch {pre['batch_size']}, AdamW lr "
        f"{pre.get('lr', 'scaled')}, warm-up + cosine.",
        f"- Merges: task arithmetic θ_base + {pre.get('lam', 0.5)}·Σ τ_s (MOMO's λ); TIES keeps "
        f"the top {ties.get('trim', 0.2):.0%} of each task vector, elects signs, disjoint mean, "
        f"λ = {ties.get('lam', 1.0)}.",
        f"- Scoring protocol (every cell): frozen encoder, {probes['seeds']} seeds. Landmarks: a "
        f"LayerNorm + linear classifier on mean-pooled tokens ({probes['steps_cls']} steps, "
        "CE). Craters: a linear per-token probe on 4 block features (blocks 3, 6, 9, 12), "
        f"upsampled to pixels, Dice+CE, {probes['steps_seg']} steps on {probes['train_chips']} "
        f"fixed training chips. Validation images cut into non-overlapping {probes['img_size']} "
        f"px tiles (THEMIS: the top-left {probes['themis_val_side']} px of each crop). Cells: "
        "mean ± half-width of the 95 % t-interval over seeds.",
        "",
        "## The comparison",
        "",
        "| encoder | Landmarks F1 (weighted) | Landmarks F1 (macro) | CTX crater IoU | "
        "CTX IoU per image | THEMIS crater IoU | THEMIS IoU per image |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ENCODER_ROWS:
        r = table[name]
        lines.append(f"| {name} | {cell(r['landmarks'], 'f1_weighted')} | "
                     f"{cell(r['landmarks'], 'f1_macro')} | {cell(r['ctx-craters'], 'iou')} | "
                     f"{cell(r['ctx-craters'], 'iou_per_image_mean')} | "
                     f"{cell(r['themis-craters'], 'iou')} | "
                     f"{cell(r['themis-craters'], 'iou_per_image_mean')} |")
    if baselines:
        b = baselines
        lines.append(f"| *trivial (majority class / all crater)* | "
                     f"{b['landmarks']['f1_weighted']:.3f} | {b['landmarks']['f1_macro']:.3f} | "
                     f"{b['ctx-craters']['iou']:.3f} | "
                     f"{b['ctx-craters']['iou_per_image_mean']:.3f} | "
                     f"{b['themis-craters']['iou']:.3f} | "
                     f"{b['themis-craters']['iou_per_image_mean']:.3f} |")
    lines += ["", "Paper (ViT-B, full Mars-Bench, full fine-tuning), for scale only: Landmark F1 "
              ".91, CraterBinary mIoU .54, ConeQuest .71; EVL / last-epoch / early-stopping "
              "merge .54 / .50 / .50 on CraterBinary.", "",
              f"Encoders by mean rank over the three tasks: {', '.join(rank_encoders(table))}.",
              "", "## EVL checkpoint selection", "",
              f"Validation loss of every checkpoint on {pre['val_size']} chips per sensor "
              "(fixed masks), drawn from the training splits with a seed of their own (they are "
              "not image-disjoint from the pretraining chips). The selection rule is named in "
              "the report's first line: the paper's EVL rule compares each run's loss on its own "
              "sensor's chips (`val_loss_SENSOR`), the min-spread rule the loss on all sensors' "
              "chips; `*` marks the choice, `E` each sensor's early-stopping checkpoint. "
              "Validation images play no part in the selection.", "",
              "```", state["evl_report"], "```", ""]
    lines += reading(table, baselines)
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


def reading(table: dict[str, Any], baselines: dict[str, dict[str, float]] | None = None
            ) -> list[str]:
    """The honest reading, computed from the table (so it cannot contradict it)."""
    def score(name: str, task: str) -> tuple[float, float]:
        metric = "f1_weighted" if task == "landmarks" else "iou"
        return mean_ci([r[metric] for r in table[name][task]])

    out = ["## Reading", ""]
    for task in ("landmarks", "ctx-craters", "themis-craters"):
        evl_m, evl_h = score("evl-merge", task)
        rows = []
        for other in ENCODER_ROWS:
            if other == "evl-merge":
                continue
            m, h = score(other, task)
            if evl_m - evl_h > m + h:
                verdict = "EVL merge better"
            elif evl_m + evl_h < m - h:
                verdict = "EVL merge worse"
            else:
                verdict = "overlapping intervals"
            rows.append(f"{other} {m:.3f} ({verdict})")
        out.append(f"- **{task}**: EVL merge {evl_m:.3f} ± {evl_h:.3f}; " + "; ".join(rows) + ".")
    out.append("")
    for task in ("landmarks", "ctx-craters", "themis-craters") if baselines else ():
        metric = "f1_weighted" if task == "landmarks" else "iou"
        floor = baselines[task][metric]
        above = [n for n in ENCODER_ROWS if score(n, task)[0] - score(n, task)[1] > floor]
        out.append(f"- {task}: trivial score {floor:.3f}; rows clearly above it (whole "
                   f"interval): {', '.join(above) if above else 'none'}.")
    own = {"landmarks": "hirise-only", "ctx-craters": "ctx-only",
           "themis-craters": "themis-only"}
    for task, single in own.items():
        best = max(ENCODER_ROWS, key=lambda n: score(n, task)[0])
        s_m, _ = score(single, task)
        b_m, _ = score("base", task)
        out.append(f"- {task}: best row **{best}** ({score(best, task)[0]:.3f}); the "
                   f"{single} encoder {'beats' if s_m > b_m else 'does not beat'} the base it "
                   f"continued from ({s_m:.3f} vs {b_m:.3f}).")
    for task in own:
        e_m, n_m = score("evl-merge", task)[0], score("naive-merge", task)[0]
        t_m = score("evl-ties", task)[0]
        out.append(f"- {task}: EVL merge {e_m:.3f} vs naive (last-checkpoint) merge {n_m:.3f} "
                   f"vs EVL + TIES {t_m:.3f}.")
    out += ["", "What this run can and cannot say: the encoders saw one pass over a few "
            "thousand 64 px chips (minutes of one CPU core, against MOMO's days of GPU on "
            "millions of tiles), so their task vectors are short; merging has little to "
            "reconcile and small differences between rows are within seed noise. A frozen "
            "probe reads the representation directly, but the seeds vary only the head, not "
            "pretraining, so the intervals understate the run-to-run variance of pretraining. "
            "Where scratch is close to the pretrained rows, the pretraining budget, not the "
            "merge, is the limit. The paper's ranking needs the paper's scale to be tested."]
    return out


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


# ----------------------------------------------------------------------------- report


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval over seeds."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(half)


def cell(results: list[dict[str, Any]], metric: str) -> str:
    m, h = mean_ci([r[metric] for r in results])
    return f"{m:.3f} ± {h:.3f}"


def bundled_cards(weights_dir: Path) -> dict[str, Any]:
    """The cards of the bundled models that exist in ``weights_dir``."""
    cards = {}
    for name in BUNDLED:
        path = weights_dir / f"{name}.bundle" / "card.json"
        if path.is_file():
            cards[name] = json.loads(path.read_text())
    return cards


def load_data(data_root: Path) -> dict[str, TaskData]:
    data: dict[str, TaskData] = {}
    for task, folder in TASK_FOLDERS.items():
        data[task] = load_task_data(task, str(data_root / folder), "train")
        data[f"{task}:val"] = load_task_data(task, str(data_root / folder), "val")
    check_splits(data)
    return data


def comparison(recipe: dict[str, Any], data: dict[str, TaskData], data_root: Path, work: Path,
               threads: int, start: float) -> dict[str, Any]:
    """Stages 1 and 2: the encoders and their probe scores (the state comparison.md renders)."""
    encoders, evl_report, chosen = build_encoders(recipe, data_root, work, threads)
    log(f"encoders built by the package pipeline: {chosen['seconds']}", start)
    probes = recipe["probes"]
    inputs = probe_inputs(data, probes)
    table = {}
    for name in ENCODER_ROWS:
        t = time.perf_counter()
        table[name] = probe_encoder(encoder_state(encoders[name], probes["img_size"]), inputs,
                                    probes)
        log(f"probed {name}: " + ", ".join(
            f"{task} {cell(r, 'f1_weighted' if task == 'landmarks' else 'iou')}"
            for task, r in table[name].items()) + f" ({time.perf_counter() - t:.0f} s)", start)
    return {"table": table, "evl_report": evl_report, "evl_choice": chosen["evl_choice"],
            "recipe": recipe, "joint_samples": recipe["pretrain"].get(
                "joint_samples", 3 * recipe["pretrain"]["sensor_samples"])}


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
                        help="rewrite docs/comparison.md from the last run's state.json in --work "
                             "and the bundled models' cards")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared CPU more threads fight and crawl)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    work, data_root = Path(args.work), Path(args.data)
    results_path = work / "comparison.md" if args.quick else ROOT / "docs" / "comparison.md"
    weights_dir = ROOT / "momo_geo" / "weights"
    data = load_data(data_root)
    baselines = trivial_baselines(data)
    if args.render_only:
        state_path = work / "state.json"
        if not state_path.is_file():
            print(f"Error: no comparison in {work} (state.json); run `make reproduce` first",
                  file=sys.stderr)
            return 1
        state = json.loads(state_path.read_text())
    else:
        recipe = load_recipe(args.recipe)
        if args.quick:
            recipe = merged(recipe, recipe.get("quick", {}))
        for item in args.overrides:
            apply_override(recipe, item)
        command = "python training/reproduce.py" + (" --quick" if args.quick else "")
        log(f"{command}: data {data_root}, recipe {json.dumps(recipe['pretrain'])}", start)
        work.mkdir(parents=True, exist_ok=True)
        state = comparison(recipe, data, data_root, work, args.threads, start)
        state.update(command=command, seconds=time.perf_counter() - start)
        (work / "state.json").write_text(json.dumps(state))
    sample_iou = None if args.quick else sample_scene_iou(work)
    text = render_results(state, bundled_cards(weights_dir), sample_iou, baselines)
    _write_atomic(results_path, text)
    log(f"wrote {results_path}", start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
