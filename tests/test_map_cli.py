"""``momo-geo map``: outputs, summary, one-line errors, several scenes, clean interruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from test_outputs import make_bundle  # the tiny 'brighter than the tile' segmenter

from momo_geo.cli import main
from momo_geo.crs import body_of

MOMO_GEO = str(Path(sys.executable).parent / "momo-geo")


def make_scene(path: Path, size: int = 200, seed: int = 0, nodata=None) -> Path:
    rows, cols = np.indices((size, size))
    image = np.where(((rows // 20) + (cols // 20)) % 2 == 1, 200, 20).astype(np.uint8)
    image += np.random.default_rng(seed).integers(0, 30, image.shape, dtype=np.uint8)
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8",
                   crs="IAU_2015:49910", transform=from_origin(0.0, 0.0, 6.0, 6.0),
                   tiled=True, blockxsize=256, blockysize=256)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image, 1)
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("models") / "bright.bundle")


def test_map_writes_mask_and_vectors_with_default_names(tmp_path, bundle, capsys):
    scene = make_scene(tmp_path / "scene.tif")
    code, out, err = run_cli(["map", str(scene), "--model", str(bundle), "-q"], capsys)
    assert code == 0, err
    mask, vector = tmp_path / "scene_mask.tif", tmp_path / "scene_features.gpkg"
    assert mask.is_file() and vector.is_file()
    # the summary: outputs, tiles, per-class features and areas
    assert "scene_mask.tif" in out and "tiles/s" in out
    crater_line = next(line for line in out.splitlines() if line.strip().startswith("crater"))
    features = gpd.read_file(vector)
    assert str(len(features)) in crater_line.split()
    with rasterio.open(scene) as src, rasterio.open(mask) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform


def test_the_default_vector_layer_goes_beside_the_mask_not_into_the_scenes_folder(
        tmp_path, bundle, capsys):
    archive, out = tmp_path / "archive", tmp_path / "out"
    archive.mkdir()
    out.mkdir()
    scene = make_scene(archive / "scene.tif")
    code, _, err = run_cli(["map", str(scene), "--model", str(bundle), "-o",
                            str(out / "m.tif"), "-q"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in archive.iterdir()) == ["scene.tif"]
    assert sorted(p.name for p in out.iterdir()) == ["m.tif", "scene_features.gpkg"]


def test_map_options_shapefile_probabilities_circles(tmp_path, bundle, capsys):
    scene = make_scene(tmp_path / "s.tif")
    code, _, err = run_cli(["map", str(scene), "--model", str(bundle), "-o",
                            str(tmp_path / "m.tif"), "--vector", str(tmp_path / "v.shp"),
                            "--probabilities", str(tmp_path / "p.tif"), "--tile", "48",
                            "--overlap", "6", "--batch-size", "3", "--device", "cpu",
                            "--precision", "bf16", "--blend", "smooth", "--min-area",
                            "5000", "--simplify", "3", "--circles", "-q"], capsys)
    assert code == 0, err
    frame = gpd.read_file(tmp_path / "v.shp")
    assert body_of(frame.crs) == "Mars"
    assert (frame.area_m2 >= 5000).all() and "diameter_m" in frame.columns
    with rasterio.open(tmp_path / "p.tif") as prob:
        assert prob.count == 2 and prob.dtypes[0] == "float32"


def test_one_line_errors(tmp_path, bundle, capsys):
    scene = make_scene(tmp_path / "s.tif")
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=10, height=10, count=1,
                       dtype="uint8") as dst:
        dst.write(np.zeros((1, 10, 10), np.uint8))
    capsys.readouterr()
    cases = [
        (["map", str(tmp_path / "nope.tif"), "--model", str(bundle)], "no such file"),
        (["map", str(plain), "--model", str(bundle)], "no georeference"),
        (["map", str(scene), "--model", str(tmp_path / "nothing.bundle")], "no such model"),
        (["map", str(scene), str(scene), "--model", str(bundle), "-o", "x.tif"], "one scene"),
        (["map", str(scene), "--model", str(bundle), "--vector", "v.kml"], "vector format"),
        (["map", str(scene), "--model", str(bundle), "--precision", "fp16",
          "--device", "cpu"], "fp16 needs a GPU"),
    ]
    from momo_geo.bundle import BUNDLED_DIR

    if not (BUNDLED_DIR / "crater-seg.bundle" / "card.json").exists():
        cases.append((["map", str(scene)], "not installed"))
    if not (BUNDLED_DIR / "landmarks.bundle" / "card.json").exists():
        cases.append((["map", str(scene), "--task", "landmarks"], "not installed"))
    for args, message in cases:
        code, out, err = run_cli(args, capsys)
        assert code == 1, args
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.tif", "s.tif"]


def test_earth_crs_scene_is_refused_in_one_line_unless_assume_mars(tmp_path, bundle, capsys):
    """A Mars model on an Earth raster (World Equidistant Cylindrical here): refused in one line
    naming the CRS; with --assume-mars mapped on the Mars sphere, one notice on stderr."""
    scene = make_scene(tmp_path / "eqc.v2.tif")
    with rasterio.open(scene, "r+") as dst:
        dst.crs = "EPSG:4087"
    code, out, err = run_cli(["map", str(scene), "--model", str(bundle), "-q", "--no-vector"],
                             capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "EPSG:4087" in lines[0], err
    assert "Earth CRS" in lines[0] and "--assume-mars" in lines[0]
    assert not (tmp_path / "eqc.v2_mask.tif").exists()
    code, out, err = run_cli(["map", str(scene), "--model", str(bundle), "-q", "--no-vector",
                              "--assume-mars"], capsys)
    assert code == 0, err
    notices = [line for line in err.splitlines() if "EPSG:4087" in line]
    assert len(notices) == 1 and "Mars sphere" in notices[0]
    assert (tmp_path / "eqc.v2_mask.tif").is_file()  # only the last suffix is replaced
    with rasterio.open(tmp_path / "eqc.v2_mask.tif") as mask:
        assert body_of(mask.crs) == "Mars"
    mars = make_scene(tmp_path / "mars.tif")
    code, _, err = run_cli(["map", str(mars), "--model", str(bundle), "-q", "--no-vector"],
                           capsys)
    assert code == 0 and "Earth" not in err


def test_existing_output_needs_overwrite(tmp_path, bundle, capsys):
    scene = make_scene(tmp_path / "s.tif")
    (tmp_path / "s_features.gpkg").write_text("precious")
    code, _, err = run_cli(["map", str(scene), "--model", str(bundle), "-q"], capsys)
    assert code == 1 and "exists; pass --overwrite" in err
    assert (tmp_path / "s_features.gpkg").read_text() == "precious"
    assert not (tmp_path / "s_mask.tif").exists()
    code, _, err = run_cli(["map", str(scene), "--model", str(bundle), "--overwrite", "-q"],
                           capsys)
    assert code == 0, err
    assert len(gpd.read_file(tmp_path / "s_features.gpkg")) > 0


def test_several_scenes_serially_and_in_parallel(tmp_path, bundle, capsys):
    scenes = [str(make_scene(tmp_path / f"s{i}.tif", size=120, seed=i)) for i in range(2)]
    code, out, err = run_cli(["map", *scenes, "--model", str(bundle), "--no-vector", "-q"],
                             capsys)
    assert code == 0, err
    assert out.count("tiles/s") == 2
    first = []
    for i in range(2):
        with rasterio.open(tmp_path / f"s{i}_mask.tif") as mask:
            first.append(mask.read(1))
    code, out, err = run_cli(["map", *scenes, "--model", str(bundle), "--no-vector",
                              "--workers", "2", "--overwrite"], capsys)
    assert code == 0, err
    assert out.count("tiles/s") == 2
    for i in range(2):
        with rasterio.open(tmp_path / f"s{i}_mask.tif") as mask:
            again = mask.read(1)
        assert np.array_equal(again, first[i]) and (again != 255).all()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_leaves_no_output(tmp_path, bundle, sig):
    scene = make_scene(tmp_path / "big.tif", size=1500)
    proc = subprocess.Popen(
        [MOMO_GEO, "map", str(scene), "--model", str(bundle), "--tile", "16", "--overlap", "4",
         "--batch-size", "1", "--probabilities", str(tmp_path / "p.tif")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".") for p in
                                              tmp_path.iterdir()):
        time.sleep(0.2)
    time.sleep(1.0)  # mapping is under way: staging files are being written
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    names = {p.name for p in tmp_path.iterdir()}
    assert not names & {"big_mask.tif", "big_features.gpkg", "p.tif"}
    if sig == signal.SIGKILL:
        return  # nothing can clean up after kill -9, but nothing has the user's names
    assert proc.returncode == 128 + sig, err  # 130 Ctrl-C, 143 SIGTERM: the shell convention
    assert "Interrupted" in err and "Traceback" not in err
    assert names == {"big.tif"}  # staging folders removed too


def test_real_hirise_scene_to_gpkg_and_shapefile(tmp_path, bundle, hirise_scene, capsys):
    for suffix in (".gpkg", ".shp"):
        out = tmp_path / f"hirise{suffix}"
        code, _, err = run_cli(["map", str(hirise_scene), "--model", str(bundle), "-o",
                                str(tmp_path / f"mask{suffix}.tif"), "--vector", str(out),
                                "--min-area", "1000", "-q"], capsys)
        assert code == 0, err
        frame = gpd.read_file(out)
        assert body_of(frame.crs) == "Mars"
        assert {"class_id", "class_name", "area_m2", "mean_conf"} <= set(frame.columns)
        assert len(frame) > 0 and (frame.class_name == "crater").all()
        assert frame.mean_conf.between(0.5, 1.0).all()
        with rasterio.open(hirise_scene) as src, \
                rasterio.open(tmp_path / f"mask{suffix}.tif") as dst:
            assert dst.crs == src.crs and dst.transform == src.transform
