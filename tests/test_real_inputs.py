"""Inputs that are wrong the way real data is wrong (issue 11, items 8-10, 12, 13, 15).

Undeclared black collars and ``--nodata``; Mars products labelled with an Earth or Moon CRS
(refused, or read on Mars with ``--assume-mars``); degenerate geotransforms; model cards that
would give silently wrong masks; options and label files that are malformed; empty vector layers
and GeoJSON coordinates. Each case runs the installed ``momo-geo`` as a user does and checks the
exit code, the one stderr line and the files left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from pyproj import CRS
from rasterio.transform import from_origin

from momo_geo import crs as mcrs
from momo_geo.bundle import ModelCard, save_bundle
from momo_geo.models import create_model

MOMO_GEO = Path(sys.executable).with_name("momo-geo")
MARS_R = 3_396_190.0
CLASSES = [{"id": 0, "name": "background", "color": "#000000"},
           {"id": 1, "name": "crater", "color": "#ff8000"}]


def momo_geo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    return subprocess.run([str(MOMO_GEO), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    """The run failed with exactly one stderr line, ``Error: ...``; that line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    return lines[0]


def make_card(**changes) -> ModelCard:
    fields = dict(name="bright-test", task="segmentation",
                  architecture={"kind": "conv", "encoder": "conv", "depth": 0},
                  in_chans=1, tile_size=64, tile_overlap=8, classes=CLASSES)
    return ModelCard(**{**fields, **changes})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A tiny conv segmenter whose crater class is 'brighter than the tile's mean'."""
    card = make_card()
    model = create_model(card)
    with torch.no_grad():
        model.net[0].weight.zero_()
        model.net[0].bias.zero_()
        model.net[0].weight[1] = 10.0
    return save_bundle(tmp_path_factory.mktemp("model") / "bright.bundle", model.state_dict(),
                       card)


def write_scene(path: Path, crs: str = "IAU_2015:49910",
                transform: Affine = from_origin(0.0, 0.0, 6.0, 6.0), size: int = 96,
                image: np.ndarray | None = None, nodata: float | None = None) -> Path:
    """A checkerboard of bright and dark squares (craters are the bright ones)."""
    if image is None:
        rows, cols = np.indices((size, size))
        image = np.where(((rows // 16) + (cols // 16)) % 2 == 1, 200, 40).astype(np.uint8)
        image += np.random.default_rng(0).integers(0, 20, image.shape, dtype=np.uint8)
    profile = dict(driver="GTiff", width=image.shape[1], height=image.shape[0], count=1,
                   dtype=image.dtype, crs=crs, transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image, 1)
    return path


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------
# item 8: undeclared black collars, --nodata


def framed_image(size: int = 128) -> np.ndarray:
    """A bright textured diamond (a rotated strip) in a value-0 collar, nothing declared."""
    rows, cols = np.indices((size, size))
    inside = np.abs(rows - size / 2) + np.abs(cols - size / 2) < size * 0.45
    texture = np.where(((rows // 12) + (cols // 12)) % 2 == 1, 220, 60).astype(np.uint8)
    return np.where(inside, texture, 0).astype(np.uint8)


def test_map_says_in_one_stderr_line_that_a_frame_is_nodata_and_no_frame_maps_it(
        tmp_path, bundle):
    scene = write_scene(tmp_path / "framed.tif", image=framed_image())
    result = momo_geo("map", scene, "--model", bundle, "-q", "--no-vector")
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "frame" in line]
    assert len(notices) == 1 and "value 0" in notices[0] and "--no-frame" in notices[0]
    with rasterio.open(tmp_path / "framed_mask.tif") as mask:
        assert mask.read(1)[0, 0] == 255 and mask.read(1)[64, 64] != 255  # collar is nodata
    result = momo_geo("map", scene, "--model", bundle, "-q", "--no-vector", "--no-frame",
                      "--overwrite")
    assert result.returncode == 0, result.stderr
    assert "frame" not in result.stderr
    with rasterio.open(tmp_path / "framed_mask.tif") as mask:
        assert mask.read(1)[0, 0] != 255  # --no-frame: the collar is mapped


def test_map_nodata_option_reads_a_value_as_nodata(tmp_path, bundle):
    """``--nodata 7``: a patch of 7s inside the image (not a frame: it does not touch the
    border) becomes nodata in the mask; without the option it is mapped."""
    image = write_scene(tmp_path / "a.tif")
    with rasterio.open(image) as src:
        pixels = src.read(1)
    pixels[30:60, 30:60] = 7
    scene = write_scene(tmp_path / "patch.tif", image=pixels)
    result = momo_geo("map", scene, "--model", bundle, "-q", "--no-vector", "--nodata", "7")
    assert result.returncode == 0, result.stderr
    with rasterio.open(tmp_path / "patch_mask.tif") as mask:
        classes = mask.read(1)
    assert (classes[30:60, 30:60] == 255).all() and (classes[:30] != 255).all()
    result = momo_geo("map", scene, "--model", bundle, "-q", "--no-vector", "--overwrite")
    assert result.returncode == 0, result.stderr
    with rasterio.open(tmp_path / "patch_mask.tif") as mask:
        assert (mask.read(1)[30:60, 30:60] != 255).all()
    # a value the pixels cannot hold, or NaN: one line, before any output
    before = files(tmp_path)
    for value, message in (("300", "uint8"), ("nan", "finite")):
        line = one_error(momo_geo("map", scene, "--model", bundle, "-q", "--nodata", value,
                                  "-o", tmp_path / "other.tif"))
        assert message in line
    assert files(tmp_path) == before


def test_info_nodata_option_on_the_real_hirise_collar(hirise_scene):
    """The real HiRISE scene declares no nodata; its 28 % collar is 0: ``--nodata 0`` counts
    it as nodata (and it is then no longer reported as an undeclared frame)."""
    plain = json.loads(momo_geo("info", "--json", hirise_scene).stdout)
    result = momo_geo("info", "--json", "--nodata", "0", hirise_scene)
    assert result.returncode == 0, result.stderr
    given = json.loads(result.stdout)
    assert plain["nodata_fraction"] == 0.0 and plain["frame_fraction"] > 0.25
    assert given["nodata_given"] == 0 and 0.25 < given["nodata_fraction"] < 0.32
    assert given["frame_value"] is None and given["frame_fraction"] == 0.0
    text = momo_geo("info", "--nodata", "0", hirise_scene).stdout
    assert "from --nodata" in text and "frame" not in text


# ------------------------------------------------------------------------------------------
# item 9: Earth and Moon CRSs


@pytest.mark.parametrize(("crs", "transform", "named"), [
    ("EPSG:4326", from_origin(10.0, 50.0, 1e-4, 1e-4), "EPSG:4326"),
    ("EPSG:32633", from_origin(500000.0, 10000.0, 6.0, 6.0), "EPSG:32633"),
    ("EPSG:3857", from_origin(0.0, 0.0, 6.0, 6.0), "EPSG:3857"),
    ("IAU_2015:30100", from_origin(10.0, 50.0, 1e-4, 1e-4), "IAU_2015:30100"),
])
def test_map_refuses_a_scene_on_another_body_in_one_line(tmp_path, bundle, crs, transform,
                                                         named):
    scene = write_scene(tmp_path / "scene.tif", crs=crs, transform=transform)
    line = one_error(momo_geo("map", scene, "--model", bundle, "-q"))
    assert named in line and "--assume-mars" in line and "Mars" in line
    assert files(tmp_path) == ["scene.tif"]


def test_assume_mars_reads_degrees_on_the_mars_sphere(tmp_path, bundle):
    """A Mars image labelled EPSG:4326: mapped with --assume-mars, outputs in IAU_2015:49900,
    areas measured on Mars (not on Earth: 3.5x smaller), one notice line."""
    scene = write_scene(tmp_path / "mislabelled.tif", crs="EPSG:4326",
                        transform=from_origin(10.0, 20.0, 1e-4, 1e-4))
    out = tmp_path / "v.gpkg"
    result = momo_geo("map", scene, "--model", bundle, "-q", "--assume-mars", "--vector", out)
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stderr.splitlines() if "Mars sphere" in line]) == 1
    with rasterio.open(tmp_path / "mislabelled_mask.tif") as mask:
        assert CRS.from_wkt(mask.crs.to_wkt()).equals(CRS("IAU_2015:49900"))
        crater_pixels = int((mask.read(1) == 1).sum())
    import geopandas as gpd

    layer = gpd.read_file(out)
    assert mcrs.body_of(layer.crs) == "Mars"
    pixel = np.radians(1e-4) ** 2 * MARS_R**2 * np.cos(np.radians(20.0))
    assert layer.area_m2.sum() == pytest.approx(crater_pixels * pixel, rel=0.02)
    # the summary's mask area is on Mars too
    areas = [line.split() for line in result.stdout.splitlines() if line.strip().startswith(
        "crater")]
    assert float(areas[0][1]) * 1e6 == pytest.approx(crater_pixels * pixel, rel=0.02)


def test_assume_mars_carries_web_mercator_and_refuses_utm(tmp_path, bundle):
    mercator = write_scene(tmp_path / "merc.tif", crs="EPSG:3857")
    result = momo_geo("map", mercator, "--model", bundle, "-q", "--no-vector", "--assume-mars")
    assert result.returncode == 0, result.stderr
    with rasterio.open(tmp_path / "merc_mask.tif") as mask:
        crs = CRS.from_wkt(mask.crs.to_wkt())
    assert mcrs.body_of(crs) == "Mars" and "Mercator" in crs.coordinate_operation.method_name
    utm = write_scene(tmp_path / "utm.tif", crs="EPSG:32633",
                      transform=from_origin(500000.0, 10000.0, 6.0, 6.0))
    line = one_error(momo_geo("map", utm, "--model", bundle, "-q", "--assume-mars"))
    assert "EPSG:32633" in line and "UTM" in line
    assert not (tmp_path / "utm_mask.tif").exists()


def test_info_reports_an_earth_crs_and_what_assume_mars_reads(tmp_path):
    scene = write_scene(tmp_path / "earth.tif", crs="EPSG:4326",
                        transform=from_origin(10.0, 20.0, 1e-4, 1e-4))
    earth = momo_geo("info", scene)
    assert earth.returncode == 0, earth.stderr
    assert "Earth" in earth.stdout and "--assume-mars" in earth.stdout
    record = json.loads(momo_geo("info", "--json", "--assume-mars", scene).stdout)
    assert record["body"] == "Mars" and record["mappable"]
    assert record["crs_declared"] == "EPSG:4326 (WGS 84)"
    assert record["gsd_m"] == pytest.approx(np.radians(1e-4) * MARS_R * np.cos(np.radians(20)),
                                            rel=0.05)


# ------------------------------------------------------------------------------------------
# item 10: degenerate georeference


@pytest.mark.parametrize(("crs", "transform", "message"), [
    ("IAU_2015:49910", Affine(float("nan"), 0, 0, 0, -6, 0), "NaN"),
    ("IAU_2015:49910", Affine(6, 0, 0, 0, 0, 0), "pixel size is zero"),
    ("IAU_2015:49910", Affine(0, 6, 0, 6, 0, 0), "rotated by 90°"),
    ("IAU_2015:49900", Affine(0.1, 0, 0, 0, -2.0, -30.0), "past the pole"),
    ("IAU_2015:49910", Affine(6, 0, 0, 0, -6, -5.36e6), "past the pole"),
])
def test_degenerate_georeference_is_one_line_in_info_and_map(tmp_path, bundle, crs, transform,
                                                             message):
    scene = write_scene(tmp_path / "bad.tif", crs=crs, transform=transform, size=64)
    for args in (("info", scene), ("map", scene, "--model", bundle, "-q")):
        line = one_error(momo_geo(*args))
        assert "degenerate georeference" in line and message in line, line
        assert "GSD" not in line
    assert files(tmp_path) == ["bad.tif"]


def test_a_global_mosaic_half_a_pixel_past_the_poles_is_accepted(tmp_path):
    """Registered at pixel centres, a global mosaic's edge is half a pixel past each pole."""
    scene = write_scene(tmp_path / "global.tif", crs="IAU_2015:49900",
                        transform=from_origin(-180.25, 90.25, 0.5, 0.5),
                        image=np.ones((361, 720), np.uint8))
    result = momo_geo("info", "--json", scene)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------------
# item 12: model cards checked at load


def write_bundle(folder: Path, bundle: Path, **changes) -> Path:
    """A copy of ``bundle`` with card fields changed (the weights and hash kept)."""
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes((bundle / "weights.safetensors").read_bytes())
    card = json.loads((bundle / "card.json").read_text())
    card.update(changes)
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.mark.parametrize(("changes", "message"), [
    ({"classes": [CLASSES[0], {**CLASSES[1], "id": 2}]}, "class ids must be 0 to 1"),
    ({"classes": [CLASSES[0], {**CLASSES[1], "id": 0}]}, "class ids must be 0 to 1"),
    ({"classes": [CLASSES[0], {**CLASSES[1], "color": "orange"}]}, "#rrggbb"),
    ({"classes": [CLASSES[0], {**CLASSES[1], "color": "#ff80"}]}, "#rrggbb"),
    ({"normalization": {"mean": 0.5, "std": 0.0}}, "std above 0"),
    ({"tile_overlap": 64}, "tile_overlap"),
    ({"tile_size": 0}, "tile_size"),
    ({"gsd_range": [100.0, 1.0]}, "gsd_range"),
    ({"weights_sha256": ""}, "--trust-unhashed"),
    ({"min_confidence": {"craters": 0.8}}, "min_confidence names class 'craters'"),
    ({"min_confidence": {"crater": 80}}, "number from 0 to 1"),
])
def test_bad_model_cards_are_refused_before_any_tile_is_read(tmp_path, bundle, changes,
                                                             message):
    bad = write_bundle(tmp_path / "bad.bundle", bundle, **changes)
    scene = write_scene(tmp_path / "s.tif")
    line = one_error(momo_geo("map", scene, "--model", bad, "-q"))
    assert message in line and ("card.json" in line or "bad.bundle" in line), line
    assert files(tmp_path) == ["bad.bundle", "s.tif"]


def test_trust_unhashed_maps_with_a_card_without_hash(tmp_path, bundle):
    unhashed = write_bundle(tmp_path / "unhashed.bundle", bundle, weights_sha256="")
    scene = write_scene(tmp_path / "s.tif")
    result = momo_geo("map", scene, "--model", unhashed, "-q", "--no-vector",
                      "--trust-unhashed")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "s_mask.tif").is_file()


def test_the_shipped_bundles_pass_the_card_checks_and_carry_a_hash():
    from momo_geo.bundle import BUNDLED_DIR, BUNDLED_MODELS, check_hashed, load_card

    for name, folder in BUNDLED_MODELS.items():
        if not (BUNDLED_DIR / folder / "card.json").exists():
            continue
        card = load_card(name)
        check_hashed(card, BUNDLED_DIR / folder)
        assert len(card.weights_sha256) == 64


# ------------------------------------------------------------------------------------------
# item 13: options checked up front


@pytest.mark.parametrize(("option", "value"), [
    ("--simplify", "nan"), ("--min-area", "inf"), ("--min-area", "nan")])
def test_non_finite_options_are_refused_before_anything_is_read(tmp_path, bundle, option,
                                                                value):
    scene = write_scene(tmp_path / "s.tif")
    line = one_error(momo_geo("map", scene, "--model", bundle, option, value))
    assert "finite" in line
    assert files(tmp_path) == ["s.tif"]


@pytest.mark.parametrize(("option", "value"), [("--min-diameter", "nan"), ("--gsd", "inf")])
def test_evaluate_refuses_non_finite_numbers(tmp_path, option, value):
    line = one_error(momo_geo("evaluate", "--task", "themis-craters", "--data", tmp_path,
                              option, value))
    assert f"{option} must be a finite number" in line


# ------------------------------------------------------------------------------------------
# item 13: malformed evaluation labels name the file and the line


def crater_folder(root: Path, label: str) -> Path:
    """A THEMIS-like folder (images/*.png, labels/*.txt) with two crops, one label file."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((64, 64), 120, np.uint8)).save(root / "images" / f"{name}.png")
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "b.txt").write_text(label)
    return root


@pytest.mark.parametrize("bad", ["0 0.5 0.5 0.2\n", "0 0.5 x 0.2 0.2\n", "0 1.5 0.5 0.2 0.2\n",
                                 "0 0.5 0.5 0.2 nan\n"])
def test_malformed_yolo_label_names_file_and_line(tmp_path, bundle, bad):
    data = crater_folder(tmp_path / "mine", "0 0.3 0.3 0.1 0.1\n\n" + bad)
    line = one_error(momo_geo("evaluate", "--task", "themis-craters", "--data", data,
                              "--model", bundle, "--bootstrap", "0"))
    assert "b.txt, line 3" in line and bad.strip() in line, line


def test_malformed_voc_box_names_file_and_line(tmp_path):
    from momo_geo.datasets.craters import read_voc_boxes
    from momo_geo.errors import MomoGeoError

    xml = tmp_path / "MC11E-A.xml"
    xml.write_text("<annotation>\n<object>\n<bndbox><xmin>3</xmin><ymin>4</ymin><xmax>9</xmax>"
                   "<ymax>9</ymax></bndbox>\n</object>\n<object>\n<bndbox>\n<xmin>5</xmin>"
                   "<ymin>oops</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>\n"
                   "</annotation>\n")
    with pytest.raises(MomoGeoError, match=r"MC11E-A.xml, line 6: .*oops"):
        read_voc_boxes(xml)
    xml.write_text("<annotation><object><bndbox><xmin>3</xmin></object></annotation>")
    with pytest.raises(MomoGeoError, match=r"MC11E-A.xml: cannot read .*line 1"):
        read_voc_boxes(xml)


def test_malformed_landmark_labels_name_file_and_line(tmp_path):
    from PIL import Image

    root = tmp_path / "landmarks"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "images" / "a.jpg")
    rows = ["file,label,product_id", "a.jpg,crater,ESP_1", "a.jpg,craterr,ESP_2"]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    line = one_error(momo_geo("evaluate", "--task", "landmarks", "--data", root,
                              "--bootstrap", "0"))
    assert "labels.csv, line 3" in line and "craterr" in line
    (root / "labels.csv").write_text("file,label\na.jpg,crater\n")
    line = one_error(momo_geo("evaluate", "--task", "landmarks", "--data", root))
    assert "labels.csv, line 1" in line and "product_id" in line
