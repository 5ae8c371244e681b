"""Unlabelled chips for MAE pretraining: random, nodata-free crops of the *train* splits only.

Pretraining must never see the validation images of the downstream tasks, or the fine-tuning
scores would be inflated. So chips come from ``momo_geo.datasets.unlabelled_chips`` with
``split="train"`` (HiRISE landmark crops of the training products, CTX training tiles, THEMIS
training crops), filtered here for nodata and flat chips. They are raw grey values; every chip
goes through :func:`momo_geo.preprocess.to_model_input` in
:mod:`momo_geo.training.pretrain_data`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from momo_geo.errors import MomoGeoError

MIN_VALID = 0.99
"""A chip is kept only if at least this share of its pixels is valid (not 0, the nodata value)."""
MIN_STD = 2.0
"""...and if it is not flat (grey-level standard deviation on the 0-255 scale)."""


def default_data_root() -> Path:
    """``$MOMO_GEO_SHARED_DATA``, else ``../shared/data`` beside a source checkout, else
    ``./shared/data`` (an installed wheel has no checkout: pass ``data_root`` or set the variable).
    """
    env = os.environ.get("MOMO_GEO_SHARED_DATA")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        return checkout.parent / "shared" / "data"
    return Path("shared") / "data"


def usable(chip: torch.Tensor) -> bool:
    """Nodata filter: almost no 0 (nodata) pixels, and not flat."""
    return bool((chip > 0).float().mean() >= MIN_VALID and chip.std() >= MIN_STD)


def load_chips(sensor: str, root: str | os.PathLike[str], split: str, size: int, count: int,
               seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random ``size`` px chips of ``sensor``'s ``split``: raw ``(N, 1, H, W)`` + valid.

    Deterministic for a given seed: chips are drawn in order and the first ``count`` that pass
    the filter are kept.
    """
    from momo_geo.datasets import unlabelled_chips

    root = Path(root)
    if not root.is_dir():
        raise MomoGeoError(f"{root}: no data folder (set --data-root or MOMO_GEO_SHARED_DATA)")
    source = unlabelled_chips(sensor, root, split, size, 4 * count + 16, seed)
    kept: list[torch.Tensor] = []
    for i in range(len(source)):
        image = source[i]["image"].float()
        image = image.mean(dim=0, keepdim=True) if image.shape[0] > 1 else image
        if usable(image):
            kept.append(image)
            if len(kept) == count:
                break
    if len(kept) < count:
        raise MomoGeoError(f"{sensor}: only {len(kept)} of {count} {size}px chips are free of "
                           "nodata")
    chips = torch.stack(kept)
    return chips, chips > 0


def load_scene_chips(sensor: str, scenes: list[str], size: int, count: int, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``count`` random chips of georeferenced ``sensor`` scenes (TorchGeo), nodata filtered.

    ``scenes`` are files or folders; the sensor's :class:`momo_geo.datasets.MarsRasterDataset`
    picks its own products among them (by product ID or metadata). ``None`` if there are none.
    Chips are at the scenes' native resolution; a chip must be at least 99 % valid.
    """
    from torchgeo.samplers import RandomGeoSampler

    from momo_geo.datasets import RASTER_DATASETS, ValidGeoSampler

    try:
        dataset = RASTER_DATASETS[sensor](scenes)
    except MomoGeoError as exc:
        if "no georeferenced" in str(exc):
            return None
        raise
    generator = torch.Generator().manual_seed(seed)
    sampler = ValidGeoSampler(RandomGeoSampler(dataset, size, length=count, generator=generator),
                              dataset, min_valid=MIN_VALID)
    chips, valid = [], []
    for query in sampler:
        sample = dataset[query]
        image = sample["image"].float()[:1, :size, :size]
        if image.shape[-2:] != (size, size) or float(image.std()) == 0.0:  # flat
            continue
        chips.append(image)
        valid.append(sample["valid"][None, :size, :size].bool())
    if not chips:
        return None
    return torch.stack(chips), torch.stack(valid)
