"""Fixed-size random chips cut from whole images, for training and MAE pretraining.

Models train on fixed-size inputs, while the labelled data come as 2000 px CTX tiles, 416 px THEMIS
crops and 227 px HiRISE crops. :class:`ChipDataset` cuts ``count`` chips of ``size`` px: chip ``i``
is a pure function of ``(seed, i)`` (which image, which offset), so a chip set is reproducible and
can be indexed in any order by any number of workers without shared state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from momo_geo.errors import MomoGeoError


class ChipDataset(Dataset):
    """``count`` random ``size`` × ``size`` chips of the items of ``dataset``.

    ``dataset`` items must hold ``"image"`` (C, H, W) and may hold ``"mask"`` (H, W); both are
    cut at the same offset (datasets with ``arrays(i)``, the crater sets, are cut before the
    conversion to tensors, and their own ``transforms`` are not applied). Items smaller than
    ``size`` are skipped; items are picked with probability proportional to their number of
    possible offsets (big tiles give more chips).
    Each chip: ``{"image", ["mask"], "id": "<item id>@<row>,<col>"}``.
    """

    def __init__(self, dataset: Any, size: int, count: int, seed: int = 0,
                 transforms: Any = None) -> None:
        if size < 1 or count < 1:
            raise MomoGeoError(f"chip size and count must be positive, got {size} and {count}")
        self.dataset, self.size, self.count, self.seed = dataset, int(size), int(count), seed
        self.transforms = transforms
        shapes = [self._shape(i) for i in range(len(dataset))]
        self._items = np.asarray([i for i, (h, w) in enumerate(shapes)
                                  if h >= size and w >= size], dtype=np.int64)
        if self._items.size == 0:
            raise MomoGeoError(f"no image is at least {size} x {size} px")
        weights = np.asarray([(shapes[i][0] - size + 1) * (shapes[i][1] - size + 1)
                              for i in self._items], dtype=float)
        self._cumulative = np.cumsum(weights / weights.sum())
        self._shapes = shapes

    def _shape(self, index: int) -> tuple[int, int]:
        if hasattr(self.dataset, "image_shape"):  # from the file header, without decoding
            return tuple(self.dataset.image_shape(index))  # type: ignore[return-value]
        if hasattr(self.dataset, "arrays"):
            image = self.dataset.arrays(index)[0]
            return int(image.shape[-2]), int(image.shape[-1])
        if hasattr(self.dataset, "load_image"):
            image = self.dataset.load_image(index)
            return int(image.shape[-2]), int(image.shape[-1])
        image = self.dataset[index]["image"]
        return int(image.shape[-2]), int(image.shape[-1])

    def __len__(self) -> int:
        return self.count

    def locate(self, index: int) -> tuple[int, int, int]:
        """(item, row, col) of chip ``index``."""
        if not 0 <= index < self.count:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        pick = int(np.searchsorted(self._cumulative, rng.random(), side="right"))
        item = int(self._items[min(pick, self._items.size - 1)])
        height, width = self._shapes[item]
        row = int(rng.integers(0, height - self.size + 1))
        col = int(rng.integers(0, width - self.size + 1))
        return item, row, col

    def __getitem__(self, index: int) -> dict[str, Any]:
        item, row, col = self.locate(index)
        window = (slice(row, row + self.size), slice(col, col + self.size))
        if hasattr(self.dataset, "arrays"):
            # Crop the cached uint8 arrays before converting: a 2000 px CTX tile as float32 +
            # int64 would be 48 MB per chip otherwise.
            image, mask = self.dataset.arrays(item)
            chip: dict[str, Any] = {
                "image": torch.from_numpy(image[window].astype(np.float32))[None],
                "mask": torch.from_numpy(mask[window].astype(np.int64)),
            }
            name = self.dataset.ids[item]
        else:
            source = self.dataset[item]
            chip = {"image": source["image"][(...,) + window].clone()}
            if "mask" in source:
                chip["mask"] = source["mask"][window].clone()
            name = source.get("id", source.get("file", str(item)))
        chip["id"] = f"{name}@{row},{col}"
        if self.transforms is not None:
            chip = self.transforms(chip)
        return chip


def random_chips(dataset: Any, size: int, count: int, seed: int = 0) -> ChipDataset:
    """Shorthand for :class:`ChipDataset`."""
    return ChipDataset(dataset, size, count, seed)


_FOLDERS = {"hirise": "hirise_landmarks", "ctx": "ctx_craters", "themis": "themis_craters"}


def unlabelled_chips(sensor: str, root: str | Path, split: str = "train", size: int = 224,
                     count: int = 1000, seed: int = 0) -> ChipDataset:
    """Grey chips of one sensor for MAE pretraining, from the ``split`` of its labelled data.

    ``root`` is the shared data folder holding ``hirise_landmarks/``, ``ctx_craters/`` and
    ``themis_craters/`` (or that sensor's folder itself). Only training splits should feed
    pretraining, so the validation images of the downstream tasks stay unseen. Items:
    ``{"image": (1, size, size) float32 0..255, "id"}`` (CTX/THEMIS chips also carry ``"mask"``,
    which pretraining ignores).
    """
    from momo_geo.datasets.craters import CTXCraters, THEMISCraters
    from momo_geo.datasets.landmarks import HiRISELandmarks
    from momo_geo.sensors import get_sensor

    name = get_sensor(sensor).name
    root = Path(root)
    folder = root / _FOLDERS[name] if (root / _FOLDERS[name]).is_dir() else root
    if name == "hirise":
        dataset: Any = HiRISELandmarks(folder, split=split, seed=0)
    elif name == "ctx":
        dataset = CTXCraters(folder, split=split)
    else:
        dataset = THEMISCraters(folder, split=split)
    return ChipDataset(dataset, size, count, seed)


def stack_chips(chips: ChipDataset, key: str = "image") -> torch.Tensor:
    """All chips of a (small) :class:`ChipDataset` as one tensor (N, ...)."""
    return torch.stack([chips[i][key] for i in range(len(chips))])
