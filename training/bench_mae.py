"""MAE pretraining throughput (images/s of full training steps), one JSON line per setting.

    python training/bench_mae.py --encoder vit_tiny --img-size 96 --batch-size 32
    python training/bench_mae.py --encoder vit_base --img-size 224 --batch-size 256 \
        --device cuda --precision bf16 --decoder 512 8 16

A training step is forward + backward + AdamW update on random input (the data pipeline is
measured elsewhere); warm-up steps are excluded.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from momo_geo.models.mae import MaskedAutoencoder
from momo_geo.models.vit import create_encoder


def bench(encoder: str, img_size: int, batch_size: int, device: str, precision: str,
          decoder: tuple[int, int, int], steps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    mae = MaskedAutoencoder(create_encoder(encoder, img_size=img_size), *decoder).to(device)
    opt = torch.optim.AdamW([p for p in mae.parameters() if p.requires_grad], lr=1e-4,
                            betas=(0.9, 0.95), weight_decay=0.05)
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")

    def step() -> None:
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype or torch.float32,
                            enabled=dtype is not None):
            loss, _, _ = mae(x)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = time.perf_counter() - start
    return {"bench": "mae_pretrain", "encoder": encoder, "img_size": img_size,
            "batch_size": batch_size, "device": device, "precision": precision,
            "decoder": list(decoder), "threads": torch.get_num_threads(),
            "images_per_s": round(steps * batch_size / seconds, 2),
            "s_per_step": round(seconds / steps, 4),
            "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="vit_tiny")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--decoder", type=int, nargs=3, default=(128, 2, 4),
                        metavar=("WIDTH", "DEPTH", "HEADS"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(bench(args.encoder, args.img_size, args.batch_size, args.device,
                           args.precision, tuple(args.decoder), args.steps, args.warmup)))


if __name__ == "__main__":
    main()
