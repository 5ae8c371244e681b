"""Input scaling: the scene-wide percentile stretch leaves no tile-shaped artefacts."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from momo_geo.bundle import Bundle
from momo_geo.inference import predict_array
from momo_geo.preprocess import CLIP, scene_range, stretch_range, to_model_input
from tests.test_tiling import conv_bundle


def test_scene_range_is_the_percentiles_of_valid_pixels():
    values = np.arange(1000, dtype=np.float32).reshape(10, 100)
    valid = np.ones_like(values, bool)
    valid[:, :50] = False  # only 50..99, 150..199, ... count
    low, high = scene_range(values, valid)
    kept = values[valid]
    assert (low, high) == tuple(np.percentile(kept, [1, 99]))
    assert scene_range(np.full((4, 4), 7.0)) == (7.0, 8.0)  # flat: one unit wide
    assert scene_range(np.full((2, 2), np.nan)) == (0.0, 1.0)  # nothing valid


def test_per_chip_ranges_stretch_each_chip_by_its_own_scene():
    chips = torch.stack([torch.full((1, 4, 4), 50.0), torch.full((1, 4, 4), 50.0)])
    out = stretch_range(chips, (torch.tensor([0.0, 40.0]), torch.tensor([100.0, 60.0])))
    assert torch.allclose(out[0], torch.full((1, 4, 4), 0.5))
    assert torch.allclose(out[1], torch.full((1, 4, 4), 0.5))
    clipped = stretch_range(torch.tensor([[[[-1e6, 1e6]]]]), (0.0, 1.0))
    assert clipped.flatten().tolist() == list(CLIP)


def test_a_flat_plain_stays_flat_under_the_scene_stretch():
    # A plain with faint noise next to a bright scarp: per tile, the plain's noise is stretched
    # to full contrast; with the scene's range it stays a faint ripple.
    rng = np.random.default_rng(0)
    plain = 100 + rng.normal(0, 0.5, (1, 1, 32, 32))
    tile = torch.from_numpy(plain).float()
    per_tile = to_model_input(tile, 0.5, 0.25, 1)
    scene = to_model_input(tile, 0.5, 0.25, 1, value_range=(20.0, 220.0))
    assert per_tile.std() > 0.5  # +-0.5 DN of noise fills the whole dynamic range
    assert scene.std() < 0.02


def _scene_bundle(bundle: Bundle) -> Bundle:
    card = dataclasses.replace(bundle.card, value_scaling="scene_percentile",
                               normalization={"mean": 0.5, "std": 0.25})
    return Bundle(card=card, state_dict=bundle.state_dict)


def test_tiled_map_equals_untiled_with_scene_scaling():
    # Terrain whose tiles have very different ranges: per-tile stretching would differ from
    # tile to tile; the scene's range is one for all, so tiling changes nothing.
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:96, 0:80]
    image = (40 + 1.5 * x + rng.normal(0, 3, (96, 80))).astype(np.float32)
    bundle = _scene_bundle(conv_bundle())
    tiled, _ = predict_array(bundle, image, tile=16, overlap=4, device="cpu")
    whole, _ = predict_array(bundle, image, tile=96, overlap=0, device="cpu")
    assert np.array_equal(tiled, whole)
    per_tile, _ = predict_array(conv_bundle(), image, tile=16, overlap=4, device="cpu")
    per_whole, _ = predict_array(conv_bundle(), image, tile=96, overlap=0, device="cpu")
    assert not np.array_equal(per_tile, per_whole)  # the artefact this scaling removes
