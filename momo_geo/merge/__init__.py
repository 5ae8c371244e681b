"""Model merging: task vectors, task arithmetic / MagMax / TIES, and EVL checkpoint selection.

MOMO's recipe: every sensor run starts from the same base weights θ_base; its task vector is
τ_s = θ_s − θ_base; the merged encoder is θ_base + λ·Σ_s τ_s. Which checkpoint of each run to use
is chosen by Equal Validation Loss (:mod:`momo_geo.merge.evl`).

The names load lazily (:mod:`momo_geo._lazy`): :mod:`momo_geo.merge.evl` is pure Python, and
``momo-geo evl`` must check its arguments without importing torch.
"""

from momo_geo._lazy import lazy_names

_HOMES = {"METHODS": "methods", "magmax": "methods", "merge": "methods",
          "search_lambda": "methods", "task_arithmetic": "methods", "ties": "methods",
          "TaskVector": "task_vector", "mergeable_keys": "task_vector"}
__getattr__, __dir__ = lazy_names(__name__, _HOMES)

__all__ = ["METHODS", "TaskVector", "magmax", "merge", "mergeable_keys", "search_lambda",
           "task_arithmetic", "ties"]
