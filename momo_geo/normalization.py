"""The input statistics of a model: one record in its card, read the same way by every path.

A card's ``normalization`` is ``{"mean": m, "std": s}`` with numbers (one grey statistic for
every channel, momo-geo's own models) or with one number per input channel (the MOMO authors'
released checkpoints, pretrained with ImageNet's per-channel statistics after a per-tile min-max
stretch). :func:`momo_geo.preprocess.to_model_input` applies either; pretraining, fine-tuning,
evaluation and mapping all take the pair from the card, never from a sensor table of their own.

A 3-channel encoder with per-channel statistics can become a 1-channel (grey) encoder *exactly*:
:func:`fold_patch_embed` moves the statistics into the patch kernel and its bias.
"""

from __future__ import annotations

from typing import Any

import torch

IMAGENET_NORMALIZATION: dict[str, list[float]] = {"mean": [0.485, 0.456, 0.406],
                                                  "std": [0.229, 0.224, 0.225]}
"""ImageNet's per-channel RGB statistics, with which MOMO pretrained its released checkpoints."""

PATCH_WEIGHT, PATCH_BIAS = "patch_embed.proj.weight", "patch_embed.proj.bias"


def is_per_channel(normalization: dict[str, Any]) -> bool:
    """Whether a card's statistics are one number per channel (lists) rather than one number."""
    return isinstance(normalization["mean"], (list, tuple))


def channel_stats(normalization: dict[str, Any], channels: int
                  ) -> tuple[list[float], list[float]]:
    """``(means, stds)`` with one entry per input channel (a single number repeated)."""
    mean, std = normalization["mean"], normalization["std"]
    if not is_per_channel(normalization):
        return [float(mean)] * channels, [float(std)] * channels
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"normalization has {len(mean)} means and {len(std)} stds for "
                         f"{channels} channels")
    return [float(m) for m in mean], [float(s) for s in std]


def grey_normalization(normalization: dict[str, Any]) -> dict[str, float]:
    """The one-number statistics a folded grey model records: the per-channel means and stds
    averaged (any pair is exact on valid pixels, see :func:`fold_patch_embed`; the average keeps
    inputs at their usual scale and a nodata pixel, set to 0, near the channels' mean grey)."""
    if not is_per_channel(normalization):
        return {"mean": float(normalization["mean"]), "std": float(normalization["std"])}
    means, stds = normalization["mean"], normalization["std"]
    return {"mean": round(sum(means) / len(means), 6), "std": round(sum(stds) / len(stds), 6)}


def fold_patch_embed(state: dict[str, torch.Tensor], source: dict[str, Any],
                     target: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A C-channel patch embedding under per-channel ``source`` statistics -> a 1-channel one
    under one-number ``target`` statistics that gives the same tokens for a grey image.

    The C-channel model sees, for a stretched grey value ``v``, ``x_c = (v - m_c) / s_c`` in
    every channel ``c``; the 1-channel model sees ``x = (v - m) / s``, so ``v = s x + m``. A
    patch token is linear in its pixels::

        y = sum_c sum_p W[c, p] (v_p - m_c) / s_c + b
          = sum_p (sum_c W[c, p] s / s_c) x_p + b + sum_c (m - m_c) / s_c * sum_p W[c, p]

    hence ``W' = sum_c W[c] * s / s_c`` and ``b' = b + sum_c (m - m_c) / s_c * sum_p W[c, p]``:
    equal tokens for every valid pixel, up to float rounding. (A plain kernel sum is this with
    equal statistics everywhere; under ImageNet's statistics it is off by ~10 % per channel
    plus a shift.) Nodata pixels differ: both models set them to 0, which is ``v = m`` for the
    grey model and ``v = m_c`` per channel for the C-channel one.
    """
    weight = state[PATCH_WEIGHT].double()
    channels = weight.shape[1]
    means, stds = channel_stats(source, channels)
    grey = grey_normalization(target)
    m, s = grey["mean"], grey["std"]
    scale = torch.tensor([s / sc for sc in stds], dtype=torch.float64).view(1, -1, 1, 1)
    shift = torch.tensor([(m - mc) / sc for mc, sc in zip(means, stds, strict=True)],
                         dtype=torch.float64)
    out = dict(state)
    out[PATCH_WEIGHT] = (weight * scale).sum(dim=1, keepdim=True).to(state[PATCH_WEIGHT].dtype)
    bias = state.get(PATCH_BIAS)
    base = torch.zeros(weight.shape[0], dtype=torch.float64) if bias is None else bias.double()
    folded = base + (weight.sum(dim=(2, 3)) * shift).sum(dim=1)
    if bias is not None:
        out[PATCH_BIAS] = folded.to(bias.dtype)
    elif bool((folded != 0).any()):
        raise ValueError("folding the statistics needs a patch-embedding bias")
    return out

