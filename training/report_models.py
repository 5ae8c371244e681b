"""Choose the bundled models among the comparison arms, and write ``docs/results.md``.

    python training/report_models.py --bundles build/models/bundles --promote

The arms (``training/recipes/craters-*.json``, ``landmarks-*.json``) are built by
``training/build_models.py`` with equal CPU budgets. Each selection recipe
(``training/recipes/crater-seg.json``, ``landmarks.json``) names its arms and a criterion; the
arm with the best criterion on its *selection* images (the last point of its learning curve,
at a crater arm's confidence floor; images held out of training, never the validation split)
becomes the bundled model (``--promote`` copies it into ``momo_geo/weights/``).
``docs/results.md`` then reports every arm on the validation split with its bootstrap interval,
its learning curve, and the targets of the project's model issue. Nothing in it is written by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from operator import itemgetter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "training" / "recipes"
CARDS = ROOT / "training" / "cards"
"""Recorded cards of built arms (``training/build_models.py``), read where a bundle is gone."""
SELECTIONS = ("crater-seg.json", "landmarks.json")
DATA = ROOT.parent / "shared" / "data"
TARGETS = {
    "themis-craters": {"iou": 0.40, "crater_f1": 0.65},
    "ctx-craters": {"crater_f1": 0.50},
    "landmarks": {"f1_weighted": 0.80, "f1_macro": 0.45},
}
"""The targets of the model issue, on the validation splits."""


def load_cards(bundles: Path, names: list[str], recorded: Path = CARDS
               ) -> dict[str, dict[str, Any]]:
    """Each arm's card: its built bundle's, else its recorded card (arms with neither are
    left out)."""
    cards = {}
    for name in names:
        for path in (bundles / f"{name}.bundle" / "card.json", recorded / f"{name}.json"):
            if path.is_file():
                cards[name] = json.loads(path.read_text())
                break
    return cards


def chosen_gate(calibration: dict[str, Any]) -> dict[str, Any]:
    """The sweep row of the chosen floor and smallest size (cards calibrated before sizes
    existed have one row per floor and no size)."""
    size = calibration.get("min_diameter", 0.0)
    return next(r for r in calibration["sweep"] if r["floor"] == calibration["floor"]
                and r.get("min_diameter", 0.0) == size)


SCORING_RULE_CHANGED = "2026-11-30T04:15:00+00:00"
"""Since then crater scoring counts every predicted crater (:mod:`momo_geo.metrics`); curve points
of arms trained before dropped predictions under 8 px before matching. Raw maps hold many specks,
so the newer curves read lower at equal skill."""


def old_rule(card: dict[str, Any]) -> bool:
    """Whether a crater arm's learning curve was scored by the rule before the change."""
    return card.get("task") == "segmentation" and card.get("created", "") < SCORING_RULE_CHANGED


def parent_arm(card: dict[str, Any]) -> str:
    """The arm a continued arm started from (its ``init_bundle`` by name; "" for none)."""
    return (card["training"].get("init_bundle") or "").removesuffix(".bundle")


def continue_curves(cards: dict[str, dict[str, Any]]) -> None:
    """Count a continued arm's curve from where its parent's ended (chips seen and minutes),
    in place, so the two read as one schedule; a merged arm's one point counts every chip
    and minute of the runs it merges (:func:`merge_totals`)."""
    for card in cards.values():
        merge_totals(card, cards)
        parent = parent_arm(card)
        start = (cards.get(parent, {}).get("training", {}).get("learning_curve") or [{}])[-1]
        if not parent or not start or card["training"].get("continues"):
            continue
        card["training"]["continues"] = dict(start, arm=parent)
        for point in card["training"].get("learning_curve") or []:
            point["samples"] += start["samples"]
            point["minutes"] = round(point["minutes"] + start["minutes"], 2)


def merge_totals(card: dict[str, Any], cards: dict[str, dict[str, Any]]) -> None:
    """A merged arm's (``merge_of``) point counted in place from its base's end plus what each
    merged run trained past it: the chips and minutes it took to make, at this point of the
    list (the runs come first, so their own curves are already counted from their chains)."""
    merge = card.get("training", {}).get("merge_of")
    if not merge or card["training"].get("continues"):
        return
    ends = [(cards.get(name.removesuffix(".bundle"), {}).get("training", {})
             .get("learning_curve") or [{}])[-1] for name in [merge["base"], *merge["tuned"]]]
    if not all(ends):
        return
    base, runs = ends[0], ends[1:]
    card["training"]["continues"] = dict(base, arm=merge["base"].removesuffix(".bundle"))
    for point in card["training"].get("learning_curve") or []:
        for key in ("samples", "minutes"):
            total = base[key] + sum(run[key] - base[key] for run in runs)
            point[key] = round(point[key] + total, 2) if key == "minutes" else point[key] + total


def merged_runs(arms: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Each merged arm with selection scores, and the runs it merges (all of them here)."""
    out = {}
    for name, card in arms.items():
        merge = card.get("training", {}).get("merge_of")
        runs = [n.removesuffix(".bundle") for n in (merge or {}).get("tuned", [])]
        if runs and all(r in arms for r in runs) and selection_point(card):
            out[name] = runs
    return out


PASS_SCORES = ("iou", "crater_precision", "crater_recall", "crater_f1")
"""The scores a coarse-pass sweep row adds to a selection point (not its pass settings)."""


def selection_point(card: dict[str, Any]) -> dict[str, Any]:
    """The arm's metrics on its selection images as it ships: the last learning-curve point,
    with a crater model's scores at its chosen confidence floor when it has one."""
    training = card.get("training", {})
    curve = training.get("learning_curve") or []
    point = dict(curve[-1]) if curve else {}
    calibration = training.get("calibration")
    if point and calibration:
        chosen = chosen_gate(calibration)
        point.update({k: v for k, v in chosen.items() if k not in ("floor", "score")})
        final = coarse_result(calibration)
        if final:
            point.update({k: final[k] for k in PASS_SCORES if k in final})
    return point


def coarse_result(calibration: dict[str, Any]) -> dict[str, Any] | None:
    """Selection scores with the coarse passes chosen (None: the card has no coarse sweep).
    Passes are added greedily, so sweep ``i`` starts from the first ``i`` passes: its first row
    is the final state when the search stopped early, else the last sweep's best row is."""
    coarse = calibration.get("coarse")
    if not coarse:
        return None
    chosen, sweeps = coarse["chosen"], coarse["sweeps"]
    if len(sweeps) > len(chosen):
        return sweeps[len(chosen)][0]
    return max(sweeps[-1], key=lambda row: row["crater_f1"] + row["iou"])


def selection_score(card: dict[str, Any], criterion: list[str], floor: str = "chosen"
                    ) -> float | None:
    """Mean of the criterion's metrics on the selection images: as the arm ships
    (:func:`selection_point`), or with ``floor="none"`` its raw predictions (the floor-0 row of
    its calibration sweep), where nothing was tuned on those images."""
    point = raw_point(card) if floor == "none" else selection_point(card)
    if not point:
        return None
    return sum(float(point.get(k, 0.0)) for k in criterion) / len(criterion)


def raw_point(card: dict[str, Any], sweep: str = "sweep") -> dict[str, Any]:
    """A classifier's scores without a floor ({} if its card has no such row): on the
    selection crops, or with ``sweep="folds_sweep"`` on a members arm's out-of-fold crops."""
    return no_floor_row((card.get("training", {}).get("calibration") or {}).get(sweep) or [])


def no_floor_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The floor-0 row of a landmark floor sweep ({} if it has none)."""
    return next((row for row in rows if row["floor"] == 0.0), {})


def selection_scores(selection: dict[str, Any], cards: dict[str, dict[str, Any]]
                     ) -> dict[str, float]:
    """Each scored arm of ``choose_from`` (in its order) with its selection score; a selection
    recipe's ``compare_at_floor`` (``"chosen"``, the default, or ``"none"``) says at which
    floor arms are compared."""
    floor = selection.get("compare_at_floor", "chosen")
    if floor not in ("chosen", "none"):
        raise ValueError(f"compare_at_floor must be 'chosen' or 'none', not {floor!r}")
    scored = {name: selection_score(cards[name], selection["criterion"], floor)
              for name in selection["choose_from"] if name in cards}
    return {k: v for k, v in scored.items() if v is not None}


TIE = 5e-5
"""Selection scores closer than this are equal: the cards round each metric to four decimals."""


def choose(selection: dict[str, Any], cards: dict[str, dict[str, Any]],
           guard: dict[str, float] | None = None) -> str | None:
    """The arm of the best selection score among those that pass the selection recipe's
    ``product_guard`` (an arm whose recorded share of crater on the guard scene, ``guard``, is
    above ``max_crater_share`` does not ship, whatever its score; an arm not yet measured
    passes). Scores equal at the cards' four decimals are a tie: the arm with the better
    :func:`out_of_fold_score` wins it, and where that does not decide, the arm listed first in
    ``choose_from``."""
    scored = selection_scores(selection, cards)
    limit = selection.get("product_guard", {}).get("max_crater_share")
    ok = [name for name in scored
          if limit is None or (guard or {}).get(name, 0.0) <= limit]
    if not ok:
        return None
    best = max(scored[name] for name in ok)
    level = [name for name in ok if abs(scored[name] - best) < TIE]
    oof = comparable_out_of_fold(level, cards, selection["criterion"])
    return max(level, key=oof.get)


def comparable_out_of_fold(names: list[str], cards: dict[str, dict[str, Any]],
                           criterion: list[str]) -> dict[str, float]:
    """:func:`out_of_fold_score` of each arm that scored the most out-of-fold crops among
    ``names``, -inf for the rest: an arm that dropped a class from training (too few
    products) scored fewer crops and fewer classes, and its macro mean cannot be set
    against theirs."""
    crops = {name: ((cards[name].get("training", {}).get("calibration") or {})
                    .get("training_crops")) for name in names}
    most = max((n for n in crops.values() if n), default=None)
    return {name: out_of_fold_score(cards[name], criterion) if crops[name] == most
            else -math.inf for name in names}


def out_of_fold_score(card: dict[str, Any], criterion: list[str]) -> float:
    """Mean of the criterion's metrics on a cross-fitted arm's training crops, each scored
    by the member that never saw its product, without a floor (-inf for an arm without
    members): the crops of seven times the selection products, which break a tie that the
    selection crops cannot."""
    point = raw_point(card, "folds_sweep")
    if not point:
        return -math.inf
    return sum(float(point.get(k, 0.0)) for k in criterion) / len(criterion)


GUARD_FILE = ROOT / "docs" / "product_guard.json"
"""Each crater arm's share of crater inside the real HiRISE scene's frame, with its weights'
hash: measured once from its bundle, read back where the bundle is gone."""


def product_guard(selection: dict[str, Any], cards: dict[str, dict[str, Any]],
                  bundles: Path, data: Path = DATA, record: bool = False) -> dict[str, float]:
    """The guard scene's crater share of every arm that could ship ahead of the one that
    passes (best score first): read from :data:`GUARD_FILE` for the same weights, else
    measured where the bundle and scene exist; ``record`` (``--promote``) writes what was
    measured back, so a preview leaves the docs as they are."""
    spec = selection.get("product_guard")
    if not spec:
        return {}
    known = json.loads(GUARD_FILE.read_text()) if GUARD_FILE.is_file() else {}
    shares: dict[str, float] = {}
    scored = selection_scores(selection, cards)
    for name in sorted(scored, key=lambda n: -scored[n]):
        sha = cards[name].get("weights_sha256")
        if known.get(name, {}).get("weights_sha256") != sha:
            bundle, scene = bundles / f"{name}.bundle", data / spec["scene"]
            if not (bundle.is_dir() and scene.is_file()):
                break
            known[name] = {"weights_sha256": sha,
                           "crater_share": round(scene_crater_share(bundle, scene), 4)}
        shares[name] = known[name]["crater_share"]
        if shares[name] <= spec["max_crater_share"]:
            break
    if record:
        GUARD_FILE.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
    return shares


def scene_crater_share(bundle: Path, scene: Path) -> float:
    """Share of a scene's image (its black frame left out) that ``momo-geo map`` marks crater
    with ``bundle``."""
    from momo_geo.inference import map_scene
    from momo_geo.inference.frame import mask_in_frame

    with tempfile.TemporaryDirectory() as tmp:
        map_scene(scene, Path(tmp) / "mask.tif", None, str(bundle), device="cpu")
        mask, inside = mask_in_frame(Path(tmp) / "mask.tif", scene)
    return float((mask[inside] == 1).mean())


def tied(selection: dict[str, Any], cards: dict[str, dict[str, Any]], chosen: str
         ) -> list[str]:
    """The arms whose selection score equals the chosen arm's at the cards' four decimals:
    :func:`choose` broke the tie, and the report says how, since the selection images then
    do not tell those arms apart (the validation split must not)."""
    scored = selection_scores(selection, cards)
    best = scored.get(chosen)
    return [name for name, score in scored.items()
            if name != chosen and best is not None and abs(score - best) < TIE]


def tie_break(selection: dict[str, Any], cards: dict[str, dict[str, Any]], chosen: str,
              twin: str) -> str:
    """How :func:`choose` broke a tie between ``chosen`` and ``twin``, in one sentence."""
    oof = comparable_out_of_fold([chosen, twin], cards, selection["criterion"])
    mine, theirs = oof[chosen], oof[twin]
    if math.isinf(mine) or math.isinf(theirs) or mine == theirs:
        return ("A tie the out-of-fold crops cannot break (the same crops, scored by both) "
                "keeps the arm listed first.")
    metrics = " and ".join(selection["criterion"])
    return (f"The out-of-fold training crops break it: mean of {metrics} {mine:.4f} against "
            f"{theirs:.4f} (no floor).")


def promote(bundles: Path, arm: str, target: Path, card: dict[str, Any]) -> None:
    """Copy an arm's bundle to ``target`` (a bundled model folder), replacing it whole; an arm
    known only by its recorded card must already be the bundled one (same weights)."""
    if not (bundles / f"{arm}.bundle").is_dir():
        shipped = json.loads((target / "card.json").read_text()) if target.is_dir() else {}
        if shipped.get("weights_sha256") != card.get("weights_sha256"):
            raise SystemExit(f"{arm} is chosen but {bundles / (arm + '.bundle')} is not built: "
                             "build it (training/build_models.py) before --promote")
        return
    from momo_geo.bundle import CARD_NAME, WEIGHTS_NAME

    extra = sorted(p.name for p in (bundles / f"{arm}.bundle").iterdir()
                   if p.name not in (CARD_NAME, WEIGHTS_NAME))
    if extra:
        raise SystemExit(f"{bundles / (arm + '.bundle')} holds {', '.join(extra)} beside its "
                         "card and weights; a bundled model ships nothing else")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    shutil.copytree(bundles / f"{arm}.bundle", tmp / "bundle")
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp / "bundle", target)
    shutil.rmtree(old, ignore_errors=True)
    tmp.rmdir()


def rescore(bundle: Path, card: dict[str, Any]) -> None:
    """Score a bundle again on every task its card holds, with the card as it is now."""
    from momo_geo.training.finetune import score_bundle
    from momo_geo.training.recipes import TASK_FOLDERS

    tasks = [t for t in card["metrics"] if t in TASK_FOLDERS]
    score_bundle(bundle, [(t, str(DATA / TASK_FOLDERS[t])) for t in tasks])


def fmt(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "–"
    ci = metrics.get(f"{key}_ci")
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


POINT_KEYS = ("epoch", "samples", "minutes", "members")
"""Where a learning-curve point lies (members: cross-fitted members so far), not a score."""


def arm_encoder(card: dict[str, Any]) -> str:
    """What an arm's network started from: a MOMO encoder (``momo``, ``base``), random weights
    (``scratch``), a CNN with no encoder, or another arm's U-Net (transfer)."""
    start = card["training"].get("finetune_from") or "scratch"
    if start.endswith(".bundle"):
        return f"`{start.removesuffix('.bundle')}` (transfer)"
    if card["architecture"]["kind"] in ("unet", "cnn_cls", "unet_cls"):
        return "none (CNN)"
    return start


def arm_rows(cards: dict[str, dict[str, Any]], task_keys: dict[str, list[str]]) -> list[str]:
    head = ["arm", "network", "encoder", "train min", "chips seen", "selection"]
    cols = [f"{task} {key}" for task, keys in task_keys.items() for key in keys]
    lines = ["| " + " | ".join(head + cols) + " |", "|" + "---|" * (len(head) + len(cols))]
    for name, card in cards.items():
        training = card["training"]
        last = selection_point(card)
        sel = ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k not in POINT_KEYS)
        encoder = arm_encoder(card)
        members = card["architecture"].get("members", 1)
        network = card["architecture"]["kind"] + (f" × {members}" if members > 1 else "")
        network += " + D4 turns" if card.get("tta") == "d4" else ""
        row = [name, network, encoder,
               f"{training['seconds'] / 60:.0f}", str(last.get("samples", "–")), sel]
        row += [fmt(card["metrics"].get(task, {}), key)
                for task, keys in task_keys.items() for key in keys]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def landmark_floor_rows(cards: dict[str, dict[str, Any]]) -> list[str]:
    """Each landmark arm's floor, what chose it, and weighted / macro F1 without it and at it:
    on the selection products and, for cross-fitted members, on their out-of-fold crops."""
    lines = ["| arm | floor | chosen on | selection (none → floor) | "
             "out-of-fold training crops (none → floor) |", "|---|---|---|---|---|"]

    def change(sweep: list[dict[str, float]], floor: float) -> str:
        none = sweep[0]
        at = next(r for r in sweep if r["floor"] == floor)
        return (f"{none['f1_weighted']:.3f} / {none['f1_macro']:.3f} → "
                f"{at['f1_weighted']:.3f} / {at['f1_macro']:.3f}")

    for name, card in cards.items():
        calibration = card["training"].get("calibration")
        if not calibration:
            continue
        floor, folds = calibration["floor"], calibration.get("folds_sweep")
        where = (f"{calibration['training_crops']:,} out-of-fold crops" if folds
                 else f"{calibration['selection_images']} selection crops")
        lines.append(f"| {name} | {floor:g} | {where} | {change(calibration['sweep'], floor)} | "
                     f"{change(folds, floor) if folds else '–'} |")
    return lines


def floor_rows(cards: dict[str, dict[str, Any]]) -> list[str]:
    """Each crater arm's confidence floor: the sweep on its selection images, no floor
    against the floor chosen."""
    lines = ["| arm | floor chosen | smallest size (px) | selection F1 (none → chosen) "
             "| precision | recall | pixel IoU |", "|---|---|---|---|---|---|---|"]
    for name, card in cards.items():
        calibration = card["training"].get("calibration")
        if not calibration:
            continue
        none, chosen = calibration["sweep"][0], chosen_gate(calibration)
        cells = [f"{none[k]:.3f} → {chosen[k]:.3f}" for k in
                 ("crater_f1", "crater_precision", "crater_recall", "iou")]
        lines.append(f"| {name} | {calibration['floor']:.2f} | "
                     f"{calibration.get('min_diameter', 0):g} | {' | '.join(cells)} |")
    return lines


def coarse_rows(cards: dict[str, dict[str, Any]]) -> list[str]:
    """Each crater arm's coarse passes (:mod:`momo_geo.inference.coarse`), chosen on its
    selection images at its floor: the fine pass alone against fine + coarse passes."""
    lines = ["| arm | coarse passes (scale, smallest diameter px, floor, roundness) | selection F1 "
             "(fine → with passes) | precision | recall | pixel IoU |",
             "|---|---|---|---|---|---|"]
    for name, card in cards.items():
        calibration = card["training"].get("calibration") or {}
        final = coarse_result(calibration)
        if final is None:
            continue
        fine = calibration["coarse"]["sweeps"][0][0]
        passes = "; ".join(
            f"1/{round(1 / p['scale'])}, {p['min_diameter']:g}, {p['min_confidence']:.2f}, "
            + (f"residual ≤ {p['max_residual']:g}" if p.get("max_residual") else "any shape")
            for p in calibration["coarse"]["chosen"])
        cells = [f"{fine[k]:.3f} → {final[k]:.3f}" for k in
                 ("crater_f1", "crater_precision", "crater_recall", "iou")]
        lines.append(f"| {name} | {passes or 'none'} | {' | '.join(cells)} |")
    return lines


def curve_rows(cards: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| arm | epoch | chips seen | minutes | selection metrics |", "|---|---|---|---|---|"]
    for name, card in cards.items():
        for point in card["training"].get("learning_curve") or []:
            metrics = ", ".join(f"{k} {v:.3f}" for k, v in point.items()
                                if k not in POINT_KEYS)
            members = point.get("members")
            epoch = f"{point['epoch']}" + (f" ({members} member{'s' * (members > 1)})"
                                           if members else "")
            lines.append(f"| {name} | {epoch} | {point['samples']} | "
                         f"{point['minutes']:.1f} | {metrics} |")
    return lines


CURVE_PANELS = (("craters", "crater_f1", "themis-craters", "crater F1"),
                ("craters", "iou", "themis-craters", "crater pixel IoU"),
                ("landmarks", "f1_weighted", "landmarks", "weighted F1"),
                ("landmarks", "f1_macro", "landmarks", "macro F1"))
"""The learning-curve panels: arms' prefix, score, validation task, label. Each panel pairs a
selection score with the validation score that the model issue sets a target for."""


def plot_curves(cards: dict[str, dict[str, Any]], out: Path) -> None:
    """Write :func:`curve_figure` to ``out``."""
    import matplotlib.pyplot as plt

    fig = curve_figure(cards)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def curve_figure(cards: dict[str, dict[str, Any]]) -> Any:
    """Selection score against training minutes, one panel per score (:data:`CURVE_PANELS`),
    with each arm's validation score as shipped and the issue's target beside its curve, so
    the figure shows where a target stands against the plateau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    palette = plt.get_cmap("tab20")  # up to 20 arms a panel, each its own colour
    colours = {}
    for prefix in {panel[0] for panel in CURVE_PANELS}:
        arms = [name for name in cards if name.startswith(prefix)]
        colours.update({name: palette(i % 20) for i, name in enumerate(arms)})
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    for ax, (prefix, key, task, label) in zip(axes.flat, CURVE_PANELS, strict=True):
        for name, card in cards.items():
            if name.startswith(prefix):
                curve_panel(ax, card, key, task, name, colours[name])
        goal = TARGETS.get(task, {}).get(key)
        if goal is not None:
            ax.axhline(goal, color="black", ls=":", lw=1)
            ax.annotate(f"target {goal:.2f}", (0.01, goal),
                        xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
        ax.set_title(f"{label} ({task})", fontsize=9)
        ax.set_xlabel("training minutes (one CPU thread, curve scoring included)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if key in ("crater_f1", "f1_weighted"):
            ax.legend(fontsize=7)
    fig.suptitle("lines: selection images, raw maps (dashed: every speck counts); "
                 "★ selection as shipped; ◆ validation as shipped; dotted: the issue's target "
                 "(validation)", fontsize=9)
    fig.tight_layout()
    return fig


def curve_panel(ax: Any, card: dict[str, Any], key: str, task: str, name: str,
                colour: str) -> None:
    """One arm on one panel: its selection curve (dashed where every speck counts), its
    selection score as shipped (crater arms: at the floor and coarse passes) and its
    validation score as shipped, all at the minute its training ended."""
    curve = card["training"].get("learning_curve") or []
    if not curve:
        return
    start = card["training"].get("continues")
    curve = ([start] if start else []) + curve
    style = "--" if card.get("task") == "segmentation" and not old_rule(card) else "-"
    minutes = [p["minutes"] for p in curve]
    ax.plot(minutes, [p.get(key, 0.0) for p in curve], style, marker="o", ms=3,
            color=colour, label=name)
    final = selection_point(card)
    if card.get("task") == "segmentation" and final.get(key) is not None:
        ax.plot([minutes[-1]], [final[key]], "*", ms=11, color=colour)
    valid = card.get("metrics", {}).get(task, {}).get(key)
    if valid is not None:
        ax.plot([minutes[-1]], [valid], "D", ms=6, color=colour, mec="black", mew=0.6)


SCORES = {"themis-craters": ("crater_precision", "crater_recall", "crater_f1", "iou"),
          "ctx-craters": ("crater_precision", "crater_recall", "crater_f1", "iou"),
          "landmarks": ("f1_weighted", "f1_macro", "accuracy")}
"""The validation scores listed for each bundled model (tests read this table)."""


def score_rows(defaults: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| task | metric | value | 95 % interval |", "|---|---|---|---|"]
    for task, keys in SCORES.items():
        for card in defaults.values():
            metrics = card["metrics"].get(task)
            for key in keys if metrics else ():
                ci = metrics.get(f"{key}_ci") or ["–", "–"]
                interval = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci[0] != "–" else "–"
                lines.append(f"| {task} | {key} | {metrics[key]:.4f} | {interval} |")
    return lines


def per_class_rows(defaults: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| class | F1 | precision | recall | support |", "|---|---|---|---|---|"]
    for card in defaults.values():
        per_class = card["metrics"].get("landmarks", {}).get("per_class", {})
        for name, row in per_class.items():
            cells = [f"{row[k]:.3f}" if row[k] is not None else "–"
                     for k in ("f1", "precision", "recall")]
            lines.append(f"| {name} | {' | '.join(cells)} | {row['support']} |")
    return lines


def recall_rows(defaults: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| task | diameter (px) | diameter (m) | labelled | found | recall |",
             "|---|---|---|---|---|---|"]
    for task in ("ctx-craters", "themis-craters"):
        for card in defaults.values():
            for b in card["metrics"].get(task, {}).get("crater_recall_by_diameter", []):
                hi = "∞" if b.get("max_px") is None else f"{b['max_px']:g}"
                hi_m = "∞" if b.get("max_m") is None else f"{b['max_m']:g}"
                recall = "–" if b.get("recall") is None else f"{b['recall']:.3f}"
                lines.append(f"| {task} | {b['min_px']:g}–{hi} | {b.get('min_m', 0):g}–{hi_m} "
                             f"| {b['n']} | {b['tp']} | {recall} |")
    return lines


def target_rows(defaults: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| task | metric | target | bundled model (val) | met |", "|---|---|---|---|---|"]
    for task, targets in TARGETS.items():
        for card in defaults.values():
            metrics = card["metrics"].get(task)
            if metrics is None:
                continue
            for key, goal in targets.items():
                value = metrics.get(key)
                met = "yes" if value is not None and value >= goal else "**no**"
                lines.append(f"| {task} | {key} | ≥ {goal:.2f} | {fmt(metrics, key)} | {met} |")
    return lines


def change_from_parent(card: dict[str, Any], parent: dict[str, Any]) -> str:
    """What a continued arm trained differently from its parent: ``coarse`` (coarse chips),
    ``resized`` (another chip size) or "" (more of the same; :func:`continuations` tells an
    annealed one apart)."""
    recipe = card["training"]["recipe"]
    if recipe.get("coarse_chips"):
        return "coarse"
    return "resized" if recipe["input_size"] != parent["training"]["recipe"]["input_size"] else ""


def continuations(arms: dict[str, dict[str, Any]]
                  ) -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, str]]:
    """Arms that continue another arm here, both with selection scores, as
    ``{child: parent}``: those trained as their parent was, those with coarse chips
    (``Recipe.coarse_chips``), those on chips of another size (``Recipe.input_size``) and
    those annealed: at a lower learning rate than a sibling that continues the same parent
    as it was trained."""
    runs: dict[str, dict[str, str]] = {"": {}, "coarse": {}, "resized": {}, "annealed": {}}
    for name, card in arms.items():
        parent = parent_arm(card)
        if parent not in arms or not (selection_point(card) and selection_point(arms[parent])):
            continue
        runs[change_from_parent(card, arms[parent])][name] = parent

    def lr(name: str) -> float:
        return arms[name]["training"]["recipe"].get("lr", 0.0)

    for child, parent in list(runs[""].items()):
        if any(lr(child) < lr(other) for other, p in runs[""].items() if p == parent):
            runs["annealed"][child] = runs[""].pop(child)
    return runs[""], runs["coarse"], runs["resized"], runs["annealed"]


def continued_list(arms: dict[str, dict[str, Any]]) -> str:
    """The continued arms, each as ``child`` (``parent`` + N epochs, and what changed)."""
    items = []
    for name, card in arms.items():
        parent = parent_arm(card)
        if parent not in arms:
            continue
        recipe, was = card["training"]["recipe"], arms[parent]["training"]["recipe"]
        change = {"coarse": " with coarse chips", "resized": f" on {recipe['input_size']} px chips",
                  "": ""}[change_from_parent(card, arms[parent])]
        if recipe.get("lr") != was.get("lr"):
            change += f" at learning rate {recipe['lr']:g}"
        items.append(f"`{name}` (`{parent}` + {recipe['epochs']} epochs{change})")
    for name, runs in merged_runs(arms).items():
        items.append(f"`{name}` (the mean of {' and '.join(f'`{r}`' for r in runs)})")
    return ", ".join(items) or "none"


def validation_chain(arms: dict[str, dict[str, Any]], plain_runs: dict[str, str],
                     task: str = "themis-craters", key: str = "iou",
                     off_chain: dict[str, str] | None = None) -> str:
    """The validation score along the longest chain of plain continuations, against chips
    seen, and what a straight line in log(chips) through all points but the last predicted
    for the last: the plateau (or not) on the very score a target is set for. The other
    continuations (the plain ones off the chain and ``off_chain``, e.g. the annealed ones)
    beyond the line's points are read against it too. Reported only; nothing is chosen by
    it."""
    by_chips = sorted(plain_runs.items(), key=lambda kv: selection_point(arms[kv[0]])["samples"])
    children = {parent: child for child, parent in by_chips}  # two: the one of more chips
    roots = [p for p in children if p not in plain_runs]
    chains = []
    for root in roots:
        chain = [root]
        while chain[-1] in children:
            chain.append(children[chain[-1]])
        chains.append(chain)
    if not chains or len(max(chains, key=len)) < 4:
        return ""
    chain = max(chains, key=len)
    chips = [selection_point(arms[n])["samples"] for n in chain]
    scores = [arms[n].get("metrics", {}).get(task, {}).get(key) for n in chain]
    if any(v is None for v in scores):
        return ""
    x, y = [math.log(c) for c in chips[:-1]], scores[:-1]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    slope = (sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
             / sum((a - mx) ** 2 for a in x))

    def line(count: int) -> float:
        return my + slope * (math.log(count) - mx)

    predicted = line(chips[-1])
    goal = TARGETS.get(task, {}).get(key)
    reach = ""
    if goal is not None and slope > 0:
        reach = (f". On that line the target {goal:.2f} would need "
                 f"{math.exp(mx + (goal - my) / slope):,.0f} chips")
    seen = {n: selection_point(arms[n])["samples"] for n in {**plain_runs, **(off_chain or {})}
            if n not in chain and arms[n].get("metrics", {}).get(task, {}).get(key) is not None}
    tested = "; ".join(
        f"`{n}` ({count:,} chips) predicted {line(count):.3f}, read "
        f"{arms[n]['metrics'][task][key]:.3f}"
        for n, count in sorted(seen.items(), key=lambda kv: kv[1]) if count > chips[-2])
    if tested:
        reach += f". The line against the other continuations past its points: {tested}"
    steps = ", ".join(f"{v:.3f}" for v in scores)
    return (f" On the validation split ({task} {key}, reported, never used to choose), the "
            f"chain `{'` → `'.join(chain)}` reads {steps} after "
            f"{', '.join(f'{c:,}' for c in chips)} chips. A straight line in log(chips) "
            f"through all but the last point gains {slope * math.log(2):+.3f} per doubling of "
            f"the chips and predicts {predicted:.3f} for the last, which read {scores[-1]:.3f}"
            f"{reach}.")


def moved(before: dict[str, Any], after: dict[str, Any]) -> str:
    """How a change moved the crater criterion's two scores on the selection images."""
    return (f"moved the calibrated selection crater F1 {before['crater_f1']:.3f} → "
            f"{after['crater_f1']:.3f} and pixel IoU {before['iou']:.3f} → {after['iou']:.3f}")


def verdict(after: dict[str, Any], before: dict[str, Any], words: tuple[str, str, str]) -> str:
    """``words`` (better, the same within 0.01, worse) by the crater criterion F1 + IoU."""
    gain = (after["crater_f1"] + after["iou"]) - (before["crater_f1"] + before["iou"])
    return words[0] if gain > 0.01 else words[1] if gain > -0.01 else words[2]


def landmarks_better(after: dict[str, Any], before: dict[str, Any]) -> bool:
    """Whether ``after`` beats ``before`` by the landmark criterion, weighted + macro F1."""
    return after["f1_weighted"] + after["f1_macro"] > before["f1_weighted"] + before["f1_macro"]


def reading(arms: dict[str, dict[str, Any]], crater: dict[str, Any] | None = None
            ) -> list[str]:
    """What the curves and the coarse passes say about the targets, from the cards
    (``crater``: the bundled crater model's card, whose validation recall it quotes)."""
    def last(name: str, key: str) -> str:
        curve = arms.get(name, {}).get("training", {}).get("learning_curve") or []
        return f"{curve[-1][key]:.3f} after {curve[-1]['samples']:,} chips" if curve else "–"

    def selection(name: str) -> dict[str, Any]:
        return selection_point(arms[name]) if name in arms else {}

    def peak(name: str) -> float:
        curve = arms.get(name, {}).get("training", {}).get("learning_curve") or []
        return max((point["f1_weighted"] for point in curve), default=float("nan"))

    calibration = arms.get("craters-unet", {}).get("training", {}).get("calibration") or {}
    final = coarse_result(calibration) if calibration else None
    coarse = ""
    if final:
        fine = calibration["coarse"]["sweeps"][0][0]
        coarse = (f" The coarse passes raise the U-Net's selection pixel IoU from "
                  f"{fine['iou']:.3f} to {final['iou']:.3f} at about the same crater F1 "
                  f"({fine['crater_f1']:.3f} → {final['crater_f1']:.3f}): they find the large "
                  "craters, not more small ones.")
    largest = ""
    bins = (crater or {}).get("metrics", {}).get("themis-craters", {}).get(
        "crater_recall_by_diameter") or []
    if bins and bins[-1]["n"]:
        top = bins[-1]
        largest = (f" (the bundled model finds {top['tp']} of the {top['n']} validation craters "
                   f"of {top['min_px']:g} px and more, recall {top['recall']:.2f})")
    continued = ""
    plain_runs, coarse_runs, resized_runs, annealed_runs = continuations(arms)
    for child, parent in sorted(plain_runs.items(), key=lambda kv: selection(kv[0])["samples"]):
        longer, shorter = selection(child), selection(parent)
        continued += (f" Continuing `{parent}` for "
                      f"{arms[child]['training']['recipe']['epochs']} more epochs "
                      f"(`{child}`, {longer['samples']:,} chips in all) "
                      f"{moved(shorter, longer)}: more training at "
                      f"{arms[child]['training']['recipe']['input_size']} px "
                      + verdict(longer, shorter, ("still pays.", "no longer pays (within 0.01).",
                                                  "made it worse.")))
    for child, parent in coarse_runs.items():
        twin = next((c for c, p in plain_runs.items() if p == parent), None)
        if twin is None:
            continue
        reduced, plain = selection(child), selection(twin)
        share = arms[child]["training"]["recipe"]["coarse_chips"]
        continued += (f" With {share:.0%} of the chips cut from images reduced 2x and 4x "
                      f"(`{child}`, same parent, seed and epochs as `{twin}`) the calibrated "
                      f"selection crater F1 is "
                      f"{reduced['crater_f1']:.3f} against {plain['crater_f1']:.3f} and the "
                      f"pixel IoU {reduced['iou']:.3f} against {plain['iou']:.3f}: coarse chips "
                      + verdict(reduced, plain, ("help.", "change nothing (within 0.01).",
                                                 "hurt.")))
    for child, parent in resized_runs.items():
        bigger, before = selection(child), selection(parent)
        recipe, was = arms[child]["training"]["recipe"], arms[parent]["training"]["recipe"]
        size = recipe["input_size"]
        continued += (f" Continuing `{parent}` for {recipe['epochs']} epochs on {size} px chips "
                      f"(`{child}`, {recipe['chips']:,} chips an epoch where its parent drew "
                      f"{was['chips']:,} of {was['input_size']} px) "
                      f"{moved(before, bigger)}: chips that hold the large "
                      "craters whole "
                      + verdict(bigger, before, ("pay.", "change nothing (within 0.01).",
                                                 "hurt.")))
    for child, runs in merged_runs(arms).items():
        after = selection(child)
        lam = arms[child]["training"]["merge_of"]["lam"]
        best = max(runs, key=lambda r: selection(r)["crater_f1"] + selection(r)["iou"])
        continued += (f" Merging {' and '.join(f'`{r}`' for r in runs)} by task arithmetic "
                      f"(`{child}`: λ {lam:g}, BatchNorm statistics measured again, no "
                      f"gradient step) {moved(selection(best), after)} against the better of "
                      "them: merging "
                      + verdict(after, selection(best), ("pays.", "changes nothing (within "
                                                         "0.01).", "hurts.")))
    for child, parent in annealed_runs.items():
        after, before = selection(child), selection(parent)
        recipe = arms[child]["training"]["recipe"]
        rate = max(arms[c]["training"]["recipe"]["lr"] for c, p in plain_runs.items()
                   if p == parent)
        continued += (f" Continuing `{parent}` for {recipe['epochs']} epochs at learning rate "
                      f"{recipe['lr']:g} (`{child}`; its other continuations ran at "
                      f"{rate:g}) {moved(before, after)}: the lower rate "
                      + verdict(after, before, ("pays.", "changes nothing (within 0.01).",
                                                "hurts.")))
    ema, plain = selection("landmarks-cnn-ema"), selection("landmarks-cnn")
    averaged = ""
    if ema and plain:
        decay = arms["landmarks-cnn-ema"]["training"]["recipe"]["ema"]
        helped = landmarks_better(ema, plain)
        averaged = (f" Averaging the weights (`landmarks-cnn-ema`, decay {decay:g}) "
                    f"{'helped' if helped else 'did not help'}: "
                    f"selection weighted / macro F1 {ema['f1_weighted']:.3f} / "
                    f"{ema['f1_macro']:.3f} against {plain['f1_weighted']:.3f} / "
                    f"{plain['f1_macro']:.3f}.")
    zoomed = selection("landmarks-cnn-zoom")
    if zoomed and ema:
        share = arms["landmarks-cnn-zoom"]["training"]["recipe"]["zoom"]
        helped = landmarks_better(zoomed, ema)
        averaged += (f" Scale jitter on top (`landmarks-cnn-zoom`, zoom {share:g}) "
                     f"{'helped' if helped else 'did not help'}: selection weighted / macro F1 "
                     f"{zoomed['f1_weighted']:.3f} / {zoomed['f1_macro']:.3f}.")
    for card in arms.values():
        architecture = card.get("architecture", {})
        if architecture.get("members", 1) > 1 and architecture.get("kind") == "cnn_cls":
            averaged += members_reading(card, arms.get("landmarks-cnn-ema"))
    averaged += transfer_reading(arms.get("landmarks-unet-transfer"),
                                 arms.get("landmarks-unet-scratch"),
                                 arms.get("landmarks-cnn-folds"))
    averaged += "".join(tta_reading(name, card) for name, card in arms.items())
    gpu_state = ("is written for `make models-gpu` and not yet run" if "craters-gpu-unet"
                 not in arms else "built by `make models-gpu`: its scores are in the arm table")
    return [
        "### Reading the curves", "",
        f"- Craters: the CNN U-Net's selection crater F1 without a floor is "
        f"{last('craters-unet-short', 'crater_f1')} (8 epochs) and "
        f"{last('craters-unet', 'crater_f1')} (12 epochs, longer schedule; both by the "
        "earlier rule). The minutes on the x-axis are wall-clock on a shared 2-core machine, "
        "so compare arms by chips seen (table above). The gains since came from the "
        "confidence floor (precision), the smallest size (specks) and the coarse passes "
        "(area)." + continued + coarse
        + validation_chain(arms, plain_runs, off_chain={
            **annealed_runs, **{m: runs[0] for m, runs in merged_runs(arms).items()}}),
        "- What would pass the crater targets: crater F1 is bound by the fine pass's recall "
        "(validation table above), which the floor, the smallest size and the coarse passes "
        "do not raise (they trade precision and area); training longer is what raised it. "
        "THEMIS pixel IoU is bound by the largest craters, which hold most of the labelled "
        "area of a 416 px crop and are often cut by its edge" + largest + ". More training "
        "at 160 px raises it, and the gain is in the large craters (the learning curve by size "
        "below: the craters under 64 px gained little since 17,280 chips); what each "
        "continuation did on the selection images is read above, arm by arm. The matched "
        "craters' outlines are not too small "
        "(on the selection crops their median fitted diameter is within about 10 % of the "
        "labelled one in every size bin, and growing them does not help: "
        "`training/crater_sizes.py`), and coarse chips or chips that hold a whole THEMIS crop "
        "(416 px) did not help. The line through the validation chain (above) is the estimate "
        "of the scale that passes the target: more chips at 160 px, hours on this CPU's one "
        "thread or minutes on one GPU (the recipe `craters-gpu-unet`, a wider and deeper U-Net "
        f"on 384 px chips, {gpu_state}); more labelled large craters would help too. "
        + selection_noise_pointer() +
        "CTX recall is bound by 7 training tiles of "
        "one quadrangle beside hundreds of THEMIS crops: more labelled CTX tiles (e.g. the rest "
        "of the Mars Crater Catalogue's or Robbins' craters on CTX).",
        f"- Landmarks: the CNN's selection weighted F1 peaks at {peak('landmarks-cnn'):.2f} "
        f"and ends at {last('landmarks-cnn', 'f1_weighted')} at 128 px, and peaks at "
        f"{peak('landmarks-cnn-192'):.2f} and ends at {last('landmarks-cnn-192', 'f1_weighted')} "
        "at 192 px. The rare classes have a handful of crops from one or two observations each: "
        "swiss cheese's only train product is kept for training (`min_class_crops`; before, "
        "the selection draw took it and no model had seen swiss cheese), impact ejecta (one "
        "crop in the whole data set) is never mapped, and spider (8 crops, one observation) "
        "has no validation crop, so macro F1 is bound by data, not training time." + averaged,
    ]


def members_reading(card: dict[str, Any] | None, single: dict[str, Any] | None) -> str:
    """How cross-fitted members (``card``, a landmark arm with ``folds``) compare with one
    network of their recipe (``single``, its card) on the selection crops: without floors
    (how landmark arms are chosen), then each at its own floor; and what the members'
    out-of-fold predictions say of the floor the selection crops chose for the single one."""
    if not card or not single:
        return ""
    calibration = card["training"]["calibration"]
    raw, alone_raw = raw_point(card), raw_point(single)
    point, alone = selection_point(card), selection_point(single)
    k, floor = card["architecture"]["members"], calibration["floor"]
    theirs = single["training"]["calibration"]["floor"]
    folds = {row["floor"]: row for row in calibration["folds_sweep"]}
    gain = (raw["f1_weighted"] + raw["f1_macro"]) - (alone_raw["f1_weighted"]
                                                     + alone_raw["f1_macro"])
    outcome = ("helped" if gain > 0.02 else "did not help" if gain < -0.02
               else "scored level (within 0.02 of weighted + macro F1)")
    name = single["name"].removeprefix("momo-geo-")
    text = (f" {k} cross-fitted members (`{card['name'].removeprefix('momo-geo-')}`: `{name}`'s "
            f"recipe, each member trained without 1/{k} of the training products, shipped as "
            f"their mean probability) {outcome} without floors: "
            f"selection weighted / macro F1 {raw['f1_weighted']:.3f} / {raw['f1_macro']:.3f} "
            f"against {alone_raw['f1_weighted']:.3f} / {alone_raw['f1_macro']:.3f}. At their "
            f"floors they read {point['f1_weighted']:.3f} / {point['f1_macro']:.3f} (floor "
            f"{floor:g}, chosen on {calibration['training_crops']:,} out-of-fold training "
            f"crops) against {alone['f1_weighted']:.3f} / {alone['f1_macro']:.3f} (floor "
            f"{theirs:g}, chosen on the selection crops that score it).")
    if theirs in folds and floor in folds:
        text += (f" On the out-of-fold crops the floor {theirs:g} scores "
                 f"{folds[theirs]['score']:.3f} (mean of weighted and macro F1) against "
                 f"{folds[floor]['score']:.3f} at {floor:g}.")
    return text

def tta_reading(name: str, card: dict[str, Any]) -> str:
    """What the test-time augmentation choice of an arm's calibration measured (empty if it
    had none to make): the criterion with and without the turns, and the scores without a
    floor on the images that chose."""
    choice = (card.get("training", {}).get("calibration") or {}).get("tta")
    if not choice:
        return ""
    scores, sweeps = choice["scores"], choice["sweeps"]

    def raw(mode: str) -> str:
        row = no_floor_row(sweeps[mode])
        return f"{row['f1_weighted']:.3f} / {row['f1_macro']:.3f}" if row else "–"

    on = "out-of-fold training crops" if "out-of-fold" in choice["criterion"] else "selection"
    return (f" `{name}`'s calibration tried the mean over the eight flips and quarter turns "
            f"(`d4`) against one pass: {choice['criterion']} {scores['d4']:.3f} against "
            f"{scores['none']:.3f} (weighted / macro F1 without floors on the {on}: "
            f"{raw('d4')} against {raw('none')}); it kept `{choice['chosen']}`.")


def transfer_reading(transfer: dict[str, Any] | None, control: dict[str, Any] | None,
                     cnn: dict[str, Any] | None) -> str:
    """What a crater U-Net's weights add to the landmark classifier on its down path
    (``transfer`` against ``control``, the same recipe from random weights), and how both
    compare with the CNN members of the same folds (``cnn``), without floors: on the
    selection crops and on the out-of-fold training crops."""
    if not transfer or not control:
        return ""

    def pair(card: dict[str, Any], sweep: str) -> str:
        scores = raw_point(card, sweep)
        return f"{scores['f1_weighted']:.3f} / {scores['f1_macro']:.3f}" if scores else "–"

    source = transfer["training"]["finetune_from"].removesuffix(".bundle")
    helped = landmarks_better(raw_point(transfer), raw_point(control))
    text = (f" Starting the U-Net landmark classifier from the crater model's down path "
            f"(`landmarks-unet-transfer`, from `{source}`) "
            f"{'helped' if helped else 'did not help'} against the same network and recipe "
            f"from random weights (`landmarks-unet-scratch`): weighted / macro F1 without "
            f"floors {pair(transfer, 'sweep')} against {pair(control, 'sweep')} on the "
            f"selection crops, and {pair(transfer, 'folds_sweep')} against "
            f"{pair(control, 'folds_sweep')} on the out-of-fold training crops.")
    if cnn:
        text += (f" The CNN members of the same folds (`landmarks-cnn-folds`) read "
                 f"{pair(cnn, 'sweep')} and {pair(cnn, 'folds_sweep')}")
        turned = transfer.get("tta") == "d4" and cnn.get("tta", "none") == "none"
        text += (" (one pass each; the transfer arm's numbers are with the eight turns its "
                 "calibration chose, and without them below)." if turned else ".")
    return text


def render(arms: dict[str, dict[str, Any]], defaults: dict[str, dict[str, Any]],
           chosen: dict[str, str], selections: dict[str, dict[str, Any]],
           guards: dict[str, dict[str, float]] | None = None) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    minutes = sum(c["training"]["seconds"] for c in arms.values()) / 60
    crater_arms = {k: v for k, v in arms.items() if v["task"] == "segmentation"}
    landmark_arms = {k: v for k, v in arms.items() if v["task"] == "classification"}
    out = [
        "# Results", "",
        f"Generated by `make models` (`training/report_models.py`) on {now}, on "
        f"{platform.machine()} with {os.cpu_count()} CPU cores, no GPU, one torch thread per "
        f"run; the arms below took {minutes:.0f} CPU-minutes of fine-tuning (plus one shared "
        "MOMO pretraining run). Never edited by hand. The encoder comparison of the MOMO paper "
        "in miniature is at the end of this page (`make reproduce` re-renders that section; "
        "with the EVL reports in [comparison.md](comparison.md)).", "",
        "Data: `../shared/data` — CTX crater tiles of the Mars Crater Catalogue (MC-11 East, "
        "CC BY 4.0, Data 2020 5(3) 70); THEMIS daytime-IR crops with Robbins & Hynek crater "
        "boxes (Zhao, Davis, Collins 2024, Apache-2.0); HiRISE landmark crops (Wagstaff et al., "
        "Zenodo 10.5281/zenodo.2538136). Validation splits: CTX tiles D, F, K; 20 % of the "
        "THEMIS crops (seeded); HiRISE landmark products (grouped). Crater scores follow "
        "[the scoring rule](training.md#how-crater-maps-are-scored) (matched craters ≥ 8 px); "
        "intervals are 95 % bootstrap intervals over images.", "",
        "## The bundled models", "",
    ]
    for name, arm in chosen.items():
        sel = selections[name]
        raw = (" without a confidence floor (each arm's raw predictions: nothing was tuned "
               "on those images)" if sel.get("compare_at_floor") == "none" else "")
        out.append(f"- `{name}` = arm **{arm}**, chosen among {', '.join(sel['choose_from'])} "
                   f"by {' + '.join(sel['criterion'])} on the selection images{raw}.")
        limit = sel.get("product_guard", {}).get("max_crater_share")
        for skipped, share in (guards or {}).get(name, {}).items():
            if limit is not None and share > limit:
                out.append(f"  - `{skipped}` scores higher there but does not ship: `momo-geo "
                           f"map` marks {share:.1%} of the real HiRISE scene "
                           f"({sel['product_guard']['scene']}, wind-eroded ridges with hardly "
                           f"a crater) as crater, above the product guard's "
                           f"{limit:.0%} (docs/product_guard.json).")
        for twin in tied(sel, arms, arm):
            out.append(f"  - `{twin}` ties it there ({' + '.join(sel['criterion'])} equal to "
                       f"four decimals). {tie_break(sel, arms, arm, twin)} The selection "
                       "images do not tell the two apart, and their validation scores "
                       "(below) are reported, never used to choose.")
    out += ["", "### Validation scores", "", *score_rows(defaults), "",
            "### Against the targets of the model issue", "", *target_rows(defaults), "",
            "### Crater recall by diameter (validation)", "", *recall_rows(defaults), "",
            "### Landmarks per class (validation)", "", *per_class_rows(defaults), "",
            "## Comparison: MOMO encoder, same network from scratch, CNN", "",
            "Scores on the validation split, each arm at its confidence floor; `selection` is "
            "the last learning-curve point on the images held out of training (at the floor), "
            "which is what chose the bundled crater model; landmark arms are chosen on their "
            "selection scores without a floor (first column of the landmark floor table). "
            "The arms had equal CPU budgets except "
            "`craters-unet`, the 8-epoch `craters-unet-short` trained 12 epochs, and the "
            f"continued arms: {continued_list(arms)}; a continuation's chips are counted from "
            "the start of its chain (the arm that continues none), its minutes are its own; "
            "a merged arm's chips are every chip of the runs it merges, its minutes those of "
            "the merge. "
            "Cross-fitted landmark members (`network` × K) cost K trainings on (K − 1)/K of the "
            "crops each; their minutes and chips are summed over the members. An arm whose "
            "encoder names another arm (transfer) starts from that arm's trained U-Net down "
            "path; its minutes do not include that arm's. "
            "The landmark arms "
            "keep each class at least 5 training crops (`min_class_crops`). Crater arms "
            "are scored with the coarse passes their calibration chose (table below), if "
            "any.", "",
            *arm_rows(crater_arms, {"themis-craters": ["iou", "crater_f1"],
                                    "ctx-craters": ["iou", "crater_f1"]}), "",
            *arm_rows(landmark_arms, {"landmarks": ["f1_weighted", "f1_macro"]}), "",
            "## Confidence floors (crater arms)", "",
            "A mapped crater whose mean probability is below the floor, or whose area is "
            "below the disc of the smallest size, is erased whole "
            "([mapping.md](mapping.md#how-it-works)); each arm's floor and size are the best "
            "crater F1 of floors 0.50-0.95 × sizes 0-8 px on its selection images, scored as "
            "maps are (every predicted crater counts, specks too). The floor buys precision "
            "with a "
            "little recall and some pixel IoU (the largest craters are often the least "
            "confident). An arm without a row has no floor (built before floors existed "
            "and not calibrated since: `training/calibrate_floor.py`).", "",
            *floor_rows(crater_arms), "",
            "## Confidence floors (landmark arms)", "",
            "A crop whose most likely class is below the floor counts as `other` (a map tile "
            "too). Weighted / macro F1 without a floor and at the floor chosen; one floor "
            "0-0.9 for every class, by the mean of the two. A single network's floor is chosen "
            "on the selection products that also score it; cross-fitted members' on the "
            "predictions each training crop got from the member that never saw its product.",
            "", *landmark_floor_rows(landmark_arms), "",
            "## Coarse passes (crater arms)", "",
            "After its floor, a crater arm may map the scene again at 1/2, 1/4 or 1/8 of its "
            "resolution and add the large craters it finds there, which the fine pass sees "
            "only in pieces ([mapping.md](mapping.md#how-it-works)). Passes, their smallest "
            "diameter and their floor are chosen greedily on the selection images by crater "
            "F1 + pixel IoU; an arm without a row was not calibrated for them.", "",
            *coarse_rows(crater_arms), "",
            "## Learning curves", "",
            "![Selection and validation scores against training minutes, with the "
            "targets](img/learning_curves.png)", "",
            "Each panel pairs a score on the selection images (the curve, and ★ for a crater "
            "arm as shipped) with the validation score the model issue sets a target for: ◆ "
            "is each arm's validation score as shipped, drawn at the minute its training "
            "ended, and the dotted line is the target. The ◆ values are the comparison "
            "tables' (above); validation is reported there, never used to choose.", "",
            "Curve points score the raw maps (no floor, no smallest size). Crater arms "
            f"trained before {SCORING_RULE_CHANGED[:10]} "
            f"({', '.join(n for n, c in crater_arms.items() if old_rule(c)) or 'none'}) were "
            "scored by the earlier rule, which dropped predictions under 8 px before matching; "
            "later ones count every speck a raw map holds, so their raw F1 reads lower at "
            "equal skill. Compare arms by the calibrated selection scores (tables above), "
            "which all follow the current rule.", "",
            *curve_rows(arms), "", *reading(arms, defaults.get("crater-seg.bundle")), "",
            *size_curve_section(arms), "", *selection_noise_section(arms), "",
            *landmark_noise_section(arms), "",
            *data_curve_section(), "", *comparison_section()]
    return "\n".join(out) + "\n"


SIZE_CURVE = ROOT / "docs" / "crater_size_curve.jsonl"
"""The runs of ``training/crater_sizes.py --out`` on the chain of crater continuations."""


def size_curve_section(arms: dict[str, dict[str, Any]], path: Path = SIZE_CURVE,
                       task: str = "themis-craters") -> list[str]:
    """The crater learning curve by size: per arm (by chips seen), the share of the labelled
    crater pixels of each diameter bin its map covers on the selection images, and what mapping
    the largest craters whole would be worth; none before ``crater_sizes.py`` has run."""
    if not path.is_file():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    runs = [r for r in runs if r["task"] == task and r["arm"] in arms]
    if not runs:
        return []
    runs.sort(key=lambda r: selection_point(arms[r["arm"]]).get("samples", 0))
    bins = runs[-1]["bins"]
    edges = [f"{b['min_px']:g}–{bins[k + 1]['min_px']:g}" if k + 1 < len(bins)
             else f"≥ {b['min_px']:g}" for k, b in enumerate(bins)]
    area = sum(b["labelled_px"] for b in bins)
    share = " | ".join(f"{b['labelled_px'] / area:.0%} ({b['craters']})" for b in bins)
    lines = ["## Crater learning curve by size (selection images)", "",
             f"Each arm's map of the {runs[-1]['images']} {task} selection crops (the engine, "
             "floor, smallest size and coarse passes as its card says; validation unread): "
             "the share of the labelled crater pixels of each diameter bin (px) that it "
             "covers, its pixel IoU and crater F1 (`training/crater_sizes.py --out`, "
             f"`docs/{path.name}`). The first row is each bin's share of the labelled "
             "crater area (and its craters).", "",
             f"| arm | chips seen | {' | '.join(edges)} | pixel IoU | crater F1 |",
             "|---|---|" + "---|" * len(bins) + "---|---|",
             f"| *labelled area (craters)* | | {share} | | |"]
    for r in runs:
        cells = " | ".join("–" if b["covered"] is None else f"{b['covered']:.2f}"
                           for b in r["bins"])
        first = r["growth"]["1"]
        lines.append(f"| {r['arm']} | {selection_point(arms[r['arm']]).get('samples', 0):,} | "
                     f"{cells} | {first['iou']:.3f} | {first['crater_f1']:.3f} |")
    return lines + ["", size_curve_reading(runs, edges)]


def size_curve_reading(runs: list[dict[str, Any]], edges: list[str]) -> str:
    """Which sizes more chips reached, and what the largest ones would be worth mapped whole
    (the last arm's maps, every labelled crater of a bin and the larger bins added as a disc)."""
    first, last = runs[0]["bins"], runs[-1]["bins"]
    moved = "; ".join(f"{edge} px {a['covered']:.2f} → {b['covered']:.2f}"
                      for edge, a, b in zip(edges, first, last, strict=True)
                      if a["covered"] is not None and b["covered"] is not None)
    worth = ", ".join(f"{b['iou_if_whole_from_here']:.3f} from {b['min_px']:g} px"
                      for b in last[1:] if "iou_if_whole_from_here" in b)
    text = (f"From `{runs[0]['arm']}` to `{runs[-1]['arm']}` the covered share moved {moved}. "
            f"Pixel IoU moved {runs[0]['growth']['1']['iou']:.3f} → "
            f"{runs[-1]['growth']['1']['iou']:.3f}.")
    if worth:
        text += (f" Had `{runs[-1]['arm']}` mapped every labelled crater of a size and larger "
                 f"whole (the rest as it maps them), its pixel IoU here would read {worth}.")
    return text


SELECTION_NOISE = ROOT / "docs" / "selection_noise.json"
"""``training/selection_noise.py --out``: crater arms' paired bootstrap on the selection images."""
VALIDATION_NOISE = ROOT / "docs" / "validation_noise.json"
"""The same with ``--split val``: reported beside it, never used to choose."""


def read_noise(path: Path, arms: dict[str, dict[str, Any]]
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A ``selection_noise.py`` result and its rows of the known ``arms``; no rows when the
    file is missing, fewer than two arms are known or its reference is not the first."""
    if not path.is_file():
        return {}, []
    noise = json.loads(path.read_text())
    rows = [r for r in noise["arms"] if r["arm"] in arms]
    if len(rows) < 2 or rows[0]["arm"] != noise["reference"]:
        return noise, []
    return noise, rows


def selection_noise_section(arms: dict[str, dict[str, Any]], path: Path = SELECTION_NOISE,
                            validation: Path = VALIDATION_NOISE) -> list[str]:
    """How far apart crater arms score on the selection images, with paired intervals, how
    many selection images would resolve a difference, and (when measured) the paired THEMIS
    IoU difference on validation beside it; none before the script has run."""
    noise, rows = read_noise(path, arms)
    if not rows:
        return []
    val = _same_reference(validation, noise["reference"],
                          lambda measured: measured["by_folder"]["themis-craters"]["iou"])
    folders = ", ".join(f"{n} {task}" for task, n in noise["images_by_folder"].items())
    lines = ["## Can the selection images tell crater arms apart?", "",
             f"Crater F1 + pixel IoU of each arm's shipped maps on the {noise['images']} "
             f"selection images ({folders}), and its difference from `{noise['reference']}` "
             f"with a 95 % paired bootstrap interval ({noise['boot']} resamples of the images "
             "within each folder, the same images for both arms; `training/selection_noise.py`, "
             f"`docs/{path.name}`). Beside it, the THEMIS pixel IoU on validation and its paired "
             f"difference measured the same way (`--split val`, `docs/{validation.name}`): read "
             "afterwards, never used to choose.", "",
             "| arm | chips seen | selection criterion | difference | 95 % interval | "
             "resamples it is higher | validation THEMIS IoU | difference | 95 % interval |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        low, high = r["difference_ci"]
        lines.append(f"| {r['arm']} | {selection_point(arms[r['arm']]).get('samples', 0):,} | "
                     f"{r['value']:.4f} | {r['difference'] + 0.0:+.4f} | "
                     f"[{low + 0.0:+.4f}, {high + 0.0:+.4f}] | "
                     f"{r['higher_share']:.0%} | {_noise_cells(val.get(r['arm']))} |")
    return lines + ["", noise_reading(noise, rows, val, arms)]


def selection_noise_pointer(path: Path = SELECTION_NOISE) -> str:
    """One sentence for the crater reading: what the selection images can resolve (the
    section of its own has the table), or "" before ``selection_noise.py`` has run."""
    if not path.is_file():
        return ""
    noise = json.loads(path.read_text())
    need = (noise.get("images_for") or {}).get("0.02")
    return ("Choosing an arm of that scale needs selection images that can tell it from the "
            f"others: the {noise['images']} held out resolve about "
            f"±{noise['median_half_width']:.3f} of crater F1 + IoU (section *Can the selection "
            "images tell crater arms apart?* below)"
            + (f"; ±0.02 would take about {need:,}. " if need else ". "))


def noise_reading(noise: dict[str, Any], rows: list[dict[str, Any]],
                  val: dict[str, dict[str, Any]], arms: dict[str, dict[str, Any]]) -> str:
    """What the intervals say: a coin toss below their half-width, the images that would
    resolve 0.02 and 0.01, and whether validation separates the arms any better."""
    reading = (f"The median half-width of the selection intervals is "
               f"{noise['median_half_width']:.3f}: a difference smaller than that is a coin "
               "toss on these images")
    need = noise.get("images_for") or {}
    share = arms[noise["reference"]]["training"]["recipe"].get("select_fraction") or 0
    if need and share:
        reading += (". Resolving 0.02 would need about "
                    f"{need['0.02']:,} selection images and 0.01 about {need['0.01']:,} "
                    "(the half-width shrinks as one over the square root of the images); the "
                    f"whole train split is about {noise['images'] / share:,.0f} images (the "
                    f"selection images are {share:.0%} of it), so only scoring every training "
                    "image out of fold (cross-fitting) comes near that scale")
    themis = (noise.get("by_folder") or {}).get("themis-craters", {}).get("iou", [])[1:]
    if themis:
        reading += (". On the THEMIS selection crops alone the other arms' pixel IoU differs by "
                    + "; ".join(f"{t['difference']:+.3f} [{t['difference_ci'][0]:+.3f}, "
                                f"{t['difference_ci'][1]:+.3f}] (`{t['arm']}`)" for t in themis))
    others = [val[r["arm"]] for r in rows[1:] if r["arm"] in val]
    if others:
        clear = [v["arm"] for v in others if v["difference_ci"][0] > 0]
        reading += (f". On validation {len(clear)} of the {len(others)} other arms' THEMIS IoU "
                    "is above the reference's with a paired interval clear of zero"
                    + (f" ({', '.join(f'`{a}`' for a in clear)})" if clear else ""))
    return reading + "."


LANDMARK_NOISE = ROOT / "docs" / "landmark_selection_noise.json"
"""``selection_noise.py --task landmarks --out``: landmark arms' paired bootstrap by product."""
LANDMARK_OOF_NOISE = ROOT / "docs" / "landmark_oof_noise.json"
"""The same with ``--split oof``: the training crops, each scored by the member that never
saw its product (cross-fitted arms)."""
LANDMARK_VALIDATION_NOISE = ROOT / "docs" / "landmark_validation_noise.json"
"""The same with ``--split val``: reported beside it, never used to choose."""


def landmark_noise_section(arms: dict[str, dict[str, Any]], path: Path = LANDMARK_NOISE,
                           validation: Path = LANDMARK_VALIDATION_NOISE,
                           oof: Path = LANDMARK_OOF_NOISE) -> list[str]:
    """How far apart landmark arms score on the selection crops when whole products are
    resampled, with the out-of-fold training crops and validation measured the same way
    beside it; none before the run."""
    noise, rows = read_noise(path, arms)
    if not rows:
        return []
    beside = {name: _same_reference(file, noise["reference"])
              for name, file in (("oof", oof), ("val", validation))}
    lines = ["## Can the selection crops tell landmark arms apart?", "",
             f"Weighted + macro F1 (no floor) of each landmark arm on the {noise['images']} "
             f"selection crops of {noise['products']} HiRISE products, and its difference "
             f"from `{noise['reference']}` with a 95 % paired bootstrap interval "
             f"({noise['boot']} resamples of whole products, the same for both arms: crops of "
             "one observation look alike; `training/selection_noise.py --task landmarks`, "
             f"`docs/{path.name}`). Beside it, the same on the training crops each scored by "
             f"the member that never saw its product (`--split oof`, `docs/{oof.name}`, "
             "cross-fitted arms) and on validation (`--split val`, "
             f"`docs/{validation.name}`: read afterwards, never used to choose).", "",
             "| arm | selection | difference | 95 % interval | resamples it is higher | "
             "out of fold | difference | 95 % interval | validation | difference | "
             "95 % interval |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [_noise_cells(r)] + [_noise_cells(beside[k].get(r["arm"]))
                                     for k in ("oof", "val")]
        lines.append(f"| {r['arm']} | {cells[0]} | {r['higher_share']:.0%} | {cells[1]} | "
                     f"{cells[2]} |")
    if noise["median_half_width"] == 0:
        reading = ("Every resample scores the arms alike: they classify each selection crop "
                   "the same, so these crops cannot tell them apart.")
    else:
        reading = (f"The median half-width is {noise['median_half_width']:.3f} of weighted + "
                   "macro F1: arms closer than that are a coin toss on these crops.")
    if beside["oof"]:
        reading += (" Out of fold, arms that drew different folds differ also by where the two "
                    "or three products of a rare class fell: an arm that drops a class draws "
                    "its folds over the products it trains on, and a member that saw none of a "
                    "class's products cannot find it.")
    return lines + ["", reading]


def _same_reference(path: Path, reference: str,
                    pick: Callable[[dict[str, Any]], list[dict[str, Any]]] = itemgetter("arms")
                    ) -> dict[str, dict[str, Any]]:
    """The arm rows (``pick``: which of the file's rows, all arms by default) of a noise file
    measured against ``reference``, by name (none otherwise)."""
    if not path.is_file():
        return {}
    measured = json.loads(path.read_text())
    return ({r["arm"]: r for r in pick(measured)} if measured["reference"] == reference
            else {})


def _noise_cells(row: dict[str, Any] | None) -> str:
    """Value, difference and interval of one arm's noise row, or dashes."""
    if row is None:
        return "– | – | –"
    low, high = row["difference_ci"]
    return (f"{row['value']:.3f} | {row['difference'] + 0.0:+.3f} | "
            f"[{low + 0.0:+.3f}, {high + 0.0:+.3f}]")


DATA_CURVE = ROOT / "docs" / "landmark_data_curve.jsonl"
"""The runs of ``training/landmark_data_curve.py`` (one JSON line each), committed."""


def span(values: list[int]) -> str:
    """``1,100`` or ``1,100-1,200``: the range of counts over several draws."""
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def data_curve_section(path: Path = DATA_CURVE) -> list[str]:
    """Landmark selection scores against the share of training products, one row per share
    (mean and range over the product draws); none before the script has run."""
    if not path.is_file():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    shares = sorted({r["share"] for r in runs})
    lines = ["## Landmarks against training data", "",
             f"The recipe of `{runs[0]['recipe']}` (one network) trained on a share of its "
             "training products for the same optimiser steps (whole observations drawn with a "
             "seed; rare classes keep theirs) and "
             "scored on the selection products without a floor, nothing tuned on them "
             f"(`training/landmark_data_curve.py`, {len(runs)} runs; validation unread). "
             "Mean over the draws, their range in brackets.", "",
             "| share of products | products | crops | draws | selection f1_weighted | "
             "selection f1_macro |", "|---|---|---|---|---|---|"]
    mean = {}
    for share in shares:
        rows = [r for r in runs if r["share"] == share]
        cells = []
        for key in ("f1_weighted", "f1_macro"):
            values = [r[key] for r in rows]
            mean[share, key] = sum(values) / len(values)
            cells.append(f"{mean[share, key]:.3f} [{min(values):.3f}, {max(values):.3f}]")
        counts = [span([r[key] for r in rows]) for key in ("products", "crops")]
        lines.append(f"| {share:.0%} | {' | '.join(counts)} | {len(rows)} | "
                     f"{' | '.join(cells)} |")
    if 0.5 in shares and 1.0 in shares:
        gain = {k: mean[1.0, k] - mean[0.5, k] for k in ("f1_weighted", "f1_macro")}
        lines += ["", f"Doubling the products from half to all of them moved weighted F1 by "
                  f"{gain['f1_weighted']:+.3f} and macro F1 by {gain['f1_macro']:+.3f} on the "
                  "selection products."]
    spread = max((max(r["f1_weighted"] for r in runs if r["share"] == share)
                  - min(r["f1_weighted"] for r in runs if r["share"] == share))
                 for share in shares)
    lines[-1] += (f" Two draws of one share differ by up to {spread:.3f} in weighted F1: "
                  "a change smaller than that is not resolved by these selection crops.")
    return lines


COMPARISON_MARK = ("<!-- The encoder comparison: rendered by training/reproduce.py "
                   "(render_comparison) from docs/comparison.json. -->")
"""Where the comparison section of docs/results.md begins; the page above it is this module's."""


def comparison_section(state: dict[str, Any] | None = None,
                       path: Path = ROOT / "docs" / "comparison.json") -> list[str]:
    """The comparison section of results.md from ``state`` (default: the committed
    ``docs/comparison.json``; none if there is no run yet)."""
    if state is None:
        if not path.is_file():
            return []
        state = json.loads(path.read_text())
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from training.reproduce import render_comparison

    return [COMPARISON_MARK, "", *render_comparison(state)]


def write_comparison_section(results: Path, state: dict[str, Any]) -> None:
    """Replace the comparison section of ``results`` (everything from :data:`COMPARISON_MARK`)
    by one rendered from ``state``; the page above it is kept as ``make models`` wrote it."""
    text = results.read_text() if results.is_file() else "# Results\n"
    head = text.split(COMPARISON_MARK)[0].rstrip("\n")
    results.write_text(head + "\n\n" + "\n".join(comparison_section(state)) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", required=True, type=Path,
                        help="folder of the arms' bundles (build_models.py --out)")
    parser.add_argument("--promote", action="store_true",
                        help="copy each chosen arm into momo_geo/weights/")
    parser.add_argument("--rescore", action="store_true",
                        help="score each chosen arm again with its card as shipped (arms "
                        "built before tiling was fixed at training time were scored otherwise)")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    args = parser.parse_args(argv)
    selections = {s: json.loads((RECIPES / s).read_text()) for s in SELECTIONS}
    names = [n for s in selections.values() for n in s["choose_from"]]
    arms = load_cards(args.bundles, names)
    continue_curves(arms)
    if not arms:
        print(f"no arm bundles in {args.bundles} and no recorded cards in {CARDS}; run "
              "training/build_models.py first", file=sys.stderr)
        return 1
    chosen, defaults, guards = {}, {}, {}
    for selection in selections.values():
        guards[selection["bundle"]] = product_guard(selection, arms, args.bundles,
                                                    record=args.promote)
        arm = choose(selection, arms, guards[selection["bundle"]])
        if arm is None:
            continue
        if args.rescore:
            path = args.bundles / f"{arm}.bundle"
            if not path.is_dir():
                raise SystemExit(f"--rescore: {arm} is not built in {args.bundles}")
            rescore(path, arms[arm])
            arms[arm] = json.loads((path / "card.json").read_text())
        chosen[selection["bundle"]] = arm
        defaults[selection["bundle"]] = arms[arm]
        if args.promote:
            target = ROOT / "momo_geo" / "weights" / selection["bundle"]
            promote(args.bundles, arm, target, arms[arm])
            if selection.get("card"):
                from momo_geo.training.finetune import set_card_fields

                set_card_fields(target, **selection["card"])
            print(f"{arm} -> momo_geo/weights/{selection['bundle']}")
    (args.results.parent / "img").mkdir(parents=True, exist_ok=True)
    plot_curves(arms, args.results.parent / "img" / "learning_curves.png")
    args.results.write_text(render(arms, defaults, chosen,
                                   {s["bundle"]: s for s in selections.values()}, guards))
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
