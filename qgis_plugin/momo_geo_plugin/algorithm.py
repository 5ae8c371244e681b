"""The Processing algorithm "Map Mars features": the engine behind toolbox, Model Builder,
batch mode and ``qgis_process``.

Parameter names are ``map_scene``'s (scene, model, mask_path, vector_path) and, for the options,
those of ``momo_geo.inference.options.MapOptions`` with its defaults, choices and help, as the
engine's worker reports them (:func:`~.client.engine_info`), so a Processing model or a
``qgis_process`` call reads like ``momo-geo map``. An option whose default is "the model card's"
(tile, overlap) takes one below its minimum for that (``tile = 0``, ``overlap = -1``).
Processing runs the algorithm in a worker thread; the layers it produces are styled afterwards
on the main thread by a layer post-processor.
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

from .client import MappingError, MapRequest, engine_info, load_card, run_map

PROCESSING_SKIPS: tuple[str, ...] = ()
"""Options Processing does not offer. None: ``overwrite`` is a parameter (default off) like the
others, because ``qgis_process``, batch mode and Model Builder never show the file dialog that
asks before replacing a file; an existing output is an error unless it is set."""


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
            "features with areas on Mars, in the scene's own Mars CRS. The same engine, "
            "parameters and defaults as `momo-geo map`. Tile size 0 and overlap -1 take the "
            "model card's defaults; min_area is in square metres on Mars.")

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
        for name, spec in engine_info().options.items():
            if name not in PROCESSING_SKIPS:
                self.addParameter(option_parameter(name, spec))
        self.addOutput(QgsProcessingOutputNumber("features", tr("Number of features")))

    # --- run (worker thread) -----------------------------------------------------------------
    def processAlgorithm(self, parameters: dict, context: Any, feedback: Any) -> dict:  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, self.SCENE, context)
        if layer is None:
            raise QgsProcessingException(tr("the scene is not a raster layer"))
        scene = layer_path(layer)
        if not Path(scene).is_file():
            raise QgsProcessingException(
                tr(f"the scene must be a raster file on disk, not {layer.source()!r}"))
        mask_path = self.parameterAsOutputLayer(parameters, self.MASK, context)
        vector_path = self.parameterAsOutputLayer(parameters, self.VECTOR, context)
        options = {name: self._option(parameters, name, spec, context)
                   for name, spec in engine_info().options.items() if name not in PROCESSING_SKIPS}
        request = MapRequest(
            scene=scene, mask_path=mask_path, vector_path=vector_path,
            model=self.parameterAsString(parameters, self.MODEL, context) or "default",
            options=options)
        try:
            card = load_card(request.model)
            feedback.pushInfo(f"model {card.name}: classes {', '.join(card.class_names)}")
            result = run_map(
                request,
                progress=lambda done, total: feedback.setProgress(100.0 * done / max(total, 1)),
                cancel=feedback.isCanceled, log=feedback.pushInfo)
        except MappingError as exc:
            raise QgsProcessingException(str(exc)) from None
        self._style_on_load(context, mask_path, vector_path, card)
        return {self.MASK: mask_path, self.VECTOR: vector_path,
                "features": _feature_count(result, vector_path)}

    def _option(self, parameters: dict, name: str, spec: dict, context: Any) -> Any:
        """A parameter's value as the engine's option (``None`` for "the model card's")."""
        kind = spec["type"]
        if "choices" in spec:
            return spec["choices"][self.parameterAsEnum(parameters, name, context)]
        if kind == "bool":
            return self.parameterAsBool(parameters, name, context)
        if kind == "int":
            value = self.parameterAsInt(parameters, name, context)
            return None if spec["default"] is None and value < spec["minimum"] else value
        if kind == "float":
            if spec["default"] is None and _unset(parameters.get(name)):
                return None  # an optional number left empty (nodata: the file's own)
            return self.parameterAsDouble(parameters, name, context)
        return self.parameterAsString(parameters, name, context)

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


def _unset(value: Any) -> bool:
    """An optional parameter left empty (``None``, ``""`` or QGIS's NULL)."""
    return value is None or value == "" or bool(getattr(value, "isNull", lambda: False)())


def option_parameter(name: str, spec: dict[str, Any]) -> Any:
    """A Processing parameter for one engine option, from its schema entry."""
    label = tr(spec["help"].split(". Default:")[0].rstrip("."))
    kind = spec["type"]
    if "choices" in spec:
        return QgsProcessingParameterEnum(name, label, list(spec["choices"]),
                                          defaultValue=spec["choices"].index(spec["default"]))
    if kind == "bool":
        return QgsProcessingParameterBoolean(name, label, bool(spec["default"]))
    number = QgsProcessingParameterNumber.Type
    minimum = spec.get("minimum")
    default = spec["default"]
    if default is None and minimum is None:  # optional and unset by default (nodata)
        return QgsProcessingParameterNumber(name, label, number.Double, None, True)
    if default is None:  # "the model card's": one below the minimum
        minimum = minimum - 1
        default = minimum
        label = tr(f"{label} ({minimum} = the model card's)")
    if kind == "int":
        return QgsProcessingParameterNumber(name, label, number.Integer, default, False,
                                            minimum if minimum is not None else -2**31)
    return QgsProcessingParameterNumber(name, label, number.Double, default, False,
                                        minimum if minimum is not None else -1e300)
