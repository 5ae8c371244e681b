"""One bundle, one normalisation: pretraining, fine-tuning, evaluation and mapping feed the model
exactly the same tensor for the same image, taken from the statistics the bundle records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from momo_geo.bundle import ModelCard, load_bundle, save_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.evaluate import TaskData, crop_input
from momo_geo.inference.engine import Predictor, predict_array
from momo_geo.models.vit import create_encoder, encoder_config
from momo_geo.normalization import fold_patch_embed, grey_normalization
from momo_geo.preprocess import to_model_input
from momo_geo.sensors import ALL_SENSORS_NORMALIZATION, get_sensor
from momo_geo.training.finetune import Recipe, build_task_model, task_card
from momo_geo.training.pretrain import PretrainConfig
from momo_geo.training.pretrain_data import pretrain_input
from momo_geo.training.task_data import EpochChips

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32
ODD_STATS = {"mean": [0.41, 0.47, 0.52], "std": [0.21, 0.18, 0.24]}
"""Per-channel statistics no default anywhere uses: a path that ignores the card shows."""
CLASSES = ["other", "crater"]


def _encoder_bundle(folder: Path, normalization: dict) -> Path:
    torch.manual_seed(0)
    encoder = create_encoder("vit_tiny", img_size=SIZE)
    with torch.no_grad():
        encoder.patch_embed.proj.bias.normal_(0, 0.1)
    card = ModelCard(name="enc", task="pretrain", architecture=encoder_config(encoder, "vit_tiny"),
                     input_size=SIZE, in_chans=3, value_scaling="tile_minmax",
                     normalization=normalization, tile_size=SIZE, tile_overlap=8)
    return save_bundle(folder / "enc.bundle", encoder.state_dict(), card)


def _image() -> np.ndarray:
    rng = np.random.default_rng(3)
    return (rng.random((SIZE, SIZE)) * 700 + 30).astype(np.float32)  # raw values, no nodata


def _task_bundle(folder: Path, encoder: Path, recipe: Recipe) -> tuple[Path, ModelCard]:
    """A landmark-style classifier fine-tuned from ``encoder`` (weights as built, untrained)."""
    card = task_card("landmarks", recipe, CLASSES, "task", load_bundle(encoder).card)
    model, _ = build_task_model(card, str(encoder))
    return save_bundle(folder / f"task-{recipe.value_scaling}-{recipe.in_chans}.bundle",
                       model.state_dict(), card), card


def _map_input(bundle: Path, image: np.ndarray) -> torch.Tensor:
    """The tensor ``momo-geo map`` feeds the model (engine of predict_array), by a hook."""
    predictor = Predictor(load_bundle(bundle), "cpu")
    seen: list[torch.Tensor] = []
    predictor.model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    predict_array(None, image, predictor=predictor)
    assert len(seen) == 1, "one tile expected"
    return seen[0]


def _finetune_input(recipe: Recipe, card: ModelCard, image: np.ndarray) -> torch.Tensor:
    """The tensor fine-tuning trains on for this crop (the landmark chips of the epoch)."""
    data = TaskData("landmarks", [image], [1], ["g0"], CLASSES)
    return EpochChips("landmarks", data, recipe, card.normalization).x[:1]


@pytest.mark.parametrize("value_scaling", ["tile_minmax", "scene_percentile"])
def test_one_bundle_gives_identical_inputs_on_every_path(tmp_path: Path,
                                                          value_scaling: str) -> None:
    encoder = _encoder_bundle(tmp_path, ODD_STATS)
    recipe = Recipe(input_size=SIZE, in_chans=3, architecture="vit_cls", batch_size=1,
                    value_scaling=value_scaling)
    task, card = _task_bundle(tmp_path, encoder, recipe)
    assert card.normalization == ODD_STATS  # the encoder's record, not a default
    image = _image()

    finetune = _finetune_input(recipe, card, image)
    evaluate = crop_input(load_bundle(task).card, image)
    mapped = _map_input(task, image)
    assert finetune.shape == (1, 3, SIZE, SIZE)
    assert torch.equal(finetune, evaluate)
    assert torch.equal(finetune, mapped)
    if value_scaling == "tile_minmax":  # pretraining stretches per tile, as this card says
        config = PretrainConfig(init_from=str(encoder), img_size=SIZE, samples=8, batch_size=8)
        assert config.normalization == ODD_STATS
        raw = torch.from_numpy(image)[None, None]
        pretrain = pretrain_input(raw, torch.ones_like(raw, dtype=torch.bool),
                                  config.normalization)
        assert torch.equal(finetune, pretrain)
    # and the statistics really are per channel (a scalar default would give equal channels)
    assert not torch.equal(finetune[:, 0], finetune[:, 1])


def test_a_grey_task_model_folds_per_channel_statistics_exactly(tmp_path: Path) -> None:
    """Fine-tuning a 3-channel encoder with per-channel statistics into a 1-channel model: the
    card records one grey statistic and the folded patch kernel gives the encoder's tokens for
    the tensor pretraining fed it, on every path."""
    encoder = _encoder_bundle(tmp_path, ODD_STATS)
    recipe = Recipe(input_size=SIZE, in_chans=1, architecture="vit_cls", batch_size=1)
    task, card = _task_bundle(tmp_path, encoder, recipe)
    assert card.normalization == grey_normalization(ODD_STATS)
    image = _image()
    grey = _finetune_input(recipe, card, image)
    assert torch.equal(grey, _map_input(task, image))
    assert torch.equal(grey, crop_input(load_bundle(task).card, image))
    raw = torch.from_numpy(image)[None, None]
    rgb = pretrain_input(raw, None, ODD_STATS)
    enc = load_bundle(encoder).build_model()
    model = load_bundle(task).build_model()
    with torch.no_grad():
        want = enc.patch_embed(rgb)
        got = model.encoder.patch_embed(grey)
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())


def test_fold_is_the_plain_sum_under_one_statistic() -> None:
    torch.manual_seed(1)
    state = {"patch_embed.proj.weight": torch.randn(4, 3, 2, 2),
             "patch_embed.proj.bias": torch.randn(4)}
    norm = {"mean": 0.5, "std": 0.2}
    folded = fold_patch_embed(state, norm, norm)
    assert torch.allclose(folded["patch_embed.proj.weight"],
                          state["patch_embed.proj.weight"].sum(1, keepdim=True))
    assert torch.allclose(folded["patch_embed.proj.bias"], state["patch_embed.proj.bias"])


def test_per_channel_statistics_on_the_wrong_channel_count_are_refused() -> None:
    tile = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="3 means"):
        to_model_input(tile, ODD_STATS["mean"], ODD_STATS["std"], in_chans=1)
    with pytest.raises(MomoGeoError, match="per-channel normalization"):
        ModelCard(name="x", task="pretrain", architecture={"encoder": "vit_tiny"}, in_chans=1,
                  normalization=ODD_STATS)


def test_pretraining_statistics_are_decided_in_one_place(tmp_path: Path) -> None:
    joint = {"mean": ALL_SENSORS_NORMALIZATION.mean, "std": ALL_SENSORS_NORMALIZATION.std}
    assert PretrainConfig(sensors="hirise").normalization == joint  # the experiment's
    assert PretrainConfig(sensors="all").normalization == joint
    hirise = get_sensor("hirise").normalization
    assert PretrainConfig(sensors="hirise", statistics="sensor").normalization == {
        "mean": hirise.mean, "std": hirise.std}
    with pytest.raises(MomoGeoError, match="one-sensor"):
        PretrainConfig(sensors="all", statistics="sensor")
    encoder = _encoder_bundle(tmp_path, ODD_STATS)
    assert PretrainConfig(init_from=str(encoder)).normalization == ODD_STATS  # continuation
    assert PretrainConfig(init_from=str(encoder), statistics="joint").normalization == joint
