"""Shared pieces of the benchmarks: scenes, models, peak memory, one JSON line out.

Benchmarks are scripts, not tests: they take minutes and print one JSON line each.
"""

from __future__ import annotations

import json
import platform
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from momo_geo.bundle import Bundle, ModelCard  # noqa: E402

CLASSES = [{"id": 0, "name": "background", "color": "#000000"},
           {"id": 1, "name": "crater", "color": "#ff8000"}]
MODELS = {
    # a ViT-tiny encoder with the crater segmentation decoder (MOMO's architecture, tiny size)
    "vit": dict(architecture={"kind": "vit_seg", "encoder": "vit_tiny_patch16"},
                input_size=224, tile_size=224, tile_overlap=32, in_chans=3),
    # a wider convolutional segmenter (same-padded, any tile size)
    "conv": dict(architecture={"kind": "conv", "encoder": "conv", "width": 32, "depth": 4},
                 tile_size=224, tile_overlap=32, in_chans=3),
    # the small reference segmenter: cheap enough for 16k x 16k scenes on a laptop CPU
    "conv-small": dict(architecture={"kind": "conv", "encoder": "conv", "width": 8,
                                     "depth": 2},
                       tile_size=224, tile_overlap=32, in_chans=3),
}


def bench_bundle(kind: str, seed: int = 0) -> Bundle:
    """A randomly initialised bundle of the given size (throughput does not need training)."""
    import torch

    from momo_geo.models import create_model

    card = ModelCard(name=f"bench-{kind}", task="segmentation", classes=CLASSES,
                     **MODELS[kind])
    torch.manual_seed(seed)
    return Bundle(card=card, state_dict=create_model(card).state_dict())


def make_scene(path: Path, size: int, seed: int = 0) -> Path:
    """A synthetic CTX-like crater field, written block by block (bounded memory)."""
    if path.exists():
        return path
    try:
        from momo_geo.synthetic import write_crater_field_streaming
    except ImportError:
        return _write_noise_scene(path, size, seed)
    write_crater_field_streaming(path, size=size, gsd=6.0, seed=seed)
    return path


def _write_noise_scene(path: Path, size: int, seed: int) -> Path:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="uint8", crs="IAU_2015:49910", tiled=True, compress="deflate",
                       transform=from_origin(0.0, 0.0, 6.0, 6.0)) as dst:
        for row in range(0, size, 1024):
            h = min(1024, size - row)
            dst.write(rng.integers(0, 255, (1, h, size), dtype=np.uint8),
                      window=Window(0, row, size, h))
    return path


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    import os

    return f"{cpu}, {os.cpu_count()} CPU threads, {gpu}, torch {torch.__version__}"


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)
