"""map_scene and predict_array on real rasters with tiny real models."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from momo_geo.bundle import Bundle, ModelCard, load_bundle, save_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.inference import map_scene, predict_array
from momo_geo.inference.frame import find_frame
from momo_geo.models import create_model, register

MARS_EQC = "IAU_2015:49910"
CLASSES = [{"id": 0, "name": "background", "color": "#000000"},
           {"id": 1, "name": "crater", "color": "#ff8000"}]


def threshold_bundle(path: Path | None = None, **card_fields) -> Bundle:
    """A 1x1-convolution 'model' that marks pixels brighter than the tile's mean as crater.

    Deterministic and exact, so tests know the right answer for every pixel.
    """
    fields = dict(name="bright", task="segmentation",
                  architecture={"kind": "conv", "encoder": "conv", "depth": 0},
                  in_chans=1, tile_size=64, tile_overlap=8, classes=CLASSES)
    fields.update(card_fields)
    card = ModelCard(**fields)
    model = create_model(card)
    with torch.no_grad():
        model.net[0].weight.zero_()
        model.net[0].bias.zero_()
        model.net[0].weight[1, :] = 10.0 / card.in_chans
    if path is not None:
        save_bundle(path, model.state_dict(), card)
        return load_bundle(path)
    return Bundle(card=card, state_dict=model.state_dict())


def write_scene(path: Path, image: np.ndarray, gsd: float = 25.0, nodata=None, crs=MARS_EQC,
                transform=None) -> Path:
    if image.ndim == 2:
        image = image[None]
    profile = dict(driver="GTiff", width=image.shape[2], height=image.shape[1],
                   count=image.shape[0], dtype=image.dtype, tiled=True, blockxsize=128,
                   blockysize=128)
    if crs is not None:
        profile.update(crs=crs, transform=transform or from_origin(1000.0, 5000.0, gsd, gsd))
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    return path


def checkerboard(height: int, width: int, cell: int = 24, seed: int = 0) -> np.ndarray:
    """Bright (200-230) and dark (20-50) cells with noise; every 64 px tile holds both."""
    rows, cols = np.indices((height, width))
    bright = ((rows // cell) + (cols // cell)) % 2 == 1
    rng = np.random.default_rng(seed)
    return np.where(bright, 200, 20).astype(np.uint8) + rng.integers(0, 30, (height, width),
                                                                      dtype=np.uint8)


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return threshold_bundle()


def test_strip_in_nodata_frame_maps_to_a_valid_cog(tmp_path, bundle):
    # HiRISE-like: a narrow valid strip inside a nodata frame, ragged edges, size > one COG block
    height, width = 700, 600
    image = checkerboard(height, width)
    image[image == 0] = 1
    cols = np.arange(width)[None, :]
    rows = np.arange(height)[:, None]
    strip = (cols > 180 + rows // 10) & (cols < 380 + rows // 10) & (rows > 30) & (rows < 680)
    image[~strip] = 0
    scene = write_scene(tmp_path / "ESP_012345_1234_RED.tif", image, nodata=0)
    seen: list[tuple[int, int]] = []
    threads: set[str] = set()

    def progress(done, total):
        seen.append((done, total))
        threads.add(threading.current_thread().name)

    result = map_scene(scene, vector_path=tmp_path / "features.gpkg", model=bundle,
                       probabilities=tmp_path / "prob.tif", progress=progress, batch_size=4)
    assert result.mask_path == tmp_path / "ESP_012345_1234_RED_mask.tif"
    # progress: from the calling thread, monotonic, ending at the total
    assert threads == {threading.current_thread().name}
    assert seen[0] == (0, result.tiles_total) and seen[-1] == (result.tiles_total,) * 2
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False))
    assert result.tiles_skipped > 0  # the all-nodata tiles in the frame
    with rasterio.open(scene) as src, rasterio.open(result.mask_path) as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert (out.width, out.height, out.count, out.dtypes[0]) == (width, height, 1, "uint8")
        assert out.nodata == 255
        assert out.profile["tiled"] and out.compression.name.lower() == "deflate"
        assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert out.overviews(1)  # COG with overviews
        assert out.colormap(1)[1] == (255, 128, 0, 255)
        assert out.tags()["CLASS_1"] == "crater"
        mask = out.read(1)
    assert (mask[~strip] == 255).all()
    assert (mask[strip] != 255).all()
    bright = checkerboard(height, width) >= 200
    agree = (mask[strip] == 1) == bright[strip]
    assert agree.mean() > 0.99
    with rasterio.open(tmp_path / "prob.tif") as prob:
        p = prob.read()
    assert p.shape == (2, height, width)
    np.testing.assert_allclose(p[:, strip].sum(axis=0), 1.0, atol=1e-5)
    assert (p[:, ~strip] == -1).all()
    # vectors: crater features only inside the strip
    import geopandas as gpd

    features = gpd.read_file(tmp_path / "features.gpkg")
    assert len(features) == result.feature_counts["crater"] > 10
    with rasterio.open(scene) as src:
        inside = rasterio.features.geometry_mask(features.geometry, (height, width),
                                                 src.transform, invert=True)
    assert not (inside & ~strip).any()
    assert leftovers(tmp_path, {scene.name, result.mask_path.name, "features.gpkg",
                                "prob.tif"}) == []


def test_predict_array_matches_map_scene(tmp_path, bundle):
    from momo_geo.inference import MapOptions

    image = checkerboard(150, 170, seed=2)
    scene = write_scene(tmp_path / "s.tif", image)
    options = MapOptions(tile=48, overlap=10, device="cpu")
    result = map_scene(scene, model=bundle, options=options)
    with rasterio.open(result.mask_path) as out:
        mask = out.read(1)
    classes, confidence = predict_array(bundle, image, tile=48, overlap=10)
    assert np.array_equal(classes, mask)
    assert confidence.shape == image.shape and (confidence >= 0.5).all()


def test_normalising_on_the_model_device_gives_the_same_result(bundle):
    """GPUs normalise raw tiles on the device; the same path on the CPU must agree exactly."""
    from momo_geo.inference import Predictor

    image = checkerboard(150, 130, seed=9)
    valid = np.ones(image.shape, bool)
    valid[:40, :30] = False  # some batches with nodata, some without
    in_reader = Predictor(bundle, "cpu")
    on_device = Predictor(bundle, "cpu")
    on_device.normalize_on_device = True
    a = predict_array(None, image, valid, tile=48, overlap=8, predictor=in_reader,
                      probabilities=True)
    b = predict_array(None, image, valid, tile=48, overlap=8, predictor=on_device,
                      probabilities=True)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)


def test_scene_smaller_than_a_tile_and_three_bands(tmp_path, bundle):
    grey = checkerboard(40, 50, cell=10, seed=3)
    rgb = np.stack([grey, grey, grey])
    scene = write_scene(tmp_path / "small.tif", rgb)
    result = map_scene(scene, model=bundle, tile=64, overlap=8)  # 1-band model, 3-band scene
    assert result.tiles_total == 1
    with rasterio.open(result.mask_path) as out:
        assert out.shape == (40, 50)
        mask = out.read(1)
    assert np.array_equal(mask, predict_array(bundle, grey, tile=64, overlap=8)[0])
    assert ((mask == 1) == (grey >= 200)).mean() > 0.99
    # and a 3-channel model on a 1-band scene: the grey band fills its channels
    single = write_scene(tmp_path / "grey.tif", grey)
    result = map_scene(single, model=threshold_bundle(in_chans=3), tile=64, overlap=8)
    with rasterio.open(result.mask_path) as out:
        assert np.array_equal(out.read(1), mask)


def test_alpha_band_is_a_mask_not_an_image_band(tmp_path, bundle):
    grey = checkerboard(120, 140, seed=6)
    # partly transparent but valid (alpha > 0): averaging alpha in would scramble the image
    alpha = np.random.default_rng(7).integers(1, 256, grey.shape).astype(np.uint8)
    alpha[:, :50] = 0
    scene = tmp_path / "rgba.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=140, height=120, count=4,
                       dtype="uint8", crs=MARS_EQC, transform=from_origin(0, 0, 25, 25),
                       photometric="RGB", alpha="YES") as dst:
        dst.write(np.stack([grey, grey, grey, alpha]))
    with rasterio.open(scene) as src:
        assert src.colorinterp[3].name == "alpha"
    from momo_geo.inference import plan_tiles
    from momo_geo.inference.reader import RasterSource

    source = RasterSource(str(scene), "mean").open()
    try:
        for plan in plan_tiles(140, 120, 64, 8):
            tile = source.read(plan)
            window = plan.window.toslices()
            assert np.array_equal(tile.pixels[0], grey[window].astype(np.float32))
            assert np.array_equal(tile.valid, alpha[window] > 0)
    finally:
        source.close()
    result = map_scene(scene, model=bundle)
    with rasterio.open(result.mask_path) as out:
        mask = out.read(1)
    assert (mask[:, :50] == 255).all()
    bright = grey[:, 50:] >= 200
    assert ((mask[:, 50:] == 1) == bright).mean() > 0.99


@pytest.mark.parametrize(("driver", "name", "options"), [
    ("ISIS3", "scene.cub", {}),
    ("PDS4", "scene.xml", {}),
    ("JP2OpenJPEG", "scene.jp2", {"QUALITY": "100", "REVERSIBLE": "YES"}),
])
def test_planetary_formats_map_like_geotiff(tmp_path, bundle, driver, name, options):
    from momo_geo.crs import body_of

    image = checkerboard(100, 120, seed=8)
    transform = from_origin(1000.0, 5000.0, 25.0, 25.0)
    path = tmp_path / name
    with rasterio.open(path, "w", driver=driver, width=120, height=100, count=1,
                       dtype="uint8", crs=MARS_EQC, transform=transform, **options) as dst:
        dst.write(image, 1)
    reference = map_scene(write_scene(tmp_path / "ref.tif", image), model=bundle)
    result = map_scene(path, tmp_path / "out.tif", model=bundle)
    with rasterio.open(result.mask_path) as out, rasterio.open(reference.mask_path) as ref:
        assert out.transform == ref.transform and body_of(out.crs) == "Mars"
        assert np.array_equal(out.read(1), ref.read(1))


def test_uint16_and_float_scenes_are_stretched_per_tile(tmp_path, bundle):
    base = checkerboard(130, 130, seed=4).astype(np.float32)
    truth = base >= 200
    for dtype, scale, offset in (("uint16", 200.0, 1000.0), ("float32", 0.001, -7.0)):
        image = (base * scale + offset).astype(dtype)
        scene = write_scene(tmp_path / f"{dtype}.tif", image)
        result = map_scene(scene, model=bundle)
        with rasterio.open(result.mask_path) as out:
            assert ((out.read(1) == 1) == truth).mean() > 0.99, dtype


def test_scene_off_the_model_gsd_is_resampled_and_written_on_its_own_grid(tmp_path):
    bundle = threshold_bundle(gsd=25.0, gsd_range=[20.0, 30.0])
    image = checkerboard(300, 260, cell=60, seed=5)  # 5 m/px: 5x finer than the model
    scene = write_scene(tmp_path / "fine.tif", image, gsd=5.0)
    messages: list[str] = []
    result = map_scene(scene, model=bundle, tile=32, overlap=4, log=messages.append)
    assert any("resampling" in m for m in messages)
    assert result.resample_factor == pytest.approx(5.0, rel=0.02)  # scene px per model px
    # 32 model px = ~160 scene px per tile: far fewer tiles than at the scene's own GSD
    assert result.tiles_total <= 4
    with rasterio.open(scene) as src, rasterio.open(result.mask_path) as out:
        assert out.shape == src.shape and out.transform == src.transform
        mask = out.read(1)
    assert ((mask == 1) == (image >= 200)).mean() > 0.95


def test_extreme_gsd_mismatch_warns_loudly(tmp_path):
    bundle = threshold_bundle(gsd=0.25, gsd_range=[0.2, 0.5])
    scene = write_scene(tmp_path / "coarse.tif", checkerboard(60, 60, cell=6), gsd=5.0)
    messages: list[str] = []
    result = map_scene(scene, model=bundle, tile=320, overlap=40, log=messages.append)
    assert result.resample_factor == pytest.approx(1 / 20, rel=0.02)
    assert any(m.startswith("WARNING") and "20x" in m for m in messages)


class PooledClassifier(torch.nn.Module):
    """A tiny tile classifier: mean-pooled 3x3 convolution features, one linear layer."""

    def __init__(self, in_chans: int, num_classes: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_chans, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@register("test_pooled_cls")
def _build_pooled(card) -> torch.nn.Module:  # noqa: ANN001
    return PooledClassifier(card.in_chans, card.num_classes)


def test_tile_level_classification_bundle(tmp_path):
    card = ModelCard(name="landmark-tiny", task="classification",
                     architecture={"kind": "test_pooled_cls", "encoder": "none"},
                     input_size=32, tile_size=32, tile_overlap=0, in_chans=1,
                     classes=[{"id": 0, "name": "other", "color": "#000000"},
                              {"id": 1, "name": "crater", "color": "#ff0000"},
                              {"id": 2, "name": "dark_dune", "color": "#0000ff"}])
    torch.manual_seed(0)
    bundle = Bundle(card=card, state_dict=create_model(card).state_dict())
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (80, 100), dtype=np.uint8)  # 3 x 4 tiles, last ones clamped
    scene = write_scene(tmp_path / "landmarks.tif", image)
    result = map_scene(scene, model=bundle, batch_size=5)
    assert result.task == "classification" and result.tiles_total == 12
    with rasterio.open(result.mask_path) as out:
        mask = out.read(1)
    from momo_geo.inference import plan_tiles

    for p in plan_tiles(100, 80, 32, 0):
        core = mask[p.core_window.toslices()]
        assert (core == core.flat[0]).all() and core.flat[0] < 3
    # the tile's class is the model's answer for that tile's pixels
    model = bundle.build_model()
    from momo_geo.preprocess import to_model_input

    first = torch.from_numpy(image[:32, :32].astype(np.float32))[None, None]
    with torch.no_grad():
        expected = model(to_model_input(first, 0.5006, 0.1664, 1)).argmax(1).item()
    assert mask[0, 0] == expected
    # a fixed-size model: other tile sizes are refused up front...
    with pytest.raises(MomoGeoError, match="takes tiles of 32 px"):
        map_scene(scene, tmp_path / "other.tif", model=bundle, tile=48)
    # ...and a scene smaller than the tile is padded (as nodata) up to it
    small = write_scene(tmp_path / "small.tif", image[:20, :25])
    result = map_scene(small, model=bundle)
    with rasterio.open(result.mask_path) as out:
        small_mask = out.read(1)
    assert small_mask.shape == (20, 25) and len(np.unique(small_mask)) == 1
    assert small_mask[0, 0] < 3


def test_classification_tiles_mostly_in_a_collar_are_left_unmapped(tmp_path):
    """A tile with under three quarters of image is not classified; the rest are."""
    from momo_geo.inference.engine import MIN_CLASSIFIED_SHARE

    card = ModelCard(name="landmark-tiny", task="classification",
                     architecture={"kind": "test_pooled_cls", "encoder": "none"},
                     input_size=32, tile_size=32, tile_overlap=0, in_chans=1,
                     classes=[{"id": 0, "name": "other", "color": "#000000"},
                              {"id": 1, "name": "crater", "color": "#ff0000"}])
    torch.manual_seed(0)
    bundle = Bundle(card=card, state_dict=create_model(card).state_dict())
    image = np.random.default_rng(1).integers(1, 255, (64, 96), dtype=np.uint8)
    image[:, :20] = 0  # left tiles: 12 of 32 columns are image
    image[:, 88:] = 0  # right tiles: 24 of 32 columns, exactly the share
    assert 12 / 32 < MIN_CLASSIFIED_SHARE <= 24 / 32
    scene = write_scene(tmp_path / "collar.tif", image, nodata=0)
    result = map_scene(scene, model=bundle)
    with rasterio.open(result.mask_path) as out:
        mask, nodata = out.read(1), out.nodata
    assert (mask[:, :32] == nodata).all()  # image pixels too: left unmapped
    assert (mask[:, 32:88] < 2).all() and (mask[:, 88:] == nodata).all()


def test_bf16_runs_and_fp16_on_cpu_is_a_clear_error(tmp_path, bundle):
    image = checkerboard(100, 100)
    scene = write_scene(tmp_path / "s.tif", image)
    result = map_scene(scene, model=bundle, precision="bf16", device="cpu")
    with rasterio.open(result.mask_path) as out:
        assert ((out.read(1) == 1) == (image >= 200)).mean() > 0.99
    with pytest.raises(MomoGeoError, match="fp16 needs a GPU"):
        map_scene(scene, tmp_path / "m16.tif", model=bundle, precision="fp16", device="cpu")
    with pytest.raises(MomoGeoError, match="device"):
        map_scene(scene, tmp_path / "mx.tif", model=bundle, device="tpu")
    assert not (tmp_path / "m16.tif").exists() and not (tmp_path / "mx.tif").exists()


def test_cancel_stops_with_no_output(tmp_path, bundle):
    scene = write_scene(tmp_path / "s.tif", checkerboard(400, 400))
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(MomoGeoError, match="cancelled"):
        map_scene(scene, vector_path=tmp_path / "v.gpkg", model=bundle, batch_size=2,
                  cancel=cancel)
    assert leftovers(tmp_path, {"s.tif"}) == []


def test_failure_mid_way_leaves_nothing_behind(tmp_path, bundle):
    scene = write_scene(tmp_path / "s.tif", checkerboard(300, 300))

    def progress(done, total):
        if done > total // 2:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        map_scene(scene, vector_path=tmp_path / "v.shp", probabilities=tmp_path / "p.tif",
                  model=bundle, batch_size=2, progress=progress)
    assert leftovers(tmp_path, {"s.tif"}) == []


def test_bad_inputs_are_one_line_errors_and_leave_nothing(tmp_path, bundle):
    image = checkerboard(100, 100)
    no_georef = write_scene(tmp_path / "plain.tif", image, crs=None)
    with pytest.raises(MomoGeoError, match="no georeference"):
        map_scene(no_georef, model=bundle)
    garbage = tmp_path / "garbage.tif"
    garbage.write_text("this is not a raster")
    with pytest.raises(MomoGeoError, match="not a readable raster"):
        map_scene(garbage, model=bundle)
    with pytest.raises(MomoGeoError, match="no such file"):
        map_scene(tmp_path / "missing.tif", model=bundle)
    empty = write_scene(tmp_path / "empty.tif", np.zeros((100, 100), np.uint8), nodata=0)
    with pytest.raises(MomoGeoError, match="every pixel is nodata"):
        map_scene(empty, vector_path=tmp_path / "e.gpkg", model=bundle)
    scene = write_scene(tmp_path / "s.tif", image)
    existing = tmp_path / "s_mask.tif"
    existing.write_bytes(b"keep me")
    with pytest.raises(MomoGeoError, match="exists; pass --overwrite"):
        map_scene(scene, model=bundle)
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(MomoGeoError, match="vector format"):
        map_scene(scene, tmp_path / "other.tif", tmp_path / "v.kml", model=bundle)
    # a bundle whose weights are for another number of input bands
    three = threshold_bundle(in_chans=3)
    wrong = Bundle(card=threshold_bundle().card, state_dict=three.state_dict)
    with pytest.raises(MomoGeoError, match="do not fit"):
        map_scene(scene, tmp_path / "w.tif", model=wrong)
    with pytest.raises(MomoGeoError, match="pretrain"):
        map_scene(scene, tmp_path / "w.tif",
                  model=Bundle(card=ModelCard(name="enc", task="pretrain",
                                              architecture={"encoder": "vit_tiny_patch16"}),
                               state_dict={}))
    assert leftovers(tmp_path, {"plain.tif", "garbage.tif", "empty.tif", "s.tif",
                                "s_mask.tif"}) == []
    # and with --overwrite the existing output is replaced by a real mask
    result = map_scene(scene, model=bundle, overwrite=True)
    with rasterio.open(result.mask_path) as out:
        assert out.shape == (100, 100)


def test_default_model_without_bundle_is_a_clear_error(tmp_path, monkeypatch):
    # An installation whose bundled weights are missing (e.g. a trimmed package): point the
    # bundled-model folder at an empty one.
    from momo_geo import bundle as bundle_module

    monkeypatch.setattr(bundle_module, "BUNDLED_DIR", tmp_path / "no-weights")
    scene = write_scene(tmp_path / "s.tif", checkerboard(64, 64))
    with pytest.raises(MomoGeoError, match="not installed"):
        map_scene(scene)
    assert leftovers(tmp_path, {"s.tif"}) == []


def test_hirise_scene_maps_to_cog_on_its_grid(tmp_path, hirise_scene):
    bundle = threshold_bundle(tmp_path / "bright.bundle")
    result = map_scene(hirise_scene, tmp_path / "hirise_mask.tif", tmp_path / "hirise.gpkg",
                       model=bundle.path, min_area=2000.0)
    with rasterio.open(hirise_scene) as src, rasterio.open(result.mask_path) as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert out.shape == src.shape
        assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        # nodata: what the file declares (nothing) and its undeclared black collar
        frame = find_frame(str(hirise_scene))
        valid = (src.dataset_mask() > 0) & frame.valid(Window(0, 0, src.width, src.height))
        mask = out.read(1)
    assert (mask[~valid] == 255).all() and (mask[valid] != 255).all()
    assert 0.25 < (~valid).mean() < 0.32
    import geopandas as gpd

    from momo_geo.crs import body_of

    features = gpd.read_file(result.vector_path)
    assert body_of(features.crs) == "Mars"
    assert len(features) > 0 and (features.area_m2 >= 2000.0).all()
