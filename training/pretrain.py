"""MAE pretraining on Lightning: one code path for a laptop CPU, one GPU, or many GPUs with DDP.

A run (``run_pretrain(config) -> run_dir``) trains a :class:`~momo_geo.models.mae.MaskedAutoencoder`
on random chips of one sensor (or all three) and, every ``checkpoint_every`` samples, scores the
model on a fixed validation subset and writes::

    run_dir/config.json                      the config, as run
    run_dir/val_log.csv                      checkpoint, samples_seen, epoch, val_loss, train_loss
    run_dir/checkpoints/step_XXXXXX.safetensors   encoder weights (timm keys) at that step
    run_dir/last.ckpt                        Lightning checkpoint (optimizer too) for --resume
    run_dir/mae.safetensors                  final encoder+decoder (to continue a sensor run from)
    run_dir/encoder.bundle/                  final encoder as a "pretrain" model bundle

Reproducibility across process counts: which chips form a batch and which patches each chip
hides do not depend on how many processes share the work. The sampler draws one permutation per
epoch from the seed and deals it out rank by rank (rank r takes every world-th chip of each global
batch), and the mask noise and flips of a chip come from a generator seeded by (seed, epoch,
chip index). With equal per-process batches DDP's gradient average equals the global-batch
gradient, so a 2-process run follows the single-process run up to float rounding.

Validation loss: on a fixed subset of *train-split* chips (a different seed from the training
pool) with fixed masks, so that losses of different runs and checkpoints are comparable (EVL
needs exactly that) and downstream validation images never steer pretraining.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from momo_geo.errors import MomoGeoError  # noqa: E402
from momo_geo.sensors import ALL_SENSORS_NORMALIZATION, SENSORS, get_sensor  # noqa: E402

SENSOR_NAMES = tuple(SENSORS)


@dataclass
class PretrainConfig:
    """Everything a pretraining run depends on (saved as ``config.json``)."""

    output: str = "runs/pretrain"
    sensors: list[str] | str = "all"
    """``hirise``, ``ctx``, ``themis``, ``all`` or a list of them."""
    data_root: str | None = None
    """The shared real data (default ``$MOMO_GEO_SHARED_DATA`` or ``../shared/data``)."""
    encoder: str = "vit_tiny"
    img_size: int = 64
    samples: int = 2048
    """Training budget in samples (chips seen, over all processes)."""
    batch_size: int = 32
    """Global batch (split evenly over the processes)."""
    base_lr: float = 1e-3
    """Learning rate at batch 256 (MOMO); the run uses ``base_lr * batch_size / 256``."""
    lr: float | None = None
    """Overrides the scaled learning rate when given."""
    min_lr: float = 0.0
    warmup_samples: int | None = None
    """Linear warm-up length; default a tenth of the budget (MOMO: 40 of 400 epochs)."""
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"pixel": 1.0, "perceptual": 0.0, "ssim": 0.0, "gradient": 0.0})
    seed: int = 0
    init_from: str | None = None
    """A run folder (continues encoder+decoder), a bundle or an encoder ``.safetensors``."""
    checkpoint_every: int = 512
    """Samples between checkpoints (MOMO: about 100k)."""
    pool_size: int = 256
    """Training chips per sensor (drawn once, reshuffled every epoch)."""
    scenes: list[str] = field(default_factory=list)
    """Georeferenced scenes (files or folders) to draw chips from too, via TorchGeo; each
    sensor's dataset picks its own products among them."""
    scene_fraction: float = 0.25
    """Share of a sensor's training pool drawn from ``scenes`` when it has any there."""
    val_size: int = 32
    """Chips per sensor in the fixed validation subset."""
    val_sensors: list[str] | str | None = None
    """Sensors of the validation subset: the run's own (default) or e.g. ``all``, so that runs
    of different sensors are scored on one common set."""
    augment: bool = True
    """Random flips and 90° rotations (per chip, seeded)."""
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    """``auto`` or ``ddp``; on CPU, DDP uses the gloo backend."""
    num_nodes: int = 1
    precision: str | None = None
    """Lightning precision; default ``bf16-mixed`` on a GPU that supports it, else ``32-true``."""
    num_workers: int = 0
    threads: int | None = None
    """CPU threads for torch during the run (restored after); 1 is fastest for tiny models on a
    busy machine, where thread hand-offs cost more than the arithmetic."""
    resume: str | None = None
    """A ``last.ckpt`` (or the run folder holding it) to continue an interrupted run."""
    save_mae_checkpoints: bool = False
    """Also write encoder+decoder weights at every checkpoint (``mae_step_XXXXXX``)."""
    keep_resume_checkpoints: bool = False
    """Keep a Lightning checkpoint per checkpoint (``step_XXXXXX.ckpt``), to resume from any."""
    name: str = ""

    def __post_init__(self) -> None:
        self.sensors = resolve_sensors(self.sensors)
        if self.val_sensors is not None:
            self.val_sensors = resolve_sensors(self.val_sensors)
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if self.img_size % 16:
            raise MomoGeoError(f"img_size {self.img_size} is not a multiple of 16")
        if self.batch_size < 1 or self.samples < self.batch_size:
            raise MomoGeoError(f"the budget ({self.samples} samples) must hold at least one "
                               f"batch of {self.batch_size}")
        if self.checkpoint_every < 1:
            raise MomoGeoError("checkpoint_every must be positive")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MomoGeoError(f"pretrain config: unknown fields {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> PretrainConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise MomoGeoError(f"{path}: unreadable pretrain config ({exc})") from None

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else self.base_lr * self.batch_size / 256

    @property
    def max_steps(self) -> int:
        return self.samples // self.batch_size

    @property
    def normalization(self) -> dict[str, float]:
        """The card's normalisation: the sensor's own, or the all-sensor statistics."""
        if len(self.sensors) == 1:
            norm = get_sensor(self.sensors[0]).normalization
        else:
            norm = ALL_SENSORS_NORMALIZATION
        return {"mean": norm.mean, "std": norm.std}


def resolve_sensors(value: list[str] | str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        for name in str(item).replace(",", " ").split():
            names = SENSOR_NAMES if name.lower() == "all" else (get_sensor(name).name,)
            out.extend(n for n in names if n not in out)
    if not out:
        raise MomoGeoError("no sensors given")
    return out


# --------------------------------------------------------------------------------------- data


class ChipPool(torch.utils.data.Dataset):
    """Pre-normalised chips in memory; items are ``(image, index)`` (the index seeds masks)."""

    def __init__(self, images: torch.Tensor, sensors: list[str]) -> None:
        self.images = images
        self.sensors = sensors

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], index


def build_pool(config: PretrainConfig, split: str, count: int, seed: int,
               sensors: list[str] | None = None) -> ChipPool:
    """``count`` chips per sensor, each normalised with its sensor's statistics.

    A sensor's chips depend on (seed, sensor) only, so runs with the same seed share them.
    """
    from momo_geo.preprocess import to_model_input
    from training.chips import default_data_root, load_chips, load_scene_chips

    root = Path(config.data_root) if config.data_root else default_data_root()
    images, names = [], []
    for sensor in sensors or config.sensors:
        k = SENSOR_NAMES.index(sensor)
        from_scenes = None
        if config.scenes and split == "train":
            n = round(count * config.scene_fraction)
            from_scenes = load_scene_chips(sensor, config.scenes, config.img_size, n,
                                           seed + 7919 * k) if n else None
        rest = count - (len(from_scenes[0]) if from_scenes else 0)
        raw, valid = load_chips(sensor, root, split, config.img_size, rest, seed + 7919 * k)
        if from_scenes:
            raw = torch.cat([raw, from_scenes[0]])
            valid = torch.cat([valid, from_scenes[1]])
        norm = get_sensor(sensor).normalization
        images.append(to_model_input(raw, norm.mean, norm.std, in_chans=3, valid=valid))
        names += [sensor] * len(raw)
    return ChipPool(torch.cat(images), names)


class EpochSampler(torch.utils.data.Sampler[int]):
    """One seeded permutation per epoch, dealt out across processes in global-batch order.

    Rank ``r`` of ``w`` takes positions ``r, r+w, r+2w, ...`` of the permutation (trimmed to whole
    global batches), so that its k-th batch holds exactly its share of the k-th global batch.
    """

    def __init__(self, size: int, global_batch: int, seed: int, rank: int = 0,
                 world: int = 1) -> None:
        self.size, self.global_batch, self.seed = size, global_batch, seed
        self.rank, self.world, self.epoch = rank, world, 0
        self.usable = (size // global_batch) * global_batch
        if self.usable == 0:
            raise MomoGeoError(f"the chip pool ({size}) is smaller than one global batch "
                               f"({global_batch})")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):  # noqa: ANN204
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.size, generator=gen)[: self.usable]
        return iter(perm[self.rank:: self.world].tolist())

    def __len__(self) -> int:
        return self.usable // self.world


def chip_noise(indices: torch.Tensor, seed: int, epoch: int, tokens: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-chip mask noise ``(B, tokens)`` and augmentation codes ``(B,)`` in 0..7.

    Seeded by (seed, epoch, chip index) only, so any process computes the same for a chip.
    """
    noise, codes = [], []
    for index in indices.tolist():
        gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + index)
        noise.append(torch.rand(tokens, generator=gen))
        codes.append(int(torch.randint(8, (1,), generator=gen)))
    return torch.stack(noise), torch.tensor(codes)


def augment(images: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Dihedral augmentation: code bit 0 = horizontal flip, bits 1-2 = quarter turns."""
    out = []
    for image, code in zip(images, codes.tolist(), strict=True):
        if code & 1:
            image = image.flip(-1)
        out.append(torch.rot90(image, code >> 1, dims=(-2, -1)))
    return torch.stack(out)


# --------------------------------------------------------------------------------------- model


def _load_init(config: PretrainConfig, mae: torch.nn.Module) -> dict[str, Any]:
    """Load ``init_from`` into the MAE; return a description for the card."""
    from safetensors.torch import load_file

    from momo_geo.models.vit import adapt_state_dict

    path = Path(config.init_from)  # type: ignore[arg-type]
    if path.is_dir() and (path / "mae.safetensors").is_file():
        state = load_file(str(path / "mae.safetensors"))
        missing, unexpected = mae.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith("loss_fn.")]
        if bad or unexpected:
            raise MomoGeoError(f"{path}: MAE weights do not fit this model (missing {bad[:2]}, "
                               f"unexpected {unexpected[:2]}); same encoder and decoder sizes?")
        return {"init_from": str(path), "init": "mae"}
    if path.is_dir() and (path / "card.json").is_file():
        from momo_geo.bundle import load_bundle

        state = load_bundle(path).state_dict
    elif path.is_dir() and (path / "encoder.bundle").is_dir():
        from momo_geo.bundle import load_bundle

        state = load_bundle(path / "encoder.bundle").state_dict
    elif path.is_file() and path.suffix == ".safetensors":
        state = load_file(str(path))
        if any(k.startswith("encoder.") for k in state):
            mae.load_state_dict(state, strict=False)
            return {"init_from": str(path), "init": "mae"}
    else:
        raise MomoGeoError(f"{path}: init_from must be a run folder, a bundle or a .safetensors")
    state = adapt_state_dict(state, mae.encoder)
    missing, unexpected = mae.encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise MomoGeoError(f"{path}: encoder weights do not fit {config.encoder} "
                           f"(missing {missing[:2]}, unexpected {unexpected[:2]})")
    return {"init_from": str(path), "init": "encoder"}


def build_mae(config: PretrainConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The MAE for a config, initialised per ``init_from`` (the loss network is the init)."""
    from momo_geo.models.losses import MAELoss
    from momo_geo.models.mae import MaskedAutoencoder
    from momo_geo.models.vit import create_encoder

    torch.manual_seed(config.seed)
    encoder = create_encoder(config.encoder, img_size=config.img_size)
    mae = MaskedAutoencoder(encoder, config.decoder_dim, config.decoder_depth,
                            config.decoder_heads, config.mask_ratio)
    info: dict[str, Any] = {"init": "random"}
    if config.init_from:
        info = _load_init(config, mae)
    weights = dict(config.loss_weights)
    # the perceptual term's frozen network is the starting encoder (the base, for sensor runs)
    mae.loss_fn = MAELoss(**weights, feature_net=mae.encoder if weights.get("perceptual") else None)
    return mae, info


def _lightning():  # noqa: ANN202
    try:
        import lightning
    except ImportError:
        raise MomoGeoError("pretraining needs Lightning: pip install 'momo-geo[train]'") from None
    return lightning


def make_module(config: PretrainConfig):  # noqa: ANN201
    """The LightningModule (built in a function so that importing this file stays light)."""
    L = _lightning()

    class MAEPretrainModule(L.LightningModule):
        """MAE training step with seeded per-chip masks; AdamW + warm-up + cosine per step."""

        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.mae, self.init_info = build_mae(config)
            self.tokens = (config.img_size // 16) ** 2

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            images, indices = batch
            noise, codes = chip_noise(indices.cpu(), config.seed, self.current_epoch,
                                      self.tokens)
            if config.augment:
                images = augment(images, codes.to(images.device))
            loss, _, _ = self.mae(images, noise.to(images.device))
            self.last_train_loss = float(loss.detach())
            return loss

        def configure_optimizers(self) -> Any:
            decay, no_decay = [], []
            for name, param in self.mae.named_parameters():
                if not param.requires_grad or name.startswith("loss_fn."):
                    continue
                # MAE's rule: no weight decay on biases, norms and tokens (1-D tensors)
                (no_decay if param.ndim <= 1 or name.endswith(("cls_token", "mask_token"))
                 else decay).append(param)
            optimizer = torch.optim.AdamW(
                [{"params": decay, "weight_decay": config.weight_decay},
                 {"params": no_decay, "weight_decay": 0.0}],
                lr=config.learning_rate, betas=config.betas)
            total = config.max_steps
            warm = (config.warmup_samples if config.warmup_samples is not None
                    else config.samples // 10) // config.batch_size
            floor = config.min_lr / config.learning_rate if config.learning_rate else 0.0

            def factor(step: int) -> float:
                if step < warm:
                    return (step + 1) / warm
                progress = (step - warm) / max(1, total - warm)
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

        @torch.no_grad()
        def validation_loss(self, pool: ChipPool, batch: int = 64) -> float:
            """Mean loss over the fixed subset with fixed masks (seeded by chip index only)."""
            was = self.mae.training
            self.mae.eval()
            total, count = 0.0, 0
            for start in range(0, len(pool), batch):
                images = pool.images[start:start + batch].to(self.device)
                idx = torch.arange(start, start + len(images))
                noise, _ = chip_noise(idx, config.seed + 104_729, 0, self.tokens)
                loss, _, _ = self.mae(images, noise.to(self.device))
                total += float(loss) * len(images)
                count += len(images)
            self.mae.train(was)
            return total / count

    return MAEPretrainModule()


def make_data(config: PretrainConfig):  # noqa: ANN201
    L = _lightning()

    class PretrainData(L.LightningDataModule):
        """Training pool + fixed validation subset; our sampler instead of Lightning's."""

        def setup(self, stage: str | None = None) -> None:
            if getattr(self, "train_pool", None) is None:
                self.train_pool = build_pool(config, "train", config.pool_size, config.seed)
                self.val_pool = build_pool(config, "train", config.val_size,
                                           config.seed + 1_000_000, config.val_sensors)

        def train_dataloader(self) -> Any:
            trainer = self.trainer
            world = trainer.world_size if trainer is not None else 1
            rank = trainer.global_rank if trainer is not None else 0
            if config.batch_size % world:
                raise MomoGeoError(f"batch size {config.batch_size} does not split over "
                                   f"{world} processes")
            sampler = EpochSampler(len(self.train_pool), config.batch_size, config.seed, rank,
                                   world)
            return torch.utils.data.DataLoader(
                self.train_pool, batch_size=config.batch_size // world, sampler=sampler,
                drop_last=True, num_workers=config.num_workers)

    return PretrainData()


# --------------------------------------------------------------------------------------- run


def write_checkpoint(run_dir: Path, module: Any, samples_seen: int, epoch: int,
                     val_loss: float, train_loss: float | None) -> Path:
    """Encoder weights + a row of ``val_log.csv`` (called on rank 0 only)."""
    from safetensors.torch import save_file

    step = samples_seen // module.config.batch_size
    name = f"checkpoints/step_{step:06d}.safetensors"
    target = run_dir / name
    tmp = target.with_name(f".{target.name}.partial")
    encoder = {k: v.detach().cpu().contiguous() for k, v in module.mae.encoder.state_dict().items()}
    save_file(encoder, str(tmp), metadata={"samples_seen": str(samples_seen)})
    os.replace(tmp, target)
    if module.config.save_mae_checkpoints:
        mae_target = run_dir / f"checkpoints/mae_step_{step:06d}.safetensors"
        mae_state = module.mae.mae_state_dict()
        save_file({k: v.detach().cpu().contiguous() for k, v in mae_state.items()}, str(tmp))
        os.replace(tmp, mae_target)
    log = run_dir / "val_log.csv"
    new = not log.exists()
    with open(log, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["checkpoint", "samples_seen", "epoch", "val_loss", "train_loss"])
        writer.writerow([name, samples_seen, epoch, f"{val_loss:.8f}",
                         "" if train_loss is None else f"{train_loss:.8f}"])
    return target


def make_checkpointer(run_dir: Path, config: PretrainConfig):  # noqa: ANN201
    L = _lightning()

    class SampleCheckpointer(L.Callback):
        """Validation + checkpoint every ``checkpoint_every`` samples and at the end."""

        def __init__(self) -> None:
            self.saved = -1

        def on_train_start(self, trainer: Any, module: Any) -> None:
            seen = trainer.global_step * config.batch_size
            self.saved = seen if seen else -1
            if trainer.global_rank == 0 and seen:
                _truncate_log(run_dir / "val_log.csv", seen)

        def _save(self, trainer: Any, module: Any) -> None:
            seen = trainer.global_step * config.batch_size
            if seen == self.saved:
                return
            val = module.validation_loss(trainer.datamodule.val_pool)  # every rank: same value
            if trainer.global_rank == 0:
                write_checkpoint(run_dir, module, seen, trainer.current_epoch, val,
                                 getattr(module, "last_train_loss", None))
            trainer.save_checkpoint(str(run_dir / "last.ckpt"))
            if config.keep_resume_checkpoints:
                step = seen // config.batch_size
                trainer.save_checkpoint(str(run_dir / "checkpoints" / f"step_{step:06d}.ckpt"))
            self.saved = seen

        def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
            seen = trainer.global_step * config.batch_size
            if seen // config.checkpoint_every > max(self.saved, 0) // config.checkpoint_every:
                self._save(trainer, module)

        def on_train_end(self, trainer: Any, module: Any) -> None:
            self._save(trainer, module)

    return SampleCheckpointer()


def _truncate_log(log: Path, upto: int) -> None:
    """On resume, drop log rows written after the checkpoint being resumed."""
    if not log.exists():
        return
    with open(log, newline="") as handle:
        rows = list(csv.reader(handle))
    keep = [rows[0]] + [r for r in rows[1:] if int(r[1]) <= upto]
    with open(log, "w", newline="") as handle:
        csv.writer(handle).writerows(keep)


def _precision(config: PretrainConfig) -> str:
    if config.precision:
        return config.precision
    if config.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def write_bundle(run_dir: Path, module: Any, config: PretrainConfig,
                 extra_training: dict[str, Any] | None = None) -> Path:
    """The final encoder as a ``pretrain`` bundle, and the full MAE weights for continuation."""
    from safetensors.torch import save_file

    from momo_geo.bundle import ModelCard, save_bundle
    from momo_geo.models.vit import encoder_config

    encoder = module.mae.encoder
    gsd = [min(get_sensor(s).gsd_range[0] for s in config.sensors),
           max(get_sensor(s).gsd_range[1] for s in config.sensors)]
    card = ModelCard(
        name=config.name or f"momo-{'-'.join(config.sensors)}-{config.encoder}",
        task="pretrain",
        architecture=encoder_config(encoder, config.encoder),
        input_size=config.img_size, in_chans=3, normalization=config.normalization,
        sensors=list(config.sensors), gsd_range=gsd, tile_size=config.img_size,
        tile_overlap=max(0, config.img_size // 8),
        training={"kind": "mae-pretrain", "samples": config.samples,
                  "batch_size": config.batch_size, "lr": config.learning_rate,
                  "mask_ratio": config.mask_ratio, "seed": config.seed,
                  "loss": module.mae.loss_fn.describe(),
                  "data": {"sensors": list(config.sensors), "split": "train",
                           "chips_per_sensor": config.pool_size},
                  **module.init_info, **(extra_training or {})},
        description="MAE-pretrained MOMO encoder (momo-geo training/pretrain.py)")
    tmp = run_dir / ".mae.safetensors.partial"
    save_file({k: v.detach().cpu().contiguous() for k, v in module.mae.mae_state_dict().items()},
              str(tmp))
    os.replace(tmp, run_dir / "mae.safetensors")
    return save_bundle(run_dir / "encoder.bundle", encoder.state_dict(), card, overwrite=True)


def run_pretrain(config: PretrainConfig | dict[str, Any]) -> Path:
    """Train; return the run folder (see the module docstring for what it holds)."""
    if isinstance(config, dict):
        config = PretrainConfig.from_dict(config)
    L = _lightning()
    run_dir = Path(config.output)
    resume = None
    if config.resume:
        resume = Path(config.resume)
        if resume.is_dir():
            resume = resume / "last.ckpt"
        if not resume.is_file():
            raise MomoGeoError(f"{resume}: no checkpoint to resume from")
    elif (run_dir / "val_log.csv").exists():
        raise MomoGeoError(f"{run_dir} already holds a run; choose another output or --resume")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = make_module(config)
    data = make_data(config)
    on_cpu = config.accelerator == "cpu" or not torch.cuda.is_available()
    trainer = L.Trainer(
        accelerator=config.accelerator, devices=config.devices, strategy=config.strategy,
        num_nodes=config.num_nodes, precision=_precision(config), max_steps=config.max_steps,
        max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        use_distributed_sampler=False, deterministic=True if on_cpu else "warn",
        callbacks=[make_checkpointer(run_dir, config)])
    if trainer.global_rank == 0:
        saved = asdict(config)
        saved["world_size"] = trainer.world_size
        (run_dir / "config.json").write_text(json.dumps(saved, indent=2) + "\n")
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(resume) if resume else None)
    finally:
        torch.set_num_threads(threads)
    if trainer.global_rank == 0:
        write_bundle(run_dir, module, config, {"world_size": trainer.world_size})
    if trainer.world_size > 1:
        trainer.strategy.barrier()
    return run_dir


def main(argv: list[str] | None = None) -> None:
    """``python training/pretrain.py CONFIG.json`` (the DDP-safe entry point)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python training/pretrain.py CONFIG.json", file=sys.stderr)
        sys.exit(2)
    try:
        print(run_pretrain(PretrainConfig.from_json(args[0])))
    except MomoGeoError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
