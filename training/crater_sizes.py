"""Where a crater model loses pixel IoU, by crater size, on its selection images.

THEMIS pixel IoU is the one crater target the bundled model misses, and a fix must be chosen
on the images held out of training, never on validation. This script answers, for one arm on
its own selection images (one CTX tile and a tenth of the THEMIS train crops, as
``finetune`` held them out):

- which share of the labelled crater pixels of each diameter bin the map covers;
- whether the outlines of matched craters are too small or too large (median ratio of the
  fitted to the labelled diameter per bin): a systematic ratio would call for resizing;
- pixel IoU and crater F1 when every mapped crater is grown outwards by a share of its own
  diameter (1.0: as mapped), the test of that fix;
- pixel IoU had every labelled crater of a bin and the larger bins been mapped whole (the
  rest as mapped): how much of the IoU target each size holds.

Given the arms of a chain of continuations (``--out FILE``: one JSON line per arm and task,
appended), it is the learning curve by crater size that ``docs/results.md`` shows
(``docs/crater_size_curve.jsonl``): which sizes more training reached, and which it did not.

The maps are the engine's (:func:`momo_geo.evaluate.predict_mask`, floor, sizes and coarse
passes as the card says), exactly as ``momo-geo evaluate`` scores them.

    python training/crater_sizes.py build/bundles/craters-unet-longest.bundle
    python training/crater_sizes.py build/bundles/craters-unet{,-long,-longer}.bundle \
        --out docs/crater_size_curve.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from momo_geo.metrics import (
    Circles,
    CraterMatch,
    crater_metrics,
    mask_to_circles,
    match_craters,
    pixel_counts,
    segmentation_metrics,
)
from momo_geo.training.chips import default_data_root

BINS = (8.0, 32.0, 64.0, 128.0, 256.0, float("inf"))
"""Labelled-diameter bins (px); craters under 8 px are not scored (:mod:`momo_geo.metrics`)."""
GROWTH = (1.0, 1.1, 1.2)


def grow(craters: np.ndarray, factor: float) -> np.ndarray:
    """``craters`` (bool) with each connected crater grown outwards by ``(factor - 1) / 2`` of
    its equal-area diameter; a background pixel joins the nearest crater within its reach."""
    from scipy import ndimage

    if factor == 1.0:
        return craters
    labels, n = ndimage.label(ndimage.binary_fill_holes(craters))
    if n == 0:
        return craters
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    reach = np.concatenate([[0.0], (factor - 1) * np.sqrt(area / np.pi)])
    distance, (rows, cols) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    return craters | ((labels == 0) & (distance <= reach[labels[rows, cols]]))


def size_report(masks: list[np.ndarray], targets: list[np.ndarray], circles: list[np.ndarray]
                ) -> dict[str, object]:
    """Coverage and diameter ratio per bin, and IoU / F1 per growth factor."""
    n_bins = len(BINS) - 1
    labelled, covered, counted = np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins, int)
    ratios: list[list[float]] = [[] for _ in range(n_bins)]
    truths = [Circles.of(*np.asarray(rows, dtype=float).reshape(-1, 3).T) for rows in circles]
    growth = {}
    for factor in GROWTH:
        pixels, objects = [], []
        for craters, target, truth in zip(masks, targets, truths, strict=True):
            grown = grow(craters, factor)
            pixels.append(pixel_counts(grown.astype(np.uint8), target, valid=target != 255))
            mapped = mask_to_circles(grown.astype(np.uint8), 1)
            match = match_craters(mapped, truth)
            objects.append((match.tp, match.fp, match.fn))
            if factor == 1.0:
                _by_size(grown, truth, match, mapped, (labelled, covered, counted), ratios)
        growth[f"{factor:g}"] = {
            "iou": round(segmentation_metrics(np.array(pixels))["iou"], 3),
            "crater_f1": round(crater_metrics(np.array(objects))["crater_f1"], 3)}
    bins = [{"min_px": BINS[k], "craters": int(counted[k]), "labelled_px": int(labelled[k]),
             "covered": round(covered[k] / labelled[k], 3) if labelled[k] else None,
             "matched": len(ratios[k]),
             "diameter_ratio": round(float(np.median(ratios[k])), 3) if ratios[k] else None,
             "iou_if_whole_from_here": whole}
            for k, whole in zip(range(n_bins), iou_if_whole(masks, targets, truths), strict=True)]
    return {"bins": bins, "growth": growth}


def iou_if_whole(masks: list[np.ndarray], targets: list[np.ndarray], truths: list[Circles]
                 ) -> list[float]:
    """Per bin, the pixel IoU of the maps with every labelled crater of that bin or a larger one
    added whole (its disc), the rest as mapped: what covering those sizes would be worth."""
    ious = []
    for low in BINS[:-1]:
        pixels = []
        for craters, target, truth in zip(masks, targets, truths, strict=True):
            rows, cols = np.indices(craters.shape)
            whole = craters.copy()
            for x, y, d in zip(truth.x, truth.y, truth.diameter, strict=True):
                if d >= low:
                    whole |= (cols - x) ** 2 + (rows - y) ** 2 <= (d / 2) ** 2
            pixels.append(pixel_counts(whole.astype(np.uint8), target, valid=target != 255))
        ious.append(round(segmentation_metrics(np.array(pixels))["iou"], 3))
    return ious


def _by_size(craters: np.ndarray, truth: Circles, match: CraterMatch, mapped: Circles,
             sums: tuple[np.ndarray, np.ndarray, np.ndarray], ratios: list[list[float]]
             ) -> None:
    """Add one image to the per-bin sums (labelled pixels, covered pixels, craters) and the
    matched craters' diameter ratios."""
    labelled, covered, counted = sums
    rows, cols = np.indices(craters.shape)
    for x, y, d in zip(truth.x, truth.y, truth.diameter, strict=True):
        if d < BINS[0]:
            continue
        k = int(np.searchsorted(BINS, d, side="right")) - 1
        disc = (cols - x) ** 2 + (rows - y) ** 2 <= (d / 2) ** 2
        labelled[k] += disc.sum()
        counted[k] += 1
        covered[k] += (disc & craters).sum()
    scored = truth.subset(truth.diameter >= BINS[0])
    for t, p in match.pairs:
        d = scored.diameter[t]
        ratios[int(np.searchsorted(BINS, d, side="right")) - 1].append(mapped.diameter[p] / d)


def selection_images(bundle: Path, data: Path) -> dict[str, object]:
    """The selection images of each crater data folder of the arm, as its training held them."""
    from momo_geo.bundle import load_bundle
    from momo_geo.evaluate import load_task_data
    from momo_geo.training.finetune import Recipe, selection_split

    card = load_bundle(str(bundle)).card
    recipe = Recipe.from_dict(card.training["recipe"])
    out = {}
    for task, folder in (("themis-craters", "themis_craters"), ("ctx-craters", "ctx_craters")):
        _, select = selection_split(task, [load_task_data(task, str(data / folder), "train")],
                                    recipe)
        out[task] = select
    return out


def main(argv: list[str] | None = None) -> int:
    import json

    import torch

    from momo_geo.bundle import load_bundle
    from momo_geo.evaluate import predict_mask
    from momo_geo.inference.engine import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path, nargs="+",
                        help="crater arms' bundles (build/.../ARM.bundle)")
    parser.add_argument("--data", type=Path, default=default_data_root())
    parser.add_argument("--out", type=Path, help="also append each line to this JSON-lines file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for bundle in args.bundles:
        predictor = Predictor(load_bundle(str(bundle)))
        for task, select in selection_images(bundle, args.data).items():
            masks = [predict_mask(predictor, image) == 1 for image in select.images]
            report = size_report(masks, select.targets, select.circles)
            line = json.dumps({"arm": arm_name(bundle), "task": task,
                               "images": len(select.images), **report})
            print(line, flush=True)
            if args.out is not None:
                with args.out.open("a") as out:
                    out.write(line + "\n")
    return 0


def arm_name(bundle: Path) -> str:
    """The arm a bundle folder holds: ``build/bundles/craters-unet.bundle`` -> ``craters-unet``."""
    return bundle.name.removesuffix(".bundle")


if __name__ == "__main__":
    sys.exit(main())
