"""``training/selection_noise.py``: the paired bootstrap that says whether the selection images
can tell two crater arms apart."""

from __future__ import annotations

import numpy as np

from training import selection_noise


def counts(rng: np.random.Generator, n: int, hit: float) -> np.ndarray:
    """Per image: pixel (tp, fp, fn) and crater (tp, fp, fn) of an arm that finds ``hit`` of
    each image's craters and pixels."""
    truth_px = rng.integers(500, 5000, size=n)
    truth_n = rng.integers(5, 30, size=n)
    tp_px, tp_n = (truth_px * hit).astype(int), (truth_n * hit).astype(int)
    return np.stack([tp_px, truth_px // 10, truth_px - tp_px,
                     tp_n, truth_n // 5, truth_n - tp_n], axis=1)


def test_the_criterion_is_crater_f1_plus_pooled_pixel_iou() -> None:
    rows = np.array([[6, 2, 2, 3, 1, 0], [4, 0, 6, 1, 0, 1]])
    iou = 10 / (10 + 2 + 8)
    f1 = 2 * 4 / (2 * 4 + 1 + 1)
    assert np.isclose(selection_noise.criterion(rows), f1 + iou)


def test_paired_intervals_tell_a_better_arm_from_a_copy_and_say_how_sure() -> None:
    rng = np.random.default_rng(0)
    reference = counts(rng, 40, 0.6)
    better = reference.copy()
    better[:, 0] += better[:, 2] // 2  # half the missed pixels found, on every image
    better[:, 2] -= better[:, 2] // 2
    folders = np.array(["themis"] * 39 + ["ctx"])
    rows = selection_noise.paired_intervals({"ref": reference, "copy": reference.copy(),
                                             "better": better}, folders, n_boot=200)
    ref, copy, up = rows
    assert ref["difference"] == 0 and ref["difference_ci"] == [0.0, 0.0]
    assert copy["difference_ci"] == [0.0, 0.0] and copy["higher_share"] == 0.0
    assert up["difference"] > 0 and up["difference_ci"][0] > 0 and up["higher_share"] == 1.0
    noisy = counts(np.random.default_rng(1), 40, 0.6)  # another arm as good, image by image
    row = selection_noise.paired_intervals({"ref": reference, "other": noisy}, folders,
                                           n_boot=200)[1]
    assert row["difference_ci"][0] < row["difference"] < row["difference_ci"][1]


def test_images_needed_grows_as_the_square_of_the_resolution_asked() -> None:
    assert selection_noise.images_needed(0.04, 62, 0.04) == 62
    assert selection_noise.images_needed(0.04, 62, 0.02) == 248
    assert selection_noise.images_needed(0.04, 62, 0.01) == 992


def test_each_folder_is_also_read_alone_by_iou_and_crater_f1() -> None:
    rng = np.random.default_rng(2)
    reference = counts(rng, 12, 0.5)
    better = reference.copy()
    better[:6, 0] += better[:6, 2]  # every missed pixel of the first folder found
    better[:6, 2] = 0
    folders = np.array(["themis"] * 6 + ["ctx"] * 6)
    out = selection_noise.by_folder({"ref": reference, "better": better}, folders, n_boot=100)
    assert set(out) == {"themis", "ctx"}
    themis = out["themis"]["iou"]
    assert themis[1]["value"] > themis[0]["value"] and themis[1]["higher_share"] == 1
    assert out["ctx"]["iou"][1]["difference"] == 0 and out["ctx"]["crater_f1"][1]["difference"] == 0


def test_landmark_arms_are_resampled_by_whole_products() -> None:
    # Ten products of ten crops; the reference gets one product wrong, the other arm none.
    # Crops of one observation look alike, so the evidence is one product, not ten crops:
    # resampling products leaves resamples without it (no difference), crops hardly any.
    truth = np.repeat(np.arange(10) % 3, 10)
    products = np.repeat([f"ESP_{k:06d}" for k in range(10)], 10)
    wrong = truth.copy()
    wrong[:10] = (truth[:10] + 1) % 3
    score = selection_noise.landmark_criterion(["other", "crater", "dark_dune"])
    arms = {"ref": np.column_stack([truth, wrong]), "better": np.column_stack([truth, truth])}
    assert score(arms["better"]) == 2.0 and score(arms["ref"]) < 2.0
    folders = np.array(["hirise_landmarks"] * 100)
    by_product = selection_noise.paired_intervals(arms, folders, score, n_boot=400,
                                                  units=products)[1]
    by_crop = selection_noise.paired_intervals(arms, folders, score, n_boot=400)[1]
    assert by_product["difference_ci"][0] == 0.0 and 0.5 < by_product["higher_share"] < 0.8
    assert by_crop["higher_share"] > 0.99


def noise_crops(root, spider_product: bool = False):  # noqa: ANN001, ANN201
    """48 random crops of eight products labelled crater or other at random (the pixels do
    not tell), and with ``spider_product`` six more of a ninth product labelled spider."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(3)
    rows = ["file,label,product_id"]
    for i in range(54 if spider_product else 48):
        pixels = rng.integers(0, 255, (32, 32)).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"c{i}.jpg")
        label = "spider" if i >= 48 else rng.choice(["crater", "other"])
        rows.append(f"c{i}.jpg,{label},P{i % 8 if i < 48 else 8}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_out_of_fold_crops_are_what_each_member_predicted_on_products_it_never_saw(
        tmp_path, monkeypatch) -> None:
    # A tiny cross-fitted arm on crops whose labels the pixels do not tell, so its two
    # members disagree: rebuilt from the bundle, each training crop's class is the one the
    # member that never saw its product gave it during training.
    from momo_geo.bundle import load_bundle
    from momo_geo.training import members
    from momo_geo.training.finetune import Recipe, finetune

    root = noise_crops(tmp_path / "hirise_landmarks")
    seen = []
    train = members.train_members

    def remember(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = train(*args, **kwargs)
        seen.append(out.held_out["none"])
        return out

    monkeypatch.setattr(members, "train_members", remember)
    recipe = Recipe(architecture="cnn_cls", input_size=16, width=4, epochs=2, batch_size=4,
                    folds=2, select_fraction=0.25, value_scaling="scene_percentile")
    path, _ = finetune("landmarks", str(root), tmp_path / "lm.bundle", recipe=recipe)
    crops, classes = selection_noise.out_of_fold_crops(path, tmp_path)
    assert len(classes) == load_bundle(path).card.training["calibration"]["training_crops"]
    assert (classes == seen[0].argmax(axis=1)).all()


def test_out_of_fold_crops_keep_the_classes_an_arm_leaves_unmapped(tmp_path) -> None:
    # An arm that leaves spider (one product) unmapped is still scored on the spider crops,
    # as an arm that maps spider is: both are compared on the same crops.
    from momo_geo.bundle import load_bundle
    from momo_geo.training.finetune import Recipe, finetune

    root = noise_crops(tmp_path / "hirise_landmarks", spider_product=True)
    recipe = Recipe(architecture="cnn_cls", input_size=16, width=4, epochs=1, batch_size=4,
                    folds=2, select_fraction=0.0, value_scaling="scene_percentile",
                    min_class_products=2)
    path, _ = finetune("landmarks", str(root), tmp_path / "lm.bundle", recipe=recipe)
    card = load_bundle(path).card
    assert "spider" in card.unmapped_classes and "crater" not in card.unmapped_classes
    crops, classes = selection_noise.out_of_fold_crops(path, tmp_path)
    spider = card.class_names.index("spider")
    assert len(classes) == len(crops.targets) and (np.asarray(crops.targets) == spider).sum() == 6
    assert not (classes == spider).any()  # never predicted, yet scored


def test_out_of_fold_is_refused_for_crater_arms(capsys) -> None:
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        selection_noise.main(["arm.bundle", "--split", "oof"])
    assert exit_info.value.code == 2
    assert "--split oof needs --task landmarks" in capsys.readouterr().err
