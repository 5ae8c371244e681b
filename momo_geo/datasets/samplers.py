"""Nodata-aware sampling for TorchGeo datasets.

Map-projected HiRISE, CTX and THEMIS products are rotated strips inside a nodata frame (the
"collar"): often half of a file's bounding box holds no data. TorchGeo's samplers draw from the
bounding box, so without a filter a large share of training chips is partly or wholly empty.
:class:`ValidGeoSampler` wraps any TorchGeo ``GeoSampler`` and drops every chip whose fraction of
valid pixels (read from the files' GDAL dataset masks: nodata value, mask band or alpha) is below
a threshold; for random samplers it keeps drawing until the requested number of chips is reached.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import WindowError
from rasterio.windows import Window, from_bounds
from torchgeo.datasets import RasterDataset
from torchgeo.samplers import GeoSampler, RandomGeoSampler

from momo_geo.errors import MomoGeoError


def query_bounds(dataset: RasterDataset, query: Any) -> tuple[tuple[float, float, float, float],
                                                             tuple[int, int]]:
    """``((xmin, ymin, xmax, ymax), (height, width))`` of a TorchGeo query on ``dataset``'s grid."""
    x, y, _ = dataset._disambiguate_slice(query)
    height = int(round((y.stop - y.start) / y.step))
    width = int(round((x.stop - x.start) / x.step))
    return (x.start, y.start, x.stop, y.stop), (height, width)


def _mask_in_bounds(src: rasterio.io.DatasetReaderBase, bounds: tuple[float, float, float, float],
                    shape: tuple[int, int]) -> np.ndarray:
    """The dataset mask of ``src`` resampled onto ``bounds``/``shape``; False outside the file."""
    out = np.zeros(shape, dtype=bool)
    window = from_bounds(*bounds, transform=src.transform)
    try:
        inside = window.intersection(Window(0, 0, src.width, src.height))
    except WindowError:
        return out
    scale_y, scale_x = shape[0] / window.height, shape[1] / window.width
    r0 = int(round((inside.row_off - window.row_off) * scale_y))
    r1 = int(round((inside.row_off + inside.height - window.row_off) * scale_y))
    c0 = int(round((inside.col_off - window.col_off) * scale_x))
    c1 = int(round((inside.col_off + inside.width - window.col_off) * scale_x))
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, shape[0]), min(c1, shape[1])
    if r1 <= r0 or c1 <= c0:
        return out
    mask = src.dataset_mask(window=inside, out_shape=(r1 - r0, c1 - c0))
    out[r0:r1, c0:c1] = mask > 0
    return out


def valid_mask(dataset: RasterDataset, query: Any) -> np.ndarray:
    """Boolean (H, W) mask of pixels of ``query`` that hold data in at least one file."""
    bounds, shape = query_bounds(dataset, query)
    index = dataset.index.cx[bounds[0]:bounds[2], bounds[1]:bounds[3]]
    mask = np.zeros(shape, dtype=bool)
    for filepath in index.filepath:
        src = (dataset._cached_load_warp_file(filepath) if dataset.cache
               else dataset._load_warp_file(filepath))
        mask |= _mask_in_bounds(src, bounds, shape)
    return mask


def valid_fraction(dataset: RasterDataset, query: Any) -> float:
    """Fraction of the pixels of ``query`` that hold data."""
    mask = valid_mask(dataset, query)
    return float(mask.mean()) if mask.size else 0.0


class ValidGeoSampler(GeoSampler):
    """Only the chips of ``sampler`` whose valid fraction is at least ``min_valid``.

    ``min_valid=1.0`` (the default) never yields a chip that touches the nodata collar. For a
    :class:`~torchgeo.samplers.RandomGeoSampler` (``refill=None`` decides by type) rejected chips
    are replaced by new draws, up to ``max_draws_factor`` times the requested number; a grid
    sampler simply yields its valid chips, in order.
    """

    def __init__(self, sampler: GeoSampler, dataset: RasterDataset, min_valid: float = 1.0,
                 refill: bool | None = None, max_draws_factor: int = 20) -> None:
        if not 0.0 <= min_valid <= 1.0:
            raise MomoGeoError(f"min_valid must be within [0, 1], got {min_valid}")
        # No GeoSampler.__init__: the wrapped sampler already chose the index, ROI and TOI.
        self.sampler = sampler
        self.dataset = dataset
        self.min_valid = min_valid
        self.refill = isinstance(sampler, RandomGeoSampler) if refill is None else refill
        self.max_draws_factor = max_draws_factor
        self.index, self.res = sampler.index, sampler.res
        self.roi = getattr(sampler, "roi", None)
        self.toi = getattr(sampler, "toi", None)
        self._grid: list[Any] | None = None

    def accepts(self, query: Any) -> bool:
        return valid_fraction(self.dataset, query) >= self.min_valid

    def __iter__(self) -> Iterator[Any]:
        if not self.refill:
            if self._grid is None:
                self._grid = [q for q in self.sampler if self.accepts(q)]
            yield from self._grid
            return
        wanted = len(self.sampler)
        drawn = yielded = 0
        while yielded < wanted and drawn < wanted * self.max_draws_factor:
            for query in self.sampler:
                drawn += 1
                if self.accepts(query):
                    yield query
                    yielded += 1
                    if yielded == wanted:
                        return
                if drawn >= wanted * self.max_draws_factor:
                    break
        if yielded < wanted:
            raise MomoGeoError(
                f"only {yielded} of {wanted} chips have at least {self.min_valid:.0%} valid "
                f"pixels after {drawn} draws; lower min_valid or the chip size")

    def __len__(self) -> int:
        if self.refill:
            return len(self.sampler)
        if self._grid is None:
            self._grid = [q for q in self.sampler if self.accepts(q)]
        return len(self._grid)
