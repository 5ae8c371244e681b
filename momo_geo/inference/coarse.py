"""A second, coarser pass for features larger than the model ever saw whole.

A crater model trained on 160 px chips sees a 50 km THEMIS crater (500 px at 100 m/px) or a
700 m CTX crater (120 px at 6 m/px) only in pieces: it outlines parts of the floor and rim,
or nothing. Read at a quarter of the resolution, the same crater is an ordinary 30-120 px
crater the model knows. So a card may ask for coarse passes (``coarse_passes``), each:

1. the scene is read at ``scale`` of the fine pass's resolution and mapped by the same model;
2. the coarse map gets its own confidence floor (``min_confidence``), and of what is left only
   features at least ``min_diameter`` model pixels across (equal-area circle, measured on the
   fine pass's grid) and, with ``max_residual``, round enough are kept: small craters are the
   fine pass's business, where it sees more, and a large dark albedo patch is not a crater;
3. the kept features' probabilities are resampled (bilinear) to the scene grid and every pixel
   above 0.5 joins the feature class, after the fine pass's own floor, so a large crater the
   fine pass found in doubtful pieces is mapped whole.

Why a union and not an average of the two passes: each pass is trusted only where it sees the
feature whole. The parameters are chosen on the selection images (:mod:`momo_geo.training.
calibrate`), never on the validation split. :func:`add_coarse` (arrays) and
:func:`add_coarse_scene` (a staged mask, row blocks) change exactly the same pixels, because
both resample the coarse map with :func:`upsample_rows`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window
from scipy import ndimage

from momo_geo.inference.floor import FOUR_CONNECTED, erase_weak
from momo_geo.inference.stitch import NODATA_CLASS

MIN_COARSE_SIDE = 32
"""A coarse grid narrower than this (px) has no feature the fine pass cannot see: no pass."""
BAND_PIXELS = 16_000_000
"""Scene pixels read at once for the coarse image (about 64 MB of float32)."""


@dataclass(frozen=True)
class CoarsePass:
    """One of the card's ``coarse_passes``: ``{"class", "scale", "min_diameter",
    "min_confidence", "max_residual"}``."""

    feature: str
    """The class the coarse pass maps (e.g. ``crater``)."""
    scale: float
    """Resolution of the coarse pass relative to the fine pass: 1/2, 1/3, 1/4 ... (0.25: each
    coarse pixel is the mean of 4 x 4 model pixels)."""
    min_diameter: float
    """Smallest coarse feature kept, in model pixels on the fine pass's grid."""
    min_confidence: float
    """Floor on a coarse feature's mean probability (0.5: none)."""
    max_residual: float | None = None
    """Only features this round (circle-fit residual; ``None``: any shape)."""

    @classmethod
    def of(cls, card: Any) -> list[CoarsePass]:
        """The card's coarse passes (``coarse_passes``; often none)."""
        return [cls(spec["class"], float(spec["scale"]), float(spec["min_diameter"]),
                    float(spec.get("min_confidence", 0.5)), spec.get("max_residual"))
                for spec in getattr(card, "coarse_passes", None) or []]



def factor_of(spec: CoarsePass, gsd_factor: float = 1.0) -> int:
    """Fine-grid pixels per coarse pixel along each axis: ``1 / scale`` of the model's grid,
    in scene pixels when the fine pass resamples the scene (``gsd_factor`` scene pixels per
    model pixel). A whole number, so coarse pixels are exact blocks of the scene's."""
    return max(1, round(gsd_factor / spec.scale))


def block_mean(grey: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` x ``k`` block means of the valid pixels of ``grey`` (edge blocks: what is there).
    A block is valid when at least half of its pixels are."""
    h, w = grey.shape
    hp, wp = -(-h // k) * k, -(-w // k) * k
    values = np.zeros((hp, wp), np.float32)
    ok = np.zeros((hp, wp), np.float32)
    values[:h, :w] = np.where(valid, grey, 0.0)
    ok[:h, :w] = valid

    def blocks(a: np.ndarray) -> np.ndarray:
        return a.reshape(hp // k, k, wp // k, k).sum(axis=(1, 3), dtype=np.float64)

    total, count = blocks(values), blocks(ok)
    rows = np.minimum(k, h - k * np.arange(hp // k))  # pixels of the scene in each block
    cols = np.minimum(k, w - k * np.arange(wp // k))
    present = np.outer(rows, cols)
    mean = np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)
    return mean, (count > 0) & (2 * count >= present)


def coarse_shape(height: int, width: int, k: int) -> tuple[int, int]:
    """The coarse grid of ``k`` x ``k`` blocks over a ``height`` x ``width`` grid."""
    return -(-height // k), -(-width // k)


def coarse_image(source: Any, height: int, width: int, k: int, budget: int = BAND_PIXELS
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The scene (a tile source of :mod:`.reader` at full resolution) as ``k`` x ``k`` block
    means and their validity, read a band of whole block rows at a time: about ``budget``
    scene pixels (at least one block row), so memory stays bounded on any scene."""
    from momo_geo.inference.plan import TilePlan

    step = k * max(1, budget // (k * width))
    greys, valids = [], []
    src = source.open()
    try:
        for row0 in range(0, height, step):
            rows = min(step, height - row0)
            tile = src.read(TilePlan(0, 0, row0, 0, rows, width, row0, 0, rows, width))
            grey, valid = block_mean(tile.pixels[0], tile.valid, k)
            greys.append(grey)
            valids.append(valid)
    finally:
        if src is not source:
            src.close()
    return np.concatenate(greys), np.concatenate(valids)


def kept_features(probs: np.ndarray, valid: np.ndarray, feature: int, background: int,
                  floor: float, min_diameter: float, max_residual: float | None = None
                  ) -> np.ndarray:
    """The coarse pass's verdict on its own grid: the feature probability where a kept feature
    lies, 0 elsewhere. ``probs``: ``(K, h, w)`` coarse probabilities; ``valid``: ``(h, w)``;
    ``floor`` on a feature's mean probability; ``min_diameter`` in coarse pixels;
    ``max_residual``: the roundest features only (RMS distance of the outline from its fitted
    circle over the radius, as the vector layer's fit column; ``None``: any shape)."""
    classes = np.where(valid, probs.argmax(axis=0), NODATA_CLASS).astype(np.uint8)
    if floor > 0.5:
        erase_weak(classes, probs.max(axis=0), {feature: floor}, background)
    labels, n = ndimage.label(classes == feature, structure=FOUR_CONNECTED)
    if n == 0:
        return np.zeros(classes.shape, np.float32)
    area = ndimage.sum_labels(np.ones(classes.shape), labels, np.arange(1, n + 1))
    keep = np.concatenate([[False], 2 * np.sqrt(area / np.pi) >= min_diameter])[labels]
    if max_residual is not None and keep.any():
        keep &= round_enough(keep, max_residual)
    return np.where(keep, probs[feature], 0.0).astype(np.float32)


def round_enough(mask: np.ndarray, max_residual: float) -> np.ndarray:
    """Pixels of ``mask`` in features whose outline fits a circle within ``max_residual``
    (:func:`momo_geo.metrics.mask_to_circles`, whose labelling of the hole-filled mask this
    repeats): a crater is round, an albedo patch or a wall fragment is not."""
    from momo_geo.metrics import mask_to_circles

    filled = ndimage.binary_fill_holes(mask)
    labels, _ = ndimage.label(filled)
    residual = mask_to_circles(filled.astype(np.uint8), 1).residual
    good = np.nan_to_num(residual, nan=np.inf) <= max_residual
    return np.concatenate([[False], good])[labels]


def upsample_rows(kept: np.ndarray, k: int, row0: int, rows: int, width: int) -> np.ndarray:
    """Rows ``row0 .. row0 + rows`` of the fine grid (``width`` wide) from the coarse ``kept``
    (``k`` fine pixels per coarse pixel), bilinear with pixel centres aligned: the same values
    whatever block the rows come in."""
    r = (np.arange(row0, row0 + rows) + 0.5) / k - 0.5
    c = (np.arange(width) + 0.5) / k - 0.5
    rr, cc = np.meshgrid(r, c, indexing="ij")
    return ndimage.map_coordinates(kept, [rr, cc], order=1, mode="nearest").astype(np.float32)


def add_coarse(classes: np.ndarray, confidence: np.ndarray | None, up: np.ndarray,
               feature: int) -> np.ndarray:
    """Join every valid pixel of ``up`` above 0.5 to ``feature``, in place; the confidence there
    becomes the larger of the two passes'. Returns the changed pixels' former classes counts."""
    hit = (up > 0.5) & (classes != NODATA_CLASS) & (classes != feature)
    former = np.bincount(classes[hit].ravel(), minlength=256)
    classes[hit] = feature
    if confidence is not None:
        confidence[hit] = np.maximum(confidence[hit], up[hit])
    return former


def add_coarse_scene(mask_path: str | os.PathLike[str],
                     confidence_path: str | os.PathLike[str] | None, kept: np.ndarray, k: int,
                     feature: int, block: int = 1024) -> np.ndarray:
    """:func:`add_coarse` on a staged class mask (and confidence raster), row block by row
    block, in place. Returns the changed pixels' former class counts."""
    former = np.zeros(256, np.int64)
    conf = rasterio.open(confidence_path, "r+") if confidence_path is not None else None
    try:
        with rasterio.open(mask_path, "r+") as mask:
            for row0 in range(0, mask.height, block):
                window = Window(0, row0, mask.width, min(block, mask.height - row0))
                classes = mask.read(1, window=window)
                up = upsample_rows(kept, k, row0, classes.shape[0], mask.width)
                confidence = conf.read(1, window=window) if conf is not None else None
                changed = add_coarse(classes, confidence, up, feature)
                if changed.any():
                    former += changed
                    mask.write(classes, 1, window=window)
                    if conf is not None:
                        conf.write(confidence, 1, window=window)
    finally:
        if conf is not None:
            conf.close()
    return former
