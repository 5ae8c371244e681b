"""Coarse training chips (``Recipe.coarse_chips``): craters wider than a chip, reduced the way
the map's coarse passes reduce a scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from momo_geo.errors import MomoGeoError
from momo_geo.evaluate import TaskData
from momo_geo.inference.coarse import block_mean
from momo_geo.training.finetune import Recipe
from momo_geo.training.task_data import EpochChips, coarse_crater_data, crater_chips


def big_crater(size: int = 128, radius: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size]
    inside = np.hypot(xx - size / 2, yy - size / 2) < radius
    image = np.where(inside, 60.0, 180.0).astype(np.float32) + 40 * (xx % 2).astype(np.float32)
    return image, inside.astype(np.uint8)


def test_reduced_masks_keep_the_crater_and_ignore_cut_rims():
    image, mask = big_crater()
    data = TaskData("themis-craters", [image], [mask], ["a"], ["background", "crater"])
    coarse, parent = coarse_crater_data(data, [mask], 16)
    assert [m.shape for m in coarse.targets] == [(64, 64), (32, 32)]
    assert parent.tolist() == [0, 0]
    for k, reduced in zip((2, 4), coarse.targets, strict=True):
        fraction = block_mean(mask.astype(np.float32), np.ones(mask.shape, bool), k)[0]
        assert np.all(reduced[fraction == 1] == 1) and np.all(reduced[fraction == 0] == 0)
        mixed = (fraction > 0.25) & (fraction < 0.75)
        assert mixed.any() and np.all(reduced[mixed] == 255)
    np.testing.assert_allclose(coarse.images[1][0, 0], image[:4, :4].mean(), rtol=1e-6)
    assert coarse.images[1][0, 0] == 200.0  # the stripes are gone


def test_images_too_small_once_reduced_are_skipped_and_none_left_is_an_error():
    image, mask = big_crater(64)
    data = TaskData("themis-craters", [image], [mask], ["a"], ["background", "crater"])
    coarse, _ = coarse_crater_data(data, [mask], 32)
    assert [m.shape for m in coarse.targets] == [(32, 32)]
    with pytest.raises(MomoGeoError, match="coarse_chips"):
        coarse_crater_data(data, [mask], 40)


def epoch(coarse_chips: float) -> tuple[torch.Tensor, torch.Tensor]:
    image, mask = big_crater()
    data = TaskData("themis-craters", [image, image[::-1].copy()], [mask, mask[::-1].copy()],
                    ["a", "b"], ["background", "crater"])
    recipe = Recipe(architecture="unet", input_size=24, chips=64, batch_size=16,
                    value_scaling="scene_percentile", coarse_chips=coarse_chips)
    batches = list(EpochChips("themis-craters", data, recipe))
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_without_coarse_chips_an_epoch_draws_exactly_the_chips_it_did_before():
    x, y = epoch(0.0)
    image, mask = big_crater()
    data = TaskData("themis-craters", [image, image[::-1].copy()], [mask, mask[::-1].copy()],
                    ["a", "b"], ["background", "crater"])
    _, masks, _ = crater_chips(data, 64, 24, np.random.default_rng([0, 0]))
    assert torch.equal(y, masks)


def test_a_share_of_the_chips_comes_from_the_reduced_images():
    x, y = epoch(0.5)
    # full-resolution chips keep the one-pixel stripes; block means of 2 or 4 erase them
    steps = (x[:, 0, :, 1:] - x[:, 0, :, :-1]).abs().flatten(1).median(dim=1).values
    assert len(x) == 64 and int((steps == 0).sum()) == 32
    assert (y == 255).any()  # the cut rims of the reduced masks are ignored
