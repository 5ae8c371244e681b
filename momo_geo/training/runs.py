"""The run folder a pretraining run writes, and the callback that writes it.

::

    RUN/config.json                          the config, as run (+ world_size)
    RUN/val_log.csv                          checkpoint, samples_seen, epoch, val_loss, train_loss,
                                             then val_TERM, train_TERM per enabled loss term,
                                             then val_loss_SENSOR per sensor of a mixed val set
    RUN/checkpoints/step_XXXXXX.safetensors  encoder weights (timm keys) at that step
    RUN/last.ckpt                            Lightning checkpoint (optimizer too) for resume
    RUN/mae.safetensors                      final encoder+decoder (to continue a sensor run from)
    RUN/encoder.bundle/                      final encoder as a "pretrain" model bundle

EVL (:mod:`momo_geo.merge.evl`) reads ``val_log.csv``: the paper's rule compares each run's loss
on its own sensor's chips, which is ``val_loss`` for a run validated on its own sensor and
``val_loss_SENSOR`` for a run validated on several (:func:`sensor_losses`); merging reads the
checkpoints; sensor runs continue from ``mae.safetensors``. Every file is written under a
temporary name first.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from momo_geo.sensors import get_sensor
from momo_geo.training._lightning import lazy_classes, require_lightning

if TYPE_CHECKING:
    from momo_geo.training.pretrain import PretrainConfig

VAL_LOG_HEADER = ["checkpoint", "samples_seen", "epoch", "val_loss", "train_loss"]
"""The first columns of ``val_log.csv``; one ``val_TERM`` and one ``train_TERM`` column per
enabled loss term follow (:func:`term_columns`), so each term of the loss can be followed."""


def term_columns(terms: list[str]) -> list[str]:
    """The per-term columns of ``val_log.csv`` for the enabled loss ``terms``."""
    return [f"val_{t}" for t in terms] + [f"train_{t}" for t in terms]


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.8f}"


def sensor_losses(module: Any, pool: Any) -> dict[str, float]:
    """Validation loss per sensor of a pool that mixes sensors (``{}`` for one sensor).

    Each sensor's chips are scored as a pool of their own, so the numbers equal what a run
    validated on that sensor alone logs as ``val_loss`` (same chips, same per-index masks). Costs
    a second validation pass; the run's ``last_val_parts`` are those of the whole pool.
    """
    names = list(dict.fromkeys(getattr(pool, "sensors", None) or ()))
    if len(names) < 2:
        return {}
    import torch

    from momo_geo.training.pretrain_data import ChipPool

    parts = getattr(module, "last_val_parts", None)
    out = {}
    for name in names:
        index = torch.tensor([i for i, s in enumerate(pool.sensors) if s == name])
        out[name] = module.validation_loss(ChipPool(pool.images[index], [name] * len(index)))
    if parts is not None:
        module.last_val_parts = parts
    return out


def _save_tensors(state: dict[str, Any], target: Path, metadata: dict[str, str] | None = None
                  ) -> Path:
    from safetensors.torch import save_file

    tmp = target.with_name(f".{target.name}.partial")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp),
              metadata=metadata)
    os.replace(tmp, target)
    return target


def write_checkpoint(run_dir: Path, module: Any, samples_seen: int, epoch: int,
                     val_loss: float, train_loss: float | None,
                     val_parts: dict[str, float] | None = None,
                     train_parts: dict[str, float] | None = None,
                     per_sensor: dict[str, float] | None = None) -> Path:
    """Encoder weights + a row of ``val_log.csv`` (called on rank 0 only), with the mean of
    each enabled loss term on the validation chips and on the last training batch, and the
    validation loss per sensor (``per_sensor``, for a mixed validation set)."""
    step = samples_seen // module.config.batch_size
    name = f"checkpoints/step_{step:06d}.safetensors"
    target = _save_tensors(module.mae.encoder.state_dict(), run_dir / name,
                           {"samples_seen": str(samples_seen)})
    if module.config.save_mae_checkpoints:
        _save_tensors(module.mae.mae_state_dict(),
                      run_dir / f"checkpoints/mae_step_{step:06d}.safetensors")
    log = run_dir / "val_log.csv"
    new = not log.exists()
    terms = module.mae.loss_fn.enabled
    val_parts, train_parts, per_sensor = val_parts or {}, train_parts or {}, per_sensor or {}
    with open(log, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(VAL_LOG_HEADER + term_columns(terms)
                            + [f"val_loss_{s}" for s in per_sensor])
        writer.writerow([name, samples_seen, epoch, f"{val_loss:.8f}", _number(train_loss)]
                        + [_number(val_parts.get(t)) for t in terms]
                        + [_number(train_parts.get(t)) for t in terms]
                        + [_number(v) for v in per_sensor.values()])
    return target


def truncate_log(log: Path, upto: int) -> None:
    """On resume, drop log rows written after the checkpoint being resumed."""
    if not log.exists():
        return
    with open(log, newline="") as handle:
        rows = list(csv.reader(handle))
    keep = [rows[0]] + [r for r in rows[1:] if int(r[1]) <= upto]
    with open(log, "w", newline="") as handle:
        csv.writer(handle).writerows(keep)


def write_bundle(run_dir: Path, module: Any, config: PretrainConfig,
                 extra_training: dict[str, Any] | None = None) -> Path:
    """The final encoder as a ``pretrain`` bundle, and the full MAE weights for continuation."""
    from momo_geo.bundle import ModelCard, save_bundle
    from momo_geo.models.vit import encoder_config

    encoder = module.mae.encoder
    gsd = [min(get_sensor(s).gsd_range[0] for s in config.sensors),
           max(get_sensor(s).gsd_range[1] for s in config.sensors)]
    card = ModelCard(
        name=config.name or f"momo-{'-'.join(config.sensors)}-{config.encoder}",
        task="pretrain",
        architecture=encoder_config(encoder, config.encoder),
        input_size=config.img_size, in_chans=3, value_scaling="tile_minmax",
        normalization=config.normalization,
        sensors=list(config.sensors), gsd_range=gsd, tile_size=config.img_size,
        tile_overlap=max(0, config.img_size // 8),
        training={"kind": "mae-pretrain", "samples": config.samples,
                  "batch_size": config.batch_size, "lr": config.learning_rate,
                  "mask_ratio": config.mask_ratio, "seed": config.seed,
                  "statistics": config.statistics,
                  "loss": module.mae.loss_fn.describe(),
                  "data": {"sensors": list(config.sensors), "split": "train",
                           "chips_per_sensor": config.pool_size},
                  **module.init_info, **(extra_training or {})},
        description="MAE-pretrained MOMO encoder (momo_geo.training.pretrain)")
    _save_tensors(module.mae.mae_state_dict(), run_dir / "mae.safetensors")
    return save_bundle(run_dir / "encoder.bundle", encoder.state_dict(), card, overwrite=True)


def _checkpointer_class() -> type:
    L = require_lightning("pretraining")

    class SampleCheckpointer(L.Callback):
        """Validation + checkpoint every ``checkpoint_every`` samples and at the end."""

        def __init__(self, run_dir: Path, config: PretrainConfig) -> None:
            self.run_dir, self.config = Path(run_dir), config
            self.saved = -1

        def _seen(self, trainer: Any) -> int:
            return trainer.global_step * self.config.batch_size

        def on_train_start(self, trainer: Any, module: Any) -> None:
            seen = self._seen(trainer)
            self.saved = seen if seen else -1
            if trainer.global_rank == 0 and seen:
                truncate_log(self.run_dir / "val_log.csv", seen)

        def _save(self, trainer: Any, module: Any) -> None:
            seen = self._seen(trainer)
            if seen == self.saved:
                return
            pool = trainer.datamodule.val_pool
            val = module.validation_loss(pool)  # every rank: same value
            per_sensor = sensor_losses(module, pool)
            if trainer.global_rank == 0:
                write_checkpoint(self.run_dir, module, seen, trainer.current_epoch, val,
                                 getattr(module, "last_train_loss", None),
                                 getattr(module, "last_val_parts", None),
                                 getattr(module, "last_train_parts", None), per_sensor)
            trainer.save_checkpoint(str(self.run_dir / "last.ckpt"))
            if self.config.keep_resume_checkpoints:
                step = seen // self.config.batch_size
                trainer.save_checkpoint(str(self.run_dir / "checkpoints" / f"step_{step:06d}.ckpt"))
            self.saved = seen

        def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
            every = self.config.checkpoint_every
            if self._seen(trainer) // every > max(self.saved, 0) // every:
                self._save(trainer, module)

        def on_train_end(self, trainer: Any, module: Any) -> None:
            self._save(trainer, module)

    return SampleCheckpointer


__getattr__ = lazy_classes(__name__, {"SampleCheckpointer": _checkpointer_class})
