"""Streaming sliding-window inference: scenes of any size in bounded memory.

- :mod:`~momo_geo.inference.options`: :class:`MapOptions`, default output names, background
  classes (torch-free: the CLI and the QGIS plugin's worker read it before anything heavy);
- :mod:`~momo_geo.inference.plan`: which windows the model sees and which pixels each owns;
- :mod:`~momo_geo.inference.reader`: reading, masking and normalising tiles in a thread;
- :mod:`~momo_geo.inference.stitch`: the row-band accumulator that writes finished rows;
- :mod:`~momo_geo.inference.engine`: :func:`map_scene` and :func:`predict_array`.

Names are imported on first use (PEP 562), so ``from momo_geo.inference.options import …`` or
``from momo_geo.inference import MapOptions`` does not load torch.
"""

from __future__ import annotations

from momo_geo._lazy import lazy_names

_HOMES = {
    "MapOptions": "options",
    "default_mask_path": "options",
    "default_vector_path": "options",
    "MapResult": "engine",
    "Predictor": "engine",
    "map_scene": "engine",
    "predict_array": "engine",
    "resolve_device": "engine",
    "TilePlan": "plan",
    "plan_shape": "plan",
    "plan_tiles": "plan",
}

__all__ = sorted(_HOMES)


__getattr__, __dir__ = lazy_names(__name__, _HOMES)
