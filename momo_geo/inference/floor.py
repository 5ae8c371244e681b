"""Confidence floors and sizes: a mapped feature whose mean confidence is below its class's
floor, or whose area is outside its class's smallest and largest size, is erased.

A crater model's weak detections are mostly wrong: on the THEMIS selection crops, outlines
whose mean crater probability is 0.5-0.7 are true craters 1-5 % of the time, against about
90 % above 0.9. Thresholding each *pixel* higher would shrink every crater (and bias its
diameter); judging each *feature* by its mean confidence keeps the outline of a confident
crater whole and drops the doubtful one whole, as a geologist screening candidates would.

The floors are a property of the model: chosen on the images held out of training for
selection (:mod:`momo_geo.training.calibrate`) and recorded in the card as
``min_confidence`` (class name -> floor). Erased pixels become the background class, in the
class mask and hence in the vector layer. Features are 4-connected regions, as the vector
layer outlines them, so :func:`erase_weak` (arrays) and :func:`erase_weak_scene` (a staged
mask on disk, block by block) erase exactly the same pixels.

The smallest size (card ``min_diameter``, the diameter of the disc of equal area, in model
pixels) removes specks below what the model maps reliably: on the THEMIS selection crops,
features under about 6 px are mostly noise or fragments, and a geologist's crater layer should
not hold them. It is chosen with the floor, on the same selection images. The largest size
(card ``max_diameter``) erases fine-pass features wider than the model ever saw whole.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import rasterio
from rasterio import features
from rasterio.windows import Window
from scipy import ndimage

from momo_geo.inference.options import is_background

FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
"""A feature is a 4-connected region of one class, as the vector layer outlines it; the floor,
the coarse passes and the vectorizer all label features with this structure."""


def class_floors(card: Any) -> dict[int, float]:
    """``{class id: floor}`` of the card's ``min_confidence`` (empty: nothing is erased; also
    for a card without a background class, which erased pixels would have nowhere to go)."""
    if background_class(card) is None:
        return {}
    by_name = {c.name: c.id for c in card.classes}
    return {by_name[name]: float(floor)
            for name, floor in (getattr(card, "min_confidence", None) or {}).items()
            if name in by_name and floor > 0}


def disc_area(diameter: float) -> float:
    """Pixels of the disc of ``diameter`` pixels: a feature's size is the diameter of the disc
    of equal area, here as in the coarse passes."""
    return math.pi / 4 * diameter ** 2


def class_min_pixels(card: Any, factor: float = 1.0) -> dict[int, float]:
    """``{class id: smallest area in pixels}`` of the card's ``min_diameter`` on a mask whose
    pixels are ``factor`` model pixels wide (:func:`~momo_geo.inference.engine.gsd_factor`)."""
    return _class_areas(card, "min_diameter", factor)


def class_max_pixels(card: Any, factor: float = 1.0) -> dict[int, float]:
    """``{class id: largest area in pixels}`` of the card's ``max_diameter``, likewise."""
    return _class_areas(card, "max_diameter", factor)


def _class_areas(card: Any, key: str, factor: float) -> dict[int, float]:
    if background_class(card) is None:
        return {}
    by_name = {c.name: c.id for c in card.classes}
    return {by_name[name]: disc_area(float(size) * factor)
            for name, size in (getattr(card, key, None) or {}).items()
            if name in by_name and size > 0}


def background_class(card: Any) -> int | None:
    """The class erased pixels become: the card's first background class."""
    return next((c.id for c in card.classes if is_background(c.name)), None)


def per_tile(card: Any) -> bool:
    """Whether floors judge tiles rather than features: a classification model gives each
    tile one class and one confidence, so a tile is the unit a geologist accepts or not."""
    return getattr(card, "task", "") == "classification"


def erase_weak(classes: np.ndarray, confidence: np.ndarray, floors: dict[int, float],
               background: int, pixelwise: bool = False,
               min_pixels: dict[int, float] | None = None,
               max_pixels: dict[int, float] | None = None) -> int:
    """Set every feature of ``classes`` below its floor, or smaller than its class's
    ``min_pixels`` (:func:`class_min_pixels`) or larger than its ``max_pixels``, to
    ``background``, in place.

    ``confidence`` is the per-pixel confidence the engine writes (the winning class's
    probability). With ``pixelwise`` each pixel is judged by its own confidence: for a
    classification map that is its tile's (:func:`per_tile`); sizes do not apply. Returns the
    pixels erased.
    """
    erased = 0
    if pixelwise:
        for class_id, floor in floors.items():
            weak = (classes == class_id) & (confidence < floor)
            classes[weak] = background
            erased += int(weak.sum())
        return erased
    sizes, caps = min_pixels or {}, max_pixels or {}
    for class_id in sorted(set(floors) | set(sizes) | set(caps)):
        labels, n = ndimage.label(classes == class_id, structure=FOUR_CONNECTED)
        if n == 0:
            continue
        index = np.arange(1, n + 1)
        weak = ndimage.mean(confidence, labels, index) < floors.get(class_id, 0.0)
        area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        weak |= area < sizes.get(class_id, 0.0)
        weak |= area > caps.get(class_id, math.inf)
        weak_px = np.concatenate([[False], weak])[labels]
        classes[weak_px] = background
        erased += int(weak_px.sum())
    return erased


def is_weak(conf_sum: float, pixels: int, floor: float, min_pixels: float,
            max_pixels: float = math.inf) -> bool:
    """Whether a feature of ``pixels`` pixels and confidence sum ``conf_sum`` is erased."""
    return pixels > 0 and (conf_sum / pixels < floor or pixels < min_pixels
                           or pixels > max_pixels)


def erase_weak_scene(mask_path: str | os.PathLike[str],
                     confidence_path: str | os.PathLike[str], floors: dict[int, float],
                     background: int, block: int = 1024, pixelwise: bool = False,
                     min_pixels: dict[int, float] | None = None,
                     max_pixels: dict[int, float] | None = None) -> dict[int, int]:
    """:func:`erase_weak` on a class mask GeoTIFF (updated in place) with its confidence
    raster, streaming whole features block by block as the vectorizer does (or, with
    ``pixelwise``, rows of blocks). Returns the pixels erased per class."""
    from momo_geo.bundle import ClassInfo
    from momo_geo.vectorize import finished_pieces

    if pixelwise:
        return _erase_pixelwise(mask_path, confidence_path, floors, background, block)
    sizes, caps = min_pixels or {}, max_pixels or {}
    gated = sorted(set(floors) | set(sizes) | set(caps))
    wanted = {class_id: ClassInfo(class_id, str(class_id), "#000000") for class_id in gated}
    erased = dict.fromkeys(gated, 0)
    with rasterio.open(mask_path, "r+") as mask, rasterio.open(confidence_path) as conf:
        for piece in finished_pieces(mask, conf, wanted, block):
            if not is_weak(piece.conf_sum, piece.pixels, floors.get(piece.class_id, 0.0),
                           sizes.get(piece.class_id, 0.0), caps.get(piece.class_id, math.inf)):
                continue
            x0, y0, x1, y1 = (int(round(v)) for v in piece.geom.bounds)
            window = Window(x0, y0, x1 - x0, y1 - y0)
            inside = features.rasterize(
                [piece.geom], out_shape=(y1 - y0, x1 - x0), fill=0, default_value=1,
                transform=rasterio.Affine.translation(x0, y0), dtype="uint8").astype(bool)
            data = mask.read(1, window=window)
            inside &= data == piece.class_id
            data[inside] = background
            mask.write(data, 1, window=window)
            erased[piece.class_id] += int(inside.sum())
    return erased


def _erase_pixelwise(mask_path: str | os.PathLike[str], confidence_path: str | os.PathLike[str],
                     floors: dict[int, float], background: int, block: int) -> dict[int, int]:
    erased = dict.fromkeys(floors, 0)
    with rasterio.open(mask_path, "r+") as mask, rasterio.open(confidence_path) as conf:
        for row0 in range(0, mask.height, block):
            window = Window(0, row0, mask.width, min(block, mask.height - row0))
            data, confidence = mask.read(1, window=window), conf.read(1, window=window)
            for class_id, floor in floors.items():
                weak = (data == class_id) & (confidence < floor)
                data[weak] = background
                erased[class_id] += int(weak.sum())
            mask.write(data, 1, window=window)
    return erased
