"""The row-band accumulator: tile predictions in, finished scene rows out.

Tiles arrive in row-major order (:func:`momo_geo.inference.plan.plan_tiles`). The stitcher keeps
only the rows the current tile row can still touch (one tile height, the whole scene width) and
hands every row that no later tile can change to ``write_rows`` at once. Memory therefore grows
with the scene's width, never with its height or area.

Both overlap modes are one weighted average: ``"crop"`` gives each tile weight 1 on its core and
0 elsewhere (so each pixel takes exactly one tile's prediction, bit for bit); ``"smooth"`` gives a
ramp that falls towards the tile border over the overlap, which blends neighbouring tiles'
probabilities without visible seams.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from momo_geo.inference.options import BLENDS, MapOptions
from momo_geo.inference.plan import TilePlan

NODATA_CLASS = 255
NODATA_PROB = -1.0
FLUSH_COLUMNS = 2048

# write_rows(row0, classes (h, W) uint8, confidence (h, W) float32, probabilities (K, h, W) | None)
RowWriter = Callable[[int, np.ndarray, np.ndarray, "np.ndarray | None"], None]


def ramp_1d(size: int, overlap: int) -> np.ndarray:
    """A weight that is 1 in the middle and falls linearly to a small positive value at the ends."""
    if overlap <= 0:
        return np.ones(size, np.float32)
    distance = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32)
    return np.clip((distance + 0.5) / (overlap / 2 + 0.5), 1e-3, 1.0)


class RowBandStitcher:
    """Accumulates per-class probabilities of tiles and writes rows as soon as they are final."""

    def __init__(self, width: int, height: int, num_classes: int, band_height: int,
                 write_rows: RowWriter, blend: str = MapOptions.blend, overlap: int = 0,
                 keep_probabilities: bool = False) -> None:
        if blend not in BLENDS:
            raise ValueError(f"blend must be one of {BLENDS}, not {blend!r}")
        self.width, self.height, self.num_classes = width, height, num_classes
        self.band_height = band_height
        self.blend, self.overlap = blend, overlap
        self.write_rows = write_rows
        self.keep_probabilities = keep_probabilities
        self.top = 0  # scene row of the band's first row
        self.acc = np.zeros((num_classes, band_height, width), np.float32)
        self.weight = np.zeros((band_height, width), np.float32)
        self.valid = np.zeros((band_height, width), bool)
        self.rows_written = 0

    def _weights(self, plan: TilePlan) -> np.ndarray:
        if self.blend == "crop":
            w = np.zeros((plan.height, plan.width), np.float32)
            w[plan.core_in_tile] = 1.0
            return w
        return np.outer(ramp_1d(plan.height, self.overlap), ramp_1d(plan.width, self.overlap))

    def start_row(self, row: int) -> None:
        """A new tile row begins at scene row ``row``: rows above it are final; write them."""
        if row < self.top:
            raise ValueError("tile rows must arrive top to bottom")
        self._flush(min(row, self.height))

    def add(self, plan: TilePlan, probabilities: np.ndarray, valid: np.ndarray) -> None:
        """Add one tile's ``(K, h, w)`` probabilities and its ``(h, w)`` valid-pixel mask."""
        if plan.row > self.top:
            self.start_row(plan.row)
        if self.blend == "crop":
            # weight 1 on the core, 0 elsewhere: copy the core only (exact, and 3x less work)
            inner = plan.core_in_tile
            r0 = plan.core_row - self.top
            rows = slice(r0, r0 + plan.core_height)
            cols = slice(plan.core_col, plan.core_col + plan.core_width)
            core_valid = valid[inner]
            self.acc[:, rows, cols] += probabilities[(slice(None), *inner)] * core_valid
            self.weight[rows, cols] += core_valid
            self.valid[rows, cols] |= core_valid
            return
        r0 = plan.row - self.top
        rows = slice(r0, r0 + plan.height)
        cols = slice(plan.col, plan.col + plan.width)
        w = self._weights(plan) * valid
        self.acc[:, rows, cols] += probabilities * w
        self.weight[rows, cols] += w
        self.valid[rows, cols] |= valid

    def _flush(self, stop: int) -> None:
        while self.top < stop:
            self._flush_rows(min(stop - self.top, self.band_height))

    def _flush_rows(self, n: int) -> None:
        width = self.width
        classes = np.empty((n, width), np.uint8)
        confidence = np.empty((n, width), np.float32)
        out_probs = (np.empty((self.num_classes, n, width), np.float32)
                     if self.keep_probabilities else None)
        for c0 in range(0, width, FLUSH_COLUMNS):  # column chunks: small temporaries
            cols = slice(c0, min(c0 + FLUSH_COLUMNS, width))
            weight = self.weight[:n, cols]
            valid = self.valid[:n, cols] & (weight > 0)
            probs = self.acc[:, :n, cols] / np.where(valid, weight, np.float32(1.0))
            cls = probs.argmax(axis=0).astype(np.uint8)
            conf = probs.max(axis=0)
            cls[~valid] = NODATA_CLASS
            conf[~valid] = NODATA_PROB
            classes[:, cols] = cls
            confidence[:, cols] = conf
            if out_probs is not None:
                out_probs[:, :, cols] = np.where(valid, probs, np.float32(NODATA_PROB))
        self.write_rows(self.top, classes, confidence, out_probs)
        self.rows_written += n
        # shift the band up by n rows and clear the freed rows
        keep = self.band_height - n
        if keep > 0:
            self.acc[:, :keep] = self.acc[:, n:]
            self.weight[:keep] = self.weight[n:]
            self.valid[:keep] = self.valid[n:]
        self.acc[:, max(keep, 0):] = 0
        self.weight[max(keep, 0):] = 0
        self.valid[max(keep, 0):] = False
        self.top += n

    def finish(self) -> None:
        """Write every remaining row (call after the last tile)."""
        self._flush(self.height)
        if self.rows_written != self.height:
            raise RuntimeError(f"stitcher wrote {self.rows_written} of {self.height} rows")
