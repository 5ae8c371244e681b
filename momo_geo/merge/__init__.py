"""Model merging: task vectors, task arithmetic / MagMax / TIES, and EVL checkpoint selection.

MOMO's recipe: every sensor run starts from the same base weights θ_base; its task vector is
τ_s = θ_s − θ_base; the merged encoder is θ_base + λ·Σ_s τ_s. Which checkpoint of each run to use
is chosen by Equal Validation Loss (:mod:`momo_geo.merge.evl`).
"""

from momo_geo.merge.methods import METHODS, magmax, merge, search_lambda, task_arithmetic, ties
from momo_geo.merge.task_vector import TaskVector, mergeable_keys

__all__ = ["METHODS", "TaskVector", "magmax", "merge", "mergeable_keys", "search_lambda",
           "task_arithmetic", "ties"]
