"""Reconstruction losses for MAE pretraining: masked pixel MSE plus optional image terms.

What the MOMO paper describes (as the audit in issue 12 reports it): the reconstruction loss is
pixel MSE *combined with* SSIM, a perceptual (LPIPS) term and a gradient term. What we implement:
the same four kinds of term, each switched on by a weight above 0 and each returned (and logged,
:mod:`momo_geo.training.runs`) on its own:

- ``pixel``: MSE over the *masked* patches only, with no per-patch normalisation;
- ``ssim``: ``1 - SSIM`` (uniform 7 x 7 window, per channel, Wang et al.'s C1/C2 constants);
- ``gradient``: L1 distance of horizontal and vertical finite differences;
- ``feature``: an LPIPS-*style* feature distance, **not LPIPS**. LPIPS compares unit-normalised
  activations of an ImageNet-trained AlexNet/VGG, weighted per channel by linear layers learned
  on human similarity judgements. Neither those backbone weights nor the learned linear layers
  are on this machine (no ``lpips`` package, no torchvision weights in the torch hub cache), and
  training must never download anything. So the term takes LPIPS's recipe without its learned
  parts: activations of a *frozen copy of the starting encoder* (the base, for sensor runs) at two
  depths, unit-normalised over channels at every position, squared difference summed over
  channels and averaged over positions and depths (LPIPS with all linear weights equal to 1).
  Its quality is only that of the starting encoder; from a random initialisation it is a
  random-feature distance. ``perceptual`` is accepted as an old name for the ``feature`` weight
  (recipes and configs written before the rename).

The image terms compare the *pasted* reconstruction (visible patches from the input, hidden ones
predicted) with the input, so, like the pixel term, they judge only what the model had to invent.
:meth:`MAELoss.describe` is what the model card records.
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
    """Mean structural similarity of two ``(B, C, H, W)`` images (uniform window, per channel).

    Wang et al. (2004) with a ``window`` x ``window`` box filter (edges reflected) instead of the
    Gaussian, C1 = (0.01 L)^2 and C2 = (0.03 L)^2 with L = ``data_range`` (default: the range of
    ``b``, the target; standardised inputs have no fixed range). 1 for identical images.
    """
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


TERMS = ("pixel", "ssim", "gradient", "feature")
"""The loss terms, in the order logs list them."""
ALIASES = {"perceptual": "feature"}
"""Old weight names still accepted (configs and recipes written before the rename)."""
FEATURE_NETWORK = "frozen-start-encoder, LPIPS-style (unit-normalised, unweighted), not LPIPS"


def loss_weights(weights: dict[str, float] | None = None, **more: float) -> dict[str, float]:
    """Every term's weight (0 = off) from a partial mapping; old names mapped, unknown refused."""
    out = dict.fromkeys(TERMS, 0.0)
    out["pixel"] = 1.0
    for key, value in {**(weights or {}), **more}.items():
        name = ALIASES.get(key, key)
        if name not in out:
            raise ValueError(f"unknown loss term {key!r}; terms: {', '.join(TERMS)} "
                             f"(old name: perceptual = feature)")
        out[name] = float(value)
    if any(w < 0 for w in out.values()):
        raise ValueError(f"loss weights must not be negative: {out}")
    return out


class FeatureLoss(nn.Module):
    """LPIPS-style distance under a frozen network, without LPIPS's learned channel weights.

    ``feature_net`` is a timm ViT; it is deep-copied and frozen so training never moves it.
    At each of ``layers`` (block indices) the ``(B, C, h, w)`` activations of both images are
    unit-normalised over channels at every position; the term is the squared difference summed
    over channels, averaged over positions and layers: 0 for identical images, at most 4.
    """

    def __init__(self, feature_net: nn.Module, layers: tuple[int, ...] | None = None) -> None:
        super().__init__()
        from momo_geo.models.vit import default_feature_layers

        net = copy.deepcopy(feature_net).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net
        self.layers = layers or default_feature_layers(len(net.blocks), 2)

    def train(self, mode: bool = True) -> FeatureLoss:
        super().train(mode)
        self.net.eval()  # always frozen
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from momo_geo.models.vit import encoder_features

        with torch.no_grad():
            feats_t = encoder_features(self.net, target, self.layers)
        feats_p = encoder_features(self.net, pred, self.layers)
        total = pred.new_zeros((), dtype=torch.float32)
        for fp, ft in zip(feats_p, feats_t, strict=True):
            fp = F.normalize(fp.float(), dim=1)
            ft = F.normalize(ft.float(), dim=1)
            total = total + (fp - ft).pow(2).sum(dim=1).mean()
        return total / len(feats_p)


PerceptualLoss = FeatureLoss
"""Old name of :class:`FeatureLoss`."""


class MAELoss(nn.Module):
    """Weighted sum ``pixel*MSE + ssim*(1-SSIM) + gradient*G + feature*F``; a term with weight 0
    is not computed.

    ``forward`` returns the total and every computed term (unweighted), so that runs can log them
    one by one. ``perceptual=`` is the old name of ``feature=``.
    """

    def __init__(self, pixel: float = 1.0, ssim: float = 0.0, gradient: float = 0.0,
                 feature: float = 0.0, feature_net: nn.Module | None = None,
                 perceptual: float | None = None) -> None:
        super().__init__()
        given = {"pixel": pixel, "ssim": ssim, "gradient": gradient, "feature": feature}
        if perceptual is not None:
            if feature:
                raise ValueError("give the feature weight once (perceptual is its old name)")
            given["feature"] = perceptual
        self.weights = loss_weights(given)
        self.feature_net: nn.Module | None = None
        if self.weights["feature"]:
            if feature_net is None:
                raise ValueError("a feature loss weight needs a feature network (the frozen "
                                 "starting encoder; LPIPS weights are not available offline)")
            self.feature_net = FeatureLoss(feature_net)

    @property
    def enabled(self) -> list[str]:
        """The terms with a weight above 0, in :data:`TERMS` order."""
        return [k for k in TERMS if self.weights[k]]

    @property
    def needs_image(self) -> bool:
        return any(self.weights[k] for k in ("feature", "ssim", "gradient"))

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                pasted: torch.Tensor | None = None, image: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its parts. ``pasted``/``image`` are ``(B, C, H, W)`` when needed."""
        parts: dict[str, torch.Tensor] = {}
        if self.weights["pixel"]:
            parts["pixel"] = masked_mse(pred, target, mask)
        if self.needs_image:
            if pasted is None or image is None:
                raise ValueError("image terms need the pasted reconstruction and the input")
            if self.weights["ssim"]:
                parts["ssim"] = 1.0 - ssim(pasted, image)
            if self.weights["gradient"]:
                parts["gradient"] = gradient_loss(pasted.float(), image.float())
            if self.weights["feature"]:
                assert self.feature_net is not None
                parts["feature"] = self.feature_net(pasted, image)
        total = sum((self.weights[k] * v for k, v in parts.items()), pred.new_zeros(()).float())
        return total, parts

    def describe(self) -> dict[str, Any]:
        """What the model card records about the loss."""
        return {"weights": dict(self.weights),
                "feature_network": FEATURE_NETWORK if self.weights["feature"] else "none",
                "pixel": "MSE on masked patches, no per-patch normalisation",
                "ssim": "1 - SSIM, uniform 7x7 window, C1 = (0.01 L)^2, C2 = (0.03 L)^2",
                "gradient": "L1 of horizontal and vertical finite differences"}
