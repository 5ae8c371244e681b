"""Confidence floors: weak features erased whole, the same on arrays, staged scenes and maps,
and chosen on selection images by the crater F1 the evaluation reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from test_engine import MARS_EQC, threshold_bundle, write_scene

from momo_geo.bundle import ModelCard, load_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.evaluate import evaluate_model
from momo_geo.inference import map_scene, predict_array
from momo_geo.inference.engine import Predictor
from momo_geo.inference.floor import class_min_pixels, erase_weak, erase_weak_scene
from momo_geo.training.calibrate import calibrate_bundle, choose_floor, floor_sweep
from momo_geo.training.task_data import TaskData

SCENE = "scene_percentile"  # one stretch per scene: a faint disc stays faint in every tile


def discs(size: int = 192, seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float, float]],
                                                   list[tuple[float, float, float]]]:
    """A dark noisy plain with bright discs (clear craters) and faint ones (doubtful); returns
    the image and the (x, y, diameter) of each kind."""
    rng = np.random.default_rng(seed)
    image = rng.normal(60, 4, (size, size))
    rows, cols = np.indices(image.shape)
    bright, faint = [], []
    for k in range(6):
        x, y, d = 24 + 30 * k, 40 + 20 * (k % 2), 14 + 2 * k
        image[np.hypot(cols - x, rows - y) < d / 2] = 240
        bright.append((float(x), float(y), float(d)))
        x, y = 24 + 30 * k, 140 + 20 * (k % 2)
        image[np.hypot(cols - x, rows - y) < d / 2] = 150  # p(crater) about 0.8
        faint.append((float(x), float(y), float(d)))
    return np.clip(image, 0, 255).astype(np.uint8), bright, faint


def write_staged(folder, classes: np.ndarray, confidence: np.ndarray) -> None:
    """``mask.tif`` and ``conf.tif`` in ``folder``: a staged class mask and its confidence, in
    64 px blocks (so block seams cut the features)."""
    h, w = classes.shape
    profile = dict(driver="GTiff", width=w, height=h, count=1, crs=MARS_EQC,
                   transform=from_origin(0, 0, 25, 25), tiled=True, blockxsize=64,
                   blockysize=64)
    with rasterio.open(folder / "mask.tif", "w", dtype="uint8", **profile) as dst:
        dst.write(classes, 1)
    with rasterio.open(folder / "conf.tif", "w", dtype="float32", **profile) as dst:
        dst.write(confidence, 1)


def test_weak_features_are_erased_whole():
    classes = np.zeros((40, 40), np.uint8)
    confidence = np.full((40, 40), 0.9, np.float32)
    classes[2:12, 2:12] = 1
    confidence[2:12, 2:12] = np.linspace(0.7, 1.0, 10)  # mean 0.85: kept, low pixels too
    classes[20:30, 20:30] = 1
    confidence[20:30, 20:30] = 0.6
    erased = erase_weak(classes, confidence, {1: 0.8}, background=0)
    assert erased == 100
    assert (classes[2:12, 2:12] == 1).all() and (classes[20:30, 20:30] == 0).all()


def test_features_smaller_than_the_cards_size_are_erased_whole():
    classes = np.zeros((40, 40), np.uint8)
    confidence = np.full((40, 40), 0.99, np.float32)
    classes[2:6, 2:6] = 1  # 16 px: a disc of 4.5 px diameter
    classes[20:27, 20:27] = 1  # 49 px: 7.9 px
    card = ModelCard(name="c", task="segmentation", architecture={"encoder": "x"},
                     classes=[{"id": 0, "name": "background", "color": "#000000"},
                              {"id": 1, "name": "crater", "color": "#ff0000"}],
                     min_diameter={"crater": 6.0})
    sizes = class_min_pixels(card)
    assert sizes == {1: pytest.approx(np.pi * 9)}
    assert class_min_pixels(card, factor=2.0)[1] == pytest.approx(4 * sizes[1])
    assert erase_weak(classes, confidence, {}, background=0, min_pixels=sizes) == 16
    assert (classes[2:6, 2:6] == 0).all() and (classes[20:27, 20:27] == 1).all()


def test_a_bad_largest_size_is_refused_when_the_card_is_read():
    with pytest.raises(MomoGeoError, match="max_diameter"):
        ModelCard(name="c", task="segmentation", architecture={"encoder": "x"},
                  classes=[{"id": 0, "name": "background", "color": "#000000"},
                           {"id": 1, "name": "crater", "color": "#ff0000"}],
                  max_diameter={"crater": -160})


@pytest.mark.parametrize("sizes, task", [({"dune": 6}, "segmentation"),
                                         ({"crater": -1}, "segmentation"),
                                         ({"crater": "6"}, "segmentation"),
                                         ([6], "segmentation"),
                                         ({"crater": 6}, "classification")])
def test_a_bad_smallest_size_is_refused_when_the_card_is_read(sizes, task):
    with pytest.raises(MomoGeoError, match="min_diameter"):
        ModelCard(name="c", task=task, architecture={"encoder": "x"},
                  classes=[{"id": 0, "name": "background", "color": "#000000"},
                           {"id": 1, "name": "crater", "color": "#ff0000"}],
                  min_diameter=sizes)


def test_scene_erasure_equals_array_erasure_across_block_seams(tmp_path):
    rng = np.random.default_rng(3)
    from scipy import ndimage

    classes = (ndimage.gaussian_filter(rng.random((300, 260)), 4) > 0.52).astype(np.uint8)
    classes[ndimage.gaussian_filter(rng.random((300, 260)), 3) > 0.56] = 2
    confidence = ndimage.gaussian_filter(rng.random((300, 260)), 6).astype(np.float32)
    confidence = 0.5 + 0.5 * (confidence - confidence.min()) / np.ptp(confidence)
    floors, sizes = {1: 0.75, 2: 0.7}, {1: 60.0, 3: 5.0}  # class 3: a size, no floor
    caps = {2: 50.0}  # class 2's larger features go too, across seams
    classes[::37, ::41] = 3  # one-pixel specks, erased by size alone
    write_staged(tmp_path, classes, confidence)
    expected = classes.copy()
    n = erase_weak(expected, confidence, floors, background=0, min_pixels=sizes,
                   max_pixels=caps)
    assert 0 < n < (classes > 0).sum() and not (expected == 3).any()
    labels, count = ndimage.label(expected == 2, structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert count and np.bincount(labels.ravel())[1:].max() <= 50
    uncapped = classes.copy()
    assert erase_weak(uncapped, confidence, floors, background=0, min_pixels=sizes) < n
    erased = erase_weak_scene(tmp_path / "mask.tif", tmp_path / "conf.tif", floors, 0, block=64,
                              min_pixels=sizes, max_pixels=caps)
    with rasterio.open(tmp_path / "mask.tif") as src:
        assert np.array_equal(src.read(1), expected)
    assert sum(erased.values()) == n


def test_map_scene_with_a_floor_matches_predict_array_and_drops_doubtful_craters(tmp_path):
    image, bright, faint = discs()
    scene = write_scene(tmp_path / "s.tif", image)
    plain = threshold_bundle(tile_size=96, tile_overlap=16, value_scaling=SCENE)
    floored = threshold_bundle(tmp_path / "floored", tile_size=96, tile_overlap=16,
                               value_scaling=SCENE, min_confidence={"crater": 0.95})
    before, conf = predict_array(plain, image)
    after, _ = predict_array(floored, image)
    result = map_scene(scene, tmp_path / "mask.tif", tmp_path / "craters.gpkg", floored)
    with rasterio.open(result.mask_path) as src:
        assert np.array_equal(src.read(1), after)
    for x, y, _ in bright:
        assert after[int(y), int(x)] == 1 and before[int(y), int(x)] == 1
    for x, y, _ in faint:
        assert before[int(y), int(x)] == 1 and after[int(y), int(x)] == 0
    assert (after == 1).sum() < (before == 1).sum()
    assert result.pixel_counts["crater"] == int((after == 1).sum())


def test_map_scene_drops_features_above_the_cards_largest_size_like_arrays(tmp_path):
    image, bright, _ = discs()
    rows, cols = np.indices(image.shape)
    image[np.hypot(cols - 96, rows - 100) < 30] = 240  # a 60 px bright disc
    fields = dict(tile_size=96, tile_overlap=16, value_scaling=SCENE)
    capped = threshold_bundle(tmp_path / "capped", max_diameter={"crater": 40.0}, **fields)
    before, _ = predict_array(threshold_bundle(**fields), image)
    after, _ = predict_array(capped, image)
    assert before[100, 96] == 1 and after[100, 96] == 0
    for x, y, _ in bright:
        assert after[int(y), int(x)] == 1
    for factor, gsd in ((1.0, 25.0), (2.0, 12.5)):  # in range, and read resampled 2x
        scene = write_scene(tmp_path / f"s{factor}.tif", image, gsd=gsd)
        card_range = [20.0, 30.0]
        bundle = threshold_bundle(tmp_path / f"c{factor}", max_diameter={"crater": 40.0},
                                  gsd=25.0, gsd_range=card_range, **fields)
        result = map_scene(scene, tmp_path / f"m{factor}.tif", None, bundle)
        with rasterio.open(result.mask_path) as src:
            mask = src.read(1)
        if factor == 1.0:
            assert mask[100, 96] == 0 and np.array_equal(mask, after)
        else:  # 60 scene px are 30 model px: under the 40 px limit, kept
            assert mask[100, 96] == 1


def test_map_scene_drops_specks_below_the_cards_size_in_mask_and_vectors(tmp_path):
    import geopandas as gpd

    image, bright, _ = discs()
    rows, cols = np.indices(image.shape)
    for x in range(20, 180, 20):  # 3 px specks on the plain
        image[np.hypot(cols - x, rows - 100) < 1.6] = 240
    scene = write_scene(tmp_path / "s.tif", image)
    fields = dict(tile_size=96, tile_overlap=16, value_scaling=SCENE)
    plain = threshold_bundle(**fields)
    sized = threshold_bundle(tmp_path / "sized", min_diameter={"crater": 8.0}, **fields)
    before, _ = predict_array(plain, image)
    after, _ = predict_array(sized, image)
    assert (before[100, 20:180:20] == 1).all() and (after[100, 20:180:20] == 0).all()
    for x, y, _ in bright:
        assert after[int(y), int(x)] == 1
    result = map_scene(scene, tmp_path / "mask.tif", tmp_path / "craters.gpkg", sized,
                       circles=True)
    with rasterio.open(result.mask_path) as src:
        assert np.array_equal(src.read(1), after)
    layer = gpd.read_file(result.vector_path)
    assert len(layer) == len(bright) + 6  # the faint discs are above the size, kept
    assert (layer["diameter_m"] >= 8 * 25 * 0.9).all()


def test_floor_is_chosen_on_selection_images_by_crater_f1(tmp_path):
    images, circles = [], []
    for seed in range(2):
        image, bright, _ = discs(seed=seed)  # only the bright discs are labelled craters
        images.append(image)
        circles.append(bright)
    targets = [np.zeros(i.shape, np.uint8) for i in images]
    select = TaskData("ctx-craters", images, targets, ["a", "b"], ["background", "crater"],
                      circles=circles)
    threshold_bundle(tmp_path / "b", tile_size=96, tile_overlap=16, value_scaling=SCENE)
    bundle = load_bundle(tmp_path / "b")
    sweep = floor_sweep(Predictor(bundle, "cpu"), select)
    report = evaluate_model(bundle.build_model(), bundle.card, select, n_boot=0)
    assert sweep[0]["floor"] == 0.5
    for key in ("crater_precision", "crater_recall", "crater_f1", "iou"):
        assert sweep[0][key] == round(report[key], 4)
    calibration = calibrate_bundle(tmp_path / "b", select)
    floor = calibration["floor"]
    assert floor == choose_floor(sweep) and floor > 0.5
    assert max(r["crater_f1"] for r in sweep) > sweep[0]["crater_f1"]
    card = json.loads((tmp_path / "b" / "card.json").read_text())
    assert card["min_confidence"] == {"crater": floor}
    assert card["training"]["calibration"]["sweep"] == sweep


def test_a_smallest_size_is_chosen_when_confident_specks_are_false_alarms(tmp_path):
    images, circles = [], []
    for seed in range(2):
        image, bright, faint = discs(seed=seed)
        rows, cols = np.indices(image.shape)
        for x in range(20, 180, 12):  # bright 3 px specks: confident, unlabelled
            image[np.hypot(cols - x, rows - 100) < 1.6] = 250
        images.append(image)
        circles.append(bright + faint)
    targets = [np.zeros(i.shape, np.uint8) for i in images]
    select = TaskData("ctx-craters", images, targets, ["a", "b"], ["background", "crater"],
                      circles=circles)
    threshold_bundle(tmp_path / "b", tile_size=96, tile_overlap=16, value_scaling=SCENE)
    calibration = calibrate_bundle(tmp_path / "b", select, coarse=False)
    sweep = calibration["sweep"]
    unsized = max(r["crater_f1"] for r in sweep if r["min_diameter"] == 0)
    size = calibration["min_diameter"]
    chosen = next(r for r in sweep if r["min_diameter"] == size
                  and r["floor"] == calibration["floor"])
    assert size > 0 and chosen["crater_f1"] > unsized
    card = json.loads((tmp_path / "b" / "card.json").read_text())
    assert card["min_diameter"] == {"crater": size}
    bundle = load_bundle(tmp_path / "b")
    report = evaluate_model(bundle.build_model(), bundle.card, select, n_boot=0)
    assert report["crater_f1"] == pytest.approx(chosen["crater_f1"], abs=1e-4)


def pooled_bundle(path, card: dict):
    """A saved tiny tile classifier (seeded weights) with ``card``'s fields."""
    import torch

    from momo_geo.bundle import ModelCard, save_bundle
    from momo_geo.models import create_model

    torch.manual_seed(0)
    model_card = ModelCard(**card)
    save_bundle(path, create_model(model_card).state_dict(), model_card)
    return load_bundle(path)


def test_ties_choose_the_lowest_floor():
    sweep = [{"floor": 0.5, "crater_f1": 0.4}, {"floor": 0.6, "crater_f1": 0.6},
             {"floor": 0.7, "crater_f1": 0.6}]
    assert choose_floor(sweep) == 0.6


def test_a_classifier_is_floored_per_tile_the_same_in_evaluation_and_maps(tmp_path):
    """Landmark crops below the floor are 'other' in evaluate, and tiles below it are 'other'
    in a map: a tile's confidence is its crop's, so the two paths agree tile for tile."""
    from momo_geo.evaluate import predict_classes, predict_probabilities

    card = dict(name="pooled", task="classification",  # test_engine registers the kind
                architecture={"kind": "test_pooled_cls", "encoder": "none"}, in_chans=1,
                input_size=32, tile_size=32, tile_overlap=0,  # per-tile stretch: a tile
                value_scaling="tile_minmax",                  # is scaled as its crop is
                classes=[{"id": 0, "name": "other", "color": "#000000"},
                         {"id": 1, "name": "crater", "color": "#ff8000"}])
    bundle = pooled_bundle(tmp_path / "plain", card)
    image = np.random.default_rng(0).integers(0, 255, (128, 128)).astype(np.uint8)
    crops = [image[r:r + 32, c:c + 32] for r in range(0, 128, 32) for c in range(0, 128, 32)]
    predictor = Predictor(bundle, "cpu")
    probs = predict_probabilities(predictor, crops)
    floor = float(np.median(probs.max(axis=1)))
    floored = pooled_bundle(tmp_path / "floored", {**card, "min_confidence": {"crater": floor}})
    expected = np.where((probs.argmax(1) == 1) & (probs.max(1) < floor), 0, probs.argmax(1))
    assert (expected != probs.argmax(1)).any() and (expected == 1).any()
    assert np.array_equal(predict_classes(Predictor(floored, "cpu"), crops), expected)
    scene = write_scene(tmp_path / "s.tif", image)
    result = map_scene(scene, tmp_path / "m.tif", None, floored, blend="crop")
    with rasterio.open(result.mask_path) as src:
        mask = src.read(1)
    tiles = mask[::32, ::32].ravel()
    assert np.array_equal(tiles, expected)
