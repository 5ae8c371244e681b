"""Task vectors: the difference a training run made to a model, as a first-class object.

A :class:`TaskVector` holds ``θ_finetuned − θ_base`` for the *mergeable* keys only. Which keys
merge is explicit (:func:`mergeable_keys`): floating-point encoder weights. Frozen tensors (the
fixed sin-cos ``pos_embed``), integer buffers (counters, indices) and MAE scaffolding (decoder,
mask token, loss networks) never merge; :meth:`TaskVector.apply_to` copies them from the base
unchanged, so a merged model can never carry a decoder or a corrupted counter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from momo_geo.errors import MomoGeoError

FROZEN_KEYS = ("pos_embed",)
"""Encoder tensors that are never trained (their task vectors are zero by construction)."""
SCAFFOLD_PREFIXES = ("decoder_", "decoder.", "mask_token", "lpips_fn.", "loss_fn.")
"""MAE parts that are not the encoder."""

StateDict = Mapping[str, torch.Tensor]


def mergeable_keys(state_dict: StateDict, exclude: Iterable[str] = FROZEN_KEYS) -> list[str]:
    """Keys that take part in merging: floating-point encoder tensors that are trained."""
    excluded = set(exclude)
    keys = []
    for key, value in state_dict.items():
        leaf = key.rsplit(".", 1)[-1]
        if key in excluded or leaf in excluded:
            continue
        if key.startswith(SCAFFOLD_PREFIXES):
            continue
        if not torch.is_tensor(value) or not value.is_floating_point():
            continue
        keys.append(key)
    return keys


def _check_compatible(base: StateDict, other: StateDict, keys: Iterable[str], what: str) -> None:
    for key in keys:
        if key not in other:
            raise MomoGeoError(f"{what} has no tensor {key!r}: not the same architecture as the "
                               "base")
        if tuple(other[key].shape) != tuple(base[key].shape):
            raise MomoGeoError(f"{what}: {key!r} has shape {tuple(other[key].shape)}, the base "
                               f"{tuple(base[key].shape)}")


@dataclass
class TaskVector:
    """``τ = θ_finetuned − θ_base`` over the mergeable keys (CPU, float64 by default).

    Why float64: the difference of two float32 weights is exact in float64 (unless their
    magnitudes differ by more than 2**29), so ``base + τ`` rounds back to exactly the fine-tuned
    weights; in float32 it may not. Pass ``dtype=torch.float32`` to halve memory for ViT-L.
    Supports ``τ1 + τ2``, ``sum([...])``, ``c * τ``, ``-τ``, ``τ1 - τ2`` and :meth:`apply_to`.
    Vectors over different key sets cannot be combined.
    """

    vector: dict[str, torch.Tensor]

    @classmethod
    def from_state_dicts(cls, base: StateDict, finetuned: StateDict,
                         keys: Iterable[str] | None = None,
                         dtype: torch.dtype = torch.float64) -> TaskVector:
        keys = list(keys) if keys is not None else mergeable_keys(base)
        _check_compatible(base, finetuned, keys, "the fine-tuned state dict")
        return cls({k: finetuned[k].detach().cpu().to(dtype) - base[k].detach().cpu().to(dtype)
                    for k in keys})

    def keys(self) -> list[str]:
        return list(self.vector)

    def _same_keys(self, other: TaskVector) -> None:
        if set(self.vector) != set(other.vector):
            raise MomoGeoError("task vectors cover different tensors and cannot be combined")

    def __add__(self, other: TaskVector | int) -> TaskVector:
        if isinstance(other, int) and other == 0:  # lets sum() start from 0
            return self
        if not isinstance(other, TaskVector):
            return NotImplemented
        self._same_keys(other)
        return TaskVector({k: v + other.vector[k] for k, v in self.vector.items()})

    __radd__ = __add__

    def __neg__(self) -> TaskVector:
        return TaskVector({k: -v for k, v in self.vector.items()})

    def __sub__(self, other: TaskVector) -> TaskVector:
        return self + (-other)

    def __mul__(self, scale: float) -> TaskVector:
        if not isinstance(scale, (int, float)):
            return NotImplemented
        return TaskVector({k: v * float(scale) for k, v in self.vector.items()})

    __rmul__ = __mul__

    def norm(self) -> float:
        """The L2 norm over all tensors (how far a run moved from its base)."""
        return float(torch.sqrt(sum((v.double() ** 2).sum() for v in self.vector.values())))

    def apply_to(self, base: StateDict, scale: float = 1.0) -> dict[str, torch.Tensor]:
        """``θ_base + scale·τ`` as a new state dict; every other key is the base's, unchanged.

        The result keeps each tensor's dtype. With ``scale=1`` and τ from ``(base, θ)`` the
        result equals θ exactly (float32 weights, float64 vector).
        """
        _check_compatible(base, self.vector, self.vector, "the base")
        out: dict[str, torch.Tensor] = {}
        for key, value in base.items():
            if key in self.vector:
                delta = self.vector[key]
                merged = value.detach().cpu().to(delta.dtype) + delta * scale
                out[key] = merged.to(value.dtype)
            else:
                out[key] = value.detach().cpu().clone()
        return out
