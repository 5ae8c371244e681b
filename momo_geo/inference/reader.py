"""Reading tiles for the model, in a background thread, ready to run.

A :class:`TileSource` reads one planned window: the pixels (one grey band, per the model card) at
the model's grid, plus the valid-pixel mask at the model's grid and at the scene's grid. Two
sources exist: :class:`RasterSource` (any GDAL raster, optionally resampled to the model's GSD
window by window) and :class:`ArraySource` (an array already in memory, for evaluation).

:class:`Prefetcher` runs the reading, nodata handling and MOMO normalisation in a thread and hands
out ready batches through a short queue, so the model never waits on the disk and at most a few
batches are in memory at once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import rasterio
import torch
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.windows import Window

from momo_geo.inference.frame import Frame
from momo_geo.inference.options import MapOptions
from momo_geo.inference.plan import TilePlan
from momo_geo.preprocess import scene_range, to_grey, to_model_input

OVERVIEW_SIDE = 1024
"""Long side (pixels) of the overview a scene's stretch range is measured on."""


@dataclass
class TileData:
    plan: TilePlan
    pixels: np.ndarray
    """``(1, hm, wm)`` float32 grey values at the model's grid (raw scene values)."""
    valid_model: np.ndarray
    """``(hm, wm)`` bool: valid pixels at the model's grid."""
    valid: np.ndarray
    """``(h, w)`` bool: valid pixels at the scene's grid (what the output's nodata follows)."""


@dataclass
class Batch:
    plans: list[TilePlan]
    inputs: torch.Tensor | None
    """``(B, in_chans, hm, wm)`` normalised model input; ``None`` when the normalisation is left
    to the model's device (then ``pixels``/``mask`` hold the raw batch)."""
    valids: list[np.ndarray]
    skipped: int = 0
    """All-nodata tiles passed over since the previous batch (for progress counts)."""
    source_shape: tuple[int, int] = (0, 0)
    pixels: torch.Tensor | None = None
    """``(B, 1, hm, wm)`` float32 raw grey values (when ``inputs`` is ``None``)."""
    mask: torch.Tensor | None = None
    """``(B, 1, hm, wm)`` bool valid pixels, ``None`` when all are valid."""


@dataclass
class Normalizer:
    """How raw values become model input: the card's band choice, stretch and statistics."""

    mean: float | list[float]
    std: float | list[float]
    """The card's statistics: one number, or one per channel (:mod:`momo_geo.normalization`)."""
    in_chans: int
    bands: str = "mean"
    pad_to: tuple[int, int] | None = None
    """Pad batches up to this size with nodata (models that only take their training size)."""
    device: torch.device | None = None
    """Normalise on this device in the consuming thread (a GPU: one byte per pixel crosses the
    bus instead of twelve, and the CPU reader thread stays light); ``None``: in the reader."""
    value_range: tuple[float, float] | None = None
    """The scene's stretch range (cards with ``value_scaling = "scene_percentile"``); ``None``:
    each tile stretched by its own min and max."""

    def __call__(self, tiles: list[TileData]) -> torch.Tensor:
        return self.normalize(*self.stack(tiles))

    @staticmethod
    def stack(tiles: list[TileData]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw ``(B, 1, h, w)`` pixels and valid mask (``None`` when every pixel is valid)."""
        pixels = torch.from_numpy(np.stack([t.pixels for t in tiles]))
        valid = np.stack([t.valid_model for t in tiles])[:, None]
        # fully valid batches (most of a scene) skip the masked statistics: same result, faster
        return pixels, None if valid.all() else torch.from_numpy(valid)

    def normalize(self, pixels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The card's stretch and standardisation, nodata filled, padded if needed."""
        x = to_model_input(pixels, self.mean, self.std, self.in_chans, mask, self.value_range)
        if self.pad_to is not None:
            ph, pw = self.pad_to[0] - x.shape[-2], self.pad_to[1] - x.shape[-1]
            if ph > 0 or pw > 0:
                x = torch.nn.functional.pad(x, (0, max(pw, 0), 0, max(ph, 0)))
        return x


class ArraySource:
    """Tiles from an in-memory ``(H, W)`` or ``(C, H, W)`` array."""

    def __init__(self, image: np.ndarray, valid: np.ndarray | None = None,
                 bands: str = "mean", stretch: tuple[float, float] | None = None) -> None:
        self.stretch = stretch
        """A scene-wide stretch range to use instead of the image's own (a coarse copy of a
        scene is stretched as the scene is)."""
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3:
            raise ValueError(f"image must be (H, W) or (C, H, W), not {image.shape}")
        self.image = image
        finite = np.isfinite(image).all(axis=0) if image.dtype.kind == "f" else None
        if valid is None:
            valid = finite if finite is not None else np.ones(image.shape[1:], bool)
        elif finite is not None:
            valid = np.asarray(valid, bool) & finite
        self.valid = np.asarray(valid, bool)
        self.bands = bands
        self.height, self.width = image.shape[1:]

    def open(self) -> ArraySource:
        return self

    def close(self) -> None:
        pass

    def value_range(self) -> tuple[float, float]:
        """The scene-wide stretch range (:func:`momo_geo.preprocess.scene_range`) of the image."""
        if self.stretch is not None:
            return self.stretch
        return scene_range(_grey(self.image, self.bands, self.valid), self.valid)

    def read(self, plan: TilePlan) -> TileData:
        rows = slice(plan.row, plan.row + plan.height)
        cols = slice(plan.col, plan.col + plan.width)
        valid = self.valid[rows, cols]
        data = self.image[:, rows, cols]
        grey = _grey(data, self.bands, valid)
        return TileData(plan, grey, valid, valid)


class RasterSource:
    """Tiles from a GDAL raster; reads at ``model_shape`` (resampled) when it differs."""

    def __init__(self, path: str, bands: str = "mean",
                 model_shape: tuple[int, int] | None = None, frame: Frame | None = None,
                 nodata: float | None = None) -> None:
        self.path, self.bands, self.model_shape = path, bands, model_shape
        self.frame = frame
        """An undeclared constant frame around the image (:mod:`.frame`), read as nodata."""
        self.nodata = nodata
        """A value read as nodata besides what the file declares (``--nodata``)."""
        self.src: rasterio.DatasetReader | None = None

    def open(self) -> RasterSource:
        # Each thread opens its own handle: GDAL datasets are not thread-safe.
        other = RasterSource(self.path, self.bands, self.model_shape, self.frame, self.nodata)
        other.src = rasterio.open(self.path)
        return other

    def close(self) -> None:
        if self.src is not None:
            self.src.close()

    def _valid(self, src: rasterio.DatasetReader, window: Window, data: np.ndarray,
               out_shape: tuple[int, int] | None) -> np.ndarray:
        """Valid pixels of ``data`` read from ``window``: the dataset's mask less the frame
        and less the user's ``nodata`` value."""
        valid = _valid_mask(src, window, data, out_shape)
        if self.nodata is not None:
            if out_shape is not None:  # resampled values blend nodata in: compare nearest ones
                data = src.read(_image_bands(src, self.bands), window=window,
                                out_shape=(data.shape[0], *out_shape),
                                resampling=Resampling.nearest)
            valid &= (data != np.asarray(self.nodata, data.dtype)).any(axis=0)
        if self.frame is not None:
            valid &= self.frame.valid(window, out_shape)
        return valid

    def value_range(self, side: int = OVERVIEW_SIDE) -> tuple[float, float]:
        """The scene-wide stretch range from an overview at most ``side`` pixels on its long
        side (GDAL picks the file's own overviews when it has them): cheap on any scene size,
        and the 1st/99th percentiles of a million pixels are stable."""
        with rasterio.open(self.path) as src:
            scale = max(1.0, max(src.height, src.width) / side)
            shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
            indexes = _image_bands(src, self.bands)
            small = src.read(indexes, out_shape=(len(indexes), *shape),
                             resampling=Resampling.nearest)
            valid = self._valid(src, Window(0, 0, src.width, src.height), small, shape)
            return scene_range(_grey(small, self.bands, valid), valid)

    def read(self, plan: TilePlan) -> TileData:
        src = self.src
        assert src is not None
        window = plan.window
        indexes = _image_bands(src, self.bands)
        data = src.read(indexes, window=window)
        valid = self._valid(src, window, data, None)
        shape = self.model_shape
        if shape is None or shape == (plan.height, plan.width):
            return TileData(plan, _grey(data, self.bands, valid), valid, valid)
        down = shape[0] < plan.height
        resampling = Resampling.average if down else Resampling.bilinear
        small = src.read(indexes, window=window, out_shape=(len(indexes), *shape),
                         resampling=resampling)
        valid_model = self._valid(src, window, small, shape)
        return TileData(plan, _grey(small, self.bands, valid_model), valid_model, valid)


def _image_bands(src: rasterio.DatasetReader, bands: str) -> list[int]:
    """Band indexes holding the image: an alpha band is a mask, never averaged in."""
    image = [i for i, ci in enumerate(src.colorinterp, start=1) if ci != ColorInterp.alpha]
    image = image or [1]
    return image[:1] if bands == "first" else image


def _valid_mask(src: rasterio.DatasetReader, window, data: np.ndarray,
                out_shape: tuple[int, int] | None) -> np.ndarray:
    """Valid pixels from the dataset mask, cheaply: nodata compares in memory, else GDAL's mask."""
    flags = src.mask_flag_enums
    if all(f == [MaskFlags.all_valid] for f in flags):
        valid = np.ones(data.shape[1:], bool)
    elif all(MaskFlags.nodata in f for f in flags) and src.nodata is not None:
        nodata = src.nodata
        if np.isnan(nodata):
            valid = ~np.isnan(data).all(axis=0)
        else:
            valid = (data != np.asarray(nodata, data.dtype)).any(axis=0)
    else:
        kwargs = {"out_shape": out_shape} if out_shape is not None else {}
        valid = src.dataset_mask(window=window, **kwargs) > 0
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).all(axis=0)
    return valid


def _grey(data: np.ndarray, bands: str, valid: np.ndarray) -> np.ndarray:
    if data.shape[0] == 1 and data.dtype.kind != "f":
        return data.astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None]
    grey = to_grey(x, bands)[0].numpy()
    if data.dtype.kind == "f":
        grey = np.where(valid, grey, 0.0).astype(np.float32)
    return grey


@dataclass
class Prefetcher:
    """Reads, normalises and batches tiles in a thread; iterate it for :class:`Batch` es."""

    source: RasterSource | ArraySource
    plans: Iterable[TilePlan]
    normalizer: Normalizer
    batch_size: int = MapOptions.batch_size
    depth: int = 3
    _queue: queue.Queue = field(init=False)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _thread: threading.Thread | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._queue = queue.Queue(maxsize=self.depth)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            source = self.source.open()
            try:
                pending: list[TileData] = []
                for plan in self.plans:
                    if self._stop.is_set():
                        return
                    tile = source.read(plan)
                    if not tile.valid_model.any() and not tile.valid.any():
                        # handed over at once, so progress and cancel see every planned tile
                        if not self._put(self._batch([], 1)):
                            return
                        continue
                    pending.append(tile)
                    if len(pending) == self.batch_size:
                        if not self._put(self._batch(pending, 0)):
                            return
                        pending = []
                if pending and not self._put(self._batch(pending, 0)):
                    return
            finally:
                source.close()
            self._put(None)
        except BaseException as exc:  # handed to the consuming thread, raised there
            self._put(exc)

    def _batch(self, tiles: list[TileData], skipped: int) -> Batch:
        if not tiles:
            return Batch([], torch.empty(0), [], skipped)
        plans, valids = [t.plan for t in tiles], [t.valid for t in tiles]
        shape = tuple(tiles[0].pixels.shape[-2:])
        pixels, mask = self.normalizer.stack(tiles)
        device = self.normalizer.device
        if device is None:
            return Batch(plans, self.normalizer.normalize(pixels, mask), valids, skipped, shape)
        if device.type == "cuda":
            pixels = pixels.pin_memory()
        return Batch(plans, None, valids, skipped, shape, pixels, mask)

    def __iter__(self) -> Iterator[Batch]:
        self._thread = threading.Thread(target=self._work, name="momo-geo-reader", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
