"""U-Net crater segmenters: a plain CNN, and the same decoder fed by a MOMO ViT encoder.

Craters in CTX and THEMIS scenes are mostly 5-20 pixels across, smaller than a 16 px ViT patch,
and their rims are one or two pixels wide. A U-Net keeps full-resolution skip connections, so
the decoder can draw those rims; the ViT adds context (a crater's ejecta, the terrain around it)
at its token resolution. Two registered kinds share one decoder, so comparing them measures what
the MOMO encoder adds and nothing else:

- ``"unet"``: a CNN U-Net (``width`` channels at full resolution, doubled at each of ``levels``
  levels). Card: ``{"kind": "unet", "encoder": "unet", "width": 16, "levels": 4}``.
- ``"vit_unet"``: the same U-Net whose deepest level also receives features of ``feature_blocks``
  of a ViT encoder (resized to that level's grid). Card: ``{"kind": "vit_unet", "encoder":
  "vit_tiny_patch8_128", "width": 16, "levels": 4, "feature_blocks": [2, 5, 8, 11]}``; the encoder
  holds exactly the keys a MOMO pretraining bundle has, so :func:`load_encoder_weights` fills it.

Both are fully convolutional apart from the ViT, and predict logits at the input's size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from momo_geo.models import register


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU: the U-Net's one building block."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def level_channels(width: int, levels: int) -> list[int]:
    """Channels of each U-Net level: ``width`` at full resolution, doubled per level."""
    return [width * 2**i for i in range(levels)]


def unet_encoder(in_chans: int, width: int, levels: int) -> nn.ModuleList:
    """The U-Net's down path: level ``i`` (stride ``2**i``) is two :func:`conv_bn_relu`.

    Its own function because a crater U-Net's down path also starts the landmark classifier
    (:mod:`momo_geo.models.unet_cls`), which loads these weights under the same ``down.*`` keys.
    """
    down = nn.ModuleList()
    previous = in_chans
    for i, c in enumerate(level_channels(width, levels)):
        down.append(nn.Sequential(conv_bn_relu(previous, c, 1 if i == 0 else 2),
                                  conv_bn_relu(c, c)))
        previous = c
    return down


class UNet(nn.Module):
    """A compact U-Net; ``context_dim`` > 0 adds an input of extra features at the deepest level.

    Level ``i`` works at stride ``2**i`` with ``width * 2**i`` channels; the decoder upsamples
    bilinearly and joins each skip by concatenation (no transposed convolutions, so no
    checkerboard artefacts on flat plains).
    """

    def __init__(self, in_chans: int, num_classes: int, width: int = 16, levels: int = 4,
                 context_dim: int = 0) -> None:
        super().__init__()
        channels = level_channels(width, levels)
        self.down = unet_encoder(in_chans, width, levels)
        self.context = None
        if context_dim > 0:
            self.context = conv_bn_relu(channels[-1] + context_dim, channels[-1])
        self.up = nn.ModuleList(
            nn.Sequential(conv_bn_relu(channels[i] + channels[i - 1], channels[i - 1]),
                          conv_bn_relu(channels[i - 1], channels[i - 1]))
            for i in range(levels - 1, 0, -1))
        self.out = nn.Conv2d(channels[0], num_classes, 1)
        self.stride = 2 ** (levels - 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        size = x.shape[-2:]
        pad_h, pad_w = (-size[0]) % self.stride, (-size[1]) % self.stride
        if pad_h or pad_w:  # any input size: reflect-pad to the deepest stride, crop at the end
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        if self.context is not None and context is not None:
            context = F.interpolate(context, size=x.shape[-2:], mode="bilinear",
                                    align_corners=False)
            x = self.context(torch.cat([x, context], dim=1))
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.out(x)[..., :size[0], :size[1]]


class ViTUNet(nn.Module):
    """A MOMO ViT encoder whose multi-block features feed the deepest level of a :class:`UNet`."""

    def __init__(self, encoder: nn.Module, num_classes: int, in_chans: int, width: int = 16,
                 levels: int = 4, feature_blocks: list[int] | None = None,
                 project_dim: int = 64) -> None:
        super().__init__()
        from momo_geo.models.heads import default_feature_blocks

        self.encoder = encoder
        self.feature_blocks = list(feature_blocks or default_feature_blocks(len(encoder.blocks)))
        self.project = nn.Conv2d(encoder.embed_dim * len(self.feature_blocks), project_dim, 1)
        self.unet = UNet(in_chans, num_classes, width, levels, context_dim=project_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder.forward_intermediates(
            x, indices=self.feature_blocks, output_fmt="NCHW", intermediates_only=True)
        return self.unet(x, self.project(torch.cat(feats, dim=1)))


@register("unet")
def build_unet(card: Any) -> nn.Module:
    arch = card.architecture
    return UNet(card.in_chans, max(card.num_classes, 1), int(arch.get("width", 16)),
                int(arch.get("levels", 4)))


@register("vit_unet")
def build_vit_unet(card: Any) -> nn.Module:
    from momo_geo.models.heads import build_encoder

    arch = card.architecture
    encoder = build_encoder(arch, card.in_chans, card.input_size)
    return ViTUNet(encoder, max(card.num_classes, 1), card.in_chans, int(arch.get("width", 16)),
                   int(arch.get("levels", 4)), arch.get("feature_blocks"),
                   int(arch.get("project_dim", 64)))
