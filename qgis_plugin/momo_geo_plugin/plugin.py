"""The plugin object QGIS creates: toolbar button, menu, Processing provider, dependency check.

On start the plugin checks that ``momo_geo``, ``torch`` and the geospatial wheels are available to
QGIS's interpreter (:mod:`.deps`). If not, it shows one message with the exact install command,
keeps its button and menu entry visible but disabled, and registers no Processing provider, so
QGIS and other plugins carry on unaffected. The mapping itself runs in a child process
(:mod:`.worker`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsMessageLog

from .deps import DependencyReport, check_dependencies

ACTION_TEXT = "Map Mars features"
MENU = "&momo-geo"
LOG_TAG = "momo-geo"
ICON = Path(__file__).with_name("icon.png")


class MomoGeoPlugin:
    """Created by :func:`classFactory`; ``iface`` is None under ``qgis_process``."""

    def __init__(self, iface: Any = None) -> None:
        self.iface = iface
        self.provider: Any = None
        self.action: Any = None
        self.dependencies: DependencyReport | None = None
        self.tasks: list[Any] = []  # running tasks, kept referenced until finished

    # --- Processing (also the only entry point under qgis_process) ----------------------------
    def initProcessing(self) -> None:  # noqa: N802
        if self.provider is not None:
            return
        if not self._check_dependencies():
            return
        from .provider import MomoGeoProvider

        self.provider = MomoGeoProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def _check_dependencies(self) -> bool:
        if self.dependencies is None:
            self.dependencies = check_dependencies()
            if not self.dependencies.ok:
                self._notify(self.dependencies.message(), Qgis.MessageLevel.Warning)
        return self.dependencies.ok

    # --- GUI -----------------------------------------------------------------------------------
    def initGui(self) -> None:  # noqa: N802
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction

        self.initProcessing()
        parent = self.iface.mainWindow() if self.iface is not None else None
        self.action = QAction(QIcon(str(ICON)), ACTION_TEXT, parent)
        self.action.setObjectName("momoGeoMapMarsFeatures")
        self.action.triggered.connect(self.run)
        if self.dependencies is not None and not self.dependencies.ok:
            self.action.setEnabled(False)
            self.action.setToolTip(self.dependencies.message())
        else:
            self.action.setToolTip("Map craters and other features in a Mars scene (momo-geo)")
        if self.iface is not None:
            self.iface.addToolBarIcon(self.action)
            self.iface.addPluginToRasterMenu(MENU, self.action)

    def unload(self) -> None:
        if self.action is not None and self.iface is not None:
            self.iface.removeToolBarIcon(self.action)
            self.iface.removePluginRasterMenu(MENU, self.action)
        self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    def run(self) -> None:
        """The toolbar button: show the dialog, then map in the background."""
        from .dialog import MapFeaturesDialog

        if not self._check_dependencies():
            return
        parent = self.iface.mainWindow() if self.iface is not None else None
        dialog = MapFeaturesDialog(parent, iface=self.iface)
        if dialog.exec():
            self.start(dialog.request())

    def start(self, request: Any, project: Any = None) -> Any:
        """Queue a :class:`MapTask` for ``request`` in QGIS's task manager and return it."""
        from .task import MapTask

        task = MapTask(request, iface=self.iface, project=project, on_done=self._forget)
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        return task

    def _forget(self, task: Any) -> None:
        if task in self.tasks:
            self.tasks.remove(task)

    def _notify(self, text: str, level: Any) -> None:
        QgsMessageLog.logMessage(text, LOG_TAG, level)
        if self.iface is not None:
            self.iface.messageBar().pushMessage("momo-geo", text, level=level, duration=0)
