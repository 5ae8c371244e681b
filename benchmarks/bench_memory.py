"""bench_memory: peak RSS mapping a small and a large scene, each in its own process.

Streaming means the peak memory must not grow with the scene: the large scene (16,384², 64x the
pixels of the small 2,048² one) should need at most 1.2x the small one's peak and < 2,000 MB.
Each scene is mapped by a fresh subprocess (``--child``) that reports its own peak RSS.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import bench_bundle, emit, machine, make_scene, peak_rss_mb


def child(scene: Path, out: Path, model: str, batch_size: int, device: str) -> None:
    from momo_geo.inference import map_scene

    start = time.perf_counter()
    result = map_scene(scene, out, model=bench_bundle(model), batch_size=batch_size,
                       device=device, overwrite=True)
    print(json.dumps({"rss_mb": peak_rss_mb(), "tiles": result.tiles_total,
                      "seconds": time.perf_counter() - start}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2048)
    parser.add_argument("--large", type=int, default=16384)
    parser.add_argument("--model", default="conv-small", choices=["vit", "conv", "conv-small"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=2, type=Path, metavar=("SCENE", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.model, args.batch_size, args.device)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="momo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name, size in (("small", args.small), ("large", args.large)):
        scene = make_scene(work / f"scene_{size}.tif", size)
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(scene), str(work / f"mask_{size}.tif"),
             "--model", args.model, "--batch-size", str(args.batch_size), "--device",
             args.device], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"child for {size}² failed:\n{proc.stderr[-2000:]}")
        runs[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    small, large = runs["small"]["rss_mb"], runs["large"]["rss_mb"]
    emit({"bench": "bench_memory", "rss_small_mb": round(small, 1),
          "rss_large_mb": round(large, 1), "ratio": round(large / small, 3),
          "growth_mb": round(large - small, 1),
          "small_px": args.small, "large_px": args.large, "model": args.model,
          "tiles_small": runs["small"]["tiles"], "tiles_large": runs["large"]["tiles"],
          "seconds_large": round(runs["large"]["seconds"], 1), "machine": machine()})


if __name__ == "__main__":
    main()
