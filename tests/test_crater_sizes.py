"""training/crater_sizes.py: outline growth and the per-size report on drawn craters."""

from __future__ import annotations

import numpy as np

from momo_geo.datasets.craters import circles_to_mask


def _disc(shape: tuple[int, int], x: float, y: float, d: float) -> np.ndarray:
    rows, cols = np.indices(shape)
    return (cols - x) ** 2 + (rows - y) ** 2 <= (d / 2) ** 2


def test_growth_widens_each_crater_by_its_own_size() -> None:
    from training.crater_sizes import grow

    craters = _disc((200, 200), 50, 50, 20) | _disc((200, 200), 140, 140, 80)
    grown = grow(craters, 1.2)
    assert grow(craters, 1.0) is craters
    # each disc grows by 0.1 of its diameter on every side: 2 px and 8 px
    assert grown[50, 50 + 10 + 1] and not grown[50, 50 + 10 + 4]
    assert grown[140, 140 + 40 + 7] and not grown[140, 140 + 40 + 11]


def test_report_finds_too_small_outlines_and_the_growth_that_fixes_them() -> None:
    from training.crater_sizes import size_report

    shape = (300, 300)
    truth = np.array([[60.0, 60.0, 40.0], [200.0, 200.0, 150.0]])
    target = circles_to_mask(shape, truth[:, 0], truth[:, 1], truth[:, 2] / 2).astype(np.int64)
    mapped = _disc(shape, 60, 60, 40 / 1.2) | _disc(shape, 200, 200, 150 / 1.2)
    report = size_report([mapped], [target], [truth])
    bins = {b["min_px"]: b for b in report["bins"]}
    assert bins[32.0]["matched"] == bins[32.0]["craters"] == 1 and bins[128.0]["matched"] == 1
    assert abs(bins[128.0]["diameter_ratio"] - 1 / 1.2) < 0.02
    assert abs(bins[128.0]["covered"] - 1 / 1.44) < 0.02
    assert report["growth"]["1.2"]["iou"] > report["growth"]["1"]["iou"] + 0.2
    assert report["growth"]["1"]["crater_f1"] == 1.0


def test_report_says_what_mapping_each_size_whole_is_worth() -> None:
    from training.crater_sizes import size_report

    shape = (300, 300)
    truth = np.array([[40.0, 40.0, 20.0], [180.0, 180.0, 200.0]])
    target = circles_to_mask(shape, truth[:, 0], truth[:, 1], truth[:, 2] / 2).astype(np.int64)
    mapped = _disc(shape, 40, 40, 20)  # the small crater whole, the large one missed
    bins = {b["min_px"]: b for b in size_report([mapped], [target], [truth])["bins"]}
    assert bins[8.0]["iou_if_whole_from_here"] == 1.0
    assert bins[128.0]["iou_if_whole_from_here"] == 1.0
    assert bins[256.0]["iou_if_whole_from_here"] < 0.05  # no labelled crater that large
    assert bins[128.0]["covered"] == 0.0 and bins[8.0]["covered"] == 1.0
