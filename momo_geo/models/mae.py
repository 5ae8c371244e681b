"""Masked autoencoder around a timm ViT encoder (He et al. 2022, as MOMO uses it).

The encoder sees a random 25 % of the patches (mask ratio 0.75); a light transformer decoder
fills in the rest from the encoded visible tokens plus a shared mask token; the loss compares the
predicted pixels of the hidden patches with the input. Only ``.encoder`` (a timm
``VisionTransformer``) is kept after pretraining; the decoder is scaffolding.

Defaults are light enough for a laptop CPU (decoder width 128, depth 2, 4 heads); MOMO's
decoder (512, 8, 16) is ``MaskedAutoencoder(enc, 512, 8, 16)``.
"""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from momo_geo.models.losses import MAELoss
from momo_geo.models.vit import sincos_pos_embed


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, N, patch*patch*C)``, patches in row-major order."""
    b, c, h, w = images.shape
    gh, gw = h // patch, w // patch
    x = images.reshape(b, c, gh, patch, gw, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, grid: tuple[int, int], chans: int
               ) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    b = patches.shape[0]
    gh, gw = grid
    x = patches.reshape(b, gh, gw, patch, patch, chans).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, chans, gh * patch, gw * patch)


class MaskedAutoencoder(nn.Module):
    """MAE: ``forward(x) -> (loss, pred, mask)``.

    ``pred`` is ``(B, N, 16*16*C)`` pixels per patch; ``mask`` is ``(B, N)``, 1 = hidden.
    ``noise`` (``(B, N)`` uniform) may be passed to ``forward`` to fix which patches are hidden:
    pretraining derives it from each sample's index so that runs are reproducible across any
    number of processes.
    """

    def __init__(self, encoder: VisionTransformer, decoder_dim: int = 128,
                 decoder_depth: int = 2, decoder_heads: int = 4, mask_ratio: float = 0.75,
                 loss: MAELoss | None = None) -> None:
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.patch = encoder.patch_embed.patch_size[0]
        self.in_chans = encoder.patch_embed.proj.weight.shape[1]
        self.grid = tuple(encoder.patch_embed.grid_size)
        dim = encoder.embed_dim
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(
            sincos_pos_embed(decoder_dim, self.grid, cls_token=True), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True)
            for _ in range(decoder_depth))
        # eps 1e-6 like the MAE authors' norm_layer (partial(nn.LayerNorm, eps=1e-6)) and
        # timm's encoder and Block LayerNorms; torch's default is 1e-5
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * self.in_chans)
        self.loss_fn = loss if loss is not None else MAELoss()
        self._init_decoder()

    def _init_decoder(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        for module in [self.decoder_embed, self.decoder_norm, self.decoder_pred,
                       *self.decoder_blocks.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _final_norm(self) -> nn.Module:
        # timm puts MAE's final LayerNorm in `fc_norm` for average pooling, else in `norm`.
        enc = self.encoder
        return enc.norm if isinstance(enc.fc_norm, nn.Identity) else enc.fc_norm

    def encode(self, x: torch.Tensor, noise: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embed, hide patches, encode the rest. Returns tokens, mask (1 = hidden), restore ids."""
        enc = self.encoder
        tokens = enc.patch_embed(x)
        if tokens.ndim == 4:  # dynamic-size timm ViTs return NHWC
            tokens = tokens.flatten(1, 2)
        b, n, d = tokens.shape
        prefix = enc.num_prefix_tokens
        pos = enc.pos_embed
        if pos.shape[1] - prefix != n:
            grid = (x.shape[-2] // self.patch, x.shape[-1] // self.patch)
            pos = resample_abs_pos_embed(pos, list(grid), num_prefix_tokens=prefix)
        tokens = tokens + pos[:, prefix:]
        keep = int(round(n * (1 - self.mask_ratio)))
        if noise is None:
            noise = torch.rand(b, n, device=x.device)
        order = torch.argsort(noise.to(x.device), dim=1)
        restore = torch.argsort(order, dim=1)
        kept = torch.gather(tokens, 1, order[:, :keep, None].expand(-1, -1, d))
        mask = torch.ones(b, n, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, restore)
        if enc.cls_token is not None:
            cls = (enc.cls_token + pos[:, :1]).expand(b, -1, -1)
            kept = torch.cat([cls, kept], dim=1)
        kept = enc.norm_pre(kept)
        for block in enc.blocks:
            kept = block(kept)
        return self._final_norm()(kept), mask, restore

    def decode(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        """Predict the pixels of every patch from the visible tokens and mask tokens."""
        prefix = self.encoder.num_prefix_tokens
        x = self.decoder_embed(latent)
        b, n = restore.shape
        fill = self.mask_token.expand(b, n + prefix - x.shape[1], -1)
        body = torch.cat([x[:, prefix:], fill], dim=1)
        body = torch.gather(body, 1, restore[:, :, None].expand(-1, -1, x.shape[2]))
        pos = self.decoder_pos_embed
        if pos.shape[1] - 1 != n:
            side = int(n ** 0.5)
            pos = resample_abs_pos_embed(pos, [side, side], num_prefix_tokens=1)
        x = torch.cat([x[:, :prefix], body], dim=1) + torch.cat(
            [pos[:, :1].expand(-1, prefix, -1), pos[:, 1:]], dim=1)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, prefix:]

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latent, mask, restore = self.encode(x, noise)
        pred = self.decode(latent, restore)
        target = patchify(x, self.patch)
        pasted = image = None
        if self.loss_fn.needs_image:
            m = mask[:, :, None].to(pred.dtype)
            grid = (x.shape[-2] // self.patch, x.shape[-1] // self.patch)
            pasted = unpatchify(pred * m + target.to(pred.dtype) * (1 - m), self.patch, grid,
                                self.in_chans)
            image = x
        # every term on its own (unweighted), for the run's log
        loss, self.last_parts = self.loss_fn(pred, target, mask, pasted, image)
        return loss, pred, mask

    def mae_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder + decoder weights, without the frozen loss network (what checkpoints keep)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("loss_fn.")}
