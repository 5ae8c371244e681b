"""The background run: a ``QgsTask`` that calls the engine, then adds layers on the main thread.

``run()`` executes in a worker thread and touches no QGIS layer, project or widget: it only calls
:func:`~momo_geo_plugin.client.run_map` (the engine in a child process) with a progress callback
(QGIS's task bar) and a cancel callback (``isCanceled``; the engine stops within one batch).
``finished()`` runs on the main thread: on success it adds the styled mask and vector layers to
the project, on failure it shows one message bar entry. Outputs are written atomically by the
engine, so a failed or cancelled run leaves no files behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qgis.core import Qgis, QgsMessageLog, QgsProject, QgsTask

from .client import MappingError, MapRequest, load_card, run_map

LOG_TAG = "momo-geo"


class MapTask(QgsTask):
    """Map one scene in the background; ``layers`` holds the added layers afterwards."""

    def __init__(self, request: MapRequest, iface: Any = None,
                 project: QgsProject | None = None,
                 on_done: Callable[[MapTask], None] | None = None) -> None:
        super().__init__(f"Map Mars features: {request.scene}", QgsTask.Flag.CanCancel)
        self.request = request
        self.iface = iface
        self.project = project
        self.on_done = on_done
        self.result: Any = None
        self.error: str = ""
        self.card: Any = None
        self.layers: list[Any] = []
        self.outcome = "running"
        """"complete", "cancelled" or "failed"; a Python attribute, still readable after the task
        manager has deleted the C++ task."""

    # --- worker thread -------------------------------------------------------------------------
    def run(self) -> bool:
        try:
            self.card = load_card(self.request.model or "default")
            self.result = run_map(self.request, progress=self._progress, cancel=self.isCanceled,
                                  log=self._log)
        except MappingError as exc:
            self.error = str(exc)
            return False
        except Exception as exc:  # an engine bug must not take QGIS down with it
            self.error = f"unexpected error: {type(exc).__name__}: {exc}"
            return False
        return not self.isCanceled()

    def _progress(self, done: int, total: int) -> None:
        self.setProgress(100.0 * done / max(total, 1))

    @staticmethod
    def _log(message: str) -> None:
        level = (Qgis.MessageLevel.Warning if str(message).startswith("WARNING")
                 else Qgis.MessageLevel.Info)
        QgsMessageLog.logMessage(str(message), LOG_TAG, level)

    # --- main thread ---------------------------------------------------------------------------
    def finished(self, result: bool) -> None:
        try:
            if result:
                self.outcome = "complete"
                self._add_layers()
            elif self.isCanceled():
                self.outcome = "cancelled"
                self.error = self.error or "cancelled; no files were written"
                self._message("Map Mars features cancelled; no files were written.",
                              Qgis.MessageLevel.Info)
            else:
                self.outcome = "failed"
                self._message(f"Map Mars features failed: {self.error}",
                              Qgis.MessageLevel.Critical)
        finally:
            if self.on_done is not None:
                self.on_done(self)

    def _add_layers(self) -> None:
        from .styling import load_styled_layers

        project = self.project or QgsProject.instance()
        mask, features = load_styled_layers(self.request.mask_path, self.request.vector_path,
                                            self.card)
        for layer in (mask, features):
            if layer.isValid():
                project.addMapLayer(layer)
                self.layers.append(layer)
        count = features.featureCount() if features.isValid() else 0
        self._message(f"Mapped {count} features into {self.request.vector_path}",
                      Qgis.MessageLevel.Success)

    def _message(self, text: str, level: Any) -> None:
        QgsMessageLog.logMessage(text, LOG_TAG, level)
        if self.iface is not None:
            self.iface.messageBar().pushMessage("momo-geo", text, level=level, duration=0
                                                if level == Qgis.MessageLevel.Critical else 8)
