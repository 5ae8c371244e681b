"""Test-time augmentation: the mean over the eight flips and quarter turns, in the engine and
chosen by the calibration on held-out crops."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from momo_geo.bundle import Bundle, load_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.inference.engine import Predictor
from momo_geo.inference.tta import DIHEDRAL, averaged, turn, unturn
from momo_geo.training.finetune import Recipe, finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_eight_turns_are_distinct_and_each_is_undone() -> None:
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    seen = {(tuple(turn(x, k, f).shape), tuple(turn(x, k, f).flatten().tolist()))
            for k, f in DIHEDRAL}
    assert len(seen) == 8
    for k, f in DIHEDRAL:
        assert torch.equal(unturn(turn(x, k, f), k, f), x)


def test_averaged_maps_turn_with_their_input_and_classes_do_not() -> None:
    """A plain convolution knows left from right; its D4 mean does not: turning the input
    turns the mean map the same way, and leaves a pooled class answer unchanged."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3, padding=1)
    maps = lambda x: conv(x).softmax(dim=1)  # noqa: E731
    pooled = lambda x: conv(x).mean(dim=(2, 3)).softmax(dim=1)  # noqa: E731
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(maps(turn(x, 1, False)), turn(maps(x), 1, False), atol=1e-4)
        base_map, base_cls = averaged(maps, x, "d4", True), averaged(pooled, x, "d4", False)
        for k, f in DIHEDRAL:
            assert torch.allclose(averaged(maps, turn(x, k, f), "d4", True),
                                  turn(base_map, k, f), atol=1e-5)
            assert torch.allclose(averaged(pooled, turn(x, k, f), "d4", False), base_cls,
                                  atol=1e-5)
        assert torch.equal(averaged(maps, x, "none", True), maps(x))
    with pytest.raises(MomoGeoError, match="tta must be one of"):
        averaged(maps, x, "flips", True)


def test_the_predictor_takes_the_cards_choice_unless_told_otherwise() -> None:
    bundle = load_bundle("default")
    turned = Bundle(dataclasses.replace(bundle.card, tta="d4"), bundle.state_dict)
    x = torch.rand(1, 1, 48, 48)
    plain = Predictor(bundle, "cpu")(x)
    assert Predictor(turned, "cpu").tta == "d4"
    assert torch.equal(Predictor(turned, "cpu", tta="none")(x), plain)
    both = Predictor(turned, "cpu")(x)
    assert both.shape == plain.shape and not torch.equal(both, plain)
    assert torch.allclose(both.sum(dim=1), torch.ones(1, 48, 48))
    with pytest.raises(MomoGeoError, match="tta must be one of"):
        Predictor(bundle, "cpu", tta="d8")


def test_calibration_chooses_the_turns_on_held_out_crops_and_the_card_records_it(tmp_path):
    from tests.test_members import landmark_folder

    root = landmark_folder(tmp_path / "landmarks")
    recipe = Recipe(architecture="cnn_cls", input_size=16, width=4, epochs=2, batch_size=4,
                    folds=2, select_fraction=0.25, value_scaling="scene_percentile",
                    tta="choose")
    card = load_bundle(finetune("landmarks", str(root), tmp_path / "lm.bundle",
                                recipe=recipe)[0]).card
    choice = card.training["calibration"]["tta"]
    assert set(choice["scores"]) == {"none", "d4"} and "out-of-fold" in choice["criterion"]
    best = max(choice["scores"].values())
    assert choice["chosen"] == card.tta == next(m for m in ("none", "d4")
                                                if choice["scores"][m] == best)
    assert card.training["calibration"]["floor"] in np.round(np.arange(0, 1, 0.05), 2)
    with pytest.raises(MomoGeoError, match="tta must be one of"):
        finetune("landmarks", str(root), tmp_path / "x.bundle",
                 recipe=dataclasses.replace(recipe, tta="flips", folds=0))
