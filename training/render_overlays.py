"""Render a crater-map overlay: a labelled image in grey, its labelled craters, a model's map.

The picture check of a crater model: truth circles (green where a prediction matched them,
yellow where missed), predicted crater outlines (red), and the matched predictions' fitted
circles (dashed cyan), with the image's crater precision / recall / F1 by the rule of
:mod:`momo_geo.metrics`. The model runs through :func:`momo_geo.inference.predict_array`, the
engine of ``momo-geo map``, on the whole image, exactly as ``momo-geo evaluate`` scores it.

    python training/render_overlays.py --task ctx-craters --data ../shared/data/ctx_craters \
        --image MC11E-D --window 600 600 500 -o docs/img/overlay_ctx.png
    python training/render_overlays.py --task themis-craters \
        --data ../shared/data/themis_craters --image crater12 -o docs/img/overlay_themis.png
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from momo_geo.errors import MomoGeoError
from momo_geo.evaluate import (
    BUNDLED_FOR_TASK,
    GSD_M_PER_PX,
    crater_class,
    label_circles,
)
from momo_geo.metrics import MIN_DIAMETER_PX, Circles, mask_to_circles, match_craters


def load_item(task: str, root: str, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 (H, W), labelled circles (N, 3)) of one image of a crater folder."""
    from momo_geo.datasets import CTXCraters, THEMISCraters

    if task not in ("ctx-craters", "themis-craters"):
        raise MomoGeoError(f"overlays are for crater tasks, not {task!r}")
    data = (CTXCraters if task == "ctx-craters" else THEMISCraters)(root, split="all")
    if image_id not in data.ids:
        raise MomoGeoError(f"{root}: no image {image_id!r} (e.g. {', '.join(data.ids[:3])})")
    index = data.ids.index(image_id)
    image, _ = data.arrays(index)
    return image, label_circles(data, index, image.shape)


def render(image: np.ndarray, truth: np.ndarray, classes: np.ndarray, positive: int,
           out: Path, title: str, window: tuple[int, int, int] | None,
           min_diameter: float = MIN_DIAMETER_PX) -> dict[str, Any]:
    """Draw the overlay into ``out`` (PNG) and return the image's crater counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    predicted = mask_to_circles(classes, positive)
    labelled = Circles.of(*truth.reshape(-1, 3).T)
    match = match_craters(predicted, labelled, min_diameter)
    scored = labelled.subset(labelled.diameter >= min_diameter)
    fig, ax = plt.subplots(figsize=(8, 8), dpi=150)
    ax.imshow(image, cmap="gray", interpolation="nearest")
    ax.contour(classes == positive, levels=[0.5], colors="red", linewidths=0.7)
    for x, y, d, found in zip(scored.x, scored.y, scored.diameter, match.truth_found,
                              strict=True):
        ax.add_patch(Circle((x, y), d / 2, fill=False, lw=1.0,
                            ec="lime" if found else "yellow"))
    hits = predicted.subset(match.pairs[:, 1])
    for x, y, d in zip(hits.x, hits.y, hits.diameter, strict=True):
        ax.add_patch(Circle((x, y), d / 2, fill=False, lw=0.8, ls="--", ec="cyan"))
    col, row = (window[0], window[1]) if window else (0, 0)
    height, width = (window[2], window[2]) if window else image.shape
    ax.set_xlim(col - 0.5, col + width - 0.5)  # circles cut by the image edge stay cut
    ax.set_ylim(row + height - 0.5, row - 0.5)
    precision = match.tp / (match.tp + match.fp) if match.tp + match.fp else 0.0
    recall = match.tp / (match.tp + match.fn) if match.tp + match.fn else 0.0
    f1 = 2 * match.tp / (2 * match.tp + match.fp + match.fn) if match.tp + match.fn else 0.0
    ax.set_title(f"{title}\ncraters ≥ {min_diameter:g} px: precision {precision:.2f}, "
                 f"recall {recall:.2f}, F1 {f1:.2f} (tp {match.tp}, fp {match.fp}, "
                 f"fn {match.fn}); green/yellow: labelled found/missed, red: predicted",
                 fontsize=8)
    ax.set_axis_off()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return {"tp": match.tp, "fp": match.fp, "fn": match.fn, "f1": f1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=["ctx-craters", "themis-craters"])
    parser.add_argument("--data", required=True, help="the ctx_craters or themis_craters folder")
    parser.add_argument("--image", required=True, help="image id, e.g. MC11E-D or crater12")
    parser.add_argument("--model", default=None, help="bundle (default: the bundled crater model)")
    parser.add_argument("--window", nargs=3, type=int, metavar=("COL", "ROW", "SIZE"),
                        help="show only this square of the image (the map covers all of it)")
    parser.add_argument("--min-diameter", type=float, default=MIN_DIAMETER_PX)
    parser.add_argument("-o", "--out", required=True, type=Path, help="PNG to write")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Unable to import Axes3D")
    from momo_geo.inference import predict_array
    from momo_geo.inference.engine import Predictor, as_bundle

    try:
        image, truth = load_item(args.task, args.data, args.image)
        predictor = Predictor(as_bundle(args.model or BUNDLED_FOR_TASK[args.task]), "cpu")
        classes, _ = predict_array(None, image, predictor=predictor)
        title = (f"{args.image} ({args.task}, {GSD_M_PER_PX[args.task]:g} m/px), "
                 f"model {predictor.card.name}")
        counts = render(image, truth, classes, crater_class(predictor.card), args.out, title,
                        args.window, args.min_diameter)
    except MomoGeoError as exc:
        print(f"render_overlays: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
