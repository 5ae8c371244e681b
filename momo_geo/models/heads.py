"""Task heads on a ViT encoder: tile classification and crater (pixel) segmentation.

Two architecture kinds are registered with :func:`momo_geo.models.create_model`:

- ``"vit_cls"``: patch tokens mean-pooled, LayerNorm, one linear layer -> ``(B, K)`` logits.
  Mean-pooling (not the class token) because MAE pretraining never trains the class token.
- ``"vit_seg"``: a light UNetFormer-style decoder. Features of 3-4 encoder blocks are projected
  by 1x1 convolutions, fused at token resolution, upsampled, and joined with a shallow
  convolutional stem that sees the raw image at full resolution. The stem matters on Mars: many
  craters are only a few pixels wide, smaller than one ViT patch, and the token grid alone cannot
  draw their rims. Output: ``(B, K, H, W)`` logits at input size.

The card's ``architecture`` describes the whole net, so a bundle rebuilds without code::

    {"kind": "vit_seg", "encoder": "vit_tiny_patch16_224", "feature_blocks": [2, 5, 8, 11],
     "decoder_dim": 64, "stem_dim": 16}

(the input size is the card's ``input_size``). The encoder is
:func:`momo_geo.models.vit.create_encoder`'s timm ``VisionTransformer`` (keys ``encoder.*``,
average pooling through ``fc_norm``, frozen sin-cos positions), so every pretraining bundle
(which holds exactly those keys) drops in with :func:`load_encoder_weights`.
Also here, because fine-tuning needs them with the heads: layer-wise learning-rate decay
(:func:`param_groups_lrd`), the Dice+CE loss (:class:`DiceCELoss`) and frozen-encoder mode
(:func:`freeze_encoder`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from momo_geo.models import register


def build_encoder(arch: dict[str, Any], in_chans: int, img_size: int) -> nn.Module:
    """The MOMO encoder (:func:`momo_geo.models.vit.create_encoder`), randomly initialised."""
    from momo_geo.models.vit import create_encoder

    return create_encoder(arch["encoder"], img_size=int(arch.get("img_size", img_size)),
                          in_chans=in_chans, global_pool="avg")


def default_feature_blocks(depth: int) -> list[int]:
    """Four evenly spaced blocks ending with the last (2, 5, 8, 11 for a 12-block ViT)."""
    step = max(depth // 4, 1)
    blocks = sorted({min(depth - 1, step * (i + 1) - 1) for i in range(4)})
    return blocks


class ViTClassifier(nn.Module):
    """Mean-pooled patch tokens [+ pooled conv-stem features] -> LayerNorm -> Linear.

    ``stem_dim`` > 0 adds a small strided CNN on the raw chip whose pooled features join the
    ViT's. Why: a CPU-sized ViT fine-tuned for a few hundred steps on 2.5k HiRISE crops learns
    little texture, while a CNN's locality prior picks up dune ripples and crater rims from
    few examples. The card's ``architecture`` records it (``"stem_dim"``).
    """

    def __init__(self, encoder: nn.Module, num_classes: int, dropout: float = 0.0,
                 in_chans: int = 1, stem_dim: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        dim = encoder.embed_dim
        self.stem = None
        if stem_dim > 0:
            s = stem_dim
            self.stem = nn.Sequential(
                _conv_bn_relu(in_chans, s, stride=2), _conv_bn_relu(s, 2 * s, stride=2),
                _conv_bn_relu(2 * s, 4 * s, stride=2), _conv_bn_relu(4 * s, 4 * s, stride=2),
                nn.AdaptiveAvgPool2d(1), nn.Flatten())
            dim += 4 * s
        self.head_norm = nn.LayerNorm(dim)
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, D)`` (what a linear probe sees)."""
        # timm's own pooling: mean of patch tokens through the encoder's fc_norm (MAE's recipe).
        pooled = self.encoder.forward_head(self.encoder.forward_features(x), pre_logits=True)
        if self.stem is not None:
            pooled = torch.cat([pooled, self.stem(x)], dim=1)
        return pooled

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.head_norm(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2,
                                   bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SegDecoder(nn.Module):
    """Fuses multi-block ViT features with a full-resolution stem into per-pixel logits.

    Token-resolution features are fused, upsampled 4x and refined (cheap: few pixels, many
    channels), squeezed to ``stem_dim`` channels, upsampled to full size and joined with the stem
    (expensive pixels, few channels). The full-resolution part is kept narrow on purpose: it is
    what dominates the cost on a CPU.
    """

    def __init__(self, embed_dim: int, n_levels: int, num_classes: int, in_chans: int,
                 decoder_dim: int = 64, stem_dim: int = 16) -> None:
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(embed_dim, decoder_dim, 1)
                                     for _ in range(n_levels))
        self.fuse = _conv_bn_relu(decoder_dim * n_levels, decoder_dim, kernel=1)
        self.refine = _conv_bn_relu(decoder_dim, decoder_dim)
        self.squeeze = _conv_bn_relu(decoder_dim, stem_dim, kernel=1)
        self.stem = nn.Sequential(_conv_bn_relu(in_chans, stem_dim),
                                  _conv_bn_relu(stem_dim, stem_dim))
        self.out = nn.Sequential(_conv_bn_relu(2 * stem_dim, stem_dim),
                                 nn.Conv2d(stem_dim, num_classes, 1))

    def forward(self, feats: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        size = image.shape[-2:]
        levels = [proj(f) for proj, f in zip(self.project, feats, strict=True)]
        x = self.fuse(torch.cat(levels, dim=1))
        x = F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=False)
        x = self.squeeze(self.refine(x))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.out(torch.cat([x, self.stem(image)], dim=1))


class ViTSegmenter(nn.Module):
    """ViT encoder + :class:`SegDecoder`; logits at the input's size."""

    def __init__(self, encoder: nn.Module, num_classes: int, in_chans: int,
                 feature_blocks: list[int] | None = None, decoder_dim: int = 64,
                 stem_dim: int = 16) -> None:
        super().__init__()
        self.encoder = encoder
        depth = len(encoder.blocks)
        self.feature_blocks = list(feature_blocks or default_feature_blocks(depth))
        self.decoder = SegDecoder(encoder.embed_dim, len(self.feature_blocks), num_classes,
                                  in_chans, decoder_dim, stem_dim)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features of the chosen blocks, each ``(B, D, H/p, W/p)``."""
        return self.encoder.forward_intermediates(
            x, indices=self.feature_blocks, output_fmt="NCHW", intermediates_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.features(x), x)


@register("vit_cls")
def build_vit_classifier(card) -> nn.Module:  # noqa: ANN001 - ModelCard, imported lazily
    arch = card.architecture
    encoder = build_encoder(arch, card.in_chans, card.input_size)
    return ViTClassifier(encoder, max(card.num_classes, 1), float(arch.get("dropout", 0.0)),
                         card.in_chans, int(arch.get("stem_dim", 0)))


@register("vit_seg")
def build_vit_segmenter(card) -> nn.Module:  # noqa: ANN001 - ModelCard, imported lazily
    arch = card.architecture
    encoder = build_encoder(arch, card.in_chans, card.input_size)
    return ViTSegmenter(encoder, max(card.num_classes, 1), card.in_chans,
                        arch.get("feature_blocks"), int(arch.get("decoder_dim", 64)),
                        int(arch.get("stem_dim", 16)))


def load_encoder_weights(model: nn.Module, encoder_state: dict[str, torch.Tensor]) -> None:
    """Put a pretraining bundle's encoder weights (timm ViT keys) into a head model.

    Keys may come bare (``blocks.0...``) or prefixed (``encoder.blocks.0...``); MAE-only keys
    (decoder, mask token) are ignored. Every encoder parameter must be covered, so a mismatched
    bundle fails loudly instead of fine-tuning from random weights.
    """
    from momo_geo.errors import MomoGeoError
    from momo_geo.models.vit import adapt_state_dict

    target = model.encoder.state_dict()
    bare = {k.removeprefix("encoder."): v.float() for k, v in encoder_state.items()}
    clean = {}
    for key, value in adapt_state_dict(bare, model.encoder).items():
        if key in target:
            if target[key].shape != value.shape:
                raise MomoGeoError(f"encoder weight {key}: shape {tuple(value.shape)} does not "
                                   f"fit {tuple(target[key].shape)}")
            clean[key] = value.float()
    missing = sorted(set(target) - set(clean))
    if missing:
        raise MomoGeoError(f"encoder weights miss {len(missing)} keys, e.g. {missing[:3]}")
    model.encoder.load_state_dict(clean)


def freeze_encoder(model: nn.Module, frozen: bool = True) -> None:
    """Frozen-encoder (linear-probe) mode: no gradients into the encoder."""
    for p in model.encoder.parameters():
        p.requires_grad_(not frozen)


def param_groups_lrd(model: nn.Module, lr: float, weight_decay: float = 0.05,
                     layer_decay: float = 0.75) -> list[dict[str, Any]]:
    """Parameter groups with layer-wise learning-rate decay (BEiT/MAE fine-tuning recipe).

    Encoder layer ``i`` (embeddings 0, blocks 1..depth, final norm depth+1) gets
    ``lr * layer_decay ** (depth + 1 - i)``; the head gets ``lr``. Biases and norms get no
    weight decay. Frozen parameters are left out.
    """
    depth = len(model.encoder.blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("encoder."):
            sub = name[len("encoder."):]
            if sub.startswith("blocks."):
                layer = int(sub.split(".")[1]) + 1
            elif sub.startswith(("cls_token", "pos_embed", "patch_embed", "reg_token")):
                layer = 0
            else:
                layer = depth + 1
        else:
            layer = depth + 1
        no_decay = param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name \
            or "cls_token" in name
        key = (layer, no_decay)
        if key not in groups:
            scale = layer_decay ** (depth + 1 - layer) if name.startswith("encoder.") else 1.0
            groups[key] = {"params": [], "lr": lr * scale, "lr_scale": scale,
                           "weight_decay": 0.0 if no_decay else weight_decay}
        groups[key]["params"].append(param)
    return list(groups.values())


class DiceCELoss(nn.Module):
    """Cross-entropy plus soft Dice over the non-background classes.

    Craters cover a few percent of a CTX tile; CE alone settles for "all background", Dice
    rewards overlap directly. ``ignore_index`` pixels (nodata) count for neither term.
    """

    def __init__(self, dice_weight: float = 1.0, class_weight: torch.Tensor | None = None,
                 ignore_index: int = 255) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.ignore_index = ignore_index
        self.register_buffer("class_weight", class_weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, weight=self.class_weight,
                             ignore_index=self.ignore_index)
        if self.dice_weight == 0:
            return ce
        valid = (target != self.ignore_index).unsqueeze(1)
        probs = logits.softmax(dim=1)[:, 1:]
        onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1])
        onehot = onehot.permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
        probs = probs * valid
        onehot = onehot * valid
        inter = (probs * onehot).sum(dim=(0, 2, 3))
        denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
        dice = 1.0 - (2.0 * inter + 1.0) / (denom + 1.0)
        return ce + self.dice_weight * dice.mean()


def make_loss(name: str, class_weight: torch.Tensor | None = None) -> nn.Module:
    """``"ce"`` or ``"dice_ce"``."""
    if name == "ce":
        return nn.CrossEntropyLoss(weight=class_weight, ignore_index=255)
    if name == "dice_ce":
        return DiceCELoss(class_weight=class_weight)
    raise ValueError(f"unknown loss {name!r} (ce, dice_ce)")
