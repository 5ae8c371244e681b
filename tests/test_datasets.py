"""Datasets: TorchGeo rasters and nodata-aware sampling, labelled real data and their splits."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import from_bounds
from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

from momo_geo import crs as mcrs
from momo_geo.datasets import (
    CTX,
    CTX_VAL_TILES,
    LANDMARK_CLASSES,
    THEMIS,
    ChipDataset,
    CTXCraters,
    HiRISE,
    HiRISELandmarks,
    THEMISCraters,
    ValidGeoSampler,
    boxes_to_mask,
    ctx_split,
    products_overlap,
    split_products,
    themis_split,
    unlabelled_chips,
    valid_fraction,
)
from momo_geo.datasets.samplers import query_bounds
from momo_geo.errors import MomoGeoError

ROOT = Path(__file__).resolve().parents[1]
MARS_EQC = CRS.from_user_input("IAU_2015:49910")

warnings.filterwarnings("ignore", message="Unable to import Axes3D")


def _write_rotated_strip(path: Path, size: int = 400, angle: float = 25.0, gsd: float = 6.0,
                         origin: tuple[float, float] = (4_560_000.0, 1_070_000.0)) -> np.ndarray:
    """A map-projected-looking product: a rotated strip of data inside a nodata (0) frame."""
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    theta = np.radians(angle)
    u = (cols - size / 2) * np.cos(theta) + (rows - size / 2) * np.sin(theta)
    v = -(cols - size / 2) * np.sin(theta) + (rows - size / 2) * np.cos(theta)
    inside = (np.abs(u) < size * 0.22) & (np.abs(v) < size * 0.45)
    data = np.random.default_rng(1).integers(1, 256, (size, size)).astype(np.uint8)
    data[~inside] = 0
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="uint8", nodata=0, crs=MARS_EQC,
                       transform=Affine(gsd, 0, origin[0], 0, -gsd, origin[1]), tiled=True,
                       blockxsize=64, blockysize=64) as dst:
        dst.write(data, 1)
    return inside


@pytest.fixture
def strip(tmp_path) -> tuple[Path, np.ndarray]:
    path = tmp_path / "ESP_012345_1850_RED.tif"
    return path, _write_rotated_strip(path)


def test_grid_sampler_never_samples_the_collar(strip):
    path, inside = strip
    dataset = HiRISE(path.parent)
    grid = GridGeoSampler(dataset, size=48, stride=24)
    fractions = [valid_fraction(dataset, q) for q in grid]
    assert min(fractions) == 0.0 and max(fractions) == 1.0  # the unfiltered grid hits the collar
    valid_grid = ValidGeoSampler(grid, dataset)             # min_valid=1.0
    chips = [dataset[q] for q in valid_grid]
    assert 0 < len(chips) == len(valid_grid) < len(grid)
    assert len(chips) == sum(f == 1.0 for f in fractions)
    for chip in chips:
        assert chip["image"].shape == (1, 48, 48)
        assert (chip["image"] > 0).all()  # no nodata pixel at all
        assert chip["valid"].all()


def test_partial_threshold_and_valid_mask_agree_with_pixels(strip):
    path, _ = strip
    dataset = HiRISE(path.parent)
    sampler = ValidGeoSampler(GridGeoSampler(dataset, size=40, stride=40), dataset,
                              min_valid=0.5)
    count = 0
    for query in sampler:
        chip = dataset[query]
        valid = chip["valid"].numpy()
        assert valid.mean() >= 0.5
        # Data values are 1..255, so "valid" must be exactly where the pixels are non-zero.
        assert np.array_equal(valid, chip["image"][0].numpy() > 0)
        count += 1
    assert count > 0


def test_random_sampler_is_refilled_with_valid_chips(strip):
    path, _ = strip
    dataset = HiRISE(path.parent)
    random = RandomGeoSampler(dataset, size=32, length=12)
    sampler = ValidGeoSampler(random, dataset)
    queries = list(sampler)
    assert len(queries) == len(sampler) == 12
    assert all(dataset[q]["image"].min() > 0 for q in queries)
    impossible = ValidGeoSampler(RandomGeoSampler(dataset, size=390, length=3), dataset,
                                 max_draws_factor=2)
    with pytest.raises(MomoGeoError, match="valid pixels"):
        list(impossible)


def test_grid_chips_on_the_real_hirise_scene(hirise_scene):
    dataset = HiRISE(hirise_scene.parent)
    assert list(dataset.index.filepath) == [str(hirise_scene)]  # not the DTMs or the DEM
    with rasterio.open(hirise_scene) as src:
        scene_crs, scene_bounds = src.crs, src.bounds
        sampler = ValidGeoSampler(GridGeoSampler(dataset, size=64, stride=64), dataset)
        assert len(sampler) > 10
        for query in list(sampler)[::4]:
            chip = dataset[query]
            assert mcrs.as_crs(chip["crs"]).equals(mcrs.as_crs(scene_crs))
            assert mcrs.body_of(chip["crs"]) == "Mars"
            (xmin, ymin, xmax, ymax), shape = query_bounds(dataset, chip["bounds"])
            assert shape == (64, 64)
            assert scene_bounds.left - 1e-6 <= xmin < xmax <= scene_bounds.right + 1e-6
            assert scene_bounds.bottom - 1e-6 <= ymin < ymax <= scene_bounds.top + 1e-6
            # The chip is exactly those pixels of the file (same grid, no resampling).
            window = from_bounds(xmin, ymin, xmax, ymax, src.transform).round_offsets()
            expected = src.read(1, window=window.round_lengths())
            assert np.array_equal(chip["image"][0].numpy(), expected.astype(np.float32))


def test_file_selection_by_name_and_metadata(tmp_path):
    _write_rotated_strip(tmp_path / "I01234002_RI.tif", size=64)
    _write_rotated_strip(tmp_path / "ESP_012345_1850_RED.tif", size=64)
    _write_rotated_strip(tmp_path / "notes.tif", size=64)
    assert [Path(p).name for p in THEMIS(tmp_path).index.filepath] == ["I01234002_RI.tif"]
    assert [Path(p).name for p in HiRISE(tmp_path).index.filepath] == [
        "ESP_012345_1850_RED.tif"]
    with pytest.raises(MomoGeoError, match="no georeferenced CTX"):
        CTX(tmp_path)
    # The bundled synthetic scene has no product ID but says "CONTEXT CAMERA" in its metadata.
    sample = ROOT / "sample_data"
    assert [Path(p).name for p in CTX(sample).index.filepath] == ["crater_field.tif"]
    with pytest.raises(MomoGeoError):
        CTX(sample, by_metadata=False)


def test_bodies_are_never_mixed(tmp_path, strip):
    path, _ = strip
    with pytest.raises(MomoGeoError, match="Earth and Mars"):
        HiRISE(path.parent, crs="EPSG:4326")
    earth = tmp_path / "earth"
    earth.mkdir()
    with rasterio.open(earth / "ESP_000001_1000_RED.tif", "w", driver="GTiff", width=8,
                       height=8, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(10, 0, 500000, 0, -10, 0)) as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
    path.rename(earth / path.name)
    with pytest.raises(MomoGeoError, match="Earth and Mars"):
        HiRISE(earth)


def test_ungeoreferenced_product_is_refused(tmp_path):
    with rasterio.open(tmp_path / "ESP_012345_1850_RED.tif", "w", driver="GTiff", width=8,
                       height=8, count=1, dtype="uint8") as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
    with pytest.raises(MomoGeoError, match="no georeference"):
        HiRISE(tmp_path)


def test_boxes_become_inscribed_circles():
    mask = boxes_to_mask((50, 60), np.array([[10.0, 10.0, 30.0, 20.0],   # 20 x 10: r = 5
                                             [55.0, 40.0, 65.0, 50.0]]))  # off the right edge
    first = mask[:, :40]
    assert first.sum() == pytest.approx(np.pi * 25, rel=0.15)
    rows, cols = np.nonzero(first)
    assert rows.mean() == pytest.approx(14.5, abs=0.1) and cols.mean() == pytest.approx(19.5,
                                                                                           abs=0.1)
    assert mask[:, 40:].sum() > 0 and mask.max() == 1


def test_boxes_cut_by_the_image_edge_are_completed():
    # A 12 px crater cut by the left edge leaves a 4 x 12 px box; its inscribed circle (r = 2)
    # would be a speck, the completed crater (r = 6, centre 2 px outside) is a large segment.
    sliver = np.array([[0.0, 10.0, 4.0, 22.0]])
    completed = boxes_to_mask((50, 60), sliver)
    inscribed = boxes_to_mask((50, 60), sliver, clipped=False)
    segment = 36 * np.arccos(2 / 6) - 2 * np.sqrt(36 - 4)  # circle r=6 beyond a chord 2 from centre
    assert completed.sum() == pytest.approx(segment, rel=0.15)
    assert inscribed.sum() < completed.sum() / 2
    assert completed[:, 4:].sum() == 0 and completed[11:21, 0].all()
    # A crater bigger than the image (box = whole image) keeps its inscribed circle.
    whole = boxes_to_mask((50, 60), np.array([[0.0, 0.0, 60.0, 50.0]]))
    assert whole.sum() == pytest.approx(np.pi * 25**2, rel=0.02)


def test_landmark_split_is_grouped_stratified_and_deterministic(shared_data):
    root = shared_data / "hirise_landmarks"
    train = HiRISELandmarks(root, "train")
    val = HiRISELandmarks(root, "val")
    everything = HiRISELandmarks(root, "all")
    assert train.classes == LANDMARK_CLASSES and len(train.classes) == 8
    assert not products_overlap(train.products, val.products)
    assert len(train) + len(val) == len(everything)
    assert train.products | val.products == everything.products
    assert 0.1 < len(val) / len(everything) < 0.3
    val_counts, all_counts = val.class_counts(), everything.class_counts()
    # Every class spread over more than one product reaches the validation split.
    products_per_class = everything.samples.groupby("label")["product_id"].nunique()
    for name, n_products in products_per_class.items():
        if n_products > 1:
            assert 0 < val_counts[name] < all_counts[name], name
    again = split_products(everything.samples, 0.2, 0)
    assert again == (train.products, val.products)
    assert split_products(everything.samples, 0.2, 1)[1] != val.products
    item = val[0]
    assert item["image"].shape == (1, 227, 227) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0 and float(item["image"].max()) <= 255
    assert item["product_id"] in val.products and item["file"].endswith(".jpg")
    assert val.classes[item["label"]] == val.samples.at[0, "label"]


def test_ctx_craters_split_by_tile(shared_data):
    root = shared_data / "ctx_craters"
    train, val = CTXCraters(root, "train"), CTXCraters(root, "val")
    assert len(train) == 8 and len(val) == 3 and not set(train.ids) & set(val.ids)
    assert tuple(val.ids) == CTX_VAL_TILES
    assert ctx_split(train.ids + val.ids, "train") == train.ids
    item = val[0]
    assert item["image"].shape == (1, 2000, 2000) and item["mask"].shape == (2000, 2000)
    assert item["mask"].dtype == torch.int64 and set(item["mask"].unique().tolist()) == {0, 1}
    boxes = val.boxes(0)
    assert len(boxes) > 20
    cx = ((boxes[:, 0] + boxes[:, 2]) / 2).astype(int)
    cy = ((boxes[:, 1] + boxes[:, 3]) / 2).astype(int)
    assert (item["mask"].numpy()[cy, cx] == 1).all()
    expert = CTXCraters(root, "val", annotations="expert")
    assert expert.ids == val.ids and len(expert.boxes(0)) != len(boxes)
    with pytest.raises(MomoGeoError):
        CTXCraters(root, "train", annotations="expert")  # expert boxes exist for val tiles only


def test_themis_craters_split_by_file(shared_data):
    root = shared_data / "themis_craters"
    train, val = THEMISCraters(root, "train"), THEMISCraters(root, "val")
    assert not set(train.ids) & set(val.ids)
    assert len(train) + len(val) == len(THEMISCraters(root, "all"))
    assert themis_split(train.ids + val.ids, "val") == val.ids
    assert themis_split(train.ids + val.ids, "val", seed=1) != val.ids
    item = val[0]
    assert item["image"].shape == (1, 416, 416)
    assert item["mask"].shape == (416, 416) and item["mask"].max() <= 1


def test_chips_are_deterministic_and_aligned(shared_data):
    tiles = THEMISCraters(shared_data / "themis_craters", "val")
    chips = ChipDataset(tiles, size=128, count=6, seed=5)
    again = ChipDataset(tiles, size=128, count=6, seed=5)
    for i in range(len(chips)):
        a, b = chips[i], again[i]
        assert a["id"] == b["id"] and torch.equal(a["image"], b["image"])
        item, row, col = chips.locate(i)
        source = tiles[item]
        assert torch.equal(a["mask"], source["mask"][row:row + 128, col:col + 128])
        assert a["image"].shape == (1, 128, 128)
    assert [chips[i]["id"] for i in range(6)] != [
        ChipDataset(tiles, 128, 6, seed=6)[i]["id"] for i in range(6)]


def test_unlabelled_chips_come_from_training_splits(shared_data):
    ctx = unlabelled_chips("ctx", shared_data, split="train", size=96, count=4, seed=0)
    assert len(ctx) == 4
    for i in range(4):
        chip = ctx[i]
        assert chip["image"].shape == (1, 96, 96)
        assert chip["id"].split("@")[0] not in CTX_VAL_TILES
    hirise = unlabelled_chips("hirise", shared_data, size=224, count=2)
    assert hirise[0]["image"].shape == (1, 224, 224)
    with pytest.raises(MomoGeoError, match="unknown sensor"):
        unlabelled_chips("lroc", shared_data)


def test_explicit_crs_and_resolution_on_the_same_body(hirise_scene):
    # Warp the real scene (local equirectangular, lon_0 = 180) to the IAU Mars equirectangular
    # CRS (lon_0 = 0) at 50 m: allowed, both are Mars.
    dataset = HiRISE(hirise_scene.parent, crs="IAU_2015:49910", res=50.0)
    assert mcrs.as_crs(dataset.crs).equals(mcrs.as_crs("IAU_2015:49910"))
    assert dataset.res == (50.0, 50.0)
    sampler = ValidGeoSampler(GridGeoSampler(dataset, size=32, stride=32), dataset)
    chips = [dataset[q] for q in sampler]
    assert chips and all(c["image"].shape == (1, 32, 32) for c in chips)
    to_lonlat = mcrs.lonlat_transformer("IAU_2015:49910")
    for chip in chips:
        (xmin, ymin, xmax, ymax), _ = query_bounds(dataset, chip["bounds"])
        assert xmax - xmin == pytest.approx(32 * 50.0)
        lon, lat = to_lonlat.transform((xmin + xmax) / 2, (ymin + ymax) / 2)
        assert 150.4 < lon < 150.7 and -0.4 < lat < 0.0
