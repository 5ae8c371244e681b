"""The "Map Mars features" dialog: scene, model, outputs and options, with the model card shown.

The dialog only collects a :class:`~momo_geo_plugin.client.MapRequest`; it runs nothing. It opens
with the active raster layer, the bundled default model and output paths beside the scene (the
engine's naming rule). Its option fields are made from the engine's option schema (names,
defaults, choices, help: ``momo_geo.inference.options``, via the worker), so they are the CLI's;
tile and overlap take the model card's values, and a warning appears when the scene does not fit
the model (not on Mars, another sensor, GSD outside the card's ``gsd_range``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import QgsMapLayerProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtGui import QDoubleValidator
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .client import VECTOR_FORMATS, MapRequest, describe, engine_info

DEFAULT_MODEL_TEXT = "Bundled default model"
SUFFIXES = {"min_area": " m²", "simplify": " m", "tile": " px", "overlap": " px"}
LABELS = {"tile": "Tile size", "overlap": "Tile overlap", "batch_size": "Batch size",
          "min_area": "Smallest feature", "simplify": "Simplify outlines",
          "circles": "Crater circles", "nodata": "Nodata value",
          "geojson_lonlat": "GeoJSON in Mars longitude/latitude",
          "frame": "Undeclared black frame is nodata",
          "assume_mars": "Assume Mars (read an Earth or Moon CRS on the Mars sphere)",
          "trust_unhashed": "Trust a model without a weights hash"}
"""Presentation only; names, defaults, ranges and choices come from the engine."""


def _safe(slot: Callable[..., None]) -> Callable[..., None]:
    """A slot that reports its exception in the dialog: PyQt aborts QGIS on an uncaught one."""

    @functools.wraps(slot)
    def wrapper(self: MapFeaturesDialog, *args: Any) -> None:
        try:
            slot(self, *args)
        except Exception as exc:
            self.warning_label.setText(f"✖ {type(exc).__name__}: {exc}")

    return wrapper


class MapFeaturesDialog(QDialog):
    """Collects a :class:`MapRequest`; :meth:`request` reads it once the user pressed Run."""

    def __init__(self, parent: QWidget | None = None, iface: Any = None,
                 project: QgsProject | None = None) -> None:
        super().__init__(parent)
        self.iface = iface
        self.project = project or QgsProject.instance()
        self.setWindowTitle("Map Mars features")
        self.setMinimumWidth(560)
        self._last_scene = ""
        self._card_ok = False
        self._card: Any = None
        self._warnings: list[str] = []
        self._described: dict[tuple[str, str], dict[str, Any]] = {}
        self._build()
        active = iface.activeLayer() if iface is not None else None
        if isinstance(active, QgsRasterLayer):
            self.layer_box.setLayer(active)
        self._scene_changed()

    # --- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self)

        scene_group = QGroupBox("Scene")
        scene_form = QFormLayout(scene_group)
        self.layer_box = QgsMapLayerComboBox()
        self.layer_box.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        if hasattr(self.layer_box, "setProject"):  # QGIS >= 3.24; 3.22 lists the main project
            self.layer_box.setProject(self.project)
        self.scene_file = QgsFileWidget()
        self.scene_file.setFilter("Rasters (*.tif *.tiff *.img *.jp2 *.vrt *.cub);;All files (*)")
        self.scene_file.setToolTip("Or pick a raster file that is not loaded as a layer")
        self.scene_file.lineEdit().setPlaceholderText("or a file")
        row = QHBoxLayout()
        row.addWidget(self.layer_box, 2)
        row.addWidget(self.scene_file, 1)
        scene_form.addRow("Input raster", row)
        outer.addWidget(scene_group)

        model_group = QGroupBox("Model")
        model_form = QFormLayout(model_group)
        self.model_file = QgsFileWidget()
        self.model_file.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.model_file.lineEdit().setPlaceholderText(DEFAULT_MODEL_TEXT)
        self.model_file.setToolTip("A NAME.bundle folder; empty uses the bundled default model")
        model_form.addRow("Model bundle", self.model_file)
        self.card_label = QLabel()
        self.card_label.setWordWrap(True)
        model_form.addRow(self.card_label)
        outer.addWidget(model_group)

        out_group = QGroupBox("Outputs")
        out_form = QFormLayout(out_group)
        self.mask_file = QgsFileWidget()
        self.mask_file.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.mask_file.setFilter("GeoTIFF (*.tif)")
        out_form.addRow("Class mask", self.mask_file)
        self.vector_format = QComboBox()
        self.vector_format.addItems(list(VECTOR_FORMATS))
        self.vector_file = QgsFileWidget()
        self.vector_file.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.vector_file.setFilter("GeoPackage (*.gpkg);;ESRI Shapefile (*.shp)")
        row = QHBoxLayout()
        row.addWidget(self.vector_file, 3)
        row.addWidget(self.vector_format, 1)
        out_form.addRow("Features", row)
        self.overwrite = QCheckBox("Replace existing output files")
        out_form.addRow(self.overwrite)
        outer.addWidget(out_group)

        run_group = QGroupBox("Options")
        run_form = QFormLayout(run_group)
        self.option_widgets: dict[str, QWidget] = {}
        for name, spec in engine_info().options.items():
            if name == "overwrite":
                continue
            widget = option_widget(name, spec)
            widget.setToolTip(spec["help"])
            self.option_widgets[name] = widget
            setattr(self, name, widget)
            label = LABELS.get(name, name.replace("_", " ").capitalize())
            if spec["type"] == "bool":
                run_form.addRow(widget)
            else:
                run_form.addRow(label, widget)
        self.reset_tiling = QToolButton()
        self.reset_tiling.setText("Defaults")
        self.reset_tiling.setToolTip("The engine's defaults, tiling from the model card")
        run_form.addRow(self.reset_tiling)
        outer.addWidget(run_group)

        self.warning_label = QLabel()
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("color: #b35900;")
        outer.addWidget(self.warning_label)

        buttons = QDialogButtonBox.StandardButton
        self.buttons = QDialogButtonBox(buttons.Ok | buttons.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Run")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        outer.addWidget(self.buttons)

        self.layer_box.layerChanged.connect(self._layer_picked)
        self.scene_file.fileChanged.connect(self._scene_changed)
        self.model_file.fileChanged.connect(self._model_changed)
        self.vector_format.currentTextChanged.connect(self._format_changed)
        self.reset_tiling.clicked.connect(self._reset_options)
        for widget in (self.mask_file, self.vector_file):
            widget.fileChanged.connect(self._validate)
        self.overwrite.toggled.connect(self._validate)

    # --- state ---------------------------------------------------------------------------------
    def scene_path(self) -> str:
        """The picked file if any, else the file behind the selected layer."""
        if self.scene_file.filePath():
            return self.scene_file.filePath()
        layer = self.layer_box.currentLayer()
        if layer is None:
            return ""
        from .algorithm import layer_path

        return layer_path(layer)

    def model(self) -> str:
        return self.model_file.filePath().strip() or "default"

    def options(self) -> dict[str, Any]:
        """The option fields' values under the engine's option names."""
        values = {name: option_value(widget) for name, widget in self.option_widgets.items()}
        return {**values, "overwrite": self.overwrite.isChecked()}

    def request(self) -> MapRequest:
        return MapRequest(
            scene=self.scene_path(), model=self.model(), mask_path=self.mask_file.filePath(),
            vector_path=self.vector_file.filePath(), options=self.options())

    @_safe
    def _layer_picked(self, _layer: Any = None) -> None:
        if self.scene_file.filePath():
            self.scene_file.setFilePath("")  # a layer choice replaces a file choice
        self._scene_changed()

    @_safe
    def _scene_changed(self, *_: Any) -> None:
        scene = self.scene_path()
        if scene and scene != self._last_scene:
            self._last_scene = scene
            mask, vector = engine_info().default_outputs(
                scene, VECTOR_FORMATS[self.vector_format.currentText()])
            self.mask_file.setFilePath(mask)
            self.vector_file.setFilePath(vector)
        self._model_changed()

    @_safe
    def _model_changed(self, *_: Any) -> None:
        key = (self.scene_path(), self.model())
        if key not in self._described:  # the worker opens the scene: ~1 s, so only once
            self._described[key] = describe(*key)
        info = self._described[key]
        self.card_label.setText(info["summary"] or "No usable model.")
        self._card_ok = info["card"] is not None
        self._card = info["card"]
        self._warnings = list(info["warnings"])
        self._apply_card_defaults()
        self._validate()

    @_safe
    def _apply_card_defaults(self, *_: Any) -> None:
        """Tile and overlap to the model card's values (a new model or scene keeps the rest)."""
        card = self._card
        if card is not None:
            for name, value in (("tile", card.tile_size), ("overlap", card.tile_overlap)):
                if name in self.option_widgets:
                    set_option_value(self.option_widgets[name], value)

    @_safe
    def _reset_options(self, *_: Any) -> None:
        """Every option to the engine's default, tiling to the model card's."""
        for name, widget in self.option_widgets.items():
            default = engine_info().options[name]["default"]
            if default is not None or isinstance(widget, OptionalNumber):
                set_option_value(widget, default)
        self._apply_card_defaults()

    @_safe
    def _format_changed(self, name: str) -> None:
        path = self.vector_file.filePath()
        if path:
            self.vector_file.setFilePath(str(Path(path).with_suffix(VECTOR_FORMATS[name])))

    def problems(self) -> list[str]:
        """Blocking problems (Run is disabled while there are any)."""
        problems = []
        if not self.scene_path():
            problems.append("choose an input raster")
        if not self._card_ok:
            problems.append("choose a model bundle")
        for label, path in (("class mask", self.mask_file.filePath()),
                            ("features", self.vector_file.filePath())):
            if not path:
                problems.append(f"choose a {label} file")
            elif Path(path).exists() and not self.overwrite.isChecked():
                problems.append(f"{Path(path).name} exists (tick 'Replace existing output files')")
        return problems

    @_safe
    def _validate(self, *_: Any) -> None:
        lines = [f"⚠ {w}" for w in self._warnings]
        lines += [f"✖ {p}" for p in self.problems()]
        self.warning_label.setText("\n".join(lines))
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(not self.problems())


class OptionalNumber(QLineEdit):
    """A number that may be left empty (``None``), for an option that is unset by default
    (``nodata``: only what the file declares). A spin box cannot be empty."""

    def __init__(self) -> None:
        super().__init__()
        self.setValidator(QDoubleValidator())
        self.setPlaceholderText("not set")

    def value(self) -> float | None:
        text = self.text().strip().replace(",", ".")
        return float(text) if text else None

    def setValue(self, value: float | None) -> None:  # noqa: N802 - Qt's spin-box name
        self.setText("" if value is None else f"{value:g}")


def option_widget(name: str, spec: dict[str, Any]) -> QWidget:
    """A field for one engine option: combo box (choices), check box, spin box (numbers), a
    line that may stay empty (a number unset by default)."""
    if "choices" in spec:
        widget: Any = QComboBox()
        widget.addItems([str(c) for c in spec["choices"]])
    elif spec["default"] is None and "minimum" not in spec:
        widget = OptionalNumber()
    elif spec["type"] == "bool":
        widget = QCheckBox(LABELS.get(name, name.replace("_", " ").capitalize()))
    elif spec["type"] == "int":
        widget = QSpinBox()
        widget.setRange(int(spec.get("minimum", 0)), 1_000_000)
    else:
        widget = QDoubleSpinBox()
        widget.setRange(float(spec.get("minimum", 0.0)), 1e12)
        widget.setDecimals(2)
    if name in SUFFIXES and hasattr(widget, "setSuffix"):
        widget.setSuffix(SUFFIXES[name])
    if spec["default"] is not None:
        set_option_value(widget, spec["default"])
    return widget


def set_option_value(widget: Any, value: Any) -> None:
    if isinstance(widget, QComboBox):
        widget.setCurrentText(str(value))
    elif isinstance(widget, QCheckBox):
        widget.setChecked(bool(value))
    else:
        widget.setValue(value)


def option_value(widget: Any) -> Any:
    if isinstance(widget, QComboBox):
        return widget.currentText()
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    return widget.value()
