"""Landmark skill against the number of training observations: is the classifier bound by
data or by training?

The landmark targets are not met, and the curves against training minutes have levelled off.
This script trains a landmark recipe on a share of its training products (whole HiRISE
observations, drawn with a seed; a rare class keeps its products, as the selection hold-out
keeps them) for as many optimiser steps as on all of them (more epochs over fewer crops), and
scores it on the same selection products the arms are chosen on, without a confidence floor
(nothing tuned on those crops). A score still rising with the share at 100 %
says more labelled observations, not more epochs, is what would move the targets. Each run is
one JSON line; ``--out`` also keeps them all in one file that ``training/report_models.py``
renders into docs/results.md. The validation split is not read.

    python training/landmark_data_curve.py training/recipes/landmarks-cnn-ema.json \\
        --shares 0.25 0.5 0.75 --seeds 1 --out build/data_curve_1.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from momo_geo.training.chips import default_data_root

ROOT = Path(__file__).resolve().parents[1]


def data_point(recipe_path: Path, share: float, seed: int, data: Path) -> dict[str, object]:
    """Train on ``share`` of the training products (drawn with ``seed``) and score the model
    on the selection products at no floor."""
    import torch

    from momo_geo.training.calibrate import tile_floor_rows
    from momo_geo.training.finetune import Recipe, training_split
    from momo_geo.training.task_data import hold_out
    if str(ROOT) not in sys.path:  # run as a script: the checkout's training package
        sys.path.insert(0, str(ROOT))
    from training.landmark_folds import held_out_probabilities, observations

    torch.set_num_threads(1)
    spec = json.loads(recipe_path.read_text())["finetune"]["recipe"]
    recipe = Recipe.from_dict(spec)
    root = data / "hirise_landmarks"
    full, select = training_split("landmarks", [str(root)], recipe)
    fit = full
    if share < 1.0:
        fit = hold_out(full, 1.0 - share, seed, recipe.min_class_crops)[0]
    # the same chips (optimiser steps) at every share: fewer products, not less training;
    # epochs count crops once each, and the weight average's decay is per step
    epochs = max(1, round(recipe.epochs * len(full.targets) / len(fit.targets)))
    start = time.perf_counter()
    probs, card = held_out_probabilities(spec, root, fit, select.images, epochs=epochs)
    raw = tile_floor_rows(probs, select.targets, card, floors=(0.0,))[0]
    return {"recipe": recipe_path.stem, "share": share, "seed": seed,
            "products": len(set(fit.groups)), "crops": len(fit.targets), "epochs": epochs,
            "observations": observations(fit),
            "minutes": round((time.perf_counter() - start) / 60, 1),
            "f1_weighted": raw["f1_weighted"], "f1_macro": raw["f1_macro"],
            "selection_crops": len(select.targets)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, help="a landmark arm's recipe file")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0],
                        help="shares of the training products (1: all of them)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1],
                        help="one product draw per seed (the training seed is the recipe's)")
    parser.add_argument("--data", type=Path, default=default_data_root())
    parser.add_argument("--out", type=Path, help="append every run to this JSON-lines file")
    args = parser.parse_args(argv)
    for seed in args.seeds:
        for share in args.shares:
            line = json.dumps(data_point(args.recipe, share, seed, args.data))
            print(line, flush=True)
            if args.out:
                with args.out.open("a") as f:
                    f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
