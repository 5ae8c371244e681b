"""bench_map: end-to-end ``map`` rate versus the bare model forward on exactly the same tiles.

Both run in this process on one generated scene (8,192 x 8,192 by default) with the same model
object. "bare" times only ``model(batch)`` on the tiles the pipeline predicts (tiles are read and
normalised outside the timed region); "pipeline" times the whole :func:`map_scene` call: reading,
nodata masks, normalisation, prediction, stitching, the tiled GeoTIFF and the COG copy. A ratio
near 1 means the model never waits for I/O. Prints one JSON line; goal ``ratio >= 0.90``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import bench_bundle, emit, machine, make_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--model", default="conv", choices=["vit", "conv", "conv-small"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from momo_geo.inference import Predictor, map_scene
    from momo_geo.inference.engine import _grid
    from momo_geo.inference.plan import plan_tiles
    from momo_geo.inference.reader import Normalizer, Prefetcher, RasterSource

    work = args.workdir or Path(tempfile.mkdtemp(prefix="momo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    scene = make_scene(work / f"scene_{args.size}.tif", args.size)
    bundle = bench_bundle(args.model)
    predictor = Predictor(bundle, args.device)
    card = bundle.card
    grid = _grid(card, args.size, args.size, card.tile_size, card.tile_overlap, 1.0)

    def sync() -> None:
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()

    # bare: the same tiles, the same batches; only the forward pass is timed
    normalizer = Normalizer(card.normalization["mean"], card.normalization["std"],
                            card.in_chans, card.bands, grid.pad_to)
    batches = Prefetcher(RasterSource(str(scene), card.bands),
                         plan_tiles(args.size, args.size, grid.tile, grid.overlap), normalizer,
                         batch_size=args.batch_size)
    bare_seconds, bare_tiles, warm = 0.0, 0, False
    with torch.inference_mode():
        for batch in batches:
            if not batch.plans:
                continue
            x = batch.inputs.to(predictor.device)
            if not warm:  # first batch: warm-up, not timed
                predictor.model(x)
                sync()
                warm = True
            start = time.perf_counter()
            predictor.model(x)
            sync()
            bare_seconds += time.perf_counter() - start
            bare_tiles += len(batch.plans)

    start = time.perf_counter()
    result = map_scene(scene, work / "mask.tif", model=bundle, predictor=predictor,
                       batch_size=args.batch_size, overwrite=True)
    pipeline_seconds = time.perf_counter() - start
    pipeline_tiles = result.tiles_total - result.tiles_skipped
    assert pipeline_tiles == bare_tiles, (pipeline_tiles, bare_tiles)
    pipeline_rate = pipeline_tiles / pipeline_seconds
    bare_rate = bare_tiles / bare_seconds
    emit({"bench": "bench_map", "pipeline_tiles_per_s": round(pipeline_rate, 3),
          "bare_tiles_per_s": round(bare_rate, 3), "ratio": round(pipeline_rate / bare_rate, 3),
          "tiles": pipeline_tiles, "scene_px": args.size, "model": args.model,
          "tile": card.tile_size, "overlap": card.tile_overlap, "batch_size": args.batch_size,
          "device": str(predictor.device), "pipeline_s": round(pipeline_seconds, 1),
          "bare_s": round(bare_seconds, 1), "machine": machine()})


if __name__ == "__main__":
    main()
