"""momo-geo for QGIS: map Mars features from a scene into a styled mask and feature layer.

A thin shell over the ``momo_geo`` package: all numerics live there. This module must import with
nothing but QGIS present, so that a missing momo-geo installation is reported, not a crash.
"""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:  # noqa: N802 - the name QGIS looks for
    """Called by QGIS (and ``qgis_process``, with ``iface`` None) to create the plugin."""
    from .plugin import MomoGeoPlugin

    return MomoGeoPlugin(iface)
