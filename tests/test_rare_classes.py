"""Rare landmark classes: kept for training by the selection hold-out, and never predicted when
too few crops remain to learn them (``Recipe.min_class_crops``, card ``unmapped_classes``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from momo_geo.bundle import Bundle, ModelCard, load_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.evaluate import TaskData
from momo_geo.inference.engine import Predictor
from momo_geo.training.finetune import Recipe, finetune, task_card
from momo_geo.training.task_data import hold_out, rare_classes, without_classes

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAMES = ["other", "crater", "swiss_cheese"]


def crops(groups: list[str], targets: list[int]) -> TaskData:
    return TaskData("landmarks", [np.zeros((4, 4), np.float32)] * len(groups), targets, groups,
                    NAMES)


def test_hold_out_gives_back_the_only_product_of_a_rare_class():
    # ten products of "other"/"crater"; swiss cheese only in p9
    groups = [f"p{i}" for i in range(10) for _ in range(3)]
    targets = [0, 1, 0] * 9 + [2, 2, 2]
    data = crops(groups, targets)
    for seed in range(40):  # find a draw that takes p9 for selection
        _, plain = hold_out(data, 0.3, seed)
        if "p9" in plain.groups:
            break
    else:
        pytest.fail("no seed drew p9")
    fit, select = hold_out(data, 0.3, seed, min_class_crops=3)
    assert "p9" in fit.groups and "p9" not in select.groups
    assert set(select.groups) == set(plain.groups) - {"p9"}  # the rest of the draw stands
    assert set(fit.groups).isdisjoint(select.groups)
    # a class the training part keeps enough of stays in the draw
    fit, select = hold_out(data, 0.3, seed, min_class_crops=1)
    assert "p9" in fit.groups
    assert set(hold_out(data, 0.3, seed, min_class_crops=0)[1].groups) == set(plain.groups)


def test_rare_classes_are_named_and_dropped():
    data = crops(["a", "a", "b", "c"], [0, 0, 1, 0])
    assert rare_classes(data, 2) == ["crater", "swiss_cheese"]
    assert rare_classes(data, 0) == []
    assert rare_classes(data, 0, min_products=2) == ["crater", "swiss_cheese"]  # one product
    two = crops(["a", "b", "b", "c"], [1, 1, 1, 0])
    assert rare_classes(two, 0, min_products=2) == ["other", "swiss_cheese"]
    kept = without_classes(data, ["crater"])
    assert kept.targets == [0, 0, 0] and kept.groups == ["a", "a", "c"]


def classifier(unmapped: list[str]) -> Bundle:
    card = task_card("landmarks", Recipe(architecture="cnn_cls", input_size=16, width=4),
                     NAMES)
    card.unmapped_classes = unmapped
    from momo_geo.models import create_model

    torch.manual_seed(0)
    model = create_model(card).eval()
    with torch.no_grad():  # a head that always prefers swiss cheese
        model.head[-1].bias.copy_(torch.tensor([0.0, 1.0, 9.0]))
    return Bundle(card, model.state_dict())


def test_predictor_never_predicts_an_unmapped_class():
    x = torch.randn(6, 1, 16, 16)
    assert set(Predictor(classifier([]))(x).argmax(1).tolist()) == {2}
    probs = Predictor(classifier(["swiss_cheese"]))(x)
    assert torch.all(probs[:, 2] == 0) and torch.allclose(probs.sum(1), torch.ones(6))
    assert set(probs.argmax(1).tolist()) == {1}  # the next most likely class


@pytest.mark.parametrize("unmapped", [["dunes"], ["crater", "swiss_cheese"], "crater"])
def test_card_rejects_unknown_or_excessive_unmapped_classes(unmapped):
    card = task_card("landmarks", Recipe(architecture="cnn_cls", input_size=16), NAMES)
    with pytest.raises(MomoGeoError, match="unmapped_classes"):
        ModelCard.from_dict({**card.to_dict(), "unmapped_classes": unmapped})


def test_finetune_drops_a_one_crop_class_and_records_it(tmp_path):
    root = tmp_path / "landmarks"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["file,label,product_id"]
    for i in range(24):
        label = "spider" if i == 0 else ("crater" if i % 2 else "other")
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(
            root / "images" / f"c{i}.jpg")
        rows.append(f"c{i}.jpg,{label},P{i % 8}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    recipe = Recipe(architecture="cnn_cls", input_size=16, width=4, epochs=1, batch_size=8,
                    min_class_crops=2)
    path, _ = finetune("landmarks", str(root), tmp_path / "lm.bundle", recipe=recipe)
    card = load_bundle(path).card
    # every class with fewer than two training crops, spider's single crop included
    assert "spider" in card.unmapped_classes
    assert "other" not in card.unmapped_classes and "crater" not in card.unmapped_classes
    assert ModelCard.from_dict(card.to_dict()).unmapped_classes == card.unmapped_classes
