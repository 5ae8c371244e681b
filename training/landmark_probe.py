"""Linear probe: how well the frozen down path of a U-Net bundle tells landmark crops apart.

A cheap check, before any fine-tuning, of whether a network trained on another task (the crater
U-Net) learnt features that carry HiRISE landmark classes: every level of the down path is
mean- and max-pooled (as the ``unet_cls`` classifier pools it), and a class-balanced logistic
regression on those features (:func:`momo_geo.training.probes.out_of_fold_classes`) is scored
out of fold, in folds of whole products (:func:`momo_geo.training.members.product_folds`). The
crops are a landmark arm's training crops (the train split less its selection products, as
``finetune`` draws them), so neither the selection nor the validation products are read.
``--random`` probes the same network with random weights: the difference is what the training
on craters carries.

    python training/landmark_probe.py build/bundles/craters-unet-longest.bundle \\
        training/recipes/landmarks-cnn-folds.json --size 96 128 --random
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from momo_geo.training.chips import default_data_root


def pooled_features(bundle: Path, data, size: int, random: bool):  # noqa: ANN001, ANN201
    """``(N, F)`` pooled down-path features of ``data``'s crops at ``size`` px."""
    import torch

    from momo_geo.bundle import load_card
    from momo_geo.evaluate import crop_input
    from momo_geo.training.finetune import Recipe, build_task_model, task_card

    source = load_card(bundle)
    arch = source.architecture
    recipe = Recipe(architecture="unet_cls", width=int(arch["width"]),
                    levels=int(arch["levels"]), input_size=size, in_chans=source.in_chans,
                    value_scaling=source.value_scaling)
    card = task_card("landmarks", recipe, data.classes, encoder=source)
    torch.manual_seed(0)
    model, _ = build_task_model(card, None if random else str(bundle))
    model.head = torch.nn.Identity()
    with torch.no_grad():
        return torch.cat([model.eval()(crop_input(card, image)) for image in data.images]).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="a U-Net segmentation bundle")
    parser.add_argument("recipe", type=Path, help="a landmark arm's recipe (its training crops)")
    parser.add_argument("--size", type=int, nargs="+", default=[96], help="input sizes (px)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--random", action="store_true", help="also probe random weights")
    parser.add_argument("--data", type=Path, default=default_data_root())
    args = parser.parse_args(argv)

    import torch

    from momo_geo.metrics import classification_report
    from momo_geo.training.finetune import Recipe, training_split
    from momo_geo.training.members import product_folds
    from momo_geo.training.probes import out_of_fold_classes
    from momo_geo.training.task_data import rare_classes, without_classes

    torch.set_num_threads(1)
    spec = json.loads(args.recipe.read_text())["finetune"]["recipe"]
    recipe = Recipe.from_dict(spec)
    train, _ = training_split("landmarks", [str(args.data / "hirise_landmarks")], recipe)
    rare = rare_classes(train, recipe.min_class_crops, recipe.min_class_products)
    train = without_classes(train, rare)
    targets = np.asarray(train.targets)
    folds = product_folds(train, args.folds, seed=0)
    for size in args.size:
        for random in (False, True) if args.random else (False,):
            features = pooled_features(args.bundle, train, size, random)
            predicted = out_of_fold_classes(features, targets, folds, len(train.classes))
            report = classification_report(targets, predicted, len(train.classes), 0,
                                           names=train.classes)
            print(json.dumps({"weights": "random" if random else args.bundle.name,
                              "size": size, "crops": len(targets), "folds": args.folds,
                              "f1_weighted": round(report["f1_weighted"], 3),
                              "f1_macro": round(report["f1_macro"], 3),
                              "f1": {k: None if v["f1"] is None else round(v["f1"], 3)
                                     for k, v in report["per_class"].items()}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
