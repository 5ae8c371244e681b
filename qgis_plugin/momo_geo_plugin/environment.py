"""The "Python environment…" dialog: which Python runs the engine, checked on the spot.

One field (an interpreter, or a venv folder) saved in the plugin setting ``momo-geo/python``;
empty means "detect" (:mod:`.interpreter`). *Check* asks that Python's worker for momo-geo's
defaults and shows what it found; *Install momo-geo…* hands over to the plugin's installer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .client import ask_defaults, engine_info, find_engine
from .interpreter import Interpreter, as_python, read_setting, write_setting


class EnvironmentDialog(QDialog):
    """Shows the engine's interpreter; OK saves the field to the plugin setting."""

    def __init__(self, parent: QWidget | None = None,
                 install: Callable[[], Any] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("momo-geo: Python environment")
        self.setMinimumWidth(560)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.python = QgsFileWidget()
        self.python.setStorageMode(QgsFileWidget.StorageMode.GetFile)
        self.python.lineEdit().setPlaceholderText("detect (managed venv, checkout .venv, PATH)")
        self.python.setToolTip("A Python interpreter with momo-geo, or its venv folder")
        self.python.setFilePath(read_setting())
        form.addRow("Python with momo-geo", self.python)
        layout.addLayout(form)
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.check_button = QPushButton("Check")
        self.check_button.clicked.connect(self.check)
        layout.addWidget(self.check_button)
        if install is not None:
            self.install_button = QPushButton("Install momo-geo…")
            self.install_button.clicked.connect(lambda: (self.reject(), install()))
            layout.addWidget(self.install_button)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.status.setText(describe_engine(engine_info()))

    def check(self) -> str:
        """Ask the interpreter in the field (or the detected one) and show the answer."""
        value = self.python.filePath().strip()
        info = ask_defaults(Interpreter(as_python(value), "setting")) if value else find_engine()
        text = describe_engine(info)
        self.status.setText(text)
        return text

    def accept(self) -> None:
        write_setting(self.python.filePath())
        super().accept()


def describe_engine(info: Any) -> str:
    """One line: which Python, from where, and whether it can map."""
    where = {"env": "$MOMO_GEO_PYTHON", "setting": "plugin setting", "managed": "managed venv",
             "checkout": "checkout .venv", "path": "momo-geo on PATH",
             "qgis": "QGIS's Python"}.get(info.interpreter.source, info.interpreter.source)
    if info.ok:
        return f"✔ momo-geo {info.answer['version']} in {info.interpreter.python} ({where})"
    return f"✖ {info.interpreter.python} ({where}): {info.problem}"
