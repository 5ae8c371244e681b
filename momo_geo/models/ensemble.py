"""Several networks of one card, shipped as the mean of their class probabilities.

Why it exists: landmark crops of one HiRISE observation look alike, so a classifier's skill
on observations it never saw varies more with the observations it happened to train on than
with anything a recipe sets. Networks each trained without a different share of the training
observations (:mod:`momo_geo.training.members`) disagree where that luck matters, and their mean
probability averages it out; whether that beats one network trained on all the observations is
measured, arm against arm (docs/results.md). A card asks for it with
``architecture["members"] = K``; the weights are those of the K networks under ``members.<i>.``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MeanProbability(nn.Module):
    """Networks averaged in probability; returns the log of the mean, so that the softmax the
    engine applies to logits gives the mean probability back (any class dimension 1)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).float().softmax(dim=1) for m in self.members]).mean(dim=0)
        return probs.clamp_min(1e-12).log()
