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

from dataclasses import dataclass
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
SIZES = (0.0, 4.0, 5.0, 6.0, 7.0, 8.0)
"""Smallest feature sizes tried with each floor (card ``min_diameter``: the diameter of the
disc of equal area, model pixels; 0: keep every speck)."""


def fine_probabilities(predictor: Any, select: Any) -> list[np.ndarray]:
    """One ``(K, H, W)`` probability map per selection image from the fine pass alone, as the
    engine ``map`` runs makes it (nodata -1); every sweep below reads these, so each image is
    predicted once per calibration."""
    from momo_geo.inference import predict_array

    return [predict_array(None, image, predictor=predictor, probabilities=True, coarse=False)[2]
            for image in select.images]


def floored_classes(probs: np.ndarray, positive: int, background: int, floor: float,
                    min_diameter: float = 0.0, max_diameter: float = 0.0) -> np.ndarray:
    """The class map of ``probs`` (nodata 255) with ``positive`` features below ``floor``,
    smaller than ``min_diameter`` or larger than ``max_diameter`` (0: no limit) erased, as the
    engine applies a card's floor and sizes (0.5 and 0: the argmax map as is)."""
    from momo_geo.inference.floor import disc_area, erase_weak
    from momo_geo.inference.stitch import NODATA_CLASS

    classes = np.where(probs[0] >= 0, probs.argmax(axis=0), NODATA_CLASS).astype(np.uint8)
    if floor > 0.5 or min_diameter > 0 or max_diameter > 0:
        caps = {positive: disc_area(max_diameter)} if max_diameter > 0 else {}
        erase_weak(classes, probs.max(axis=0), {positive: floor}, background,
                   min_pixels={positive: disc_area(min_diameter)}, max_pixels=caps)
    return classes


def floor_sweep(predictor: Any, select: Any, floors: tuple[float, ...] = FLOORS,
                min_diameter: float = MIN_DIAMETER_PX,
                probabilities: list[np.ndarray] | None = None,
                sizes: tuple[float, ...] = SIZES) -> list[dict[str, float]]:
    """Crater precision, recall, F1 and pixel IoU (pooled) on ``select`` (a crater
    :class:`TaskData` with circles) for each floor and smallest size (``sizes``, model pixels),
    from one probability map per image (``probabilities``, else :func:`fine_probabilities`).
    ``min_diameter`` is the scoring rule's (:func:`~momo_geo.metrics.match_craters`). The IoU
    shows what the floor costs in area: the largest craters are often the least confident."""
    from momo_geo.evaluate import crater_class
    from momo_geo.inference.floor import background_class

    card = predictor.card
    positive, background = crater_class(card), background_class(card)
    if probabilities is None:
        probabilities = fine_probabilities(predictor, select)
    gates = [(floor, size) for floor in floors for size in sizes]
    counts = np.zeros((len(gates), 3), np.int64)
    pixels = np.zeros((len(gates), 2), np.int64)  # crater pixels: intersection, union
    for probs, target, circles in zip(probabilities, select.targets, select.circles,
                                      strict=True):
        x, y, d = np.asarray(circles, dtype=np.float64).reshape(-1, 3).T
        truth = Circles.of(x, y, d)
        for k, (floor, size) in enumerate(gates):
            classes = floored_classes(probs, positive, background, floor, size)
            match = match_craters(mask_to_circles(classes, positive), truth, min_diameter)
            counts[k] += (match.tp, match.fp, match.fn)
            pred, truth_px = classes == positive, np.asarray(target) == positive
            pixels[k] += ((pred & truth_px).sum(), (pred | truth_px).sum())
    return [{"floor": floor, "min_diameter": size,
             **{key: round(value, 4) for key, value in crater_metrics(row).items()},
             "iou": round(float(px[0] / px[1]) if px[1] else 0.0, 4)}
            for (floor, size), row, px in zip(gates, counts, pixels, strict=True)]


COARSE_SCALES = (0.5, 0.25, 0.125)
COARSE_DIAMETERS = (16, 32, 64)
"""Smallest coarse feature kept (model pixels): about the crater sizes the fine pass, trained on
160 px chips, starts to see only in part."""
COARSE_FLOORS = (0.5, 0.7, 0.85)
COARSE_RESIDUALS = (0.15, 0.1)
"""Roundness gates tried (circle-fit residual). The fine pass's matched craters have a median
residual of about 0.09, its false ones about 0.18-0.21. Every coarse feature must be round:
an any-shape gate, and then a 0.25 one, won on the THEMIS-heavy selection images but outlined
kilometre-wide dark albedo bands on a CTX validation tile (a map no geologist could use), which
one CTX selection tile could not show."""
MAX_COARSE_PASSES = 2
CAP_WIDTHS = (0.0, 1.0)
"""Largest fine-pass feature tried, in training-chip widths (card ``input_size``; 0: no limit),
each with its own greedy choice of coarse passes."""


@dataclass
class SelectionMaps:
    """What the coarse-pass sweep needs of one selection image: the fine pass's classes at the
    chosen floor, the coarse probabilities and validity per scale, and the truth."""

    classes: np.ndarray
    coarse: dict[float, tuple[np.ndarray, np.ndarray] | None]
    truth: Circles
    truth_px: np.ndarray


def selection_maps(predictor: Any, select: Any, floor: float,
                   scales: tuple[float, ...] = COARSE_SCALES,
                   probabilities: list[np.ndarray] | None = None,
                   min_diameter: float = 0.0) -> list[SelectionMaps]:
    """One fine map (``probabilities``, else :func:`fine_probabilities`, at ``floor`` and
    smallest size ``min_diameter``) and one coarse probability map per scale for every
    selection image, made as the engine makes them."""
    from momo_geo.evaluate import crater_class
    from momo_geo.inference.engine import coarse_probabilities
    from momo_geo.inference.floor import background_class
    from momo_geo.inference.options import MapOptions
    from momo_geo.inference.reader import ArraySource

    card = predictor.card
    positive, background = crater_class(card), background_class(card)
    if probabilities is None:
        probabilities = fine_probabilities(predictor, select)
    maps = []
    for image, probs, target, circles in zip(select.images, probabilities, select.targets,
                                             select.circles, strict=True):
        classes = floored_classes(probs, positive, background, floor, min_diameter)
        source = ArraySource(image)
        h, w = classes.shape
        coarse = {s: coarse_probabilities(source, w, h, predictor, round(1 / s), MapOptions(),
                                          source.value_range()) for s in scales}
        x, y, d = np.asarray(circles, dtype=np.float64).reshape(-1, 3).T
        maps.append(SelectionMaps(classes, coarse, Circles.of(x, y, d),
                                  np.asarray(target) == positive))
    return maps


def with_passes(item: SelectionMaps, passes: list[dict[str, Any]], feature: int,
                background: int) -> np.ndarray:
    """The fine classes of ``item`` with each coarse pass of ``passes`` added, as the engine
    adds them."""
    from momo_geo.inference.coarse import add_coarse, kept_features, upsample_rows

    merged = item.classes.copy()
    h, w = merged.shape
    for spec in passes:
        coarse = item.coarse.get(spec["scale"])
        if coarse is None:
            continue
        k = round(1 / spec["scale"])
        kept = kept_features(*coarse, feature, background, spec["min_confidence"],
                             spec["min_diameter"] / k, spec.get("max_residual"))
        add_coarse(merged, None, upsample_rows(kept, k, 0, h, w), feature)
    return merged


def coarse_sweep(maps: list[SelectionMaps], feature: int, background: int,
                 chosen: list[dict[str, Any]] | None = None,
                 scales: tuple[float, ...] = COARSE_SCALES,
                 diameters: tuple[float, ...] = COARSE_DIAMETERS,
                 floors: tuple[float, ...] = COARSE_FLOORS,
                 residuals: tuple[float | None, ...] = COARSE_RESIDUALS,
                 min_diameter: float = MIN_DIAMETER_PX) -> list[dict[str, Any]]:
    """Crater precision, recall, F1 and pixel IoU (pooled) on the selection ``maps`` with the
    passes already ``chosen`` (the first row, ``scale`` None) and with each further pass: every
    scale not yet used, smallest diameter, coarse floor and roundness gate."""
    chosen = list(chosen or [])
    used = {spec["scale"] for spec in chosen}
    combos = [None] + [{"scale": s, "min_diameter": d, "min_confidence": f, "max_residual": r}
                       for s in scales if s not in used for d in diameters for f in floors
                       for r in residuals]
    counts = np.zeros((len(combos), 3), np.int64)
    pixels = np.zeros((len(combos), 2), np.int64)
    for item in maps:
        for k, spec in enumerate(combos):
            merged = with_passes(item, chosen + ([spec] if spec else []), feature, background)
            match = match_craters(mask_to_circles(merged, feature), item.truth, min_diameter)
            counts[k] += (match.tp, match.fp, match.fn)
            pred = merged == feature
            pixels[k] += ((pred & item.truth_px).sum(), (pred | item.truth_px).sum())
    return [{**(spec or {"scale": None}),
             **{key: round(value, 4) for key, value in crater_metrics(row).items()},
             "iou": round(float(px[0] / px[1]) if px[1] else 0.0, 4)}
            for spec, row, px in zip(combos, counts, pixels, strict=True)]


def choose_coarse_passes(predictor: Any, select: Any, floor: float, feature_name: str,
                         probabilities: list[np.ndarray] | None = None,
                         min_diameter: float = 0.0, caps: tuple[float, ...] = (0.0,)
                         ) -> tuple[float, list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """The fine pass's largest size (of ``caps``, model pixels; 0: none) and the coarse passes
    that go with it, by crater F1 + pixel IoU (the crater arms' selection criterion): for each
    cap the passes are chosen greedily, the best pass, then the best further pass at another
    scale, while one improves on what is chosen (ties go to fewer passes); the cap whose final
    map scores best wins (ties: no cap, then the larger). ``probabilities``: the fine pass's
    maps if already made (:func:`fine_probabilities`). Returns (cap, passes, the sweeps)."""
    from dataclasses import replace

    from momo_geo.evaluate import crater_class
    from momo_geo.inference.floor import background_class

    card = predictor.card
    feature, background = crater_class(card), background_class(card)
    if probabilities is None:
        probabilities = fine_probabilities(predictor, select)
    maps = selection_maps(predictor, select, floor, probabilities=probabilities,
                          min_diameter=min_diameter)
    best: tuple[float, float, list[dict[str, Any]], list[list[dict[str, Any]]]] | None = None
    for cap in sorted(caps, key=lambda c: (c > 0, -c)):
        capped = maps if not cap else [
            replace(item, classes=floored_classes(probs, feature, background, floor,
                                                  min_diameter, cap))
            for item, probs in zip(maps, probabilities, strict=True)]
        chosen, sweeps = _greedy_passes(capped, feature, background, feature_name)
        final = (sweeps[len(chosen)][0] if len(sweeps) > len(chosen)
                 else max(sweeps[-1], key=lambda row: row["crater_f1"] + row["iou"]))
        score = final["crater_f1"] + final["iou"]
        if best is None or score > best[0]:
            best = (score, cap, chosen, sweeps)
    if best is None:
        raise ValueError("choose_coarse_passes needs at least one cap (0: none)")
    return best[1], best[2], best[3]


def _greedy_passes(maps: list[SelectionMaps], feature: int, background: int,
                   feature_name: str) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    chosen: list[dict[str, Any]] = []
    sweeps = []
    for _ in range(MAX_COARSE_PASSES):
        sweep = coarse_sweep(maps, feature, background, chosen)
        sweeps.append(sweep)
        best = max(sweep, key=lambda row: row["crater_f1"] + row["iou"])
        if best["scale"] is None:
            break
        chosen.append({"class": feature_name, "scale": best["scale"],
                       "min_diameter": best["min_diameter"],
                       "min_confidence": best["min_confidence"],
                       "max_residual": best["max_residual"]})
    return chosen, sweeps


TILE_FLOORS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Floors tried for a classifier (0: none): a crop below the floor is background."""


def floored_tiles(probs: np.ndarray, card: Any, floor: float) -> np.ndarray:
    """Each crop's most likely class, or the background class where that is below ``floor``
    (one floor on every feature class, as a landmark card keeps it)."""
    from momo_geo.inference.floor import background_class, erase_weak

    background = background_class(card)
    features = [c.id for c in card.classes if c.id != background]
    classes = probs.argmax(axis=1)
    erase_weak(classes, probs.max(axis=1), dict.fromkeys(features, floor), background,
               pixelwise=True)
    return classes


def tile_floor_sweep(predictor: Any, select: Any, floors: tuple[float, ...] = TILE_FLOORS
                     ) -> list[dict[str, float]]:
    """:func:`tile_floor_rows` of ``predictor`` on ``select`` (a landmark :class:`TaskData`)."""
    from momo_geo.evaluate import predict_probabilities

    probs = predict_probabilities(predictor, select.images)
    return tile_floor_rows(probs, select.targets, predictor.card, floors)


def tile_floor_rows(probs: np.ndarray, targets: list[int], card: Any,
                    floors: tuple[float, ...] = TILE_FLOORS) -> list[dict[str, float]]:
    """Weighted and macro F1 of crops' class ``probs`` against ``targets`` for each floor on
    every non-background class; ``score`` is their mean, the landmark models' criterion."""
    from momo_geo.metrics import classification_report

    rows = []
    for floor in floors:
        classes = floored_tiles(probs, card, floor)
        report = classification_report(targets, classes, card.num_classes, 0,
                                       names=card.class_names)
        weighted, macro = float(report["f1_weighted"]), float(report["f1_macro"])
        rows.append({"floor": floor, "f1_weighted": round(weighted, 4),
                     "f1_macro": round(macro, 4), "score": round((weighted + macro) / 2, 4)})
    return rows


def choose_floor(sweep: list[dict[str, float]], key: str = "crater_f1") -> float:
    """The floor of the best ``key`` (the lowest such floor on a tie)."""
    return best_gate(sweep, key)["floor"]


def best_gate(sweep: list[dict[str, float]], key: str = "crater_f1") -> dict[str, float]:
    """The row of the best ``key``; on a tie the lowest floor, then the smallest size (the
    gate that erases least)."""
    best = max(row[key] for row in sweep)
    return min((row for row in sweep if row[key] == best),
               key=lambda row: (row["floor"], row.get("min_diameter", 0.0)))


def calibrate_bundle(path: str | Path, select: Any, coarse: bool = True,
                     held_out: tuple[list[int], dict[str, np.ndarray]] | None = None,
                     device: str = "cpu", tta: tuple[str, ...] = ("none",)) -> dict[str, Any]:
    """Sweep the floors of a saved bundle on ``select`` and record the chosen one in its card
    (``min_confidence``, and the sweep under ``training.calibration``); for a crater model
    then (``coarse``) its coarse passes at that floor (``coarse_passes``, maybe none).

    ``held_out`` (a classifier of cross-fitted members, :mod:`.members`): the training crops'
    targets and out-of-fold probabilities (one array per test-time augmentation), on which the
    floor is chosen instead; ``select`` (may be ``None``) is then only scored at each floor, for
    the record. ``tta``: the test-time augmentations to choose from by the same criterion
    (:mod:`momo_geo.inference.tta`; a tie keeps the first, the cheapest); the card records the
    chosen one. ``device``: where the sweeps run (the training's device)."""
    import json

    from momo_geo.bundle import load_bundle
    from momo_geo.training.finetune import set_card_fields

    bundle = load_bundle(str(path))
    bundle.card.min_confidence = {}  # sweep the raw maps, whatever was chosen before
    bundle.card.min_diameter = {}
    bundle.card.max_diameter = {}
    bundle.card.coarse_passes = []
    tried = {mode: _sweep_floors(bundle, mode, select, held_out, device) for mode in tta}
    chosen = max(tta, key=lambda mode: tried[mode]["score"])  # max keeps the first on a tie
    calibration, predictor = tried[chosen]["calibration"], tried[chosen]["predictor"]
    floor, names = calibration["floor"], calibration["class"]
    size = calibration.get("min_diameter", 0.0)
    floors = tried[chosen]["floors"]
    if len(tta) > 1:  # each one's choosing sweep, so arms can also be read without it
        calibration["tta"] = {"criterion": calibration["criterion"], "chosen": chosen,
                              "scores": {mode: tried[mode]["score"] for mode in tta},
                              "sweeps": {mode: _choosing_sweep(tried[mode]["calibration"])
                                         for mode in tta}}
    cap = 0.0
    passes: list[dict[str, Any]] = []
    if bundle.card.task == "segmentation" and coarse:
        chip = float(bundle.card.input_size)
        cap, passes, sweeps = choose_coarse_passes(predictor, select, floor, names[0],
                                                   tried[chosen]["probabilities"], size,
                                                   tuple(w * chip for w in CAP_WIDTHS))
        calibration["coarse"] = {"criterion": "crater_f1 + iou on the selection images, at the "
                                 "chosen floor and smallest size; for each largest fine size "
                                 "passes added greedily", "max_diameter": cap,
                                 "chosen": passes,
                                 "sweeps": sweeps}
    training = json.loads((Path(path) / "card.json").read_text()).get("training", {})
    training["calibration"] = calibration
    set_card_fields(Path(path), tta=chosen,
                    min_confidence={n: f for n, f in floors.items() if f > 0},
                    min_diameter={names[0]: size} if size > 0 else {},
                    max_diameter={names[0]: cap} if cap > 0 else {},
                    coarse_passes=passes, training=training)
    return calibration


def _sweep_floors(bundle: Any, tta: str, select: Any,
                  held_out: tuple[list[int], dict[str, np.ndarray]] | None,
                  device: str) -> dict[str, Any]:
    """One test-time augmentation's floor sweep (:func:`calibrate_bundle`): its calibration
    record, the floors it chose, its criterion score, the predictor and (craters) the fine
    probability maps the coarse passes reuse."""
    from momo_geo.evaluate import crater_class
    from momo_geo.inference.engine import Predictor
    from momo_geo.inference.options import is_background

    predictor = Predictor(bundle, device, tta=tta)
    probabilities, size = None, 0.0
    folds_sweep = None
    if bundle.card.task == "classification":
        names = [c.name for c in bundle.card.classes if not is_background(c.name)]
        criterion = "mean of f1_weighted and f1_macro on the selection images"
        if held_out is not None:
            folds_sweep = tile_floor_rows(held_out[1][tta], held_out[0], bundle.card)
            criterion = ("mean of f1_weighted and f1_macro on the out-of-fold predictions of "
                         "the training crops")
        sweep = folds_sweep if select is None else tile_floor_sweep(predictor, select)
        best = best_gate(folds_sweep or sweep, "score")
        floor, score = best["floor"], best["score"]
        floors = dict.fromkeys(names, floor)
    else:
        probabilities = fine_probabilities(predictor, select)
        sweep = floor_sweep(predictor, select, probabilities=probabilities)
        best = best_gate(sweep)
        floor, size, score = best["floor"], best["min_diameter"], best["crater_f1"]
        names = [bundle.card.class_names[crater_class(bundle.card)]]
        criterion = "crater_f1 on the selection images"
        floors = {names[0]: floor} if floor > 0.5 else {}
    calibration = {"criterion": criterion, "class": names, "floor": floor,
                   "selection_images": len(select.images) if select is not None else 0,
                   "sweep": sweep}
    if folds_sweep is not None:
        calibration.update(folds_sweep=folds_sweep, training_crops=len(held_out[0]))
    if size > 0:
        calibration["min_diameter"] = size
    return {"calibration": calibration, "floors": floors, "score": score,
            "predictor": predictor, "probabilities": probabilities}


def _choosing_sweep(calibration: dict[str, Any]) -> list[dict[str, float]]:
    """The sweep a calibration chose its floor on (out-of-fold crops, else selection)."""
    return calibration.get("folds_sweep") or calibration["sweep"]
