"""A small CNN tile classifier: the non-MOMO baseline for HiRISE landmarks.

Why it exists: the project reports the MOMO encoder against models of equal training budget that
do not use it, so that "pretraining helped" is a measurement, not an assumption. Four stages of two
3x3 convolutions, each stage halving the grid and doubling the channels, global average pooling,
dropout and one linear layer. Card: ``{"kind": "cnn_cls", "encoder": "cnn", "width": 16}``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from momo_geo.models import register
from momo_geo.models.unet import conv_bn_relu


class CNNClassifier(nn.Module):
    def __init__(self, in_chans: int, num_classes: int, width: int = 16, stages: int = 4,
                 dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_chans
        for i in range(stages):
            c = width * 2**i
            layers += [conv_bn_relu(previous, c, stride=2), conv_bn_relu(c, c)]
            previous = c
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(previous, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register("cnn_cls")
def build_cnn_classifier(card: Any) -> nn.Module:
    arch = card.architecture
    return CNNClassifier(card.in_chans, max(card.num_classes, 1), int(arch.get("width", 16)),
                         int(arch.get("stages", 4)), float(arch.get("dropout", 0.3)))
