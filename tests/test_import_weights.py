"""Importing released MOMO checkpoints: key mapping, identical features, refusal of pickled code."""

from __future__ import annotations

import argparse
import builtins
from pathlib import Path

import pytest
import timm
import torch
from click.testing import CliRunner
from timm.layers import resample_abs_pos_embed

from momo_geo.bundle import load_bundle
from momo_geo.cli import cli
from momo_geo.errors import MomoGeoError
from momo_geo.weights_import import download_released, import_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _released_like(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint laid out like the MOMO release: {'model': MAE state dict, 'args': Namespace}.

    Encoder keys as timm names them with the class-token head (``norm.*``), plus the MAE decoder,
    the mask token and an LPIPS network, all of which importing must drop.
    """
    torch.manual_seed(seed)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                            global_pool="token")
    state = {k: v.clone() for k, v in vit.state_dict().items()}
    state["pos_embed"] = torch.randn_like(state["pos_embed"]) * 0.02
    state["mask_token"] = torch.zeros(1, 1, 128)
    state["decoder_embed.weight"] = torch.randn(128, 192)
    state["decoder_pos_embed"] = torch.zeros(1, 197, 128)
    state["decoder_blocks.0.attn.qkv.weight"] = torch.randn(384, 128)
    state["decoder_pred.weight"] = torch.randn(768, 128)
    state["lpips_fn.net.slice1.0.weight"] = torch.randn(64, 3, 11, 11)
    args = argparse.Namespace(model="mae_vit_tiny_patch16", input_size=224, mask_ratio=0.75,
                              norm_pix_loss=False, blr=1e-3, batch_size=256)
    torch.save({"model": state, "args": args}, path)
    return state


def _hand_loaded(state: dict[str, torch.Tensor], img_size: int = 224) -> torch.nn.Module:
    """The reference: a timm ViT with average pooling, loaded key by key by hand."""
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                            global_pool="avg", img_size=img_size)
    own = {}
    for key, value in state.items():
        if key.startswith(("decoder_", "mask_token", "lpips_fn.")):
            continue
        own[key.replace("norm.", "fc_norm.") if key.startswith("norm.") else key] = value
    if img_size != 224:
        grid = img_size // 16
        own["pos_embed"] = resample_abs_pos_embed(own["pos_embed"], [grid, grid], [14, 14])
    vit.load_state_dict(own)
    return vit.eval()


def test_released_layout_imports_with_identical_features(tmp_path) -> None:
    state = _released_like(tmp_path / "momo.pth")
    bundle_path = import_weights(tmp_path / "momo.pth", "vit_tiny", tmp_path / "momo.bundle")
    bundle = load_bundle(bundle_path)
    assert not any(k.startswith(("decoder", "mask_token", "lpips")) for k in bundle.state_dict)
    assert bundle.card.task == "pretrain"
    assert bundle.card.sensors == ["hirise", "ctx", "themis"]
    assert bundle.card.training["args"]["mask_ratio"] == 0.75
    model = bundle.build_model()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), _hand_loaded(state)(x))
        assert torch.equal(model.forward_features(x), _hand_loaded(state).forward_features(x))


def test_import_at_another_input_size(tmp_path) -> None:
    state = _released_like(tmp_path / "ctx.pth", seed=1)
    bundle = load_bundle(import_weights(tmp_path / "ctx.pth", "vit_tiny", tmp_path / "c.bundle",
                                        img_size=96))
    assert bundle.card.sensors == ["ctx"]
    assert bundle.card.input_size == 96
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(bundle.build_model()(x), _hand_loaded(state, 96)(x), atol=1e-6)


class _Payload:
    """Pickles into a call of ``open(marker, "w")``: creating the file would prove execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (builtins.open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused_without_running(tmp_path) -> None:
    marker = tmp_path / "payload-ran"
    state = {"cls_token": torch.zeros(1, 1, 192)}
    torch.save({"model": state, "args": _Payload(marker)}, tmp_path / "evil.pth")
    assert not marker.exists()
    with pytest.raises(MomoGeoError, match="refused.*pickled code"):
        import_weights(tmp_path / "evil.pth", "vit_tiny", tmp_path / "evil.bundle")
    assert not marker.exists()
    assert not (tmp_path / "evil.bundle").exists()
    result = CliRunner().invoke(cli, ["import-weights", str(tmp_path / "evil.pth"), "--arch",
                                      "vit_tiny", "-o", str(tmp_path / "evil.bundle")])
    assert result.exit_code != 0
    assert not marker.exists()


def test_wrong_architecture_and_layout_are_clear_errors(tmp_path) -> None:
    _released_like(tmp_path / "momo.pth")
    with pytest.raises(MomoGeoError, match="shape .* is --arch right"):
        import_weights(tmp_path / "momo.pth", "vit_small", tmp_path / "s.bundle")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(MomoGeoError, match="expected"):
        import_weights(tmp_path / "list.pth", "vit_tiny", tmp_path / "l.bundle")
    with pytest.raises(MomoGeoError, match="no such checkpoint"):
        import_weights(tmp_path / "nope.pth", "vit_tiny", tmp_path / "n.bundle")


def test_cli_import_and_offline_hub(tmp_path, monkeypatch) -> None:
    _released_like(tmp_path / "hirise.pth")
    out = tmp_path / "h.bundle"
    result = CliRunner().invoke(cli, ["import-weights", str(tmp_path / "hirise.pth"), "--arch",
                                      "vit_tiny", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert load_bundle(out).card.sensors == ["hirise"]
    import huggingface_hub.constants

    # offline as in CI: the hub library reads this flag at call time
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MomoGeoError, match="could not download momo.pth"):
        download_released("example/momo", "momo.pth", cache_dir=str(tmp_path / "hub"))


def test_imported_statistics_are_imagenet_and_the_grey_fold_is_exact(tmp_path) -> None:
    """MOMO pretrained with ImageNet's per-channel statistics: the card says so, and the
    1-channel import (statistics folded into the patch kernel and bias) gives the 3-channel
    model's features for a grey tile, where a plain kernel sum does not."""
    from momo_geo.normalization import IMAGENET_NORMALIZATION
    from momo_geo.preprocess import to_model_input

    state = _released_like(tmp_path / "momo.pth")
    state["patch_embed.proj.bias"] = torch.randn_like(state["patch_embed.proj.bias"]) * 0.1
    torch.save({"model": state, "args": argparse.Namespace(input_size=224)},
               tmp_path / "momo.pth")
    rgb = load_bundle(import_weights(tmp_path / "momo.pth", "vit_tiny", tmp_path / "rgb.bundle",
                                     img_size=32))
    grey = load_bundle(import_weights(tmp_path / "momo.pth", "vit_tiny",
                                      tmp_path / "grey.bundle", img_size=32, in_chans=1))
    assert rgb.card.normalization == IMAGENET_NORMALIZATION
    assert rgb.card.value_scaling == grey.card.value_scaling == "tile_minmax"
    assert rgb.card.architecture["pos_embed"] == "imported-learned-frozen"
    assert grey.card.normalization == {"mean": pytest.approx(0.449, abs=1e-6),
                                       "std": pytest.approx(0.226, abs=1e-6)}
    torch.manual_seed(5)
    tile = torch.rand(2, 1, 32, 32) * 900 + 40  # raw grey values
    inputs = {}
    for name, bundle in (("rgb", rgb), ("grey", grey)):
        norm = bundle.card.normalization
        inputs[name] = to_model_input(tile, norm["mean"], norm["std"], bundle.card.in_chans)
    with torch.no_grad():
        want = rgb.build_model().forward_features(inputs["rgb"])
        got = grey.build_model().forward_features(inputs["grey"])
        assert inputs["rgb"].shape[1] == 3 and inputs["grey"].shape[1] == 1
        assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())
        # the old plain kernel sum is not exact under per-channel statistics
        summed = grey.build_model()
        sd = summed.state_dict()
        sd["patch_embed.proj.weight"] = rgb.state_dict["patch_embed.proj.weight"].sum(
            1, keepdim=True)
        sd["patch_embed.proj.bias"] = rgb.state_dict["patch_embed.proj.bias"]
        summed.load_state_dict(sd)
        plain = to_model_input(tile, 0.449, 0.226, 1)
        assert float((summed.forward_features(plain) - want).abs().max()) > 1e-2
