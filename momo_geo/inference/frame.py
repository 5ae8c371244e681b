"""Undeclared black collars: the constant frame around map-projected Mars products.

HiRISE, CTX and THEMIS products projected to a map grid are rotated strips inside a rectangle;
the corners are filled with one value (usually 0) that the file often does not declare as nodata
(the HiRISE scene of the test data is 28 % frame). A model then maps the frame: a flat black
area with a sharp edge looks like a crater shadow or a scarp. :func:`find_frame` finds such a
frame and :class:`Frame` masks it tile by tile.

What counts as frame: on each row, the run of pixels equal to the frame value (within a small
tolerance, and through single outliers, because JPEG-compressed products ring at the frame's
edge) that starts at the left edge of the scene, and the run that ends at the right edge. Rows
of frame only are frame whole. A dark pixel inside the image is never frame, however dark,
unless a run of frame reaches it from the scene's edge. The frame value is the value that fills
at least half of the scene's border exactly; a scene whose border is not mostly one value (a
noisy plain) has no frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from scipy.ndimage import minimum_filter1d

BORDER_SHARE = 0.5
"""Share of the border pixels that must hold the frame value."""
TOLERANCE = 0.04
"""Frame pixels may differ from the frame value by this share of the integer type's range."""
MIN_RUN = 4
"""The image starts where this many pixels in a row are not frame: JPEG ringing leaves single
brighter pixels inside the frame near its edge, which must not end it."""
BLOCK_BYTES = 64 * 2**20
"""Rows are scanned in blocks of about this many bytes (bounded memory on any scene)."""


@dataclass(frozen=True)
class Frame:
    """The frame of a scene: per row, the image lies in columns ``left[row]:right[row]``."""

    value: float
    left: np.ndarray
    right: np.ndarray
    width: int

    @property
    def fraction(self) -> float:
        """Share of the scene's pixels that are frame."""
        inside = np.clip(self.right - self.left, 0, None).sum()
        return 1.0 - float(inside) / (len(self.left) * self.width)

    def valid(self, window: Window, out_shape: tuple[int, int] | None = None) -> np.ndarray:
        """``True`` where the ``window`` (at ``out_shape`` when resampled) is not frame."""
        row0, col0 = int(window.row_off), int(window.col_off)
        height, width = int(window.height), int(window.width)
        out_h, out_w = out_shape or (height, width)
        rows = row0 + (np.arange(out_h) + 0.5) * height / out_h
        cols = col0 + (np.arange(out_w) + 0.5) * width / out_w
        rows = np.clip(rows.astype(np.int64), 0, len(self.left) - 1)
        return (cols[None, :] >= self.left[rows, None]) & (cols[None, :] < self.right[rows, None])


def find_frame(path: str, band: int = 1, nodata: float | None = None) -> Frame | None:
    """The scene's constant frame, or ``None`` when its border is not mostly one value, or that
    value is nodata already (declared by the file, or ``nodata``: the user's ``--nodata``)."""
    with rasterio.open(path) as src:
        if src.dtypes[band - 1].startswith("float"):
            tolerance = 0.0
        else:
            info = np.iinfo(src.dtypes[band - 1])
            tolerance = TOLERANCE * (float(info.max) - float(info.min))
        value = _border_value(src, band)
        if value is None or value in {src.nodata, nodata}:
            return None
        left = np.empty(src.height, np.int64)
        right = np.empty(src.height, np.int64)
        rows_per_block = max(1, BLOCK_BYTES // max(1, src.width * 8))
        for row0 in range(0, src.height, rows_per_block):
            n = min(rows_per_block, src.height - row0)
            data = src.read(band, window=Window(0, row0, src.width, n)).astype(np.float64)
            image = minimum_filter1d(~(np.abs(data - value) <= tolerance), MIN_RUN, axis=1,
                                     mode="nearest")
            has = image.any(axis=1)
            first = np.argmax(image, axis=1)
            last = src.width - np.argmax(image[:, ::-1], axis=1)
            # the filter shrank each image run by MIN_RUN // 2 at its start and the rest at its end
            left[row0:row0 + n] = np.where(has, np.maximum(first - MIN_RUN // 2, 0), src.width)
            right[row0:row0 + n] = np.where(
                has, np.minimum(last + (MIN_RUN - 1) // 2, src.width), src.width)
        frame = Frame(float(value), left, right, src.width)
    return frame if frame.fraction > 0 else None


def mask_in_frame(mask_path: str | Path, scene_path: str | Path
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The class mask ``momo-geo map`` wrote for a scene, and ``True`` where the scene's image
    lies (everywhere when the scene has no frame): what a crater share is read over, since the
    frame is nodata in the mask and must count neither for nor against a model."""
    with rasterio.open(mask_path) as src:
        mask = src.read(1)
    frame = find_frame(str(scene_path))
    if frame is None:
        return mask, np.ones(mask.shape, bool)
    whole = Window(0, 0, frame.width, len(frame.left))
    return mask, frame.valid(whole, out_shape=mask.shape)


def _border_value(src: rasterio.DatasetReader, band: int) -> float | None:
    """The value that fills at least :data:`BORDER_SHARE` of the scene's outermost pixels."""
    h, w = src.height, src.width
    windows = (Window(0, 0, w, 1), Window(0, h - 1, w, 1), Window(0, 0, 1, h),
               Window(w - 1, 0, 1, h))
    edges = [src.read(band, window=window) for window in windows]
    border = np.concatenate([e.ravel() for e in edges]).astype(np.float64)
    border = border[np.isfinite(border)]
    if border.size == 0:
        return None
    values, counts = np.unique(border, return_counts=True)
    value = float(values[np.argmax(counts)])
    # Exactly that value: a frame is filled with one number. Within the tolerance, a dark
    # plain with a little noise would pass for a frame too (all of it, on a featureless scene).
    share = float((border == value).mean())
    return value if share >= BORDER_SHARE else None
