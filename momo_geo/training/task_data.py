"""Labelled chips for fine-tuning: crops, crater chips, augmentation, mixed crater sets.

Landmark crops are resized to the model input (they are tiles already); crater chips are random
``input_size`` crops of the training images at native resolution (a third centred on a crater
pixel, so that short runs see craters), normalised per chip exactly like a map tile, through the
one shared :func:`momo_geo.preprocess.to_model_input`. :func:`synthetic_crater_data` adds
rendered crater fields to a crater training set (the bundled crater model learns from them too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from momo_geo.errors import MomoGeoError
from momo_geo.evaluate import TASK_KIND, TaskData
from momo_geo.preprocess import to_model_input
from momo_geo.sensors import ALL_SENSORS_NORMALIZATION

if TYPE_CHECKING:
    from momo_geo.training.finetune import Recipe


def normalise(raw: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """Raw grey chips ``(B, 1, S, S)`` -> model input, through the one shared preprocessing."""
    norm = ALL_SENSORS_NORMALIZATION
    return to_model_input(raw, norm.mean, norm.std, recipe.in_chans)


def resize_crops(images: list[np.ndarray], size: int) -> torch.Tensor:
    """Landmark crops ``(H, W)`` -> raw ``(N, 1, size, size)`` by area averaging."""
    x = torch.from_numpy(np.stack(images)).float().unsqueeze(1)
    return F.interpolate(x, size=(size, size), mode="area")


def crater_chips(data: TaskData, n: int, size: int, rng: np.random.Generator,
                 crater_fraction: float = 1 / 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random ``size`` crops (raw ``(n, 1, size, size)``, masks ``(n, size, size)``)."""
    weights = np.array(data.weights if data.weights is not None
                       else [img.size for img in data.images], dtype=np.float64)
    weights /= weights.sum()
    which = rng.choice(len(data.images), size=n, p=weights)
    raws = np.empty((n, 1, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.int64)
    for k, i in enumerate(which):
        img, mask = data.images[i], data.targets[i]
        h, w = img.shape
        if rng.random() < crater_fraction and mask.any():
            ys, xs = np.nonzero(mask)
            j = rng.integers(len(ys))
            r0 = int(np.clip(ys[j] - rng.integers(size), 0, h - size))
            c0 = int(np.clip(xs[j] - rng.integers(size), 0, w - size))
        else:
            r0, c0 = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        raws[k, 0] = img[r0:r0 + size, c0:c0 + size]
        masks[k] = mask[r0:r0 + size, c0:c0 + size]
    return torch.from_numpy(raws), torch.from_numpy(masks)


def augment_chips(x: torch.Tensor, gen: torch.Generator, jitter: float = 0.0) -> torch.Tensor:
    """Label-preserving augmentation of classification chips, drawn per chip: one of the eight
    flips/90-degree rotations (HiRISE landmark crops have no preferred orientation) and a small
    brightness/contrast jitter."""
    n = len(x)
    k = torch.randint(4, (n,), generator=gen)
    flip = torch.randint(2, (n,), generator=gen).bool()
    out = x.clone()
    for rot in range(4):
        for f in (False, True):
            sel = (k == rot) & (flip == f)
            if sel.any():
                chips = torch.rot90(x[sel], rot, dims=(-2, -1))
                out[sel] = chips.flip(-1) if f else chips
    if jitter > 0:
        gain = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * jitter
        shift = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * jitter
        out = out * gain + shift
    return out


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


class EpochChips(torch.utils.data.IterableDataset):
    """Fresh crater chips each epoch (seeded), landmarks shuffled; yields normalised batches."""

    def __init__(self, task: str, data: TaskData, recipe: Recipe) -> None:
        super().__init__()
        self.task, self.data, self.recipe = task, data, recipe
        self.epoch = 0
        if TASK_KIND[task] == "classification":
            self.x = normalise(resize_crops(data.images, recipe.input_size), recipe)
            self.y = torch.tensor(data.targets, dtype=torch.int64)

    def batches_per_epoch(self) -> int:
        n = len(self.data.images) if TASK_KIND[self.task] == "classification" else self.recipe.chips
        return max(1, n // self.recipe.batch_size)

    def __iter__(self) -> Any:
        rng = np.random.default_rng([self.recipe.seed, self.epoch])
        self.epoch += 1
        bs = self.recipe.batch_size
        if TASK_KIND[self.task] == "classification":
            if self.recipe.sampling == "sqrt_balanced":
                counts = np.bincount(self.y.numpy())
                p = 1 / np.sqrt(counts[self.y.numpy()])
                order = torch.from_numpy(rng.choice(len(self.y), size=len(self.y), p=p / p.sum()))
            elif self.recipe.sampling == "shuffle":
                order = torch.from_numpy(rng.permutation(len(self.y)))
            else:
                raise MomoGeoError(f"unknown sampling {self.recipe.sampling!r}")
            for b in range(self.batches_per_epoch()):
                idx = order[b * bs:(b + 1) * bs]
                yield self.x[idx], self.y[idx]
        else:
            raw, mask = crater_chips(self.data, self.batches_per_epoch() * bs,
                                     self.recipe.input_size, rng)
            x = normalise(raw, self.recipe)
            for b in range(self.batches_per_epoch()):
                yield x[b * bs:(b + 1) * bs], mask[b * bs:(b + 1) * bs]


def merge_tasks(parts: list[TaskData], task: str, balance: bool = True) -> TaskData:
    """Several crater datasets as one training set (the multi-resolution crater model).

    ``balance``: chips are drawn equally from each part (by area within a part), so 8 CTX
    tiles, 600 THEMIS crops and a few synthetic fields each get a third of the training chips.
    """
    out = TaskData(task, [], [], [], parts[0].classes, [])
    for part in parts:
        out.images += part.images
        out.targets += part.targets
        out.groups += part.groups
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
