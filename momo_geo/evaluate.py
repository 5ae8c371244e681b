"""Evaluation: a bundle's score on a labelled folder, run through the mapping engine.

Tasks (names as on the command line) and their data folders (the layout of ``../shared/data``):

- ``landmarks``: HiRISE landmark crops, 8 classes; weighted F1 (Mars-Bench's headline), macro F1,
  accuracy and F1 / precision / recall / support per class. Each crop is one map tile: resized
  to the model's input (pixel averaging, as the engine resamples), scaled by the one input
  scaling function (:func:`momo_geo.preprocess.to_model_input`, the crop being the scene) and
  classified by the engine's :class:`~momo_geo.inference.engine.Predictor`;
- ``ctx-craters`` / ``themis-craters``: every whole image is mapped by
  :func:`momo_geo.inference.predict_array`, the engine of ``momo-geo map``, so the scores are
  what a user gets. Pixels: crater IoU over the dataset (pixels pooled), the per-image mean IoU
  (the MOMO authors' convention) and pixel F1. Objects: crater precision, recall and F1 by the
  matching rule of :mod:`momo_geo.metrics`, recall per diameter bin in pixels and metres.

Splits: ``train`` / ``val`` are the project's fixed splits (:mod:`momo_geo.datasets`: by HiRISE
observation, CTX tile, THEMIS crop); ``all`` scores every labelled image; ``auto`` (the command
line's default) is ``val`` for the project's reference folders (named ``hirise_landmarks``,
``ctx_craters``, ``themis_craters`` as in ``../shared/data``: the models were trained on their
other part) and ``all`` for any other folder, a user's own test set.

The metric functions themselves live in :mod:`momo_geo.metrics` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from momo_geo.errors import MomoGeoError
from momo_geo.metrics import (
    MIN_DIAMETER_PX,
    N_BOOT,
    Circles,
    CraterMatch,
    bootstrap_ci,
    classification_metrics,
    classification_report,
    confusion_matrix,
    crater_report,
    f1_scores,
    mask_to_circles,
    match_craters,
    per_class_scores,
    pixel_counts,
    segmentation_metrics,
    segmentation_report,
)

__all__ = [
    "BUNDLED_FOR_TASK", "GSD_M_PER_PX", "MIN_DIAMETER_PX", "N_BOOT", "REFERENCE_FOLDERS",
    "SPLITS", "TASKS", "TASK_KIND", "TaskData", "bootstrap_ci", "classification_metrics",
    "classification_report", "confusion_matrix", "crater_class", "default_split",
    "evaluate_bundle", "evaluate_model", "f1_scores", "label_circles", "load_task_data",
    "per_class_scores", "pixel_counts", "predict_classes", "predict_mask",
    "segmentation_metrics", "segmentation_report",
]

TASKS = ("landmarks", "ctx-craters", "themis-craters")
TASK_KIND = {"landmarks": "classification", "ctx-craters": "segmentation",
             "themis-craters": "segmentation"}
BUNDLED_FOR_TASK = {"landmarks": "landmarks", "ctx-craters": "craters",
                    "themis-craters": "craters"}
SPLITS = ("auto", "val", "train", "all")
REFERENCE_FOLDERS = {"landmarks": "hirise_landmarks", "ctx-craters": "ctx_craters",
                     "themis-craters": "themis_craters"}
"""Folder names of the project's labelled data (``../shared/data``), whose ``val`` split is
held out from training."""
GSD_M_PER_PX = {"ctx-craters": 6.0, "themis-craters": 100.0}
"""Metres per pixel of the crater data: the CTX Mars Crater Catalogue tiles (~6 m/px) and the
THEMIS daytime-IR mosaic crops (100 m/px), for the metre diameter bins."""


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
    circles: list[np.ndarray] | None = None
    """Labelled craters per image, ``(N, 3)`` = centre x, centre y (pixel-centre coordinates),
    diameter in pixels; ``None`` where unknown (no object-level crater metrics then)."""


def default_split(task: str, root: str | Path) -> str:
    """What ``--split auto`` means for ``root``: ``val`` for a reference folder of the project
    (named as in ``../shared/data``), ``all`` for anyone else's labelled folder."""
    return "val" if Path(root).name == REFERENCE_FOLDERS.get(task) else "all"


def load_task_data(task: str, root: str, split: str = "val") -> TaskData:
    """Load a task's ``split`` (``train``, ``val``, ``all`` or ``auto``) from a folder laid out
    like ``../shared/data``.

    Splits come from :mod:`momo_geo.datasets` (by HiRISE observation and by CTX tile), so train
    and validation never share an observation or a tile.
    """
    if task not in TASKS:
        raise MomoGeoError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
    if split not in SPLITS:
        raise MomoGeoError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if not Path(root).is_dir():
        raise MomoGeoError(f"{root}: no such data folder")
    if split == "auto":
        split = default_split(task, root)
    data = _open_dataset(task, root, split)
    images, targets, groups, circles = [], [], [], []
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
            circles.append(label_circles(data, i, images[-1].shape))
    classes = list(getattr(data, "classes", []) or ([] if task == "landmarks"
                                                     else ["background", "crater"]))
    if not images:
        hint = "" if split == "all" else " (score the whole folder with --split all)"
        raise MomoGeoError(f"{root}: the {split} split of {task} is empty{hint}")
    return TaskData(task, images, targets, groups, classes,
                    circles=circles if task != "landmarks" else None)


def _open_dataset(task: str, root: str, split: str) -> Any:
    """The :mod:`momo_geo.datasets` dataset of a task's split, or one clear error."""
    from momo_geo.datasets import CTXCraters, HiRISELandmarks, THEMISCraters

    cls = {"landmarks": HiRISELandmarks, "ctx-craters": CTXCraters,
           "themis-craters": THEMISCraters}[task]
    try:
        return cls(root, split=split)
    except MomoGeoError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise MomoGeoError(f"{root}: not a {task} data folder ({exc})") from None


def label_circles(data: Any, index: int, shape: tuple[int, int]) -> np.ndarray:
    """Labelled craters of item ``index`` of a crater dataset (image ``shape``) as ``(N, 3)``
    = centre x, centre y, diameter in pixels: the circles its mask is drawn from."""
    from momo_geo.datasets import THEMISCraters
    from momo_geo.datasets.craters import boxes_to_circles

    height, width = shape
    boxes = (data.boxes(index, width, height) if isinstance(data, THEMISCraters)
             else data.boxes(index))
    return np.column_stack(boxes_to_circles(shape, boxes))


# ----------------------------------------------------------------------------- models


def predict_classes(predictor: Any, images: Sequence[np.ndarray],
                    batch_size: int = 64) -> np.ndarray:
    """Class index per image, each image classified as the map engine classifies one tile:
    resized to the model input by pixel averaging (as the engine resamples), scaled by
    :func:`momo_geo.preprocess.to_model_input` as the card's ``value_scaling`` says (for
    ``scene_percentile`` the crop is the scene: its own percentile range), run by the engine's
    ``Predictor``. Forward passes are batched; the scaling is per crop. A card's confidence
    floors apply as on a map: a crop whose class is below its floor is background.
    """
    from momo_geo.inference.floor import background_class, class_floors, erase_weak

    probs = predict_probabilities(predictor, images, batch_size)
    classes = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    floors = class_floors(predictor.card)
    if floors and len(probs):
        erase_weak(classes, probs.max(axis=1), floors, background_class(predictor.card),
                   pixelwise=True)
    return classes


def predict_probabilities(predictor: Any, images: Sequence[np.ndarray],
                          batch_size: int = 64) -> np.ndarray:
    """``(N, K)`` class probabilities of crops, as :func:`predict_classes` computes them."""
    import torch

    out = []
    for start in range(0, len(images), batch_size):
        x = torch.cat([crop_input(predictor.card, image)
                       for image in images[start:start + batch_size]])
        out.append(predictor(x).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, predictor.card.num_classes))


def crop_input(card: Any, image: np.ndarray) -> Any:
    """One crop -> the ``(1, in_chans, S, S)`` model input of a map tile (S = input size)."""
    import torch
    import torch.nn.functional as F

    from momo_geo.preprocess import scene_range, to_model_input

    value_range = (scene_range(image) if getattr(card, "value_scaling", "tile_minmax")
                   == "scene_percentile" else None)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None]
    size = card.input_size
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")
    norm = card.normalization
    return to_model_input(x, norm["mean"], norm["std"], card.in_chans, value_range=value_range)


def predict_mask(predictor: Any, image: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Class map of one whole image by :func:`momo_geo.inference.predict_array`, the engine of
    ``momo-geo map`` (tiling, overlap, stitching and normalisation as the model card says)."""
    from momo_geo.inference import predict_array

    class_map, _ = predict_array(None, image, predictor=predictor, batch_size=batch_size)
    return np.asarray(class_map, dtype=np.uint8)


def crater_class(card: Any) -> int:
    """Index of the crater class in a segmentation card (the first class named *crater*)."""
    for k, name in enumerate(card.class_names):
        if "crater" in name.lower():
            return k
    raise MomoGeoError(f"model {card.name!r} has no crater class (classes {card.class_names})")


@dataclass
class CraterImages:
    """Per-image scores of a crater map on a split, before pooling: what reports and paired
    bootstraps over images both start from."""

    counts: np.ndarray
    """``(n, 3)`` pixel (tp, fp, fn) of the crater class, one row per image."""
    pixels: np.ndarray
    """``(n,)`` pixels per image (for the background class's IoU)."""
    matches: list[CraterMatch] | None
    """One :class:`~momo_geo.metrics.CraterMatch` per image; None without labelled circles."""


def score_crater_images(predictor: Any, data: TaskData,
                        min_diameter: float = MIN_DIAMETER_PX) -> CraterImages:
    """Map every image of ``data`` with ``predictor`` (the engine's maps, as ``map`` draws
    them) and score each against its mask and labelled circles."""
    positive = crater_class(predictor.card)
    counts, pixels, matches = [], [], []
    for i, (image, mask) in enumerate(zip(data.images, data.targets, strict=True)):
        class_map = predict_mask(predictor, image)
        counts.append(pixel_counts(class_map, mask, positive=positive))
        pixels.append(class_map.size)
        if data.circles is not None:
            x, y, d = np.asarray(data.circles[i], dtype=np.float64).reshape(-1, 3).T
            matches.append(match_craters(mask_to_circles(class_map, positive),
                                         Circles.of(x, y, d), min_diameter))
    return CraterImages(np.array(counts, dtype=np.int64).reshape(-1, 3),
                        np.array(pixels, dtype=np.int64),
                        matches if data.circles is not None else None)


def _score_craters(predictor: Any, data: TaskData, gsd: float | None, min_diameter: float,
                   n_boot: int) -> dict[str, Any]:
    """Pixel and object metrics of a segmentation model on every image of ``data``, pooled."""
    scores = score_crater_images(predictor, data, min_diameter)
    report = segmentation_report(scores.counts, n_boot, pixels=scores.pixels)
    if scores.matches is not None:
        report.update(crater_report(scores.matches, gsd, min_diameter, n_boot))
    return report


def evaluate_model(model: Any, card: Any, data: TaskData, n_boot: int = N_BOOT,
                   device: str = "cpu", gsd: float | None = None,
                   min_diameter: float = MIN_DIAMETER_PX) -> dict[str, Any]:
    """Score a built model on a task split: metrics, intervals, ``task`` and ``n``.

    ``gsd`` (m/px) labels the crater diameter bins in metres; default: the task's data
    (:data:`GSD_M_PER_PX`).
    """
    from momo_geo.bundle import Bundle
    from momo_geo.inference.engine import Predictor

    if TASK_KIND[data.task] != card.task:
        raise MomoGeoError(f"model {card.name!r} is a {card.task} model; task {data.task} "
                           f"needs a {TASK_KIND[data.task]} model")
    model.eval()
    predictor = Predictor(Bundle(card, model.state_dict()), device=device)
    if card.task == "classification":
        if data.classes and card.class_names and data.classes != card.class_names:
            raise MomoGeoError(f"model classes {card.class_names} differ from the data's "
                               f"{data.classes}")
        n_classes = max(card.num_classes, len(data.classes))
        names = data.classes or card.class_names
        report = classification_report(data.targets, predict_classes(predictor, data.images),
                                       n_classes, n_boot, names=names[:n_classes])
    else:
        report = _score_craters(predictor, data, gsd or GSD_M_PER_PX.get(data.task),
                                min_diameter, n_boot)
    return {"task": data.task, **report}


def evaluate_bundle(task: str, data_root: str, model: str | None = None,
                    split: str = "val", n_boot: int = N_BOOT, device: str = "cpu",
                    gsd: float | None = None, min_diameter: float = MIN_DIAMETER_PX,
                    trust_unhashed: bool = False) -> dict[str, Any]:
    """``momo-geo evaluate``: load a bundle (default: the bundled one for the task) and score it
    on ``split`` of ``data_root`` (``auto``: see the module docstring).

    The model is loaded (card, hash) before any image is read. The labelled folders hold plain
    images (CTX PNG tiles, THEMIS and HiRISE crops) without a CRS, so no CRS check applies here.
    """
    from momo_geo.bundle import load_bundle

    if task not in TASKS:
        raise MomoGeoError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
    if split == "auto" and Path(data_root).is_dir():
        split = default_split(task, data_root)
    bundle = load_bundle(model if model is not None else BUNDLED_FOR_TASK[task],
                         trust_unhashed=trust_unhashed)
    data = load_task_data(task, data_root, split)
    net = bundle.build_model()
    result = evaluate_model(net, bundle.card, data, n_boot, device, gsd, min_diameter)
    result["model"] = bundle.card.name
    result["split"] = split
    return result
