""""Install momo-geo…": a managed virtual environment for the engine, made by pip in a task.

The engine runs in a child process (:mod:`.worker`), so it can have a Python environment of its
own: ``python -m venv <profile>/python/momo-geo-venv`` with QGIS's interpreter (same version),
then ``pip install <source>`` into it, where the source is what the user gives (a checkout
folder, a wheel, a requirement such as ``momo-geo``, plus pip options such as ``--no-deps``). pip
reaches package indexes only; model weights come with momo-geo. Nothing is installed into QGIS's
own Python, so the distribution's packages (Debian's old ``attrs``) never meet pip's.

:func:`install` is QGIS-free (tested directly); :class:`InstallTask` runs it in QGIS's task
manager with a progress bar and a cancel button.
"""

from __future__ import annotations

import math
import shlex
import subprocess  # nosec B404 # fixed argv lists: venv and pip, never a shell
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .deps import qgis_python
from .interpreter import CHECKOUT, venv_python

Progress = Callable[[float], None]


class InstallError(Exception):
    """pip or venv failed (one line, with pip's last message) or the install was cancelled."""


def default_source() -> str:
    """The checkout the plugin is loaded from when there is one, else the requirement name."""
    pyproject = CHECKOUT / "pyproject.toml"
    if pyproject.is_file() and 'name = "momo-geo"' in pyproject.read_text(encoding="utf-8"):
        return str(CHECKOUT)
    return "momo-geo"


def install_commands(venv: Path, source: str, base_python: str | None = None) -> list[list[str]]:
    """The two commands: create the venv (kept if it exists), pip install ``source`` into it."""
    return [[base_python or qgis_python(), "-m", "venv", str(venv)],
            [str(venv_python(venv)), "-m", "pip", "install", "--progress-bar", "off",
             "--disable-pip-version-check", *shlex.split(source)]]


def install(venv: Path, source: str, progress: Progress | None = None,
            cancel: Callable[[], bool] | None = None, log: Callable[[str], None] | None = None,
            base_python: str | None = None) -> str:
    """Create ``venv`` and pip install ``source``; return the venv's interpreter.

    ``progress(percent)``: 10 once the venv exists, then up with each package pip collects,
    100 when pip is done. ``cancel()`` is polled for every line pip prints.
    """
    say = progress or (lambda percent: None)
    venv.parent.mkdir(parents=True, exist_ok=True)
    make_venv, pip_install = install_commands(venv, source, base_python)
    if not venv_python(venv).is_file():
        _run(make_venv, lambda line: None, cancel, log)
    say(10.0)
    collected = 0

    def on_line(line: str) -> None:
        nonlocal collected
        if line.startswith(("Collecting", "Processing", "Obtaining")):
            collected += 1
            say(10.0 + 75.0 * (1 - math.exp(-collected / 8)))
        elif line.startswith("Installing collected packages"):
            say(90.0)

    _run(pip_install, on_line, cancel, log)
    say(100.0)
    return str(venv_python(venv))


def _run(argv: list[str], on_line: Callable[[str], None], cancel: Callable[[], bool] | None,
         log: Callable[[str], None] | None) -> None:
    creation = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    tail: list[str] = []
    try:
        process = subprocess.Popen(  # nosec B603 - fixed argv: python -m venv / pip
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, encoding="utf-8", errors="replace", creationflags=creation)
    except OSError as exc:
        raise InstallError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    with process:
        for raw in process.stdout:
            line = raw.strip()
            if line:
                tail = [*tail[-4:], line]
                on_line(line)
                if log is not None:
                    log(line)
            if cancel is not None and cancel():
                process.kill()
                process.wait()
                raise InstallError("cancelled")
    if process.returncode != 0:
        errors = [t for t in tail if "error" in t.lower()]
        reason = (errors or tail or ["no output"])[-1]
        what = "pip install" if "pip" in argv else "python -m venv"
        raise InstallError(f"{what} failed (exit code {process.returncode}): {reason}")


def make_task(venv: Path, source: str, on_done: Callable[[Any], None]) -> Any:
    """An :class:`InstallTask` (QGIS imported only here)."""
    from qgis.core import Qgis, QgsMessageLog, QgsTask

    class InstallTask(QgsTask):
        """``install`` in QGIS's task manager: progress bar, cancel; ``on_done(task)`` after."""

        def __init__(self) -> None:
            super().__init__(f"Install momo-geo ({source})", QgsTask.Flag.CanCancel)
            self.venv, self.source = venv, source
            self.python = ""
            self.error = ""

        def run(self) -> bool:
            try:
                self.python = install(self.venv, self.source, self.setProgress, self.isCanceled,
                                      self._log)
            except InstallError as exc:
                self.error = str(exc)
                return False
            return True

        @staticmethod
        def _log(line: str) -> None:
            QgsMessageLog.logMessage(line, "momo-geo", Qgis.MessageLevel.Info)

        def finished(self, result: bool) -> None:
            on_done(self)

    return InstallTask()
