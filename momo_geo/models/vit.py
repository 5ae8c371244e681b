"""The MOMO encoder: a timm ``VisionTransformer`` with MAE's fixed sin-cos position embedding.

Why timm: the released MOMO checkpoints already use timm's key names (``cls_token``,
``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.*``, ``norm.*``), so an encoder built here loads
them with a key map of one line, and every downstream head can rely on timm's
``forward_intermediates`` for multi-level features.

Why a fixed position embedding: MAE (and MOMO) use a 2-D sin-cos table that is never trained.
Keeping it frozen means every per-sensor run has the *same* table, so its task vector is exactly
zero and merging cannot smear it; :mod:`momo_geo.merge` excludes it explicitly.

The encoder never downloads anything (``pretrained=False`` always): weights come from bundles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from momo_geo.errors import MomoGeoError
from momo_geo.models import register

PATCH_SIZE = 16
ENCODERS: dict[str, str] = {
    # short names a user types -> timm's registered names (the 224 only fixes timm's default size)
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
    "vit_large": "vit_large_patch16_224",
}
"""The four ViT sizes MOMO/Mars-Bench use. Names with or without ``_patch16[_224]`` are accepted."""


def timm_name(name: str) -> str:
    """``vit_tiny``, ``vit_tiny_patch16`` or ``vit_tiny_patch16_224`` -> timm's name."""
    short = name.lower().replace("-", "_")
    for suffix in ("_224", "_patch16"):
        if short.endswith(suffix):
            short = short[: -len(suffix)]
    if short not in ENCODERS:
        raise MomoGeoError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)} "
                           "(optionally with _patch16 or _patch16_224)")
    return ENCODERS[short]


def sincos_pos_embed(embed_dim: int, grid_size: tuple[int, int], cls_token: bool = True
                     ) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos table ``(1, [1+] H*W, D)``; the class token's row is zeros.

    Half the channels encode the row, half the column, each as sin/cos of geometric frequencies.
    """
    if embed_dim % 4:
        raise ValueError(f"sin-cos position embedding needs embed_dim % 4 == 0, got {embed_dim}")
    gh, gw = grid_size
    rows, cols = np.meshgrid(np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64),
                             indexing="ij")
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 4, dtype=np.float64) / (embed_dim / 4))

    def encode(pos: np.ndarray) -> np.ndarray:
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    # MAE's order: the first half of channels from the column (w), the second from the row (h).
    table = np.concatenate([encode(cols), encode(rows)], axis=1)
    if cls_token:
        table = np.concatenate([np.zeros((1, embed_dim)), table], axis=0)
    return torch.from_numpy(table).float().unsqueeze(0)


def create_encoder(name: str = "vit_tiny_patch16", img_size: int = 224, in_chans: int = 3,
                   global_pool: str = "avg", **kw: Any) -> VisionTransformer:
    """A timm ViT encoder (``num_classes=0``) with a frozen sin-cos position embedding.

    ``global_pool="avg"`` averages patch tokens through ``fc_norm`` (what MOMO fine-tunes with);
    ``"token"`` uses the class token through ``norm``. Extra keywords go to timm (e.g.
    ``drop_path_rate``, ``dynamic_img_size=True`` for inputs of any size at run time).
    """
    if img_size % PATCH_SIZE:
        raise MomoGeoError(f"input size {img_size} px is not a multiple of the patch size "
                           f"{PATCH_SIZE}")
    if global_pool not in ("avg", "token"):
        raise MomoGeoError(f"global_pool must be 'avg' or 'token', not {global_pool!r}")
    kw.pop("pretrained", None)  # never download
    encoder = timm.create_model(timm_name(name), pretrained=False, num_classes=0,
                                img_size=img_size, in_chans=in_chans, global_pool=global_pool,
                                **kw)
    grid = tuple(encoder.patch_embed.grid_size)
    with torch.no_grad():
        encoder.pos_embed.copy_(sincos_pos_embed(encoder.embed_dim, grid,
                                                 cls_token=encoder.num_prefix_tokens > 0))
    encoder.pos_embed.requires_grad_(False)
    return encoder


def default_feature_layers(depth: int, count: int = 4) -> tuple[int, ...]:
    """Evenly spaced block indices ending at the last block, e.g. depth 12 -> (2, 5, 8, 11)."""
    count = max(1, min(count, depth))
    return tuple(int(round(depth * (i + 1) / count)) - 1 for i in range(count))


def encoder_features(encoder: VisionTransformer, x: torch.Tensor,
                     layers: Sequence[int] | None = None, norm: bool = False
                     ) -> list[torch.Tensor]:
    """Multi-level feature maps ``[(B, C, H/16, W/16), ...]`` for dense (segmentation) heads.

    ``layers`` are block indices (0-based; negative counts from the end); by default four evenly
    spaced blocks ending with the last. ``norm=True`` passes each through the final norm.
    """
    depth = len(encoder.blocks)
    if layers is None:
        layers = default_feature_layers(depth)
    indices = sorted({i % depth for i in layers})
    if len(indices) != len(layers):
        raise ValueError(f"duplicate or out-of-range feature layers {tuple(layers)} for depth "
                         f"{depth}")
    maps = encoder.forward_intermediates(x, indices=indices, norm=norm, output_fmt="NCHW",
                                         intermediates_only=True)
    order = {idx: m for idx, m in zip(indices, maps, strict=True)}
    return [order[i % depth] for i in layers]


def resize_pos_embed(state_dict: dict[str, torch.Tensor], img_size: int,
                     patch_size: int = PATCH_SIZE, num_prefix_tokens: int = 1
                     ) -> dict[str, torch.Tensor]:
    """Return a copy of ``state_dict`` whose ``pos_embed`` fits ``img_size`` (bicubic resample).

    Released MOMO weights are 224 px (a 14x14 grid); CPU-sized runs use 64-96 px chips.
    """
    out = dict(state_dict)
    if "pos_embed" not in out:
        return out
    pos = out["pos_embed"]
    grid = img_size // patch_size
    old_tokens = pos.shape[1] - num_prefix_tokens
    old = int(math.isqrt(old_tokens))
    if old * old != old_tokens:
        raise MomoGeoError(f"pos_embed with {old_tokens} patch tokens is not a square grid")
    if old != grid:
        out["pos_embed"] = resample_abs_pos_embed(pos.float(), [grid, grid], [old, old],
                                                  num_prefix_tokens=num_prefix_tokens
                                                  ).to(pos.dtype)
    return out


def adapt_in_chans(state_dict: dict[str, torch.Tensor], in_chans: int
                   ) -> dict[str, torch.Tensor]:
    """Fit ``patch_embed.proj.weight`` to ``in_chans`` input channels.

    3 -> 1: sum the RGB kernels, so a grey band gives exactly the response the 3-channel model
    gives to that band replicated (the cheaper path for single-band Mars images) -- exact only
    when every channel is normalised with the same statistics, as momo-geo's own encoders are;
    under per-channel statistics (imported MOMO checkpoints: ImageNet's) use
    :func:`momo_geo.normalization.fold_patch_embed`, which import and fine-tuning do.
    1 -> 3: spread the kernel equally over the channels (the same equivalence, backwards).
    """
    key = "patch_embed.proj.weight"
    out = dict(state_dict)
    if key not in out or out[key].shape[1] == in_chans:
        return out
    weight = out[key]
    have = weight.shape[1]
    if in_chans == 1:
        out[key] = weight.sum(dim=1, keepdim=True)
    elif have == 1:
        out[key] = weight.expand(-1, in_chans, -1, -1) / in_chans
    else:
        raise MomoGeoError(f"cannot adapt a {have}-channel patch embedding to {in_chans} channels")
    return out


def adapt_norm_keys(state_dict: dict[str, torch.Tensor], global_pool: str
                    ) -> dict[str, torch.Tensor]:
    """Rename the final norm for the pooling: ``avg`` -> ``fc_norm.*``, ``token`` -> ``norm.*``.

    MAE trains one final LayerNorm; timm calls it ``fc_norm`` with average pooling and ``norm``
    with the class token, so the same weights fit either way.
    """
    src, dst = ("norm.", "fc_norm.") if global_pool == "avg" else ("fc_norm.", "norm.")
    out = {}
    for key, value in state_dict.items():
        if key.startswith(src) and not any(k.startswith(dst) for k in state_dict):
            key = dst + key[len(src):]
        out[key] = value
    return out


def adapt_state_dict(state_dict: dict[str, torch.Tensor], encoder: VisionTransformer
                     ) -> dict[str, torch.Tensor]:
    """Make an encoder state dict fit ``encoder``: norm keys, input channels, position grid."""
    pool = "avg" if not isinstance(encoder.fc_norm, torch.nn.Identity) else "token"
    out = adapt_norm_keys(state_dict, pool)
    out = adapt_in_chans(out, encoder.patch_embed.proj.weight.shape[1])
    return resize_pos_embed(out, encoder.patch_embed.img_size[0],
                            encoder.patch_embed.patch_size[0], encoder.num_prefix_tokens)


def encoder_config(encoder: VisionTransformer, name: str) -> dict[str, Any]:
    """The ``architecture`` dict of a pretrain model card for this encoder."""
    return {
        "kind": "vit",
        "encoder": timm_name(name),
        "patch_size": encoder.patch_embed.patch_size[0],
        "embed_dim": encoder.embed_dim,
        "depth": len(encoder.blocks),
        "global_pool": "avg" if not isinstance(encoder.fc_norm, torch.nn.Identity) else "token",
        "pos_embed": "sincos-frozen",
    }


@register("vit")
def build_vit(card: Any) -> VisionTransformer:
    """Builder for ``pretrain`` cards: the bare encoder (features via ``forward_features``)."""
    arch = card.architecture
    return create_encoder(arch["encoder"], img_size=card.input_size, in_chans=card.in_chans,
                          global_pool=arch.get("global_pool", "avg"))
