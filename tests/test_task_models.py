"""The crater and landmark networks of issue 10 and the training pieces they need."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from momo_geo.bundle import ModelCard, load_bundle
from momo_geo.evaluate import TaskData
from momo_geo.models import create_model
from momo_geo.models.heads import load_encoder_weights
from momo_geo.models.vit import create_encoder
from momo_geo.training.finetune import Recipe, finetune
from momo_geo.training.task_data import crater_chips, hold_out, rim_ignore_targets
from tests.test_finetune import themis_like  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASSES = [{"id": 0, "name": "background", "color": "#000000"},
           {"id": 1, "name": "crater", "color": "#ff0000"}]


def card(kind: str, **arch) -> ModelCard:
    return ModelCard(name=kind, task="segmentation", in_chans=1, input_size=64, classes=CLASSES,
                     architecture={"kind": kind, "encoder": arch.pop("encoder", kind), **arch})


@pytest.mark.parametrize("size", [(64, 64), (50, 77)])
def test_unet_predicts_at_any_input_size(size):
    net = create_model(card("unet", width=4, levels=3)).eval()
    assert net(torch.zeros(2, 1, *size)).shape == (2, 2, *size)


def test_vit_unet_takes_a_momo_encoder_bundle_and_uses_it():
    spec = card("vit_unet", encoder="vit_tiny_patch16_224", width=4, levels=3)
    net = create_model(spec).eval()
    encoder = create_encoder("vit_tiny", img_size=64, in_chans=1)
    load_encoder_weights(net, encoder.state_dict())
    x = torch.randn(1, 1, 64, 64)
    before = net(x)
    with torch.no_grad():
        net.encoder.blocks[-1].mlp.fc2.weight.mul_(3.0)  # the decoder must see the ViT
    assert before.shape == (1, 2, 64, 64) and not torch.allclose(before, net(x))


def test_cnn_classifier_builds_from_its_card():
    spec = ModelCard(name="c", task="classification", in_chans=1, input_size=64,
                     classes=[{"id": i, "name": f"k{i}", "color": "#000000"} for i in range(3)],
                     architecture={"kind": "cnn_cls", "encoder": "cnn", "width": 4})
    assert create_model(spec)(torch.zeros(5, 1, 64, 64)).shape == (5, 3)


def test_rim_ignore_ring_sits_on_the_labelled_rim_only():
    mask = np.zeros((40, 40), np.uint8)
    yy, xx = np.mgrid[0:40, 0:40]
    mask[np.hypot(xx - 20, yy - 20) < 10] = 1
    data = TaskData("themis-craters", [mask.astype(np.float32)], [mask], ["a"],
                    ["background", "crater"], circles=[np.array([[20.0, 20.0, 20.0]])])
    target = rim_ignore_targets(data, 0.2)[0]
    ring = target == 255
    r = np.hypot(xx[ring] - 20, yy[ring] - 20)
    assert ring.sum() > 0 and r.min() >= 9 and r.max() <= 11
    assert target[20, 20] == 1 and target[0, 0] == 0


def test_crater_chips_keep_the_ignore_ring_and_name_their_images():
    images = [np.full((32, 32), k, np.float32) for k in (1.0, 2.0)]
    masks = [np.full((32, 32), 255, np.uint8), np.zeros((32, 32), np.uint8)]
    data = TaskData("ctx-craters", images, masks, ["a", "b"], ["background", "crater"])
    raw, mask, which = crater_chips(data, 20, 16, np.random.default_rng(0))
    for chip, m, i in zip(raw, mask, which, strict=True):
        assert float(chip[0, 0, 0]) == images[i][0, 0]
        assert int(m[0, 0]) == masks[i][0, 0]


def test_hold_out_keeps_groups_whole_and_apart():
    groups = ["p1", "p1", "p2", "p3", "p3", "p4", "p5"]
    data = TaskData("landmarks", [np.zeros((2, 2))] * 7, list(range(7)), groups, ["a"])
    fit, select = hold_out(data, 0.4)
    assert set(fit.groups).isdisjoint(select.groups)
    assert sorted(fit.groups + select.groups) == sorted(groups)
    assert len(set(select.groups)) == 2


def test_unet_recipe_trains_with_a_learning_curve_and_scene_scaling(themis_like, tmp_path):  # noqa: F811
    recipe = Recipe(architecture="unet", width=4, levels=3, input_size=48, epochs=2, chips=32,
                    batch_size=8, value_scaling="scene_percentile", rim_ignore=0.15,
                    jitter=0.1, zoom=0.2, select_fraction=0.2, lr=2e-3)
    path, metrics = finetune("themis-craters", str(themis_like), tmp_path / "u.bundle",
                             recipe=recipe)
    card_ = load_bundle(path).card
    assert card_.architecture == {"kind": "unet", "encoder": "unet", "width": 4, "levels": 3}
    assert card_.value_scaling == "scene_percentile"
    assert card_.training["recipe"]["zoom"] == 0.2  # masks zoomed with their chips, recorded
    assert card_.normalization == {"mean": 0.5, "std": 0.25}
    curve = card_.training["learning_curve"]
    assert [p["epoch"] for p in curve] == [1, 2] and "crater_f1" in curve[-1]
    # the train split is 8 of the 10 crops; a fifth of them (2) is held out for the curve
    assert card_.training["selection_images"] == 2 and card_.training["train_images"] == 6
    assert "crater_f1" in metrics["themis-craters"]


def test_a_crop_classifier_maps_tiles_the_size_of_its_crops(tmp_path):
    # Trained on 64 px crops resized to 32 px: a map tile must cover 64 scene pixels too.
    from momo_geo.bundle import Bundle
    from momo_geo.inference import map_scene
    from tests.test_frame import rotated_strip

    rotated_strip(tmp_path / "scene.tif", size=128)
    spec = ModelCard(name="c", task="classification", in_chans=1, input_size=32, tile_size=32,
                     tile_overlap=0, source_tile=64, gsd=None,
                     classes=[{"id": i, "name": f"k{i}", "color": "#000000"} for i in range(3)],
                     architecture={"kind": "cnn_cls", "encoder": "cnn", "width": 4})
    bundle = Bundle(card=spec, state_dict=create_model(spec).state_dict())
    result = map_scene(tmp_path / "scene.tif", tmp_path / "m.tif", None, bundle, device="cpu",
                       frame=False)
    assert result.tiles_total == 4 and result.resample_factor == 2.0
