"""Build the bundled models from their recipe files (``make models``).

    python training/build_models.py training/recipes/crater-seg.json \\
        training/recipes/landmarks.json --out momo_geo/weights
    python training/build_models.py training/recipes/landmarks.json --out /tmp/w \\
        --set pretrain.base_samples=64 --set finetune.recipe.epochs=1     # a smoke run

Each recipe runs the one pipeline of the package (``momo_geo.training.pipeline.run_momo``: base
→ per-sensor runs → EVL → merge), then ``momo_geo.training.finetune.finetune``, and writes
``OUT/<bundle>`` with its card (metrics on the validation split, the recipe, the pretraining
settings). Recipes with the same ``pretrain`` part share one pretraining run under ``--work``.
All seeds are in the recipes.

Each built arm's card is also copied to ``training/cards/<arm>.json`` (``--cards``), to be
committed: bundles live in a build folder that a fresh checkout lacks, and
``training/report_models.py`` reads a recorded card where the bundle is gone, so results.md
can be written again without rebuilding every arm. Runs with ``--set`` overrides are not
recorded (a smoke run must not replace an arm's record).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

from momo_geo.errors import MomoGeoError
from momo_geo.training.recipes import build_model, load_recipe

CHECKOUT = Path(__file__).resolve().parents[1]
CARDS = CHECKOUT / "training" / "cards"
"""The recorded cards of built arms (one ``<arm>.json`` each; see the module doc)."""


def record_card(bundle: Path, cards: Path) -> Path:
    """Copy ``bundle``'s card to ``cards/<arm>.json`` (the arm: the bundle's name)."""
    cards.mkdir(parents=True, exist_ok=True)
    target = cards / f"{Path(bundle).name.removesuffix('.bundle')}.json"
    shutil.copyfile(Path(bundle) / "card.json", target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", help="recipe JSON files (training/recipes/*.json)")
    parser.add_argument("--out", required=True, help="folder to write the bundles into")
    parser.add_argument("--work", default=str(CHECKOUT / "build" / "models"),
                        help="pretraining runs (reused between recipes and reruns)")
    parser.add_argument("--data", default=str(CHECKOUT.parent / "shared" / "data"),
                        help="the shared real data")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY.PATH=VALUE", help="override a recipe value (repeatable)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared CPU more threads fight)")
    parser.add_argument("--cards", type=Path, default=CARDS,
                        help="where each built arm's card is recorded (not with --set)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        recipes = [(path, load_recipe(path, args.overrides)) for path in args.recipes]
        for path, recipe in recipes:
            start = time.perf_counter()
            bundle = build_model(recipe, args.out, args.work, args.data, args.threads)
            print(f"{path} -> {bundle} ({time.perf_counter() - start:.0f} s)", flush=True)
            if not args.overrides:
                print(f"card recorded: {record_card(bundle, args.cards)}", flush=True)
    except MomoGeoError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
