"""Cross-fitted members: K networks of one recipe, each trained without one of K groups of
the training products, and what each predicts on the group it never saw.

Why it exists: a landmark classifier's confidence floor was chosen on the selection products,
248 crops of four classes, and grouped cross-validation showed that choice to be noisy (0.8
there, 0.7 on held-out folds of the training products). Members trained this way give a
prediction for every training crop from a network that never saw its product: the floor is
chosen on those (about ten times the crops, every class that has two products). The members are
then shipped together (:class:`~momo_geo.models.ensemble.MeanProbability`), so no training run
is thrown away.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from momo_geo.bundle import Bundle, ModelCard
from momo_geo.errors import MomoGeoError
from momo_geo.evaluate import TaskData, evaluate_model, predict_probabilities
from momo_geo.models.ensemble import MeanProbability
from momo_geo.training.task_data import batches_per_epoch, subset


def product_folds(data: TaskData, k: int, seed: int) -> list[list[int]]:
    """Crop indices of ``data`` in ``k`` folds of whole products (``data.groups``).

    Products are shuffled with ``seed``, then each, largest first, joins the fold with the
    fewest crops so far: folds of near-equal size although products hold 1 to 100+ crops."""
    sizes = Counter(data.groups)
    if len(sizes) < k:
        raise MomoGeoError(f"{data.task}: {len(sizes)} product(s) cannot make {k} folds")
    shuffled = np.random.default_rng(seed).permutation(sorted(sizes)).tolist()
    fold_of, filled = {}, [0] * k
    for group in sorted(shuffled, key=lambda g: -sizes[g]):  # stable: ties keep the shuffle
        fold = filled.index(min(filled))
        fold_of[group] = fold
        filled[fold] += sizes[group]
    return [[i for i, g in enumerate(data.groups) if fold_of[g] == f] for f in range(k)]


def member_card(card: ModelCard) -> ModelCard:
    """The card of one member: the same network without ``members``."""
    arch = {k: v for k, v in card.architecture.items() if k != "members"}
    return dataclasses.replace(card, architecture=arch)


@dataclass
class Members:
    """Trained members, as one model, and their predictions on the products each never saw."""

    model: MeanProbability
    held_out: dict[str, np.ndarray]
    """Test-time augmentation -> class probabilities ``(crops, classes)``, row ``i`` for
    training crop ``i``, each from the member whose training lacked that crop's product."""
    seconds: float


def train_members(card: ModelCard, data: TaskData, recipe: Any, k: int,
                  build: Callable[[], torch.nn.Module],
                  train: Callable[[torch.nn.Module, TaskData, Any], float],
                  select: TaskData | None = None,
                  points: list[dict[str, Any]] | None = None,
                  tta: tuple[str, ...] = ("none",)) -> Members:
    """Train ``k`` members of ``card``'s network on ``data`` less one fold each.

    ``build()`` returns a fresh member network (encoder weights loaded, if any); ``train(model,
    fit, recipe)`` trains it in place and returns its seconds. Member ``i`` uses seed
    ``recipe.seed + i``. With ``select``, the mean of the members trained so far is scored on
    it after each, a learning-curve point per member appended to ``points``. Held-out
    probabilities are computed for each test-time augmentation in ``tta``.
    """
    single = member_card(card)
    folds = product_folds(data, k, recipe.seed)
    held_out = {mode: np.zeros((len(data.images), card.num_classes), dtype=np.float32)
                for mode in tta}
    members: list[torch.nn.Module] = []
    seconds, samples = 0.0, 0
    for i, fold in enumerate(folds):
        held = set(fold)
        fit = subset(data, [j for j in range(len(data.images)) if j not in held])
        member_recipe = dataclasses.replace(recipe, seed=recipe.seed + i, folds=0)
        torch.manual_seed(member_recipe.seed)
        model = build()
        seconds += train(model, fit, member_recipe)
        model.eval()
        members.append(model)
        for mode, probs in held_out.items():
            probs[fold] = predict_probabilities(_predictor(single, model, mode),
                                                [data.images[j] for j in fold])
        samples += recipe.epochs * recipe.batch_size * batches_per_epoch(fit.task, fit, recipe)
        if select is not None and points is not None:
            points.append(_curve_point(card, members, select, recipe.epochs, samples, seconds))
            print(f"learning curve: {json.dumps(points[-1])}", file=sys.stderr, flush=True)
    return Members(MeanProbability(members), held_out, seconds)


def _predictor(card: ModelCard, model: torch.nn.Module, tta: str = "auto") -> Any:
    from momo_geo.inference.engine import Predictor

    return Predictor(Bundle(card, model.state_dict()), tta=tta)


def _curve_point(card: ModelCard, members: list[torch.nn.Module], select: TaskData,
                 epochs: int, samples: int, seconds: float) -> dict[str, Any]:
    """The mean of the members trained so far, scored on ``select``; epochs, chips and seconds
    are summed over them (``epochs`` each)."""
    n = len(members)
    if n == 1:  # a card of one member builds the bare network
        report = evaluate_model(members[0], member_card(card), select, n_boot=0)
    else:
        partial = dataclasses.replace(card, architecture={**card.architecture, "members": n})
        report = evaluate_model(MeanProbability(members), partial, select, n_boot=0)
    keys = ("f1_weighted", "f1_macro", "accuracy")
    return {"epoch": n * epochs, "members": n, "samples": samples,
            "minutes": round(seconds / 60, 2), **{k: round(float(report[k]), 4) for k in keys}}
