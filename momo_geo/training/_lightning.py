"""Lightning as an optional dependency: a one-line error where it is missing, classes on demand.

Subclasses of ``lightning.LightningModule`` cannot be defined before Lightning is imported, yet
``import momo_geo.training.pretrain`` must work without it (mapping users install no training
stack). So each module defines its Lightning classes in a builder function and exposes them
through a module ``__getattr__`` (PEP 562): ``from momo_geo.training.pretrain import
MAEPretrainModule`` builds the class once, registers it under its plain name (so pickling and
``load_from_checkpoint`` find it) and returns it.

Also the one reading of a recipe's wall-clock cap (``max_minutes``) as Lightning's ``max_time``.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from typing import Any

from momo_geo.errors import MomoGeoError

INSTALL_HINT = "pip install 'momo-geo[train]'"


def require_lightning(purpose: str = "training") -> Any:
    """The ``lightning`` module, or a :class:`MomoGeoError` saying how to install it."""
    try:
        import lightning
    except ImportError:
        raise MomoGeoError(f"{purpose} needs Lightning: {INSTALL_HINT}") from None
    return lightning


def lazy_classes(module_name: str, builders: dict[str, Callable[[], type]]
                 ) -> Callable[[str], type]:
    """A module ``__getattr__`` that builds the named classes on first access."""

    def __getattr__(name: str) -> type:  # noqa: N807 - the PEP 562 hook
        if name not in builders:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        cls = builders[name]()
        cls.__module__, cls.__qualname__ = module_name, name
        setattr(sys.modules[module_name], name, cls)
        return cls

    return __getattr__


def wall_clock_cap(minutes: float) -> datetime.timedelta | None:
    """Lightning's ``max_time`` for a cap in minutes (0: none). Lightning checks it after every
    step, so a run stops within one step of the cap."""
    if minutes < 0:
        raise MomoGeoError(f"max_minutes must be 0 (no cap) or positive, not {minutes}")
    return datetime.timedelta(minutes=minutes) if minutes else None
