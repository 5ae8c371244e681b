"""Crater segmentation data from real CTX and THEMIS images with crater boxes.

Craters are round, so a bounding box becomes a crater mask by drawing its inscribed circle
(centre of the box, diameter = the box's shorter side; boxes clipped by the image edge are
completed first, see :func:`boxes_to_mask`). That turns the two box catalogues into the
binary crater-segmentation tasks MOMO is fine-tuned and evaluated on.

* CTX — Mars Crater Catalogue (aliFrancis/mars-crater-catalogue, Zenodo; CC BY 4.0; Data 2020,
  5(3), 70): 11 tiles ``MC11E-A..K`` of 2000 × 2000 px at ~6 m/px with Pascal VOC boxes, a
  consensus ("clustered") set for every tile and an "expert" set for tiles D, F and K.
  Split by tile: the three expert-annotated tiles are validation, the other eight training, so
  the expert boxes can serve as an independent check on held-out tiles.
* THEMIS — 416 × 416 crops of the THEMIS daytime-IR global mosaic (100 m/px) with YOLO boxes from
  the Robbins & Hynek crater database (ACSE-jz1121/Crater_detection_self_training, Apache-2.0).
  Split by file with a fixed seed (crops do not overlap).

Decoded images and masks are cached lazily per item (uint8), never at construction.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from momo_geo.errors import MomoGeoError

CTX_VAL_TILES: tuple[str, ...] = ("MC11E-D", "MC11E-F", "MC11E-K")
"""The CTX tiles held out for validation (those that also have expert annotations)."""


def circles_to_mask(shape: tuple[int, int], cx: np.ndarray, cy: np.ndarray,
                    radius: np.ndarray) -> np.ndarray:
    """uint8 mask with 1 inside any circle; centres/radii in pixels (pixel-centre coordinates).

    Each circle is drawn in its own bounding window, so the cost is the circles' area, not the
    image's times the number of circles.
    """
    height, width = shape
    mask = np.zeros(shape, dtype=np.uint8)
    for x, y, r in zip(np.asarray(cx, float), np.asarray(cy, float), np.asarray(radius, float),
                       strict=True):
        if r <= 0:
            continue
        r0, r1 = max(int(np.floor(y - r)), 0), min(int(np.ceil(y + r)) + 1, height)
        c0, c1 = max(int(np.floor(x - r)), 0), min(int(np.ceil(x + r)) + 1, width)
        if r0 >= r1 or c0 >= c1:
            continue
        dy = np.arange(r0, r1)[:, None] - y
        dx = np.arange(c0, c1)[None, :] - x
        mask[r0:r1, c0:c1] |= (dx * dx + dy * dy <= r * r).astype(np.uint8)
    return mask


def boxes_to_mask(shape: tuple[int, int], boxes: np.ndarray, clipped: bool = True
                  ) -> np.ndarray:
    """Crater mask from ``boxes`` (N, 4) = xmin, ymin, xmax, ymax: the box's inscribed circle
    (edge-cut boxes completed, see :func:`boxes_to_circles`)."""
    cx, cy, diameter = boxes_to_circles(shape, boxes, clipped)
    return circles_to_mask(shape, cx, cy, diameter / 2)


def boxes_to_circles(shape: tuple[int, int], boxes: np.ndarray, clipped: bool = True
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crater circles of ``boxes`` (N, 4) = xmin, ymin, xmax, ymax: centre x, centre y in
    pixel-centre coordinates (as :func:`circles_to_mask` takes them) and diameter in pixels.

    The circle is the box's inscribed circle.

    Box edges are in continuous pixel coordinates (0 = left edge of the first pixel). A crater cut
    by the image edge has a box clipped to the image; its inscribed circle would be far too small
    (a 4 × 12 px sliver of a 12 px crater). With ``clipped`` (the default) a box that touches one
    image edge on its *shorter* axis is taken as a cut crater: its diameter is the box's longer
    side and its centre lies that radius inside the box's uncut side, partly outside the image.
    Boxes touching both edges of an axis (a crater larger than the image) keep the inscribed
    circle.
    """
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    x0, y0, x1, y1 = boxes.T
    width, height = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    diameter = np.minimum(width, height)
    if clipped and len(boxes):
        rows, cols = shape
        tol = 1.0
        left, right = x0 <= tol, x1 >= cols - tol
        top, bottom = y0 <= tol, y1 >= rows - tol
        cut_x = (left ^ right) & (width < height)
        cut_y = (top ^ bottom) & (height < width)
        corner = (left ^ right) & (top ^ bottom)
        diameter = np.where(cut_x | cut_y | corner, np.maximum(width, height), diameter)
        shift_x = cut_x | corner
        shift_y = cut_y | corner
        cx = np.where(shift_x, np.where(left, x1 - diameter / 2, x0 + diameter / 2), cx)
        cy = np.where(shift_y, np.where(top, y1 - diameter / 2, y0 + diameter / 2), cy)
    return cx - 0.5, cy - 0.5, diameter


def read_voc_boxes(path: str | Path) -> np.ndarray:
    """Crater boxes of a Pascal VOC file as continuous pixel edges (N, 4).

    VOC corners are 1-based inclusive pixel indices: pixel ``xmin`` .. ``xmax`` are covered, so
    the continuous box is ``[xmin - 1, xmax]``. A box with a missing or non-numeric corner, or
    one whose corners are swapped, is an error naming the file and the line of its ``bndbox``
    (a silently dropped or NaN box would change every crater score).
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        root = ET.fromstring(text)
    except (OSError, ET.ParseError) as exc:
        raise MomoGeoError(f"{path}: cannot read crater annotations ({exc})") from None
    # the line of each <bndbox>, in document order (ElementTree keeps no line numbers)
    starts = [text.count("\n", 0, m.start()) + 1 for m in re.finditer(r"<bndbox\b", text)]
    lines = {id(box): line for box, line in zip(root.iter("bndbox"), starts, strict=False)}
    boxes = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        corners = [box.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")]
        try:
            xmin, ymin, xmax, ymax = (float(v) for v in corners)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            xmin = ymin = xmax = ymax = math.nan
        if not (math.isfinite(xmin + ymin + xmax + ymax) and xmin <= xmax and ymin <= ymax):
            raise MomoGeoError(f"{path}, line {lines.get(id(box), '?')}: a crater box needs "
                               "numbers xmin <= xmax and ymin <= ymax, not "
                               f"{', '.join(str(c) for c in corners)}")
        boxes.append((xmin - 1, ymin - 1, xmax, ymax))
    return np.asarray(boxes, dtype=float).reshape(-1, 4)


def read_yolo_boxes(path: str | Path, width: int, height: int) -> np.ndarray:
    """Boxes of a YOLO label file (class cx cy w h, normalised) in pixel edges (N, 4).

    A missing file means an image without craters (YOLO convention). A line that is not five
    numbers with centre and size in 0..1 is an error naming the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        return np.zeros((0, 4))
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            rows.append(_yolo_row(path, number, line))
    if not rows:
        return np.zeros((0, 4))
    values = np.asarray(rows)
    cx, cy = values[:, 0] * width, values[:, 1] * height
    w, h = values[:, 2] * width, values[:, 3] * height
    return np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _yolo_row(path: Path, number: int, line: str) -> list[float]:
    """``cx cy w h`` of one YOLO label line, or a one-line error naming file and line.

    A crater cut by the image border may have its centre just outside (``cy = 1.004``): a box
    is valid when its size is above 0 and it overlaps the image, in units of the image size
    (pixel coordinates, a common mistake, lie far outside).
    """
    fields = line.split()
    try:
        cx, cy, w, h = (float(v) for v in fields[1:5])
    except ValueError:
        cx = cy = w = h = math.nan
    inside = (w > 0 and h > 0 and cx - w / 2 < 1 and cx + w / 2 > 0 and cy - h / 2 < 1
              and cy + h / 2 > 0)
    if len(fields) != 5 or not inside:
        raise MomoGeoError(f"{path}, line {number}: expected 'class cx cy w h', a box in units "
                           f"of the image size (0-1) that overlaps it, not {line.strip()!r}")
    return [cx, cy, w, h]


def _read_grey(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except OSError as exc:
        raise MomoGeoError(f"{path}: cannot read image ({exc})") from None


def _check_split(split: str) -> None:
    if split not in ("train", "val", "all"):
        raise MomoGeoError(f"split must be 'train', 'val' or 'all', got {split!r}")


def ctx_split(tiles: list[str], split: str) -> list[str]:
    """The CTX tiles of ``split`` (pure; train and val never share a tile)."""
    _check_split(split)
    if split == "all":
        return sorted(tiles)
    val = split == "val"
    return sorted(t for t in tiles if (t in CTX_VAL_TILES) == val)


def themis_split(ids: list[str], split: str, val_fraction: float = 0.2, seed: int = 0
                 ) -> list[str]:
    """The THEMIS crops of ``split``: a seeded permutation of the sorted ids, first part val."""
    _check_split(split)
    if not 0.0 < val_fraction < 1.0:
        raise MomoGeoError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ordered = sorted(ids)
    if split == "all":
        return ordered
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    n_val = int(round(val_fraction * len(ordered)))
    chosen = permutation[:n_val] if split == "val" else permutation[n_val:]
    return sorted(ordered[i] for i in chosen)


class _CraterImages(Dataset):
    """Images with crater masks; subclasses list ids and load (image, mask) as uint8."""

    ids: list[str]

    def __init__(self, transforms: Any = None, cache: bool = True) -> None:
        self.transforms = transforms
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _image_path(self, index: int) -> Path:
        raise NotImplementedError

    def image_shape(self, index: int) -> tuple[int, int]:
        """(H, W) of item ``index`` from the file header (no decoding)."""
        if index in self._cache:
            return self._cache[index][0].shape  # type: ignore[return-value]
        path = self._image_path(index)
        try:
            with Image.open(path) as image:
                width, height = image.size
        except OSError as exc:
            raise MomoGeoError(f"{path}: cannot read image ({exc})") from None
        return height, width

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 (H, W), mask uint8 (H, W)) of item ``index``, decoded once if caching."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        if index in self._cache:
            return self._cache[index]
        loaded = self._load(index)
        if self.cache:
            self._cache[index] = loaded
        return loaded

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.arrays(index)
        sample = {
            "image": torch.from_numpy(image.astype(np.float32))[None],
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "id": self.ids[index if index >= 0 else index + len(self)],
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


class CTXCraters(_CraterImages):
    """CTX crater tiles: ``{"image": (1, 2000, 2000) float32 0..255, "mask": (2000, 2000) int64
    0/1, "id": "MC11E-A"}``.

    Args:
        root: the ``ctx_craters`` folder (``images/``, ``annotations/<set>/``).
        split: ``"train"`` (8 tiles), ``"val"`` (tiles D, F, K) or ``"all"``.
        annotations: ``"clustered"`` (consensus, every tile) or ``"expert"`` (D, F, K only).
    """

    def __init__(self, root: str | Path, split: str = "train", annotations: str = "clustered",
                 transforms: Any = None, cache: bool = True) -> None:
        super().__init__(transforms, cache)
        self.root = Path(root)
        if annotations not in ("clustered", "expert"):
            raise MomoGeoError(f"annotations must be 'clustered' or 'expert', got {annotations!r}")
        self.annotations = annotations
        labels = self.root / "annotations" / annotations
        if not labels.is_dir() or not (self.root / "images").is_dir():
            raise MomoGeoError(f"{self.root}: expected images/ and annotations/{annotations}/ "
                               "(the CTX Mars Crater Catalogue)")
        tiles = [p.stem for p in labels.glob("*.xml") if (self.root / "images" /
                                                         f"{p.stem}.png").is_file()]
        self.split = split
        self.ids = ctx_split(tiles, split)
        if not self.ids:
            raise MomoGeoError(f"no CTX tiles with {annotations} annotations in split {split!r}")

    def boxes(self, index: int) -> np.ndarray:
        """Crater boxes of tile ``index`` in pixel edges (N, 4)."""
        return read_voc_boxes(self.root / "annotations" / self.annotations
                              / f"{self.ids[index]}.xml")

    def _image_path(self, index: int) -> Path:
        return self.root / "images" / f"{self.ids[index]}.png"

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = _read_grey(self._image_path(index))
        return image, boxes_to_mask(image.shape, self.boxes(index))


class THEMISCraters(_CraterImages):
    """THEMIS crater crops: ``{"image": (1, 416, 416) float32 0..255, "mask": (416, 416) int64
    0/1, "id": "crater12"}``.

    Args:
        root: the ``themis_craters`` folder (``images/*.jpg``, ``labels/*.txt``).
        split: ``"train"``, ``"val"`` or ``"all"``; by file, seeded.
    """

    def __init__(self, root: str | Path, split: str = "train", val_fraction: float = 0.2,
                 seed: int = 0, transforms: Any = None, cache: bool = True) -> None:
        super().__init__(transforms, cache)
        self.root = Path(root)
        images = self.root / "images"
        if not images.is_dir():
            raise MomoGeoError(f"{images}: no such folder (expected the THEMIS crater crops)")
        self._files = {p.stem: p for p in images.iterdir()
                       if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif")}
        self.split = split
        self.ids = themis_split(list(self._files), split, val_fraction, seed)

    def boxes(self, index: int, width: int = 416, height: int = 416) -> np.ndarray:
        return read_yolo_boxes(self.root / "labels" / f"{self.ids[index]}.txt", width, height)

    def _image_path(self, index: int) -> Path:
        return self._files[self.ids[index]]

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = _read_grey(self._image_path(index))
        height, width = image.shape
        return image, boxes_to_mask(image.shape, self.boxes(index, width, height))
