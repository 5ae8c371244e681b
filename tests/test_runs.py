"""Runs that can be stopped, batches that finish, clean output streams (issue 11, items 5, 6, 7
and 14).

Real ``momo-geo map`` processes with real signals, and the engine's progress and cancel
callbacks on a scene with a long all-nodata stretch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from test_outputs import make_bundle, make_scene

from momo_geo.cli.runs import worker_cap
from momo_geo.errors import MomoGeoError
from momo_geo.inference import map_scene

MOMO_GEO = str(Path(sys.executable).parent / "momo-geo")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("models") / "bright.bundle")


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# item 5: signals with --workers, the cap


def test_sigterm_stops_workers_promptly_and_says_which_scenes_were_completed(tmp_path, bundle):
    small = make_scene(tmp_path / "small.tif", size=64)
    big = [make_scene(tmp_path / f"big{i}.tif", size=1500, seed=i) for i in range(2)]
    proc = subprocess.Popen(
        [MOMO_GEO, "map", str(small), *map(str, big), "--model", str(bundle), "--tile", "16",
         "--overlap", "4", "--batch-size", "1", "--no-vector", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    # small.tif is done first; the worker then takes a big scene (the other worker has one).
    wait_for(lambda: (tmp_path / "small_mask.tif").exists() or proc.poll() is not None)
    time.sleep(2.0)
    assert proc.poll() is None, proc.communicate()
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert time.time() - sent < 30, "the workers were not stopped promptly"
    assert proc.returncode == 143, err
    assert err.splitlines() == ["Interrupted: 1 of 3 scenes completed (small.tif); no partial "
                                "output was left behind."], err
    assert names(tmp_path) == {"small.tif", "big0.tif", "big1.tif", "small_mask.tif"}
    assert "Traceback" not in out + err


def test_sighup_is_a_stop_too_and_a_second_signal_prints_no_traceback(tmp_path, bundle):
    scene = make_scene(tmp_path / "big.tif", size=1500)
    proc = subprocess.Popen(
        [MOMO_GEO, "map", str(scene), "--model", str(bundle), "--tile", "16", "--overlap", "4",
         "--batch-size", "1", "--no-vector"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(lambda: any(n.startswith(".momo-geo-partial") for n in names(tmp_path)))
    time.sleep(0.5)
    proc.send_signal(signal.SIGHUP)
    for _ in range(3):
        time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 129, err
    assert err.splitlines() == ["Interrupted: no scene was completed; no partial output was "
                                "left behind."], err
    assert names(tmp_path) == {"big.tif"}


def test_workers_are_capped_by_cores_and_memory():
    cores = os.cpu_count() or 1
    count, note = worker_cap(64, 100)
    assert 1 <= count <= cores
    assert note is not None and f"{cores} CPU cores" in note
    assert worker_cap(64, 1) == (1, None)  # one scene: one worker, nothing to say
    assert worker_cap(1, 100) == (1, None)


# --------------------------------------------------------------------------------------------
# item 6: one bad scene does not stop a batch


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_bad_scene_does_not_stop_the_batch(tmp_path, bundle, workers):
    good = [make_scene(tmp_path / f"good{i}.tif", size=96, seed=i) for i in range(2)]
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    proc = subprocess.run(
        [MOMO_GEO, "map", str(good[0]), str(bad), str(good[1]), "--model", str(bundle),
         "--no-vector", "-q", "--workers", workers],
        capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {bad}: not a readable raster"), lines
    assert names(tmp_path) == {"good0.tif", "good1.tif", "bad.tif", "good0_mask.tif",
                               "good1_mask.tif"}
    assert proc.stdout.count("tiles/s") == 2
    assert "Mapped 2 of 3 scenes; failed: bad.tif" in proc.stdout


def framed_scene(path: Path, seed: int) -> Path:
    """A scene inside an undeclared 0-valued frame 16 px wide (map says so in one line)."""
    make_scene(path, size=96, seed=seed)
    with rasterio.open(path, "r+") as dst:
        image = dst.read(1)
        image[:16], image[-16:], image[:, :16], image[:, -16:] = 0, 0, 0, 0
        dst.write(image, 1)
    return path


@pytest.mark.parametrize("workers", ["1", "2"])
def test_scene_notices_go_to_stderr_with_or_without_workers(tmp_path, bundle, workers):
    scenes = [framed_scene(tmp_path / f"framed{i}.tif", seed=i) for i in range(2)]
    proc = subprocess.run(
        [MOMO_GEO, "map", *map(str, scenes), "--model", str(bundle), "--no-vector", "-q",
         "--workers", workers], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    notices = [line for line in proc.stderr.splitlines() if "treated as nodata" in line]
    assert sorted(line.split(":")[0] for line in notices) == ["framed0.tif", "framed1.tif"]
    assert "treated as nodata" not in proc.stdout and proc.stdout.count("tiles/s") == 2


# --------------------------------------------------------------------------------------------
# item 7: progress and cancel per planned tile


def nodata_stretch_scene(path: Path) -> Path:
    """A scene whose top nine tenths are nodata (a long all-nodata stretch), then image."""
    image = np.full((640, 64), 0, np.uint8)
    image[576:] = np.random.default_rng(0).integers(1, 255, (64, 64), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=640, count=1, dtype="uint8",
                       nodata=0, crs="IAU_2015:49910",
                       transform=from_origin(0.0, 0.0, 6.0, 6.0)) as dst:
        dst.write(image, 1)
    return path


def test_progress_and_cancel_are_per_planned_tile(tmp_path, bundle):
    scene = nodata_stretch_scene(tmp_path / "stretch.tif")
    seen: list[tuple[int, int]] = []
    map_scene(scene, tmp_path / "m.tif", model=bundle, tile=16, overlap=0, batch_size=64,
              progress=lambda done, total: seen.append((done, total)))
    total = seen[0][1]
    assert total == 40 * 4
    assert [done for done, _ in seen] == list(range(total + 1))
    # Cancel asked for after 20 tiles, in the all-nodata stretch: the run stops at once.
    polls: list[int] = []
    done_now = [0]

    def cancel() -> bool:
        polls.append(done_now[0])
        return done_now[0] >= 20

    def progress(done: int, total: int) -> None:
        done_now[0] = done

    with pytest.raises(MomoGeoError, match="cancelled"):
        map_scene(scene, tmp_path / "c.tif", model=bundle, tile=16, overlap=0, batch_size=64,
                  progress=progress, cancel=cancel)
    assert polls[-1] == 20
    assert names(tmp_path) == {"stretch.tif", "m.tif"}


# --------------------------------------------------------------------------------------------
# item 14: one line and exit 1 for every user error; no raw library warnings unless -v


@pytest.mark.parametrize("args", [["map", "--tilee", "5", "x.tif"], ["map"],
                                  ["map", "x.tif", "--tile", "big"], ["nonsense"]])
def test_usage_errors_are_one_line_and_exit_1(tmp_path, args):
    proc = subprocess.run([MOMO_GEO, *args], capture_output=True, text=True, env=ENV,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr


def test_library_warnings_only_with_verbose(tmp_path, bundle):
    scene = make_scene(tmp_path / "s.tif", size=96)
    base = [MOMO_GEO, "map", str(scene), "--model", str(bundle), "--circles", "-q"]
    quiet = subprocess.run([*base, "--vector", str(tmp_path / "a.shp")], capture_output=True,
                           text=True, env=ENV, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    loud = subprocess.run([*base, "--vector", str(tmp_path / "b.shp"), "-o",
                           str(tmp_path / "b.tif"), "-v"], capture_output=True, text=True,
                          env=ENV, timeout=300)
    assert loud.returncode == 0, loud.stderr
    assert "Normalized/laundered field name" in loud.stderr  # pyogrio, on every .shp
