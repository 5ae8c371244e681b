"""Can QGIS's own Python run momo-geo? The check, and the exact command that fixes it.

QGIS runs plugins in its embedded interpreter, which is not the user's virtual environment: on
Linux that is the system Python, on Windows/macOS the Python shipped inside QGIS. ``momo_geo``
and ``torch`` must import *there*. This module is QGIS-free and imports nothing heavy at module
level, so the plugin can always load, and report a missing dependency instead of crashing QGIS.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED = ("momo_geo", "torch", "rasterio", "shapely", "pyproj", "pyogrio")
"""Modules the mapping worker needs in QGIS's interpreter."""

IMPORTED = ("momo_geo",)
"""Imported for real at start (light: momo_geo's top level imports nothing heavy). The others
are only located (``find_spec``): loading torch or the GDAL/GEOS wheels into the QGIS process
itself would cost memory and start-up time, and the wheels' libraries collide with QGIS's own
(see :mod:`.worker`); the worker process imports them and reports any failure in one line."""

PIP_REQUIREMENTS = ("momo-geo", "numpy<2")
"""What to install. ``numpy<2`` because QGIS 3.x's Python bindings are built against numpy 1."""


@dataclass
class DependencyReport:
    """Result of :func:`check_dependencies`: what failed to import, and why."""

    missing: dict[str, str] = field(default_factory=dict)
    """module name -> one-line reason (the import error)."""
    python: str = ""
    """The interpreter QGIS runs (a real ``python`` executable, not the QGIS binary)."""

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def install_command(self) -> str:
        return install_command(self.python)

    def message(self) -> str:
        """One message for the user: what is missing and the command that installs it."""
        if self.ok:
            return "momo-geo and its dependencies are available in QGIS's Python."
        # "No module named ..." says nothing new; other reasons (a broken wheel) are worth showing.
        reasons = "; ".join(f"{name}: {why}" for name, why in self.missing.items()
                            if not why.startswith("No module named"))
        return (f"momo-geo plugin disabled: QGIS's Python ({self.python}) cannot import "
                f"{', '.join(self.missing)}{f' ({reasons})' if reasons else ''}. "
                f"Install them into that interpreter with:  {self.install_command}  then "
                "restart QGIS.")


def check_dependencies(modules: tuple[str, ...] = REQUIRED) -> DependencyReport:
    """Import :data:`IMPORTED` modules, locate the others; collect what fails."""
    report = DependencyReport(python=qgis_python())
    for name in modules:
        try:
            if name in IMPORTED:
                importlib.import_module(name)
            elif importlib.util.find_spec(name) is None:
                raise ImportError(f"No module named {name!r}")
        except Exception as exc:  # ImportError, a broken package's own errors ...
            text = str(exc).strip().splitlines()
            report.missing[name] = text[0] if text else type(exc).__name__
    return report


def qgis_python(executable: str | None = None, prefix: str | None = None,
                base_prefix: str | None = None) -> str:
    """The Python executable of the interpreter QGIS embeds (same installation and version).

    Inside QGIS ``sys.executable`` is not to be trusted: it is the QGIS binary itself
    (``qgis-bin.exe``, ``QGIS.app/Contents/MacOS/QGIS``) or whatever ``python3`` comes first on
    PATH (a pyenv shim, another version). It is used only when it lives in ``sys.prefix`` (a
    plain Python or a virtual environment); otherwise the ``pythonX.Y`` of
    ``sys.base_exec_prefix``, the installation QGIS's libpython belongs to.
    """
    executable = executable if executable is not None else sys.executable
    prefix_path = Path(prefix if prefix is not None else sys.prefix)
    base = Path(base_prefix if base_prefix is not None else sys.base_exec_prefix)
    major, minor = sys.version_info.major, sys.version_info.minor
    if executable and Path(executable).name.lower().startswith("python"):
        home = Path(executable).parent
        if home in (prefix_path / "bin", prefix_path, prefix_path / "Scripts"):
            return executable
    names = (f"python{major}.{minor}", f"python{major}", "python", "python.exe",
             f"python{major}.exe")
    folders = [base / "bin", base]
    if executable:
        folders += [Path(executable).parent, Path(executable).parent / "bin"]
    for folder in folders:
        for name in names:
            candidate = folder / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return f"python{major}.{minor}"


def externally_managed(python_stdlib: str | None = None) -> bool:
    """True for a distribution's Python that refuses plain ``pip install`` (PEP 668)."""
    stdlib = python_stdlib or sysconfig.get_paths()["stdlib"]
    return (Path(stdlib) / "EXTERNALLY-MANAGED").is_file()


def install_command(python: str | None = None, managed: bool | None = None) -> str:
    """The exact shell command that installs momo-geo into QGIS's interpreter.

    ``--user`` for a system-wide Python (plus ``--break-system-packages`` where PEP 668 marks
    it as distribution-managed); neither inside a virtual environment, where pip refuses them.
    """
    python = python or qgis_python()
    in_venv = sys.prefix != sys.base_prefix and Path(python).parent in (
        Path(sys.prefix) / "bin", Path(sys.prefix) / "Scripts")
    managed = externally_managed() if managed is None else managed
    quoted = f'"{python}"' if " " in python else python
    if in_venv:
        flags = ""
    else:
        flags = "--user --break-system-packages " if managed else "--user "
    requirements = " ".join(f'"{r}"' if "<" in r else r for r in PIP_REQUIREMENTS)
    return f"{quoted} -m pip install {flags}{requirements}"
