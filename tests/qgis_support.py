"""Helpers for the QGIS plugin tests: a tiny real model bundle, a small QGIS interface, waiting.

Kept outside ``test_qgis_plugin.py`` so the subprocess checks (system Python, ``qgis_process``)
and the in-process tests share them. Nothing here stands in for momo-geo's own code: the bundle is
a real bundle run by the real engine, and the interface is real Qt/QGIS widgets.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PARENT = ROOT / "qgis_plugin"

CLASSES = [
    {"id": 0, "name": "background", "color": "#000000"},
    {"id": 1, "name": "crater", "color": "#ff7f0e"},
]


def make_dark_spot_bundle(path: Path, sensors: tuple[str, ...] = ("ctx", "hirise"),
                          gsd_range: tuple[float, float] | None = (4.0, 30.0)) -> Path:
    """A one-layer conv segmenter with hand-set weights: "crater" = locally dark pixels.

    The engine turns each tile into ``z`` (MOMO's per-tile min-max stretch, then standardised,
    replicated to 3 channels). Channel 0 of the 5x5 conv computes ``relu(-mean(z))`` over the
    window and the head scores "crater" as ``2 * relu(-mean z) - 1.5``: neighbourhoods more than
    0.75 standard deviations darker than the normalisation mean, such as crater walls facing
    away from the sun. Deterministic, and it finds real structure in the sample scene.
    """
    import torch

    from momo_geo.bundle import ModelCard, save_bundle
    from momo_geo.models import create_model

    kernel = 5
    card = ModelCard(
        name="tiny-test", task="segmentation",
        architecture={"kind": "conv", "encoder": "conv", "width": 4, "depth": 1,
                      "kernel": kernel},
        in_chans=3, classes=CLASSES, tile_size=64, tile_overlap=8, sensors=list(sensors),
        gsd_range=list(gsd_range) if gsd_range else None,
        description="hand-set dark-spot detector for tests")
    model = create_model(card)
    state = model.state_dict()
    with torch.no_grad():
        for key in state:
            state[key].zero_()
        state["net.0.weight"][0] = -1.0 / (3 * kernel * kernel)
        state["net.2.weight"][1, 0, 0, 0] = 2.0
        state["net.2.bias"][1] = -1.5
    return save_bundle(path, state, card)


class Interface:
    """Enough of ``QgisInterface`` for a plugin: real main window, toolbar, menu, message bar."""

    def __init__(self) -> None:
        from qgis.core import QgsProject
        from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsMapCanvas, QgsMessageBar
        from qgis.PyQt.QtWidgets import QMainWindow, QMenu, QToolBar

        self.window = QMainWindow()
        self.canvas = QgsMapCanvas(self.window)
        # As in QGIS desktop: the first layer added to an empty project sets the project's CRS.
        project = QgsProject.instance()
        self.bridge = QgsLayerTreeMapCanvasBridge(project.layerTreeRoot(), self.canvas)
        self.bar = QgsMessageBar(self.window)
        self.toolbar = QToolBar("Plugins", self.window)
        self.raster_menu = QMenu("Raster", self.window)
        self.submenus: dict[str, Any] = {}
        self.active_layer: Any = None

    def mainWindow(self) -> Any:  # noqa: N802 - QGIS's names
        return self.window

    def mapCanvas(self) -> Any:  # noqa: N802
        return self.canvas

    def messageBar(self) -> Any:  # noqa: N802
        return self.bar

    def activeLayer(self) -> Any:  # noqa: N802
        return self.active_layer

    def addToolBarIcon(self, action: Any) -> None:  # noqa: N802
        self.toolbar.addAction(action)

    def removeToolBarIcon(self, action: Any) -> None:  # noqa: N802
        self.toolbar.removeAction(action)

    def addPluginToRasterMenu(self, name: str, action: Any) -> None:  # noqa: N802
        menu = self.submenus.get(name) or self.raster_menu.addMenu(name)
        self.submenus[name] = menu
        menu.addAction(action)

    def removePluginRasterMenu(self, name: str, action: Any) -> None:  # noqa: N802
        menu = self.submenus.get(name)
        if menu is not None:
            menu.removeAction(action)

    def messages(self) -> list[str]:
        return [item.text() for item in self.bar.items()]


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    """Spin Qt's event loop until ``condition()`` (tasks report back through queued signals)."""
    from qgis.PyQt.QtCore import QCoreApplication

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("QGIS task did not finish in time")
        QCoreApplication.processEvents()
        time.sleep(0.005)


def leftovers(folder: Path) -> list[str]:
    """Files and hidden staging folders in ``folder`` other than inputs (``*.tif`` sources)."""
    return sorted(p.name for p in folder.iterdir())


def build_wheel(folder: Path) -> Path:
    """momo-geo's wheel, built offline from a copy of the checkout's sources (the checkout gets
    no build/ folder): what a user hands to *Install momo-geo…*."""
    import shutil
    import subprocess
    import sys

    source = folder / "src"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "momo_geo", source / "momo_geo",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(folder), str(source)],
                   check=True, capture_output=True, timeout=300)
    return next(folder.glob("momo_geo-*.whl"))


def run_script_report(python: Path, script: str, env: dict[str, str], cwd: Path,
                      timeout: float) -> dict[str, Any]:
    """Run a QGIS test ``script`` in ``python`` and return the JSON report of its last line;
    the calling test is skipped when the report says ``skip``."""
    import json
    import subprocess  # nosec B404 - a fixed argv list of our own test script

    import pytest

    completed = subprocess.run([str(python), "-c", script], capture_output=True, text=True,
                               env=env, timeout=timeout, cwd=cwd)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    if "skip" in report:
        pytest.skip(report["skip"])
    return report
