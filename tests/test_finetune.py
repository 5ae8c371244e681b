"""Fine-tuning end to end on a tiny THEMIS-like folder; splits of the real data never leak."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from momo_geo.bundle import load_bundle
from momo_geo.cli import cli
from momo_geo.evaluate import evaluate_bundle, load_task_data
from momo_geo.training.finetune import Recipe, finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def themis_like(tmp_path_factory) -> Path:
    """10 synthetic crater images (96 px) with YOLO labels, laid out like themis_craters/."""
    from momo_geo.synthetic import render_crater_field

    root = tmp_path_factory.mktemp("themis_like")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for i in range(10):
        field = render_crater_field(size=(96, 96), gsd=100.0, seed=i, crater_cover=0.15,
                                    min_diameter_m=600, max_diameter_m=2400)
        Image.fromarray(field.image).save(root / "images" / f"crater{i}.png")
        lines = []
        for row in field.craters.itertuples():
            d = row.diameter_m / 100.0
            lines.append(f"0 {(row.col + 0.5) / 96} {(row.row + 0.5) / 96} {d / 96} {d / 96}")
        (root / "labels" / f"crater{i}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_finetune_writes_a_task_bundle_whose_card_matches_evaluate(themis_like, tmp_path):
    recipe = Recipe(input_size=32, epochs=2, chips=64, batch_size=16, seed=3)
    path, metrics = finetune("themis-craters", str(themis_like), tmp_path / "m.bundle",
                             recipe=recipe)
    bundle = load_bundle(path)
    card = bundle.card
    assert card.task == "segmentation" and card.class_names == ["background", "crater"]
    assert card.architecture["kind"] == "vit_seg" and card.input_size == 32
    assert card.training["recipe"]["seed"] == 3 and card.training["recipe"]["loss"] == "dice_ce"
    m = metrics["themis-craters"]
    assert m["n"] == 2 and 0.0 <= m["iou"] <= 1.0
    assert m["iou_ci"][0] <= m["iou"] <= m["iou_ci"][1]
    again = evaluate_bundle("themis-craters", str(themis_like), str(path))
    assert again["iou"] == m["iou"] and card.metrics["themis-craters"]["iou"] == m["iou"]
    out = bundle.build_model()(torch.zeros(1, 1, 32, 32))
    assert out.shape == (1, 2, 32, 32)


def test_training_is_seeded(themis_like, tmp_path):
    recipe = Recipe(input_size=32, epochs=1, chips=32, batch_size=16, seed=5, frozen=True)
    a = load_bundle(finetune("themis-craters", str(themis_like), tmp_path / "a.bundle",
                             recipe=recipe)[0])
    b = load_bundle(finetune("themis-craters", str(themis_like), tmp_path / "b.bundle",
                             recipe=Recipe(**{**recipe.__dict__}))[0])
    assert a.card.weights_sha256 == b.card.weights_sha256
    # Frozen encoder: the encoder is still the seeded random initialisation; the head moved.
    from momo_geo.models import create_model

    torch.manual_seed(5)
    init = create_model(a.card).state_dict()
    encoder_keys = [k for k in init if k.startswith("encoder.")]
    head_keys = [k for k in init if k.startswith("decoder.") and k.endswith("weight")]
    assert all(torch.equal(init[k], a.state_dict[k]) for k in encoder_keys)
    assert any(not torch.equal(init[k], a.state_dict[k]) for k in head_keys)


def test_finetune_cli_and_evaluate_cli_json(themis_like, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli.bundle"
    args = ["finetune", "--task", "themis-craters", "--data", str(themis_like), "--out",
            str(out), "--epochs", "1", "--chips", "32", "--input-size", "32",
            "--batch-size", "16"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    again = runner.invoke(cli, args)
    assert again.exit_code != 0 and "exists" in str(again.exception)
    result = runner.invoke(cli, ["evaluate", "--task", "themis-craters", "--data",
                                 str(themis_like), "--model", str(out), "--split", "val",
                                 "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["task"] == "themis-craters" and data["n"] == 2
    assert set(data) >= {"iou", "iou_per_image_mean", "f1_pixel", "iou_ci"}
    wrong = runner.invoke(cli, ["evaluate", "--task", "landmarks", "--data", str(themis_like),
                                "--model", str(out), "--json"])
    assert wrong.exit_code != 0


@pytest.mark.shared_data
def test_real_splits_never_share_an_observation_or_a_tile(shared_data):
    train = load_task_data("landmarks", str(shared_data / "hirise_landmarks"), "train")
    val = load_task_data("landmarks", str(shared_data / "hirise_landmarks"), "val")
    assert not set(train.groups) & set(val.groups)
    assert len(train.images) + len(val.images) == 3262
    ctx_train = load_task_data("ctx-craters", str(shared_data / "ctx_craters"), "train")
    ctx_val = load_task_data("ctx-craters", str(shared_data / "ctx_craters"), "val")
    assert not set(ctx_train.groups) & set(ctx_val.groups)
    assert len(ctx_train.groups) + len(ctx_val.groups) == 11
    assert all(np.isin(np.unique(m), [0, 1]).all() for m in ctx_val.targets)


def test_chip_augmentation_preserves_content_and_differs_per_chip():
    from momo_geo.training.task_data import augment_chips

    gen = torch.Generator().manual_seed(0)
    x = torch.arange(64 * 16, dtype=torch.float32).reshape(64, 1, 4, 4)
    out = augment_chips(x, gen, jitter=0.0)
    # Each chip is one of the 8 symmetries of the square: same pixels, maybe moved.
    for a, b in zip(x, out, strict=True):
        views = [torch.rot90(a, k, dims=(-2, -1)) for k in range(4)]
        views += [v.flip(-1) for v in views]
        assert any(torch.equal(v, b) for v in views)
    moved = [not torch.equal(a, b) for a, b in zip(x, out, strict=True)]
    assert 0 < sum(moved) < len(x)  # drawn per chip, not per batch
    jittered = augment_chips(torch.ones(256, 1, 4, 4), gen, jitter=0.1)
    per_chip = jittered.flatten(1)
    assert torch.allclose(per_chip.std(1), torch.zeros(256), atol=1e-6)  # a gain and a shift
    assert float(per_chip.min()) >= 0.8 and float(per_chip.max()) <= 1.21
    assert float(per_chip[:, 0].std()) > 0.02


def test_sqrt_balanced_sampling_draws_rare_classes_more_often():
    from momo_geo.evaluate import TaskData
    from momo_geo.training.task_data import EpochChips

    images = [np.full((8, 8), i % 7, dtype=np.float32) for i in range(500)]
    targets = [0] * 480 + [1] * 20
    data = TaskData("landmarks", images, targets, [str(i) for i in range(500)], ["a", "b"])
    chips = EpochChips("landmarks", data, Recipe(input_size=8, batch_size=50,
                                                   sampling="sqrt_balanced"))
    drawn = torch.cat([y for _, y in chips])
    share = float((drawn == 1).float().mean())
    # 1/sqrt(n) sampling: 20 * (1/sqrt 20) vs 480 * (1/sqrt 480) -> about 17 % (4 % shuffled).
    assert 0.10 < share < 0.26
    shuffled = torch.cat([y for _, y in EpochChips("landmarks", data,
                                                    Recipe(input_size=8, batch_size=50))])
    assert int((shuffled == 1).sum()) == 20


def test_classifier_conv_stem_is_recorded_in_the_card_and_rebuilds(tmp_path):
    from momo_geo.bundle import save_bundle
    from momo_geo.training.finetune import task_card

    recipe = Recipe(input_size=32, cls_stem_dim=4)
    card = task_card("landmarks", recipe)
    assert card.architecture["stem_dim"] == 4
    torch.manual_seed(0)
    from momo_geo.models import create_model

    model = create_model(card).eval()
    assert model.features(torch.zeros(2, 1, 32, 32)).shape == (2, 192 + 16)
    path = save_bundle(tmp_path / "lm.bundle", model.state_dict(), card)
    rebuilt = load_bundle(path).build_model().eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model(x))
    plain = create_model(task_card("landmarks", Recipe(input_size=32)))
    assert plain.stem is None and "stem_dim" not in task_card("landmarks", Recipe()).architecture


def test_weight_averaging_keeps_a_recent_average_not_the_last_step(themis_like, tmp_path):
    recipe = dict(input_size=32, epochs=1, chips=48, batch_size=16, seed=5, select_fraction=0)
    plain = load_bundle(finetune("themis-craters", str(themis_like), tmp_path / "p.bundle",
                                 recipe=Recipe(**recipe))[0])
    averaged = load_bundle(finetune("themis-craters", str(themis_like), tmp_path / "e.bundle",
                                    recipe=Recipe(**recipe, ema=0.8))[0])
    from momo_geo.models import create_model

    torch.manual_seed(5)
    init = create_model(plain.card).state_dict()

    def distance(a: dict, b: dict) -> float:
        return sum(float((a[k].float() - b[k].float()).norm()) for k in a
                   if a[k].is_floating_point())

    last = plain.state_dict
    assert averaged.card.training["recipe"]["ema"] == 0.8
    assert 0 < distance(averaged.state_dict, last) < distance(init, last)
    with pytest.raises(Exception, match="ema"):
        finetune("themis-craters", str(themis_like), tmp_path / "x.bundle",
                 recipe=Recipe(**recipe, ema=1.5))


def test_a_run_continues_another_bundle_and_keeps_its_selection_split(themis_like, tmp_path):
    from momo_geo.errors import MomoGeoError
    from momo_geo.training.finetune import training_split

    base = dict(input_size=32, epochs=1, chips=32, batch_size=16, select_fraction=0.2,
                architecture="unet", width=4, levels=2)
    parent = finetune("themis-craters", str(themis_like), tmp_path / "p.bundle",
                      recipe=Recipe(**base, seed=0))[0]
    child_recipe = Recipe(**base, seed=1, split_seed=0, lr=0.0)  # lr 0: the weights stay
    child = finetune("themis-craters", str(themis_like), tmp_path / "c.bundle",
                     recipe=child_recipe, init_bundle=str(parent))[0]
    p, c = load_bundle(parent), load_bundle(child)
    weights = [k for k in p.state_dict if "running" not in k and "num_batches" not in k]
    assert len(weights) > 4  # (batch-norm statistics do move without a learning rate)
    assert all(torch.equal(p.state_dict[k], c.state_dict[k]) for k in weights)
    assert c.card.training["init_bundle"] == "p.bundle"
    held = {s: training_split("themis-craters", [str(themis_like)],
                              Recipe(**base, seed=s[0], split_seed=s[1]))[1].groups
            for s in ((0, None), (1, 0), (1, None))}
    assert held[(0, None)] == held[(1, 0)] != held[(1, None)]
    with pytest.raises(MomoGeoError, match="same network"):
        finetune("themis-craters", str(themis_like), tmp_path / "x.bundle",
                 recipe=Recipe(**{**base, "width": 8}), init_bundle=str(parent))


def test_zoom_enlarges_a_random_square_and_turns_masks_with_their_chips() -> None:
    from momo_geo.errors import MomoGeoError
    from momo_geo.training.task_data import zoom_chips

    gen = torch.Generator().manual_seed(0)
    x = torch.arange(64, dtype=torch.float32).expand(16, 1, 64, 64).clone()  # value = column
    masks = (x[:, 0] >= 32).long()  # right half is class 1
    out, out_masks = zoom_chips(x, gen, 0.5, masks=masks)
    assert out.shape == x.shape and out_masks.shape == masks.shape
    assert set(out_masks.unique().tolist()) <= {0, 1}
    # zoomed chips are smoother (a square of >= half the side spread over the whole chip) ...
    step = (out[..., :, 1:] - out[..., :, :-1]).abs().amax(dim=(1, 2, 3))
    assert (step < 1.0).all() and (step > 0.49).all()
    # ... and the mask still marks where the image's right half went
    right = out[:, 0] >= 31.5
    assert ((out_masks == 1) == right).float().mean() > 0.98
    assert torch.equal(zoom_chips(x, gen, 0.0), x)  # off: unchanged
    for bad in (-0.1, 1.0):
        with pytest.raises(MomoGeoError, match="zoom"):
            zoom_chips(x, gen, bad)



def test_a_wall_clock_cap_stops_fine_tuning_early_and_the_card_says_so(themis_like, tmp_path):
    """``max_minutes`` is a GPU run's safety net: a schedule far longer than the cap stops
    within a step of it, and the recorded recipe says the schedule was cut."""
    from momo_geo.errors import MomoGeoError

    base = dict(architecture="unet", width=4, levels=2, input_size=32, chips=64,
                batch_size=16)
    capped = Recipe(**base, epochs=500, max_minutes=0.002)  # 2000 steps against 0.12 s
    card = load_bundle(finetune("themis-craters", str(themis_like), tmp_path / "c.bundle",
                                recipe=capped)[0]).card
    assert card.training["recipe"]["extra"]["stopped_at_cap"] is True
    assert card.training["seconds"] < 60
    plain = Recipe(**base, epochs=1)
    card = load_bundle(finetune("themis-craters", str(themis_like), tmp_path / "p.bundle",
                                recipe=plain)[0]).card
    assert "stopped_at_cap" not in card.training["recipe"]["extra"]
    with pytest.raises(MomoGeoError, match="max_minutes"):
        finetune("themis-craters", str(themis_like), tmp_path / "n.bundle",
                 recipe=Recipe(**base, epochs=1, max_minutes=-1))


def test_chip_workers_cut_each_epoch_once_and_the_cpu_stream_is_unchanged(themis_like):
    """With DataLoader workers each cuts its own share of an epoch's batches from its own
    seeded stream (reproducible, fresh every epoch); without them the chips are exactly the
    single-process stream CPU recipes were built with."""
    from momo_geo.training.task_data import EpochChips, crater_chips, normalise, rim_ignore_targets

    data = load_task_data("themis-craters", str(themis_like), "train")
    recipe = Recipe(input_size=32, chips=96, batch_size=16, rim_ignore=0.15, seed=4)

    def epochs(workers: int, n: int = 2) -> list[list[torch.Tensor]]:
        loader = torch.utils.data.DataLoader(
            EpochChips("themis-craters", data, recipe), batch_size=None, num_workers=workers,
            persistent_workers=workers > 0)
        return [[x for x, _ in loader] for _ in range(n)]

    two = epochs(2)
    assert [len(e) for e in two] == [6, 6]
    first = torch.cat(two[0])
    assert len({tuple(x.flatten()[:64].tolist()) for x in two[0]}) == 6  # no batch twice
    assert not torch.equal(first, torch.cat(two[1]))  # a new epoch, new chips
    assert torch.equal(first, torch.cat(epochs(2, 1)[0]))  # seeded
    alone = epochs(0, 1)[0]
    raw, _, which = crater_chips(data, 96, 32, np.random.default_rng([4, 0]),
                                 targets=rim_ignore_targets(data, 0.15))
    assert torch.equal(torch.cat(alone), normalise(raw, recipe))


def test_a_recipes_selection_images_are_drawn_again_as_training_drew_them(themis_like):
    """Scripts that calibrate or measure a built bundle get the very images its training held
    out, and a recipe that holds out none is refused in one line."""
    from momo_geo.errors import MomoGeoError
    from momo_geo.training.finetune import training_split
    from momo_geo.training.recipes import selection_data

    spec = {"task": "themis-craters", "data": [themis_like.name],
            "recipe": {"select_fraction": 0.2, "seed": 3}}
    select = selection_data(spec, str(themis_like.parent))
    recipe = Recipe(select_fraction=0.2, seed=3)
    train, expected = training_split("themis-craters", [str(themis_like)], recipe)
    assert len(select.images) == len(expected.images) == 2
    assert all((a == b).all() for a, b in zip(select.images, expected.images, strict=True))
    assert not any(any((a == b).all() for b in train.images) for a in select.images)
    with pytest.raises(MomoGeoError, match="no selection images"):
        selection_data({**spec, "recipe": {"select_fraction": 0.0}}, str(themis_like.parent))
