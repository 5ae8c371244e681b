"""Which Python runs the mapping engine, and with what environment.

The engine runs in a child process (:mod:`.worker`), so its Python need not be QGIS's: a virtual
environment with momo-geo and its own wheels (torch, rasterio, a current ``attrs`` beside a
current ``affine``) avoids every clash with the distribution's packages QGIS's Python sees (on
Debian, ``python3-attrs`` is too old for pip's ``affine``, and every map then fails with
``TypeError … Affine … _astuple``). Where that Python is:

1. ``$MOMO_GEO_PYTHON`` (for ``qgis_process`` and scripts), else the plugin setting
   ``momo-geo/python`` (QgsSettings; an interpreter or a venv folder). Either is used as given.
2. Otherwise the first that can import momo-geo of: the managed venv that *Install momo-geo…*
   creates in the QGIS profile folder, the ``.venv`` of the checkout this plugin is loaded from,
   the interpreter of a ``momo-geo`` command on ``PATH``.
3. Otherwise QGIS's own Python with QGIS's ``sys.path`` (momo-geo installed into it).

QGIS-free apart from :func:`profile_folder` and the setting (imported lazily), so the worker
protocol can be tested without QGIS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .deps import qgis_python

SETTING = "momo-geo/python"
ENV_VARIABLE = "MOMO_GEO_PYTHON"
MANAGED_VENV = "momo-geo-venv"
CHECKOUT = Path(__file__).resolve().parents[2]
"""The source checkout when the plugin is loaded from ``<checkout>/qgis_plugin``."""

WHEEL_DATA_VARIABLES = ("PROJ_LIB", "PROJ_DATA", "GDAL_DATA", "GDAL_DRIVER_PATH")
"""Set by QGIS for *its* GDAL/PROJ; the worker's rasterio/pyproj find their own data without them
(a newer pyproj refuses an older proj.db, so QGIS's would break it)."""


@dataclass(frozen=True)
class Interpreter:
    """A Python for the engine and where it came from (``env``, ``setting``, ``managed``,
    ``checkout``, ``path`` or ``qgis``)."""

    python: str
    source: str

    @property
    def is_qgis(self) -> bool:
        """QGIS's own Python: the worker gets QGIS's ``sys.path`` to find momo-geo."""
        return self.source == "qgis"


def venv_python(folder: str | os.PathLike[str]) -> Path:
    """The interpreter inside a virtual environment folder (POSIX or Windows layout)."""
    folder = Path(folder)
    windows = folder / "Scripts" / "python.exe"
    return windows if windows.is_file() else folder / "bin" / "python"


def as_python(value: str) -> str:
    """A setting's value as an interpreter path: a venv folder becomes its ``bin/python``."""
    value = os.path.expanduser(value.strip())
    return str(venv_python(value)) if value and Path(value).is_dir() else value


def profile_folder() -> Path:
    """QGIS's profile folder (where the managed venv lives)."""
    from qgis.core import QgsApplication

    return Path(QgsApplication.qgisSettingsDirPath())


def managed_venv() -> Path:
    return profile_folder() / "python" / MANAGED_VENV


def configured() -> Interpreter | None:
    """The interpreter the user chose (environment variable or plugin setting), if any."""
    if os.environ.get(ENV_VARIABLE, "").strip():
        return Interpreter(as_python(os.environ[ENV_VARIABLE]), "env")
    value = read_setting()
    return Interpreter(as_python(value), "setting") if value else None


def read_setting() -> str:
    try:
        from qgis.core import QgsSettings
    except ImportError:
        return ""
    return str(QgsSettings().value(SETTING, "") or "")


def write_setting(value: str) -> None:
    from qgis.core import QgsSettings

    QgsSettings().setValue(SETTING, value.strip())


def detected() -> list[Interpreter]:
    """Interpreters that may have momo-geo, most specific first; only those that exist."""
    found = []
    with contextlib.suppress(ImportError):  # no QGIS: no profile folder
        found.append(Interpreter(str(venv_python(managed_venv())), "managed"))
    found.append(Interpreter(str(venv_python(CHECKOUT / ".venv")), "checkout"))
    script = shutil.which("momo-geo")
    if script:
        python = _shebang_python(Path(script))
        if python:
            found.append(Interpreter(python, "path"))
    return [i for i in found if Path(i.python).is_file() and os.access(i.python, os.X_OK)]


def _shebang_python(script: Path) -> str | None:
    """The interpreter on a console script's ``#!`` line (pip writes an absolute path)."""
    try:
        with script.open("rb") as handle:
            first = handle.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    python = first[2:].strip().split()[0] if first[2:].strip() else ""
    return python if Path(python).name.startswith("python") else None


def qgis_interpreter() -> Interpreter:
    return Interpreter(qgis_python(), "qgis")


def worker_env(interpreter: Interpreter) -> dict[str, str]:
    """The worker's environment: QGIS's ``sys.path`` for QGIS's own Python; for any other
    interpreter nothing of QGIS's Python (its ``PYTHONPATH`` would bring the distribution's old
    packages back in front of the venv's)."""
    drop = {*WHEEL_DATA_VARIABLES, "PYTHONPATH", "PYTHONHOME"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if interpreter.is_qgis:
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env
