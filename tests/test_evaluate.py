"""Metrics against hand-computed values; bootstrap intervals; the evaluate CLI's errors."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from momo_geo.cli import cli
from momo_geo.evaluate import (
    bootstrap_ci,
    classification_metrics,
    classification_report,
    pixel_counts,
    segmentation_metrics,
    segmentation_report,
)


def test_f1_scores_by_hand() -> None:
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    m = classification_metrics(y_true, y_pred, 3)
    f1 = np.array([2 * 2 / (3 + 2), 2 * 1 / (2 + 2), 2 * 1 / (1 + 2)])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1_macro"] == pytest.approx(f1.mean())
    assert m["f1_weighted"] == pytest.approx((f1 * [3, 2, 1]).sum() / 6)


def test_macro_f1_skips_classes_absent_from_truth_and_prediction() -> None:
    m = classification_metrics([0, 1], [0, 1], 8)
    assert m["f1_macro"] == 1.0 and m["f1_weighted"] == 1.0


def test_dataset_iou_pools_pixels_while_per_image_mean_weighs_images() -> None:
    big_truth = np.zeros((10, 10), np.uint8)
    big_truth[:5] = 1  # 50 crater pixels, all found
    small_truth = np.zeros((10, 10), np.uint8)
    small_truth[0, 0] = 1  # 1 crater pixel, missed; 1 false alarm
    small_pred = np.zeros((10, 10), np.uint8)
    small_pred[9, 9] = 1
    counts = np.array([pixel_counts(big_truth, big_truth), pixel_counts(small_pred, small_truth)])
    assert counts.tolist() == [[50, 0, 0], [0, 1, 1]]
    m = segmentation_metrics(counts)
    assert m["iou"] == pytest.approx(50 / 52)
    assert m["iou_per_image_mean"] == pytest.approx(0.5)
    assert m["f1_pixel"] == pytest.approx(100 / 102)


def test_empty_images_do_not_count_in_the_per_image_mean() -> None:
    m = segmentation_metrics(np.array([[3, 1, 0], [0, 0, 0]]))
    assert m["iou_per_image_mean"] == pytest.approx(0.75)


def test_nodata_pixels_are_left_out() -> None:
    pred = np.ones((4, 4), np.uint8)
    truth = np.ones((4, 4), np.uint8)
    valid = np.zeros((4, 4), bool)
    valid[:2] = True
    assert pixel_counts(pred, truth, valid=valid) == (8, 0, 0)


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    p = np.where(rng.random(300) < 0.7, y, rng.integers(0, 3, 300))
    a = classification_report(y, p, 3, n_boot=300)
    b = classification_report(y, p, 3, n_boot=300)
    assert a == b
    lo, hi = a["accuracy_ci"]
    assert lo < a["accuracy"] < hi
    assert hi - lo < 0.15
    counts = rng.integers(0, 50, (40, 3))
    seg = segmentation_report(counts, n_boot=300)
    assert seg["iou_ci"][0] <= seg["iou"] <= seg["iou_ci"][1]


def test_bootstrap_of_a_constant_is_a_point() -> None:
    ci = bootstrap_ci(10, lambda i: {"m": 1.0}, n_boot=20)
    assert ci == {"m_ci": [1.0, 1.0]}


def test_evaluate_cli_refuses_bad_input(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", "--task", "moons", "--data", str(tmp_path)])
    assert result.exit_code != 0
    result = runner.invoke(cli, ["evaluate", "--task", "landmarks", "--data",
                                 str(tmp_path / "missing"), "--model",
                                 str(tmp_path / "none.bundle")])
    assert result.exit_code != 0
    assert "no such model bundle" in str(result.exception)
