"""Measure the mean probability of several built crater arms, on their selection images only.

    python training/crater_snapshots.py build/models/bundles OUT.bundle craters-unet-longest \\
        craters-unet-coarse craters-unet-48ep craters-unet-416

The continued crater arms share one selection split (a continuation keeps its parent's), so
their mean probability (:class:`~momo_geo.models.ensemble.MeanProbability`, the landmark
members' mechanism) can be calibrated on those images like any arm: floor, smallest and largest
size and coarse passes (:func:`~momo_geo.training.calibrate.calibrate_bundle`). This asks
whether averaging the arms that levelled off buys what more training did not. It prints the
selection scores as the ensemble would ship; the validation split is not read, and the bundle
written to OUT is a measurement, not an arm of ``make models``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from momo_geo.bundle import CARD_NAME, WEIGHTS_NAME, sha256_file
from momo_geo.errors import MomoGeoError
from momo_geo.training.calibrate import calibrate_bundle
from momo_geo.training.recipes import load_recipe, selection_data

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CHECKOUT))
from training.report_models import PASS_SCORES, selection_point  # noqa: E402


def assemble(bundles: Path, arms: list[str], out: Path) -> None:
    """One bundle of ``arms`` as members (the first arm's card, ``members`` = their number);
    they must share one selection split."""
    cards = [json.loads((bundles / f"{a}.bundle" / CARD_NAME).read_text()) for a in arms]
    splits = {json.dumps([c["training"]["selection_images"],
                          c["training"]["recipe"].get("split_seed")]) for c in cards}
    if len(splits) > 1:
        raise MomoGeoError("the arms do not share one selection split")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    weights = {f"members.{i}.{key}": value for i, arm in enumerate(arms)
               for key, value in load_file(bundles / f"{arm}.bundle" / WEIGHTS_NAME).items()}
    save_file(weights, out / WEIGHTS_NAME)
    card = cards[0]
    card["architecture"]["members"] = len(arms)
    card["weights_sha256"] = sha256_file(out / WEIGHTS_NAME)
    (out / CARD_NAME).write_text(json.dumps(card, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path, help="folder of the built arms (NAME.bundle)")
    parser.add_argument("out", type=Path, help="the ensemble bundle to write (replaced)")
    parser.add_argument("arms", nargs="+", help="arm names; the first one's recipe holds the "
                        "selection images out")
    parser.add_argument("--data", default=str(CHECKOUT.parent / "shared" / "data"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        assemble(args.bundles, args.arms, args.out)
        spec = load_recipe(CHECKOUT / "training" / "recipes" / f"{args.arms[0]}.json")
        calibrate_bundle(args.out, selection_data(spec["finetune"], args.data))
    except MomoGeoError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    card = json.loads((args.out / CARD_NAME).read_text())
    shipped = selection_point(card)  # its curve point is the first arm's: keep the scores
    print(json.dumps({"arms": args.arms, "coarse_passes": card["coarse_passes"],
                      "selection": {k: shipped[k] for k in (*PASS_SCORES, "min_diameter")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
