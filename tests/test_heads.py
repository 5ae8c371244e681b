"""Task heads: shapes per the engine's contract, bundles round-trip, lr decay, losses."""

from __future__ import annotations

import pytest
import torch

from momo_geo.bundle import ClassInfo, ModelCard, load_bundle, save_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.models import create_model
from momo_geo.models.heads import (
    DiceCELoss,
    freeze_encoder,
    load_encoder_weights,
    make_loss,
    param_groups_lrd,
)
from momo_geo.models.vit import create_encoder

SIZE = 32  # 2x2 tokens: the smallest grid that keeps every code path


def card(task: str, kind: str, n: int) -> ModelCard:
    classes = [ClassInfo(i, f"c{i}", "#000000") for i in range(n)]
    return ModelCard(name="t", task=task, architecture={"kind": kind, "encoder": "vit_tiny"},
                     input_size=SIZE, in_chans=1, classes=classes, tile_size=SIZE,
                     tile_overlap=8)


def test_segmenter_returns_full_resolution_logits() -> None:
    torch.manual_seed(0)
    model = create_model(card("segmentation", "vit_seg", 2)).eval()
    out = model(torch.randn(3, 1, SIZE, SIZE))
    assert out.shape == (3, 2, SIZE, SIZE)
    assert len(model.features(torch.randn(1, 1, SIZE, SIZE))) == 4


def test_classifier_returns_one_logit_per_class() -> None:
    model = create_model(card("classification", "vit_cls", 8)).eval()
    assert model(torch.randn(5, 1, SIZE, SIZE)).shape == (5, 8)


def test_bundle_round_trip_rebuilds_the_same_network(tmp_path) -> None:
    torch.manual_seed(1)
    c = card("segmentation", "vit_seg", 2)
    model = create_model(c).eval()
    x = torch.randn(2, 1, SIZE, SIZE)
    path = save_bundle(tmp_path / "m.bundle", model.state_dict(), c)
    rebuilt = load_bundle(path).build_model()
    assert torch.allclose(model(x), rebuilt(x), atol=1e-5)


def test_encoder_weights_load_from_a_pretrain_state_and_misfits_fail() -> None:
    torch.manual_seed(2)
    encoder = create_encoder("vit_tiny", img_size=SIZE, in_chans=1)
    model = create_model(card("classification", "vit_cls", 3))
    load_encoder_weights(model, {f"encoder.{k}": v for k, v in encoder.state_dict().items()})
    assert torch.equal(model.encoder.blocks[3].mlp.fc1.weight, encoder.blocks[3].mlp.fc1.weight)
    partial = dict(list(encoder.state_dict().items())[:5])
    with pytest.raises(MomoGeoError, match="miss"):
        load_encoder_weights(model, partial)


def test_layer_decay_scales_deeper_layers_less() -> None:
    model = create_model(card("classification", "vit_cls", 3))
    groups = param_groups_lrd(model, lr=1.0, layer_decay=0.5)
    by_param = {id(p): g["lr"] for g in groups for p in g["params"]}
    head = by_param[id(model.head.weight)]
    last = by_param[id(model.encoder.blocks[11].attn.qkv.weight)]
    first = by_param[id(model.encoder.blocks[0].attn.qkv.weight)]
    embed = by_param[id(model.encoder.patch_embed.proj.weight)]
    assert head == 1.0
    assert last == pytest.approx(0.5 ** 1)
    assert first == pytest.approx(0.5 ** 12)
    assert embed == pytest.approx(0.5 ** 13)
    no_decay = [g for g in groups if any(p is model.head.bias for p in g["params"])]
    assert no_decay[0]["weight_decay"] == 0.0


def test_frozen_encoder_gets_no_parameter_groups() -> None:
    model = create_model(card("segmentation", "vit_seg", 2))
    freeze_encoder(model)
    params = {id(p) for g in param_groups_lrd(model, 1e-3) for p in g["params"]}
    assert not any(id(p) in params for p in model.encoder.parameters())
    assert id(model.decoder.stem[0][0].weight) in params


def test_dice_ce_prefers_the_right_mask_and_ignores_nodata() -> None:
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:5, 2:5] = 1
    good = torch.stack([(target == 0).float(), (target == 1).float()], 1) * 8 - 4
    bad = good.flip(1)
    loss = DiceCELoss()
    assert loss(good, target) < 0.1 < loss(bad, target)
    ignored = target.clone()
    ignored[0, 2:5, 2:5] = 255
    assert loss(bad, ignored) < loss(bad, target)
    assert isinstance(make_loss("ce"), torch.nn.CrossEntropyLoss)
    with pytest.raises(ValueError):
        make_loss("focal")
