"""Evaluation: the metrics MOMO reports, bootstrap intervals, and a bundle's score on a task.

Tasks (names as on the command line) and their data folders (the layout of ``../shared/data``):

- ``landmarks``: HiRISE landmark crops, 8 classes; weighted F1 (Mars-Bench's headline), macro F1
  and accuracy;
- ``ctx-craters`` / ``themis-craters``: crater masks from boxes; crater IoU over the whole
  dataset (pixels pooled: big and small images weigh by area), the per-image mean IoU (the
  convention of the MOMO authors' code, reported alongside because it weighs every image the
  same) and pixel F1.

Intervals are percentile bootstraps over *images* (the unit that was sampled), 95 % by default,
with a fixed seed so that a number printed twice is the same number.
Segmentation images larger than the model's input are mapped with the same sliding-window engine
as ``momo-geo map`` (:func:`momo_geo.inference.predict_array`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from momo_geo.errors import MomoGeoError

TASKS = ("landmarks", "ctx-craters", "themis-craters")
TASK_KIND = {"landmarks": "classification", "ctx-craters": "segmentation",
             "themis-craters": "segmentation"}
BUNDLED_FOR_TASK = {"landmarks": "landmarks", "ctx-craters": "craters",
                    "themis-craters": "craters"}
N_BOOT = 1000


# ----------------------------------------------------------------------------- metrics


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``cm[t, p]`` counts, rows true class, columns predicted class."""
    idx = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def f1_scores(cm: np.ndarray) -> dict[str, float]:
    """Weighted F1 (by true-class support), macro F1 (classes present in truth or prediction)
    and accuracy from a confusion matrix."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    total = support.sum()
    present = denom > 0
    return {
        "f1_weighted": float((f1 * support).sum() / total) if total else 0.0,
        "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
        "accuracy": float(tp.sum() / total) if total else 0.0,
    }


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int],
                           n_classes: int) -> dict[str, float]:
    return f1_scores(confusion_matrix(np.asarray(y_true), np.asarray(y_pred), n_classes))


def pixel_counts(pred: np.ndarray, truth: np.ndarray, positive: int = 1,
                 valid: np.ndarray | None = None) -> tuple[int, int, int]:
    """(tp, fp, fn) of the ``positive`` class in one image."""
    p = np.asarray(pred) == positive
    t = np.asarray(truth) == positive
    if valid is not None:
        p = p & valid
        t = t & valid
    tp = int(np.count_nonzero(p & t))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp


def segmentation_metrics(counts: np.ndarray) -> dict[str, float]:
    """From per-image ``(tp, fp, fn)`` rows: dataset IoU, per-image mean IoU, pixel F1.

    The per-image mean skips images where prediction and truth are both empty (IoU undefined).
    """
    counts = np.asarray(counts, dtype=np.float64).reshape(-1, 3)
    tp, fp, fn = counts.sum(axis=0)
    union = tp + fp + fn
    per_union = counts.sum(axis=1)
    defined = per_union > 0
    per_image = counts[defined, 0] / per_union[defined]
    return {
        "iou": float(tp / union) if union else 0.0,
        "iou_per_image_mean": float(per_image.mean()) if defined.any() else 0.0,
        "f1_pixel": float(2 * tp / (2 * tp + fp + fn)) if union else 0.0,
    }


def bootstrap_ci(n: int, statistic: Callable[[np.ndarray], dict[str, float]],
                 n_boot: int = N_BOOT, alpha: float = 0.05,
                 seed: int = 0) -> dict[str, list[float]]:
    """Percentile intervals of every metric ``statistic(indices)`` returns, resampling items."""
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        for key, value in statistic(rng.integers(0, n, size=n)).items():
            samples.setdefault(key, []).append(value)
    return {f"{key}_ci": [float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))]
            for key, v in samples.items()}


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int,
                          n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Metrics plus bootstrap intervals for tile classification."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    result: dict[str, Any] = {"n": int(len(y_true))}
    result.update(classification_metrics(y_true, y_pred, n_classes))
    if len(y_true):
        result.update(bootstrap_ci(len(y_true), lambda i: classification_metrics(
            y_true[i], y_pred[i], n_classes), n_boot, seed=seed))
    return result


def segmentation_report(counts: np.ndarray, n_boot: int = N_BOOT,
                        seed: int = 0) -> dict[str, Any]:
    """Metrics plus bootstrap intervals (over images) for crater segmentation."""
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 3)
    result: dict[str, Any] = {"n": int(len(counts))}
    result.update(segmentation_metrics(counts))
    if len(counts):
        result.update(bootstrap_ci(len(counts), lambda i: segmentation_metrics(counts[i]),
                                   n_boot, seed=seed))
    return result


# ----------------------------------------------------------------------------- data


@dataclass
class TaskData:
    """A task's split, as plain arrays: what evaluation and fine-tuning both consume."""

    task: str
    images: list[np.ndarray]
    """Raw grey images ``(H, W)`` float32 (sizes may differ)."""
    targets: list[Any]
    """Class index per image (classification) or ``(H, W)`` uint8 0/1 crater mask."""
    groups: list[str]
    """Unit of splitting: HiRISE product_id, CTX tile, THEMIS crop id."""
    classes: list[str]
    weights: list[float] | None = None
    """Optional sampling weight per image for training chips (default: by area)."""


def load_task_data(task: str, root: str, split: str = "val") -> TaskData:
    """Load a task's ``split`` ("train" or "val") from a folder laid out like ``../shared/data``.

    Splits come from :mod:`momo_geo.datasets` (by HiRISE observation and by CTX tile), so train
    and validation never share an observation or a tile.
    """
    if task not in TASKS:
        raise MomoGeoError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
    from pathlib import Path

    if not Path(root).is_dir():
        raise MomoGeoError(f"{root}: no such data folder")
    cls = _dataset_class(task)
    if cls is None:  # pragma: no cover - an incomplete install
        raise MomoGeoError(f"momo_geo.datasets has no loader for {task}")
    try:
        data = cls(root, split=split)
    except MomoGeoError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise MomoGeoError(f"{root}: not a {task} data folder ({exc})") from None
    images, targets, groups = [], [], []
    for i in range(len(data)):
        item = data[i]
        image = np.asarray(item["image"], dtype=np.float32)
        images.append(image[0] if image.ndim == 3 else image)
        if task == "landmarks":
            targets.append(int(item["label"]))
            groups.append(str(item["product_id"]))
        else:
            targets.append(np.asarray(item["mask"], dtype=np.uint8))
            groups.append(str(item["id"]))
    classes = list(getattr(data, "classes", []) or ([] if task == "landmarks"
                                                     else ["background", "crater"]))
    if not images:
        raise MomoGeoError(f"{root}: the {split} split of {task} is empty")
    return TaskData(task, images, targets, groups, classes)


def _dataset_class(task: str) -> Any:
    """The :mod:`momo_geo.datasets` class of a task, or None where it is not installed."""
    import importlib

    name = {"landmarks": "HiRISELandmarks", "ctx-craters": "CTXCraters",
            "themis-craters": "THEMISCraters"}[task]
    for module in ("momo_geo.datasets", "momo_geo.datasets.landmarks",
                   "momo_geo.datasets.craters"):
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if found is not None:
            return found
    return None


# ----------------------------------------------------------------------------- models


def _input_batch(images: Sequence[np.ndarray], card: Any) -> Any:
    """Raw grey images of one size -> normalised model input at ``card.input_size``."""
    import torch
    import torch.nn.functional as F

    from momo_geo.preprocess import to_model_input

    x = torch.from_numpy(np.stack(images)).float().unsqueeze(1)
    if x.shape[-1] != card.input_size or x.shape[-2] != card.input_size:
        x = F.interpolate(x, size=(card.input_size, card.input_size), mode="area")
    norm = card.normalization
    return to_model_input(x, norm["mean"], norm["std"], card.in_chans)


def predict_classes(model: Any, card: Any, images: Sequence[np.ndarray],
                    batch_size: int = 64) -> np.ndarray:
    """Class index per image: each image resized to the model input (crops are tiles)."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            logits = model(_input_batch(images[start:start + batch_size], card))
            out.append(logits.argmax(dim=1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def predict_mask(predictor: Any, image: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Class map of one image at its own size, by the mapping engine's sliding window.

    ``predictor`` is a :class:`momo_geo.inference.engine.Predictor` (model + card). An image no
    larger than the model input is one tile; a larger one is tiled with the card's overlap and
    stitched exactly as ``momo-geo map`` does.
    """
    from momo_geo.inference import predict_array

    class_map, _ = predict_array(None, image, predictor=predictor, batch_size=batch_size)
    return np.asarray(class_map, dtype=np.uint8)


def evaluate_model(model: Any, card: Any, data: TaskData, n_boot: int = N_BOOT,
                   device: str = "cpu") -> dict[str, Any]:
    """Score a built model on a task split: metrics, intervals, ``task`` and ``n``."""
    if TASK_KIND[data.task] != card.task:
        raise MomoGeoError(f"model {card.name!r} is a {card.task} model; task {data.task} "
                           f"needs a {TASK_KIND[data.task]} model")
    model.eval()
    if card.task == "classification":
        if data.classes and card.class_names and data.classes != card.class_names:
            raise MomoGeoError(f"model classes {card.class_names} differ from the data's "
                               f"{data.classes}")
        pred = predict_classes(model, card, data.images)
        report = classification_report(data.targets, pred, max(card.num_classes,
                                                               len(data.classes)), n_boot)
    else:
        from momo_geo.bundle import Bundle
        from momo_geo.inference.engine import Predictor

        predictor = Predictor(Bundle(card, model.state_dict()), device=device)
        counts = np.array([pixel_counts(predict_mask(predictor, img), mask)
                           for img, mask in zip(data.images, data.targets, strict=True)],
                          dtype=np.int64)
        report = segmentation_report(counts, n_boot)
    return {"task": data.task, **report}


def evaluate_bundle(task: str, data_root: str, model: str | None = None,
                    split: str = "val", n_boot: int = N_BOOT,
                    device: str = "cpu") -> dict[str, Any]:
    """``momo-geo evaluate``: load a bundle (default: the bundled one for the task) and score it."""
    from momo_geo.bundle import load_bundle

    if task not in TASKS:
        raise MomoGeoError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
    bundle = load_bundle(model if model is not None else BUNDLED_FOR_TASK[task])
    net = bundle.build_model()
    data = load_task_data(task, data_root, split)
    result = evaluate_model(net, bundle.card, data, n_boot, device)
    result["model"] = bundle.card.name
    result["split"] = split
    return result
