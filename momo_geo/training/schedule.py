"""The learning-rate schedule every training run here uses: linear warm-up, then cosine decay.

MAE pretraining and fine-tuning share it (MOMO and MAE both use it), stepped per optimiser step.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.0) -> float:
    """The factor on the peak learning rate at ``step`` (0-based).

    Rises linearly to 1 over ``warmup`` steps, then follows half a cosine down to ``floor``
    (a fraction of the peak) at ``total`` steps, and stays there.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def scheduler(optimizer: object, warmup: int, total: int, floor: float = 0.0) -> dict:
    """A Lightning ``lr_scheduler`` entry (stepped every optimiser step) for ``optimizer``."""
    import torch

    sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup, total, floor))  # type: ignore[arg-type]
    return {"scheduler": sched, "interval": "step"}
