"""Merged crater networks (``merge_of`` recipes): the weights are task arithmetic over the
runs, BatchNorm statistics are measured again, and the bundle is calibrated and scored like a
trained arm."""

from __future__ import annotations

import pytest
import torch

from momo_geo.bundle import load_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.models import create_model
from momo_geo.training.finetune import Recipe, finetune, task_card
from momo_geo.training.recipes import build_model
from momo_geo.training.soup import merged_weights, recompute_batchnorm
from tests.test_finetune import themis_like  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = dict(input_size=32, chips=32, batch_size=16, select_fraction=0.2, architecture="unet",
            width=4, levels=2, split_seed=0)


def unet_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return create_model(task_card("themis-craters", Recipe(**BASE))).state_dict()


def test_the_merged_weights_are_the_mean_of_the_runs_and_keep_the_base_counters():
    base, one, two = unet_state(0), unet_state(1), unet_state(2)
    one = {k: v + 5 if not v.is_floating_point() else v for k, v in one.items()}
    mean = merged_weights(base, [one, two], lam=0.5)
    floats = [k for k, v in base.items() if v.is_floating_point()]
    assert any(k.startswith("up.") for k in floats)  # the decoder merges too
    for key in floats:
        assert torch.allclose(mean[key], (one[key] + two[key]) / 2, atol=1e-6), key
    counters = [k for k, v in base.items() if not v.is_floating_point()]
    assert counters and all(torch.equal(mean[k], base[k]) for k in counters)
    alone = merged_weights(base, [one], lam=1.0)
    assert all(torch.allclose(alone[k], one[k], atol=1e-6) for k in floats)
    with pytest.raises(MomoGeoError, match="at least one tuned"):
        merged_weights(base, [], lam=0.5)


def test_batchnorm_statistics_are_measured_again_on_training_chips(themis_like):  # noqa: F811
    from momo_geo.evaluate import load_task_data

    recipe = Recipe(**BASE, seed=4)
    card = task_card("themis-craters", recipe)
    data = load_task_data("themis-craters", str(themis_like), "train")
    stats = []
    for _ in range(2):
        torch.manual_seed(0)
        model = create_model(card)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.fill_(100.0)
        assert recompute_batchnorm(model, "themis-craters", data, recipe, 32,
                                   card.normalization) == 32
        stats.append({k: v.clone() for k, v in model.state_dict().items() if "running" in k})
        assert not model.training
    assert all((v != 100.0).all() and torch.isfinite(v).all() for v in stats[0].values())
    assert all(torch.equal(stats[0][k], stats[1][k]) for k in stats[0])  # seeded chips
    card_cls = task_card("landmarks", Recipe(architecture="cnn_cls", width=4, input_size=32),
                         ["a", "b"])
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    assert recompute_batchnorm(plain, "landmarks", None, recipe, 32, card_cls.normalization) == 0
    kept = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert recompute_batchnorm(model, "themis-craters", data, recipe, 0, card.normalization) == 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in kept.items())  # untouched


def test_a_merge_recipe_builds_the_mean_of_two_continuations_calibrated_and_scored(
        themis_like, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    parent = finetune("themis-craters", str(themis_like), out / "p.bundle",
                      recipe=Recipe(**BASE, epochs=1, seed=0))[0]
    for name, seed in (("a", 1), ("b", 2)):
        finetune("themis-craters", str(themis_like), out / f"{name}.bundle",
                 recipe=Recipe(**BASE, epochs=1, seed=seed, lr=1e-2), init_bundle=str(parent))
    recipe = {"bundle": "m.bundle",
              "merge_of": {"base": "p.bundle", "tuned": ["a.bundle", "b.bundle"], "lam": 0.5,
                           "batchnorm_chips": 32},
              "finetune_from": "scratch",
              "finetune": {"task": "themis-craters", "data": [themis_like.name],
                           "recipe": {**BASE, "epochs": 0, "seed": 9}},
              "card": {"name": "merged", "description": "the mean of a and b"}}
    path = build_model(recipe, out, tmp_path / "work", str(themis_like.parent))
    merged, a, b = (load_bundle(out / f"{n}.bundle") for n in ("m", "a", "b"))
    weights = [k for k in merged.state_dict if "running" not in k and "num_batches" not in k]
    assert len(weights) > 4
    for key in weights:
        mean = (a.state_dict[key].float() + b.state_dict[key].float()) / 2
        assert torch.allclose(merged.state_dict[key].float(), mean, atol=1e-6), key
    running = [k for k in merged.state_dict if "running_mean" in k]
    assert any(not torch.allclose(merged.state_dict[k], (a.state_dict[k] + b.state_dict[k]) / 2)
               for k in running)  # measured again, not averaged
    training = merged.card.training
    assert training["merge_of"] == {"base": "p.bundle", "tuned": ["a.bundle", "b.bundle"],
                                    "lam": 0.5, "batchnorm_chips": 32}
    assert training["learning_curve"][0]["samples"] == 0 and training["calibration"]["sweep"]
    assert training["regenerate"].startswith("make models")
    assert merged.card.metrics["themis-craters"]["n"] == 2
    assert merged.card.description == "the mean of a and b" and path == out / "m.bundle"
    again = build_model({**recipe, "bundle": "m2.bundle"}, out, tmp_path / "work",
                        str(themis_like.parent))
    assert all(torch.equal(load_bundle(again).state_dict[k], merged.state_dict[k])
               for k in merged.state_dict)  # seeded: the same merge twice


def test_a_merge_refuses_runs_it_cannot_average(themis_like, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    finetune("themis-craters", str(themis_like), out / "p.bundle",
             recipe=Recipe(**BASE, epochs=1, seed=0))
    finetune("themis-craters", str(themis_like), out / "wide.bundle",
             recipe=Recipe(**{**BASE, "width": 8}, epochs=1, seed=0))
    recipe = {"bundle": "m.bundle", "merge_of": {"base": "p.bundle", "tuned": ["wide.bundle"]},
              "finetune": {"task": "themis-craters", "data": [themis_like.name],
                           "recipe": {**BASE, "epochs": 0}},
              "card": {"name": "merged"}}
    with pytest.raises(MomoGeoError, match="same network"):
        build_model(recipe, out, tmp_path / "work", str(themis_like.parent))
    with pytest.raises(MomoGeoError, match="at least one tuned"):
        build_model({**recipe, "merge_of": {"base": "p.bundle", "tuned": []}}, out,
                    tmp_path / "work", str(themis_like.parent))
    missing = {**recipe, "merge_of": {"base": "p.bundle", "tuned": ["gone.bundle"]}}
    with pytest.raises(MomoGeoError, match="merge_of: .* is not built"):
        build_model(missing, out, tmp_path / "work", str(themis_like.parent))
    assert not (out / "m.bundle").exists()
