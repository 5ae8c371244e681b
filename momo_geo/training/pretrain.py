"""MAE pretraining on Lightning: one code path for a laptop CPU, one GPU, or many GPUs with DDP.

A run (``run_pretrain(config) -> run_dir``) trains a :class:`~momo_geo.models.mae.MaskedAutoencoder`
(the :class:`MAEPretrainModule`) on random chips of one sensor (or all three) and, every
``checkpoint_every`` samples, scores the model on a fixed validation subset and writes the run
folder described in :mod:`momo_geo.training.runs`. ``momo-geo pretrain``, the MOMO pipeline
(:mod:`momo_geo.training.pipeline`) and the experiments in the checkout's ``training/`` all run it.

Reproducibility across process counts: see :mod:`momo_geo.training.pretrain_data` (a seeded
sampler dealt out rank by rank, masks seeded per chip), so a 2-process DDP run follows the
single-process run up to float rounding.

Validation loss: on a fixed subset of *train-split* chips (a different seed from the training
pool) with fixed masks, so that losses of different runs and checkpoints are comparable (EVL
needs exactly that) and downstream validation images never steer pretraining.

``python -m momo_geo.training.pretrain CONFIG.json`` is the DDP-safe entry point: Lightning's DDP
launcher re-runs the command that started it in every process, and a module path works from an
installed wheel as well as from a checkout.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from momo_geo.errors import MomoGeoError
from momo_geo.sensors import ALL_SENSORS_NORMALIZATION, get_sensor
from momo_geo.training._lightning import lazy_classes, require_lightning, wall_clock_cap
from momo_geo.training.pretrain_data import SENSOR_NAMES, chip_noise


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
        default_factory=lambda: {"pixel": 1.0, "ssim": 0.0, "gradient": 0.0, "feature": 0.0})
    """Weight of each loss term, 0 = off (:mod:`momo_geo.models.losses`): ``pixel``, ``ssim``,
    ``gradient``, ``feature`` (old name ``perceptual``). Each enabled term is logged on its own
    in ``val_log.csv``."""
    statistics: str = "auto"
    """Input statistics of every chip of the run (training and validation), and what the
    bundle records: ``joint`` (the all-sensor statistics, for every sensor: the MOMO experiment,
    whose sensor runs must see the base's inputs for their task vectors to be comparable),
    ``sensor`` (a one-sensor run's own statistics), or ``auto`` (default): the normalisation
    recorded by the ``init_from`` bundle or run when there is one (a continuation keeps its
    encoder's inputs), else ``joint``. Decided in one place: :attr:`normalization`."""
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
    max_minutes: float = 0.0
    """Wall-clock cap on the run (0: none): a safety net on a machine of unknown speed. The
    budget (``samples``) is what the run is sized by; a run stopped by the cap keeps the
    checkpoints it wrote, and its bundle records the samples it saw."""
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
        from momo_geo.models.losses import loss_weights

        try:
            self.loss_weights = loss_weights(self.loss_weights)
        except ValueError as exc:
            raise MomoGeoError(f"pretrain config: {exc}") from None
        if self.img_size % 16:
            raise MomoGeoError(f"img_size {self.img_size} is not a multiple of 16")
        if self.batch_size < 1 or self.samples < self.batch_size:
            raise MomoGeoError(f"the budget ({self.samples} samples) must hold at least one "
                               f"batch of {self.batch_size}")
        if self.checkpoint_every < 1:
            raise MomoGeoError("checkpoint_every must be positive")
        if self.statistics not in ("auto", "joint", "sensor"):
            raise MomoGeoError(f"statistics must be auto, joint or sensor, not "
                               f"{self.statistics!r}")
        if self.statistics == "sensor" and len(self.sensors) != 1:
            raise MomoGeoError("statistics 'sensor' needs a one-sensor run; several sensors "
                               "share the joint statistics")

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
    def normalization(self) -> dict[str, Any]:
        """The one place that decides the run's input statistics (see :attr:`statistics`):
        every chip is normalised with them and the bundle records them."""
        if self.statistics == "auto" and self.init_from:
            recorded = recorded_normalization(self.init_from)
            if recorded is not None:
                return recorded
        if self.statistics == "sensor":
            norm = get_sensor(self.sensors[0]).normalization
        else:
            norm = ALL_SENSORS_NORMALIZATION
        return {"mean": norm.mean, "std": norm.std}


def recorded_normalization(init_from: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``normalization`` recorded by a bundle, or by a run's ``encoder.bundle``; ``None``
    for a bare ``.safetensors`` (nothing recorded) or a run without a bundle yet."""
    path = Path(init_from)
    for folder in (path, path / "encoder.bundle"):
        card = folder / "card.json"
        if card.is_file():
            try:
                return dict(json.loads(card.read_text())["normalization"])
            except (OSError, json.JSONDecodeError, KeyError, TypeError):
                raise MomoGeoError(f"{card}: no readable normalization") from None
    return None


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
    # the feature term's frozen network is the starting encoder (the base, for sensor runs)
    mae.loss_fn = MAELoss(**weights, feature_net=mae.encoder if weights.get("feature") else None)
    return mae, info


def _mae_module_class() -> type:
    L = require_lightning("pretraining")

    class MAEPretrainModule(L.LightningModule):
        """MAE training step with seeded per-chip masks; AdamW + warm-up + cosine per step.

        ``MAEPretrainModule(config)`` with a :class:`PretrainConfig` or its dict; the config is
        saved as the hyperparameters, so ``MAEPretrainModule.load_from_checkpoint(RUN /
        "last.ckpt")`` rebuilds the module.
        """

        def __init__(self, config: PretrainConfig | dict[str, Any]) -> None:
            super().__init__()
            if isinstance(config, dict):
                config = PretrainConfig.from_dict(config)
            self.save_hyperparameters({"config": asdict(config)})
            self.config = config
            self.mae, self.init_info = build_mae(config)
            self.tokens = (config.img_size // 16) ** 2
            self.last_train_loss: float | None = None
            self.last_train_parts: dict[str, float] = {}
            self.last_val_parts: dict[str, float] = {}

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            from momo_geo.training.pretrain_data import augment

            images, indices = batch
            noise, codes = chip_noise(indices.cpu(), self.config.seed, self.current_epoch,
                                      self.tokens)
            if self.config.augment:
                images = augment(images, codes.to(images.device))
            loss, _, _ = self.mae(images, noise.to(images.device))
            self.last_train_loss = float(loss.detach())
            self.last_train_parts = {k: float(v.detach()) for k, v in self.mae.last_parts.items()}
            return loss

        def configure_optimizers(self) -> Any:
            from momo_geo.training.schedule import scheduler

            config = self.config
            optimizer = torch.optim.AdamW(
                mae_param_groups(self.mae, config.weight_decay), lr=config.learning_rate,
                betas=config.betas)
            warm = (config.warmup_samples if config.warmup_samples is not None
                    else config.samples // 10) // config.batch_size
            floor = config.min_lr / config.learning_rate if config.learning_rate else 0.0
            return {"optimizer": optimizer,
                    "lr_scheduler": scheduler(optimizer, warm, config.max_steps, floor)}

        @torch.no_grad()
        def validation_loss(self, pool: Any, batch: int = 64) -> float:
            """Mean loss over the fixed subset with fixed masks (seeded by chip index only); the
            mean of each term goes to ``last_val_parts``."""
            was = self.mae.training
            self.mae.eval()
            total, count = 0.0, 0
            parts: dict[str, float] = {}
            for start in range(0, len(pool), batch):
                images = pool.images[start:start + batch].to(self.device)
                idx = torch.arange(start, start + len(images))
                noise, _ = chip_noise(idx, self.config.seed + 104_729, 0, self.tokens)
                loss, _, _ = self.mae(images, noise.to(self.device))
                total += float(loss) * len(images)
                for key, value in self.mae.last_parts.items():
                    parts[key] = parts.get(key, 0.0) + float(value) * len(images)
                count += len(images)
            self.mae.train(was)
            self.last_val_parts = {k: v / count for k, v in parts.items()}
            return total / count

    return MAEPretrainModule


__getattr__ = lazy_classes(__name__, {"MAEPretrainModule": _mae_module_class})


def mae_param_groups(mae: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """MAE's rule: no weight decay on biases, norms and tokens (1-D tensors); the loss network
    (a frozen copy for the perceptual term) is not trained."""
    decay, no_decay = [], []
    for name, param in mae.named_parameters():
        if not param.requires_grad or name.startswith("loss_fn."):
            continue
        (no_decay if param.ndim <= 1 or name.endswith(("cls_token", "mask_token"))
         else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _precision(config: PretrainConfig) -> str:
    if config.precision:
        return config.precision
    if config.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _resume_path(config: PretrainConfig, run_dir: Path) -> Path | None:
    if config.resume:
        resume = Path(config.resume)
        if resume.is_dir():
            resume = resume / "last.ckpt"
        if not resume.is_file():
            raise MomoGeoError(f"{resume}: no checkpoint to resume from")
        return resume
    if (run_dir / "val_log.csv").exists():
        raise MomoGeoError(f"{run_dir} already holds a run; choose another output or --resume")
    return None


def _trainer(config: PretrainConfig, run_dir: Path) -> Any:
    L = require_lightning("pretraining")
    from momo_geo.training import runs

    on_cpu = config.accelerator == "cpu" or not torch.cuda.is_available()
    return L.Trainer(
        accelerator=config.accelerator, devices=config.devices, strategy=config.strategy,
        num_nodes=config.num_nodes, precision=_precision(config), max_steps=config.max_steps,
        max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        use_distributed_sampler=False, deterministic=True if on_cpu else "warn",
        max_time=wall_clock_cap(config.max_minutes),
        callbacks=[runs.SampleCheckpointer(run_dir, config)])


def run_pretrain(config: PretrainConfig | dict[str, Any]) -> Path:
    """Train; return the run folder (see :mod:`momo_geo.training.runs` for what it holds)."""
    from momo_geo.training import pretrain_data
    from momo_geo.training.runs import write_bundle

    if isinstance(config, dict):
        config = PretrainConfig.from_dict(config)
    L = require_lightning("pretraining")
    run_dir = Path(config.output)
    resume = _resume_path(config, run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = sys.modules[__name__].MAEPretrainModule(config)
    trainer = _trainer(config, run_dir)
    if trainer.global_rank == 0:
        saved = asdict(config)
        saved["world_size"] = trainer.world_size
        (run_dir / "config.json").write_text(json.dumps(saved, indent=2) + "\n")
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        trainer.fit(module, datamodule=pretrain_data.PretrainData(config),
                    ckpt_path=str(resume) if resume else None)
    finally:
        torch.set_num_threads(threads)
    if trainer.global_rank == 0:
        extra: dict[str, Any] = {"world_size": trainer.world_size}
        if config.max_minutes:  # the samples a capped run saw (the budget is ``samples``)
            extra["samples_seen"] = trainer.global_step * config.batch_size
        write_bundle(run_dir, module, config, extra)
    if trainer.world_size > 1:
        trainer.strategy.barrier()
    return run_dir


def main(argv: list[str] | None = None) -> None:
    """``python -m momo_geo.training.pretrain CONFIG.json`` (the DDP-safe entry point)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m momo_geo.training.pretrain CONFIG.json", file=sys.stderr)
        sys.exit(2)
    try:
        print(run_pretrain(PretrainConfig.from_json(args[0])))
    except MomoGeoError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
