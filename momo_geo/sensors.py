"""The three Mars orbital cameras MOMO serves: HiRISE, CTX and THEMIS.

One :class:`Sensor` record per camera holds what the rest of momo-geo needs to know about it:
how its product IDs look, its nominal ground sampling distance (GSD) and its Mars pixel
statistics (mean/std of pixel values after a per-tile min-max stretch to [0, 1]). momo-geo's own
pretraining normalises with the joint all-sensor statistics (:data:`ALL_SENSORS_NORMALIZATION`)
or, on request, a sensor's own (:attr:`PretrainConfig.statistics`); the MOMO authors' released
checkpoints were pretrained with ImageNet's per-channel statistics instead
(:mod:`momo_geo.normalization`), which their imported cards record. Detection works from a
file name (product IDs are the names planetary data archives use) or from GDAL metadata
(PDS/ISIS labels name the instrument).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Normalization:
    """Per-tile min-max stretch to [0, 1], then ``(x - mean) / std``."""

    mean: float
    std: float


@dataclass(frozen=True)
class Sensor:
    """A Mars orbital camera as momo-geo sees it."""

    name: str
    """Short name used everywhere (CLI, model cards, datasets): ``hirise``, ``ctx``, ``themis``."""
    title: str
    instrument: str
    gsd_range: tuple[float, float]
    """Nominal ground sampling distance of its map-projected products, metres per pixel."""
    normalization: Normalization
    product_pattern: re.Pattern[str]
    metadata_keywords: tuple[str, ...] = field(default=())
    """Substrings (upper case) that identify the instrument in GDAL/PDS/ISIS metadata."""

    def parse(self, text: str) -> ProductId | None:
        """Find this sensor's product ID in ``text`` (a file name or label value)."""
        match = self.product_pattern.search(text.upper())
        if match is None:
            return None
        return ProductId(sensor=self, product_id=match.group(0), fields=match.groupdict())


@dataclass(frozen=True)
class ProductId:
    """A parsed product ID, e.g. ``ESP_037156_1800_RED`` (HiRISE)."""

    sensor: Sensor
    product_id: str
    fields: Mapping[str, str | None]

    @property
    def observation(self) -> str:
        """The observation a product comes from (several products share one observation)."""
        f = self.fields
        if self.sensor.name == "hirise":
            return f"{f['phase']}_{f['orbit']}_{f['target']}"
        if self.sensor.name == "ctx":
            return f"{f['orbit']}_{f['target']}"
        return self.product_id


HIRISE = Sensor(
    name="hirise",
    title="HiRISE",
    instrument="High Resolution Imaging Science Experiment (MRO)",
    gsd_range=(0.25, 1.0),
    normalization=Normalization(0.5052, 0.1785),
    # ESP_037156_1800_RED, PSP_001234_1750_COLOR, ESP_012345_2020_RED4_0 ...
    product_pattern=re.compile(
        r"(?<![A-Z0-9])(?P<phase>ESP|PSP|AEB|INT|CAL)_(?P<orbit>\d{6})_(?P<target>\d{4})(?![0-9])"
        r"(?:_(?P<product>RED|COLOR|IRB|BG|MIRB|MRGB|RGB|IR\d*|RED\d*)(?:[0-9_]*))?"
    ),
    metadata_keywords=("HIRISE", "HIGH RESOLUTION IMAGING SCIENCE EXPERIMENT"),
)

CTX = Sensor(
    name="ctx",
    title="CTX",
    instrument="Context Camera (MRO)",
    gsd_range=(4.5, 8.0),
    normalization=Normalization(0.5169, 0.1609),
    # B01_009910_1810_XI_01N077W, P02_001916_2221_XI_42N027W ...
    product_pattern=re.compile(
        r"(?<![A-Z0-9])(?P<phase>[A-Z]\d{2})_(?P<orbit>\d{6})_(?P<target>\d{4})_"
        r"(?P<mode>X[A-Z])_(?P<lat>\d{2}[NS])(?P<lon>\d{3}[EW])"
    ),
    metadata_keywords=("CONTEXT CAMERA", "CTX"),
)

THEMIS = Sensor(
    name="themis",
    title="THEMIS",
    instrument="Thermal Emission Imaging System (Mars Odyssey)",
    # IR day/night ~100 m/px; VIS ~18 m/px. The range covers both, plus the 100 m/px mosaics.
    gsd_range=(17.0, 120.0),
    normalization=Normalization(0.4782, 0.1559),
    # I01234002 (IR), V12345003 (VIS)
    product_pattern=re.compile(r"(?<![A-Z0-9])(?P<band>[IV])(?P<orbit>\d{5})(?P<seq>\d{3})(?![0-9])"),
    metadata_keywords=("THEMIS", "THERMAL EMISSION IMAGING SYSTEM"),
)

SENSORS: dict[str, Sensor] = {s.name: s for s in (HIRISE, CTX, THEMIS)}

ALL_SENSORS_NORMALIZATION = Normalization(0.5006, 0.1664)
"""Statistics over the three sensors together (used by the merged multi-sensor model)."""


def get_sensor(name: str) -> Sensor:
    """Look a sensor up by name (case-insensitive); raise a one-line error if unknown."""
    from momo_geo.errors import MomoGeoError

    try:
        return SENSORS[name.lower()]
    except KeyError:
        raise MomoGeoError(
            f"unknown sensor {name!r}; known sensors: {', '.join(SENSORS)}"
        ) from None


def parse_product_id(text: str) -> ProductId | None:
    """Parse the first HiRISE, CTX or THEMIS product ID found in ``text``.

    CTX is tried before HiRISE because a CTX ID also contains a HiRISE-like ``_orbit_target``
    run; THEMIS last because its pattern is the loosest.
    """
    name = Path(text).name if ("/" in text or "\\" in text) else text
    for sensor in (CTX, HIRISE, THEMIS):
        parsed = sensor.parse(name)
        if parsed is not None:
            return parsed
    return None


def detect_sensor(path: str | Path | None = None, tags: Mapping[str, str] | None = None
                  ) -> Sensor | None:
    """Tell which sensor a raster comes from, by file name first, then by metadata.

    Returns ``None`` when neither names a known sensor; callers say so to the user rather than
    guess.
    """
    if path is not None:
        parsed = parse_product_id(Path(path).name)
        if parsed is not None:
            return parsed.sensor
    if tags:
        text = " ".join(f"{k}={v}" for k, v in tags.items()).upper()
        for sensor in (HIRISE, THEMIS, CTX):
            for keyword in sensor.metadata_keywords:
                if re.search(rf"(?<![A-Z]){re.escape(keyword)}(?![A-Z])", text):
                    return sensor
    return None
