"""Synthetic crater fields: truth consistency, physics, georeference, streaming, bundled scene."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from momo_geo.cli import main
from momo_geo.errors import MomoGeoError
from momo_geo.io import open_scene
from momo_geo.sensors import CTX
from momo_geo.synthetic import (
    CRATER_COLUMNS,
    render_crater_field,
    write_crater_field,
    write_crater_field_streaming,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "sample_data"


@pytest.fixture(scope="module")
def field():
    return render_crater_field((320, 288), gsd=6.0, seed=7, nodata_frame=10)


def test_arrays_and_table(field):
    assert field.image.shape == field.truth.shape == (320, 288)
    assert field.image.dtype == field.truth.dtype == np.uint8
    assert list(field.craters.columns) == CRATER_COLUMNS
    assert set(np.unique(field.truth)) <= {0, 1, 255}
    nodata = field.image == 0
    assert np.array_equal(nodata, field.truth == 255)   # truth says nodata exactly there
    assert nodata[:10].all() and nodata[:, -10:].all() and not nodata[10:-10, 10:-10].any()
    crater_fraction = (field.truth == 1).sum() / (field.truth != 255).sum()
    assert 0.02 < crater_fraction < 0.3


def test_every_crater_centre_is_inside_a_truth_blob(field):
    table = field.craters
    assert len(table) > 10
    rows = np.floor(table["row"]).astype(int)
    cols = np.floor(table["col"]).astype(int)
    values = field.truth[rows, cols]
    assert (values[table["visible"]] == 1).all()
    assert (values[~table["visible"]] == 255).all()
    # Pixel and map coordinates of the centres agree with the transform.
    x, y = field.transform @ (table["col"].to_numpy(), table["row"].to_numpy())
    assert np.allclose(x, table["x_m"], atol=1e-3) and np.allclose(y, table["y_m"], atol=1e-3)


def test_deterministic_by_seed():
    a = render_crater_field(96, seed=3)
    b = render_crater_field(96, seed=3)
    c = render_crater_field(96, seed=4)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.truth, b.truth)
    assert a.craters.equals(b.craters)
    assert not np.array_equal(a.image, c.image)


def _wall_contrast(field, min_radius_px: float = 8.0) -> float:
    """Mean DN of the inner half of each big crater facing the sun minus the half facing away."""
    azimuth = np.radians(float(field.tags["SUN_AZIMUTH"]))
    sun = np.array([np.sin(azimuth), np.cos(azimuth)])  # (east, north)
    differences = []
    for _, crater in field.craters[field.craters["visible"]].iterrows():
        radius = crater["diameter_m"] / field.gsd / 2
        if radius < min_radius_px:
            continue
        height, width = field.image.shape
        r0, c0 = max(int(crater["row"] - radius), 0), max(int(crater["col"] - radius), 0)
        r1 = min(int(crater["row"] + radius) + 2, height)
        c1 = min(int(crater["col"] + radius) + 2, width)
        rr, cc = np.mgrid[r0:r1, c0:c1]
        east, north = cc + 0.5 - crater["col"], -(rr + 0.5 - crater["row"])
        inside = np.hypot(east, north) < 0.8 * radius
        towards_sun = (east * sun[0] + north * sun[1]) > 0
        dn = field.image[rr, cc].astype(float)
        differences.append(dn[inside & towards_sun].mean() - dn[inside & ~towards_sun].mean())
    assert len(differences) >= 5
    return float(np.mean(differences))


def test_lambertian_shading_follows_the_sun():
    # Inside a bowl the wall nearer the sun faces away from it (shadowed), the far wall is lit:
    # the sunward half of the floor is darker. Turning the sun round flips that.
    from_nw = render_crater_field(384, seed=11, sun_azimuth=315.0, sun_elevation=30.0)
    from_se = render_crater_field(384, seed=11, sun_azimuth=135.0, sun_elevation=30.0)
    assert _wall_contrast(from_nw) < -10
    assert _wall_contrast(from_se) < -10
    # Same craters, mirrored lighting: the pixel images differ.
    assert from_nw.craters.equals(from_se.craters)
    assert np.abs(from_nw.image.astype(int) - from_se.image.astype(int)).mean() > 3


def test_size_frequency_and_shape_parameters():
    d_min, d_max = 48.0, 360.0
    field = render_crater_field(1024, gsd=6.0, seed=1, min_diameter_m=d_min,
                                max_diameter_m=d_max)
    d = field.craters["diameter_m"].to_numpy()
    assert d.min() >= d_min and d.max() <= d_max
    # Cumulative slope -2: the share of craters larger than 2 Dmin is (1/4 - r) / (1 - r).
    r = (d_min / d_max) ** 2
    expected = (0.25 - r) / (1 - r)
    assert (d > 2 * d_min).mean() == pytest.approx(expected, abs=0.06)
    assert np.median(field.craters["depth"] / d) == pytest.approx(0.2, abs=0.02)
    assert (field.craters["rim_height"] > 0).all()


def test_georeference_gives_the_gsd_on_the_ground(tmp_path):
    for crs, lonlat in (("IAU_2015:49910", (77.0, 18.0)), ("IAU_2015:49910", (-30.0, 60.0)),
                        ("IAU_2015:49930", (45.0, 85.0))):
        field = render_crater_field(64, gsd=6.0, seed=0, crs=crs, center_lonlat=lonlat)
        paths = write_crater_field(field, tmp_path / f"s_{crs[-5:]}_{lonlat[1]:g}.tif")
        scene = open_scene(paths["image"])
        assert scene.body == "Mars"
        assert scene.gsd_xy[0] == pytest.approx(6.0, rel=0.01)
        assert scene.gsd_xy[1] == pytest.approx(6.0, rel=0.01)
        west, south, east, north = scene.bounds_lonlat()
        assert (south + north) / 2 == pytest.approx(lonlat[1], abs=0.01)
        if lonlat[1] < 80:
            assert (west + east) / 2 == pytest.approx(lonlat[0], abs=0.01)


def test_refuses_earth_and_bad_parameters():
    with pytest.raises(MomoGeoError, match="not a Mars CRS"):
        render_crater_field(64, crs="EPSG:32633")
    with pytest.raises(MomoGeoError, match="min diameter"):
        render_crater_field(64, min_diameter_m=100, max_diameter_m=50)
    with pytest.raises(MomoGeoError, match="too small"):
        render_crater_field(8)


def test_written_files_and_atomic_overwrite(tmp_path, field):
    paths = write_crater_field(field, tmp_path / "scene.tif")
    assert {p.name for p in tmp_path.iterdir()} == {
        "scene.tif", "scene_truth.tif", "scene_craters.csv"}
    with rasterio.open(paths["image"]) as src:
        assert src.nodata == 0 and src.profile["tiled"]
        assert src.compression.value.lower() == "deflate"
        tags = src.tags()
        assert tags["SYNTHETIC"] == "YES" and tags["SUN_AZIMUTH"] == "315"
        assert tags["GSD_M"] == "6" and "simulated" in tags["INSTRUMENT_NAME"].lower()
        assert np.array_equal(src.read(1), field.image)
    with rasterio.open(paths["truth"]) as src:
        assert np.array_equal(src.read(1), field.truth) and src.nodata == 255
    assert open_scene(paths["image"]).sensor is CTX
    table = pd.read_csv(paths["craters"])
    assert np.allclose(table["diameter_m"], field.craters["diameter_m"], rtol=1e-6)
    with pytest.raises(MomoGeoError, match="exists"):
        write_crater_field(field, tmp_path / "scene.tif")
    write_crater_field(field, tmp_path / "scene.tif", overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_streaming_equals_in_memory_and_is_seamless(tmp_path):
    params = {"sun_azimuth": 250.0, "sun_elevation": 20.0, "nodata_frame": 5}
    whole = render_crater_field((200, 170), gsd=5.0, seed=9, **params)
    paths = write_crater_field_streaming(tmp_path / "s.tif", size=(200, 170), gsd=5.0, seed=9,
                                         block=64, **params)
    with rasterio.open(paths["image"]) as src:
        assert np.array_equal(src.read(1), whole.image)
    with rasterio.open(paths["truth"]) as src:
        assert np.array_equal(src.read(1), whole.truth)
    assert len(pd.read_csv(paths["craters"])) == len(whole.craters)


def _readme_command() -> list[str]:
    text = (SAMPLE_DIR / "README.md").read_text()
    line = next(li for li in text.splitlines() if li.startswith("momo-geo sample-scene"))
    return shlex.split(line)[1:]


def test_bundled_scene_is_small_and_reproducible(tmp_path, capsys):
    files = [SAMPLE_DIR / n for n in ("crater_field.tif", "crater_field_truth.tif",
                                      "crater_field_craters.csv")]
    assert all(f.is_file() for f in files)
    assert sum(f.stat().st_size for f in files) <= 2_000_000
    args = _readme_command()
    out = tmp_path / "crater_field.tif"
    args[args.index("sample_data/crater_field.tif")] = str(out)
    main(args)
    assert re.search(r"\d+ craters", capsys.readouterr().out)
    for name in ("crater_field.tif", "crater_field_truth.tif"):
        with rasterio.open(SAMPLE_DIR / name) as a, rasterio.open(tmp_path / name) as b:
            assert np.array_equal(a.read(), b.read()), name
            assert a.crs == b.crs and a.transform.almost_equals(b.transform)
    assert pd.read_csv(files[2]).equals(pd.read_csv(tmp_path / "crater_field_craters.csv"))
    with rasterio.open(files[0]) as src:
        assert src.width == src.height == 1024
        assert (src.read(1) == 0).any()  # nodata frame present


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample-scene", str(tmp_path / "x.tif"), "--crs", "EPSG:4326", "--size", "64"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error:") and "Mars" in err[0]
    assert not list(tmp_path.iterdir())
