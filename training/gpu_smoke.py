"""A minute-long check, before the GPU arms (``make models-gpu``), that fine-tuning, its
learning curve and the engine's scoring run on this machine's accelerator.

    python training/gpu_smoke.py            # on the GPU (bf16, DataLoader workers)
    python training/gpu_smoke.py cpu        # the same path on the CPU (a few minutes)

It trains the two network kinds of the GPU arms (a CNN U-Net and a ViT-S/16 U-Net) for two
tiny epochs on synthetic crater fields, each scored twice on them by the map engine, and
prints one line per network. A lent GPU machine is short of time, so run this first: an error
here costs a minute, not the whole run.
"""

from __future__ import annotations

import sys
import time

from momo_geo.training.finetune import (
    Recipe,
    build_task_model,
    learning_curve,
    task_card,
    train_lightning,
)
from momo_geo.training.task_data import synthetic_crater_data

NETWORKS = {"unet": {}, "vit_unet": {"encoder": "vit_small_patch16_224"}}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    accelerator = args[0] if args else "gpu"
    start = time.perf_counter()
    data = synthetic_crater_data(2)
    for architecture, extra in NETWORKS.items():
        recipe = Recipe(architecture=architecture, input_size=128, width=8, levels=4, epochs=2,
                        chips=64, batch_size=16, accelerator=accelerator,
                        precision="bf16-mixed", num_workers=2,
                        value_scaling="scene_percentile", rim_ignore=0.15, jitter=0.1,
                        max_minutes=2, loss="dice_ce", **extra)
        card = task_card("ctx-craters", recipe, None, "smoke")
        model = build_task_model(card, None)[0]
        points: list[dict] = []
        curve = learning_curve(model, card, data, recipe, 64, points)
        seconds = train_lightning(model, "ctx-craters", data, recipe, None, curve,
                                  card.normalization)
        print(f"{architecture}: trained in {seconds:.1f} s, last point {points[-1]}", flush=True)
    print(f"smoke ok in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
