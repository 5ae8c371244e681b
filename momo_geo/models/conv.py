"""A small fully-convolutional segmenter.

Not MOMO: it exists because a stack of same-padded convolutions is translation-equivariant away
from the borders, which makes it the exact reference for seam tests of the tiling engine, and
because it trains in seconds for smoke tests. Card: ``architecture = {"kind": "conv",
"encoder": "conv", "width": 8, "depth": 2, "kernel": 3}``.
"""

from __future__ import annotations

import torch
from torch import nn

from momo_geo.models import register


class ConvSegmenter(nn.Module):
    def __init__(self, in_chans: int, num_classes: int, width: int = 8, depth: int = 2,
                 kernel: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, kernel, padding=kernel // 2), nn.ReLU()]
            channels = width
        layers.append(nn.Conv2d(channels, num_classes, 1))
        self.net = nn.Sequential(*layers)
        self.receptive_radius = depth * (kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register("conv")
def build_conv(card) -> nn.Module:  # noqa: ANN001 - ModelCard, imported lazily
    arch = card.architecture
    return ConvSegmenter(card.in_chans, max(card.num_classes, 1), arch.get("width", 8),
                         arch.get("depth", 2), arch.get("kernel", 3))
