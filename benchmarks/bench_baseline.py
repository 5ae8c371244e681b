"""bench_baseline: our streaming engine versus the naive TorchGeo way, on the same scene.

The naive way is what a TorchGeo tutorial does: ``RasterDataset`` + ``GridGeoSampler`` +
``DataLoader``, the same model and MOMO normalisation, every tile's probabilities added into a
full-scene in-RAM array (plus a full-scene count array for the overlap average), then the class
map written as one GeoTIFF. Each way runs in its own subprocess (``--child``) that reports its
wall time and peak RSS. Prints one JSON line with time and memory ratios (baseline / ours).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import bench_bundle, emit, machine, make_scene, peak_rss_mb


def run_ours(scene: Path, out: Path, model: str, batch_size: int, device: str) -> dict:
    from momo_geo.inference import Predictor, map_scene

    predictor = Predictor(bench_bundle(model), device)
    start = time.perf_counter()
    result = map_scene(scene, out, predictor=predictor, batch_size=batch_size, overwrite=True)
    return {"seconds": time.perf_counter() - start, "tiles": result.tiles_total}


def run_torchgeo(scene: Path, out: Path, model: str, batch_size: int, device: str) -> dict:
    import rasterio
    import torch
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    from momo_geo.inference import Predictor
    from momo_geo.preprocess import to_model_input

    predictor = Predictor(bench_bundle(model), device)
    card = predictor.card
    start = time.perf_counter()
    with rasterio.open(scene) as src:
        profile, height, width = src.profile, src.height, src.width
        left, top = src.transform.c, src.transform.f
        xres, yres = src.transform.a, -src.transform.e
    dataset = RasterDataset(paths=str(scene))
    sampler = GridGeoSampler(dataset, size=card.tile_size,
                             stride=card.tile_size - card.tile_overlap)
    loader = DataLoader(dataset, sampler=sampler, batch_size=batch_size,
                        collate_fn=stack_samples)
    probs = np.zeros((card.num_classes, height, width), np.float32)
    count = np.zeros((height, width), np.float32)
    tiles = 0
    for batch in loader:
        x = to_model_input(batch["image"][:, :1].float(), card.normalization["mean"],
                           card.normalization["std"], card.in_chans)
        with torch.inference_mode():
            p = predictor.model(x.to(predictor.device)).float().softmax(1).cpu().numpy()
        for query, tile in zip(batch["bounds"], p, strict=True):
            xs, ys = query[0], query[1]
            # the grid's last tiles reach past the scene (TorchGeo pads them): clip
            col = int(round((xs.start - left) / xres))
            row = int(round((top - ys.stop) / yres))
            r0, c0 = max(0, -row), max(0, -col)
            r1 = min(tile.shape[1], height - row)
            c1 = min(tile.shape[2], width - col)
            if r1 <= r0 or c1 <= c0:
                continue
            probs[:, row + r0:row + r1, col + c0:col + c1] += tile[:, r0:r1, c0:c1]
            count[row + r0:row + r1, col + c0:col + c1] += 1
        tiles += len(p)
    classes = (probs / np.maximum(count, 1)).argmax(0).astype(np.uint8)
    profile.update(count=1, dtype="uint8", nodata=255, compress="deflate", tiled=True)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(classes, 1)
    return {"seconds": time.perf_counter() - start, "tiles": tiles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--model", default="conv-small", choices=["vit", "conv", "conv-small"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=3, metavar=("WAY", "SCENE", "OUT"))
    args = parser.parse_args()
    if args.child:
        way, scene, out = args.child
        run = run_ours if way == "ours" else run_torchgeo
        record = run(Path(scene), Path(out), args.model, args.batch_size, args.device)
        record["rss_mb"] = peak_rss_mb()
        print(json.dumps(record), flush=True)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="momo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    scene = make_scene(work / f"scene_{args.size}.tif", args.size)
    runs = {}
    for way in ("torchgeo", "ours"):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", way, str(scene),
             str(work / f"mask_{way}_{args.size}.tif"), "--model", args.model,
             "--batch-size", str(args.batch_size), "--device", args.device],
            capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"{way} failed:\n{proc.stderr[-3000:]}")
        runs[way] = json.loads(proc.stdout.strip().splitlines()[-1])
    base, ours = runs["torchgeo"], runs["ours"]
    import rasterio

    with rasterio.open(work / f"mask_torchgeo_{args.size}.tif") as a, \
            rasterio.open(work / f"mask_ours_{args.size}.tif") as b:
        agreement = float((a.read(1) == b.read(1)).mean())
    emit({"bench": "bench_baseline", "baseline_s": round(base["seconds"], 1),
          "ours_s": round(ours["seconds"], 1),
          "time_ratio": round(base["seconds"] / ours["seconds"], 3),
          "baseline_rss_mb": round(base["rss_mb"], 1), "ours_rss_mb": round(ours["rss_mb"], 1),
          "rss_ratio": round(base["rss_mb"] / ours["rss_mb"], 3),
          "mask_agreement": round(agreement, 4), "tiles_baseline": base["tiles"],
          "tiles_ours": ours["tiles"], "scene_px": args.size,
          "model": args.model, "machine": machine()})


if __name__ == "__main__":
    main()
