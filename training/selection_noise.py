"""How far apart crater arms must score on the selection images before the rule can tell them.

The crater model is chosen by crater F1 + pixel IoU on one CTX tile and 62 THEMIS crops held out
of training. Arms of 80,000 chips and more now score within 0.01 of each other there, while
their validation IoU spreads over 0.07 (results.md). This script measures what that spread is
worth: for each arm, its criterion on the selection images as it ships (the engine's maps:
floor, smallest size and coarse passes from the card, as ``momo-geo evaluate`` draws them),
and for each arm against a reference arm the paired bootstrap interval of the difference
(images resampled within each data folder, the same images for both arms, so what the
images share cancels). From the interval's half-width it states how many selection images a
difference of a given size would need (the half-width shrinks as one over the square root of
the images).

    python training/selection_noise.py build/bundles/craters-unet-anneal.bundle \\
        build/bundles/craters-unet-anneal-restart.bundle --out docs/selection_noise.json

The first bundle is the reference (the bundled arm). Nothing is chosen by it. ``--split val``
measures the same on the validation split, to report beside it (``docs/validation_noise.json``):
whether validation itself can tell the arms apart.

``--task landmarks`` does the same for landmark classifiers: the criterion is weighted + macro
F1 of each crop's raw class (no floor, as ``landmarks.json`` compares arms), and whole HiRISE
products are resampled, not crops, since the crops of one observation look alike
(``docs/landmark_selection_noise.json``). For cross-fitted arms ``--split oof`` scores every
training crop by the member that never saw its product: ten times the selection crops.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from momo_geo.metrics import crater_metrics, segmentation_metrics

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CHECKOUT))
from training.crater_sizes import arm_name, selection_images  # noqa: E402

N_BOOT = 2000


def image_counts(predictor: object, select: object) -> np.ndarray:
    """Per selection image: pixel (tp, fp, fn) and crater (tp, fp, fn) of the shipped map,
    as ``momo-geo evaluate`` scores them before pooling."""
    from momo_geo.evaluate import score_crater_images

    scores = score_crater_images(predictor, select)
    craters = [(m.tp, m.fp, m.fn) for m in scores.matches or []]
    return np.column_stack([scores.counts, np.array(craters, dtype=np.int64).reshape(-1, 3)])


def validation_images(data: Path) -> dict[str, object]:
    """The validation split of each crater data folder (what results.md reports)."""
    from momo_geo.evaluate import load_task_data

    return {task: load_task_data(task, str(data / folder), "val")
            for task, folder in (("themis-craters", "themis_craters"),
                                 ("ctx-craters", "ctx_craters"))}


def pixel_iou(counts: np.ndarray) -> float:
    """Pixel IoU of the rows pooled (the THEMIS target's metric)."""
    return segmentation_metrics(counts[:, :3])["iou"]


def crater_f1(counts: np.ndarray) -> float:
    """Crater F1 of the rows pooled."""
    return crater_metrics(counts[:, 3:])["crater_f1"]


def criterion(counts: np.ndarray) -> float:
    """Crater F1 + pixel IoU of the rows pooled, as the selection rule scores an arm."""
    return crater_f1(counts) + pixel_iou(counts)


def paired_intervals(arms: dict[str, np.ndarray], folders: np.ndarray,
                     statistic: Callable[[np.ndarray], float] = criterion,
                     n_boot: int = N_BOOT, seed: int = 0, units: np.ndarray | None = None
                     ) -> list[dict[str, object]]:
    """Each arm's ``statistic`` and, against the first arm, the difference with its 95 % paired
    bootstrap interval and the share of resamples in which the arm scores higher; rows are
    resampled within each folder (``folders``: one label per row), or, with ``units`` (one
    label per row: a HiRISE product), whole units with all their rows."""
    rng = np.random.default_rng(seed)
    names = list(arms)
    units = np.arange(len(folders)) if units is None else np.asarray(units)
    groups = [[np.flatnonzero(units == u) for u in np.unique(units[folders == f])]
              for f in np.unique(folders)]
    draws = np.zeros((n_boot, len(names)))
    for b in range(n_boot):
        pick = np.concatenate([g[k] for g in groups for k in rng.choice(len(g), size=len(g))])
        draws[b] = [statistic(arms[name][pick]) for name in names]
    out = []
    for k, name in enumerate(names):
        diff = draws[:, k] - draws[:, 0]
        low, high = np.quantile(diff, [0.025, 0.975])
        value, reference = statistic(arms[name]), statistic(arms[names[0]])
        out.append({"arm": name, "value": round(value, 4),
                    "difference": round(value - reference, 4),
                    "difference_ci": [round(float(low), 4), round(float(high), 4)],
                    "higher_share": round(float((diff > 0).mean()), 3)})
    return out


def by_folder(arms: dict[str, np.ndarray], folders: np.ndarray, n_boot: int
              ) -> dict[str, dict[str, list[dict[str, object]]]]:
    """Pixel IoU and crater F1 of each folder's images alone, paired as the criterion is."""
    out = {}
    for folder in np.unique(folders):
        rows = folders == folder
        mine = {name: counts[rows] for name, counts in arms.items()}
        out[str(folder)] = {name: paired_intervals(mine, folders[rows], statistic, n_boot)
                            for name, statistic in (("iou", pixel_iou),
                                                    ("crater_f1", crater_f1))}
    return out


def landmark_rows(predictor: object, data: object) -> np.ndarray:
    """Per crop: its labelled class and the arm's raw class (the argmax of the engine's
    probabilities, no floor), as the landmark arms are compared."""
    from momo_geo.evaluate import predict_probabilities

    probs = predict_probabilities(predictor, data.images)
    return np.column_stack([np.asarray(data.targets), probs.argmax(axis=1)])


def landmark_criterion(class_names: list[str]) -> Callable[[np.ndarray], float]:
    """Weighted + macro F1 of (label, class) rows, as ``landmarks.json`` scores an arm."""
    from momo_geo.metrics import classification_report

    def score(rows: np.ndarray) -> float:
        report = classification_report(rows[:, 0], rows[:, 1], len(class_names), 0,
                                       names=class_names)
        return float(report["f1_weighted"]) + float(report["f1_macro"])

    return score


def landmark_images(bundle: Path, data: Path, split: str) -> object:
    """The landmark crops an arm held out for selection, or the validation crops."""
    from momo_geo.bundle import load_bundle
    from momo_geo.evaluate import load_task_data
    from momo_geo.training.finetune import Recipe, selection_split

    root = str(data / "hirise_landmarks")
    if split == "val":
        return load_task_data("landmarks", root, "val")
    recipe = Recipe.from_dict(load_bundle(str(bundle)).card.training["recipe"])
    return selection_split("landmarks", [load_task_data("landmarks", root, "train")],
                           recipe)[1]


def out_of_fold_crops(bundle: Path, data: Path) -> tuple[object, np.ndarray]:
    """A cross-fitted landmark arm's training crops and, per crop, its raw class from the
    member that never saw the crop's product (the folds ``finetune`` drew, the card's
    test-time augmentation): about ten times the selection crops, from about seven times
    the products. The crops of a class the arm left unmapped for too few products
    (``min_class_products``) are scored too, so that arms are compared on the same crops: by
    the member that never saw their product, or by the whole arm where no member did."""
    from momo_geo.bundle import Bundle, load_bundle
    from momo_geo.evaluate import predict_probabilities
    from momo_geo.inference.engine import Predictor
    from momo_geo.training.finetune import Recipe, training_split
    from momo_geo.training.members import member_card, product_folds
    from momo_geo.training.task_data import rare_classes, without_classes

    arm = load_bundle(str(bundle))
    recipe = Recipe.from_dict(arm.card.training["recipe"])
    if not recipe.folds:
        raise SystemExit(f"{arm_name(bundle)} has no cross-fitted members: no out-of-fold "
                         "predictions")
    crops, _ = training_split("landmarks", [str(data / "hirise_landmarks")], recipe)
    crops = without_classes(crops, rare_classes(crops, recipe.min_class_crops))
    trained = without_classes(crops, arm.card.unmapped_classes)  # what the members learnt
    folds = product_folds(trained, recipe.folds, recipe.seed)
    fold_of = {trained.groups[j]: k for k, fold in enumerate(folds) for j in fold}
    classes = np.zeros(len(crops.images), np.int64)
    for k in [*range(recipe.folds), None]:  # None: products no member saw, the whole arm
        rows = [j for j, group in enumerate(crops.groups) if fold_of.get(group) == k]
        if not rows:
            continue
        prefix = f"members.{k}."
        weights = {key[len(prefix):]: value for key, value in arm.state_dict.items()
                   if key.startswith(prefix)}
        model = (Predictor(arm) if k is None
                 else Predictor(Bundle(member_card(arm.card), weights)))
        probs = predict_probabilities(model, [crops.images[j] for j in rows])
        classes[rows] = probs.argmax(axis=1)
    return crops, classes


def images_needed(half_width: float, images: int, difference: float) -> int:
    """Selection images for a paired interval of half-width ``difference`` where ``images``
    gave ``half_width`` (the half-width shrinks as one over the square root of the images)."""
    return int(np.ceil(images * (half_width / difference) ** 2))


def main(argv: list[str] | None = None) -> int:
    import torch

    from momo_geo.bundle import load_bundle
    from momo_geo.inference.engine import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path, nargs="+",
                        help="the arms' bundles; the first is the reference")
    parser.add_argument("--task", choices=("craters", "landmarks"), default="craters")
    parser.add_argument("--data", type=Path, default=CHECKOUT.parent / "shared" / "data")
    parser.add_argument("--split", choices=("selection", "val", "oof"), default="selection",
                        help="val: the same on the validation split, to report beside it; "
                        "oof (landmarks): the training crops, each scored by the member "
                        "that never saw its product")
    parser.add_argument("--boot", type=int, default=N_BOOT)
    parser.add_argument("--out", type=Path, help="write the result (JSON) here too")
    args = parser.parse_args(argv)
    if args.split == "oof" and args.task != "landmarks":
        parser.error("--split oof needs --task landmarks (cross-fitted landmark arms)")
    torch.set_num_threads(1)
    arms, folders, units, statistic = {}, None, None, criterion
    for bundle in args.bundles:
        predictor = Predictor(load_bundle(str(bundle)))
        if args.task == "landmarks":
            if args.split == "oof":
                crops, classes = out_of_fold_crops(bundle, args.data)
                arms[arm_name(bundle)] = np.column_stack([np.asarray(crops.targets), classes])
            else:
                crops = landmark_images(bundle, args.data, args.split)
                arms[arm_name(bundle)] = landmark_rows(predictor, crops)
            folders, units = np.array(["hirise_landmarks"] * len(crops.images)), crops.groups
            statistic = landmark_criterion(predictor.card.class_names)
        else:
            parts = (selection_images(bundle, args.data) if args.split == "selection"
                     else validation_images(args.data))
            arms[arm_name(bundle)] = np.concatenate([image_counts(predictor, s)
                                                     for s in parts.values()])
            folders = np.concatenate([[task] * len(s.images) for task, s in parts.items()])
        print(f"{arm_name(bundle)}: {statistic(arms[arm_name(bundle)]):.4f}", file=sys.stderr)
    rows = paired_intervals(arms, folders, statistic, n_boot=args.boot, units=units)
    widths = [(r["difference_ci"][1] - r["difference_ci"][0]) / 2 for r in rows[1:]]
    result = {"reference": rows[0]["arm"], "task": args.task, "split": args.split,
              "images": len(folders),
              "images_by_folder": {str(f): int((folders == f).sum()) for f in np.unique(folders)},
              "boot": args.boot, "arms": rows,
              "median_half_width": round(float(np.median(widths)), 4) if widths else None}
    if units is not None:
        result["products"] = len(set(units))
    else:
        result["by_folder"] = by_folder(arms, folders, args.boot)
    if widths:
        result["images_for"] = {f"{d:g}": images_needed(float(np.median(widths)),
                                                        len(folders), d) for d in (0.02, 0.01)}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
