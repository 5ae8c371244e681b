"""From a base encoder and one checkpoint per sensor to a merged "pretrain" bundle.

This is the last step of MOMO's recipe and the one ``momo-geo merge`` and the training pipeline
share: load θ_base and each θ_s (encoder weights, timm keys), build τ_s = θ_s − θ_base, combine
them (task arithmetic, MagMax or TIES) and write a bundle whose card's ``merge`` field records
the base, the checkpoints (with their validation losses when EVL chose them), the EVL spread,
λ and the method — everything needed to rebuild the merge.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from momo_geo.errors import MomoGeoError
from momo_geo.merge.evl import Selection
from momo_geo.merge.methods import DEFAULT_LAMBDA, merge
from momo_geo.merge.task_vector import TaskVector, mergeable_keys


def load_encoder_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Encoder weights from a bundle folder, a run folder (its final encoder) or a .safetensors.

    Full MAE weights (``encoder.*`` keys) are reduced to the encoder.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from momo_geo.bundle import CARD_NAME, load_bundle

    path = Path(path)
    if path.is_dir() and (path / CARD_NAME).is_file():
        return load_bundle(path).state_dict
    if path.is_dir() and (path / "encoder.bundle" / CARD_NAME).is_file():
        return load_bundle(path / "encoder.bundle").state_dict
    if not path.is_file():
        raise MomoGeoError(f"{path}: no such checkpoint, bundle or run folder")
    if path.suffix != ".safetensors":
        raise MomoGeoError(f"{path}: checkpoints must be .safetensors files or bundles "
                           "(import released .pth files with `momo-geo import-weights`)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise MomoGeoError(f"{path}: unreadable checkpoint ({exc})") from None
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    return state


def merge_checkpoints(base: str | os.PathLike[str], checkpoints: Mapping[str, str | os.PathLike],
                      output: str | os.PathLike[str], method: str = "task-arithmetic",
                      lam: float | None = None, trim: float = 0.2,
                      selection: Selection | None = None, overwrite: bool = False,
                      name: str | None = None, notes: dict[str, Any] | None = None,
                      inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Merge ``checkpoints`` (sensor -> weights) onto ``base`` (a bundle) and save a bundle.

    ``notes`` are added to the card's ``merge`` record (e.g. how λ was searched).
    """
    from momo_geo.bundle import ModelCard, load_bundle, load_card, save_bundle, sha256_file
    from momo_geo.sensors import get_sensor

    if not checkpoints:
        raise MomoGeoError("merging needs at least one checkpoint")
    base_path = Path(base)
    if (base_path / "encoder.bundle").is_dir():
        base_path = base_path / "encoder.bundle"
    base_bundle = load_bundle(base_path)
    base_card = load_card(base_path)
    base_state = base_bundle.state_dict
    keys = mergeable_keys(base_state)
    vectors = []
    for ckpt in checkpoints.values():
        state = load_encoder_weights(ckpt)
        extra = sorted(set(state) - set(base_state))
        if extra:
            raise MomoGeoError(f"{ckpt}: tensors the base does not have ({extra[:2]}); "
                               "checkpoint and base must be the same encoder")
        vectors.append(TaskVector.from_state_dicts(base_state, state, keys))
    method = method.lower().replace("_", "-")
    kwargs: dict[str, Any] = {"trim": trim} if method == "ties" else {}
    merged = merge(base_state, vectors, method, lam, **kwargs)
    lam_used = DEFAULT_LAMBDA.get(method, 0.5) if lam is None else lam

    sensors = [get_sensor(s).name if s in ("hirise", "ctx", "themis") else s for s in checkpoints]
    known = [s for s in sensors if s in ("hirise", "ctx", "themis")]
    recipe: dict[str, Any] = {
        "method": method,
        "lambda": lam_used,
        "base": {"path": str(base_path), "name": base_card.name,
                 "weights_sha256": base_card.weights_sha256},
        "checkpoints": {s: {"path": str(p)} for s, p in checkpoints.items()},
        "merged_keys": len(keys),
        "excluded_keys": sorted(set(base_state) - set(keys)),
        "task_vector_norms": {s: round(v.norm(), 6) for s, v in zip(checkpoints, vectors,
                                                                      strict=True)},
    }
    if method == "ties":
        recipe["trim"] = trim
    recipe.update(notes or {})
    for s, p in checkpoints.items():
        if Path(p).is_file():
            recipe["checkpoints"][s]["sha256"] = sha256_file(p)
    if selection is not None:
        recipe["selection"] = selection.method
        recipe["evl_spread"] = selection.spread
        recipe["tolerance"] = selection.tolerance
        for s, c in selection.chosen.items():
            if s in recipe["checkpoints"]:
                recipe["checkpoints"][s].update(val_loss=c.val_loss,
                                                samples_seen=c.samples_seen, epoch=c.epoch)
    if known:
        gsd = [min(get_sensor(s).gsd_range[0] for s in known),
               max(get_sensor(s).gsd_range[1] for s in known)]
    else:
        gsd = base_card.gsd_range
    # the merged encoder takes the inputs its base (and every continuation of it) was trained on
    card = ModelCard(
        name=name or f"momo-merged-{method}",
        task="pretrain",
        architecture=dict(base_card.architecture),
        input_size=base_card.input_size, bands=base_card.bands, in_chans=base_card.in_chans,
        value_scaling=base_card.value_scaling,
        normalization=dict(base_card.normalization),
        sensors=known or list(base_card.sensors), gsd_range=gsd,
        tile_size=base_card.tile_size, tile_overlap=base_card.tile_overlap,
        merge=recipe, training=dict(base_card.training), license=base_card.license,
        description=f"MOMO merged encoder: {method}, lambda {lam_used:g}, over "
                    f"{', '.join(checkpoints)}")
    return save_bundle(output, merged, card, overwrite=overwrite,
                       inputs=[base, *checkpoints.values(), *inputs])
