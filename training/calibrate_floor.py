"""Choose the confidence floor of an already built crater bundle, as ``make models`` does.

    python training/calibrate_floor.py momo_geo/weights/crater-seg.bundle \\
        training/recipes/craters-unet.json

New builds calibrate themselves (``momo_geo.training.finetune``); this script brings a bundle
built before the floor existed up to date without retraining. The selection images are rebuilt
from the recipe exactly as its training held them out; the validation metrics in the card are
then recomputed with the floor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from momo_geo.errors import MomoGeoError
from momo_geo.training.calibrate import calibrate_bundle
from momo_geo.training.finetune import (
    Recipe,
    score_bundle,
    task_of_root,
    tta_modes,
)
from momo_geo.training.recipes import data_roots, load_recipe, selection_data

CHECKOUT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="crater bundle folder (its card is updated in place)")
    parser.add_argument("recipe", help="the recipe file the bundle was built from")
    parser.add_argument("--data", default=str(CHECKOUT.parent / "shared" / "data"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        spec = load_recipe(args.recipe)["finetune"]
        recipe = Recipe.from_dict(spec.get("recipe", {}))
        roots = data_roots(spec, args.data)
        select = selection_data(spec, args.data)
        calibration = calibrate_bundle(args.bundle, select, tta=tta_modes(recipe))
        print(json.dumps(calibration))
        metrics = score_bundle(args.bundle, [(task_of_root(spec["task"], r), r) for r in roots])
        print(json.dumps({task: {k: v for k, v in m.items() if isinstance(v, float)}
                          for task, m in metrics.items() if isinstance(m, dict)}))
    except MomoGeoError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
