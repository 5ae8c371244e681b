"""Reconstruction losses for MAE pretraining: masked pixel MSE plus optional image terms.

MOMO's loss is the mean squared error on the *masked* patches only, with no per-patch
normalisation; the paper reports that adding a perceptual term helps. LPIPS needs network weights
that are not shipped and must not be downloaded during training, so the perceptual term here
compares features of a *frozen feature network* — by default the frozen base encoder — and uses
LPIPS only when the ``lpips`` package and its weights are already on disk. SSIM and gradient
terms are cheap structure terms. Every term has a weight; :meth:`MAELoss.describe` is what the
model card records.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over masked patches. ``pred``/``target`` ``(B, N, P)``, ``mask`` (B, N).

    ``mask`` is 1 where a patch was hidden from the encoder. Visible patches do not count: the
    task is to fill in what was not seen.
    """
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7, data_range: float | None = None
         ) -> torch.Tensor:
    """Mean structural similarity of two ``(B, C, H, W)`` images (uniform window, per channel)."""
    a, b = a.float(), b.float()
    if data_range is None:
        data_range = float((b.max() - b.min()).clamp_min(1e-6))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    pad = window // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(x, (pad,) * 4, mode="reflect"), window, stride=1)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.pow(2)
    var_b = blur(b * b) - mu_b.pow(2)
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a.pow(2) + mu_b.pow(2) + c1) * (var_a + var_b + c2))
    return index.mean()


def gradient_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 distance between the horizontal and vertical finite differences of two images.

    Penalises blurred crater rims and dune crests that MSE alone tolerates.
    """
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def _lpips_if_local() -> nn.Module | None:
    """An LPIPS network if its package *and* weights are already present; never downloads."""
    try:
        import lpips  # type: ignore[import-not-found]
    except ImportError:
        return None
    import os

    hub = torch.hub.get_dir()
    alexnet = os.path.join(hub, "checkpoints", "alexnet-owt-7be5be79.pth")
    if not os.path.isfile(alexnet):
        return None
    try:
        return lpips.LPIPS(net="alex", verbose=False)
    except Exception:  # any failure to build it offline: fall back to the frozen encoder
        return None


class PerceptualLoss(nn.Module):
    """Feature distance under a frozen network (LPIPS-like: unit-normalised channels, MSE).

    ``feature_net`` is a timm ViT; it is deep-copied and frozen so training never moves it.
    Features are compared at ``layers`` (block indices).
    """

    def __init__(self, feature_net: nn.Module, layers: tuple[int, ...] | None = None) -> None:
        super().__init__()
        from momo_geo.models.vit import default_feature_layers

        net = copy.deepcopy(feature_net).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net
        self.layers = layers or default_feature_layers(len(net.blocks), 2)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.net.eval()  # always frozen
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from momo_geo.models.vit import encoder_features

        with torch.no_grad():
            feats_t = encoder_features(self.net, target, self.layers)
        feats_p = encoder_features(self.net, pred, self.layers)
        total = pred.new_zeros(())
        for fp, ft in zip(feats_p, feats_t, strict=True):
            fp = F.normalize(fp.float(), dim=1)
            ft = F.normalize(ft.float(), dim=1)
            total = total + (fp - ft).pow(2).sum(dim=1).mean()
        return total / len(feats_p)


class MAELoss(nn.Module):
    """Weighted sum ``pixel*MSE_masked + perceptual*P + ssim*(1-SSIM) + gradient*G``.

    The image terms compare the *pasted* reconstruction (visible patches from the input, masked
    patches from the prediction) with the input, so, like the pixel term, they judge only what the
    model had to invent.
    """

    def __init__(self, pixel: float = 1.0, perceptual: float = 0.0, ssim: float = 0.0,
                 gradient: float = 0.0, feature_net: nn.Module | None = None) -> None:
        super().__init__()
        self.weights = {"pixel": float(pixel), "perceptual": float(perceptual),
                        "ssim": float(ssim), "gradient": float(gradient)}
        self.perceptual_net: nn.Module | None = None
        self.perceptual_kind = "none"
        if perceptual:
            lp = _lpips_if_local()
            if lp is not None:
                for p in lp.parameters():
                    p.requires_grad_(False)
                self.perceptual_net, self.perceptual_kind = lp, "lpips-alex"
            elif feature_net is not None:
                self.perceptual_net = PerceptualLoss(feature_net)
                self.perceptual_kind = "frozen-encoder-features"
            else:
                raise ValueError("a perceptual loss weight needs a feature network "
                                 "(LPIPS weights are not available offline)")

    @property
    def needs_image(self) -> bool:
        return any(self.weights[k] for k in ("perceptual", "ssim", "gradient"))

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                pasted: torch.Tensor | None = None, image: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its parts. ``pasted``/``image`` are ``(B, C, H, W)`` when needed."""
        parts = {"pixel": masked_mse(pred, target, mask)}
        if self.needs_image:
            if pasted is None or image is None:
                raise ValueError("image terms need the pasted reconstruction and the input")
            if self.weights["perceptual"]:
                if self.perceptual_kind == "lpips-alex":
                    # LPIPS expects [-1, 1]; our inputs are standardised, so squash smoothly.
                    parts["perceptual"] = self.perceptual_net(torch.tanh(pasted[:, :3]),
                                                              torch.tanh(image[:, :3])).mean()
                else:
                    parts["perceptual"] = self.perceptual_net(pasted, image)
            if self.weights["ssim"]:
                parts["ssim"] = 1.0 - ssim(pasted, image)
            if self.weights["gradient"]:
                parts["gradient"] = gradient_loss(pasted.float(), image.float())
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, parts

    def describe(self) -> dict[str, Any]:
        """What the model card records about the loss."""
        return {"weights": dict(self.weights), "perceptual_network": self.perceptual_kind,
                "pixel": "MSE on masked patches, no per-patch normalisation"}
