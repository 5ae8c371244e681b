"""A landmark classifier on a U-Net's down path, so that a crater U-Net can start it.

Why it exists: the crater U-Net is the project's best-trained Mars network (tens of thousands
of CTX and THEMIS chips), and a linear probe of its frozen down path tells HiRISE landmark
crops apart better than the same network with random weights (grouped out-of-fold weighted F1
0.79 against 0.73; crater 0.61 against 0.44). This classifier keeps that down path under the
U-Net's own ``down.*`` keys, pools every level (mean and maximum: a crater rim or a dune crest
is a small bright part of a crop), and puts dropout and one linear layer on top.

Card: ``{"kind": "unet_cls", "encoder": "unet", "width": 12, "levels": 5}``; the width and
levels must equal the crater U-Net's for its weights to fit (:func:`load_unet_encoder`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from momo_geo.errors import MomoGeoError
from momo_geo.models import register
from momo_geo.models.unet import level_channels, unet_encoder


class UNetClassifier(nn.Module):
    def __init__(self, in_chans: int, num_classes: int, width: int = 12, levels: int = 5,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.down = unet_encoder(in_chans, width, levels)
        pooled = 2 * sum(level_channels(width, levels))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(pooled, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for block in self.down:
            x = block(x)
            pooled += [x.mean(dim=(2, 3)), x.amax(dim=(2, 3))]
        return self.head(torch.cat(pooled, dim=1))


def load_unet_encoder(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Put a U-Net bundle's down path (``down.*``) into ``model``; every key must fit, so a
    U-Net of another width or depth fails loudly instead of training from random weights."""
    target = model.down.state_dict()
    weights = {k.removeprefix("down."): v.float() for k, v in state.items()
               if k.startswith("down.")}
    wrong = sorted(k for k in target if k not in weights or weights[k].shape != target[k].shape)
    if wrong or len(weights) != len(target):
        raise MomoGeoError(f"{source}: its U-Net down path does not fit this classifier "
                           f"(e.g. {(wrong or sorted(set(weights) - set(target)))[:2]}); "
                           "width, levels and bands must be the same")
    model.down.load_state_dict(weights)


@register("unet_cls")
def build_unet_classifier(card: Any) -> nn.Module:
    arch = card.architecture
    return UNetClassifier(card.in_chans, max(card.num_classes, 1), int(arch.get("width", 12)),
                          int(arch.get("levels", 5)), float(arch.get("dropout", 0.3)))
