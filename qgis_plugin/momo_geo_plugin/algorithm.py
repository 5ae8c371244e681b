"""The Processing algorithm "Map Mars features": the engine behind toolbox, Model Builder,
batch mode and ``qgis_process``.

Parameter names are ``map_scene``'s (scene, model, mask_path, vector_path, tile, overlap,
batch_size, device, precision, blend, min_area, simplify, circles), so a Processing model or a
``qgis_process`` call reads like ``momo-geo map``. ``tile = 0`` and ``overlap = -1`` mean "the
model card's default". Processing runs the algorithm in a worker thread; the layers it produces
are styled afterwards on the main thread by a layer post-processor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProviderRegistry,
)
from qgis.PyQt.QtCore import QCoreApplication

from .engine import BLENDS, DEVICES, PRECISIONS, MappingError, MapRequest, run_map


def tr(text: str) -> str:
    return QCoreApplication.translate("momo-geo", text)


_POST_PROCESSORS: dict[str, StyleFromCard] = {}
"""Post-processors by output path. QGIS holds only a C++ pointer to them and calls them after the
algorithm object is gone, so Python must keep them alive (one per output path is enough)."""


class StyleFromCard(QgsProcessingLayerPostProcessorInterface):
    """Styles an output layer from the model card once Processing has loaded it (main thread)."""

    def __init__(self, card: Any, kind: str) -> None:
        super().__init__()
        self.card = card
        self.kind = kind

    def postProcessLayer(self, layer: Any, context: Any, feedback: Any) -> None:  # noqa: N802
        from .styling import style_features, style_mask

        if not layer.isValid():
            return
        if self.kind == "mask":
            style_mask(layer, self.card)
        else:
            style_features(layer, self.card)


def layer_path(layer: Any) -> str:
    """The file behind a raster layer (GDAL URIs may carry options after ``|``)."""
    source = layer.source()
    decoded = QgsProviderRegistry.instance().decodeUri(layer.providerType(), source)
    return decoded.get("path") or source


class MapMarsFeaturesAlgorithm(QgsProcessingAlgorithm):
    """Scene -> class mask GeoTIFF + feature layer, with momo-geo's mapping engine."""

    SCENE = "scene"
    MODEL = "model"
    MASK = "mask_path"
    VECTOR = "vector_path"

    # --- identity ----------------------------------------------------------------------------
    def name(self) -> str:
        return "mapmarsfeatures"

    def displayName(self) -> str:  # noqa: N802
        return tr("Map Mars features")

    def group(self) -> str:
        return tr("Mapping")

    def groupId(self) -> str:  # noqa: N802
        return "mapping"

    def shortHelpString(self) -> str:  # noqa: N802
        return tr(
            "Maps surface features (e.g. craters) in a georeferenced Mars scene (HiRISE, CTX, "
            "THEMIS) with a MOMO model bundle: writes a GeoTIFF class mask and a vector layer of "
            "features with areas on Mars, in the scene's own Mars CRS. The same engine and "
            "parameters as `momo-geo map`. Tile size 0 and overlap -1 take the model card's "
            "defaults; min_area is in square metres on Mars.")

    def createInstance(self) -> MapMarsFeaturesAlgorithm:  # noqa: N802
        return MapMarsFeaturesAlgorithm()

    # --- parameters --------------------------------------------------------------------------
    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.SCENE, tr("Mars scene")))
        self.addParameter(QgsProcessingParameterString(
            self.MODEL, tr("Model (bundled name such as 'default', or a NAME.bundle folder)"),
            defaultValue="default"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.MASK, tr("Class mask (GeoTIFF)")))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.VECTOR, tr("Features (GeoPackage or Shapefile)")))
        integer = QgsProcessingParameterNumber.Type.Integer
        double = QgsProcessingParameterNumber.Type.Double
        self.addParameter(QgsProcessingParameterNumber(
            "tile", tr("Tile size, px (0 = model card's default)"), integer, 0, False, 0))
        self.addParameter(QgsProcessingParameterNumber(
            "overlap", tr("Tile overlap, px (-1 = model card's default)"), integer, -1, False,
            -1))
        self.addParameter(QgsProcessingParameterNumber(
            "batch_size", tr("Batch size (tiles per model call)"), integer, 8, False, 1))
        self.addParameter(QgsProcessingParameterEnum(
            "device", tr("Device"), list(DEVICES), defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(
            "precision", tr("Precision"), list(PRECISIONS), defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(
            "blend", tr("Tile blending (crop: tile centres only; smooth: weighted overlap)"),
            list(BLENDS), defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "min_area", tr("Smallest feature kept, m² on Mars"), double, 0.0, False, 0.0))
        self.addParameter(QgsProcessingParameterNumber(
            "simplify", tr("Simplify outlines, m (0 = exact pixel outlines)"), double, 0.0,
            False, 0.0))
        self.addParameter(QgsProcessingParameterBoolean(
            "circles", tr("Add fitted crater circles (centre, diameter)"), False))
        self.addOutput(QgsProcessingOutputNumber("features", tr("Number of features")))

    # --- run (worker thread) -----------------------------------------------------------------
    def processAlgorithm(self, parameters: dict, context: Any, feedback: Any) -> dict:  # noqa: N802
        try:
            from momo_geo.bundle import load_card
            from momo_geo.errors import MomoGeoError
        except Exception as exc:
            from .deps import check_dependencies

            raise QgsProcessingException(check_dependencies().message()) from exc

        layer = self.parameterAsRasterLayer(parameters, self.SCENE, context)
        if layer is None:
            raise QgsProcessingException(tr("the scene is not a raster layer"))
        scene = layer_path(layer)
        if not Path(scene).is_file():
            raise QgsProcessingException(
                tr(f"the scene must be a raster file on disk, not {layer.source()!r}"))
        mask_path = self.parameterAsOutputLayer(parameters, self.MASK, context)
        vector_path = self.parameterAsOutputLayer(parameters, self.VECTOR, context)
        request = MapRequest(
            scene=scene, mask_path=mask_path, vector_path=vector_path,
            model=self.parameterAsString(parameters, self.MODEL, context) or "default",
            tile=self.parameterAsInt(parameters, "tile", context) or None,
            overlap=self.parameterAsInt(parameters, "overlap", context),
            batch_size=self.parameterAsInt(parameters, "batch_size", context),
            device=DEVICES[self.parameterAsEnum(parameters, "device", context)],
            precision=PRECISIONS[self.parameterAsEnum(parameters, "precision", context)],
            blend=BLENDS[self.parameterAsEnum(parameters, "blend", context)],
            min_area=self.parameterAsDouble(parameters, "min_area", context),
            simplify=self.parameterAsDouble(parameters, "simplify", context),
            circles=self.parameterAsBool(parameters, "circles", context),
            overwrite=True,  # Processing's own file dialogs already confirmed replacing a file
        )
        try:
            card = load_card(request.model)
            feedback.pushInfo(f"model {card.name}: classes {', '.join(card.class_names)}")
            result = run_map(
                request,
                progress=lambda done, total: feedback.setProgress(100.0 * done / max(total, 1)),
                cancel=feedback.isCanceled, log=feedback.pushInfo)
        except (MomoGeoError, MappingError) as exc:
            raise QgsProcessingException(str(exc)) from None
        self._style_on_load(context, mask_path, vector_path, card)
        return {self.MASK: mask_path, self.VECTOR: vector_path,
                "features": _feature_count(result, vector_path)}

    def _style_on_load(self, context: Any, mask_path: str, vector_path: str, card: Any) -> None:
        for path, kind in ((mask_path, "mask"), (vector_path, "features")):
            if context.willLoadLayerOnCompletion(path):
                details = context.layerToLoadOnCompletionDetails(path)
                details.name = f"{card.name} {kind}"
                processor = _POST_PROCESSORS[path] = StyleFromCard(card, kind)
                details.setPostProcessor(processor)


def _feature_count(result: dict, vector_path: str) -> int:
    """Features written, from the engine's per-class counts."""
    return int(sum((result.get("feature_counts") or {}).values()))
