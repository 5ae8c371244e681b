"""Measure a roundness gate on the fine pass of a crater bundle, on its selection images only.

    python training/fine_roundness.py momo_geo/weights/crater-seg.bundle \\
        training/recipes/craters-unet-longest.json

The coarse passes keep only round features (circle-fit residual, :mod:`momo_geo.inference.coarse`);
the fine pass keeps any shape, and on a CTX validation window it outlines irregular dark
patches. This asks what the same gate would do to the fine pass: each residual is applied to
the fine map at the card's floor, smallest and largest size, before the card's coarse passes
are added, exactly as the engine adds them; crater F1 and pixel IoU are pooled over the
selection images the recipe held out. The validation split is not read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from momo_geo.bundle import load_bundle
from momo_geo.evaluate import crater_class
from momo_geo.inference.coarse import round_enough
from momo_geo.inference.engine import Predictor
from momo_geo.inference.floor import background_class
from momo_geo.metrics import MIN_DIAMETER_PX, crater_metrics, mask_to_circles, match_craters
from momo_geo.training.calibrate import (
    fine_probabilities,
    floored_classes,
    selection_maps,
    with_passes,
)
from momo_geo.training.recipes import load_recipe, selection_data

CHECKOUT = Path(__file__).resolve().parents[1]
RESIDUALS = (None, 0.35, 0.3, 0.25, 0.2, 0.15)
"""Gates tried (None: the fine pass as shipped, any shape)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="crater bundle folder")
    parser.add_argument("recipe", help="the recipe file the bundle was built from")
    parser.add_argument("--data", default=str(CHECKOUT.parent / "shared" / "data"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    select = selection_data(load_recipe(args.recipe)["finetune"], args.data)
    bundle = load_bundle(args.bundle)
    card = bundle.card
    predictor = Predictor(bundle, "cpu")
    feature, background = crater_class(card), background_class(card)
    floor, size = card.min_confidence["crater"], card.min_diameter["crater"]
    cap, passes = card.max_diameter.get("crater", 0.0), card.coarse_passes
    probabilities = fine_probabilities(predictor, select)
    maps = selection_maps(predictor, select, floor, probabilities=probabilities,
                          scales=tuple(spec["scale"] for spec in passes))
    for residual in RESIDUALS:
        counts, pixels = np.zeros(3, np.int64), np.zeros(2, np.int64)
        for item, probs in zip(maps, probabilities, strict=True):
            classes = floored_classes(probs, feature, background, floor, size, cap)
            crater = classes == feature
            if residual is not None and crater.any():
                classes[crater & ~round_enough(crater, residual)] = background
            merged = with_passes(dataclasses.replace(item, classes=classes), passes, feature,
                                 background)
            match = match_craters(mask_to_circles(merged, feature), item.truth, MIN_DIAMETER_PX)
            counts += (match.tp, match.fp, match.fn)
            pred = merged == feature
            pixels += ((pred & item.truth_px).sum(), (pred | item.truth_px).sum())
        scores = {k: round(v, 4) for k, v in crater_metrics(counts).items()}
        print(json.dumps({"max_residual": residual, **scores,
                          "iou": round(float(pixels[0] / pixels[1]), 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
