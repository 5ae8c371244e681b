"""Fine-tuning an encoder bundle on a Mars task, on Lightning; the result is a task bundle.

Two ways of training a head, both used by ``training/reproduce.py``:

- :func:`finetune` — the real thing (``momo-geo finetune``): a :class:`FineTuneModule` on a
  Lightning ``Trainer``, full fine-tuning with layer-wise learning-rate decay or a frozen encoder,
  CE (classification) or Dice+CE (crater segmentation), random flips/rotations, cosine schedule;
  the model is then scored on the validation split with :mod:`momo_geo.evaluate` and saved as a
  bundle whose card carries classes, colours, metrics, data and recipe.
- :func:`probe_features` + :func:`train_probe` — the frozen-encoder protocol on *cached* encoder
  features (same heads, same losses). The encoder comparison trains 9 encoders x 3 tasks x 3 seeds
  of heads on a 2-core CPU; running the frozen encoder once per chip instead of once per step is
  what makes that fit.

Chips: landmark crops are resized to the model input (they are tiles already); crater chips are
random ``input_size`` crops of the training images at native resolution (a third centred on a
crater pixel, so that short runs see craters), normalised per chip exactly like a map tile.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from momo_geo.bundle import ClassInfo, ModelCard, load_bundle, save_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.evaluate import TASK_KIND, TaskData, evaluate_bundle, load_task_data
from momo_geo.models import create_model
from momo_geo.models.heads import freeze_encoder, load_encoder_weights, make_loss, param_groups_lrd
from momo_geo.preprocess import to_model_input
from momo_geo.sensors import ALL_SENSORS_NORMALIZATION

LANDMARK_COLORS = {
    "other": "#9e9e9e", "crater": "#e41a1c", "dark_dune": "#4d3b2a", "slope_streak": "#377eb8",
    "bright_dune": "#ffd92f", "impact_ejecta": "#ff7f00", "swiss_cheese": "#4daf4a",
    "spider": "#984ea3",
}
CRATER_CLASSES = [ClassInfo(0, "background", "#000000"), ClassInfo(1, "crater", "#ff3030")]
TASK_SENSOR = {"landmarks": "hirise", "ctx-craters": "ctx", "themis-craters": "themis"}
TASK_GSD = {"landmarks": None, "ctx-craters": 6.0, "themis-craters": 100.0}


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
    Classification augmentation is per chip (each crop its own flip/rotation); crater batches
    keep one flip/rotation per batch."""
    accelerator: str = "cpu"
    """Lightning accelerator: ``cpu``, ``gpu`` or ``auto`` (GPU runs: the full-size recipe)."""
    precision: str = "32-true"
    """Lightning precision, e.g. ``bf16-mixed`` on a GPU."""
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- chips


def normalise(raw: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """Raw grey chips ``(B, 1, S, S)`` -> model input, through the one shared preprocessing."""
    norm = ALL_SENSORS_NORMALIZATION
    return to_model_input(raw, norm.mean, norm.std, recipe.in_chans)


def resize_crops(images: list[np.ndarray], size: int) -> torch.Tensor:
    """Landmark crops ``(H, W)`` -> raw ``(N, 1, size, size)`` by area averaging."""
    x = torch.from_numpy(np.stack(images)).float().unsqueeze(1)
    return F.interpolate(x, size=(size, size), mode="area")


def crater_chips(data: TaskData, n: int, size: int, rng: np.random.Generator,
                 crater_fraction: float = 1 / 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random ``size`` crops (raw ``(n, 1, size, size)``, masks ``(n, size, size)``)."""
    weights = np.array(data.weights if data.weights is not None
                       else [img.size for img in data.images], dtype=np.float64)
    weights /= weights.sum()
    which = rng.choice(len(data.images), size=n, p=weights)
    raws = np.empty((n, 1, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.int64)
    for k, i in enumerate(which):
        img, mask = data.images[i], data.targets[i]
        h, w = img.shape
        if rng.random() < crater_fraction and mask.any():
            ys, xs = np.nonzero(mask)
            j = rng.integers(len(ys))
            r0 = int(np.clip(ys[j] - rng.integers(size), 0, h - size))
            c0 = int(np.clip(xs[j] - rng.integers(size), 0, w - size))
        else:
            r0, c0 = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        raws[k, 0] = img[r0:r0 + size, c0:c0 + size]
        masks[k] = mask[r0:r0 + size, c0:c0 + size]
    return torch.from_numpy(raws), torch.from_numpy(masks)


def augment_chips(x: torch.Tensor, gen: torch.Generator, jitter: float = 0.0) -> torch.Tensor:
    """Label-preserving augmentation of classification chips, drawn per chip: one of the eight
    flips/90-degree rotations (HiRISE landmark crops have no preferred orientation) and a small
    brightness/contrast jitter."""
    n = len(x)
    k = torch.randint(4, (n,), generator=gen)
    flip = torch.randint(2, (n,), generator=gen).bool()
    out = x.clone()
    for rot in range(4):
        for f in (False, True):
            sel = (k == rot) & (flip == f)
            if sel.any():
                chips = torch.rot90(x[sel], rot, dims=(-2, -1))
                out[sel] = chips.flip(-1) if f else chips
    if jitter > 0:
        gain = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * jitter
        shift = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * jitter
        out = out * gain + shift
    return out


def augment(x: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random flip and 90-degree rotation of a batch (same for image and mask)."""
    k = int(torch.randint(4, (1,), generator=gen))
    flip = bool(torch.randint(2, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(-2, -1))
    if flip:
        x = x.flip(-1)
    if y is not None and y.ndim == 3:
        y = torch.rot90(y, k, dims=(-2, -1))
        if flip:
            y = y.flip(-1)
    return x, y


# ----------------------------------------------------------------------------- cards


def task_card(task: str, recipe: Recipe, classes: list[str] | None = None,
              name: str | None = None) -> ModelCard:
    """The card of a task model (metrics, training filled in after training)."""
    kind = TASK_KIND[task]
    if kind == "classification":
        names = classes or list(LANDMARK_COLORS)
        class_info = [ClassInfo(i, c, LANDMARK_COLORS.get(c, "#808080"))
                      for i, c in enumerate(names)]
        arch = {"kind": "vit_cls", "encoder": recipe.encoder}
        if recipe.cls_stem_dim > 0:
            arch["stem_dim"] = recipe.cls_stem_dim
    else:
        class_info = list(CRATER_CLASSES)
        arch = {"kind": "vit_seg", "encoder": recipe.encoder,
                "decoder_dim": recipe.decoder_dim, "stem_dim": recipe.stem_dim}
    return ModelCard(name=name or f"{task}-{recipe.encoder}", task=kind, architecture=arch,
                     input_size=recipe.input_size, in_chans=recipe.in_chans,
                     normalization={"mean": ALL_SENSORS_NORMALIZATION.mean,
                                    "std": ALL_SENSORS_NORMALIZATION.std},
                     sensors=[TASK_SENSOR[task]], gsd=TASK_GSD[task], classes=class_info,
                     tile_size=recipe.input_size, tile_overlap=recipe.input_size // 4)


def build_task_model(card: ModelCard, encoder_bundle: str | None) -> tuple[torch.nn.Module,
                                                                          dict[str, Any] | None]:
    """Task model with the encoder bundle's weights (random encoder if ``None``)."""
    model = create_model(card)
    merge = None
    if encoder_bundle is not None:
        bundle = load_bundle(encoder_bundle)
        if bundle.card.task != "pretrain":
            raise MomoGeoError(f"{encoder_bundle}: not an encoder (pretrain) bundle")
        load_encoder_weights(model, bundle.state_dict)
        merge = bundle.card.merge
    return model, merge


# ----------------------------------------------------------------------------- Lightning


def _lightning() -> Any:
    try:
        import lightning
    except ImportError:  # pragma: no cover - the [train] extra
        raise MomoGeoError("fine-tuning needs Lightning: pip install 'momo-geo[train]'") from None
    return lightning


def make_module(model: torch.nn.Module, recipe: Recipe, total_steps: int,
                class_weight: torch.Tensor | None = None) -> Any:
    """A LightningModule training ``model`` per ``recipe``."""
    L = _lightning()

    class FineTuneModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.loss = make_loss(recipe.loss, class_weight)
            self.gen = torch.Generator().manual_seed(recipe.seed)

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            x, y = batch
            if y.ndim == 1 and recipe.jitter > 0:
                x = augment_chips(x, self.gen, recipe.jitter)
            else:
                x, y = augment(x, y, self.gen)
            if recipe.frozen:
                self.model.encoder.eval()  # no dropout / drop-path in a frozen encoder
            loss = self.loss(self.model(x), y)
            self.log("train_loss", loss, prog_bar=False)
            return loss

        def configure_optimizers(self) -> Any:
            groups = param_groups_lrd(self.model, recipe.lr, recipe.weight_decay,
                                      recipe.layer_decay)
            opt = torch.optim.AdamW(groups, lr=recipe.lr)
            warm = max(1, int(total_steps * recipe.warmup_fraction))

            def factor(step: int) -> float:
                if step < warm:
                    return (step + 1) / warm
                return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) /
                                                         max(1, total_steps - warm))))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return FineTuneModule()


class _EpochChips(torch.utils.data.IterableDataset):
    """Fresh crater chips each epoch (seeded), landmarks shuffled; yields normalised batches."""

    def __init__(self, task: str, data: TaskData, recipe: Recipe) -> None:
        super().__init__()
        self.task, self.data, self.recipe = task, data, recipe
        self.epoch = 0
        if TASK_KIND[task] == "classification":
            self.x = normalise(resize_crops(data.images, recipe.input_size), recipe)
            self.y = torch.tensor(data.targets, dtype=torch.int64)

    def batches_per_epoch(self) -> int:
        n = len(self.data.images) if TASK_KIND[self.task] == "classification" else self.recipe.chips
        return max(1, n // self.recipe.batch_size)

    def __iter__(self) -> Any:
        rng = np.random.default_rng([self.recipe.seed, self.epoch])
        self.epoch += 1
        bs = self.recipe.batch_size
        if TASK_KIND[self.task] == "classification":
            if self.recipe.sampling == "sqrt_balanced":
                counts = np.bincount(self.y.numpy())
                p = 1 / np.sqrt(counts[self.y.numpy()])
                order = torch.from_numpy(rng.choice(len(self.y), size=len(self.y), p=p / p.sum()))
            elif self.recipe.sampling == "shuffle":
                order = torch.from_numpy(rng.permutation(len(self.y)))
            else:
                raise MomoGeoError(f"unknown sampling {self.recipe.sampling!r}")
            for b in range(self.batches_per_epoch()):
                idx = order[b * bs:(b + 1) * bs]
                yield self.x[idx], self.y[idx]
        else:
            raw, mask = crater_chips(self.data, self.batches_per_epoch() * bs,
                                     self.recipe.input_size, rng)
            x = normalise(raw, self.recipe)
            for b in range(self.batches_per_epoch()):
                yield x[b * bs:(b + 1) * bs], mask[b * bs:(b + 1) * bs]


def train_lightning(model: torch.nn.Module, task: str, data: TaskData, recipe: Recipe,
                    class_weight: torch.Tensor | None = None) -> float:
    """Train ``model`` in place on Lightning; returns the seconds it took."""
    L = _lightning()
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    recipe.loss = recipe.loss or ("ce" if TASK_KIND[task] == "classification" else "dice_ce")
    freeze_encoder(model, recipe.frozen)
    chips = _EpochChips(task, data, recipe)
    steps = chips.batches_per_epoch() * recipe.epochs
    module = make_module(model, recipe, steps, class_weight)
    loader = torch.utils.data.DataLoader(chips, batch_size=None, num_workers=0)
    trainer = L.Trainer(accelerator=recipe.accelerator, devices=1, precision=recipe.precision,
                        max_epochs=recipe.epochs, max_steps=steps,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, deterministic=True,
                        limit_train_batches=chips.batches_per_epoch())
    start = time.perf_counter()
    trainer.fit(module, loader)
    return time.perf_counter() - start


def merge_tasks(parts: list[TaskData], task: str, balance: bool = True) -> TaskData:
    """Several crater datasets as one training set (the multi-resolution crater model).

    ``balance``: chips are drawn equally from each part (by area within a part), so 8 CTX
    tiles, 600 THEMIS crops and a few synthetic fields each get a third of the training chips.
    """
    out = TaskData(task, [], [], [], parts[0].classes, [])
    for part in parts:
        out.images += part.images
        out.targets += part.targets
        out.groups += part.groups
        area = np.array([img.size for img in part.images], dtype=np.float64)
        share = area / area.sum() / len(parts) if balance else area
        out.weights += share.tolist()
    return out


def finetune(task: str, data_root: str | list[str], out: str | Path,
             encoder_bundle: str | None = None, recipe: Recipe | None = None,
             name: str | None = None, eval_tasks: list[tuple[str, str]] | None = None,
             train_data: TaskData | None = None, overwrite: bool = False,
             half: bool = False, description: str = "") -> tuple[Path, dict[str, Any]]:
    """Fine-tune ``encoder_bundle`` on ``task`` and save a task bundle at ``out``.

    ``data_root`` may list several folders of the same kind of task (crater masks from CTX and
    THEMIS train one multi-resolution model, whose card gets one metric block per evaluated
    task). Returns the bundle path and the validation metrics.
    """
    recipe = recipe or Recipe()
    roots = [data_root] if isinstance(data_root, str) else list(data_root)
    kind = TASK_KIND[task]
    if train_data is None:
        parts = []
        for root in roots:
            parts.append(load_task_data(_task_of_root(task, root), root, "train"))
        train_data = merge_tasks(parts, task) if len(parts) > 1 else parts[0]
    if encoder_bundle is not None:
        # The encoder's own architecture (e.g. vit_base for the full-size recipe) decides.
        from momo_geo.bundle import load_card

        recipe.encoder = load_card(encoder_bundle).architecture["encoder"]
    torch.manual_seed(recipe.seed)
    card = task_card(task, recipe, train_data.classes or None, name)
    model, merge = build_task_model(card, encoder_bundle)
    class_weight = None
    if recipe.class_weighting == "sqrt_inverse" and kind == "classification":
        counts = np.bincount(np.asarray(train_data.targets), minlength=card.num_classes)
        weights = np.sqrt(counts.sum() / (card.num_classes * np.maximum(counts, 1)))
        class_weight = torch.tensor(np.where(counts > 0, weights, 0.0), dtype=torch.float32)
    elif recipe.class_weighting not in ("none", "sqrt_inverse"):
        raise MomoGeoError(f"unknown class weighting {recipe.class_weighting!r}")
    seconds = train_lightning(model, task, train_data, recipe, class_weight)
    card.merge = merge
    card.training = {
        "encoder_bundle": str(Path(encoder_bundle).name) if encoder_bundle else None,
        "data": [str(Path(r).name) for r in roots],
        "recipe": asdict(recipe),
        "train_images": len(train_data.images),
        "seconds": round(seconds, 1),
        "kind": kind,
    }
    card.description = description
    path = save_bundle(out, model.state_dict(), card, overwrite=overwrite, half=half)
    # Score the bundle as saved (fp16 included) with the code `momo-geo evaluate` runs, so the
    # card's numbers are exactly what a user reproduces.
    metrics: dict[str, Any] = {"split": "val"}
    device = {"gpu": "cuda"}.get(recipe.accelerator, recipe.accelerator)
    for eval_task, root in eval_tasks or [(task, roots[0])]:
        metrics[eval_task] = evaluate_bundle(eval_task, root, str(path), device=device)
    set_card_fields(path, metrics=metrics)
    return path, metrics


def set_card_fields(path: Path, **fields: Any) -> None:
    """Update card fields of a saved bundle in place (the weights' hash is untouched)."""
    import json
    import os

    card_path = Path(path) / "card.json"
    data = json.loads(card_path.read_text())
    data.update(fields)
    ModelCard.from_dict(data)  # still a valid card
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, card_path)


def _task_of_root(task: str, root: str) -> str:
    """Which task a data folder holds, when a crater model trains on several folders."""
    if TASK_KIND[task] == "classification":
        return task
    name = Path(root).name.lower()
    if "themis" in name:
        return "themis-craters"
    if "ctx" in name:
        return "ctx-craters"
    return task


# ----------------------------------------------------------------------------- cached probes


@torch.inference_mode()
def probe_features(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256) -> Any:
    """Frozen-encoder features of normalised inputs: pooled ``(N, D)`` for a classifier, the
    list of block maps (float16, to halve the cache) for a segmenter."""
    model.eval()
    out: list[Any] = []
    for start in range(0, len(x), batch_size):
        feats = model.features(x[start:start + batch_size])
        out.append(feats if isinstance(feats, torch.Tensor) else [f.half() for f in feats])
    if isinstance(out[0], torch.Tensor):
        return torch.cat(out)
    return [torch.cat([o[i] for o in out]) for i in range(len(out[0]))]


def _head_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if not n.startswith("encoder.")]


def train_probe(model: torch.nn.Module, feats: Any, x: torch.Tensor, y: torch.Tensor,
                recipe: Recipe, steps: int) -> None:
    """Train the head of ``model`` on cached encoder features (encoder untouched)."""
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    classify = isinstance(feats, torch.Tensor)
    loss_fn = make_loss(recipe.loss or ("ce" if classify else "dice_ce"))
    params = _head_params(model)
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps,
                                                pct_start=recipe.warmup_fraction)
    model.train()
    n = len(y)
    for _ in range(steps):
        idx = torch.randint(n, (min(recipe.batch_size, n),), generator=gen)
        if classify:
            logits = model.classify(feats[idx])
        else:
            logits = model.decoder([f[idx].float() for f in feats], x[idx])
        loss = loss_fn(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()


@torch.inference_mode()
def probe_predict(model: torch.nn.Module, feats: Any, x: torch.Tensor | None,
                  batch_size: int = 256) -> torch.Tensor:
    """Predicted classes (N,) or class maps (N, S, S) from cached features."""
    model.eval()
    out = []
    n = len(feats) if isinstance(feats, torch.Tensor) else len(feats[0])
    for s in range(0, n, batch_size):
        if isinstance(feats, torch.Tensor):
            out.append(model.classify(feats[s:s + batch_size]).argmax(1))
        else:
            fs = [f[s:s + batch_size].float() for f in feats]
            out.append(model.decoder(fs, x[s:s + batch_size]).argmax(1).to(torch.uint8))
    return torch.cat(out)


def grid_tiles(data: TaskData, size: int, max_side: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Validation images cut into non-overlapping ``size`` tiles (the remainder beyond a whole
    tile dropped): raw tiles, masks and the image index of each tile."""
    raws, masks, owner = [], [], []
    for i, (img, mask) in enumerate(zip(data.images, data.targets, strict=True)):
        h, w = img.shape
        if max_side:
            h, w = min(h, max_side), min(w, max_side)
        for r in range(0, h - size + 1, size):
            for c in range(0, w - size + 1, size):
                raws.append(img[r:r + size, c:c + size])
                masks.append(mask[r:r + size, c:c + size])
                owner.append(i)
    return (torch.from_numpy(np.stack(raws)).unsqueeze(1),
            torch.from_numpy(np.stack(masks).astype(np.uint8)), owner)
