"""The ground scale of the HiRISE landmark crops, for the landmark card's ``gsd``.

The crops of the Wagstaff et al. landmark set have no single scale: each is the square box of
one landmark in a HiRISE *browse* image plus a margin of 30 browse pixels on every side,
resized to 227 px (the data set's description). A crop spans ``landmark + 60`` browse pixels,
so where the landmark fills a share ``f`` of the crop's width, the crop spans
``60 / (1 - f)`` browse pixels. Crater crops show ``f``: the crater model maps each crop, and
the largest crater near its centre gives ``f`` (its fitted diameter over 227). Crops whose
crater it does not find are left out.

Times the browse image's own scale (HiRISE browse products are reduced about tenfold from
the full-resolution 0.25-0.5 m/px product, ``--browse-range`` 2.5-5 m/px: 100 browse pixels
span about one 1,024-pixel detector channel, per the JPL HiRISE dust patch set, Zenodo
10.5281/zenodo.3495067; ``--browse-gsd`` 3.5 m/px, the range's geometric middle), that is
the ground span of a crop, and over the model's input size its GSD:
the median gives the card's ``gsd``, the 10th and 90th percentiles at the ends of the browse
range its ``gsd_range``. Only crater crops of the train split are read (no validation
product); the estimate is as good as its two inputs, and the card's notes say so.

    python training/landmark_scale.py --input-size 96
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from momo_geo.training.chips import default_data_root

MARGIN_PX = 30
"""Browse pixels added around each landmark's box on every side before resizing."""
CENTRE_SHARE = 0.35
"""A crater counts as the crop's landmark if its centre is this share of the crop from the
crop's centre (the box is centred on its landmark)."""


def crater_fill(bundle: str, images: list[np.ndarray]) -> np.ndarray:
    """Share of each crop's width filled by its central crater (NaN where none is found)."""
    from momo_geo.evaluate import crater_class, predict_mask
    from momo_geo.inference.engine import Predictor, as_bundle
    from momo_geo.metrics import mask_to_circles

    predictor = Predictor(as_bundle(bundle), "cpu")
    positive = crater_class(predictor.card)
    fill = np.full(len(images), np.nan)
    for i, image in enumerate(images):
        circles = mask_to_circles(predict_mask(predictor, image), positive)
        h, w = image.shape
        off = np.hypot(circles.x - (w - 1) / 2, circles.y - (h - 1) / 2)
        central = circles.diameter[off <= CENTRE_SHARE * max(h, w)]
        if central.size:
            fill[i] = min(central.max() / max(h, w), 0.95)
    return fill


def scale_estimate(fill: np.ndarray, input_size: int, browse_gsd: float,
                   browse_range: tuple[float, float]) -> dict[str, object]:
    """Browse-pixel spans of the crops and the model GSD they imply (see the module doc)."""
    found = fill[np.isfinite(fill)]
    span = 2 * MARGIN_PX / (1 - found)
    p10, p50, p90 = np.percentile(span, [10, 50, 90])
    return {"crater_crops": int(len(fill)), "crater_found": int(len(found)),
            "fill_median": round(float(np.median(found)), 3),
            "span_browse_px": {"p10": round(float(p10)), "median": round(float(p50)),
                               "p90": round(float(p90))},
            "input_size": input_size, "browse_gsd": browse_gsd, "browse_range": browse_range,
            "gsd": round(browse_gsd * p50 / input_size, 1),
            "gsd_range": [round(browse_range[0] * p10 / input_size, 1),
                          round(browse_range[1] * p90 / input_size, 1)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="crater bundle (default: bundled)")
    parser.add_argument("--input-size", type=int, default=96, help="landmark model input (px)")
    parser.add_argument("--browse-gsd", type=float, default=3.5, help="m per browse pixel")
    parser.add_argument("--browse-range", type=float, nargs=2, default=(2.5, 5.0))
    parser.add_argument("--data", type=Path, default=default_data_root())
    args = parser.parse_args(argv)

    import torch

    from momo_geo.evaluate import load_task_data

    torch.set_num_threads(1)
    train = load_task_data("landmarks", str(args.data / "hirise_landmarks"), "train")
    crater = train.classes.index("crater")
    crops = [img for img, t in zip(train.images, train.targets, strict=True) if t == crater]
    fill = crater_fill(args.model, crops)
    print(json.dumps(scale_estimate(fill, args.input_size, args.browse_gsd,
                                    tuple(args.browse_range))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
