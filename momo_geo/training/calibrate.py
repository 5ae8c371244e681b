"""Choose a model's confidence floor on the images held out for selection.

The floor (:mod:`momo_geo.inference.floor`) trades recall for precision: a mapped crater whose
mean probability is below it is erased. It is chosen the way the recipe itself is chosen, on
the selection images that training never saw and never on the validation split the results
report: every floor of :data:`FLOORS` is applied to the same probability maps, and the one with
the best object-level crater F1 (pooled over the selection images) is written into the card
with the whole sweep, so the choice can be read back. A landmark classifier gets one floor for
all its feature classes (a crop below it is "other"), chosen by the mean of weighted and macro
F1, the criterion its recipe is chosen by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from momo_geo.metrics import (
    MIN_DIAMETER_PX,
    Circles,
    crater_metrics,
    mask_to_circles,
    match_craters,
)

FLOORS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
"""Floors tried: 0.5 (no floor: the argmax map as is) to 0.95."""


def floor_sweep(predictor: Any, select: Any, floors: tuple[float, ...] = FLOORS,
                min_diameter: float = MIN_DIAMETER_PX) -> list[dict[str, float]]:
    """Crater precision, recall, F1 and pixel IoU (pooled) on ``select`` (a crater
    :class:`TaskData` with circles) for each floor, from one probability map per image (the
    engine ``map`` runs). The IoU shows what the floor costs in area: the largest craters are
    often the least confident."""
    from momo_geo.evaluate import crater_class
    from momo_geo.inference import predict_array
    from momo_geo.inference.floor import background_class, erase_weak

    card = predictor.card
    positive, background = crater_class(card), background_class(card)
    counts = np.zeros((len(floors), 3), np.int64)
    pixels = np.zeros((len(floors), 2), np.int64)  # crater pixels: intersection, union
    for image, target, circles in zip(select.images, select.targets, select.circles,
                                      strict=True):
        _, _, probs = predict_array(None, image, predictor=predictor, probabilities=True)
        valid = probs[0] >= 0
        x, y, d = np.asarray(circles, dtype=np.float64).reshape(-1, 3).T
        truth = Circles.of(x, y, d)
        for k, floor in enumerate(floors):
            classes = np.where(valid, probs.argmax(axis=0), 255).astype(np.uint8)
            erase_weak(classes, probs.max(axis=0), {positive: floor}, background)
            match = match_craters(mask_to_circles(classes, positive), truth, min_diameter)
            counts[k] += (match.tp, match.fp, match.fn)
            pred, truth_px = classes == positive, np.asarray(target) == positive
            pixels[k] += ((pred & truth_px).sum(), (pred | truth_px).sum())
    return [{"floor": floor, **{key: round(value, 4) for key, value in
                                 crater_metrics(row).items()},
             "iou": round(float(px[0] / px[1]) if px[1] else 0.0, 4)}
            for floor, row, px in zip(floors, counts, pixels, strict=True)]


TILE_FLOORS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Floors tried for a classifier (0: none): a crop below the floor is background."""


def tile_floor_sweep(predictor: Any, select: Any, floors: tuple[float, ...] = TILE_FLOORS
                     ) -> list[dict[str, float]]:
    """Weighted and macro F1 on ``select`` (a landmark :class:`TaskData`) for each floor on
    every non-background class, from one probability vector per crop; ``score`` is their
    mean, the landmark models' selection criterion."""
    from momo_geo.evaluate import predict_probabilities
    from momo_geo.inference.floor import background_class, erase_weak
    from momo_geo.metrics import classification_report

    card = predictor.card
    background = background_class(card)
    probs = predict_probabilities(predictor, select.images)
    features = [c.id for c in card.classes if c.id != background]
    rows = []
    for floor in floors:
        classes = probs.argmax(axis=1)
        erase_weak(classes, probs.max(axis=1), dict.fromkeys(features, floor), background,
                   pixelwise=True)
        report = classification_report(select.targets, classes, card.num_classes, 0,
                                       names=card.class_names)
        weighted, macro = float(report["f1_weighted"]), float(report["f1_macro"])
        rows.append({"floor": floor, "f1_weighted": round(weighted, 4),
                     "f1_macro": round(macro, 4), "score": round((weighted + macro) / 2, 4)})
    return rows


def choose_floor(sweep: list[dict[str, float]], key: str = "crater_f1") -> float:
    """The floor of the best ``key`` (the lowest such floor on a tie)."""
    best = max(row[key] for row in sweep)
    return min(row["floor"] for row in sweep if row[key] == best)


def calibrate_bundle(path: str | Path, select: Any) -> dict[str, Any]:
    """Sweep the floors of a saved crater bundle on ``select`` and record the chosen one in
    its card (``min_confidence``, and the sweep under ``training.calibration``)."""
    import json

    from momo_geo.bundle import load_bundle
    from momo_geo.evaluate import crater_class
    from momo_geo.inference.engine import Predictor
    from momo_geo.inference.options import is_background
    from momo_geo.training.finetune import set_card_fields

    bundle = load_bundle(str(path))
    bundle.card.min_confidence = {}  # sweep the raw maps, whatever was chosen before
    predictor = Predictor(bundle, "cpu")
    if bundle.card.task == "classification":
        sweep = tile_floor_sweep(predictor, select)
        floor = choose_floor(sweep, "score")
        names = [c.name for c in bundle.card.classes if not is_background(c.name)]
        criterion, floors = "mean of f1_weighted and f1_macro", dict.fromkeys(names, floor)
    else:
        sweep = floor_sweep(predictor, select)
        floor = choose_floor(sweep)
        names = [bundle.card.class_names[crater_class(bundle.card)]]
        criterion, floors = "crater_f1", ({names[0]: floor} if floor > 0.5 else {})
    calibration = {"criterion": f"{criterion} on the selection images", "class": names,
                   "floor": floor, "selection_images": len(select.images), "sweep": sweep}
    training = json.loads((Path(path) / "card.json").read_text()).get("training", {})
    training["calibration"] = calibration
    set_card_fields(Path(path), min_confidence={n: f for n, f in floors.items() if f > 0},
                    training=training)
    return calibration
