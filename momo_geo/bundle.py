"""Model bundles: safetensors weights plus a JSON model card, in one folder.

A bundle (``NAME.bundle/``) holds ``weights.safetensors`` and ``card.json``. The card says
everything an engine needs to use the weights correctly and everything a scientist needs to trust
them: task, architecture, input size and bands, value scaling and normalisation, sensors and GSD
range, classes and colours, tiling defaults, the merge recipe, training data, metrics, licence and
the SHA-256 of the weights. Loading checks the schema and the hash and never unpickles anything
(safetensors holds only tensors), so a bundle cannot carry code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from momo_geo import __version__
from momo_geo.errors import MomoGeoError

SCHEMA_VERSION = 1
TASKS = ("pretrain", "classification", "segmentation")
CARD_NAME = "card.json"
WEIGHTS_NAME = "weights.safetensors"
BUNDLED_DIR = Path(__file__).parent / "weights"
BUNDLED_MODELS = {
    # name -> folder inside momo_geo/weights; "default" is what `momo-geo map` uses.
    "default": "crater-seg.bundle",
    "craters": "crater-seg.bundle",
    "landmarks": "landmarks.bundle",
}


@dataclass
class ClassInfo:
    id: int
    name: str
    color: str  # "#rrggbb"


@dataclass
class ModelCard:
    """The JSON card of a bundle. Unknown keys are refused, so typos do not pass silently."""

    name: str
    task: str
    architecture: dict[str, Any]
    """Passed to :func:`momo_geo.models.create_model`; always has ``encoder`` (a timm name)."""
    input_size: int = 224
    bands: str = "mean"
    """How scene bands become the model's input: ``"mean"`` of all bands, or ``"first"``."""
    in_chans: int = 3
    """Channels the network takes; a single grey band is replicated to fill them."""
    value_scaling: str = "tile_minmax"
    """How raw values are stretched before normalising (:mod:`momo_geo.preprocess`):
    ``scene_percentile`` (one range for the whole scene) or ``tile_minmax`` (each tile by its
    own min/max, as MOMO's released checkpoints were pretrained)."""
    normalization: dict[str, Any] = field(default_factory=lambda: {"mean": 0.5006,
                                                                   "std": 0.1664})
    """Statistics after stretching, ``(x - mean) / std``: one number each (every channel), or one
    per input channel (:mod:`momo_geo.normalization`). The one record every path reads."""
    sensors: list[str] = field(default_factory=lambda: ["hirise", "ctx", "themis"])
    gsd: float | None = None
    """Nominal GSD (m/px) the model was trained at; scenes far off it are resampled to it."""
    gsd_range: list[float] | None = None
    source_tile: int | None = None
    """For a model without a GSD trained on fixed-size crops resized to ``input_size`` (the
    HiRISE landmark crops are 227 px): the scene pixels one input tile covers when mapping, so
    that features appear at the size the model learned them."""
    classes: list[ClassInfo] = field(default_factory=list)
    tile_size: int = 224
    tile_overlap: int = 32
    min_confidence: dict[str, float] = field(default_factory=dict)
    """Class name -> confidence floor: mapped features whose mean confidence is below it are
    erased (:mod:`momo_geo.inference.floor`); chosen on held-out selection images."""
    min_diameter: dict[str, float] = field(default_factory=dict)
    """Class name -> smallest feature kept, as the diameter (model pixels) of the disc of equal
    area: a smaller mapped feature is erased like one below its floor (segmentation only);
    chosen on held-out selection images with the floor."""
    max_diameter: dict[str, float] = field(default_factory=dict)
    """Class name -> largest feature the fine pass keeps (equal-area diameter, model pixels): a
    model that never saw a whole feature wider than its training chips outlines dark albedo
    bands, not craters, at that size; large craters are the coarse passes' (round ones only)."""
    unmapped_classes: list[str] = field(default_factory=list)
    """Classes the model never predicts: too few training examples to learn (a class seen in
    one crop is memorised, and its predictions elsewhere are false alarms). The engine masks
    their logits, so each such tile goes to its next most likely class
    (``Recipe.min_class_crops``, ``Recipe.min_class_products``)."""
    tta: str = "none"
    """Test-time augmentation the engine applies (:mod:`momo_geo.inference.tta`): ``none`` or
    ``d4`` (probabilities averaged over the eight flips and quarter turns); chosen by the
    calibration on held-out images where the recipe asks it to choose."""
    coarse_passes: list[dict[str, Any]] = field(default_factory=list)
    """Further passes at lower resolutions for features larger than the model's view, each
    ``{"class", "scale", "min_diameter", "min_confidence"}`` (:mod:`momo_geo.inference.coarse`);
    chosen on held-out selection images."""
    merge: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    license: str = "MIT"
    description: str = ""
    schema_version: int = SCHEMA_VERSION
    momo_geo_version: str = __version__
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).replace(microsecond=0).isoformat())
    weights_sha256: str = ""

    def __post_init__(self) -> None:
        self.classes = [c if isinstance(c, ClassInfo) else ClassInfo(**c) for c in self.classes]
        if self.task not in TASKS:
            raise MomoGeoError(f"model card: task {self.task!r} is not one of {', '.join(TASKS)}")
        if "encoder" not in self.architecture:
            raise MomoGeoError("model card: architecture has no 'encoder'")
        if self.task != "pretrain" and not self.classes:
            raise MomoGeoError(f"model card: a {self.task} model must list its classes")
        if self.value_scaling not in ("scene_percentile", "tile_minmax"):
            raise MomoGeoError(f"model card: value_scaling must be 'scene_percentile' or "
                               f"'tile_minmax', not {self.value_scaling!r}")
        if self.bands not in ("mean", "first"):
            raise MomoGeoError(f"model card: bands must be 'mean' or 'first', not {self.bands!r}")
        _check_classes(self.classes)
        _check_floors(self.min_confidence, self.class_names)
        _check_unmapped(self.unmapped_classes, self.class_names)
        _check_sizes_per_class(self.min_diameter, self.class_names, self.task)
        _check_sizes_per_class(self.max_diameter, self.class_names, self.task, "max_diameter")
        check_coarse_passes(self.coarse_passes, self.class_names, self.task)
        _check_normalization(self.normalization, self.in_chans)
        _check_sizes(self)
        if self.weights_sha256 and not _is_hex(self.weights_sha256, 64):
            raise MomoGeoError("model card: weights_sha256 must be 64 hexadecimal digits, not "
                               f"{self.weights_sha256!r}")

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise MomoGeoError(
                f"model card schema version {version!r} is not supported "
                f"(this momo-geo reads version {SCHEMA_VERSION})")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise MomoGeoError(f"model card has unknown fields: {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise MomoGeoError(f"model card is incomplete: {exc}") from None


# Card checks: a card is checked when it is read, before any tile is, so a card that would give
# a silently wrong mask (gaps in class ids), fail after the whole inference (a bad colour) or
# divide by zero (std 0) is refused at once, in one line naming the field.

MAX_SIZE = 8192
"""Largest input or tile side (px) a card may ask for: a tile of 8192² is already ~1 GB of
activations for a small ViT; a larger one is a typo."""
MAX_CHANNELS = 64


def _is_hex(text: str, digits: int) -> bool:
    return len(text) == digits and all(c in "0123456789abcdefABCDEF" for c in text)


def _check_classes(classes: list[ClassInfo]) -> None:
    """Class ids 0..K-1 in order (the model's output channels), unique names, ``#rrggbb``."""
    ids = [c.id for c in classes]
    if any(isinstance(i, bool) or not isinstance(i, int) for i in ids) or ids != list(
            range(len(ids))):
        raise MomoGeoError(f"model card: class ids must be 0 to {len(ids) - 1} in order (one per "
                           f"output channel of the model), not {ids}")
    names = [c.name for c in classes]
    if any(not isinstance(n, str) or not n.strip() for n in names):
        raise MomoGeoError("model card: every class needs a name")
    if len(set(names)) != len(names):
        raise MomoGeoError(f"model card: class names must be unique, not {names}")
    for c in classes:
        if not (isinstance(c.color, str) and c.color.startswith("#") and _is_hex(c.color[1:], 6)):
            raise MomoGeoError(f"model card: class {c.name!r} has colour {c.color!r}; colours "
                               "are written #rrggbb")


def _check_unmapped(names: Any, known: list[str]) -> None:
    """``unmapped_classes``: a list of known class names that leaves at least two mapped."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise MomoGeoError(f"model card: unmapped_classes must list class names, not {names!r}")
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise MomoGeoError(f"model card: unmapped_classes names {', '.join(unknown)}, which the "
                           "card's classes do not list")
    if known and len(set(known) - set(names)) < 2:
        raise MomoGeoError("model card: unmapped_classes must leave at least two classes mapped")


def _check_floors(floors: Any, names: list[str]) -> None:
    """``min_confidence``: known class names to numbers in 0..1 (a floor for a class the card
    does not have would be ignored without a word)."""
    if not isinstance(floors, dict):
        raise MomoGeoError(f"model card: min_confidence must map class names to floors, "
                           f"not {floors!r}")
    for name, floor in floors.items():
        if name not in names:
            raise MomoGeoError(f"model card: min_confidence names class {name!r}, which the "
                               f"card does not have ({', '.join(names)})")
        if not _number(floor) or not 0 <= floor <= 1:
            raise MomoGeoError(f"model card: min_confidence of {name!r} must be a number from "
                               f"0 to 1, not {floor!r}")


def _check_sizes_per_class(sizes: Any, names: list[str], task: str,
                           key: str = "min_diameter") -> None:
    """``min_diameter`` / ``max_diameter``: known class names to numbers >= 0, for a
    segmentation card (a classifier's features are whole tiles)."""
    if not isinstance(sizes, dict):
        raise MomoGeoError(f"model card: {key} must map class names to diameters in pixels, "
                           f"not {sizes!r}")
    if sizes and task != "segmentation":
        raise MomoGeoError(f"model card: {key} is only for segmentation models")
    for name, size in sizes.items():
        if name not in names:
            raise MomoGeoError(f"model card: {key} names class {name!r}, which the card does "
                               f"not have ({', '.join(names)})")
        if not _number(size) or size < 0:
            raise MomoGeoError(f"model card: {key} of {name!r} must be a number of pixels "
                               f">= 0, not {size!r}")


def check_coarse_passes(passes: Any, names: list[str], task: str) -> None:
    """``coarse_passes`` (:mod:`momo_geo.inference.coarse`): only for a segmentation card; each
    names one of its classes, a scale of 1/2, 1/3, 1/4 ..., a size and a floor in range."""
    if not isinstance(passes, list):
        raise MomoGeoError(f"model card: coarse_passes must be a list, not {passes!r}")
    if passes and task != "segmentation":
        raise MomoGeoError("model card: coarse_passes are only for segmentation models")
    for spec in passes:
        _check_coarse_pass(spec, names)


def _check_coarse_pass(spec: Any, names: list[str]) -> None:
    if not isinstance(spec, dict):
        raise MomoGeoError(f"model card: a coarse pass is a dict, not {spec!r}")
    unknown = sorted(set(spec) - {"class", "scale", "min_diameter", "min_confidence",
                                  "max_residual"})
    if unknown or spec.get("class") not in names:
        raise MomoGeoError(f"model card: a coarse pass needs one of the card's classes "
                           f"({', '.join(names)}) and only the keys class, scale, min_diameter, "
                           "min_confidence and max_residual")
    scale, diameter = spec.get("scale"), spec.get("min_diameter")
    floor, residual = spec.get("min_confidence", 0.5), spec.get("max_residual", 1.0)
    if residual is None:
        residual = 1.0
    if not all(_number(v) for v in (scale, diameter, floor, residual)) or not (
            0 < scale < 1 and abs(1 / scale - round(1 / scale)) < 1e-6 and diameter >= 0
            and 0 <= floor <= 1 and residual > 0):
        raise MomoGeoError("model card: a coarse pass needs a scale of 1/2, 1/3, 1/4 ..., "
                           f"min_diameter >= 0, min_confidence from 0 to 1 and max_residual > 0, "
                           f"not {spec!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def _check_normalization(normalization: Any, in_chans: Any = 1) -> None:
    """``{"mean": finite, "std": > 0}``, each a number or a list of one per input channel: what
    every tile is standardised with."""
    if not isinstance(normalization, dict) or not {"mean", "std"} <= set(normalization):
        raise MomoGeoError("model card: normalization must be {\"mean\": ..., \"std\": ...}, "
                           f"not {normalization!r}")
    mean, std = normalization["mean"], normalization["std"]
    if isinstance(mean, list) or isinstance(std, list):
        if not (isinstance(mean, list) and isinstance(std, list)
                and len(mean) == len(std) == in_chans):
            raise MomoGeoError(f"model card: per-channel normalization needs a list of "
                               f"{in_chans} means and {in_chans} stds (in_chans), not mean "
                               f"{mean!r}, std {std!r}")
        pairs = list(zip(mean, std, strict=True))
    else:
        pairs = [(mean, std)]
    if any(not _number(m) or not _number(s) or s <= 0 for m, s in pairs):
        raise MomoGeoError(f"model card: normalization needs a finite mean and a std above 0, "
                           f"not mean {mean!r}, std {std!r}")


def _check_sizes(card: ModelCard) -> None:
    """Input, tile and overlap sizes, channels and GSDs a model can really have."""
    for name in ("input_size", "tile_size"):
        value = getattr(card, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
            raise MomoGeoError(f"model card: {name} must be a whole number of pixels from 1 to "
                               f"{MAX_SIZE}, not {value!r}")
    overlap = card.tile_overlap
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not (
            0 <= overlap < card.tile_size):
        raise MomoGeoError(f"model card: tile_overlap must be from 0 to tile_size - 1 "
                           f"({card.tile_size - 1}), not {overlap!r}")
    channels = card.in_chans
    if isinstance(channels, bool) or not isinstance(channels, int) or not (
            1 <= channels <= MAX_CHANNELS):
        raise MomoGeoError(f"model card: in_chans must be from 1 to {MAX_CHANNELS}, "
                           f"not {channels!r}")
    if card.gsd is not None and (not _number(card.gsd) or card.gsd <= 0):
        raise MomoGeoError(f"model card: gsd must be a number of m/px above 0, not {card.gsd!r}")
    if card.gsd_range is not None:
        bounds = list(card.gsd_range) if isinstance(card.gsd_range, (list, tuple)) else []
        if len(bounds) != 2 or not all(_number(b) and b > 0 for b in bounds) or (
                bounds[0] > bounds[1]):
            raise MomoGeoError("model card: gsd_range must be [lowest, highest] m/px above 0, "
                               f"not {card.gsd_range!r}")
    if card.source_tile is not None and (isinstance(card.source_tile, bool) or not isinstance(
            card.source_tile, int) or not 1 <= card.source_tile <= MAX_SIZE):
        raise MomoGeoError(f"model card: source_tile must be from 1 to {MAX_SIZE} px, "
                           f"not {card.source_tile!r}")


@dataclass
class Bundle:
    """A loaded bundle: its card and its tensors (CPU, as stored)."""

    card: ModelCard
    state_dict: dict[str, Any]
    path: Path | None = None

    def build_model(self, strict: bool = True) -> Any:
        """The ``torch.nn.Module`` the card describes, with these weights loaded, in eval mode."""
        from momo_geo.models import create_model

        model = create_model(self.card)
        missing, unexpected = model.load_state_dict(self.state_dict, strict=False)
        if strict and (missing or unexpected):
            raise MomoGeoError(
                f"bundle {self.path or self.card.name}: weights do not fit the architecture "
                f"(missing {len(missing)} keys, e.g. {missing[:2]}; unexpected {len(unexpected)}, "
                f"e.g. {unexpected[:2]})")
        return model.eval()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_bundle_path(model: str | os.PathLike[str] | None) -> Path:
    """A bundle folder from a path (folder or its card.json) or a bundled model's name."""
    if model is None:
        model = "default"
    text = str(model)
    if text in BUNDLED_MODELS:
        path = BUNDLED_DIR / BUNDLED_MODELS[text]
        if not (path / CARD_NAME).exists():
            raise MomoGeoError(
                f"the bundled model {text!r} is not installed ({path.name} missing); "
                "train it with `make reproduce` or pass --model BUNDLE")
        return path
    path = Path(text)
    if path.name == CARD_NAME:
        path = path.parent
    if not path.exists():
        raise MomoGeoError(f"{path}: no such model bundle (and not a bundled model name: "
                           f"{', '.join(BUNDLED_MODELS)})")
    if not (path / CARD_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
        raise MomoGeoError(f"{path}: not a model bundle (needs {CARD_NAME} and {WEIGHTS_NAME})")
    return path


def load_card(model: str | os.PathLike[str] | None) -> ModelCard:
    """Read only the card (cheap: for dialogs and checks before loading weights)."""
    path = resolve_bundle_path(model)
    try:
        data = json.loads((path / CARD_NAME).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MomoGeoError(f"{path / CARD_NAME}: unreadable model card ({exc})") from None
    if not isinstance(data, dict):
        raise MomoGeoError(f"{path / CARD_NAME}: model card is not a JSON object")
    try:
        return ModelCard.from_dict(data)
    except MomoGeoError as exc:  # name the file: the user may hold several bundles
        raise MomoGeoError(f"{path / CARD_NAME}: {exc}") from None


def check_hashed(card: ModelCard, path: str | os.PathLike[str],
                 trust_unhashed: bool = False) -> None:
    """Refuse a card without ``weights_sha256`` unless the user trusts it (``--trust-unhashed``):
    without a hash, nothing says the weights are the ones the card describes."""
    if not card.weights_sha256 and not trust_unhashed:
        raise MomoGeoError(f"{path}: the model card has no weights_sha256, so its weights cannot "
                           "be checked; pass --trust-unhashed if you trust where it came from")


def load_bundle(model: str | os.PathLike[str] | None, verify: bool = True,
                trust_unhashed: bool = False) -> Bundle:
    """Load card and weights; check the weights' SHA-256 against the card (a card without one
    only with ``trust_unhashed``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = resolve_bundle_path(model)
    card = load_card(path)
    check_hashed(card, path, trust_unhashed)
    weights = path / WEIGHTS_NAME
    if verify:
        actual = sha256_file(weights)
        if card.weights_sha256 and actual != card.weights_sha256:
            raise MomoGeoError(f"{weights}: SHA-256 does not match the model card "
                               "(corrupt or altered weights)")
    try:
        state_dict = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise MomoGeoError(f"{weights}: unreadable weights ({exc})") from None
    return Bundle(card=card, state_dict=state_dict, path=path)


def save_bundle(path: str | os.PathLike[str], state_dict: dict[str, Any], card: ModelCard,
                overwrite: bool = False, half: bool = False,
                inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Write a bundle folder atomically (a staged folder renamed into place when complete).

    ``overwrite`` replaces only a folder that is provably a bundle (``card.json`` and
    ``weights.safetensors``, nothing else), never a folder holding anything else, the working
    folder or one holding an input (``inputs``): :mod:`momo_geo.outputs`.
    """
    import torch
    from safetensors.torch import save_file

    from momo_geo.outputs import OutputSet

    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(parents=True)
    with OutputSet([path], overwrite=overwrite, inputs=inputs, bundle=True) as outputs:
        staging = outputs.path(path)
        staging.mkdir()
        tensors = {}
        for key, value in state_dict.items():
            tensor = value.detach().cpu().contiguous()
            if half and tensor.is_floating_point():
                tensor = tensor.to(torch.float16)
            tensors[key] = tensor
        save_file(tensors, str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
        card.weights_sha256 = sha256_file(staging / WEIGHTS_NAME)
        card.momo_geo_version = __version__
        (staging / CARD_NAME).write_text(json.dumps(card.to_dict(), indent=2) + "\n")
        outputs.commit()
    return path
