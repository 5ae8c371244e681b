"""A landmark classifier started from a crater U-Net (``unet_cls``, ``finetune_from`` a bundle):
the down path's weights arrive whole, a U-Net that does not fit is refused, and a recipe can
name another recipe's bundle as its start."""

from __future__ import annotations

import pytest
import torch

from momo_geo.bundle import load_bundle, save_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.models import create_model
from momo_geo.training.finetune import Recipe, build_task_model, finetune, task_card
from momo_geo.training.recipes import build_model
from tests.test_members import NAMES, landmark_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def crater_unet(path, width: int = 4, levels: int = 3, scaling: str = "scene_percentile"):
    """A (randomly weighted) crater U-Net bundle as ``finetune`` writes one."""
    recipe = Recipe(architecture="unet", width=width, levels=levels, input_size=32,
                    value_scaling=scaling)
    card = task_card("ctx-craters", recipe)
    torch.manual_seed(1)
    return save_bundle(path, create_model(card).state_dict(), card)


def landmark_card(width: int = 4, levels: int = 3):
    recipe = Recipe(architecture="unet_cls", width=width, levels=levels, input_size=32,
                    value_scaling="scene_percentile")
    return task_card("landmarks", recipe, NAMES)


def test_unet_classifier_pools_every_level_into_class_logits():
    card = landmark_card()
    assert card.architecture == {"kind": "unet_cls", "encoder": "unet", "width": 4, "levels": 3}
    model = create_model(card).eval()
    assert model(torch.zeros(3, 1, 32, 32)).shape == (3, 2)
    assert model.head[1].in_features == 2 * (4 + 8 + 16)  # mean and maximum of each level


def test_a_crater_unet_bundle_starts_the_classifier_with_its_down_path(tmp_path):
    source = crater_unet(tmp_path / "craters.bundle")
    model, merge = build_task_model(landmark_card(), str(source))
    theirs = load_bundle(source).state_dict
    mine = model.state_dict()
    down = [k for k in theirs if k.startswith("down.")]
    assert down and merge is None
    for key in down:
        assert torch.equal(mine[key], theirs[key].float()), key
    assert not any(k.startswith(("up.", "out.")) for k in mine)  # the decoder stays behind


@pytest.mark.parametrize(("source", "message"), [
    ({"width": 8}, "does not fit this classifier"),
    ({"levels": 2}, "does not fit this classifier"),
    ({"scaling": "tile_minmax"}, "value_scaling"),
])
def test_a_unet_that_does_not_fit_is_refused(tmp_path, source, message):
    path = crater_unet(tmp_path / "craters.bundle", **source)
    with pytest.raises(MomoGeoError, match=message):
        build_task_model(landmark_card(), str(path))


def test_only_a_unet_segmentation_bundle_can_start_it(tmp_path):
    card = task_card("landmarks", Recipe(architecture="cnn_cls", width=4, input_size=32), NAMES)
    path = save_bundle(tmp_path / "cnn.bundle", create_model(card).state_dict(), card)
    with pytest.raises(MomoGeoError, match="starts from a U-Net segmentation bundle"):
        build_task_model(landmark_card(), str(path))


def test_members_each_start_from_the_crater_unet(tmp_path):
    source = crater_unet(tmp_path / "craters.bundle")
    root = landmark_folder(tmp_path / "landmarks")
    recipe = Recipe(architecture="unet_cls", width=4, levels=3, input_size=16, epochs=1,
                    batch_size=8, lr=0.0, weight_decay=0.0, folds=2,
                    value_scaling="scene_percentile")
    path, _ = finetune("landmarks", str(root), tmp_path / "lm.bundle", encoder_bundle=str(source),
                       recipe=recipe)
    bundle = load_bundle(path)
    assert bundle.card.training["encoder_bundle"] == "craters.bundle"
    key = "down.1.0.0.weight"  # a convolution (batch-norm statistics move even at lr 0)
    start = load_bundle(source).state_dict[key].float()
    for i in range(2):
        assert torch.allclose(bundle.state_dict[f"members.{i}.{key}"].float(), start, atol=1e-3)


def test_a_recipe_names_the_bundle_it_starts_from(tmp_path):
    recipe = {"bundle": "lm.bundle", "finetune_from": "craters.bundle",
              "finetune": {"task": "landmarks", "data": ["hirise_landmarks"],
                           "recipe": {"architecture": "unet_cls"}},
              "card": {"name": "lm"}}
    with pytest.raises(MomoGeoError, match="finetune_from: .* is not built"):
        build_model(recipe, tmp_path / "out", tmp_path / "work", str(tmp_path))
    with pytest.raises(MomoGeoError, match="or another recipe's bundle"):
        build_model({**recipe, "finetune_from": "craters"}, tmp_path, tmp_path, str(tmp_path))


def test_the_balanced_probe_scores_every_row_by_a_fit_on_the_other_folds() -> None:
    """The landmark probe's logistic regression: a rare class is learnt (the loss weighs it up),
    and a row is predicted by a fit that never saw its fold (a row whose label contradicts its
    features is not memorised)."""
    import numpy as np

    from momo_geo.training.probes import out_of_fold_classes

    rng = np.random.default_rng(0)
    y = np.array([0] * 60 + [1] * 60 + [2] * 9)
    x = (rng.normal(size=(len(y), 4)) + 3 * np.eye(4)[y]).astype(np.float32)
    y_noisy = y.copy()
    y_noisy[0] = 1  # a class-0 row labelled 1
    folds = [list(range(i, len(y), 3)) for i in range(3)]
    predicted = out_of_fold_classes(x, y_noisy, folds, 3)
    assert (predicted[1:] == y[1:]).mean() > 0.95
    assert (predicted[y == 2] == 2).all()
    assert predicted[0] == 0
