"""The mapping engine: a scene (or an array) in, a class mask, probabilities and vectors out.

One core, three shells: the CLI (``momo-geo map``), the Python API (:func:`map_scene`,
:func:`predict_array`) and the QGIS plugin all end up in :func:`_run_tiles`, with the same
parameter names and defaults (:class:`~momo_geo.inference.options.MapOptions`). The way of one
scene:

plan tiles on the scene grid (resized to the model's GSD when the scene is far off it) ->
:class:`~momo_geo.inference.reader.Prefetcher` reads, masks and normalises tiles in a thread ->
the model predicts a batch -> :class:`~momo_geo.inference.stitch.RowBandStitcher` writes
finished rows into a tiled GeoTIFF in a staging folder -> GDAL's COG driver copies it into a
Cloud-Optimised GeoTIFF -> :mod:`momo_geo.vectorize` turns it into polygons -> everything is
renamed into place at the very end. Nothing ever holds the whole scene in memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from momo_geo import __version__
from momo_geo.bundle import Bundle, ModelCard, load_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.inference.coarse import (
    MIN_COARSE_SIDE,
    CoarsePass,
    add_coarse,
    add_coarse_scene,
    coarse_image,
    coarse_shape,
    factor_of,
    kept_features,
    upsample_rows,
)
from momo_geo.inference.fit import assumed_mars_notice, open_mappable
from momo_geo.inference.floor import (
    background_class,
    class_floors,
    class_max_pixels,
    class_min_pixels,
    erase_weak,
    erase_weak_scene,
    per_tile,
)
from momo_geo.inference.frame import Frame, find_frame
from momo_geo.inference.options import (
    DEVICES,
    PRECISIONS,
    MapOptions,
    output_paths,
)
from momo_geo.inference.plan import check_tiling, plan_shape, plan_tiles
from momo_geo.inference.reader import ArraySource, Normalizer, Prefetcher, RasterSource
from momo_geo.inference.stitch import NODATA_CLASS, NODATA_PROB, RowBandStitcher
from momo_geo.inference.tta import averaged, check_tta
from momo_geo.io import Scene
from momo_geo.outputs import OutputSet, writing

# Architectures that take any input size; every other model gets tiles padded to its tile size.
FULLY_CONVOLUTIONAL = {"conv", "unet"}
# How far (ratio of GSDs) a scene may be from the model's GSD before we warn loudly.
EXTREME_GSD_RATIO = 8.0
# A classification tile with less of the image than this is left unclassified: landmark crops
# never hold nodata, and a tile partly in a map-projected product's black collar reads as
# terrain with a straight edge (on the real HiRISE scene, false slope streaks along the
# collar: 1.9 % of the image called slope streak at 0.5, 0.9 % at 0.75, 8 % left unmapped).
MIN_CLASSIFIED_SHARE = 0.75
GDAL_CACHE_BYTES = 32 * 2**20
DEFAULTS = MapOptions()

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]
Log = Callable[[str], None]


@dataclass
class MapResult:
    """What a run produced and how long it took."""

    scene: Path
    mask_path: Path | None
    vector_path: Path | None = None
    probabilities_path: Path | None = None
    model: str = ""
    task: str = ""
    device: str = "cpu"
    tiles_total: int = 0
    tiles_skipped: int = 0
    seconds: float = 0.0
    """Wall time of the whole run (reading to renamed outputs, vectors included)."""
    inference_seconds: float = 0.0
    """Wall time of the tile loop (read, predict, stitch, write rows)."""
    tiles_per_s: float = 0.0
    """Predicted tiles per second of the tile loop."""
    frame_fraction: float = 0.0
    """Share of the scene in an undeclared constant frame, read as nodata (0: none found)."""
    resample_factor: float = 1.0
    """Scene pixels per model pixel (1: no resampling)."""
    class_names: list[str] = field(default_factory=list)
    pixel_counts: dict[str, int] = field(default_factory=dict)
    feature_counts: dict[str, int] = field(default_factory=dict)
    feature_areas_m2: dict[str, float] = field(default_factory=dict)
    class_areas_m2: dict[str, float] = field(default_factory=dict)
    """Mask area per class (pixel count × pixel area at the scene centre)."""

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.mask_path, self.probabilities_path, self.vector_path) if p]


# --------------------------------------------------------------------------------------------
# model, device, precision


def resolve_device(device: str = DEFAULTS.device) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; a named device must exist."""
    if device not in DEVICES:
        raise MomoGeoError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise MomoGeoError("device 'cuda' requested but no CUDA GPU is available")
    if device == "mps" and not has_mps:
        raise MomoGeoError("device 'mps' requested but Apple MPS is not available")
    return torch.device(device)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision not in PRECISIONS:
        raise MomoGeoError(f"precision must be one of {', '.join(PRECISIONS)}, "
                           f"not {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type == "cpu":
        raise MomoGeoError("precision fp16 needs a GPU (cuda or mps); use bf16 or fp32 on CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def as_bundle(model: str | os.PathLike[str] | Bundle, trust_unhashed: bool = False) -> Bundle:
    """A loaded bundle from a bundle, a bundle folder or a bundled model's name (a bundle on
    disk without a weights hash only when ``trust_unhashed``)."""
    if isinstance(model, Bundle):
        return model
    return load_bundle(model, trust_unhashed=trust_unhashed)


class Predictor:
    """A model on a device that turns a normalised batch into per-class probabilities."""

    def __init__(self, bundle: Bundle, device: str = DEFAULTS.device,
                 precision: str = DEFAULTS.precision, tta: str = DEFAULTS.tta) -> None:
        card = bundle.card
        if card.task not in ("segmentation", "classification"):
            raise MomoGeoError(f"model {card.name!r} is a {card.task} model with no classes to "
                               "map; fine-tune it for segmentation or classification first")
        if card.num_classes > 254:
            raise MomoGeoError(f"model {card.name!r} has {card.num_classes} classes; "
                               "the class mask holds at most 254")
        self.card = card
        self.device = resolve_device(device)
        self.precision = precision
        self._autocast = _autocast(self.device, precision)  # validates precision early
        self.tta = check_tta(card.tta if tta == "auto" else tta)
        """Test-time augmentation (:mod:`momo_geo.inference.tta`): ``auto`` takes the card's."""
        try:
            model = bundle.build_model()
        except RuntimeError as exc:  # shape mismatch, e.g. weights for another band count
            raise MomoGeoError(f"model {card.name!r}: weights do not fit the architecture in its "
                               f"card (in_chans {card.in_chans}): {_first_line(exc)}") from None
        self.model = model.to(self.device)
        self._unmapped = [c.id for c in card.classes if c.name in card.unmapped_classes]
        """Class ids whose logits are masked (:attr:`ModelCard.unmapped_classes`)."""
        self.normalize_on_device = self.device.type != "cpu"
        """Normalise tiles on the model's device (GPUs) rather than in the reader thread."""

    @torch.inference_mode()
    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> probabilities ``(B, K, H, W)`` (segmentation) or ``(B, K)``,
        averaged over the turns of :attr:`tta`."""
        x = inputs.to(self.device, non_blocking=True)
        return averaged(self._probabilities, x, self.tta, self.card.task == "segmentation")

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        with _autocast(self.device, self.precision):
            try:
                logits = self.model(x)
            except RuntimeError as exc:
                hint = ("; try a smaller --batch-size" if "out of memory" in str(exc).lower()
                        else "")
                raise MomoGeoError(f"model {self.card.name!r} failed on tiles of "
                                   f"{tuple(x.shape[-2:])} px: {str(exc).splitlines()[0]}{hint}"
                                   ) from None
        expected = 4 if self.card.task == "segmentation" else 2
        if logits.ndim != expected or logits.shape[1] != self.card.num_classes:
            raise MomoGeoError(f"model {self.card.name!r} returned shape {tuple(logits.shape)}, "
                               f"not the {self.card.num_classes} classes its card lists")
        logits = logits.float()
        if self._unmapped:  # never predicted: the rest of the classes share the probability
            logits[:, self._unmapped] = -torch.inf
        return logits.softmax(dim=1)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _poll(cancel: Cancel | None) -> None:
    """Stop with ``MomoGeoError("cancelled")`` when ``cancel()`` says so."""
    if cancel is not None and cancel():
        raise MomoGeoError("cancelled")


# --------------------------------------------------------------------------------------------
# the core loop


@dataclass
class _Grid:
    """Tiling on the scene's grid, derived from the model's tile size and GSD ratio."""

    tile: int
    overlap: int
    model_shape: tuple[int, int] | None  # model-grid tile size when resampling, else None
    factor: float  # scene pixels per model pixel
    pad_to: tuple[int, int] | None


def _grid(card: ModelCard, width: int, height: int, tile: int, overlap: int,
          factor: float) -> _Grid:
    check_tiling(tile, overlap)
    if factor == 1.0:
        src_tile, src_overlap, model_shape = tile, overlap, None
    else:
        src_tile = max(1, round(tile * factor))
        src_overlap = min(round(overlap * factor), src_tile - 1)
        th, tw = min(src_tile, height), min(src_tile, width)
        model_shape = (max(1, round(th / factor)), max(1, round(tw / factor)))
        if th == src_tile:
            model_shape = (tile, model_shape[1])
        if tw == src_tile:
            model_shape = (model_shape[0], tile)
    kind = card.architecture.get("kind", "vit")
    fixed = kind not in FULLY_CONVOLUTIONAL and not card.architecture.get("dynamic_img_size")
    if fixed and tile != card.input_size:
        raise MomoGeoError(f"model {card.name!r} takes tiles of {card.input_size} px, "
                           f"not {tile}; leave --tile at its default")
    pad_to = (tile, tile) if fixed else None
    return _Grid(src_tile, src_overlap, model_shape, factor, pad_to)


def _stitch_batch(predictor: Predictor, normalizer: Normalizer, batch: Any,
                  stitcher: RowBandStitcher, tiles_done: Callable[[int], None]) -> None:
    """Predict one batch and hand each tile's probabilities, on the scene grid, to the stitcher
    (``tiles_done(1)`` after each tile)."""
    inputs = batch.inputs
    if inputs is None:  # raw pixels: normalise on the model's device
        device = predictor.device
        mask = batch.mask.to(device) if batch.mask is not None else None
        inputs = normalizer.normalize(batch.pixels.to(device, non_blocking=True), mask)
    probs = predictor(inputs)
    hm, wm = batch.source_shape
    first = batch.plans[0]
    if probs.ndim == 4:
        probs = probs[..., :hm, :wm]  # drop padding of fixed-size models
        if (hm, wm) != (first.height, first.width):  # resampled: back to the scene grid
            probs = torch.nn.functional.interpolate(
                probs, size=(first.height, first.width), mode="bilinear", align_corners=False)
        array = probs.cpu().numpy()
        valids = batch.valids
    else:  # classification: the tile's class for all its pixels
        array = np.broadcast_to(probs.cpu().numpy()[:, :, None, None],
                                (*probs.shape, first.height, first.width))
        valids = [classified(v) for v in batch.valids]
    for plan, p, valid in zip(batch.plans, array, valids, strict=True):
        stitcher.add(plan, p, valid)
        tiles_done(1)


def classified(valid: np.ndarray) -> np.ndarray:
    """A classification tile's valid pixels, or none when less than
    :data:`MIN_CLASSIFIED_SHARE` of the tile is image (its pixels stay unmapped unless an
    overlapping tile classifies them)."""
    return valid if valid.mean() >= MIN_CLASSIFIED_SHARE else np.zeros_like(valid)


def _run_tiles(source: RasterSource | ArraySource, width: int, height: int,
               predictor: Predictor, grid: _Grid, write_rows: Any, *, options: MapOptions,
               keep_probabilities: bool, progress: Progress | None,
               cancel: Cancel | None) -> tuple[int, int]:
    """Predict every tile and stitch; returns (tiles total, tiles skipped as all-nodata)."""
    card = predictor.card
    rows, cols = plan_shape(width, height, grid.tile, grid.overlap)
    total = rows * cols
    stitcher = RowBandStitcher(width, height, card.num_classes, min(grid.tile, height),
                               write_rows, blend=options.blend, overlap=grid.overlap,
                               keep_probabilities=keep_probabilities)
    value_range = source.value_range() if card.value_scaling == "scene_percentile" else None
    normalizer = Normalizer(card.normalization["mean"], card.normalization["std"],
                            card.in_chans, card.bands, grid.pad_to,
                            predictor.device if predictor.normalize_on_device else None,
                            value_range)
    prefetch = Prefetcher(source, plan_tiles(width, height, grid.tile, grid.overlap),
                          normalizer, batch_size=options.batch_size)
    done = skipped = 0

    def tiles_done(count: int) -> None:
        # Per planned tile, predicted or skipped: a long all-nodata stretch still moves the
        # bar and can be cancelled (the reader hands over skipped tiles one by one).
        nonlocal done
        for _ in range(count):
            done += 1
            if progress:
                progress(done, total)
            _poll(cancel)

    if progress:
        progress(0, total)
    _poll(cancel)
    try:
        for batch in prefetch:
            _poll(cancel)
            skipped += batch.skipped
            tiles_done(batch.skipped)
            if batch.plans:
                _stitch_batch(predictor, normalizer, batch, stitcher, tiles_done)
    finally:
        prefetch.close()  # stop the reader thread now, also on errors and Ctrl-C
    _poll(cancel)
    stitcher.finish()
    return total, skipped


def _scene_frame(info: Scene, options: MapOptions, log: Log | None) -> Frame | None:
    """The scene's undeclared constant frame (when ``options.frame``), said in one line."""
    frame = find_frame(str(info.path), nodata=options.nodata) if options.frame else None
    if frame is not None and log is not None:
        log(f"{info.path.name}: a frame of value {frame.value:g} around the image "
            f"({100 * frame.fraction:.0f} % of the scene) is treated as nodata "
            "(--no-frame to map it)")
    return frame


def _options(options: MapOptions | None, changes: dict[str, Any]) -> MapOptions:
    """``options`` (default: :class:`MapOptions`'s defaults) with keyword changes applied."""
    options = options if options is not None else MapOptions()
    unknown = sorted(set(changes) - set(options.as_dict()))
    if unknown:
        raise TypeError(f"unknown mapping option(s): {', '.join(unknown)}")
    return options.replace(**changes) if changes else options


def _tiling(card: ModelCard, options: MapOptions) -> tuple[int, int]:
    """Tile size and overlap: the options', else the model card's."""
    tile = options.tile or card.tile_size
    overlap = card.tile_overlap if options.overlap is None else options.overlap
    check_tiling(tile, overlap)
    return tile, overlap


# --------------------------------------------------------------------------------------------
# the coarse pass (:mod:`momo_geo.inference.coarse`)


def coarse_probabilities(source: RasterSource | ArraySource, width: int, height: int,
                         predictor: Predictor, k: int, options: MapOptions,
                         stretch: tuple[float, float] | None,
                         cancel: Cancel | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The model's probabilities ``(K, h, w)`` and validity on the scene's ``k`` x ``k`` block
    means (stretched with the scene's own range), or ``None`` when that grid is too small to
    hold a feature the fine pass cannot see."""
    if min(coarse_shape(height, width, k)) < MIN_COARSE_SIDE:
        return None  # read nothing: a grid this small holds no crater the fine pass misses
    grey, valid = coarse_image(source, height, width, k)
    h, w = grey.shape
    if not valid.any():
        return None
    card = predictor.card
    probs = np.full((card.num_classes, h, w), NODATA_PROB, np.float32)

    def write_rows(row0: int, cls: np.ndarray, conf: np.ndarray, p: np.ndarray | None) -> None:
        probs[:, row0:row0 + len(cls)] = p

    grid = _grid(card, w, h, *_tiling(card, options), 1.0)
    _run_tiles(ArraySource(grey, valid, "mean", stretch), w, h, predictor, grid, write_rows,
               options=options, keep_probabilities=True, progress=None, cancel=cancel)
    return probs, valid


def _coarse_kept(source: RasterSource | ArraySource, width: int, height: int,
                 predictor: Predictor, options: MapOptions, gsd_factor: float,
                 stretch: tuple[float, float] | None, cancel: Cancel | None = None
                 ) -> list[tuple[np.ndarray, int, int]]:
    """The card's coarse passes, each as (kept feature probabilities on its coarse grid, fine
    pixels per coarse pixel, the feature's class id); passes that add nothing are left out."""
    card = predictor.card
    background = background_class(card)
    out = []
    for spec in CoarsePass.of(card) if background is not None else []:
        k = factor_of(spec, gsd_factor)
        coarse = coarse_probabilities(source, width, height, predictor, k, options, stretch,
                                      cancel)
        if coarse is None:
            continue
        feature = card.class_names.index(spec.feature)
        kept = kept_features(*coarse, feature, background, spec.min_confidence,
                             spec.min_diameter * gsd_factor / k, spec.max_residual)
        if kept.any():
            out.append((kept, k, feature))
    return out


# --------------------------------------------------------------------------------------------
# in-memory arrays (evaluation)


def predict_array(model: str | os.PathLike[str] | Bundle | None, image: np.ndarray,
                  valid: np.ndarray | None = None, options: MapOptions | None = None, *,
                  predictor: Predictor | None = None, probabilities: bool = False,
                  **changes: Any,
                  ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map an in-memory image with the same engine as :func:`map_scene`.

    ``image`` is ``(H, W)`` or ``(C, H, W)`` raw values (uint8, uint16 or float; normalised per
    tile as the model card says); ``valid`` an optional ``(H, W)`` bool mask. ``options`` (and
    any :class:`MapOptions` field as a keyword, e.g. ``tile=48``) as for :func:`map_scene`; the
    vector options do not apply. Returns ``(class_map uint8 (H, W), confidence float32 (H, W))``
    with 255 / -1 where the input is not valid, plus ``(K, H, W)`` probabilities when
    ``probabilities=True``. Pass a :class:`Predictor` to reuse a model already on its device.
    """
    options = _options(options, changes)
    bundle = as_bundle(model) if predictor is None else None
    predictor = predictor or Predictor(bundle, options.device, options.precision, options.tta)
    card = predictor.card
    source = ArraySource(image, valid, card.bands)
    h, w = source.height, source.width
    classes = np.full((h, w), NODATA_CLASS, np.uint8)
    confidence = np.full((h, w), NODATA_PROB, np.float32)
    probs = np.full((card.num_classes, h, w), NODATA_PROB, np.float32) if probabilities else None

    def write_rows(row0: int, cls: np.ndarray, conf: np.ndarray, p: np.ndarray | None) -> None:
        classes[row0:row0 + len(cls)] = cls
        confidence[row0:row0 + len(cls)] = conf
        if probs is not None and p is not None:
            probs[:, row0:row0 + len(cls)] = p

    grid = _grid(card, w, h, *_tiling(card, options), 1.0)
    _run_tiles(source, w, h, predictor, grid, write_rows, options=options,
               keep_probabilities=probabilities, progress=None, cancel=None)
    floors, sizes, caps = class_floors(card), class_min_pixels(card), class_max_pixels(card)
    if floors or sizes or caps:
        erase_weak(classes, confidence, floors, background_class(card), per_tile(card), sizes,
                   caps)
    if options.coarse:
        for kept, k, feature in _coarse_kept(source, w, h, predictor, options, 1.0,
                                             source.value_range()):
            add_coarse(classes, confidence, upsample_rows(kept, k, 0, h, w), feature)
    if probs is not None:
        return classes, confidence, probs
    return classes, confidence


# --------------------------------------------------------------------------------------------
# scenes on disk


def gsd_factor(scene: Scene, card: ModelCard, log: Log | None = None) -> float:
    """Scene pixels per model pixel: 1 when the scene's GSD is in the card's range.

    Outside the range the scene is read resampled to the card's GSD. A sensor the model was
    not trained on, or a GSD many times off, gets a loud warning (a scene not on Mars never gets
    here: :func:`~momo_geo.inference.fit.check_body` refuses it).
    """
    say = log or (lambda message: None)
    factor = 1.0
    if not card.gsd and card.source_tile:
        factor = card.source_tile / card.input_size
    if card.gsd and card.gsd_range:
        lo, hi = card.gsd_range
        if not lo <= scene.gsd <= hi:
            factor = card.gsd / scene.gsd
            say(f"scene GSD {scene.gsd:.3g} m/px is outside the model's range "
                f"{lo:g}-{hi:g} m/px: resampling tiles to {card.gsd:g} m/px")
    if card.gsd:
        ratio = max(scene.gsd / card.gsd, card.gsd / scene.gsd)
        if ratio >= EXTREME_GSD_RATIO:
            say(f"WARNING: scene GSD {scene.gsd:.3g} m/px is {ratio:.0f}x off the model's "
                f"{card.gsd:g} m/px; features of this size look different - check results")
    sensors = [s.lower() for s in card.sensors]
    if scene.sensor is not None and sensors and scene.sensor.name.lower() not in sensors:
        say(f"WARNING: scene looks like {scene.sensor.name} but model {card.name!r} was trained "
            f"on {', '.join(card.sensors)}")
    return factor


class _MaskWriter:
    """Staging rasters (tiled GeoTIFF) that finished rows are written to at once."""

    def __init__(self, folder: Path, target: Path, scene: Scene, card: ModelCard,
                 confidence: bool, probabilities: bool) -> None:
        self.scene, self.card, self.target = scene, card, target
        profile = dict(driver="GTiff", width=scene.width, height=scene.height, crs=scene.crs,
                       transform=scene.transform, tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate", zlevel=1, bigtiff="IF_SAFER")  # fast: temporary
        self.mask_path = folder / "_work_mask.tif"
        self.conf_path = folder / "_work_confidence.tif" if confidence else None
        self.prob_path = folder / "_work_probabilities.tif" if probabilities else None
        self.mask = self.conf = self.prob = None
        self.counts = np.zeros(256, np.int64)
        with writing("class mask's working copy", target):
            self._open(profile)

    def _open(self, profile: dict[str, Any]) -> None:
        card = self.card
        self.mask = rasterio.open(self.mask_path, "w", count=1, dtype="uint8",
                                  nodata=NODATA_CLASS, **profile)
        self.conf = (rasterio.open(self.conf_path, "w", count=1, dtype="float32",
                                   nodata=NODATA_PROB, **profile) if self.conf_path else None)
        self.prob = (rasterio.open(self.prob_path, "w", count=card.num_classes,
                                   dtype="float32", nodata=NODATA_PROB, predictor=3, **profile)
                     if self.prob_path else None)

    def __call__(self, row0: int, classes: np.ndarray, conf: np.ndarray,
                 probs: np.ndarray | None) -> None:
        with writing("class mask's working copy", self.target):
            self._write(row0, classes, conf, probs)

    def _write(self, row0: int, classes: np.ndarray, conf: np.ndarray,
               probs: np.ndarray | None) -> None:
        window = rasterio.windows.Window(0, row0, classes.shape[1], classes.shape[0])
        self.mask.write(classes, 1, window=window)
        self.counts += np.bincount(classes.ravel(), minlength=256)
        if self.conf is not None:
            self.conf.write(conf, 1, window=window)
        if self.prob is not None and probs is not None:
            self.prob.write(probs, window=window)

    def close(self) -> None:
        """Close the staging rasters (after a failure: quietly, the first error is the news)."""
        for ds in (self.mask, self.conf, self.prob):
            if ds is not None and not ds.closed:
                with contextlib.suppress(Exception):
                    ds.close()

    def finish(self, model_name: str) -> None:
        """Colour table, class names and provenance into the staging mask, then close all."""
        with writing("class mask's working copy", self.target):
            self._finish(model_name)
            for ds in (self.mask, self.conf, self.prob):
                if ds is not None:
                    ds.close()

    def _finish(self, model_name: str) -> None:
        card = self.card
        colormap = {i: (0, 0, 0, 0) for i in range(256)}
        for c in card.classes:
            colour = c.color.lstrip("#")
            colormap[c.id] = (int(colour[0:2], 16), int(colour[2:4], 16),
                              int(colour[4:6], 16), 255)
        self.mask.write_colormap(1, colormap)
        names = {str(c.id): c.name for c in card.classes}
        self.mask.update_tags(CLASS_NAMES=json.dumps(names), MODEL=model_name,
                              SOFTWARE=f"momo-geo {__version__}", NODATA_CLASS=str(NODATA_CLASS),
                              **{f"CLASS_{c.id}": c.name for c in card.classes})
        self.mask.set_band_description(1, "class")
        if self.prob is not None:
            for c in card.classes:
                self.prob.set_band_description(c.id + 1, f"p({c.name})")
            self.prob.update_tags(MODEL=model_name, SOFTWARE=f"momo-geo {__version__}")


def write_cog(src_path: Path, dst_path: Path, resampling: str = "NEAREST") -> None:
    """Copy a tiled GeoTIFF into a Cloud-Optimised GeoTIFF (GDAL's COG driver, streaming)."""
    from rasterio.shutil import copy as rio_copy

    rio_copy(src_path, dst_path, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512,
             OVERVIEW_RESAMPLING=resampling, BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")


def _outputs(scene: Scene, mask_path: Any, vector_path: Any,
             probabilities: Any) -> tuple[Path, Path | None, Path | None]:
    """Mask, vector and probabilities paths, their names checked once before any work."""
    return output_paths(scene.path, mask_path, vector_path, probabilities)


def map_scene(scene: str | os.PathLike[str], mask_path: str | os.PathLike[str] | None = None,
              vector_path: str | os.PathLike[str] | None = None,
              model: str | os.PathLike[str] | Bundle = "default",
              options: MapOptions | None = None, *,
              probabilities: str | os.PathLike[str] | None = None,
              progress: Progress | None = None, cancel: Cancel | None = None,
              log: Log | None = None, predictor: Predictor | None = None,
              **changes: Any) -> MapResult:
    """Map one scene: class mask COG (+ optional probabilities COG and vector layer).

    ``mask_path`` defaults to ``<scene>_mask.tif`` beside the scene; ``vector_path`` (``.gpkg``,
    ``.shp`` or ``.geojson``) and ``probabilities`` are written only when given. ``model`` is a
    bundle folder, a bundled model's name or a loaded :class:`~momo_geo.bundle.Bundle`.
    ``options`` is a :class:`MapOptions` (default: its defaults); any of its fields may also be
    given as a keyword (``map_scene(scene, tile=256, min_area=500)``) and overrides it.
    ``progress(done, total)`` is called and ``cancel()`` polled after each planned tile, skipped
    all-nodata tiles included (True stops with ``MomoGeoError("cancelled")`` and no output; it is
    not polled once the outputs are being committed), ``log(message)`` gets warnings. Outputs are
    reserved before the model loads, staged, and committed together only when complete
    (:mod:`momo_geo.outputs`); existing files are kept unless ``overwrite``, and a folder is
    never replaced.
    """
    started = time.perf_counter()
    options = _options(options, changes)
    info = open_mappable(scene, options)
    mask_out, vector_out, prob_out = _outputs(info, mask_path, vector_path, probabilities)
    # Reserved before the model loads: a second run aimed at these files fails at once.
    with OutputSet([mask_out, prob_out, vector_out], overwrite=options.overwrite,
                   inputs=[info.path]) as outputs:
        return _map_reserved(info, outputs, (mask_out, vector_out, prob_out), model, options,
                             predictor, progress, cancel, log, started)


def _map_reserved(info: Scene, outputs: OutputSet,
                  paths: tuple[Path, Path | None, Path | None],
                  model: str | os.PathLike[str] | Bundle, options: MapOptions,
                  predictor: Predictor | None, progress: Progress | None, cancel: Cancel | None,
                  log: Log | None, started: float) -> MapResult:
    """The rest of :func:`map_scene`, once its outputs are reserved; commits them together."""
    mask_out, vector_out, prob_out = paths
    if predictor is None:
        predictor = Predictor(as_bundle(model, options.trust_unhashed), options.device,
                              options.precision, options.tta)
    card = predictor.card
    notice = assumed_mars_notice(info)
    if notice and log is not None:
        log(notice)
    tile, overlap = _tiling(card, options)
    factor = gsd_factor(info, card, log)
    if tile * factor < 2:
        raise MomoGeoError(f"scene GSD {info.gsd:.3g} m/px is far too coarse for model "
                           f"{card.name!r} ({card.gsd} m/px): a tile would cover < 2 pixels")
    grid = _grid(card, info.width, info.height, tile, overlap, factor)
    result = MapResult(scene=info.path, mask_path=mask_out, vector_path=vector_out,
                       probabilities_path=prob_out, model=card.name, task=card.task,
                       device=str(predictor.device), resample_factor=factor,
                       class_names=card.class_names)
    frame = _scene_frame(info, options, log)
    result.frame_fraction = frame.fraction if frame is not None else 0.0
    source = RasterSource(str(info.path), card.bands, grid.model_shape, frame, options.nodata)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        floors, background = class_floors(card), background_class(card)
        sizes, caps = class_min_pixels(card, factor), class_max_pixels(card, factor)
        writer = _MaskWriter(outputs.scratch(), mask_out, info, card,
                             confidence=vector_out is not None or bool(floors or sizes or caps),
                             probabilities=prob_out is not None)
        try:
            loop_start = time.perf_counter()
            total, skipped = _run_tiles(
                source, info.width, info.height, predictor, grid, writer, options=options,
                keep_probabilities=prob_out is not None, progress=progress, cancel=cancel)
            result.inference_seconds = time.perf_counter() - loop_start
            writer.finish(card.name)
        finally:
            writer.close()
        result.tiles_total, result.tiles_skipped = total, skipped
        if skipped == total:
            raise MomoGeoError(f"{info.path}: every pixel is nodata; nothing to map")
        if (floors or sizes or caps) and writer.conf_path is not None:
            for class_id, pixels in erase_weak_scene(writer.mask_path, writer.conf_path,
                                                     floors, background,
                                                     pixelwise=per_tile(card),
                                                     min_pixels=sizes,
                                                     max_pixels=caps).items():
                writer.counts[class_id] -= pixels
                writer.counts[background] += pixels
        if options.coarse:
            _coarse_scene(info, frame, options, predictor, factor, source, writer, cancel)
        _poll(cancel)
        with writing("class mask", mask_out):
            write_cog(writer.mask_path, outputs.path(mask_out))
        if prob_out is not None and writer.prob_path is not None:
            _poll(cancel)
            with writing("probabilities", prob_out):
                write_cog(writer.prob_path, outputs.path(prob_out), resampling="BILINEAR")
        _count_pixels(result, writer, card, info)
        if vector_out is not None:
            _vectors(result, writer, card, vector_out, outputs.path(vector_out), options, cancel)
        _poll(cancel)  # the last look: after this the run completes, never half-way
        outputs.commit()
    result.seconds = time.perf_counter() - started
    predicted = result.tiles_total - result.tiles_skipped
    loop_seconds = result.inference_seconds
    result.tiles_per_s = predicted / loop_seconds if loop_seconds > 0 else math.inf
    return result


def _coarse_scene(info: Scene, frame: Frame | None, options: MapOptions, predictor: Predictor,
                  factor: float, source: RasterSource, writer: _MaskWriter,
                  cancel: Cancel | None) -> None:
    """The card's coarse passes over the whole scene, added to the staged mask (and counts)."""
    full = RasterSource(str(info.path), predictor.card.bands, None, frame, options.nodata)
    for kept, k, feature in _coarse_kept(full, info.width, info.height, predictor, options,
                                         factor, source.value_range(), cancel):
        former = add_coarse_scene(writer.mask_path, writer.conf_path, kept, k, feature)
        writer.counts -= former
        writer.counts[feature] += int(former.sum())


def _count_pixels(result: MapResult, writer: _MaskWriter, card: ModelCard, info: Scene) -> None:
    pixel_area = info.gsd_xy[0] * info.gsd_xy[1]
    for c in card.classes:
        n = int(writer.counts[c.id])
        result.pixel_counts[c.name] = n
        result.class_areas_m2[c.name] = n * pixel_area


def _vectors(result: MapResult, writer: _MaskWriter, card: ModelCard, vector_out: Path,
             staged: Path, options: MapOptions, cancel: Cancel | None) -> None:
    from momo_geo.vectorize import layer_name, write_features

    _poll(cancel)
    with writing("vector layer", vector_out):
        summary = write_features(writer.mask_path, staged, card.classes,
                                 layer=layer_name(vector_out), confidence_path=writer.conf_path,
                                 min_area=options.min_area, simplify=options.simplify,
                                 circles=options.circles, cancel=cancel,
                                 geojson_lonlat=options.geojson_lonlat)
    result.feature_counts = summary.counts
    result.feature_areas_m2 = summary.areas_m2
