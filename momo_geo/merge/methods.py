"""Merging methods: task arithmetic (MOMO), MagMax, and TIES-merging.

All three take the base state dict and a list of :class:`TaskVector` and return a full state dict
(non-mergeable keys copied from the base). ``lam`` scales the combined vector:

- **task arithmetic** — θ = θ_base + λ·Σ τ_s (MOMO; λ = 0.5 in the authors' code);
- **MagMax** — per element, the τ_s of largest magnitude: θ = θ_base + λ·τ_max;
- **TIES** — trim each τ_s to its largest-magnitude fraction ``trim``, elect a sign per element
  (the sign of the summed trimmed values), average only the values that agree with it (disjoint
  mean): θ = θ_base + λ·τ_ties. A step beyond the paper, for comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from momo_geo.errors import MomoGeoError
from momo_geo.merge.task_vector import TaskVector

StateDict = Mapping[str, torch.Tensor]


def _check(vectors: Sequence[TaskVector]) -> None:
    if not vectors:
        raise MomoGeoError("merging needs at least one task vector")
    keys = set(vectors[0].vector)
    if any(set(v.vector) != keys for v in vectors[1:]):
        raise MomoGeoError("task vectors cover different tensors and cannot be merged")


def task_arithmetic(base: StateDict, vectors: Sequence[TaskVector], lam: float = 0.5
                    ) -> dict[str, torch.Tensor]:
    """θ_base + λ·Σ_s τ_s."""
    _check(vectors)
    return sum(vectors[1:], vectors[0]).apply_to(base, lam)


def magmax_vector(vectors: Sequence[TaskVector]) -> TaskVector:
    """Per element, the entry of largest absolute value among the vectors (first one on ties)."""
    _check(vectors)
    out = {}
    for key in vectors[0].vector:
        stack = torch.stack([v.vector[key] for v in vectors])
        pick = stack.abs().argmax(dim=0, keepdim=True)
        out[key] = torch.gather(stack, 0, pick)[0]
    return TaskVector(out)


def magmax(base: StateDict, vectors: Sequence[TaskVector], lam: float = 0.5
           ) -> dict[str, torch.Tensor]:
    """θ_base + λ·τ_max (MagMax, Marczak et al. 2024)."""
    return magmax_vector(vectors).apply_to(base, lam)


def trim_vector(vector: TaskVector, keep: float) -> TaskVector:
    """Zero all but the ``keep`` fraction of entries with the largest magnitude (whole vector).

    Entries tied with the threshold magnitude are kept, so slightly more than ``keep`` may stay.
    """
    if not 0.0 < keep <= 1.0:
        raise MomoGeoError(f"TIES trim (fraction kept) must be in (0, 1], got {keep}")
    if keep == 1.0:
        return TaskVector(dict(vector.vector))
    flat = torch.cat([v.abs().flatten() for v in vector.vector.values()])
    k = max(1, int(round(keep * flat.numel())))
    threshold = torch.topk(flat, k, largest=True, sorted=False).values.min()
    return TaskVector({key: torch.where(v.abs() >= threshold, v, torch.zeros_like(v))
                       for key, v in vector.vector.items()})


def ties_vector(vectors: Sequence[TaskVector], trim: float = 0.2) -> TaskVector:
    """TIES-merging's combined vector: trim, elect sign, disjoint mean (Yadav et al. 2023)."""
    _check(vectors)
    trimmed = [trim_vector(v, trim) for v in vectors]
    out = {}
    for key in vectors[0].vector:
        stack = torch.stack([t.vector[key] for t in trimmed])
        sign = torch.sign(stack.sum(dim=0))
        agree = (torch.sign(stack) == sign) & (stack != 0)
        count = agree.sum(dim=0)
        total = torch.where(agree, stack, torch.zeros_like(stack)).sum(dim=0)
        out[key] = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    return TaskVector(out)


def ties(base: StateDict, vectors: Sequence[TaskVector], lam: float = 1.0, trim: float = 0.2
         ) -> dict[str, torch.Tensor]:
    """θ_base + λ·τ_ties; ``trim`` is the fraction of each vector kept (TIES's k = 20 %)."""
    return ties_vector(vectors, trim).apply_to(base, lam)


METHODS: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
    "task-arithmetic": task_arithmetic,
    "magmax": magmax,
    "ties": ties,
}
DEFAULT_LAMBDA = {"task-arithmetic": 0.5, "magmax": 0.5, "ties": 1.0}
"""λ when none is given: MOMO's 0.5 for sums and maxima; 1 for TIES, whose disjoint *mean*
already has the scale of one task vector."""


def merge(base: StateDict, vectors: Sequence[TaskVector], method: str = "task-arithmetic",
          lam: float | None = None, **kw: Any) -> dict[str, torch.Tensor]:
    """Dispatch by method name (``task-arithmetic``, ``magmax``, ``ties``)."""
    name = method.lower().replace("_", "-")
    if name not in METHODS:
        raise MomoGeoError(f"unknown merge method {method!r}; known: {', '.join(METHODS)}")
    return METHODS[name](base, vectors, DEFAULT_LAMBDA[name] if lam is None else lam, **kw)


def search_lambda(candidates: Sequence[float], evaluate_fn: Callable[[float], float],
                  higher_is_better: bool = False) -> tuple[float, dict[float, float]]:
    """Try each λ, score it with ``evaluate_fn(λ)`` (e.g. a validation loss), return the best.

    Ties go to the smaller λ (the more conservative merge). Returns ``(best λ, {λ: score})``.
    """
    if not candidates:
        raise MomoGeoError("search_lambda needs at least one candidate λ")
    scores = {float(lam): float(evaluate_fn(float(lam))) for lam in candidates}
    sign = -1.0 if higher_is_better else 1.0
    best = min(sorted(scores), key=lambda lam: sign * scores[lam])
    return best, scores
