"""Labelled chips for fine-tuning: crops, crater chips, augmentation, mixed crater sets.

Landmark crops are resized to the model input (they are tiles already); crater chips are random
``input_size`` crops of the training images at native resolution (a third centred on a crater
pixel, so that short runs see craters), normalised exactly like a map tile through the one shared
:func:`momo_geo.preprocess.to_model_input`: with ``value_scaling = "scene_percentile"`` each chip
is stretched by the range of the whole image it was cut from, as a map tile is by its scene's.
Crater masks may carry an ignore ring (255) on each labelled rim (:func:`rim_ignore_targets`):
a box's inscribed circle is only approximately the rim, and a model should not be punished for
a pixel either way there. :func:`hold_out` keeps whole images (tiles, crops, HiRISE products)
apart for recipe selection and learning curves (keeping rare landmark classes in training).
:func:`synthetic_crater_data` adds rendered crater fields to a crater training set, and
:func:`coarse_crater_data` reduces its images for chips at the coarse passes' scales.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from momo_geo.errors import MomoGeoError
from momo_geo.evaluate import TASK_KIND, TaskData
from momo_geo.inference.tta import turn
from momo_geo.preprocess import scene_range, to_model_input
from momo_geo.sensors import ALL_SENSORS_NORMALIZATION

SCENE_PERCENTILE_NORMALIZATION = (0.5, 0.25)

if TYPE_CHECKING:
    from momo_geo.training.finetune import Recipe


def normalise(raw: torch.Tensor, recipe: Recipe, ranges: torch.Tensor | None = None,
              normalization: dict[str, Any] | None = None) -> torch.Tensor:
    """Raw grey chips ``(B, 1, S, S)`` -> model input, through the one shared preprocessing.

    ``ranges``: ``(B, 2)`` scene range of each chip's source image (``scene_percentile``).
    ``normalization``: the task card's statistics (fine-tuning passes them: they are the
    encoder's); ``None``: :func:`recipe_normalization` (models without an encoder, probes).
    """
    if normalization is None:
        mean, std = recipe_normalization(recipe)
        normalization = {"mean": mean, "std": std}
    value_range = None if ranges is None else (ranges[:, 0], ranges[:, 1])
    return to_model_input(raw, normalization["mean"], normalization["std"], recipe.in_chans,
                          value_range=value_range)


def recipe_normalization(recipe: Recipe) -> tuple[float, float]:
    """Mean and std after stretching for a model *without* a pretrained encoder (a fine-tuned
    encoder's recorded statistics win: :func:`momo_geo.training.finetune.task_normalization`):
    the all-sensor statistics for the per-tile stretch, and fixed (0.5, 0.25) for the scene-wide
    percentile stretch, whose 1st..99th percentiles span [0, 1]."""
    if recipe.value_scaling == "scene_percentile":
        return SCENE_PERCENTILE_NORMALIZATION
    return ALL_SENSORS_NORMALIZATION.mean, ALL_SENSORS_NORMALIZATION.std


def image_ranges(images: list[np.ndarray], recipe: Recipe) -> torch.Tensor | None:
    """``(N, 2)`` scene range of each image, or ``None`` for the per-tile stretch."""
    if recipe.value_scaling != "scene_percentile":
        return None
    return torch.tensor([scene_range(img) for img in images], dtype=torch.float32)


def rim_ignore_targets(data: TaskData, width: float) -> list[np.ndarray]:
    """Crater masks with 255 (ignored) on a ring of ``width`` x radius (at least one pixel)
    around each labelled rim; images without labelled circles keep their mask."""
    out = []
    circles = data.circles or [None] * len(data.targets)
    for mask, labelled in zip(data.targets, circles, strict=True):
        target = np.array(mask, dtype=np.uint8)
        if labelled is not None and width > 0:
            for cx, cy, d in np.asarray(labelled, dtype=np.float64).reshape(-1, 3):
                _ignore_ring(target, cx, cy, d / 2, max(1.0, width * d / 2))
        out.append(target)
    return out


def _ignore_ring(target: np.ndarray, cx: float, cy: float, r: float, w: float) -> None:
    h, wd = target.shape
    y0, y1 = max(0, int(cy - r - w) - 1), min(h, int(cy + r + w) + 2)
    x0, x1 = max(0, int(cx - r - w) - 1), min(wd, int(cx + r + w) + 2)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    # circles are in pixel-centre coordinates (evaluate.label_circles)
    ring = np.abs(np.hypot(xx - cx, yy - cy) - r) < w / 2
    target[y0:y1, x0:x1][ring] = 255


def hold_out(data: TaskData, fraction: float, seed: int = 1, min_class_crops: int = 0
             ) -> tuple[TaskData, TaskData]:
    """Split ``data`` by group (tile, crop, HiRISE product) into (fit, select) parts.

    The selection part is for choosing recipes and drawing learning curves, so the validation
    split that results are reported on is never looked at while choosing. With
    ``min_class_crops`` (classification), a drawn group goes back to the fit part when a class
    it holds would otherwise keep fewer crops than that for training: a rare class found in one
    or two observations is worth more to learn from than to score on.
    """
    groups = sorted(set(data.groups))
    n_select = max(1, int(round(fraction * len(groups))))
    if len(groups) < 2:
        raise MomoGeoError(f"{data.task}: {len(groups)} group(s) cannot be split for selection")
    drawn = np.random.default_rng(seed).permutation(groups)[:n_select].tolist()
    chosen = set(drawn)
    if min_class_crops > 0 and TASK_KIND[data.task] == "classification":
        chosen = _keep_rare_in_fit(data, drawn, min_class_crops)
    parts = ([i for i, g in enumerate(data.groups) if g not in chosen],
             [i for i, g in enumerate(data.groups) if g in chosen])
    return tuple(subset(data, idx) for idx in parts)  # type: ignore[return-value]


def _keep_rare_in_fit(data: TaskData, drawn: list[str], min_crops: int) -> set[str]:
    """The drawn groups less those a class needs to keep ``min_crops`` crops in training."""
    drawn_set = set(drawn)
    fit = Counter(t for t, g in zip(data.targets, data.groups, strict=True) if g not in drawn_set)
    chosen = set()
    for group in drawn:  # in draw order: the outcome depends on the seed only
        held = Counter(t for t, g in zip(data.targets, data.groups, strict=True) if g == group)
        if any(fit[c] < min_crops for c in held):
            fit.update(held)
        else:
            chosen.add(group)
    return chosen


def rare_classes(data: TaskData, min_crops: int, min_products: int = 0) -> list[str]:
    """Names of ``data``'s classes with fewer than ``min_crops`` crops or from fewer than
    ``min_products`` products (``data.groups``; none at 0)."""
    counts = Counter(data.targets)
    products = Counter(t for t, _ in set(zip(data.targets, data.groups, strict=True)))
    return [name for i, name in enumerate(data.classes or [])
            if counts[i] < min_crops or products[i] < min_products]


def without_classes(data: TaskData, names: list[str]) -> TaskData:
    """``data`` less the crops of the classes ``names``."""
    drop = {data.classes.index(n) for n in names}
    return subset(data, [i for i, t in enumerate(data.targets) if t not in drop])


def subset(data: TaskData, idx: list[int]) -> TaskData:
    """The crops (or images) of ``data`` at ``idx``, every per-item list cut alike."""
    def pick(values: list[Any] | None) -> list[Any] | None:
        return None if values is None else [values[i] for i in idx]

    return TaskData(data.task, pick(data.images), pick(data.targets), pick(data.groups),
                    data.classes, pick(data.weights), pick(data.circles))


def resize_crops(images: list[np.ndarray], size: int) -> torch.Tensor:
    """Landmark crops ``(H, W)`` -> raw ``(N, 1, size, size)`` by area averaging."""
    x = torch.from_numpy(np.stack(images)).float().unsqueeze(1)
    return F.interpolate(x, size=(size, size), mode="area")


def crater_pixels(targets: list[np.ndarray]) -> list[np.ndarray]:
    """Flat indices of each mask's crater pixels, found once rather than per chip (on a CTX
    tile the search costs more than cutting the chip)."""
    return [np.flatnonzero(mask == 1) for mask in targets]


def crater_chips(data: TaskData, n: int, size: int, rng: np.random.Generator,
                 crater_fraction: float = 1 / 3, targets: list[np.ndarray] | None = None,
                 pixels: list[np.ndarray] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``n`` random ``size`` crops: raw ``(n, 1, size, size)``, masks ``(n, size, size)``
    (from ``targets`` if given, e.g. with ignore rings) and the source image of each.
    ``pixels``: :func:`crater_pixels` of those masks, when the caller keeps them."""
    weights = np.array(data.weights if data.weights is not None
                       else [img.size for img in data.images], dtype=np.float64)
    weights /= weights.sum()
    which = rng.choice(len(data.images), size=n, p=weights)
    raws = np.empty((n, 1, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.int64)
    targets = targets or data.targets
    for k, i in enumerate(which):
        img, mask = data.images[i], targets[i]
        h, w = img.shape
        near_crater = rng.random() < crater_fraction
        inside = (pixels[i] if pixels is not None else np.flatnonzero(mask == 1)
                  ) if near_crater else ()
        if len(inside):
            y, x = divmod(int(inside[rng.integers(len(inside))]), w)
            r0 = int(np.clip(y - rng.integers(size), 0, h - size))
            c0 = int(np.clip(x - rng.integers(size), 0, w - size))
        else:
            r0, c0 = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        raws[k, 0] = img[r0:r0 + size, c0:c0 + size]
        masks[k] = mask[r0:r0 + size, c0:c0 + size]
    return torch.from_numpy(raws), torch.from_numpy(masks), which


def augment_chips(x: torch.Tensor, gen: torch.Generator, jitter: float = 0.0,
                  masks: torch.Tensor | None = None) -> Any:
    """Label-preserving augmentation drawn per chip: one of the eight flips/90-degree rotations
    (orbital images have no preferred orientation; the sun direction varies too) and a small
    brightness/contrast jitter. With ``masks`` (segmentation) they turn with their chips and
    ``(x, masks)`` is returned."""
    n = len(x)
    k = torch.randint(4, (n,), generator=gen)
    flip = torch.randint(2, (n,), generator=gen).bool()
    out = x.clone()
    out_masks = None if masks is None else masks.clone()
    for rot in range(4):
        for f in (False, True):
            sel = (k == rot) & (flip == f)
            if sel.any():
                out[sel] = turn(x[sel], rot, f)
                if out_masks is not None:
                    out_masks[sel] = turn(masks[sel], rot, f)
    if jitter > 0:
        gain = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * jitter
        shift = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * jitter
        out = out * gain + shift
    return out if masks is None else (out, out_masks)


def check_zoom(zoom: float) -> None:
    """A recipe's ``zoom`` must be in [0, 1): a square of no side cannot be resized back."""
    if not 0 <= zoom < 1:
        raise MomoGeoError(f"fine-tuning recipe: zoom must be at least 0 and below 1, not {zoom}")


def zoom_chips(x: torch.Tensor, gen: torch.Generator, zoom: float,
               masks: torch.Tensor | None = None) -> Any:
    """Scale jitter drawn per chip: a random square whose side is ``1 - u * zoom`` of the
    chip's (``u`` uniform in [0, 1)), resized back to the chip size, so a feature is seen at
    up to ``1 / (1 - zoom)`` times its scale (observations differ in resolution and in how
    they were binned into browse images). Images are resampled bilinearly, ``masks`` by
    nearest neighbour; returns ``x`` or ``(x, masks)`` as :func:`augment_chips` does."""
    check_zoom(zoom)
    n, size = len(x), x.shape[-1]
    sides = ((1 - torch.rand(n, generator=gen) * zoom) * size).round().long().clamp(1, size)
    corner = torch.rand(n, 2, generator=gen)
    out = torch.empty_like(x)
    out_masks = None if masks is None else torch.empty_like(masks)
    for i in range(n):
        side = int(sides[i])
        r0, c0 = (int(v) for v in (corner[i] * (size - side + 1)).floor())
        window = (..., slice(r0, r0 + side), slice(c0, c0 + side))
        out[i] = F.interpolate(x[i:i + 1][window], size=(size, size), mode="bilinear",
                               align_corners=False)[0]
        if out_masks is not None:
            crop = masks[i:i + 1, None][window].float()
            out_masks[i] = F.interpolate(crop, size=(size, size), mode="nearest")[0, 0].long()
    return out if masks is None else (out, out_masks)


def augment(x: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random flip and 90-degree rotation of a batch (same for image and mask)."""
    k = int(torch.randint(4, (1,), generator=gen))
    flip = bool(torch.randint(2, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(-2, -1))
    if flip:
        x = x.flip(-1)
    if y is not None and y.ndim == 3:
        y = torch.rot90(y, k, dims=(-2, -1))
        if flip:
            y = y.flip(-1)
    return x, y


def batches_per_epoch(task: str, data: TaskData, recipe: Recipe) -> int:
    """Batches in one epoch: every crop once (classification) or ``recipe.chips`` chips."""
    n = len(data.images) if TASK_KIND[task] == "classification" else recipe.chips
    return max(1, n // recipe.batch_size)


COARSE_FACTORS = (2, 4)
"""Block sizes of the reduced images coarse chips come from (``Recipe.coarse_chips``): the
scales of the coarse passes a map runs for craters wider than the model's view."""


def coarse_crater_data(data: TaskData, targets: list[np.ndarray], size: int
                       ) -> tuple[TaskData, np.ndarray]:
    """``data``'s images block-averaged by each of :data:`COARSE_FACTORS`, as a coarse pass
    reduces a scene, with their masks reduced alike: a block is crater when three quarters of it
    is, background when at most a quarter is crater or ignored, and ignored in between (a rim
    cut by a block is neither). Images smaller than ``size`` once reduced are skipped. Returns
    the reduced set and, for each of its images, the index of the image it came from (whose
    scene range it keeps, as a coarse pass keeps the scene's)."""
    from momo_geo.inference.coarse import block_mean

    weights = data.weights or [float(img.size) for img in data.images]
    out = TaskData(data.task, [], [], [], data.classes, [], None)
    parents = []
    for k in COARSE_FACTORS:
        for i, (img, target) in enumerate(zip(data.images, targets, strict=True)):
            if min(img.shape) // k < size:
                continue
            valid = np.ones(img.shape, bool)
            crater = block_mean((target == 1).astype(np.float32), valid, k)[0]
            doubt = block_mean((target == 255).astype(np.float32), valid, k)[0]
            mask = np.where(crater >= 0.75, 1, np.where(crater + doubt <= 0.25, 0, 255))
            out.images.append(block_mean(np.asarray(img, np.float32), valid, k)[0])
            out.targets.append(mask.astype(np.uint8))
            out.groups.append(data.groups[i])
            out.weights.append(weights[i])
            parents.append(i)
    if not parents:
        raise MomoGeoError(f"coarse_chips: no training image is {size} px wide once reduced by "
                           f"{min(COARSE_FACTORS)}")
    return out, np.array(parents)


class EpochChips(torch.utils.data.IterableDataset):
    """Fresh crater chips each epoch (seeded), landmarks shuffled; yields normalised batches.

    ``normalization``: the task card's statistics (see :func:`normalise`). In a DataLoader with
    workers (``recipe.num_workers``, persistent), worker ``k`` of ``K`` yields batches ``k, k+K,
    ...`` of each epoch, its crater chips drawn from its own seeded stream: cutting chips is
    Python work, and one process cannot feed a GPU. Without workers the stream is the one of
    earlier releases, so CPU recipes train on the same chips."""

    def __init__(self, task: str, data: TaskData, recipe: Recipe,
                 normalization: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.task, self.data, self.recipe = task, data, recipe
        self.normalization = normalization
        self.epoch = 0
        if TASK_KIND[task] == "classification":
            self.x = normalise(resize_crops(data.images, recipe.input_size), recipe,
                               image_ranges(data.images, recipe), normalization)
            self.y = torch.tensor(data.targets, dtype=torch.int64)
        else:
            self.ranges = image_ranges(data.images, recipe)
            self.targets = rim_ignore_targets(data, recipe.rim_ignore)
            self.pixels = crater_pixels(self.targets)
            self.coarse = None
            if recipe.coarse_chips > 0:
                self.coarse, self.coarse_parent = coarse_crater_data(data, self.targets,
                                                                     recipe.input_size)

    def batches_per_epoch(self) -> int:
        return batches_per_epoch(self.task, self.data, self.recipe)

    def __iter__(self) -> Any:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rng = np.random.default_rng([self.recipe.seed, self.epoch])
        if workers > 1 and TASK_KIND[self.task] != "classification":
            rng = np.random.default_rng([self.recipe.seed, self.epoch, worker])
        self.epoch += 1
        bs = self.recipe.batch_size
        mine = range(worker, self.batches_per_epoch(), workers)
        if TASK_KIND[self.task] == "classification":
            if self.recipe.sampling == "sqrt_balanced":
                counts = np.bincount(self.y.numpy())
                p = 1 / np.sqrt(counts[self.y.numpy()])
                order = torch.from_numpy(rng.choice(len(self.y), size=len(self.y), p=p / p.sum()))
            elif self.recipe.sampling == "shuffle":
                order = torch.from_numpy(rng.permutation(len(self.y)))
            else:
                raise MomoGeoError(f"unknown sampling {self.recipe.sampling!r}")
            for b in mine:
                idx = order[b * bs:(b + 1) * bs]
                yield self.x[idx], self.y[idx]
        else:
            raw, mask, which = self._crater_chips(rng, len(mine) * bs)
            ranges = None if self.ranges is None else self.ranges[torch.from_numpy(which)]
            x = normalise(raw, self.recipe, ranges, self.normalization)
            for b in range(len(mine)):
                yield x[b * bs:(b + 1) * bs], mask[b * bs:(b + 1) * bs]

    def _crater_chips(self, rng: np.random.Generator, n: int
                      ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """``n`` chips, a ``coarse_chips`` share of them (shuffled in) from the reduced
        images; ``which`` names each chip's full-resolution source image."""
        size = self.recipe.input_size
        n_coarse = 0 if self.coarse is None else int(round(self.recipe.coarse_chips * n))
        raw, mask, which = crater_chips(self.data, n - n_coarse, size, rng, targets=self.targets,
                                        pixels=self.pixels)
        if n_coarse == 0:
            return raw, mask, which
        c_raw, c_mask, c_which = crater_chips(self.coarse, n_coarse, size, rng)
        order = torch.from_numpy(rng.permutation(n))
        return (torch.cat([raw, c_raw])[order], torch.cat([mask, c_mask])[order],
                np.concatenate([which, self.coarse_parent[c_which]])[order.numpy()])


def merge_tasks(parts: list[TaskData], task: str, balance: bool = True) -> TaskData:
    """Several crater datasets as one training set (the multi-resolution crater model).

    ``balance``: chips are drawn equally from each part (by area within a part), so 8 CTX
    tiles, 600 THEMIS crops and a few synthetic fields each get a third of the training chips.
    """
    out = TaskData(task, [], [], [], parts[0].classes, [], [])
    for part in parts:
        out.images += part.images
        out.targets += part.targets
        out.groups += part.groups
        out.circles += part.circles or [None] * len(part.images)
        area = np.array([img.size for img in part.images], dtype=np.float64)
        share = area / area.sum() / len(parts) if balance else area
        out.weights += share.tolist()
    return out


def synthetic_crater_data(n: int, seed0: int = 1000) -> TaskData:
    """``n`` synthetic crater fields (512 px, 6 m/px; seeds ``seed0``.., never the sample
    scene's 42) with varied sun and crater cover, as a ``ctx-craters`` training set."""
    from momo_geo.synthetic import render_crater_field

    images, targets, groups = [], [], []
    for i in range(n):
        rng = np.random.default_rng(seed0 + i)
        field = render_crater_field(size=(512, 512), gsd=6.0, seed=seed0 + i,
                                    sun_azimuth=float(rng.uniform(0, 360)),
                                    sun_elevation=float(rng.uniform(15, 50)),
                                    crater_cover=float(rng.uniform(0.05, 0.15)))
        truth = field.truth.copy()
        truth[truth == 255] = 0
        images.append(field.image.astype(np.float32))
        targets.append(truth)
        groups.append(f"synthetic-{seed0 + i}")
    return TaskData("ctx-craters", images, targets, groups, ["background", "crater"])
