"""Metrics MOMO and geologists read: F1 per class, crater IoU, crater detection, bootstrap CIs.

Pure numpy/scipy functions of arrays; :mod:`momo_geo.evaluate` runs a model to produce the arrays.
SciPy is imported where the crater functions need it, so importing this module (and the command
line's ``--help``) stays light.

How crater maps are scored, object by object (the rule :func:`match_craters` implements):

- *predicted craters* are the connected components (4-connected, as ``momo-geo map`` outlines
  them) of the crater class in the predicted mask, holes filled (a predicted rim ring is one
  crater). Each is fitted with a least-squares (Kåsa) circle, the fit ``momo-geo map --circles``
  uses (:func:`momo_geo.vectorize.fit_circle`), through the midpoints of its outline's pixel
  edges; edges on the image border are left out, so a crater cut by the border is fitted from
  its visible rim. A component with fewer than six outline points off the border, or whose
  points are collinear, gets the circle of equal area at its centroid. The fit quality is the
  RMS radial residual of the outline divided by the radius (0 for a perfect disc);
- *labelled craters* are the inscribed circles of the labelled boxes (centre = box centre,
  diameter = the shorter side; boxes cut by the image edge are completed as the masks are, see
  :func:`momo_geo.datasets.craters.boxes_to_circles`);
- a prediction *matches* a labelled crater when the centres are at most 0.5 × the labelled
  diameter apart and the diameter ratio (predicted / labelled) is within [0.5, 2]; matches are
  one-to-one, chosen by the Hungarian algorithm to pair as many craters as possible with the
  smallest total centre distance (relative to the labelled diameter);
- the *minimum diameter scored* (:data:`MIN_DIAMETER_PX`, 8 px by default): labelled craters
  smaller are ignored (neither found nor missed), and a prediction left unmatched that could
  match such an ignored crater is ignored too, not counted as a false positive. Every other
  prediction counts, whatever its size: a 7 px outline of a 9 px labelled crater is a hit, and
  a 3 px speck on bare plains is a false alarm. (So a map is scored as a geologist receives it;
  the model's own smallest size, card ``min_diameter``, is what keeps specks out of its maps.)
- ``crater_precision`` = tp / (tp + fp), ``crater_recall`` = tp / (tp + fn), ``crater_f1``
  their harmonic mean, counted over all images; recall is also given per labelled-diameter bin
  (:data:`DIAMETER_BINS_PX`, in pixels and, with the data's GSD, in metres).

Intervals are percentile bootstraps over *images* (the unit that was sampled), 95 % by default,
with a fixed seed so that a number printed twice is the same number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

N_BOOT = 1000
MIN_DIAMETER_PX = 8.0
"""Smallest crater diameter scored, in pixels: smaller labelled craters are ignored."""
MAX_CENTRE_DISTANCE = 0.5
"""A match's centre distance, at most this times the labelled diameter."""
DIAMETER_RATIO = (0.5, 2.0)
"""A match's predicted / labelled diameter ratio lies in this closed interval."""
DIAMETER_BINS_PX = (8.0, 16.0, 32.0, 64.0, 128.0, 256.0, math.inf)
"""Edges of the labelled-diameter bins that recall is reported in (pixels)."""
_MIN_FIT_POINTS = 6


# ----------------------------------------------------------------------------- classification


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``cm[t, p]`` counts, rows true class, columns predicted class."""
    idx = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, ...]:
    """(precision, recall, f1, support, predicted) per class of a confusion matrix."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1, support, predicted


def f1_scores(cm: np.ndarray) -> dict[str, float]:
    """Weighted F1 (by true-class support), macro F1 (classes present in truth or prediction)
    and accuracy from a confusion matrix."""
    _, _, f1, support, predicted = _per_class(cm)
    total = support.sum()
    present = (support + predicted) > 0
    return {
        "f1_weighted": float((f1 * support).sum() / total) if total else 0.0,
        "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
        "accuracy": float(np.trace(cm) / total) if total else 0.0,
    }


def per_class_scores(cm: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Class name -> F1, precision, recall and support (true count) from a confusion matrix.

    A class neither in the truth nor predicted has no scores (``None``), as macro F1 skips it.
    """
    precision, recall, f1, support, predicted = _per_class(cm)
    out: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        seen = support[k] + predicted[k] > 0
        out[name] = {"f1": float(f1[k]) if seen else None,
                     "precision": float(precision[k]) if seen else None,
                     "recall": float(recall[k]) if seen else None,
                     "support": int(support[k])}
    return out


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int],
                           n_classes: int) -> dict[str, float]:
    return f1_scores(confusion_matrix(np.asarray(y_true), np.asarray(y_pred), n_classes))


# ----------------------------------------------------------------------------- pixels


def pixel_counts(pred: np.ndarray, truth: np.ndarray, positive: int = 1,
                 valid: np.ndarray | None = None) -> tuple[int, int, int]:
    """(tp, fp, fn) of the ``positive`` class in one image."""
    p = np.asarray(pred) == positive
    t = np.asarray(truth) == positive
    if valid is not None:
        p = p & valid
        t = t & valid
    tp = int(np.count_nonzero(p & t))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp


def segmentation_metrics(counts: np.ndarray, pixels: np.ndarray | None = None
                         ) -> dict[str, float]:
    """From per-image ``(tp, fp, fn)`` rows of the crater class: its IoU, per-image means, F1.

    - ``iou``: the crater class's IoU with pixels pooled over all images;
    - ``iou_per_image_mean``: the mean of per-image IoUs over the images where it is defined
      (images with neither truth nor prediction are skipped);
    - ``iou_per_image_mean_authors``: the MOMO authors' convention — such an empty/empty image
      scores 1.0 (a correct "no crater") and every image counts; the number to put beside the
      paper's crater mIoU;
    - with ``pixels`` (the valid pixel count of each image): ``iou_background`` (the background
      class's pooled IoU, tn / (tn + fp + fn)) and ``miou_with_background``, the mean of the two
      classes' pooled IoUs, as a confusion-matrix mIoU over {background, crater} computes it —
      the Mars-Bench leaderboard's convention, which averages in the background class.
    """
    counts = np.asarray(counts, dtype=np.float64).reshape(-1, 3)
    tp, fp, fn = counts.sum(axis=0)
    union = tp + fp + fn
    per_union = counts.sum(axis=1)
    defined = per_union > 0
    per_image = counts[defined, 0] / per_union[defined]
    authors = np.where(defined, counts[:, 0] / np.where(defined, per_union, 1.0), 1.0)
    out = {
        "iou": float(tp / union) if union else 0.0,
        "iou_per_image_mean": float(per_image.mean()) if defined.any() else 0.0,
        "iou_per_image_mean_authors": float(authors.mean()) if len(counts) else 0.0,
        "f1_pixel": float(2 * tp / (2 * tp + fp + fn)) if union else 0.0,
    }
    if pixels is not None:
        total = float(np.asarray(pixels, dtype=np.float64).reshape(-1).sum())
        tn = total - union
        background = tn / (tn + fp + fn) if tn + fp + fn > 0 else 0.0
        out["iou_background"] = float(background)
        out["miou_with_background"] = float((out["iou"] + background) / 2)
    return out


# ----------------------------------------------------------------------------- crater objects


@dataclass(frozen=True)
class Circles:
    """Craters as circles in pixel-centre coordinates (pixel ``(r, c)`` has its centre at
    ``x = c, y = r``); ``residual`` is the fit quality of predicted craters (NaN for labels)."""

    x: np.ndarray
    y: np.ndarray
    diameter: np.ndarray
    residual: np.ndarray

    @classmethod
    def of(cls, x: Any, y: Any, diameter: Any) -> Circles:
        x, y, d = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (x, y, diameter))
        return cls(x, y, d, np.full(len(x), np.nan))

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, keep: np.ndarray) -> Circles:
        return Circles(self.x[keep], self.y[keep], self.diameter[keep], self.residual[keep])


def _outline_points(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y (pixel-centre coordinates) and component index (0-based) of the midpoints of every
    pixel edge between a component and the background; edges on the image border are left out
    (the image edge is no crater rim)."""
    padded = np.pad(labels, 1, mode="edge")  # beyond the border: the same component, no edge
    height, width = labels.shape
    xs, ys, ks = [], [], []
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        neighbour = padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
        rows, cols = np.nonzero((labels > 0) & (neighbour != labels))
        xs.append(cols + 0.5 * dx)
        ys.append(rows + 0.5 * dy)
        ks.append(labels[rows, cols] - 1)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ks)


def _fit_circles(x: np.ndarray, y: np.ndarray, k: np.ndarray, n: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Kåsa least-squares circle of the points of each of ``n`` groups ``k``, all at once (the
    fit of :func:`momo_geo.vectorize.fit_circle`, on coordinates centred per group): centre x,
    centre y, radius and a bool ``ok`` (enough points, not collinear)."""
    m = np.bincount(k, minlength=n).astype(np.float64)
    safe = np.maximum(m, 1)
    mx, my = np.bincount(k, x, n) / safe, np.bincount(k, y, n) / safe
    u, v = x - mx[k], y - my[k]
    w = u * u + v * v
    suu, svv, suv = (np.bincount(k, a * b, n) for a, b in ((u, u), (v, v), (u, v)))
    suw, svw, sw = np.bincount(k, u * w, n), np.bincount(k, v * w, n), np.bincount(k, w, n)
    det = suu * svv - suv * suv
    ok = (m >= _MIN_FIT_POINTS) & (det > 1e-9 * (suu + svv) ** 2)
    det = np.where(ok, det, 1.0)
    a = (svv * suw - suv * svw) / (2 * det)  # centre offset: u² + v² = 2a u + 2b v + c
    b = (suu * svw - suv * suw) / (2 * det)
    r2 = sw / safe + a * a + b * b
    ok &= r2 > 0
    return mx + a, my + b, np.sqrt(np.maximum(r2, 0.0)), ok


def mask_to_circles(mask: np.ndarray, positive: int = 1) -> Circles:
    """The predicted craters of a class mask: one fitted circle per connected component
    (4-connected, holes filled), as the module docstring describes."""
    from scipy import ndimage

    filled = ndimage.binary_fill_holes(np.asarray(mask) == positive)
    labels, n = ndimage.label(filled)
    if n == 0:
        return Circles.of([], [], [])
    x, y, k = _outline_points(labels)
    cx, cy, radius, ok = _fit_circles(x, y, k, n)
    rows, cols = np.nonzero(labels)
    lab = labels[rows, cols] - 1
    area = np.bincount(lab, minlength=n).astype(np.float64)
    cx = np.where(ok, cx, np.bincount(lab, cols, n) / area)  # else: equal-area circle
    cy = np.where(ok, cy, np.bincount(lab, rows, n) / area)
    radius = np.where(ok, radius, np.sqrt(area / np.pi))
    radial = np.hypot(x - cx[k], y - cy[k]) - radius[k]
    m = np.bincount(k, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        residual = np.sqrt(np.bincount(k, radial * radial, n) / m) / radius
    return Circles(cx, cy, 2 * radius, residual)


def _pairs(pred: Circles, truth: Circles) -> tuple[np.ndarray, np.ndarray]:
    """(truth index, prediction index) of every pair within the distance and ratio rules."""
    from scipy.spatial import cKDTree

    if not len(pred) or not len(truth):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    tree = cKDTree(np.column_stack([pred.x, pred.y]))
    near = tree.query_ball_point(np.column_stack([truth.x, truth.y]),
                                 MAX_CENTRE_DISTANCE * truth.diameter)
    t = np.repeat(np.arange(len(truth)), [len(n) for n in near])
    p = np.fromiter((j for n in near for j in n), np.int64, count=len(t))
    ratio = pred.diameter[p] / np.maximum(truth.diameter[t], 1e-9)
    ok = (ratio >= DIAMETER_RATIO[0]) & (ratio <= DIAMETER_RATIO[1])
    return t[ok], p[ok]


def _assign(pred: Circles, truth: Circles) -> list[tuple[int, int]]:
    """One-to-one (truth, pred) matches: most pairs, then least total relative distance.

    Solved by the Hungarian algorithm on each connected group of candidate pairs, so the cost
    stays small on images with thousands of craters.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    t, p = _pairs(pred, truth)
    if not len(t):
        return []
    relative = np.hypot(pred.x[p] - truth.x[t], pred.y[p] - truth.y[t]) / np.maximum(
        truth.diameter[t], 1e-9)
    n_t = len(truth)
    graph = coo_matrix((np.ones(len(t)), (t, n_t + p)), shape=(n_t + len(pred),) * 2)
    _, group = connected_components(graph, directed=False)
    matches = []
    for g in np.unique(group[t]):
        sel = group[t] == g
        rows, r_idx = np.unique(t[sel], return_inverse=True)
        cols, c_idx = np.unique(p[sel], return_inverse=True)
        # A missing pair costs more than all allowed pairs together: cardinality comes first.
        cost = np.full((len(rows), len(cols)), 1.0 + MAX_CENTRE_DISTANCE * sel.sum())
        allowed = np.zeros(cost.shape, bool)
        cost[r_idx, c_idx] = relative[sel]
        allowed[r_idx, c_idx] = True
        r, c = linear_sum_assignment(cost)
        matches += [(int(rows[i]), int(cols[j])) for i, j in zip(r, c, strict=True)
                    if allowed[i, j]]
    return matches


@dataclass(frozen=True)
class CraterMatch:
    """Object-level outcome in one image."""

    tp: int
    fp: int
    fn: int
    ignored_truth: int
    ignored_pred: int
    truth_diameter: np.ndarray
    """Diameters (px) of the scored labelled craters."""
    truth_found: np.ndarray
    """Bool per scored labelled crater: matched."""
    pred_residual: np.ndarray
    """Fit residual of scored predictions."""
    pred_matched: np.ndarray
    """Bool per scored prediction: a true positive."""
    pairs: np.ndarray
    """``(tp, 2)`` matches: index among the labelled craters >= the minimum diameter, index
    among the predictions."""


def match_craters(pred: Circles, truth: Circles,
                  min_diameter: float = MIN_DIAMETER_PX) -> CraterMatch:
    """Score one image's predicted craters against its labelled craters (rule in the module
    docstring)."""
    small = truth.diameter < min_diameter
    scored, ignored = truth.subset(~small), truth.subset(small)
    pairs = _assign(pred, scored)
    pred_matched = np.zeros(len(pred), bool)
    truth_found = np.zeros(len(scored), bool)
    for t, p in pairs:
        truth_found[t] = pred_matched[p] = True
    unmatched = ~pred_matched
    ignore_pred = np.zeros(len(pred), bool)
    if len(ignored) and unmatched.any():
        ignore_pred[np.nonzero(unmatched)[0][_pairs(pred.subset(unmatched), ignored)[1]]] = True
    keep = ~ignore_pred
    tp = len(pairs)
    return CraterMatch(tp=tp, fp=int(keep.sum()) - tp, fn=len(scored) - tp,
                       ignored_truth=int(small.sum()), ignored_pred=int(ignore_pred.sum()),
                       truth_diameter=scored.diameter, truth_found=truth_found,
                       pred_residual=pred.residual[keep], pred_matched=pred_matched[keep],
                       pairs=np.asarray(pairs, dtype=np.int64).reshape(-1, 2))


def _prf(tp: float, fp: float, fn: float) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {"crater_precision": precision, "crater_recall": recall, "crater_f1": f1}


def crater_metrics(counts: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of crater detection from per-image ``(tp, fp, fn)`` rows, pooled
    over images."""
    return _prf(*np.asarray(counts, dtype=np.float64).reshape(-1, 3).sum(axis=0))


def recall_by_diameter(matches: Sequence[CraterMatch], gsd: float | None = None,
                       edges: Sequence[float] = DIAMETER_BINS_PX) -> list[dict[str, Any]]:
    """Recall per labelled-diameter bin ``[lo, hi)`` px, with the bin in metres when the GSD
    (m/px) is known; bins below the first edge are not scored."""
    diameters = np.concatenate([m.truth_diameter for m in matches] or [np.zeros(0)])
    found = np.concatenate([m.truth_found for m in matches] or [np.zeros(0, bool)])
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (diameters >= lo) & (diameters < hi)
        n, tp = int(inside.sum()), int(found[inside].sum())
        row: dict[str, Any] = {"min_px": lo, "max_px": None if math.isinf(hi) else hi,
                               "n": n, "tp": tp, "recall": tp / n if n else None}
        if gsd:
            row["min_m"] = lo * gsd
            row["max_m"] = None if math.isinf(hi) else hi * gsd
        rows.append(row)
    return rows


def crater_report(matches: Sequence[CraterMatch], gsd: float | None = None,
                  min_diameter: float = MIN_DIAMETER_PX, n_boot: int = N_BOOT,
                  seed: int = 0) -> dict[str, Any]:
    """Crater detection metrics, counts, recall by diameter and bootstrap intervals."""
    per_image = np.array([(m.tp, m.fp, m.fn, m.ignored_truth, m.ignored_pred)
                          for m in matches], dtype=np.int64).reshape(-1, 5)
    counts = per_image.sum(axis=0)
    residual = np.concatenate([m.pred_residual for m in matches] or [np.zeros(0)])
    matched = np.concatenate([m.pred_matched for m in matches] or [np.zeros(0, bool)])
    result: dict[str, Any] = dict(crater_metrics(per_image[:, :3]))
    result.update({
        "crater_tp": int(counts[0]), "crater_fp": int(counts[1]), "crater_fn": int(counts[2]),
        "crater_ignored_truth": int(counts[3]), "crater_ignored_pred": int(counts[4]),
        "crater_min_diameter_px": float(min_diameter), "gsd_m": gsd,
        "crater_fit_residual_median_tp": _median(residual[matched]),
        "crater_fit_residual_median_fp": _median(residual[~matched]),
        "crater_recall_by_diameter": recall_by_diameter(matches, gsd),
    })
    if len(matches):
        result.update(bootstrap_ci(len(matches), lambda i: crater_metrics(per_image[i, :3]),
                                   n_boot, seed=seed))
    return result


def _median(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else None


# ----------------------------------------------------------------------------- intervals


def bootstrap_ci(n: int, statistic: Callable[[np.ndarray], dict[str, float]],
                 n_boot: int = N_BOOT, alpha: float = 0.05,
                 seed: int = 0) -> dict[str, list[float]]:
    """Percentile intervals of every metric ``statistic(indices)`` returns, resampling items."""
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        for key, value in statistic(rng.integers(0, n, size=n)).items():
            samples.setdefault(key, []).append(value)
    return {f"{key}_ci": [float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))]
            for key, v in samples.items()}


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int,
                          n_boot: int = N_BOOT, seed: int = 0,
                          names: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics plus bootstrap intervals for tile classification; with ``names``, also
    ``per_class`` (class name -> F1, precision, recall, support)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    result: dict[str, Any] = {"n": int(len(y_true))}
    result.update(f1_scores(cm))
    if names is not None:
        result["per_class"] = per_class_scores(cm, names)
    if len(y_true):
        result.update(bootstrap_ci(len(y_true), lambda i: classification_metrics(
            y_true[i], y_pred[i], n_classes), n_boot, seed=seed))
    return result


def segmentation_report(counts: np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
                        pixels: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics plus bootstrap intervals (over images) for crater segmentation; ``pixels`` (valid
    pixels per image) adds the background-class IoU and the two-class mIoU
    (:func:`segmentation_metrics`)."""
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 3)
    px = None if pixels is None else np.asarray(pixels, dtype=np.int64).reshape(-1)
    result: dict[str, Any] = {"n": int(len(counts))}
    result.update(segmentation_metrics(counts, px))
    if len(counts):
        result.update(bootstrap_ci(len(counts), lambda i: segmentation_metrics(
            counts[i], None if px is None else px[i]), n_boot, seed=seed))
    return result
