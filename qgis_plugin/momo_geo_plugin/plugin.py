"""The plugin object QGIS creates: toolbar button, menu, Processing provider, engine check.

On start the plugin finds the Python that runs the engine (:mod:`.interpreter`: the plugin
setting, a managed or detected venv, or QGIS's own) and asks it for momo-geo's option defaults
(:mod:`.deps`). If there is none, it shows one message that says how to install momo-geo, keeps
its button visible but disabled, and registers no Processing provider, so QGIS and other plugins
carry on unaffected; under ``qgis_process`` the same line goes to stderr. The menu's *Python
environment…* and *Install momo-geo…* fix that without restarting QGIS.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsMessageLog

from .deps import DependencyReport, check_dependencies

ACTION_TEXT = "Map Mars features"
ENVIRONMENT_TEXT = "Python environment…"
INSTALL_TEXT = "Install momo-geo…"
MENU = "&momo-geo"
LOG_TAG = "momo-geo"
ICON = Path(__file__).with_name("icon.png")


class MomoGeoPlugin:
    """Created by :func:`classFactory`; ``iface`` is None under ``qgis_process``."""

    def __init__(self, iface: Any = None) -> None:
        self.iface = iface
        self.provider: Any = None
        self.action: Any = None
        self.menu_actions: list[Any] = []
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

    def _check_dependencies(self, refresh: bool = False) -> bool:
        if self.dependencies is None or refresh:
            self.dependencies = check_dependencies(refresh=refresh)
            if not self.dependencies.ok:
                self._notify(self.dependencies.message(), Qgis.MessageLevel.Warning)
        return self.dependencies.ok

    def recheck(self) -> bool:
        """Find the engine again (after a setting change or an install); enable what works."""
        ok = self._check_dependencies(refresh=True)
        if ok:
            self.initProcessing()
        if self.action is not None:
            self.action.setEnabled(ok)
            self.action.setToolTip(self._tooltip())
        return ok

    def _tooltip(self) -> str:
        if self.dependencies is not None and not self.dependencies.ok:
            return self.dependencies.message()
        return "Map craters and other features in a Mars scene (momo-geo)"

    # --- GUI -----------------------------------------------------------------------------------
    def initGui(self) -> None:  # noqa: N802
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction

        self.initProcessing()
        parent = self.iface.mainWindow() if self.iface is not None else None
        self.action = QAction(QIcon(str(ICON)), ACTION_TEXT, parent)
        self.action.setObjectName("momoGeoMapMarsFeatures")
        self.action.triggered.connect(self.run)
        self.action.setEnabled(self.dependencies is not None and self.dependencies.ok)
        self.action.setToolTip(self._tooltip())
        environment = QAction(ENVIRONMENT_TEXT, parent)
        environment.triggered.connect(self.choose_environment)
        install = QAction(INSTALL_TEXT, parent)
        install.triggered.connect(self.ask_install)
        self.menu_actions = [self.action, environment, install]
        if self.iface is not None:
            self.iface.addToolBarIcon(self.action)
            for action in self.menu_actions:
                self.iface.addPluginToRasterMenu(MENU, action)

    def unload(self) -> None:
        if self.action is not None and self.iface is not None:
            self.iface.removeToolBarIcon(self.action)
            for action in self.menu_actions:
                self.iface.removePluginRasterMenu(MENU, action)
        self.action = None
        self.menu_actions = []
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

    # --- the engine's Python ------------------------------------------------------------------
    def choose_environment(self) -> None:
        from .environment import EnvironmentDialog

        parent = self.iface.mainWindow() if self.iface is not None else None
        if EnvironmentDialog(parent, install=self.ask_install).exec():
            self.recheck()

    def ask_install(self) -> None:
        from qgis.PyQt.QtWidgets import QInputDialog

        from .installer import default_source

        parent = self.iface.mainWindow() if self.iface is not None else None
        source, ok = QInputDialog.getText(
            parent, INSTALL_TEXT, "pip install (a checkout folder, a wheel or a requirement):",
            text=default_source())
        if ok and source.strip():
            self.install(source.strip())

    def install(self, source: str, venv: Path | None = None) -> Any:
        """Queue the managed-venv install of ``source`` (a QgsTask); on success the plugin
        setting points at the new venv and the plugin enables itself."""
        from .installer import make_task
        from .interpreter import managed_venv, write_setting

        def done(task: Any) -> None:
            self._forget(task)
            if task.python:
                write_setting(task.python)
                if self.recheck():
                    self._notify(f"momo-geo installed in {task.venv}", Qgis.MessageLevel.Success)
            else:
                self._notify(f"Install momo-geo failed: {task.error}", Qgis.MessageLevel.Critical)

        task = make_task(venv or managed_venv(), source, done)
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
        elif level == Qgis.MessageLevel.Warning:  # qgis_process: the log is not shown
            print(text, file=sys.stderr)
