"""``momo-geo info``: what it reports on real scenes, and one-line errors on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.crs import CRS

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "crater_field.tif"


def _momo_geo(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (the real entry point users run)."""
    script = Path(sys.executable).with_name("momo-geo")
    command = [str(script)] if script.exists() else [
        sys.executable, "-c", "from momo_geo.cli import main; main()"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)


def test_info_reports_the_real_hirise_scene(hirise_scene):
    result = _momo_geo("info", "--json", str(hirise_scene))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["sensor"] == "HiRISE"
    assert record["body"] == "Mars"
    assert record["gsd_m"] == pytest.approx(25.0, abs=0.5)
    assert (record["width"], record["height"]) == (274, 661)
    west, south, east, north = record["bounds_lonlat"]
    assert west < east and south < north
    assert (west + east) / 2 == pytest.approx(150.5, abs=0.1)   # ~150.5°E
    assert (south + north) / 2 == pytest.approx(-0.2, abs=0.1)  # ~0.2°S
    # no nodata declared, but a black collar around the rotated strip
    assert record["nodata_fraction"] == 0.0
    assert record["frame_value"] == 0 and 0.25 < record["frame_fraction"] < 0.32

    text = _momo_geo("info", str(hirise_scene))
    assert text.returncode == 0
    assert "HiRISE" in text.stdout and "Mars" in text.stdout and "Earth" not in text.stdout
    assert "°E" in text.stdout and "°S" in text.stdout
    assert "undeclared collar of value 0" in text.stdout


def test_info_on_the_bundled_sample_scene():
    result = _momo_geo("info", "--json", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["sensor"] == "CTX"  # from INSTRUMENT_NAME "CONTEXT CAMERA (simulated)"
    assert record["body"] == "Mars"
    assert record["gsd_m"] == pytest.approx(6.0, rel=0.01)
    with rasterio.open(SAMPLE) as src:
        expected_nodata = float((src.read(1) == 0).mean())
        assert src.tags()["SYNTHETIC"] == "YES"
    assert record["nodata"] == 0
    assert record["nodata_fraction"] == pytest.approx(expected_nodata, abs=1e-3)
    west, south, east, north = record["bounds_lonlat"]
    assert west < 77.0 < east and south < 18.0 < north


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0]


def _georeferenced(path: Path) -> Path:
    data = np.random.default_rng(0).integers(1, 255, (1, 512, 512), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=1,
                       dtype="uint8", crs=CRS.from_user_input("IAU_2015:49910"),
                       transform=Affine(6.0, 0, 0, 0, -6.0, 0), tiled=True, compress="deflate",
                       blockxsize=128, blockysize=128) as dst:
        dst.write(data)
    return path


def test_bad_inputs_give_one_line_errors(tmp_path):
    missing = tmp_path / "no_such_scene.tif"
    _assert_one_line_error(_momo_geo("info", str(missing)), "no such file")

    png = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(png)
    _assert_one_line_error(_momo_geo("info", str(png)), "no georeference")

    good = _georeferenced(tmp_path / "good.tif")
    truncated = tmp_path / "truncated.tif"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    _assert_one_line_error(_momo_geo("info", str(truncated)), "truncated.tif", "corrupt")

    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"II*\x00" + b"\xff" * 100)
    _assert_one_line_error(_momo_geo("info", str(garbage)), "garbage.tif")

    folder = tmp_path / "a_folder"
    folder.mkdir()
    _assert_one_line_error(_momo_geo("info", str(folder)))


def test_good_copy_of_the_bad_case_works(tmp_path):
    # The truncated file above fails because of the truncation, not because of how it was made.
    good = _georeferenced(tmp_path / "good.tif")
    copy = tmp_path / "copy.tif"
    shutil.copy(good, copy)
    result = _momo_geo("info", "--json", str(copy))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sensor"] is None
