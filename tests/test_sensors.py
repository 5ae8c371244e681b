"""Sensors: product-ID parsing, GSD ranges, normalisation, detection from names and metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from momo_geo.errors import MomoGeoError
from momo_geo.io import open_scene
from momo_geo.sensors import (
    ALL_SENSORS_NORMALIZATION,
    CTX,
    HIRISE,
    SENSORS,
    THEMIS,
    detect_sensor,
    get_sensor,
    parse_product_id,
)


@pytest.mark.parametrize(
    ("text", "sensor", "product_id", "fields", "observation"),
    [
        ("ESP_037156_1800_RED", "hirise", "ESP_037156_1800_RED",
         {"phase": "ESP", "orbit": "037156", "target": "1800", "product": "RED"},
         "ESP_037156_1800"),
        ("ESP_037156_1800_RED.byte.tif", "hirise", "ESP_037156_1800_RED",
         {"orbit": "037156"}, "ESP_037156_1800"),
        ("psp_001234_1750_color.jp2", "hirise", "PSP_001234_1750_COLOR",
         {"phase": "PSP", "product": "COLOR"}, "PSP_001234_1750"),
        ("B01_009910_1810_XI_01N077W", "ctx", "B01_009910_1810_XI_01N077W",
         {"phase": "B01", "orbit": "009910", "target": "1810", "mode": "XI", "lat": "01N",
          "lon": "077W"}, "009910_1810"),
        ("/archive/ctx/P02_001916_2221_XI_42N027W.cal.tif", "ctx",
         "P02_001916_2221_XI_42N027W", {"lat": "42N", "lon": "027W"}, "001916_2221"),
        ("I01234002", "themis", "I01234002", {"band": "I", "orbit": "01234", "seq": "002"},
         "I01234002"),
        ("V12345003_RI.tif", "themis", "V12345003", {"band": "V"}, "V12345003"),
    ],
)
def test_parse_product_ids(text, sensor, product_id, fields, observation):
    parsed = parse_product_id(text)
    assert parsed is not None
    assert parsed.sensor.name == sensor
    assert parsed.product_id == product_id
    for key, value in fields.items():
        assert parsed.fields[key] == value
    assert parsed.observation == observation


@pytest.mark.parametrize("text", [
    "crater_field.tif", "MC11E-A.png", "crater12.jpg",
    "I012340021.tif",            # ten digits: not a THEMIS ID
    "XESP_037156_1800_RED.tif",  # glued to another word
    "ESP_37156_1800_RED.tif",    # five-digit orbit
    "ESP_037156_18001.tif",      # five-digit target: not a HiRISE ID
    "DTEEC_017825_1760_018458_1760_A01.tif",  # a HiRISE DTM name is not an image product ID
])
def test_unknown_names_parse_to_none(text):
    assert parse_product_id(text) is None
    assert detect_sensor(text) is None


def test_ctx_id_is_not_taken_for_hirise():
    # A CTX ID contains an "_orbit_target" run like HiRISE's; it must still be CTX.
    assert parse_product_id("G12_022945_1861_XN_06N077W").sensor is CTX


def test_gsd_ranges_and_normalisation():
    assert set(SENSORS) == {"hirise", "ctx", "themis"}
    assert HIRISE.gsd_range[0] <= 0.25 and HIRISE.gsd_range[1] >= 0.5  # RED at 25/50 cm
    assert CTX.gsd_range[0] <= 6.0 <= CTX.gsd_range[1]                  # ~6 m/px
    assert THEMIS.gsd_range[0] <= 18.0 and THEMIS.gsd_range[1] >= 100.0  # VIS 18 m, IR 100 m
    ranges = sorted(s.gsd_range for s in SENSORS.values())
    for (_, high), (low, _) in zip(ranges, ranges[1:], strict=False):
        assert high < low, "nominal GSD ranges must not overlap"
    for norm in [s.normalization for s in SENSORS.values()] + [ALL_SENSORS_NORMALIZATION]:
        assert 0.3 < norm.mean < 0.7 and 0.05 < norm.std < 0.3
    means = [s.normalization.mean for s in SENSORS.values()]
    assert min(means) <= ALL_SENSORS_NORMALIZATION.mean <= max(means)


def test_get_sensor():
    assert get_sensor("HiRISE") is HIRISE
    assert get_sensor("ctx") is CTX
    with pytest.raises(MomoGeoError, match="unknown sensor 'lroc'"):
        get_sensor("lroc")


@pytest.mark.parametrize(("tags", "sensor"), [
    ({"INSTRUMENT_NAME": '"HIGH RESOLUTION IMAGING SCIENCE EXPERIMENT"'}, HIRISE),
    ({"INSTRUMENT_ID": "HIRISE"}, HIRISE),
    ({"INSTRUMENT_NAME": "CONTEXT CAMERA (simulated)"}, CTX),
    ({"INSTRUMENT_ID": "CTX"}, CTX),
    ({"INSTRUMENT_NAME": "THERMAL EMISSION IMAGING SYSTEM"}, THEMIS),
    ({"AREA_OR_POINT": "Area"}, None),
    ({"SOURCE": "CTXT archive"}, None),  # "CTX" inside a longer word is not the camera
])
def test_detect_from_metadata(tags, sensor):
    assert detect_sensor("scene.tif", tags) is sensor


def test_name_wins_over_metadata():
    tags = {"INSTRUMENT_NAME": "THERMAL EMISSION IMAGING SYSTEM"}
    assert detect_sensor("ESP_037156_1800_RED.tif", tags) is HIRISE


def _write(path: Path, tags: dict[str, str] | None = None) -> Path:
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "uint8",
               "crs": CRS.from_user_input("IAU_2015:49910"),
               "transform": Affine(6.0, 0, 0, 0, -6.0, 0)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((1, 8, 8), 100, np.uint8))
        if tags:
            dst.update_tags(**tags)
    return path


def test_detect_on_real_rasters(tmp_path):
    named = _write(tmp_path / "B01_009910_1810_XI_01N077W.tif")
    tagged = _write(tmp_path / "mosaic.tif", {"INSTRUMENT_ID": "HIRISE"})
    plain = _write(tmp_path / "mosaic_plain.tif")
    assert open_scene(named).sensor is CTX
    assert open_scene(tagged).sensor is HIRISE
    assert open_scene(plain).sensor is None


def test_folder_names_do_not_decide_the_sensor(tmp_path):
    # GDAL's DERIVED_SUBDATASETS domain quotes the file's path; a folder called "hirise_data"
    # or "ctx" must not make an unlabelled raster HiRISE or CTX.
    for folder in ("hirise_data", "ctx", "themis"):
        (tmp_path / folder).mkdir()
        path = _write(tmp_path / folder / "dem.tif")
        assert open_scene(path).sensor is None, folder


def test_detect_real_hirise_files(shared_data):
    scene_dir = shared_data / "hirise_scene"
    assert open_scene(scene_dir / "ESP_037156_1800_RED.byte.tif").sensor is HIRISE
    # The DTM's name is not an image product ID, but its PDS label names HiRISE.
    assert open_scene(scene_dir / "DTEEC_017825_1760_018458_1760_A01.tif").sensor is HIRISE
    # An HRSC/MOLA DEM window in the same folder is none of the three cameras.
    mola = scene_dir / "Mars_HRSC_MOLA_BlendDEM_Global_200mp_v2.window.tif"
    assert open_scene(mola).sensor is None
