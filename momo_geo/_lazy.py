"""Lazy package namespaces (PEP 562): a package's public names, imported on first use.

Why: ``momo-geo --help``, a bad path and the QGIS plugin's worker must answer in a fraction of a
second, so importing :mod:`momo_geo.inference` or :mod:`momo_geo.datasets` must not load torch
or TorchGeo until a name that needs them is used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, homes: dict[str, str]
               ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose name ``n`` lives in submodule
    ``homes[n]``."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook's name
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    def __dir__() -> list[str]:  # noqa: N807
        return sorted([*vars(sys.modules[package]), *homes])

    return __getattr__, __dir__
