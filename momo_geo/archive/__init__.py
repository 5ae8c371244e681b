"""Many scenes on a Dask cluster: a manifest to resume from and one merged catalogue.

- :mod:`~momo_geo.archive.run`: :func:`map_archive`, the cluster, progress;
- :mod:`~momo_geo.archive.scene_task`: one scene on a worker (the model loaded once per worker);
- :mod:`~momo_geo.archive.manifest`: the SQLite manifest (what is done, failed, and why);
- :mod:`~momo_geo.archive.catalogue`: all features in one GeoPackage layer on one Mars CRS.

Dask is an optional extra (``pip install 'momo-geo[archive]'``); names are imported on first use,
so ``import momo_geo.archive`` works, and ``momo-geo --help`` stays fast, without it.
"""

from __future__ import annotations

import importlib.util

from momo_geo._lazy import lazy_names
from momo_geo.errors import MomoGeoError

INSTALL_HINT = "map-archive needs Dask: pip install 'momo-geo[archive]'"

_HOMES = {
    "ArchiveProgress": "run",
    "ArchiveResult": "run",
    "map_archive": "run",
    "read_scene_list": "run",
    "Manifest": "manifest",
    "SceneRecord": "manifest",
    "write_catalogue": "catalogue",
}

__all__ = sorted(_HOMES)

__getattr__, __dir__ = lazy_names(__name__, _HOMES)


def require_dask() -> None:
    """A one-line error naming the extra to install when ``dask.distributed`` is missing
    (looked up, not imported: importing Dask takes a second)."""
    try:
        found = all(importlib.util.find_spec(name) is not None
                    for name in ("dask", "distributed"))
    except (ImportError, ValueError):  # a broken install counts as none
        found = False
    if not found:
        raise MomoGeoError(INSTALL_HINT)
