"""Grouped cross-validation of a landmark recipe over the train products, for choices that one
small selection set cannot make.

The selection products that choose a landmark arm's confidence floor hold 248 crops of four
classes, and a single-observation class (spider: 8 crops of one product) is never held out
at all. This script trains the recipe ``--folds`` times, each time without a random 30 % of
the train products (drawn as the selection split draws, rare classes kept for training), and
scores each fold's model on the products it never saw: weighted and macro F1 at every floor
the calibration tries, and what it predicts of classes those products do not hold (false
alarms of classes learnt from one or two observations). The validation split is not read.

    python training/landmark_folds.py training/recipes/landmarks-cnn-ema.json --folds 11 12
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from momo_geo.training.chips import default_data_root

HELD_FRACTION = 0.3


def held_out_probabilities(spec: dict[str, Any], root: Path, fit: Any, images: list[Any],
                           **overrides: Any) -> tuple[np.ndarray, Any]:
    """Train a recipe's fields ``spec`` (with ``overrides``) on the crops ``fit`` without a
    learning curve, in a temporary bundle, and return its class probabilities of ``images``
    (as a map tile computes them) and its card."""
    from momo_geo.bundle import load_bundle
    from momo_geo.evaluate import predict_probabilities
    from momo_geo.inference.engine import Predictor
    from momo_geo.training.finetune import Recipe, finetune

    quiet = Recipe.from_dict({**spec, "select_fraction": 0.0, "curve_every": 10_000,
                              **overrides})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "held_out.bundle"
        finetune("landmarks", str(root), out, recipe=quiet, train_data=fit)
        predictor = Predictor(load_bundle(str(out)))
        return predict_probabilities(predictor, images), predictor.card


def observations(data: Any) -> dict[str, int]:
    """Class name -> how many products (HiRISE observations) of ``data`` hold it."""
    return {name: len({g for t, g in zip(data.targets, data.groups, strict=True)
                       if data.classes[t] == name}) for name in data.classes}


def fold_report(recipe_path: Path, seed: int, data: Path) -> dict[str, object]:
    """Train one fold and score it on its held-out products."""
    import torch

    from momo_geo.evaluate import load_task_data
    from momo_geo.training.calibrate import floored_tiles, tile_floor_rows
    from momo_geo.training.finetune import Recipe
    from momo_geo.training.task_data import hold_out

    torch.set_num_threads(1)
    spec = json.loads(recipe_path.read_text())["finetune"]["recipe"]
    root = data / "hirise_landmarks"
    train = load_task_data("landmarks", str(root), "train")
    fit, held = hold_out(train, HELD_FRACTION, seed, Recipe.from_dict(spec).min_class_crops)
    probs, card = held_out_probabilities(spec, root, fit, held.images)
    names = card.class_names
    held_classes = {train.classes[t] for t in held.targets}
    floors = []
    for row in tile_floor_rows(probs, held.targets, card):
        classes = floored_tiles(probs, card, row["floor"])
        absent = Counter(names[c] for c in classes if names[c] not in held_classes)
        floors.append({"floor": row["floor"], "f1_weighted": round(row["f1_weighted"], 3),
                       "f1_macro": round(row["f1_macro"], 3),
                       "false_alarms_of_absent_classes": dict(absent)})
    return {"seed": seed, "held_products": len(set(held.groups)), "held_crops": len(held.targets),
            "training_observations": observations(fit), "floors": floors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, help="a landmark arm's recipe file")
    parser.add_argument("--folds", type=int, nargs="+", default=[11, 12],
                        help="one draw seed per fold")
    parser.add_argument("--data", type=Path, default=default_data_root())
    args = parser.parse_args(argv)
    for seed in args.folds:
        print(json.dumps(fold_report(args.recipe, seed, args.data)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
