"""The MOMO encoder factory, the MAE wrapper and its losses, on real tiny timm ViTs."""

from __future__ import annotations

import pytest
import torch

from momo_geo.bundle import ModelCard, load_bundle, save_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.models.losses import MAELoss, gradient_loss, loss_weights, masked_mse, ssim
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


def test_mae_loss_with_feature_ssim_gradient() -> None:
    torch.manual_seed(2)
    enc = create_encoder("vit_tiny", img_size=32)
    loss_fn = MAELoss(pixel=1.0, feature=0.5, ssim=0.2, gradient=0.1,
                      feature_net=create_encoder("vit_tiny", img_size=32))
    mae = MaskedAutoencoder(enc, loss=loss_fn)
    loss, _, _ = mae(torch.randn(2, 3, 32, 32))
    parts = mae.last_parts
    assert set(parts) == {"pixel", "feature", "ssim", "gradient"} == set(loss_fn.enabled)
    expected = parts["pixel"] + 0.5 * parts["feature"] + 0.2 * parts["ssim"] \
        + 0.1 * parts["gradient"]
    assert torch.allclose(loss, expected)
    loss.backward()
    frozen = loss_fn.feature_net.net
    assert all(p.grad is None for p in frozen.parameters())
    card = loss_fn.describe()
    assert "not LPIPS" in card["feature_network"]
    assert card["weights"]["ssim"] == 0.2
    assert not any(k.startswith("loss_fn.") for k in mae.mae_state_dict())
    with pytest.raises(ValueError, match="feature network"):
        MAELoss(feature=1.0)
    # the old name still works (configs and recipes written before the rename)
    old = MAELoss(perceptual=0.5, feature_net=enc)
    assert old.weights["feature"] == 0.5 and "perceptual" not in old.weights
    assert loss_weights({"perceptual": 0.1})["feature"] == 0.1
    with pytest.raises(ValueError, match="unknown loss term"):
        loss_weights({"lpips": 1.0})


def test_a_term_with_weight_zero_is_off() -> None:
    loss_fn = MAELoss(pixel=1.0, ssim=0.0, gradient=0.3)
    assert loss_fn.enabled == ["pixel", "gradient"] and loss_fn.feature_net is None
    mae = MaskedAutoencoder(create_encoder("vit_tiny", img_size=32), loss=loss_fn)
    mae(torch.randn(1, 3, 32, 32))
    assert set(mae.last_parts) == {"pixel", "gradient"}


@pytest.mark.parametrize("term", ["pixel", "ssim", "gradient", "feature"])
def test_each_term_is_zero_for_identical_images_positive_otherwise(term: str) -> None:
    """Every term alone: 0 when the reconstruction is the input, > 0 when it is not, and its
    gradient reaches the prediction."""
    torch.manual_seed(3)
    weights = dict.fromkeys(("pixel", "ssim", "gradient", "feature"), 0.0)
    weights[term] = 1.0
    net = create_encoder("vit_tiny", img_size=32)
    loss_fn = MAELoss(**weights, feature_net=net if term == "feature" else None)
    image = torch.randn(2, 3, 32, 32)
    target = patchify(image, 16)
    mask = torch.ones(2, 4)
    same, parts = loss_fn(target.clone(), target, mask, image.clone(), image)
    assert set(parts) == {term}
    assert float(same) == pytest.approx(0.0, abs=1e-5)
    pred = (target + 0.5 * torch.randn_like(target)).requires_grad_(True)
    pasted = unpatchify(pred, 16, (2, 2), 3)
    differ, _ = loss_fn(pred, target, mask, pasted, image)
    assert float(differ.detach()) > 1e-3
    differ.backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0


def test_ssim_matches_a_hand_computed_value() -> None:
    """Constant images: every window has mean a (b), no variance, so SSIM is
    (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 L)^2; and a 4 x 4 image against a
    loop-by-loop evaluation of the formula over reflected 3 x 3 windows."""
    a, b, big_l = 0.2, 0.6, 1.0
    c1 = (0.01 * big_l) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # 0.24010 / 0.40010
    got = ssim(torch.full((1, 1, 5, 5), a), torch.full((1, 1, 5, 5), b), window=3,
               data_range=big_l)
    assert float(got) == pytest.approx(expected, rel=2e-4)  # float32 variance rounding

    import numpy as np

    x = np.array([[0, 1, 2, 3], [1, 0, 1, 2], [3, 1, 0, 1], [2, 3, 1, 0]], dtype=np.float64)
    y = x.T[::-1].copy() * 0.5 + 0.25
    c1, c2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2
    px, py = np.pad(x, 1, mode="reflect"), np.pad(y, 1, mode="reflect")
    values = []
    for i in range(4):
        for j in range(4):
            wx, wy = px[i:i + 3, j:j + 3], py[i:i + 3, j:j + 3]
            mx, my = wx.mean(), wy.mean()
            vx, vy = (wx * wx).mean() - mx ** 2, (wy * wy).mean() - my ** 2
            cov = (wx * wy).mean() - mx * my
            values.append((2 * mx * my + c1) * (2 * cov + c2)
                          / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    got = ssim(torch.tensor(x)[None, None].float(), torch.tensor(y)[None, None].float(),
               window=3, data_range=2.0)
    assert float(got) == pytest.approx(float(np.mean(values)), rel=1e-4)


def test_pretrain_bundle_builds_the_encoder(tmp_path) -> None:
    enc = create_encoder("vit_tiny", img_size=64).eval()
    card = ModelCard(name="t", task="pretrain", architecture=encoder_config(enc, "vit_tiny"),
                     input_size=64)
    save_bundle(tmp_path / "t.bundle", enc.state_dict(), card)
    model = load_bundle(tmp_path / "t.bundle").build_model()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), enc(x))
