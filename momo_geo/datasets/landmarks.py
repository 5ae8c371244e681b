"""HiRISE landmark classification (the Mars-Bench "landmark" task) with a product-grouped split.

Data: "Mars orbital image (HiRISE) labeled data set version 3", Wagstaff, Lu, Doran, Mandrake
(JPL), Zenodo DOI 10.5281/zenodo.2538136 — 227 × 227 greyscale crops cut from HiRISE browse
images around landmarks. ``labels.csv`` lists ``file, label, product_id``.

Why the split is by product: crops of one HiRISE observation share illumination, season, terrain
and often overlap, so a random split by file leaks and inflates accuracy. All crops of a product go
to one side. Within that constraint the split is stratified greedily, rarest classes first, so that
each class is in the validation split about ``val_fraction`` of its crops where its products allow
(a class seen in a single product, like "spider", can only be on one side).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from momo_geo.errors import MomoGeoError

LANDMARK_CLASSES: list[str] = [
    "other", "crater", "dark_dune", "slope_streak", "bright_dune", "impact_ejecta",
    "swiss_cheese", "spider",
]
"""Class names in the order of the data set's own class map (ids 0-7), which models use."""

LANDMARK_SIZE = 227


LABEL_COLUMNS = ("file", "label", "product_id")


def read_labels(table: Path, classes: Sequence[str]) -> pd.DataFrame:
    """``labels.csv`` checked row by row: a malformed row is one error naming the file and its
    line (the header is line 1), not a pandas traceback or a silently skipped crop."""
    try:
        labels = pd.read_csv(table, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MomoGeoError(f"{table}: not a readable CSV table "
                           f"({str(exc).strip().splitlines()[-1]})") from None
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise MomoGeoError(f"{table}, line 1: the header needs the columns "
                           f"{', '.join(LABEL_COLUMNS)} (missing {', '.join(missing)})")
    for row, (file, label, product) in enumerate(labels[list(LABEL_COLUMNS)].itertuples(
            index=False), start=2):
        if not (file.strip() and product.strip()):
            raise MomoGeoError(f"{table}, line {row}: every crop needs a file and a product_id")
        if label not in classes:
            raise MomoGeoError(f"{table}, line {row}: unknown landmark class {label!r} "
                               f"(known: {', '.join(classes)})")
    return labels


def split_products(labels: pd.DataFrame, val_fraction: float = 0.2, seed: int = 0
                   ) -> tuple[set[str], set[str]]:
    """Assign whole products to (train, val), stratified by class as far as grouping allows.

    Pure and deterministic: the same table, fraction and seed give the same split.
    """
    if not 0.0 < val_fraction < 1.0:
        raise MomoGeoError(f"val_fraction must be in (0, 1), got {val_fraction}")
    counts = pd.crosstab(labels["product_id"], labels["label"]).sort_index()
    totals = counts.sum(axis=0).to_numpy(dtype=float)
    target = val_fraction * totals
    n_total = float(totals.sum())
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(len(counts))
    per_group = counts.to_numpy(dtype=float)
    # Rarest class present in each product decides when it is placed (rare classes first).
    rarity = np.where(per_group > 0, totals[None, :], np.inf).min(axis=1)
    order = np.lexsort((tiebreak, rarity))
    val_counts = np.zeros_like(totals)
    scale = np.maximum(totals, 1.0)
    train, val = set(), set()
    for i in order:
        group = per_group[i]
        with_val = val_counts + group

        def cost(v: np.ndarray) -> float:
            return float((((v - target) / scale) ** 2).sum()
                         + ((v.sum() - val_fraction * n_total) / n_total) ** 2)

        if cost(with_val) < cost(val_counts):
            val.add(counts.index[i])
            val_counts = with_val
        else:
            train.add(counts.index[i])
    return train, val


class HiRISELandmarks(Dataset):
    """HiRISE landmark crops: ``{"image": (1, 227, 227) float32 0..255, "label", "product_id",
    "file"}``.

    Args:
        root: the ``hirise_landmarks`` folder (``labels.csv`` and ``images/``).
        split: ``"train"``, ``"val"`` or ``"all"``.
        val_fraction: share of crops (per class, as far as products allow) in ``"val"``.
        seed: seed of the split's tie-breaking.
        transforms: a function applied to each sample dict.
    """

    classes: list[str] = LANDMARK_CLASSES

    def __init__(self, root: str | Path, split: str = "train", val_fraction: float = 0.2,
                 seed: int = 0, transforms: Any = None) -> None:
        self.root = Path(root)
        table = self.root / "labels.csv"
        if not table.is_file():
            raise MomoGeoError(f"{table}: no such file (expected the HiRISE landmark data set)")
        if split not in ("train", "val", "all"):
            raise MomoGeoError(f"split must be 'train', 'val' or 'all', got {split!r}")
        labels = read_labels(table, self.classes)
        self.split = split
        self.train_products, self.val_products = split_products(labels, val_fraction, seed)
        if split != "all":
            keep = self.train_products if split == "train" else self.val_products
            labels = labels[labels["product_id"].isin(keep)]
        self.samples = labels.sort_values("file").reset_index(drop=True)
        self.transforms = transforms

    @property
    def products(self) -> set[str]:
        return set(self.samples["product_id"])

    @property
    def targets(self) -> np.ndarray:
        """Class id of every sample (for class weights and stratified metrics)."""
        return self.samples["label"].map(self.classes.index).to_numpy()

    def __len__(self) -> int:
        return len(self.samples)

    def image_shape(self, index: int) -> tuple[int, int]:
        """Every crop is delivered at 227 × 227."""
        return LANDMARK_SIZE, LANDMARK_SIZE

    def load_image(self, index: int) -> np.ndarray:
        """The crop as a uint8 (227, 227) array."""
        path = self.root / "images" / self.samples.at[index, "file"]
        try:
            with Image.open(path) as image:
                grey = image.convert("L")
                if grey.size != (LANDMARK_SIZE, LANDMARK_SIZE):
                    grey = grey.resize((LANDMARK_SIZE, LANDMARK_SIZE), Image.BILINEAR)
                return np.asarray(grey, dtype=np.uint8)
        except OSError as exc:
            raise MomoGeoError(f"{path}: cannot read landmark image ({exc})") from None

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.samples.iloc[index]
        sample = {
            "image": torch.from_numpy(self.load_image(index).astype(np.float32))[None],
            "label": int(self.classes.index(row["label"])),
            "product_id": str(row["product_id"]),
            "file": str(row["file"]),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def class_counts(self) -> dict[str, int]:
        counts = self.samples["label"].value_counts()
        return {name: int(counts.get(name, 0)) for name in self.classes}


def products_overlap(a: Sequence[str] | set[str], b: Sequence[str] | set[str]) -> set[str]:
    """Products present in both collections (empty for a leak-free split)."""
    return set(a) & set(b)
