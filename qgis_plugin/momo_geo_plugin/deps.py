"""Can the plugin map? The check, and the one line that says how to fix it.

The engine runs in a child process with the Python that :mod:`.interpreter` picks (a venv with
momo-geo, or QGIS's own). The check asks that Python's worker for its ``defaults`` (momo-geo's
option schema), which also says which engine modules are missing; nothing heavy is ever loaded
into QGIS itself. This module is QGIS-free and imports nothing heavy at module level, so the
plugin can always load, and report a missing engine instead of crashing QGIS.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class DependencyReport:
    """Result of :func:`check_dependencies`: the engine found, or why there is none."""

    engine: Any
    """The :class:`~.client.EngineInfo` of the interpreter the plugin would use."""

    @property
    def ok(self) -> bool:
        return bool(self.engine.ok)

    @property
    def python(self) -> str:
        return self.engine.interpreter.python

    def message(self) -> str:
        """One line for the user: what is wrong and the commands (or menu entries) that fix it."""
        if self.ok:
            return f"momo-geo {self.engine.answer['version']} maps with {self.python}."
        from .installer import default_source

        problem = self.engine.problem.rstrip(".") or "momo-geo cannot be imported"
        return (f"momo-geo plugin disabled: {problem}. Fix: Raster > momo-geo > Install "
                f"momo-geo... (or run: python3 -m venv ~/momo-geo-venv && ~/momo-geo-venv/bin/pip "
                f"install {default_source()}), then point Raster > momo-geo > Python "
                f"environment... (or ${_env_variable()}) at ~/momo-geo-venv/bin/python.")


def _env_variable() -> str:
    from .interpreter import ENV_VARIABLE

    return ENV_VARIABLE


def check_dependencies(refresh: bool = False) -> DependencyReport:
    """Find the engine's interpreter and ask it (a subprocess, well under a second)."""
    from .client import engine_info

    return DependencyReport(engine_info(refresh=refresh))


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
