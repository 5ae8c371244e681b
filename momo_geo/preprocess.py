"""Pixel values into model inputs, the one way MOMO expects them.

MOMO was pretrained on tiles each stretched to [0, 1] by its own minimum and maximum, then
standardised with sensor statistics (:mod:`momo_geo.sensors`). A blind ``/255`` would be wrong for
uint16 HiRISE RDRs, float THEMIS radiances and dark or low-contrast tiles alike, so every path in
momo-geo (pretraining, fine-tuning, evaluation, mapping) calls :func:`to_model_input`.
Nodata pixels are filled with the normalised mean (0 after standardising) so they carry no signal.
"""

from __future__ import annotations

import torch


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


def to_model_input(tiles: torch.Tensor, mean: float, std: float, in_chans: int = 3,
                   valid: torch.Tensor | None = None) -> torch.Tensor:
    """Grey tiles ``(B, 1, H, W)`` of raw values -> normalised ``(B, in_chans, H, W)`` float.

    Steps: per-tile min-max stretch over valid pixels, ``(x - mean) / std``, nodata set to 0 (the
    normalised mean), the grey band replicated to ``in_chans`` channels.
    """
    if tiles.ndim != 4 or tiles.shape[1] != 1:
        raise ValueError(f"expected grey tiles (B, 1, H, W), got {tuple(tiles.shape)}")
    x = (tile_minmax(tiles, valid) - mean) / std
    if valid is not None:
        x = torch.where(valid, x, torch.zeros_like(x))
    return x.expand(-1, in_chans, -1, -1).contiguous() if in_chans != 1 else x


def to_grey(pixels: torch.Tensor, bands: str = "mean") -> torch.Tensor:
    """``(B, C, H, W)`` scene bands -> one grey band, as the model card's ``bands`` says."""
    if pixels.shape[1] == 1:
        return pixels.float()
    if bands == "first":
        return pixels[:, :1].float()
    return pixels.float().mean(dim=1, keepdim=True)
