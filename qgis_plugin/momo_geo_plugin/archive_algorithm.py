"""The Processing algorithm "Map a folder of Mars scenes": ``momo-geo map-archive`` in QGIS.

Every scene of a folder (matching a pattern) is mapped on a Dask cluster in the engine's Python
(a local cluster by default, or a running scheduler by address), into an archive folder with a
manifest and one merged catalogue layer, which is loaded and styled when the run ends. Running it
again on the same folder resumes: finished scenes are not mapped twice. Processing runs it in a
background thread, so QGIS stays usable; Cancel stops the cluster and keeps finished scenes.

The mapping options are the same parameters, with the same names and defaults, as "Map Mars
features" (:func:`.algorithm.option_parameter`, from the engine's option schema).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from .algorithm import (
    _POST_PROCESSORS,
    PROCESSING_SKIPS,
    MapMarsFeaturesAlgorithm,
    StyleFromCard,
    option_parameter,
    tr,
)
from .client import ArchiveRequest, MappingError, engine_info, load_card, run_archive

RASTER_PATTERN = "*.tif;*.tiff;*.img;*.cub;*.jp2;*.vrt"


def scenes_in(folder: str, patterns: str) -> list[str]:
    """Files of ``folder`` (not sub-folders) whose names match one of ``patterns`` (``;``-separated,
    case-insensitive), sorted; momo-geo's own outputs (``*_mask.tif``) left out."""
    wanted = [p.strip().lower() for p in patterns.split(";") if p.strip()]
    return sorted(str(p) for p in Path(folder).iterdir()
                  if p.is_file() and any(fnmatch.fnmatch(p.name.lower(), w) for w in wanted)
                  and not p.name.lower().endswith(("_mask.tif", "_probabilities.tif")))


class MapArchiveAlgorithm(QgsProcessingAlgorithm):
    """A folder of scenes -> archive folder (manifest, each scene's outputs) + one catalogue."""

    FOLDER = "folder"
    PATTERN = "pattern"
    MODEL = "model"
    OUT = "out_dir"
    WORKERS = "workers"
    SCHEDULER = "scheduler"
    CATALOGUE_CRS = "catalogue_crs"

    def name(self) -> str:
        return "maparchive"

    def displayName(self) -> str:  # noqa: N802
        return tr("Map a folder of Mars scenes")

    def group(self) -> str:
        return tr("Mapping")

    def groupId(self) -> str:  # noqa: N802
        return "mapping"

    def shortHelpString(self) -> str:  # noqa: N802
        return tr(
            "Maps every scene of a folder with a MOMO model on a Dask cluster (one task per "
            "scene, the model loaded once per worker; needs momo-geo[archive] in the engine's "
            "Python) and merges all features into one catalogue layer on a Mars CRS, with scene "
            "and sensor columns and duplicates at overlapping footprints removed. The archive "
            "folder keeps a manifest (manifest.sqlite): running again resumes, failed scenes are "
            "listed with their reason. Workers 0: the engine's default; a scheduler address "
            "(tcp://host:8786) uses a running cluster instead. The same as "
            "`momo-geo map-archive`.")

    def createInstance(self) -> MapArchiveAlgorithm:  # noqa: N802
        return MapArchiveAlgorithm()

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            self.FOLDER, tr("Folder of Mars scenes"),
            behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterString(
            self.PATTERN, tr("Scene file names (patterns, ; between them)"),
            defaultValue=RASTER_PATTERN))
        self.addParameter(QgsProcessingParameterString(
            self.MODEL, tr("Model (bundled name such as 'default', or a NAME.bundle folder)"),
            defaultValue="default"))
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.OUT, tr("Archive folder (outputs, manifest, catalogue)")))
        self.addParameter(QgsProcessingParameterNumber(
            self.WORKERS, tr("Worker processes of the local cluster (0 = the engine's default)"),
            QgsProcessingParameterNumber.Type.Integer, 0, False, 0))
        self.addParameter(QgsProcessingParameterString(
            self.SCHEDULER, tr("Dask scheduler address (empty = a local cluster)"),
            defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.CATALOGUE_CRS, tr("Mars CRS of the catalogue"), defaultValue="IAU_2015:49900"))
        for name, spec in engine_info().options.items():
            if name not in PROCESSING_SKIPS:
                self.addParameter(option_parameter(name, spec))
        self.addOutput(QgsProcessingOutputVectorLayer("catalogue", tr("Catalogue")))
        self.addOutput(QgsProcessingOutputString("manifest", tr("Manifest")))
        self.addOutput(QgsProcessingOutputNumber("features", tr("Features in the catalogue")))
        self.addOutput(QgsProcessingOutputNumber("failed", tr("Scenes that failed")))

    def processAlgorithm(self, parameters: dict, context: Any, feedback: Any) -> dict:  # noqa: N802
        folder = self.parameterAsFile(parameters, self.FOLDER, context)
        if not folder or not Path(folder).is_dir():
            raise QgsProcessingException(tr(f"{folder!r} is not a folder"))
        scenes = scenes_in(folder, self.parameterAsString(parameters, self.PATTERN, context))
        if not scenes:
            raise QgsProcessingException(tr(f"no scene in {folder} matches the patterns"))
        options = {name: MapMarsFeaturesAlgorithm._option(self, parameters, name, spec, context)
                   for name, spec in engine_info().options.items() if name not in PROCESSING_SKIPS}
        request = ArchiveRequest(
            scenes=scenes, out_dir=self.parameterAsFileOutput(parameters, self.OUT, context),
            model=self.parameterAsString(parameters, self.MODEL, context) or "default",
            options=options, workers=self.parameterAsInt(parameters, self.WORKERS, context),
            scheduler=self.parameterAsString(parameters, self.SCHEDULER, context).strip(),
            catalogue_crs=self.parameterAsString(parameters, self.CATALOGUE_CRS, context))
        feedback.pushInfo(f"{len(scenes)} scenes in {folder}")
        try:
            card = load_card(request.model)
            result = run_archive(
                request,
                progress=lambda done, total: feedback.setProgress(100.0 * done / max(total, 1)),
                cancel=feedback.isCanceled, log=feedback.pushInfo)
        except MappingError as exc:
            raise QgsProcessingException(str(exc)) from None
        for name, error in sorted(result["failed"].items()):
            feedback.reportError(f"{name}: {error}")
        catalogue = result["catalogue"]
        self._load_catalogue(context, catalogue, card)
        return {"catalogue": catalogue, "manifest": result["manifest"],
                "features": int(result["features"]), "failed": len(result["failed"])}

    def _load_catalogue(self, context: Any, path: str, card: Any) -> None:
        if not path:
            return
        details = QgsProcessingContext.LayerDetails(f"{card.name} catalogue", context.project(),
                                                    "catalogue")
        processor = _POST_PROCESSORS[path] = StyleFromCard(card, "features")
        details.setPostProcessor(processor)
        context.addLayerToLoadOnCompletion(path, details)
