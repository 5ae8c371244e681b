"""The Processing provider "momo-geo" (id ``momo-geo``): "Map Mars features" (one scene) and
"Map a folder of Mars scenes" (many, on a Dask cluster)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithm import MapMarsFeaturesAlgorithm
from .archive_algorithm import MapArchiveAlgorithm

ICON = Path(__file__).with_name("icon.svg")


class MomoGeoProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "momo-geo"

    def name(self) -> str:
        return "momo-geo"

    def longName(self) -> str:  # noqa: N802
        return "momo-geo: Mars feature mapping with MOMO"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def loadAlgorithms(self) -> None:  # noqa: N802
        self.addAlgorithm(MapMarsFeaturesAlgorithm())
        self.addAlgorithm(MapArchiveAlgorithm())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["tif"]

    def supportedOutputVectorLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["gpkg", "shp"]
