"""bench_archive: scenes per minute of ``momo-geo map-archive`` (1 and 2 Dask worker processes)
against the sequential ``momo-geo map A B C …`` on the same scenes.

Every arm is the console command in a fresh process, end to end as a user runs it: interpreter
and torch start-up, model loading, mapping with vectors, and for the archive the local cluster,
the manifest and the merged catalogue. Scenes are synthetic CTX-like crater fields (6 m/px, one
per seed, placed apart on Mars so footprints do not overlap), mapped with the bundled crater
model on the CPU. ``overhead_per_scene_s`` is (archive with 1 worker - sequential) / scenes: what
the cluster costs per scene, start-up amortised, when it adds no parallelism; the
``median_scene_s_*`` are the median time one scene takes inside ``map`` (its summary) and inside
a worker (the manifest): the cost of a task itself. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit, machine

MOMO_GEO = str(Path(sys.executable).parent / "momo-geo")


def make_scenes(folder: Path, count: int, size: int) -> list[Path]:
    from momo_geo.synthetic import write_crater_field_streaming

    folder.mkdir(parents=True, exist_ok=True)
    scenes = []
    for i in range(count):  # CTX-like product names; 3 degrees of longitude apart
        path = folder / f"B{i:02d}_0200{i:02d}_1800_XN_18N{77 + 3 * i:03d}E.tif"
        if not path.exists():
            write_crater_field_streaming(path, size=size, gsd=6.0, seed=100 + i,
                                         center_lonlat=(77.0 + 3 * i, 18.0))
            for extra in (path.with_name(path.stem + "_truth.tif"),
                          path.with_name(path.stem + "_craters.csv")):
                extra.unlink(missing_ok=True)
        scenes.append(path)
    return scenes


def timed(args: list[str], threads: int) -> tuple[float, str]:
    """Wall seconds and stdout of one command in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed: {proc.stderr[-2000:]}")
    return seconds, proc.stdout


def sequential(scenes: list[Path], work: Path, threads: int) -> tuple[float, float]:
    """``momo-geo map`` on copies of the scenes (its outputs go beside each scene): wall seconds
    and the median of the per-scene times its summaries report (model already loaded)."""
    folder = work / "sequential"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    copies = [Path(shutil.copy(scene, folder / scene.name)) for scene in scenes]
    seconds, out = timed([MOMO_GEO, "map", *map(str, copies), "-q", "--device", "cpu"], threads)
    per_scene = [float(m) for m in re.findall(r"; total ([0-9.]+) s", out)]
    return seconds, statistics.median(per_scene)


def archive(scenes: list[Path], work: Path, workers: int, threads: int) -> tuple[float, float]:
    """Wall seconds of ``momo-geo map-archive`` and the median seconds a worker spent in a
    scene (the manifest's; a worker's first scene also loads the model)."""
    out = work / f"archive-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    seconds, _ = timed([MOMO_GEO, "map-archive", *map(str, scenes), "--out", str(out), "-q",
                        "--workers", str(workers), "--threads-per-worker", str(threads),
                        "--device", "cpu"], threads)
    with sqlite3.connect(out / "manifest.sqlite") as db:
        tasks = [row[0] for row in db.execute("SELECT seconds FROM scenes WHERE status = 'done'")]
    return seconds, statistics.median(tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per process (OMP_NUM_THREADS, --threads-per-worker)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="momo-bench-archive-"))
    scenes = make_scenes(work / "scenes", args.scenes, args.size)
    n = len(scenes)
    load_before = os.getloadavg()[0]
    seq, seq_scene = sequential(scenes, work, args.threads)
    one, task_one = archive(scenes, work, 1, args.threads)
    two, task_two = archive(scenes, work, 2, args.threads)

    def per_min(seconds: float) -> float:
        return round(60.0 * n / seconds, 2)

    emit({"bench": "bench_archive", "scenes": n, "scene_px": args.size,
          "model": "default (bundled crater U-Net)", "threads_per_process": args.threads,
          "sequential_scenes_per_min": per_min(seq), "archive_1_scenes_per_min": per_min(one),
          "archive_2_scenes_per_min": per_min(two),
          "ratio_1_vs_sequential": round(seq / one, 3),
          "ratio_2_vs_sequential": round(seq / two, 3), "ratio_2_vs_1": round(one / two, 3),
          "overhead_per_scene_s": round((one - seq) / n, 2),
          "sequential_s": round(seq, 1), "archive_1_s": round(one, 1),
          "archive_2_s": round(two, 1), "median_scene_s_sequential": round(seq_scene, 2),
          "median_scene_s_archive_1": round(task_one, 2),
          "median_scene_s_archive_2": round(task_two, 2), "cpu_threads": os.cpu_count(),
          "load_average_1min_before_after": [round(load_before, 2),
                                             round(os.getloadavg()[0], 2)],
          "machine": machine()})


if __name__ == "__main__":
    main()
