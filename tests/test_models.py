"""The MOMO encoder factory, the MAE wrapper and its losses, on real tiny timm ViTs."""

from __future__ import annotations

import pytest
import torch

from momo_geo.bundle import ModelCard, load_bundle, save_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.models.losses import MAELoss, gradient_loss, masked_mse, ssim
from momo_geo.models.mae import MaskedAutoencoder, patchify, unpatchify
from momo_geo.models.vit import (
    adapt_in_chans,
    adapt_state_dict,
    create_encoder,
    encoder_config,
    encoder_features,
    resize_pos_embed,
    sincos_pos_embed,
    timm_name,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_names_map_to_timm() -> None:
    assert timm_name("vit_tiny") == "vit_tiny_patch16_224"
    assert timm_name("vit_base_patch16") == "vit_base_patch16_224"
    assert timm_name("vit_large_patch16_224") == "vit_large_patch16_224"
    with pytest.raises(MomoGeoError, match="unknown encoder"):
        timm_name("resnet50")
    with pytest.raises(MomoGeoError, match="multiple of the patch size"):
        create_encoder("vit_tiny", img_size=70)


def test_encoder_has_frozen_sincos_pos_embed() -> None:
    enc = create_encoder("vit_tiny", img_size=64)
    assert not enc.pos_embed.requires_grad
    assert enc.pos_embed.shape == (1, 1 + 16, 192)
    assert torch.equal(enc.pos_embed, sincos_pos_embed(192, (4, 4)))
    assert torch.count_nonzero(enc.pos_embed[0, 0]) == 0  # class token row is zero
    # every patch position gets a distinct code
    table = enc.pos_embed[0, 1:]
    assert torch.cdist(table, table).fill_diagonal_(1.0).min() > 0.1
    assert "fc_norm.weight" in enc.state_dict()
    assert "norm.weight" in create_encoder("vit_tiny", 64, global_pool="token").state_dict()


@pytest.mark.parametrize("size", [64, 96])
def test_encoder_features_multi_level(size: int) -> None:
    enc = create_encoder("vit_tiny", img_size=size).eval()
    x = torch.randn(2, 3, size, size)
    maps = encoder_features(enc, x)
    assert len(maps) == 4
    assert all(m.shape == (2, 192, size // 16, size // 16) for m in maps)
    two = encoder_features(enc, x, layers=(1, -1))
    assert torch.allclose(two[1], maps[-1])
    assert not torch.allclose(two[0], two[1])


def test_one_band_sum_equals_replicated_grey() -> None:
    enc3 = create_encoder("vit_tiny", img_size=64).eval()
    enc1 = create_encoder("vit_tiny", img_size=64, in_chans=1).eval()
    enc1.load_state_dict(adapt_in_chans(enc3.state_dict(), 1))
    grey = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(enc1(grey), enc3(grey.expand(-1, 3, -1, -1)), atol=1e-5)


def test_pos_embed_resize_and_norm_keys() -> None:
    enc224 = create_encoder("vit_tiny", img_size=224, global_pool="token")
    resized = resize_pos_embed(enc224.state_dict(), 96)
    assert resized["pos_embed"].shape == (1, 1 + 36, 192)
    enc96 = create_encoder("vit_tiny", img_size=96, global_pool="avg")
    missing, unexpected = enc96.load_state_dict(adapt_state_dict(enc224.state_dict(), enc96))
    assert not missing and not unexpected
    assert torch.equal(enc96.fc_norm.weight, enc224.norm.weight)


def test_patchify_roundtrip() -> None:
    x = torch.randn(2, 3, 32, 48)
    p = patchify(x, 16)
    assert p.shape == (2, 6, 768)
    assert torch.equal(unpatchify(p, 16, (2, 3), 3), x)
    assert torch.equal(p[0, 1], x[0, :, :16, 16:32].permute(1, 2, 0).reshape(-1))


def test_mae_forward_masks_three_quarters_and_learns() -> None:
    torch.manual_seed(0)
    mae = MaskedAutoencoder(create_encoder("vit_tiny", img_size=64, depth=4))
    x = torch.randn(4, 3, 64, 64)
    noise = torch.rand(4, 16)
    loss, pred, mask = mae(x, noise)
    assert pred.shape == (4, 16, 16 * 16 * 3)
    assert mask.sum(dim=1).tolist() == [12.0] * 4
    # the hidden patches are the 12 with the largest noise
    assert torch.equal(mask.bool(), noise >= noise.sort(dim=1).values[:, 4:5])
    opt = torch.optim.AdamW([p for p in mae.parameters() if p.requires_grad], lr=1e-3)
    first = float(loss.detach())
    for _ in range(15):
        loss, _, _ = mae(x, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.8 * first
    assert mae.encoder.pos_embed.grad is None


def test_masked_mse_ignores_visible_patches() -> None:
    target = torch.zeros(1, 4, 3)
    pred = torch.zeros(1, 4, 3)
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    pred[0, 1] = 100.0  # a visible patch: must not count
    pred[0, 2] = 2.0  # a hidden patch: squared error 4 on one of two hidden patches
    assert float(masked_mse(pred, target, mask)) == pytest.approx(2.0)


def test_image_terms() -> None:
    torch.manual_seed(1)
    a = torch.randn(2, 3, 32, 32)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-5)
    assert float(ssim(a, torch.randn_like(a))) < 0.2
    assert float(gradient_loss(a, a)) == 0.0
    assert float(gradient_loss(a + 5.0, a)) == pytest.approx(0.0, abs=1e-6)  # offset-blind
    assert float(gradient_loss(a * 2, a)) > 0.1


def test_mae_loss_with_perceptual_ssim_gradient() -> None:
    torch.manual_seed(2)
    enc = create_encoder("vit_tiny", img_size=32)
    loss_fn = MAELoss(pixel=1.0, perceptual=0.5, ssim=0.2, gradient=0.1,
                      feature_net=create_encoder("vit_tiny", img_size=32))
    mae = MaskedAutoencoder(enc, loss=loss_fn)
    loss, _, _ = mae(torch.randn(2, 3, 32, 32))
    parts = mae.last_parts
    assert set(parts) == {"pixel", "perceptual", "ssim", "gradient"}
    expected = parts["pixel"] + 0.5 * parts["perceptual"] + 0.2 * parts["ssim"] \
        + 0.1 * parts["gradient"]
    assert torch.allclose(loss, expected)
    loss.backward()
    frozen = loss_fn.perceptual_net.net
    assert all(p.grad is None for p in frozen.parameters())
    card = loss_fn.describe()
    assert card["perceptual_network"] == "frozen-encoder-features"
    assert card["weights"]["ssim"] == 0.2
    assert not any(k.startswith("loss_fn.") for k in mae.mae_state_dict())
    with pytest.raises(ValueError, match="feature network"):
        MAELoss(perceptual=1.0)


def test_pretrain_bundle_builds_the_encoder(tmp_path) -> None:
    enc = create_encoder("vit_tiny", img_size=64).eval()
    card = ModelCard(name="t", task="pretrain", architecture=encoder_config(enc, "vit_tiny"),
                     input_size=64)
    save_bundle(tmp_path / "t.bundle", enc.state_dict(), card)
    model = load_bundle(tmp_path / "t.bundle").build_model()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), enc(x))
