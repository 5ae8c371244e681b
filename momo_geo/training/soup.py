"""Merged task networks: MOMO's task arithmetic applied to runs that continued one network.

Why: two continuations of the same crater network (other seeds, other learning rates) can
score alike on the selection images while each has learnt a little the other has not. Their
task vectors (each run's weights minus the network they started from) add like the
per-sensor encoders' do (:mod:`momo_geo.merge`); with ``lam = 1/n`` the result is the mean of
the runs, a uniform "model soup" (Wortsman et al., ICML 2022). No gradient step is taken.

A network with BatchNorm needs one more step: the mean of two runs' weights does not match the
mean of their running statistics, so the statistics are measured again on training chips, as
stochastic weight averaging does (Izmailov et al., 2018). The merged network is then calibrated
and scored exactly as a trained arm (:func:`momo_geo.training.finetune.finetune`).

A recipe asks for it with ``"merge_of": {"base": B, "tuned": [T1, T2, ...], "lam": 0.5,
"batchnorm_chips": 1440}`` (other recipes' bundles, built first into the same folder); its
``finetune`` part gives the task, the data and the selection images.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from momo_geo.errors import MomoGeoError


def merged_weights(base: dict[str, torch.Tensor], tuned: list[dict[str, torch.Tensor]],
                   lam: float) -> dict[str, torch.Tensor]:
    """``base + lam * sum(t - base)`` over every floating tensor of a task network (its
    decoder included: unlike an MAE's, a task network's decoder is the model); integer
    buffers stay the base's."""
    from momo_geo.merge.methods import task_arithmetic
    from momo_geo.merge.task_vector import TaskVector

    if not tuned:
        raise MomoGeoError("merge_of: name at least one tuned bundle")
    keys = [k for k, v in base.items() if torch.is_tensor(v) and v.is_floating_point()]
    base32 = {k: v.float() if v.is_floating_point() else v for k, v in base.items()}
    vectors = [TaskVector.from_state_dicts(base32, {k: t[k].float() for k in keys if k in t},
                                           keys) for t in tuned]
    return task_arithmetic(base32, vectors, lam)


def recompute_batchnorm(model: torch.nn.Module, task: str, data: Any, recipe: Any,
                        chips: int, normalization: dict[str, Any] | None) -> int:
    """Measure ``model``'s BatchNorm running statistics again on ``chips`` training chips drawn
    with the recipe's seed (no gradient); returns how many it read (0: the model has none)."""
    from torch.optim.swa_utils import update_bn

    from momo_geo.training.task_data import EpochChips

    if chips <= 0 or not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                             for m in model.modules()):
        return 0  # (no chips: the merged statistics stay; reset and unread they would be 0/1)
    update_bn(EpochChips(task, data, replace(recipe, chips=chips), normalization), model)
    model.eval()
    return chips


def build_merged(recipe: dict[str, Any], out_dir: str | Path, data_root: str) -> Path:
    """Build the bundle of a ``merge_of`` recipe into ``out_dir``: merge, recompute BatchNorm,
    save, calibrate on the selection images and score on the validation split."""
    from momo_geo.training.finetune import (
        Recipe,
        build_task_model,
        continue_weights,
        learning_curve,
        save_scored,
        task_card,
        task_of_root,
        training_split,
    )
    from momo_geo.training.recipes import CARD_FIELDS, built_bundle, finetune_data

    spec, merge, about = recipe["finetune"], recipe["merge_of"], recipe["card"]
    if not merge.get("tuned"):
        raise MomoGeoError("merge_of: name at least one tuned bundle")
    ft = Recipe.from_dict(spec.get("recipe", {}))
    base = built_bundle(str(merge["base"]), out_dir, "merge_of")
    tuned = [built_bundle(str(name), out_dir, "merge_of") for name in merge["tuned"]]
    lam = float(merge.get("lam", 1.0 / len(tuned)))
    roots, extra = finetune_data(spec, data_root)
    fit, select = training_split(spec["task"], roots, ft, extra)
    card = task_card(spec["task"], ft, None, about.get("name"))
    for key in CARD_FIELDS:
        if key in about:
            setattr(card, key, about[key])
    model, _ = build_task_model(card, None)
    start = time.perf_counter()
    states = []
    for path in [base, *tuned]:  # refuses a bundle of another network or input scaling
        continue_weights(model, card, str(path))
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    model.load_state_dict(merged_weights(states[0], states[1:], lam))
    read = recompute_batchnorm(model, spec["task"], fit, ft, int(merge.get("batchnorm_chips", 0)),
                               card.normalization)
    points: list[dict[str, Any]] = []
    if select is not None:
        learning_curve(model, card, select, ft, 0, points)(0)
    card.training = {
        "encoder_bundle": None, "init_bundle": None,
        "merge_of": {"base": base.name, "tuned": [t.name for t in tuned],
                     "lam": lam, "batchnorm_chips": read},
        "data": [Path(r).name for r in roots], "recipe": asdict(ft),
        "train_images": len(fit.images), "learning_curve": points,
        "selection_images": len(select.images) if select is not None else 0,
        "seconds": round(time.perf_counter() - start, 1), "kind": card.task,
        "normalization_from": "recipe"}
    card.description = about.get("description", "")
    path, _ = save_scored(model, card, Path(out_dir) / recipe["bundle"], ft, select,
                          [(task_of_root(spec["task"], r), r) for r in roots],
                          overwrite=True, half=bool(spec.get("half", False)))
    return path
