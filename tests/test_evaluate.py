"""Metrics against hand-computed values (pixels, crater objects, classes); bootstrap intervals;
the evaluate CLI on real folders laid out like ../shared/data, and its errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from momo_geo.cli import cli
from momo_geo.datasets.craters import circles_to_mask
from momo_geo.datasets.landmarks import LANDMARK_CLASSES
from momo_geo.evaluate import (
    bootstrap_ci,
    classification_metrics,
    classification_report,
    default_split,
    pixel_counts,
    segmentation_metrics,
    segmentation_report,
)
from momo_geo.metrics import Circles, crater_report, mask_to_circles, match_craters
from momo_geo.vectorize import fit_circle


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
    # the MOMO authors' convention: an empty/empty image is a correct "no crater", 1.0
    assert m["iou_per_image_mean_authors"] == pytest.approx((0.75 + 1.0) / 2)
    assert "miou_with_background" not in m  # needs the pixel counts


def test_miou_with_background_averages_the_two_classes_pooled() -> None:
    """Two 10-pixel images: (tp, fp, fn) = (3, 1, 0) and (0, 0, 2). Pooled: crater IoU
    3 / 6 = 0.5; background tn = 20 - 6 = 14, IoU 14 / (14 + 1 + 2) = 14 / 17; the mIoU over
    {background, crater} is their mean."""
    m = segmentation_metrics(np.array([[3, 1, 0], [0, 0, 2]]), pixels=np.array([10, 10]))
    assert m["iou"] == pytest.approx(0.5)
    assert m["iou_background"] == pytest.approx(14 / 17)
    assert m["miou_with_background"] == pytest.approx((0.5 + 14 / 17) / 2)
    assert m["iou_per_image_mean_authors"] == pytest.approx((0.75 + 0.0) / 2)
    report = segmentation_report(np.array([[3, 1, 0], [0, 0, 2]]), n_boot=20,
                                 pixels=np.array([10, 10]))
    assert report["miou_with_background"] == pytest.approx(m["miou_with_background"])
    assert len(report["miou_with_background_ci"]) == 2


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
                                 str(tmp_path / "missing")])
    assert result.exit_code != 0
    assert "missing: no such" in str(result.exception)
    result = runner.invoke(cli, ["evaluate", "--task", "landmarks", "--data", str(tmp_path),
                                 "--model", str(tmp_path / "none.bundle")])
    assert result.exit_code != 0
    assert "no such model bundle" in str(result.exception)
    result = runner.invoke(cli, ["evaluate", "--task", "landmarks", "--data", str(tmp_path)])
    assert result.exit_code != 0
    assert "labels.csv: no such file" in str(result.exception)


# ----------------------------------------------------------------------------- crater objects


def disc_mask(shape, circles) -> np.ndarray:
    """uint8 mask of (x, y, diameter) discs, drawn as the crater datasets draw them."""
    x, y, d = np.asarray(circles, dtype=float).reshape(-1, 3).T
    return circles_to_mask(shape, x, y, d / 2)


def test_predicted_craters_are_fitted_circles_also_when_cut_by_the_border() -> None:
    found = mask_to_circles(disc_mask((120, 120), [(40, 50, 30), (115, 60, 40)]))
    order = np.argsort(found.x)
    assert found.x[order] == pytest.approx([40, 115], abs=0.5)
    assert found.y[order] == pytest.approx([50, 60], abs=0.5)
    # the cut disc is fitted from its visible rim, not shrunk to its visible area
    assert found.diameter[order] == pytest.approx([30, 40], abs=1.0)
    assert (found.residual < 0.05).all()


def test_the_fit_is_the_circle_fit_of_vectorize_on_the_outline() -> None:
    from momo_geo.metrics import _outline_points

    mask = disc_mask((64, 64), [(30, 28, 21)])
    mask[20:24, 36:44] = 1  # not a circle: the fit must still equal the reference fit
    x, y, _ = _outline_points(mask.astype(np.int32))
    cx, cy, r = fit_circle(np.column_stack([x, y]))
    found = mask_to_circles(mask)
    assert len(found) == 1
    assert (found.x[0], found.y[0], found.diameter[0]) == pytest.approx((cx, cy, 2 * r))
    assert found.residual[0] > 0.02


def test_a_predicted_rim_ring_is_one_crater_and_specks_fall_back_to_equal_area() -> None:
    ring = disc_mask((80, 80), [(40, 40, 40)]) - disc_mask((80, 80), [(40, 40, 30)])
    ring[5, 70] = 1
    found = mask_to_circles(ring)
    assert sorted(found.diameter.round(1)) == pytest.approx([2 / np.sqrt(np.pi), 40], abs=0.6)


def test_match_distance_and_diameter_ratio_rules() -> None:
    truth = Circles.of([100], [100], [20])

    def tp(x, d) -> int:
        return match_craters(Circles.of([x], [100], [d]), truth).tp

    assert tp(100 + 9.9, 20) == 1 and tp(100 + 10.1, 20) == 0  # 0.5 x labelled diameter
    assert tp(100, 10) == 1 and tp(100, 9.8) == 0  # ratio >= 0.5
    assert tp(100, 40) == 1 and tp(100, 40.2) == 0  # ratio <= 2


def test_matching_is_one_to_one_and_finds_the_most_pairs() -> None:
    # two predictions on one crater: one hit, one false alarm
    m = match_craters(Circles.of([50, 51], [50, 50], [20, 20]), Circles.of([50], [50], [20]))
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    # greedy-by-distance would give P1 to A (nearest) and leave B unmatched: 1 pair, not 2
    truth = Circles.of([0, 14], [0, 0], [20, 20])  # A, B
    pred = Circles.of([6, -5], [0, 0], [20, 20])  # P1 near both, P2 near A only
    m = match_craters(pred, truth)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert sorted(map(tuple, m.pairs.tolist())) == [(0, 1), (1, 0)]


def test_small_craters_are_ignored_and_so_are_predictions_that_match_only_them() -> None:
    truth = Circles.of([20, 200], [20, 200], [6, 30])  # 6 px: below the 8 px minimum
    pred = Circles.of([20, 21, 100, 200], [20, 20, 100, 200], [7, 9, 12, 30])
    m = match_craters(pred, truth, min_diameter=8)
    # the 7 and 9 px ones on the ignored crater are ignored; the 12 px one is a false alarm
    assert (m.tp, m.fp, m.fn, m.ignored_truth, m.ignored_pred) == (1, 1, 0, 1, 2)
    lenient = match_craters(pred, truth, min_diameter=0)
    assert (lenient.tp, lenient.fp, lenient.fn) == (2, 2, 0)


def test_predictions_count_whatever_their_size() -> None:
    # a 7.5 px outline of a 9 px labelled crater is a hit, though below the 8 px minimum;
    # a 3 px speck far from any labelled crater is a false alarm
    truth = Circles.of([50], [50], [9])
    m = match_craters(Circles.of([50, 150], [50, 150], [7.5, 3]), truth, min_diameter=8)
    assert (m.tp, m.fp, m.fn, m.ignored_pred) == (1, 1, 0, 0)


def test_crater_report_counts_bins_and_intervals() -> None:
    truth = Circles.of([20, 60, 100, 150], [20, 60, 100, 150], [10, 20, 40, 100])
    hit = Circles.of([20, 100, 300], [20, 100, 300], [10, 40, 12])
    miss = Circles.of([], [], [])
    matches = [match_craters(hit, truth), match_craters(miss, truth)] * 5
    r = crater_report(matches, gsd=6.0, n_boot=200)
    assert (r["crater_tp"], r["crater_fp"], r["crater_fn"]) == (10, 5, 30)
    assert r["crater_precision"] == pytest.approx(10 / 15)
    assert r["crater_recall"] == pytest.approx(10 / 40)
    assert r["crater_f1"] == pytest.approx(20 / 55)
    lo, hi = r["crater_f1_ci"]
    assert lo <= r["crater_f1"] <= hi and lo < hi
    assert r == crater_report(matches, gsd=6.0, n_boot=200)
    bins = {row["min_px"]: row for row in r["crater_recall_by_diameter"]}
    assert bins[8.0]["n"] == 10 and bins[8.0]["recall"] == 0.5
    assert bins[16.0]["recall"] == 0.0 and bins[32.0]["recall"] == 0.5
    assert bins[64.0] == {"min_px": 64.0, "max_px": 128.0, "n": 10, "tp": 0, "recall": 0.0,
                          "min_m": 384.0, "max_m": 768.0}
    assert bins[256.0]["recall"] is None and bins[256.0]["max_m"] is None


def test_per_class_f1_and_support_by_hand() -> None:
    r = classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], 3, n_boot=0,
                              names=["a", "b", "c"])
    assert r["per_class"]["a"] == {"f1": pytest.approx(0.8), "precision": 1.0,
                                   "recall": pytest.approx(2 / 3), "support": 3}
    assert r["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert r["per_class"]["c"]["support"] == 1
    absent = classification_report([0, 1], [0, 1], 3, n_boot=0, names=["a", "b", "c"])
    assert absent["per_class"]["c"] == {"f1": None, "precision": None, "recall": None,
                                        "support": 0}


def test_auto_split_is_val_for_the_reference_folders_and_all_for_a_users_own(tmp_path) -> None:
    assert default_split("themis-craters", tmp_path / "themis_craters") == "val"
    assert default_split("landmarks", tmp_path / "hirise_landmarks") == "val"
    assert default_split("themis-craters", tmp_path / "my_crops") == "all"
    assert default_split("ctx-craters", tmp_path / "themis_craters") == "all"


# ----------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def two_themis_crops(shared_data, tmp_path_factory) -> Path:
    """A user's own folder: two real THEMIS crops with their labels, no split of its own."""
    root = tmp_path_factory.mktemp("eval") / "my_crops"
    source = shared_data / "themis_craters"
    for name in ("crater12", "crater100"):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(exist_ok=True)
        shutil.copy(next((source / "images").glob(f"{name}.*")), root / "images")
        shutil.copy(source / "labels" / f"{name}.txt", root / "labels")
    return root


def evaluate_cli(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["evaluate", *args, "--json", "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.shared_data
@pytest.mark.usefixtures("one_torch_thread")
def test_evaluate_a_users_themis_folder_whole_through_the_mapping_engine(two_themis_crops):
    from PIL import Image

    from momo_geo.datasets.craters import boxes_to_mask, read_yolo_boxes
    from momo_geo.inference import predict_array

    data = evaluate_cli("--task", "themis-craters", "--data", str(two_themis_crops))
    assert data["split"] == "all" and data["n"] == 2 and data["gsd_m"] == 100.0
    counts, labelled = np.zeros(3, int), 0
    for name in ("crater100", "crater12"):  # independently: the engine's map against the boxes
        image = np.asarray(Image.open(next((two_themis_crops / "images").glob(f"{name}.*")))
                           .convert("L"))
        boxes = read_yolo_boxes(two_themis_crops / "labels" / f"{name}.txt", 416, 416)
        truth = boxes_to_mask(image.shape, boxes)
        classes, _ = predict_array("craters", image, device="cpu")
        counts += pixel_counts(classes, truth)
        labelled += int((np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
                         >= 8).sum())
    assert data["iou"] == pytest.approx(counts[0] / counts.sum())
    tp, fp, fn = data["crater_tp"], data["crater_fp"], data["crater_fn"]
    assert tp + fn == labelled  # no box here is cut by the border: every label is scored
    assert data["crater_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert sum(row["n"] for row in data["crater_recall_by_diameter"]) == labelled
    assert data["crater_recall_by_diameter"][0]["min_m"] == 800.0
    again = evaluate_cli("--task", "themis-craters", "--data", str(two_themis_crops),
                         "--split", "all")
    assert again == data


@pytest.mark.shared_data
@pytest.mark.usefixtures("one_torch_thread")
def test_per_image_crater_scores_pool_to_what_evaluate_reports(two_themis_crops) -> None:
    from momo_geo.bundle import load_bundle
    from momo_geo.evaluate import load_task_data, score_crater_images
    from momo_geo.inference.engine import Predictor

    data = load_task_data("themis-craters", str(two_themis_crops), "all")
    scores = score_crater_images(Predictor(load_bundle("craters")), data)
    assert scores.counts.shape == (2, 3) and scores.pixels.tolist() == [416 * 416] * 2
    labelled = [int((np.asarray(c).reshape(-1, 3)[:, 2] >= 8).sum()) for c in data.circles]
    assert [m.tp + m.fn for m in scores.matches] == labelled  # one row per image, in order
    report = evaluate_cli("--task", "themis-craters", "--data", str(two_themis_crops))
    tp, fp, fn = scores.counts.sum(axis=0)
    assert report["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert report["crater_tp"] == sum(m.tp for m in scores.matches)
    assert report["crater_fp"] == sum(m.fp for m in scores.matches)


@pytest.mark.shared_data
def test_a_split_without_images_is_one_clear_error(two_themis_crops) -> None:
    result = CliRunner().invoke(cli, ["evaluate", "--task", "themis-craters", "--data",
                                      str(two_themis_crops), "--split", "val"])
    assert result.exit_code != 0
    assert "split" in str(result.exception) and "empty" in str(result.exception)


@pytest.mark.shared_data
@pytest.mark.usefixtures("one_torch_thread")
def test_landmark_json_has_f1_per_class(shared_data, tmp_path) -> None:
    source = shared_data / "hirise_landmarks"
    table = pd.read_csv(source / "labels.csv")
    common = table["label"].isin(["other", "crater", "dark_dune", "bright_dune", "slope_streak"])
    picked = table[common].groupby("label").head(3).sort_values("file")
    root = tmp_path / "my_landmarks"
    (root / "images").mkdir(parents=True)
    for name in picked["file"]:
        shutil.copy(source / "images" / name, root / "images")
    picked.to_csv(root / "labels.csv", index=False)
    data = evaluate_cli("--task", "landmarks", "--data", str(root))
    assert data["split"] == "all" and data["n"] == len(picked)
    per_class = data["per_class"]
    assert set(per_class) == set(LANDMARK_CLASSES)
    assert {k: v["support"] for k, v in per_class.items()} == picked["label"].value_counts(
    ).reindex(LANDMARK_CLASSES, fill_value=0).to_dict()
    weighted = sum((v["f1"] or 0.0) * v["support"] for v in per_class.values()) / data["n"]
    absent = set(LANDMARK_CLASSES) - set(picked["label"])
    assert absent and all(per_class[c]["support"] == 0 for c in absent)
    assert data["f1_weighted"] == pytest.approx(weighted)
