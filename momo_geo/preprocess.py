"""Pixel values into model inputs: the one input-scaling function of every path.

A blind ``/255`` would be wrong for uint16 HiRISE RDRs, float THEMIS radiances and dark or
low-contrast scenes alike, so every path in momo-geo (pretraining, fine-tuning, evaluation,
mapping) calls :func:`to_model_input`, and the model card's ``value_scaling`` says which stretch:

- ``"scene_percentile"`` (the default for new models): values are stretched by the 1st and 99th
  percentiles of the valid pixels of the *whole scene* (an overview when mapping; the whole image
  or crop when training), the same range for every tile. Why: a per-tile stretch turns a flat,
  featureless plain into full-contrast noise, and the jump of range from one tile to the next
  leaves tile-shaped artefacts in the map. A scene-wide range keeps a plain flat and a tile
  border invisible. Values outside the range are clipped to [-0.5, 1.5] (some headroom, so
  bright ice or shadow keeps a little texture).
- ``"tile_minmax"``: each tile stretched to [0, 1] by its own valid min and max, as MOMO's
  released checkpoints were pretrained (kept for imported weights and older bundles).

After stretching, values are standardised with the card's ``normalization`` mean and std (one
number, or one per input channel: :mod:`momo_geo.normalization`), and nodata pixels are set to 0
(the normalised mean) so they carry no signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

VALUE_SCALINGS = ("scene_percentile", "tile_minmax")
PERCENTILES = (1.0, 99.0)
"""Which percentiles of the scene's valid pixels map to 0 and 1 under ``scene_percentile``."""
CLIP = (-0.5, 1.5)
"""Stretched values are clipped to this range (outliers keep some headroom, not unbounded)."""


def scene_range(values: np.ndarray, valid: np.ndarray | None = None,
                percentiles: tuple[float, float] = PERCENTILES) -> tuple[float, float]:
    """The ``(low, high)`` stretch range of a scene (or image, or overview): percentiles of its
    valid, finite pixels. An empty or constant scene gets a range one unit wide."""
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    if valid is not None:
        keep &= np.broadcast_to(np.asarray(valid, dtype=bool), values.shape)
    picked = values[keep]
    if picked.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(picked, percentiles)
    if not high > low:
        return float(low), float(low) + 1.0
    return float(low), float(high)


def stretch_range(tiles: torch.Tensor, value_range: tuple[Any, Any]) -> torch.Tensor:
    """Stretch ``tiles`` so that ``value_range`` maps to [0, 1], clipped to :data:`CLIP`.

    ``value_range`` is one ``(low, high)`` pair for the batch, or a pair of ``(B,)`` tensors:
    one scene range per tile (training chips drawn from many images).
    """
    low, high = (torch.as_tensor(v, dtype=torch.float32) for v in value_range)
    if low.ndim:
        low, high = low.view(-1, 1, 1, 1), high.view(-1, 1, 1, 1)
    return ((tiles.float() - low) / (high - low).clamp_min(1e-6)).clamp_(*CLIP)


def tile_minmax(tiles: torch.Tensor, valid: torch.Tensor | None = None,
                eps: float = 1e-6) -> torch.Tensor:
    """Stretch each tile of ``(B, C, H, W)`` to [0, 1] by its valid pixels' min and max.

    A flat tile (max == min) becomes all 0.5 rather than dividing by zero.
    """
    tiles = tiles.float()
    flat = tiles.flatten(1)
    if valid is None:
        lo = flat.amin(dim=1)
        hi = flat.amax(dim=1)
    else:
        mask = valid.expand_as(tiles).flatten(1)
        big = torch.finfo(torch.float32).max
        lo = torch.where(mask, flat, torch.full_like(flat, big)).amin(dim=1)
        hi = torch.where(mask, flat, torch.full_like(flat, -big)).amax(dim=1)
        empty = ~mask.any(dim=1)
        lo = torch.where(empty, torch.zeros_like(lo), lo)
        hi = torch.where(empty, torch.zeros_like(hi), hi)
    span = (hi - lo).view(-1, 1, 1, 1)
    lo = lo.view(-1, 1, 1, 1)
    stretched = (tiles - lo) / span.clamp_min(eps)
    flat_tile = span <= eps
    return torch.where(flat_tile, torch.full_like(stretched, 0.5), stretched).clamp_(0.0, 1.0)


def to_model_input(tiles: torch.Tensor, mean: float | Sequence[float],
                   std: float | Sequence[float], in_chans: int = 3,
                   valid: torch.Tensor | None = None,
                   value_range: tuple[Any, Any] | None = None) -> torch.Tensor:
    """Grey tiles ``(B, 1, H, W)`` of raw values -> normalised ``(B, in_chans, H, W)`` float.

    Steps: stretch (by the scene's ``value_range`` when given, else each tile by its own valid
    min and max), the grey band replicated to ``in_chans`` channels, ``(x - mean) / std`` (with
    one ``mean``/``std`` per channel when they are sequences, as for ImageNet statistics), nodata
    set to 0 (the normalised mean).
    """
    if tiles.ndim != 4 or tiles.shape[1] != 1:
        raise ValueError(f"expected grey tiles (B, 1, H, W), got {tuple(tiles.shape)}")
    stretched = tile_minmax(tiles, valid) if value_range is None else \
        stretch_range(tiles, value_range)
    if isinstance(mean, (int, float)) and isinstance(std, (int, float)):
        x = (stretched - mean) / std
        if valid is not None:
            x = torch.where(valid, x, torch.zeros_like(x))
        return x.expand(-1, in_chans, -1, -1).contiguous() if in_chans != 1 else x
    from momo_geo.normalization import channel_stats

    means, stds = channel_stats({"mean": list(mean), "std": list(std)}, in_chans)  # type: ignore[arg-type]
    m = torch.tensor(means, dtype=torch.float32, device=stretched.device).view(1, -1, 1, 1)
    s = torch.tensor(stds, dtype=torch.float32, device=stretched.device).view(1, -1, 1, 1)
    x = (stretched.expand(-1, in_chans, -1, -1) - m) / s
    if valid is not None:
        x = torch.where(valid, x, torch.zeros_like(x))
    return x.contiguous()


def to_grey(pixels: torch.Tensor, bands: str = "mean") -> torch.Tensor:
    """``(B, C, H, W)`` scene bands -> one grey band, as the model card's ``bands`` says."""
    if pixels.shape[1] == 1:
        return pixels.float()
    if bands == "first":
        return pixels[:, :1].float()
    return pixels.float().mean(dim=1, keepdim=True)
