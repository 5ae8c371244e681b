"""Fine-tuning an encoder bundle on a Mars task, on Lightning; the result is a task bundle.

:func:`finetune` (``momo-geo finetune``, and the checkout's ``training/build_models.py`` that
builds the bundled models from recipe files) trains a :class:`FineTuneModule` on a Lightning
``Trainer``: full fine-tuning with layer-wise learning-rate decay or a frozen encoder, CE
(classification) or Dice+CE (crater segmentation), random flips/rotations, warm-up + cosine
schedule. The model is then scored on the validation split with :mod:`momo_geo.evaluate` and
saved as a bundle whose card carries classes, colours, metrics, data and the :class:`Recipe`.

A :class:`Recipe` is everything that decides a run; a recipe file's ``"recipe"`` object maps onto
it field for field (:meth:`Recipe.from_dict`). Chips and augmentation: :mod:`.task_data`.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from momo_geo.bundle import ClassInfo, ModelCard, load_bundle, save_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.evaluate import TASK_KIND, TaskData, evaluate_bundle, load_task_data
from momo_geo.models import create_model
from momo_geo.models.heads import freeze_encoder, load_encoder_weights, make_loss, param_groups_lrd
from momo_geo.training._lightning import lazy_classes, require_lightning, wall_clock_cap
from momo_geo.training.task_data import (
    EpochChips,
    augment,
    augment_chips,
    batches_per_epoch,
    check_zoom,
    hold_out,
    merge_tasks,
    rare_classes,
    recipe_normalization,
    without_classes,
    zoom_chips,
)

LANDMARK_COLORS = {
    "other": "#9e9e9e", "crater": "#e41a1c", "dark_dune": "#4d3b2a", "slope_streak": "#377eb8",
    "bright_dune": "#ffd92f", "impact_ejecta": "#ff7f00", "swiss_cheese": "#4daf4a",
    "spider": "#984ea3",
}
CRATER_CLASSES = [ClassInfo(0, "background", "#000000"), ClassInfo(1, "crater", "#ff3030")]
TASK_SENSOR = {"landmarks": "hirise", "ctx-craters": "ctx", "themis-craters": "themis"}
TASK_GSD = {"landmarks": None, "ctx-craters": 6.0, "themis-craters": 100.0}
TASK_CROP_PX = {"landmarks": 227}
"""Tasks learned from fixed-size crops resized to the input: a map tile covers a crop's pixels."""


@dataclass
class Recipe:
    """Everything that decides a fine-tuning run (recorded in the card)."""

    input_size: int = 64
    in_chans: int = 1
    encoder: str = "vit_tiny_patch16_224"
    frozen: bool = False
    epochs: int = 5
    chips: int = 3000
    """Crater chips drawn per epoch (segmentation); landmarks use every training crop."""
    batch_size: int = 64
    lr: float = 1e-3
    layer_decay: float = 0.75
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    loss: str = ""
    """``ce`` or ``dice_ce``; empty: ``ce`` for classification, ``dice_ce`` for segmentation."""
    seed: int = 0
    decoder_dim: int = 64
    stem_dim: int = 16
    cls_stem_dim: int = 0
    """Classification: width of the optional conv stem beside the ViT (0: none)."""
    class_weighting: str = "none"
    """``none`` or ``sqrt_inverse`` (CE weights ``sqrt(N / (K n_c))``: rare landmark classes
    count more, without letting 8 spiders outweigh 2000 plain tiles)."""
    sampling: str = "shuffle"
    """Classification batches: ``shuffle`` (every crop once per epoch) or ``sqrt_balanced``
    (crops drawn with probability ``1 / sqrt(n_c)``, so rare classes appear in most batches)."""
    jitter: float = 0.0
    """Per-chip brightness shift and contrast factor ``1 +- jitter`` (normalised units; 0: off).
    With jitter, flips/rotations are drawn per chip too (crater masks turn with their chips);
    without it, crater batches keep one flip/rotation per batch."""
    zoom: float = 0.0
    """Per-chip scale jitter (:func:`.task_data.zoom_chips`): a random square of ``1 - u * zoom``
    of the chip's side is resized back to the chip (0: off, and no random numbers drawn)."""
    architecture: str = ""
    """Network kind (:mod:`momo_geo.models`): ``vit_seg``, ``vit_unet`` (MOMO encoder + U-Net) or
    ``unet`` (CNN only) for craters; ``vit_cls``, ``cnn_cls`` or ``unet_cls`` (a U-Net's down
    path, which a crater U-Net bundle can start) for landmarks. Empty: ``vit_seg`` / ``vit_cls``."""
    width: int = 16
    """U-Net / CNN width: channels at full resolution (doubled at each level)."""
    levels: int = 4
    """U-Net levels (the deepest works at stride ``2 ** (levels - 1)``)."""
    value_scaling: str = "tile_minmax"
    """``scene_percentile`` (one range per image, as maps use per scene) or ``tile_minmax``."""
    rim_ignore: float = 0.0
    """Width of the ignored ring on each labelled crater rim, as a fraction of the radius."""
    coarse_chips: float = 0.0
    """Craters: share of each epoch's chips cut from the training images block-averaged by 2
    and 4 (:func:`~momo_geo.training.task_data.coarse_crater_data`), so that the model learns
    craters wider than its chips the way the map's coarse passes show them (0: off)."""
    select_fraction: float = 0.0
    """Share of the training images (whole tiles / crops / products) held out to draw the
    learning curve; the model trains on the rest. 0: train on everything, no curve."""
    curve_every: int = 1
    """Epochs between learning-curve points (with ``select_fraction`` > 0)."""
    accelerator: str = "cpu"
    """Lightning accelerator: ``cpu``, ``gpu`` or ``auto`` (GPU runs: the full-size recipe)."""
    precision: str = "32-true"
    """Lightning precision, e.g. ``bf16-mixed`` on a GPU."""
    tta: str = "none"
    """Test-time augmentation of the model (:mod:`momo_geo.inference.tta`): ``none``, ``d4``,
    or ``choose``: the calibration tries both and keeps ``d4`` only if it scores better on the
    held-out images that choose the floor (it costs eight passes per tile)."""
    num_workers: int = 0
    """DataLoader worker processes that cut the chips (:class:`.task_data.EpochChips`); 0: the
    training process itself (the CPU recipes' chip stream). A GPU needs several."""
    max_minutes: float = 0.0
    """Wall-clock cap on training (0: none). A safety net for a run on a lent machine whose
    speed is unknown beforehand: the recipe is sized to finish inside it, and the recorded
    recipe's ``extra["stopped_at_cap"]`` says whether it did not (the schedule was then cut
    short)."""
    split_seed: int | None = None
    """Seed of the selection hold-out (``None``: ``seed``). A run that continues another
    (``finetune(init_bundle=...)``) keeps its parent's split, so that its selection images stay
    unseen, while a new ``seed`` draws new chips."""
    min_class_crops: int = 0
    """Classification: training crops a class needs to be learnt and mapped (0: every class).
    The selection hold-out leaves a class at least this many (it gives drawn products back to
    training); a class still short of it is dropped from training and listed in the card's
    ``unmapped_classes``, which the engine never predicts."""
    min_class_products: int = 0
    """Classification: training products (observations) a class needs to be learnt and mapped
    (0: any). A class from one observation cannot be checked out of fold: when its product is
    held out no member knows the class, and the members that know it learnt one scene; such a
    class is dropped and unmapped like one short of ``min_class_crops``."""
    ema: float = 0.0
    """Decay of an exponential moving average of the weights, updated after every step; the
    average is what the learning curve scores and the bundle keeps (0: off, the last weights).
    Small noisy data make the last step's weights a lottery; the average smooths it."""
    folds: int = 0
    """Classification: ``K`` >= 2 trains K members, each without one of K folds of the training
    products (:mod:`.members`), and ships their mean probability; the confidence floor is then
    chosen on each crop's prediction by the member that never saw its product, not on the
    selection images (0: one network)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes recorded in the card (e.g. how many synthetic fields joined the data)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """A recipe from its JSON object (field for field; unknown names are an error)."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise MomoGeoError(f"fine-tuning recipe: unknown fields {', '.join(unknown)}")
        return cls(**data)


def task_normalization(recipe: Recipe, encoder: ModelCard | None = None) -> dict[str, Any]:
    """The task model's input statistics: the encoder bundle's recorded ones (folded to one
    grey number when a per-channel encoder becomes a 1-channel model, see
    :func:`momo_geo.normalization.fold_patch_embed`), else the recipe's for a model without a
    pretrained encoder. The stretch (``value_scaling``) stays the recipe's choice."""
    from momo_geo.normalization import grey_normalization, is_per_channel

    if encoder is None:
        mean, std = recipe_normalization(recipe)
        return {"mean": mean, "std": std}
    if is_per_channel(encoder.normalization) and recipe.in_chans != encoder.in_chans:
        if recipe.in_chans != 1:
            raise MomoGeoError(f"a {encoder.in_chans}-channel encoder with per-channel "
                               f"statistics fits a 1- or {encoder.in_chans}-channel model, "
                               f"not {recipe.in_chans}")
        return grey_normalization(encoder.normalization)
    return dict(encoder.normalization)


def task_card(task: str, recipe: Recipe, classes: list[str] | None = None,
              name: str | None = None, encoder: ModelCard | None = None) -> ModelCard:
    """The card of a task model (metrics, training filled in after training); ``encoder``: the
    card of the encoder bundle it starts from, whose statistics it takes."""
    kind = TASK_KIND[task]
    if kind == "classification":
        names = classes or list(LANDMARK_COLORS)
        class_info = [ClassInfo(i, c, LANDMARK_COLORS.get(c, "#808080"))
                      for i, c in enumerate(names)]
    else:
        class_info = list(CRATER_CLASSES)
    arch = task_architecture(kind, recipe)
    return ModelCard(name=name or f"{task}-{arch['encoder']}", task=kind, architecture=arch,
                     input_size=recipe.input_size, in_chans=recipe.in_chans,
                     value_scaling=recipe.value_scaling,
                     normalization=task_normalization(recipe, encoder),
                     sensors=[TASK_SENSOR[task]], gsd=TASK_GSD[task], classes=class_info,
                     source_tile=TASK_CROP_PX.get(task), tta=tta_modes(recipe)[0],
                     tile_size=recipe.input_size, tile_overlap=recipe.input_size // 4)


def tta_modes(recipe: Recipe) -> tuple[str, ...]:
    """The test-time augmentations the calibration chooses from (the first is the card's until
    it has chosen)."""
    from momo_geo.inference.tta import TTA_MODES, check_tta

    return TTA_MODES if recipe.tta == "choose" else (check_tta(recipe.tta),)


def task_architecture(kind: str, recipe: Recipe) -> dict[str, Any]:
    """The card's ``architecture`` for a recipe (see :attr:`Recipe.architecture`)."""
    name = recipe.architecture or ("vit_cls" if kind == "classification" else "vit_seg")
    known = {"classification": ("vit_cls", "cnn_cls", "unet_cls"),
             "segmentation": ("vit_seg", "vit_unet", "unet")}[kind]
    if name not in known:
        raise MomoGeoError(f"architecture {name!r} is not a {kind} network ({', '.join(known)})")
    if name == "vit_cls":
        arch: dict[str, Any] = {"kind": name, "encoder": recipe.encoder}
        if recipe.cls_stem_dim > 0:
            arch["stem_dim"] = recipe.cls_stem_dim
        return arch
    if name == "vit_seg":
        return {"kind": name, "encoder": recipe.encoder, "decoder_dim": recipe.decoder_dim,
                "stem_dim": recipe.stem_dim}
    if name == "vit_unet":
        return {"kind": name, "encoder": recipe.encoder, "width": recipe.width,
                "levels": recipe.levels}
    if name in ("unet", "unet_cls"):
        return {"kind": name, "encoder": "unet", "width": recipe.width, "levels": recipe.levels}
    return {"kind": name, "encoder": "cnn", "width": recipe.width}


def uses_encoder(model: torch.nn.Module) -> bool:
    """Whether a task model has a (MOMO ViT) encoder; CNN baselines have none."""
    return hasattr(model, "encoder")


def build_task_model(card: ModelCard, encoder_bundle: str | None) -> tuple[torch.nn.Module,
                                                                          dict[str, Any] | None]:
    """Task model with the encoder bundle's weights (random encoder if ``None``).

    An encoder with per-channel statistics going into a 1-channel model has them folded into
    its patch kernel (exact for grey input), matching the card's one-number statistics."""
    from momo_geo.normalization import fold_patch_embed, is_per_channel

    model = create_model(card)
    merge = None
    if encoder_bundle is not None and card.architecture["kind"] == "unet_cls":
        _transfer_unet_encoder(model, card, encoder_bundle)
        return model, None
    if encoder_bundle is not None and not uses_encoder(model):
        raise MomoGeoError(f"a {card.architecture['kind']} model has no encoder to start from "
                           f"{encoder_bundle}")
    if encoder_bundle is not None:
        bundle = load_bundle(encoder_bundle)
        if bundle.card.task != "pretrain":
            raise MomoGeoError(f"{encoder_bundle}: not an encoder (pretrain) bundle")
        state = bundle.state_dict
        if is_per_channel(bundle.card.normalization) and card.in_chans == 1:
            state = fold_patch_embed({k.removeprefix("encoder."): v for k, v in state.items()},
                                     bundle.card.normalization, card.normalization)
        load_encoder_weights(model, state)
        merge = bundle.card.merge
    return model, merge


def _transfer_unet_encoder(model: torch.nn.Module, card: ModelCard, source: str) -> None:
    """Start a ``unet_cls`` classifier from a U-Net segmentation bundle's down path (a crater
    model's features for landmarks); the input must be scaled as that U-Net learnt it."""
    from momo_geo.models.unet_cls import load_unet_encoder

    bundle = load_bundle(source)
    theirs = bundle.card
    if theirs.task != "segmentation" or theirs.architecture.get("kind") != "unet":
        raise MomoGeoError(f"{source}: a unet_cls model starts from a U-Net segmentation "
                           f"bundle, not a {theirs.task} {theirs.architecture.get('kind')}")
    for key in ("in_chans", "value_scaling", "normalization"):
        if getattr(theirs, key) != getattr(card, key):
            raise MomoGeoError(f"{source}: its {key} ({getattr(theirs, key)!r}) differs from "
                               f"this recipe's ({getattr(card, key)!r})")
    load_unet_encoder(model, bundle.state_dict, source)


def continue_weights(model: torch.nn.Module, card: ModelCard, init_bundle: str
                     ) -> dict[str, Any] | None:
    """Load a task bundle's whole weights into ``model`` (built from ``card``); the networks
    and their input scaling must be the same. Returns the bundle's merge record."""
    bundle = load_bundle(init_bundle)
    theirs = bundle.card
    for key in ("task", "architecture", "in_chans", "value_scaling", "normalization",
                "class_names"):
        if getattr(theirs, key) != getattr(card, key):
            raise MomoGeoError(f"{init_bundle}: its {key} ({getattr(theirs, key)!r}) differs "
                               f"from this recipe's ({getattr(card, key)!r}); a run can only "
                               "continue the same network")
    model.load_state_dict({k: v.float() for k, v in bundle.state_dict.items()})
    return theirs.merge


def _finetune_module_class() -> type:
    L = require_lightning("fine-tuning")

    class FineTuneModule(L.LightningModule):
        """Trains a task ``model`` per ``recipe``: AdamW with layer-wise lr decay, warm-up +
        cosine over ``total_steps``, per-batch (crater) or per-chip (landmark) augmentation."""

        def __init__(self, model: torch.nn.Module, recipe: Recipe, total_steps: int,
                     class_weight: torch.Tensor | None = None,
                     average: torch.nn.Module | None = None) -> None:
            super().__init__()
            self.model, self.recipe, self.total_steps = model, recipe, total_steps
            self.loss = make_loss(recipe.loss, class_weight)
            self.gen = torch.Generator().manual_seed(recipe.seed)
            self.average = [average]  # a list: not a submodule Lightning would move or train

        def on_train_batch_end(self, *_: Any) -> None:
            if self.average[0] is not None:
                self.average[0].update_parameters(self.model)

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            x, y = batch
            if y.ndim == 1 and self.recipe.zoom > 0:
                x = zoom_chips(x, self.gen, self.recipe.zoom)
            elif self.recipe.zoom > 0:
                x, y = zoom_chips(x, self.gen, self.recipe.zoom, masks=y)
            if y.ndim == 1 and self.recipe.jitter > 0:
                x = augment_chips(x, self.gen, self.recipe.jitter)
            elif self.recipe.jitter > 0:
                x, y = augment_chips(x, self.gen, self.recipe.jitter, masks=y)
            else:
                x, y = augment(x, y, self.gen)
            if self.recipe.frozen and uses_encoder(self.model):
                self.model.encoder.eval()  # no dropout / drop-path in a frozen encoder
            loss = self.loss(self.model(x), y)
            self.log("train_loss", loss, prog_bar=False)
            return loss

        def configure_optimizers(self) -> Any:
            from momo_geo.training.schedule import scheduler

            recipe = self.recipe
            if uses_encoder(self.model):
                groups = param_groups_lrd(self.model, recipe.lr, recipe.weight_decay,
                                          recipe.layer_decay)
            else:
                groups = [{"params": [p for p in self.model.parameters() if p.requires_grad],
                           "weight_decay": recipe.weight_decay}]
            opt = torch.optim.AdamW(groups, lr=recipe.lr)
            warm = max(1, int(self.total_steps * recipe.warmup_fraction))
            return {"optimizer": opt, "lr_scheduler": scheduler(opt, warm, self.total_steps)}

    return FineTuneModule


__getattr__ = lazy_classes(__name__, {"FineTuneModule": _finetune_module_class})


def train_lightning(model: torch.nn.Module, task: str, data: TaskData, recipe: Recipe,
                    class_weight: torch.Tensor | None = None,
                    curve: Callable[[int], None] | None = None,
                    normalization: dict[str, Any] | None = None) -> float:
    """Train ``model`` in place on Lightning; returns the seconds it took.

    ``curve(epoch)`` runs after every ``recipe.curve_every`` epochs (and after the last one).
    ``normalization``: the task card's statistics (:func:`task_normalization`).
    """
    L = require_lightning("fine-tuning")
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    recipe.loss = recipe.loss or ("ce" if TASK_KIND[task] == "classification" else "dice_ce")
    if uses_encoder(model):
        freeze_encoder(model, recipe.frozen)
    chips = EpochChips(task, data, recipe, normalization)
    steps = chips.batches_per_epoch() * recipe.epochs
    check_zoom(recipe.zoom)  # before training starts, not at its first step
    average = weight_average(model, recipe.ema)
    module = sys.modules[__name__].FineTuneModule(model, recipe, steps, class_weight, average)
    loader = torch.utils.data.DataLoader(chips, batch_size=None, num_workers=recipe.num_workers,
                                         persistent_workers=recipe.num_workers > 0)
    if curve is not None and average is not None:
        curve = _scored_with(model, average, curve)
    callbacks = [] if curve is None else [_curve_callback(L, curve, recipe)]
    trainer = L.Trainer(accelerator=recipe.accelerator, devices=1, precision=recipe.precision,
                        max_epochs=recipe.epochs, max_steps=steps, callbacks=callbacks,
                        max_time=wall_clock_cap(recipe.max_minutes),
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False,  # CUDA: no deterministic bilinear backward
                        deterministic=True if training_device(recipe) == "cpu" else "warn",
                        limit_train_batches=chips.batches_per_epoch())
    start = time.perf_counter()
    trainer.fit(module, loader)
    if average is not None:
        model.load_state_dict(average.module.state_dict())
    if recipe.max_minutes:  # cross-fitted members share these notes: one stopped is enough
        stopped = recipe.extra.get("stopped_at_cap", False) or trainer.global_step < steps
        recipe.extra["stopped_at_cap"] = stopped
    return time.perf_counter() - start


def weight_average(model: torch.nn.Module, decay: float) -> torch.nn.Module | None:
    """An exponential moving average of ``model``'s weights and buffers (``None`` for decay 0)."""
    if not decay:
        return None
    if not 0 < decay < 1:
        raise MomoGeoError(f"fine-tuning recipe: ema must be 0 (off) or between 0 and 1, "
                           f"not {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _scored_with(model: torch.nn.Module, average: torch.nn.Module,
                 curve: Callable[[int], None]) -> Callable[[int], None]:
    """``curve`` run on the averaged weights (put back afterwards): the curve scores what the
    bundle will keep."""
    def scored(epoch: int) -> None:
        current = copy.deepcopy(model.state_dict())
        model.load_state_dict(average.module.state_dict())
        try:
            curve(epoch)
        finally:
            model.load_state_dict(current)

    return scored


def _curve_callback(L: Any, curve: Callable[[int], None], recipe: Recipe) -> Any:
    class Curve(L.Callback):
        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            epoch = trainer.current_epoch + 1
            if epoch % max(1, recipe.curve_every) == 0 or epoch == recipe.epochs:
                curve(epoch)
                module.model.train()

    return Curve()


def learning_curve(model: torch.nn.Module, card: ModelCard, select: TaskData, recipe: Recipe,
                   chips_per_epoch: int, points: list[dict[str, Any]]) -> Callable[[int], None]:
    """A ``curve(epoch)`` that scores ``model`` on the held-out selection images (no
    bootstrap, on the training's device) and appends ``{epoch, samples, minutes, metrics}`` to
    ``points``."""
    from momo_geo.evaluate import evaluate_model

    start = time.perf_counter()
    keys = ("iou", "crater_precision", "crater_recall", "crater_f1", "f1_weighted", "f1_macro",
            "accuracy")

    def curve(epoch: int) -> None:
        report = evaluate_model(model, card, select, n_boot=0, device=training_device(recipe))
        point = {"epoch": epoch, "samples": epoch * chips_per_epoch,
                 "minutes": round((time.perf_counter() - start) / 60, 2),
                 **{k: round(float(report[k]), 4) for k in keys if k in report}}
        points.append(point)
        print(f"learning curve: {json.dumps(point)}", file=sys.stderr, flush=True)

    return curve


def selection_split(task: str, parts: list[TaskData], recipe: Recipe,
                    extra: list[TaskData] | None = None) -> tuple[TaskData, TaskData | None]:
    """(fit, select): with ``recipe.select_fraction`` > 0, whole images of each data folder are
    held out for the learning curve; the model trains on the rest plus ``extra`` (e.g.
    synthetic crater fields, never held out: they say nothing about real Mars)."""
    select = None
    if recipe.select_fraction > 0:
        seed = recipe.seed if recipe.split_seed is None else recipe.split_seed
        pairs = [hold_out(part, recipe.select_fraction, seed + 1, recipe.min_class_crops)
                 for part in parts]
        parts = [fit for fit, _ in pairs]
        chosen = [held for _, held in pairs]
        select = chosen[0] if len(chosen) == 1 else merge_tasks(chosen, task, balance=False)
    parts = parts + list(extra or [])
    return (merge_tasks(parts, task) if len(parts) > 1 else parts[0]), select


def training_split(task: str, roots: list[str], recipe: Recipe,
                   extra: list[TaskData] | None = None) -> tuple[TaskData, TaskData | None]:
    """The train split of each data folder, less the selection images ``recipe`` holds out:
    (what the model trains on, the selection images), as :func:`finetune` builds them."""
    parts = [load_task_data(task_of_root(task, root), root, "train") for root in roots]
    return selection_split(task, parts, recipe, extra)


def _class_weight(recipe: Recipe, card: ModelCard, train_data: TaskData) -> torch.Tensor | None:
    if recipe.class_weighting not in ("none", "sqrt_inverse"):
        raise MomoGeoError(f"unknown class weighting {recipe.class_weighting!r}")
    if recipe.class_weighting == "none" or card.task != "classification":
        return None
    counts = np.bincount(np.asarray(train_data.targets), minlength=card.num_classes)
    weights = np.sqrt(counts.sum() / (card.num_classes * np.maximum(counts, 1)))
    return torch.tensor(np.where(counts > 0, weights, 0.0), dtype=torch.float32)


def finetune(task: str, data_root: str | list[str], out: str | Path,
             encoder_bundle: str | None = None, recipe: Recipe | None = None,
             name: str | None = None, eval_tasks: list[tuple[str, str]] | None = None,
             train_data: TaskData | None = None, extra_train: list[TaskData] | None = None,
             overwrite: bool = False, card_fields: dict[str, Any] | None = None,
             half: bool = False, description: str = "", init_bundle: str | None = None
             ) -> tuple[Path, dict[str, Any]]:
    """Fine-tune ``encoder_bundle`` on ``task`` and save a task bundle at ``out``.

    ``init_bundle``: a task bundle of the same network whose weights start the run instead
    (a longer schedule continued, or a shipped model refined on one's own labelled images).

    ``data_root`` may list several folders of the same kind of task (crater masks from CTX and
    THEMIS train one multi-resolution model, whose card gets one metric block per evaluated
    task). Returns the bundle path and the validation metrics.
    """
    recipe = recipe or Recipe()
    if task not in TASK_KIND:
        raise MomoGeoError(f"unknown task {task!r}; choose from {', '.join(TASK_KIND)}")
    roots = [data_root] if isinstance(data_root, str) else list(data_root)
    kind = TASK_KIND[task]
    select = None
    if train_data is None:
        train_data, select = training_split(task, roots, recipe, extra_train)
    encoder_card = None
    if encoder_bundle is not None:
        # The encoder's own architecture (e.g. vit_base for the full-size recipe) and its
        # recorded input statistics decide.
        from momo_geo.bundle import load_card

        encoder_card = load_card(encoder_bundle)
        recipe.encoder = encoder_card.architecture["encoder"]
    unmapped = (rare_classes(train_data, recipe.min_class_crops, recipe.min_class_products)
                if kind == "classification" else [])
    if unmapped:
        train_data = without_classes(train_data, unmapped)
    torch.manual_seed(recipe.seed)
    card = task_card(task, recipe, train_data.classes or None, name, encoder_card)
    card.unmapped_classes = unmapped
    model, merge = build_task_model(card, encoder_bundle)
    if init_bundle is not None:
        if recipe.folds:
            raise MomoGeoError("fine-tuning recipe: folds trains new members from the start; "
                               "it cannot continue an init_bundle")
        merge = continue_weights(model, card, init_bundle)
    points: list[dict[str, Any]] = []
    held_out = None
    if recipe.folds:
        model, seconds, held_out = _train_members(task, card, train_data, recipe, encoder_bundle,
                                                  select, points)
    else:
        curve = None
        if select is not None:
            per_epoch = batches_per_epoch(task, train_data, recipe) * recipe.batch_size
            curve = learning_curve(model, card, select, recipe, per_epoch, points)
        seconds = train_lightning(model, task, train_data, recipe,
                                  _class_weight(recipe, card, train_data), curve,
                                  card.normalization)
    card.merge = merge
    card.training = {
        "encoder_bundle": str(Path(encoder_bundle).name) if encoder_bundle else None,
        "init_bundle": str(Path(init_bundle).name) if init_bundle else None,
        "data": [str(Path(r).name) for r in roots],
        "recipe": asdict(recipe),
        "train_images": len(train_data.images),
        "selection_images": len(select.images) if select is not None else 0,
        "learning_curve": points,
        "seconds": round(seconds, 1),
        "kind": kind,
        "normalization_from": "encoder bundle" if encoder_card is not None else "recipe",
    }
    card.description = description
    for key, value in (card_fields or {}).items():
        setattr(card, key, value)
    return save_scored(model, card, out, recipe, select, eval_tasks or [(task, roots[0])],
                       held_out=held_out, overwrite=overwrite, half=half)


def save_scored(model: torch.nn.Module, card: ModelCard, out: str | Path, recipe: Recipe,
                select: TaskData | None, eval_tasks: list[tuple[str, str]],
                held_out: Any = None, overwrite: bool = False, half: bool = False
                ) -> tuple[Path, dict[str, Any]]:
    """Save a trained (or merged) model's bundle, calibrate it on the selection images where
    they can be scored (a floor per class, crater sizes, test-time augmentation) and score it
    on each ``eval_tasks`` validation split: the one ending of every way a bundle is made."""
    path = save_bundle(out, model.state_dict(), card, overwrite=overwrite, half=half)
    if held_out is not None or (select is not None and (card.task == "classification"
                                                         or select.circles is not None)):
        from momo_geo.training.calibrate import calibrate_bundle

        calibrate_bundle(path, select, held_out=held_out, device=training_device(recipe),
                         tta=tta_modes(recipe))
    return path, score_bundle(path, eval_tasks, training_device(recipe))


def training_device(recipe: Recipe) -> str:
    """The torch device of the recipe's accelerator, on which its model is also scored."""
    if recipe.accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return {"gpu": "cuda"}.get(recipe.accelerator, recipe.accelerator)


def _train_members(task: str, card: ModelCard, data: TaskData, recipe: Recipe,
                   encoder_bundle: str | None, select: TaskData | None,
                   points: list[dict[str, Any]]) -> tuple[torch.nn.Module, float, Any]:
    """``recipe.folds`` cross-fitted members (:func:`.members.train_members`) as one model, the
    seconds they took, and (training targets, out-of-fold probabilities per test-time
    augmentation) for the floor."""
    from momo_geo.training.members import member_card, train_members

    if TASK_KIND[task] != "classification" or recipe.folds < 2:
        raise MomoGeoError(f"fine-tuning recipe: folds must be 0 or at least 2, and only for "
                           f"a classification task (got {recipe.folds} for {task})")
    card.architecture["members"] = recipe.folds
    single = member_card(card)

    def train(model: torch.nn.Module, fit: TaskData, member: Recipe) -> float:
        return train_lightning(model, task, fit, member, _class_weight(member, card, fit),
                               None, card.normalization)

    members = train_members(card, data, recipe, recipe.folds,
                            lambda: build_task_model(single, encoder_bundle)[0], train,
                            select, points, tta=tta_modes(recipe))
    return members.model, members.seconds, (data.targets, members.held_out)


def score_bundle(path: str | Path, eval_tasks: list[tuple[str, str]], device: str = "cpu"
                 ) -> dict[str, Any]:
    """Score a saved bundle on each ``(task, folder)``'s validation split and record it in the
    card. The bundle as saved (fp16 weights, the card's tiling) runs through the code
    ``momo-geo evaluate`` runs, so the card's numbers are exactly what a user reproduces."""
    metrics: dict[str, Any] = {"split": "val"}
    for eval_task, root in eval_tasks:
        metrics[eval_task] = evaluate_bundle(eval_task, root, str(path), device=device)
    set_card_fields(Path(path), metrics=metrics)
    return metrics


def set_card_fields(path: Path, **updates: Any) -> None:
    """Update card fields of a saved bundle in place (the weights' hash is untouched)."""
    card_path = Path(path) / "card.json"
    data = json.loads(card_path.read_text())
    data.update(updates)
    ModelCard.from_dict(data)  # still a valid card
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, card_path)


def task_of_root(task: str, root: str) -> str:
    """Which task a data folder holds, when a crater model trains on several folders."""
    if TASK_KIND[task] == "classification":
        return task
    name = Path(root).name.lower()
    if "themis" in name:
        return "themis-craters"
    if "ctx" in name:
        return "ctx-craters"
    return task
