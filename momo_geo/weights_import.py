"""Import the MOMO authors' released checkpoints (``momo.pth``, ``hirise.pth``, ...) as bundles.

The released files are PyTorch pickles: ``{'model': MAE state dict, 'args': argparse.Namespace}``.
A pickle can carry code that runs on load, so they are read with
``torch.load(weights_only=True)`` and only ``argparse.Namespace`` allow-listed: tensors, plain
containers and the training arguments load; anything else (a class, a function call hidden in
the pickle) is refused *before* it can run, with a one-line error.

The encoder keys already match timm's ``VisionTransformer``; importing drops the MAE decoder
(``decoder_*``), the ``mask_token`` and any LPIPS network (``lpips_fn.*``), renames ``norm.*`` to
``fc_norm.*`` for average pooling, resizes the 14 × 14 position embedding for other input sizes,
checks every shape against the architecture and writes a safetensors bundle (which never
unpickles anything again).

Input statistics: MOMO pretrained these encoders on tiles stretched per tile to [0, 1] and then
standardised with *ImageNet's per-channel* mean and std (the grey band replicated to RGB), so the
card records exactly that (``value_scaling = "tile_minmax"``, ``normalization`` =
:data:`momo_geo.normalization.IMAGENET_NORMALIZATION`, one number per channel), not Mars
statistics. A 1-channel import (``in_chans=1``) folds those statistics into the patch kernel and
bias (:func:`momo_geo.normalization.fold_patch_embed`) and records the one-number statistics the
folded kernel expects, so it gives the 3-channel model's tokens for any grey tile.
"""

from __future__ import annotations

import argparse
import os
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from momo_geo.errors import MomoGeoError
from momo_geo.outputs import check_target

DROP_PREFIXES = ("decoder_", "decoder.", "mask_token", "lpips_fn.", "loss_fn.")
RELEASED_SENSORS = {"hirise": ["hirise"], "ctx": ["ctx"], "themis": ["themis"]}
"""File stem -> sensors; anything else (``momo``, ``hirise_ctx_themis``) covers all three."""


def load_released_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor],
                                                                   dict[str, Any]]:
    """``(MAE state dict, args as a dict)`` from a released ``.pth``, without running code."""
    path = Path(path)
    if not path.is_file():
        raise MomoGeoError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = " ".join(str(exc).split())
        detail = ""
        for marker in ("Unsupported global:", "Unsupported operand"):
            if marker in reason:
                detail = reason[reason.index(marker):].split(". ")[0]
                break
        raise MomoGeoError(
            f"{path}: refused: the file carries pickled code or objects other than tensors "
            f"and training arguments ({detail or 'not a weights-only checkpoint'}); it was not "
            "executed") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise MomoGeoError(f"{path}: not a readable PyTorch checkpoint "
                           f"({' '.join(str(exc).split())[:160]})") from None
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        state, args = data["model"], data.get("args")
    elif isinstance(data, dict) and data and all(torch.is_tensor(v) for v in data.values()):
        state, args = data, None  # a bare state dict
    else:
        raise MomoGeoError(f"{path}: expected {{'model': state dict, 'args': ...}} as in the "
                           "released MOMO checkpoints")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    args = {k: v for k, v in (args or {}).items()
            if isinstance(v, (str, int, float, bool, type(None), list, tuple))}
    return state, args


def mae_to_encoder(state: dict[str, torch.Tensor], encoder: torch.nn.Module
                   ) -> dict[str, torch.Tensor]:
    """Map an MAE state dict onto ``encoder`` (a timm ViT); check every key and shape."""
    from momo_geo.models.vit import adapt_state_dict

    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in ("module.", "model.", "encoder."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith(DROP_PREFIXES) or not torch.is_tensor(value):
            continue
        cleaned[key] = value.float() if value.is_floating_point() else value
    cleaned = adapt_state_dict(cleaned, encoder)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(cleaned))
    unexpected = sorted(set(cleaned) - set(expected))
    if missing or unexpected:
        raise MomoGeoError(f"checkpoint does not fit this architecture: missing {len(missing)} "
                           f"keys (e.g. {missing[:2]}), unexpected {len(unexpected)} "
                           f"(e.g. {unexpected[:2]}); is --arch right?")
    for key, value in expected.items():
        if tuple(cleaned[key].shape) != tuple(value.shape):
            raise MomoGeoError(f"checkpoint tensor {key} has shape {tuple(cleaned[key].shape)}, "
                               f"the architecture needs {tuple(value.shape)}; is --arch right?")
    return {k: cleaned[k].contiguous() for k in expected}


def import_weights(path: str | os.PathLike[str], arch: str, output: str | os.PathLike[str],
                   img_size: int = 224, global_pool: str = "avg", in_chans: int = 3,
                   name: str | None = None, overwrite: bool = False,
                   inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Convert a released checkpoint into a ``pretrain`` bundle; return the bundle path.

    ``output`` may replace (``overwrite``) only a bundle folder, never one holding ``path`` or
    ``inputs`` (:func:`momo_geo.outputs.check_target`, checked before anything is loaded).
    """
    from momo_geo.bundle import ModelCard, save_bundle, sha256_file
    from momo_geo.models.vit import create_encoder, encoder_config
    from momo_geo.normalization import (
        IMAGENET_NORMALIZATION,
        fold_patch_embed,
        grey_normalization,
    )
    from momo_geo.sensors import get_sensor

    path = Path(path)
    output = Path(output)
    inputs = [path, *inputs]
    check_target(output, overwrite=overwrite, inputs=inputs, bundle=True)
    state, args = load_released_checkpoint(path)
    if in_chans not in (1, 3):
        raise MomoGeoError(f"in_chans must be 3 (as released) or 1 (grey, folded), not {in_chans}")
    rgb = create_encoder(arch, img_size=img_size, in_chans=3, global_pool=global_pool)
    weights = mae_to_encoder(state, rgb)
    normalization: dict[str, Any] = {k: list(v) for k, v in IMAGENET_NORMALIZATION.items()}
    encoder = rgb
    if in_chans == 1:
        encoder = create_encoder(arch, img_size=img_size, in_chans=1, global_pool=global_pool)
        grey = grey_normalization(normalization)
        weights = fold_patch_embed(weights, normalization, grey)
        encoder.load_state_dict(weights)  # checks the folded shapes
        normalization = grey
    sensors = RELEASED_SENSORS.get(path.stem.lower(), ["hirise", "ctx", "themis"])
    gsd = [min(get_sensor(s).gsd_range[0] for s in sensors),
           max(get_sensor(s).gsd_range[1] for s in sensors)]
    card = ModelCard(
        name=name or f"momo-{path.stem}-{arch}",
        task="pretrain",
        # the checkpoint's position table is MOMO's learned one (kept frozen here), not our sincos
        architecture={**encoder_config(encoder, arch), "pos_embed": "imported-learned-frozen"},
        input_size=img_size, in_chans=in_chans, value_scaling="tile_minmax",
        normalization=normalization,
        sensors=sensors, gsd_range=gsd, tile_size=img_size, tile_overlap=min(32, img_size // 4),
        training={"kind": "imported", "source_file": path.name,
                  "source_sha256": sha256_file(path),
                  "source_input_size": args.get("input_size", 224),
                  "normalization": "ImageNet per-channel statistics, as MOMO pretrained"
                                   + (" (folded into the 1-channel patch kernel)"
                                      if in_chans == 1 else ""),
                  "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in args.items()}},
        license="as released by the MOMO authors (see their repository); not relicensed here",
        description=f"Encoder imported from the released MOMO checkpoint {path.name} "
                    "(MAE decoder dropped)")
    return save_bundle(output, weights, card, overwrite=overwrite, inputs=inputs)


def download_released(repo_id: str, filename: str, cache_dir: str | None = None) -> Path:
    """Fetch a released checkpoint from the Hugging Face Hub (optional; fails clearly offline)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise MomoGeoError("downloading needs the huggingface_hub package") from None
    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir))
    except Exception as exc:  # network, auth, missing repo: all one line for the user
        raise MomoGeoError(f"could not download {filename} from {repo_id} "
                           f"({type(exc).__name__}; offline?). Download it by hand and pass the "
                           "file path instead") from None
