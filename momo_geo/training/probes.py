"""Frozen-encoder probes on cached features: how good is a representation, cheaply.

The encoder comparison (the checkout's ``training/reproduce.py``) scores 9 encoders x 3 tasks x
3 seeds on a 2-core CPU; running the frozen encoder once per chip (:func:`probe_features`) instead
of once per training step is what makes that fit. The probes are deliberately weak — a linear
classifier on pooled tokens, a linear per-token crater probe — so that they measure the
representation, not the head. :func:`out_of_fold_classes` is the probe of a frozen network
on a small labelled set without a split of its own (the landmark probe of the crater U-Net).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from momo_geo.evaluate import TaskData


@torch.inference_mode()
def probe_features(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256) -> Any:
    """Frozen-encoder features of normalised inputs: pooled ``(N, D)`` for a classifier, the
    list of block maps (float16, to halve the cache) for a segmenter."""
    model.eval()
    out: list[Any] = []
    for start in range(0, len(x), batch_size):
        feats = model.features(x[start:start + batch_size])
        out.append(feats if isinstance(feats, torch.Tensor) else [f.half() for f in feats])
    if isinstance(out[0], torch.Tensor):
        return torch.cat(out)
    return [torch.cat([o[i] for o in out]) for i in range(len(out[0]))]


class TokenProbe(nn.Module):
    """Linear crater probe per token on the concatenated block features, upsampled to pixels."""

    def __init__(self, dim: int, levels: int) -> None:
        super().__init__()
        self.linear = nn.Conv2d(dim * levels, 2, 1)

    def forward(self, feats: list[torch.Tensor], size: int) -> torch.Tensor:
        logits = self.linear(torch.cat([f.float() for f in feats], dim=1))
        return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)


class LinearProbe(nn.Module):
    """LayerNorm + linear classifier on the pooled encoder features."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)  # the encoder's (timm's, MAE's) eps
        self.linear = nn.Linear(dim, classes)

    def forward(self, pooled: torch.Tensor, _: int = 0) -> torch.Tensor:
        return self.linear(self.norm(pooled))


def train_head(head: nn.Module, feats: Any, y: torch.Tensor, steps: int, seed: int,
               size: int, loss_name: str, lr: float = 3e-3, batch: int = 128) -> None:
    """Train a probe ``head`` on cached features (AdamW, one-cycle schedule, seeded batches)."""
    from momo_geo.models.heads import make_loss

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = make_loss(loss_name)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    # cycle_momentum off: OneCycleLR would otherwise cycle AdamW's β1 (0.85-0.95) with the lr
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                cycle_momentum=False)
    n = len(y)
    for _ in range(steps):
        idx = torch.randint(n, (min(batch, n),), generator=gen)
        f = feats[idx] if isinstance(feats, torch.Tensor) else [x[idx] for x in feats]
        loss = loss_fn(head(f, size), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


@torch.inference_mode()
def head_predict(head: nn.Module, feats: Any, size: int) -> torch.Tensor:
    """Predicted classes (N,) or class maps (N, size, size) of a probe on cached features."""
    n = len(feats) if isinstance(feats, torch.Tensor) else len(feats[0])
    out = []
    for s in range(0, n, 512):
        f = feats[s:s + 512] if isinstance(feats, torch.Tensor) else [x[s:s + 512] for x in feats]
        out.append(head(f, size).argmax(1))
    return torch.cat(out)


def grid_tiles(data: TaskData, size: int, max_side: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Validation images cut into non-overlapping ``size`` tiles (the remainder beyond a whole
    tile dropped): raw tiles, masks and the image index of each tile."""
    raws, masks, owner = [], [], []
    for i, (img, mask) in enumerate(zip(data.images, data.targets, strict=True)):
        h, w = img.shape
        if max_side:
            h, w = min(h, max_side), min(w, max_side)
        for r in range(0, h - size + 1, size):
            for c in range(0, w - size + 1, size):
                raws.append(img[r:r + size, c:c + size])
                masks.append(mask[r:r + size, c:c + size])
                owner.append(i)
    return (torch.from_numpy(np.stack(raws)).unsqueeze(1),
            torch.from_numpy(np.stack(masks).astype(np.uint8)), owner)


BALANCED_L2 = 1e-3
"""Weight of the L2 penalty of :func:`fit_balanced_logistic` (features standardised)."""


def fit_balanced_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> nn.Linear:
    """A linear layer fitted by L-BFGS to class-balanced (1/sqrt n) cross-entropy plus L2: a
    probe whose rare classes count without a learning-rate schedule to tune."""
    counts = np.bincount(y.numpy(), minlength=n_classes)
    weight = torch.tensor(1 / np.sqrt(np.maximum(counts, 1)), dtype=torch.float32)
    linear = nn.Linear(x.shape[1], n_classes)
    optimiser = torch.optim.LBFGS(linear.parameters(), max_iter=200)

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        penalty = BALANCED_L2 * linear.weight.pow(2).sum()
        value = F.cross_entropy(linear(x), y, weight=weight) + penalty
        value.backward()
        return value

    optimiser.step(loss)
    return linear


def out_of_fold_classes(features: np.ndarray, targets: np.ndarray, folds: list[list[int]],
                        n_classes: int) -> np.ndarray:
    """Each row's class by :func:`fit_balanced_logistic` fitted on the other folds (features
    standardised with the fitting folds' statistics)."""
    predicted = np.zeros(len(targets), dtype=np.int64)
    for held in folds:
        fit = np.setdiff1d(np.arange(len(targets)), held)
        mean, std = features[fit].mean(0), features[fit].std(0) + 1e-6

        def standard(rows: np.ndarray) -> torch.Tensor:
            return torch.tensor((features[rows] - mean) / std, dtype=torch.float32)  # noqa: B023

        linear = fit_balanced_logistic(standard(fit), torch.tensor(targets[fit]), n_classes)
        with torch.no_grad():
            predicted[held] = linear(standard(np.asarray(held))).argmax(1).numpy()
    return predicted
