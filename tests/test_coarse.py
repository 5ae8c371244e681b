"""The coarse pass: craters too large for the model's view are mapped from a lower-resolution
pass, the same on arrays, staged scenes and maps, and chosen on selection images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from test_engine import threshold_bundle, write_scene
from test_floor import write_staged

from momo_geo.bundle import ModelCard, load_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.inference import map_scene, predict_array
from momo_geo.inference.coarse import (
    add_coarse,
    add_coarse_scene,
    block_mean,
    kept_features,
    upsample_rows,
)
from momo_geo.inference.engine import Predictor
from momo_geo.inference.floor import background_class
from momo_geo.training.calibrate import (
    calibrate_bundle,
    coarse_sweep,
    floor_sweep,
    selection_maps,
)
from momo_geo.training.task_data import TaskData

COARSE = {"class": "crater", "scale": 0.25, "min_diameter": 48, "min_confidence": 0.7}
FLOOR = {"crater": 0.95}


def big_crater_scene(size: int = 256, seed: int = 0):
    """A dark noisy plain with a large disc of fine bright/dark texture (a big crater the
    per-pixel model sees only as single-pixel fragments, its block means as one bright disc),
    two clear bright discs and two small faint ones."""
    rng = np.random.default_rng(seed)
    image = rng.normal(60, 4, (size, size))
    rows, cols = np.indices(image.shape)
    big = (128.0, 150.0, 120.0)
    inside = np.hypot(cols - big[0], rows - big[1]) < big[2] / 2
    checker = (rows + cols) % 2 == 0
    image[inside & checker], image[inside & ~checker] = 250, 90
    bright = [(30.0, 30.0, 18.0), (226.0, 30.0, 22.0)]
    faint = [(100.0, 24.0, 14.0), (160.0, 24.0, 16.0)]
    for x, y, d in bright:
        image[np.hypot(cols - x, rows - y) < d / 2] = 240
    for x, y, d in faint:
        image[np.hypot(cols - x, rows - y) < d / 2] = 155  # p(crater) about 0.85
    return np.clip(image, 0, 255).astype(np.uint8), big, bright, faint, inside


def share(classes: np.ndarray, where: np.ndarray) -> float:
    return float((classes[where] == 1).mean())


def test_the_coarse_pass_maps_the_large_crater_the_fine_pass_drops(tmp_path):
    image, _, bright, faint, inside = big_crater_scene()
    bundle = threshold_bundle(tmp_path / "b", tile_size=96, tile_overlap=16,
                              value_scaling="scene_percentile", min_confidence=FLOOR,
                              coarse_passes=[COARSE])
    fine, _ = predict_array(bundle, image, coarse=False)
    both, _ = predict_array(bundle, image)
    assert share(fine, inside) < 0.6 and share(both, inside) > 0.95
    for x, y, _ in bright:
        assert fine[int(y), int(x)] == 1 and both[int(y), int(x)] == 1
    for x, y, _ in faint:  # small: left to the fine pass, which drops them
        assert fine[int(y), int(x)] == 0 and both[int(y), int(x)] == 0
    changed = fine != both
    assert changed.any() and (both[changed] == 1).all()  # the pass only adds craters

    scene = write_scene(tmp_path / "s.tif", image)
    result = map_scene(scene, tmp_path / "mask.tif", tmp_path / "craters.gpkg", bundle)
    with rasterio.open(result.mask_path) as src:
        assert np.array_equal(src.read(1), both)
    assert result.pixel_counts["crater"] == int((both == 1).sum())
    assert result.pixel_counts["background"] == int((both == 0).sum())
    plain = map_scene(scene, tmp_path / "fine.tif", model=bundle, coarse=False)
    with rasterio.open(plain.mask_path) as src:
        assert np.array_equal(src.read(1), fine)


def test_scene_addition_equals_array_addition_across_block_seams(tmp_path):
    rng = np.random.default_rng(5)
    classes = rng.integers(0, 3, (203, 150)).astype(np.uint8)
    classes[:7] = 255  # nodata stays nodata
    confidence = rng.random((203, 150)).astype(np.float32)
    kept = np.zeros((51, 38), np.float32)
    kept[10:30, 5:25] = rng.uniform(0.3, 1.0, (20, 20))
    kept[0:4, :] = 0.9
    write_staged(tmp_path, classes, confidence)
    expected, expected_conf = classes.copy(), confidence.copy()
    former = add_coarse(expected, expected_conf, upsample_rows(kept, 4, 0, 203, 150), 1)
    assert former.sum() > 0 and former[1] == 0 and former[255] == 0
    scene_former = add_coarse_scene(tmp_path / "mask.tif", tmp_path / "conf.tif", kept, 4, 1,
                                    block=32)
    with rasterio.open(tmp_path / "mask.tif") as m, rasterio.open(tmp_path / "conf.tif") as c:
        assert np.array_equal(m.read(1), expected)
        assert np.array_equal(c.read(1), expected_conf)
    assert np.array_equal(scene_former, former)


def test_block_means_count_only_valid_pixels():
    grey = np.arange(36, dtype=np.float32).reshape(6, 6)
    valid = np.ones((6, 6), bool)
    valid[0, 0] = False
    valid[4:, 4:] = False
    mean, ok = block_mean(grey, valid, 4)
    assert mean.shape == (2, 2)
    assert mean[0, 0] == pytest.approx(grey[:4, :4][valid[:4, :4]].mean())
    assert ok[0, 0] and ok[0, 1] and ok[1, 0] and not ok[1, 1]  # edge block: 4 px, none valid


@pytest.mark.parametrize("spec", [
    {"class": "crater", "scale": 0.3, "min_diameter": 48},
    {"class": "dune", "scale": 0.25, "min_diameter": 48},
    {"class": "crater", "scale": 0.25, "min_diameter": -1},
    {"class": "crater", "scale": 0.25, "min_diameter": 48, "min_confidence": 2},
    {"class": "crater", "scale": 0.25, "min_diameter": 48, "floor": 0.7},
    {"class": "crater", "scale": 0.25, "min_diameter": 48, "max_residual": 0},
])
def test_a_bad_coarse_pass_is_refused_when_the_card_is_read(spec):
    fields = threshold_bundle().card.to_dict()
    fields["coarse_passes"] = [spec]
    with pytest.raises(MomoGeoError, match="coarse pass"):
        ModelCard.from_dict(fields)


def test_the_coarse_pass_is_chosen_on_selection_images(tmp_path):
    images, circles = [], []
    for seed in range(2):
        image, big, bright, _, _ = big_crater_scene(seed=seed)
        images.append(image)
        circles.append(bright + [big])
    targets = []
    for circle_set in circles:
        rows, cols = np.indices(images[0].shape)
        target = np.zeros(images[0].shape, np.uint8)
        for x, y, d in circle_set:
            target[np.hypot(cols - x, rows - y) < d / 2] = 1
        targets.append(target)
    select = TaskData("ctx-craters", images, targets, ["a", "b"], ["background", "crater"],
                      circles=circles)
    threshold_bundle(tmp_path / "b", tile_size=96, tile_overlap=16,
                     value_scaling="scene_percentile")
    predictor = Predictor(load_bundle(tmp_path / "b"), "cpu")
    floors = floor_sweep(predictor, select)
    maps = selection_maps(predictor, select, 0.95, scales=(0.5, 0.25))
    swept = coarse_sweep(maps, 1, background_class(predictor.card), scales=(0.5, 0.25),
                         diameters=(16, 48), floors=(0.5, 0.7))
    fine_only = next(r for r in floors if r["floor"] == 0.95)
    assert swept[0]["scale"] is None
    for key in ("crater_f1", "iou"):
        assert swept[0][key] == fine_only[key]
    best = max(swept, key=lambda r: r["crater_f1"] + r["iou"])
    assert best["scale"] is not None and best["iou"] > swept[0]["iou"]

    calibration = calibrate_bundle(tmp_path / "b", select)
    card = json.loads((tmp_path / "b" / "card.json").read_text())
    assert card["coarse_passes"] == calibration["coarse"]["chosen"]
    cap = calibration["coarse"]["max_diameter"]
    assert cap in (0.0, float(card["input_size"]))
    assert card["max_diameter"] == ({"crater": cap} if cap else {})
    assert 1 <= len(card["coarse_passes"]) <= 2
    assert card["coarse_passes"][0]["class"] == "crater"
    assert len({p["scale"] for p in card["coarse_passes"]}) == len(card["coarse_passes"])
    load_bundle(tmp_path / "b")  # still a valid card


def test_the_roundness_gate_keeps_a_crater_and_drops_an_albedo_streak():
    rows, cols = np.indices((80, 120))
    disc = np.hypot(cols - 30, rows - 40) < 14
    streak = (np.abs((cols - 85) - 0.4 * (rows - 40)) < 5) & (np.abs(rows - 40) < 30)
    probs = np.zeros((2, 80, 120), np.float32)
    probs[1] = np.where(disc | streak, 0.9, 0.1)
    probs[0] = 1 - probs[1]
    valid = np.ones((80, 120), bool)
    any_shape = kept_features(probs, valid, 1, 0, 0.7, 8)
    round_only = kept_features(probs, valid, 1, 0, 0.7, 8, max_residual=0.15)
    assert (any_shape[disc] > 0.5).all() and (any_shape[streak] > 0.5).all()
    assert (round_only[disc] > 0.5).all() and not (round_only[streak] > 0).any()


def test_the_coarse_image_is_the_same_whatever_band_it_is_read_in():
    from momo_geo.inference.coarse import coarse_image
    from momo_geo.inference.reader import ArraySource

    rng = np.random.default_rng(2)
    image = rng.integers(1, 255, (203, 150)).astype(np.float32)
    valid = rng.random((203, 150)) > 0.1
    whole = block_mean(image, valid, 4)
    for budget in (1, 600, 10_000_000):  # one block row at a time, a few, all at once
        grey, ok = coarse_image(ArraySource(image, valid), 203, 150, 4, budget=budget)
        assert np.array_equal(grey, whole[0]) and np.array_equal(ok, whole[1])
