"""Cross-fitted landmark members (``Recipe.folds``): whole products per fold, out-of-fold
predictions from the member that never saw the product, one bundle of their mean probability,
and the confidence floor chosen on those predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from momo_geo.bundle import load_bundle
from momo_geo.cli import cli
from momo_geo.errors import MomoGeoError
from momo_geo.evaluate import TaskData
from momo_geo.inference.engine import Predictor
from momo_geo.models import create_model
from momo_geo.training.calibrate import choose_floor
from momo_geo.training.finetune import Recipe, finetune, task_card
from momo_geo.training.members import member_card, product_folds, train_members

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAMES = ["other", "crater"]


def crops(sizes: list[int]) -> TaskData:
    """Products P0, P1, ... of ``sizes`` crops; crater crops bright, other crops dark."""
    groups = [f"P{p}" for p, n in enumerate(sizes) for _ in range(n)]
    targets = [i % 2 for i in range(len(groups))]
    images = [np.full((8, 8), 50.0 + 150.0 * t, np.float32) for t in targets]
    return TaskData("landmarks", images, targets, groups, NAMES)


def test_product_folds_hold_whole_products_of_near_equal_size():
    data = crops([30, 1, 2, 9, 9, 9, 3, 7, 5, 4])
    folds = product_folds(data, 3, seed=0)
    assert sorted(i for fold in folds for i in fold) == list(range(len(data.images)))
    products = [{data.groups[i] for i in fold} for fold in folds]
    assert all(a.isdisjoint(b) for a in products for b in products if a is not b)
    assert sorted(map(len, folds)) == [24, 25, 30]  # the 30-crop product alone, 49 split evenly
    assert product_folds(data, 3, seed=0) == folds
    assert product_folds(data, 3, seed=1) != folds  # ties of equal products broken by the draw
    with pytest.raises(MomoGeoError, match="cannot make 11 folds"):
        product_folds(data, 11, seed=0)


def test_mean_probability_is_the_mean_of_its_members_softmax():
    card = task_card("landmarks", Recipe(architecture="cnn_cls", input_size=16, width=4), NAMES)
    card.architecture["members"] = 3
    torch.manual_seed(0)
    model = create_model(card).eval()
    x = torch.randn(5, 1, 16, 16)
    with torch.no_grad():
        expected = torch.stack([m(x).softmax(1) for m in model.members]).mean(0)
        assert torch.allclose(model(x).softmax(1), expected, atol=1e-6)
    assert "members.2.head.1.weight" in model.state_dict()
    for bad in (0, "2", True):
        card.architecture["members"] = bad
        with pytest.raises(MomoGeoError, match="members must be a whole number"):
            create_model(card)


def test_each_member_predicts_only_the_products_it_never_saw():
    data = crops([6, 4, 4, 2, 2, 2])
    card = task_card("landmarks", Recipe(architecture="cnn_cls", input_size=8, width=4), NAMES)
    card.architecture["members"] = 3
    seen: list[set[str]] = []

    def train(model: torch.nn.Module, fit: TaskData, recipe: Recipe) -> float:
        seen.append(set(fit.groups))
        with torch.no_grad():  # member i answers "crater" with a probability set by i
            model.head[1].weight.zero_()
            model.head[1].bias.copy_(torch.tensor([0.0, float(len(seen))]))
        return 1.5

    recipe = Recipe(architecture="cnn_cls", input_size=8, width=4, epochs=2, batch_size=2)
    members = train_members(card, data, recipe, 3, lambda: create_model(member_card(card)),
                            train)
    folds = product_folds(data, 3, recipe.seed)
    assert members.seconds == 4.5 and len(members.model.members) == 3
    for i, fold in enumerate(folds):
        assert seen[i].isdisjoint(data.groups[j] for j in fold)
        crater = np.exp(i + 1) / (1 + np.exp(i + 1))
        assert np.allclose(members.held_out["none"][fold, 1], crater, atol=1e-5)


def landmark_folder(root, n_products: int = 8):
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["file,label,product_id"]
    for i in range(6 * n_products):
        label = "crater" if i % 3 == 0 else "other"
        level = 200 if label == "crater" else 60
        pixels = np.clip(rng.normal(level, 20, (32, 32)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"c{i}.jpg")
        rows.append(f"c{i}.jpg,{label},P{i % n_products}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_finetune_with_folds_ships_the_members_and_floors_on_their_held_out_crops(tmp_path):
    root = landmark_folder(tmp_path / "landmarks")
    recipe = Recipe(architecture="cnn_cls", input_size=16, width=4, epochs=2, batch_size=4,
                    folds=2, select_fraction=0.25, value_scaling="scene_percentile")
    path, _ = finetune("landmarks", str(root), tmp_path / "lm.bundle", recipe=recipe)
    bundle = load_bundle(path)
    card = bundle.card
    assert card.architecture["members"] == 2
    assert any(k.startswith("members.1.") for k in bundle.state_dict)
    calibration = card.training["calibration"]
    assert "out-of-fold" in calibration["criterion"]
    assert calibration["training_crops"] == card.training["train_images"]
    assert calibration["floor"] == choose_floor(calibration["folds_sweep"], "score")
    assert len(calibration["sweep"]) == len(calibration["folds_sweep"])  # selection, for record
    assert [p["members"] for p in card.training["learning_curve"]] == [1, 2]
    probs = Predictor(bundle)(torch.zeros(3, 1, 16, 16))
    assert probs.shape == (3, card.num_classes) and torch.allclose(probs.sum(1), torch.ones(3))
    shown = CliRunner().invoke(cli, ["models", str(path)])
    assert shown.exit_code == 0 and "cnn_cls x 2 (mean probability)" in shown.output


@pytest.mark.parametrize(("task", "init", "message"), [
    ("themis-craters", False, "only for a classification task"),
    ("landmarks", True, "cannot continue an init_bundle"),
])
def test_folds_are_refused_where_they_cannot_work(tmp_path, task, init, message):
    root = landmark_folder(tmp_path / "landmarks")
    first = None
    if init:
        first, _ = finetune("landmarks", str(root), tmp_path / "a.bundle",
                            recipe=Recipe(architecture="cnn_cls", input_size=16, width=4,
                                          epochs=1, batch_size=8))
    recipe = Recipe(architecture="cnn_cls" if task == "landmarks" else "unet", input_size=16,
                    width=4, epochs=1, batch_size=8, folds=2)
    with pytest.raises(MomoGeoError, match=message):
        finetune(task, str(root), tmp_path / "b.bundle", recipe=recipe,
                 init_bundle=str(first) if first else None)
