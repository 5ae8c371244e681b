"""Input paths checked while the command line is parsed, before anything heavy is imported.

A mistyped scene, data folder or model is the most common mistake. These click callbacks answer
it in a fraction of a second, before torch (seconds, a gigabyte) is imported, and they work
even where torch cannot be imported at all. They raise :class:`~momo_geo.errors.MomoGeoError`,
which :func:`momo_geo.cli.main` prints as one line; click's own ``exists=True`` would print a
usage block instead. Only the standard library and :mod:`momo_geo.bundle` (JSON only) are used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import click

from momo_geo.errors import MomoGeoError


def _each(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def check_file(path: str) -> None:
    """One-line error unless ``path`` is a readable file."""
    if not os.path.exists(path):
        raise MomoGeoError(f"{path}: no such file")
    if os.path.isdir(path):
        raise MomoGeoError(f"{path}: is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise MomoGeoError(f"{path}: not readable (permission denied)")


def check_folder(path: str) -> None:
    """One-line error unless ``path`` is a readable folder."""
    if not os.path.exists(path):
        raise MomoGeoError(f"{path}: no such folder")
    if not os.path.isdir(path):
        raise MomoGeoError(f"{path}: is a file, not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise MomoGeoError(f"{path}: not readable (permission denied)")


def check_exists(path: str) -> None:
    """One-line error unless ``path`` exists (a file or a folder, either will do)."""
    if not os.path.exists(path):
        raise MomoGeoError(f"{path}: no such file or folder")


def check_output_folder(path: str) -> None:
    """One-line error unless the folder an output goes into exists (outputs make no folders)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise MomoGeoError(f"{parent}: output folder does not exist")


def check_card(model: str) -> None:
    """One-line error unless ``model`` is a bundled model name or a bundle folder whose card
    reads and passes the card checks (:mod:`momo_geo.bundle`)."""
    from momo_geo.bundle import load_card

    load_card(model)


def check_model(model: str, trust_unhashed: bool = False) -> None:
    """One-line error unless ``model`` is a bundled model name or a bundle folder with a valid
    card that has a weights hash (or ``trust_unhashed``)."""
    from momo_geo.bundle import check_hashed, load_card, resolve_bundle_path

    check_hashed(load_card(model), resolve_bundle_path(model), trust_unhashed)


def _each_checked(check: Callable[[str], None], doc: str) -> Callable[..., Any]:
    """A click callback that runs ``check`` on every path the option or argument got."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        for item in _each(value):
            check(item)
        return value

    callback.__doc__ = doc
    return callback


existing_files = _each_checked(check_file, "Click callback: every path given is a readable file.")
existing_folders = _each_checked(check_folder,
                                 "Click callback: every path given is a readable folder.")
existing_paths = _each_checked(check_exists,
                               "Click callback: every path given exists, as a file or a folder.")
output_folder = _each_checked(check_output_folder,
                              "Click callback: each output path goes into an existing folder.")
def finite(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Click callback: a number option is finite (``nan`` passes click's ranges unnoticed)."""
    import math

    if value is not None and not math.isfinite(value):
        raise MomoGeoError(f"--{param.name.replace('_', '-')} must be a finite number, "
                           f"not {value}")
    return value


known_model = _each_checked(check_card, "Click callback: a bundled model name or a bundle "
                            "folder (its card is read and checked, not its weights).")
