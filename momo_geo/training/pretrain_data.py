"""Pretraining data: the in-memory chip pool, the rank-aware sampler and per-chip seeded noise.

Which chips form a batch and which patches each chip hides do not depend on how many processes
share the work: :class:`EpochSampler` draws one permutation per epoch from the seed and deals it
out rank by rank, and :func:`chip_noise` seeds a chip's mask and flips by (seed, epoch, chip
index). With equal per-process batches DDP's gradient average equals the global-batch gradient,
so a 2-process run follows the single-process run up to float rounding.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from momo_geo.errors import MomoGeoError
from momo_geo.sensors import SENSORS
from momo_geo.training._lightning import lazy_classes, require_lightning

if TYPE_CHECKING:
    from momo_geo.training.pretrain import PretrainConfig

SENSOR_NAMES = tuple(SENSORS)


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
    """``count`` chips per sensor, every one normalised by :func:`pretrain_input` with the
    run's statistics (:attr:`PretrainConfig.normalization`, the same for every sensor).

    A sensor's chips depend on (seed, sensor) only, so runs with the same seed share them.
    """
    from momo_geo.training.chips import default_data_root, load_chips, load_scene_chips

    root = Path(config.data_root) if config.data_root else default_data_root()
    normalization = config.normalization
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
        images.append(pretrain_input(raw, valid, normalization))
        names += [sensor] * len(raw)
    return ChipPool(torch.cat(images), names)


def pretrain_input(raw: torch.Tensor, valid: torch.Tensor | None,
                   normalization: dict[str, Any]) -> torch.Tensor:
    """Raw grey chips -> the MAE's input: per-tile stretch (the card's ``tile_minmax``), the
    run's statistics, 3 channels (the pretraining path of :mod:`momo_geo.preprocess`)."""
    from momo_geo.preprocess import to_model_input

    return to_model_input(raw, normalization["mean"], normalization["std"], in_chans=3,
                          valid=valid)


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


def _pretrain_data_class() -> type:
    L = require_lightning("pretraining")

    class PretrainData(L.LightningDataModule):
        """Training pool + fixed validation subset; our sampler instead of Lightning's."""

        def __init__(self, config: PretrainConfig) -> None:
            super().__init__()
            self.config = config
            self.train_pool: ChipPool | None = None
            self.val_pool: ChipPool | None = None

        def setup(self, stage: str | None = None) -> None:
            config = self.config
            if self.train_pool is None:
                self.train_pool = build_pool(config, "train", config.pool_size, config.seed)
                self.val_pool = build_pool(config, "train", config.val_size,
                                           config.seed + 1_000_000, config.val_sensors)

        def train_dataloader(self) -> Any:
            config, trainer = self.config, self.trainer
            world = trainer.world_size if trainer is not None else 1
            rank = trainer.global_rank if trainer is not None else 0
            if config.batch_size % world:
                raise MomoGeoError(f"batch size {config.batch_size} does not split over "
                                   f"{world} processes")
            assert self.train_pool is not None
            sampler = EpochSampler(len(self.train_pool), config.batch_size, config.seed, rank,
                                   world)
            return torch.utils.data.DataLoader(
                self.train_pool, batch_size=config.batch_size // world, sampler=sampler,
                drop_last=True, num_workers=config.num_workers)

    return PretrainData


__getattr__ = lazy_classes(__name__, {"PretrainData": _pretrain_data_class})
