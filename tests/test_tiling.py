"""Tiling plan, row-band stitching and seams: tiled output must equal untiled output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from momo_geo.bundle import ModelCard
from momo_geo.errors import MomoGeoError
from momo_geo.inference import Predictor, plan_tiles, predict_array, stitch
from momo_geo.inference.plan import axis_starts
from momo_geo.inference.stitch import NODATA_CLASS, RowBandStitcher
from momo_geo.models import create_model
from momo_geo.preprocess import to_model_input


def conv_bundle(depth: int = 2, in_chans: int = 1, seed: int = 0):
    from momo_geo.bundle import Bundle

    card = ModelCard(name="seam-conv", task="segmentation",
                     architecture={"kind": "conv", "encoder": "conv", "width": 6,
                                   "depth": depth, "kernel": 3},
                     in_chans=in_chans, tile_size=16, tile_overlap=4,
                     classes=[{"id": 0, "name": "background", "color": "#000000"},
                              {"id": 1, "name": "crater", "color": "#ff0000"},
                              {"id": 2, "name": "dune", "color": "#00ff00"}])
    torch.manual_seed(seed)
    model = create_model(card)
    return Bundle(card=card, state_dict=model.state_dict())


def untiled(bundle, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference: the whole image through the model at once, same normalisation."""
    model = bundle.build_model()
    x = torch.from_numpy(image.astype(np.float32))[None, None]
    card = bundle.card
    x = to_model_input(x, card.normalization["mean"], card.normalization["std"], card.in_chans)
    with torch.inference_mode():
        probs = model(x).float().softmax(dim=1)[0].numpy()
    return probs.argmax(0).astype(np.uint8), probs.max(0)


def binary_scene(height: int, width: int, seed: int) -> np.ndarray:
    # Only 0 and 255: every tile (>= 4x4 px) holds both, so MOMO's per-tile min-max stretch is
    # the same for every tile and for the whole scene, and tiling is the only difference.
    rng = np.random.default_rng(seed)
    return (rng.random((height, width)) > 0.5).astype(np.uint8) * 255


def test_axis_starts_clamp_last_tile_to_edge():
    assert axis_starts(100, 32, 8) == [0, 24, 48, 68]
    assert axis_starts(10, 32, 8) == [0]
    assert axis_starts(32, 32, 0) == [0]
    assert axis_starts(33, 32, 0) == [0, 1]


def test_bad_tiling_is_a_clear_error():
    with pytest.raises(MomoGeoError, match="overlap"):
        list(plan_tiles(100, 100, 16, 16))
    with pytest.raises(MomoGeoError, match="tile size"):
        list(plan_tiles(100, 100, 0, 0))


@settings(max_examples=100, deadline=None)
@given(width=st.integers(1, 300), height=st.integers(1, 300), tile=st.integers(1, 80),
       data=st.data())
def test_cores_cover_every_pixel_exactly_once(width, height, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    count = np.zeros((height, width), np.int32)
    for p in plan_tiles(width, height, tile, overlap):
        # windows lie inside the raster (clamped, never padded) and contain their core
        assert p.row >= 0 and p.row + p.height <= height
        assert p.col >= 0 and p.col + p.width <= width
        assert (p.height, p.width) == (min(tile, height), min(tile, width))
        assert p.row <= p.core_row and p.core_row + p.core_height <= p.row + p.height
        assert p.col <= p.core_col and p.core_col + p.core_width <= p.col + p.width
        count[p.core_window.toslices()] += 1
    assert (count == 1).all()


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 120), height=st.integers(1, 120), tile=st.integers(1, 40),
       blend=st.sampled_from(["crop", "smooth"]), seed=st.integers(0, 2**16), data=st.data())
def test_stitcher_writes_every_valid_pixel_exactly_once(width, height, tile, blend, seed, data):
    overlap = data.draw(st.integers(0, tile - 1))
    rng = np.random.default_rng(seed)
    valid = rng.random((height, width)) > 0.3
    truth = rng.integers(0, 3, (height, width))  # what a perfect model says for every pixel
    written = np.zeros((height, width), np.int32)
    out = np.full((height, width), 77, np.uint8)
    next_row = [0]

    def write_rows(row0, classes, confidence, probs):
        assert row0 == next_row[0]  # rows come top to bottom, each once
        next_row[0] += len(classes)
        written[row0:row0 + len(classes)] += 1
        out[row0:row0 + len(classes)] = classes

    stitcher = RowBandStitcher(width, height, 3, min(tile, height), write_rows, blend=blend,
                               overlap=overlap)
    chunk = stitch.FLUSH_COLUMNS
    stitch.FLUSH_COLUMNS = data.draw(st.integers(1, 130))  # rows are finished in column chunks
    try:
        for p in plan_tiles(width, height, tile, overlap):
            rows, cols = p.window.toslices()
            probs = np.eye(3, dtype=np.float32)[truth[rows, cols]].transpose(2, 0, 1)
            stitcher.add(p, probs, valid[rows, cols])
        stitcher.finish()
    finally:
        stitch.FLUSH_COLUMNS = chunk
    assert (written == 1).all()
    assert (out[valid] == truth[valid]).all()
    assert (out[~valid] == NODATA_CLASS).all()


@pytest.mark.parametrize(("height", "width", "tile"), [
    (29, 35, 12),   # odd sizes, several tiles each way, clamped last row and column
    (33, 27, 11),   # odd tile size
    (23, 31, 64),   # tile larger than the scene: one tile
    (16, 45, 16),   # one tile high exactly
])
def test_seams_vanish_for_a_translation_equivariant_model(height, width, tile):
    bundle = conv_bundle(depth=2)  # receptive radius 2: exact for every overlap >= 4
    predictor = Predictor(bundle, "cpu")
    image = binary_scene(height, width, seed=height * width)
    ref_classes, ref_conf = untiled(bundle, image)
    radius = predictor.model.receptive_radius
    for overlap in range(2 * radius, min(tile, max(height, width))):
        classes, conf = predict_array(bundle, image, tile=tile, overlap=overlap, batch_size=64,
                                      predictor=predictor)
        assert np.array_equal(classes, ref_classes), f"overlap {overlap}"
        np.testing.assert_allclose(conf, ref_conf, rtol=0, atol=1e-6, err_msg=f"ov {overlap}")


def test_too_small_overlap_shows_seams():
    """The seam test can fail: with overlap below the receptive field, tiles disagree."""
    bundle = conv_bundle(depth=3)
    image = binary_scene(40, 40, seed=3)
    _, ref_conf = untiled(bundle, image)
    _, conf = predict_array(bundle, image, tile=12, overlap=0, device="cpu")
    assert not np.allclose(conf, ref_conf, atol=1e-6)


def test_smooth_blend_equals_untiled_wherever_every_tile_sees_full_context():
    bundle = conv_bundle(depth=2)
    radius = 2
    height = width = 50
    image = binary_scene(height, width, seed=5)
    ref_classes, ref_conf = untiled(bundle, image)
    classes, conf = predict_array(bundle, image, tile=16, overlap=8, blend="smooth",
                                  device="cpu")
    assert (classes != NODATA_CLASS).all()
    # a pixel is "clean" when every tile covering it has it >= radius px from the tile's
    # inner borders (scene edges are no border: the model pads there as on the whole scene)
    clean = np.ones((height, width), bool)
    for p in plan_tiles(width, height, 16, 8):
        inner = np.zeros((height, width), bool)
        r0 = p.row + (radius if p.row > 0 else 0)
        r1 = p.row + p.height - (radius if p.row + p.height < height else 0)
        c0 = p.col + (radius if p.col > 0 else 0)
        c1 = p.col + p.width - (radius if p.col + p.width < width else 0)
        inner[r0:r1, c0:c1] = True
        covered = np.zeros((height, width), bool)
        covered[p.window.toslices()] = True
        clean &= ~covered | inner
    assert 0.2 < clean.mean() < 1.0
    np.testing.assert_allclose(conf[clean], ref_conf[clean], atol=1e-5)
    assert np.array_equal(classes[clean], ref_classes[clean])
    # and elsewhere the blend stays close to the untiled answer (no hard seams)
    assert np.abs(conf - ref_conf).max() < 0.1


@settings(max_examples=25, deadline=None)
@given(width=st.integers(1, 90), height=st.integers(1, 90), tile=st.integers(4, 48),
       blend=st.sampled_from(["crop", "smooth"]), seed=st.integers(0, 2**16), data=st.data())
def test_engine_predicts_every_valid_pixel_and_only_those(width, height, tile, blend, seed,
                                                          data):
    overlap = data.draw(st.integers(0, tile - 1))
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width)).astype(np.uint8)
    valid = rng.random((height, width)) > 0.2
    bundle = PROPERTY_BUNDLE
    classes, confidence, probs = predict_array(bundle, image, valid, tile=tile,
                                               overlap=overlap, blend=blend, batch_size=16,
                                               device="cpu", probabilities=True)
    assert ((classes != NODATA_CLASS) == valid).all()
    assert (confidence[valid] >= 1 / 3 - 1e-6).all() and (confidence[~valid] == -1).all()
    np.testing.assert_allclose(probs[:, valid].sum(axis=0), 1.0, atol=1e-5)
    assert np.array_equal(probs[:, valid].argmax(axis=0), classes[valid])


PROPERTY_BUNDLE = conv_bundle(depth=1)
