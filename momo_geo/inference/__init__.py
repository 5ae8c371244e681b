"""Streaming sliding-window inference: scenes of any size in bounded memory.

- :mod:`~momo_geo.inference.plan`: which windows the model sees and which pixels each owns;
- :mod:`~momo_geo.inference.reader`: reading, masking and normalising tiles in a thread;
- :mod:`~momo_geo.inference.stitch`: the row-band accumulator that writes finished rows;
- :mod:`~momo_geo.inference.engine`: :func:`map_scene` and :func:`predict_array`.
"""

from momo_geo.inference.engine import (
    MapOptions,
    MapResult,
    Predictor,
    default_mask_path,
    default_vector_path,
    map_scene,
    predict_array,
    resolve_device,
)
from momo_geo.inference.plan import TilePlan, plan_shape, plan_tiles

__all__ = [
    "MapOptions",
    "MapResult",
    "Predictor",
    "TilePlan",
    "default_mask_path",
    "default_vector_path",
    "map_scene",
    "plan_shape",
    "plan_tiles",
    "predict_array",
    "resolve_device",
]
