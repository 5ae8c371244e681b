"""Undeclared black frames around map-projected products are nodata, not terrain."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from momo_geo.inference.frame import find_frame, mask_in_frame
from momo_geo.inference.options import MapOptions

MARS_EQC = ('PROJCS["Equirectangular MARS",GEOGCS["GCS_MARS",DATUM["D_MARS",SPHEROID["MARS",'
            '3396190,0]],PRIMEM["Reference meridian",0],UNIT["degree",0.0174532925199433]],'
            'PROJECTION["Equirectangular"],PARAMETER["standard_parallel_1",0],'
            'PARAMETER["central_meridian",180],PARAMETER["false_easting",0],'
            'PARAMETER["false_northing",0],UNIT["metre",1]]')


def rotated_strip(path, size: int = 96, seed: int = 0, dark_inside: bool = True) -> np.ndarray:
    """A bright textured strip at 30 degrees inside a 0-valued frame, no nodata declared."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] - size / 2
    inside = np.abs(x * np.cos(0.5) + y * np.sin(0.5)) < size / 5
    image = np.where(inside, rng.integers(60, 200, (size, size)), 0).astype(np.uint8)
    if dark_inside:
        image[size // 2, size // 2 - 1:size // 2 + 2] = 0  # a black pixel run inside the image
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="uint8", crs=MARS_EQC,
                       transform=Affine(6.0, 0, 0, 0, -6.0, 0)) as dst:
        dst.write(image, 1)
    return inside


def test_frame_is_found_per_row_and_spares_dark_pixels_inside(tmp_path):
    inside = rotated_strip(tmp_path / "strip.tif")
    frame = find_frame(str(tmp_path / "strip.tif"))
    assert frame is not None and frame.value == 0
    valid = frame.valid(rasterio.windows.Window(0, 0, 96, 96))
    assert valid[inside].all()  # every image pixel is valid
    assert valid[48, 47:50].all()  # black pixels inside the strip are image, not frame
    assert abs(frame.fraction - (1 - inside.mean())) < 0.03


def test_no_frame_in_a_scene_whose_border_is_image():
    assert find_frame("sample_data/crater_field.tif") is None


def test_map_treats_the_frame_as_nodata_unless_told_not_to(tmp_path):
    from momo_geo.inference import map_scene

    inside = rotated_strip(tmp_path / "strip.tif")
    messages: list[str] = []
    map_scene(tmp_path / "strip.tif", tmp_path / "m.tif", None, "default",
              MapOptions(device="cpu"), log=messages.append)
    mask = rasterio.open(tmp_path / "m.tif").read(1)
    assert (mask[~inside] == 255).mean() > 0.95
    assert (mask[inside] != 255).all()
    assert any("frame of value 0" in m for m in messages)
    map_scene(tmp_path / "strip.tif", tmp_path / "m2.tif", None, "default",
              MapOptions(device="cpu", frame=False))
    assert (rasterio.open(tmp_path / "m2.tif").read(1) != 255).all()


def write_mask(path, mask: np.ndarray) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=mask.shape[1], height=mask.shape[0],
                       count=1, dtype="uint8") as dst:
        dst.write(mask, 1)


def test_a_mask_is_read_over_the_scene_image_only(tmp_path):
    inside = rotated_strip(tmp_path / "strip.tif")
    write_mask(tmp_path / "m.tif", np.where(inside, 1, 255).astype(np.uint8))
    mask, where = mask_in_frame(tmp_path / "m.tif", tmp_path / "strip.tif")
    assert where[inside].all() and (mask[~where] == 255).all()
    assert abs(where.mean() - inside.mean()) < 0.03
    write_mask(tmp_path / "half.tif", np.ones((48, 48), np.uint8))  # a coarser mask grid
    _, half = mask_in_frame(tmp_path / "half.tif", tmp_path / "strip.tif")
    assert half.shape == (48, 48) and (half == where[1::2, 1::2]).mean() > 0.95
    write_mask(tmp_path / "plain.tif", np.ones((40, 30), np.uint8))  # a scene without frame
    _, everywhere = mask_in_frame(tmp_path / "plain.tif", "sample_data/crater_field.tif")
    assert everywhere.shape == (40, 30) and everywhere.all()


@pytest.mark.shared_data
def test_real_hirise_frame_is_found(hirise_scene):
    frame = find_frame(str(hirise_scene))
    assert frame is not None and frame.value == 0
    assert 0.25 < frame.fraction < 0.32  # the collar of the 274 x 661 browse product


def test_a_noisy_dark_plain_is_not_a_frame(tmp_path):
    """Regression: within the run tolerance every pixel of a featureless dark plain matched
    the border's commonest value, and three quarters of the scene became 'frame'."""
    plain = np.random.default_rng(0).normal(60, 4, (192, 192)).clip(0, 255).astype(np.uint8)
    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", width=192, height=192, count=1,
                       dtype="uint8", crs="IAU_2015:49910",
                       transform=rasterio.transform.from_origin(0, 0, 25, 25)) as dst:
        dst.write(plain, 1)
    assert find_frame(str(path)) is None
