"""Test-time augmentation: a model's probabilities averaged over the eight flips and quarter
turns of its input (the dihedral group D4).

Why: orbital images have no preferred orientation (the sun's azimuth varies, and training
draws all eight turns per chip), so a network's answer on a turned tile is as valid as its
answer on the tile, and their mean is steadier than any one of them. It costs eight forward
passes per tile, so a model card asks for it (``ModelCard.tta``) only where its calibration
measured a gain on held-out images (:func:`momo_geo.training.calibrate.calibrate_bundle`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from momo_geo.errors import MomoGeoError

TTA_MODES = ("none", "d4")
"""``none``: one pass; ``d4``: the mean over the eight dihedral turns."""

DIHEDRAL = tuple((quarter_turns, flip) for quarter_turns in range(4) for flip in (False, True))


def turn(x: torch.Tensor, quarter_turns: int, flip: bool) -> torch.Tensor:
    """Rotate the last two axes by ``quarter_turns`` x 90 degrees, then mirror left-right."""
    x = torch.rot90(x, quarter_turns, dims=(-2, -1))
    return x.flip(-1) if flip else x


def unturn(x: torch.Tensor, quarter_turns: int, flip: bool) -> torch.Tensor:
    """The inverse of :func:`turn`: a prediction on a turned tile back onto the tile."""
    x = x.flip(-1) if flip else x
    return torch.rot90(x, -quarter_turns, dims=(-2, -1))


def check_tta(mode: str) -> str:
    """``mode`` if it is one of :data:`TTA_MODES`, else a one-line error."""
    if mode not in TTA_MODES:
        raise MomoGeoError(f"tta must be one of {', '.join(TTA_MODES)}, not {mode!r}")
    return mode


def averaged(probabilities: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
             mode: str, spatial: bool) -> torch.Tensor:
    """``probabilities(x)`` (``(B, K, H, W)`` if ``spatial``, else ``(B, K)``), averaged over
    the turns ``mode`` names; maps are turned back before they are averaged."""
    if check_tta(mode) == "none":
        return probabilities(x)
    total = None
    for quarter_turns, flip in DIHEDRAL:
        p = probabilities(turn(x, quarter_turns, flip))
        p = unturn(p, quarter_turns, flip) if spatial else p
        total = p if total is None else total + p
    return total / len(DIHEDRAL)
