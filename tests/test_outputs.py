"""Outputs never destroy a user's files (issue 11, items 1, 2, 4, 11 and 13).

Real runs of the engine on small generated Mars scenes (IAU_2015:49910) with a tiny model:
``--overwrite`` replaces files and provable bundles only, never a folder holding anything else,
the working folder, the home folder or a folder holding an input; outputs are reserved when a
run starts and committed as one unit; a shapefile's sidecars count as the shapefile; names users
really have (punctuation, ``;``, 250 characters, names like the engine's own work files) work; a
failed write is one line that names it.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from pyogrio import list_layers
from rasterio.transform import from_origin

from momo_geo.bundle import ModelCard, load_bundle, save_bundle
from momo_geo.errors import MomoGeoError
from momo_geo.inference import map_scene
from momo_geo.io import atomic_output
from momo_geo.models import create_model
from momo_geo.outputs import OutputSet

MOMO_GEO = str(Path(sys.executable).parent / "momo-geo")


def make_bundle(path: Path, weight: float = 10.0) -> Path:
    """A tiny conv segmenter whose crater class is 'brighter than the tile's mean' (with a small
    ``weight`` it is unsure: confidences spread between 0.5 and 1)."""
    card = ModelCard(name="bright-test", task="segmentation",
                     architecture={"kind": "conv", "encoder": "conv", "depth": 0},
                     in_chans=1, tile_size=64, tile_overlap=8,
                     classes=[{"id": 0, "name": "background", "color": "#000000"},
                              {"id": 1, "name": "crater", "color": "#ff8000"}])
    model = create_model(card)
    with torch.no_grad():
        model.net[0].weight.zero_()
        model.net[0].bias.zero_()
        model.net[0].weight[1] = weight
    return save_bundle(path, model.state_dict(), card)


def make_scene(path: Path, size: int = 160, seed: int = 0, noise: bool = False) -> Path:
    """Bright and dark squares (or, with ``noise``, random pixels: an incompressible mask)."""
    rows, cols = np.indices((size, size))
    image = np.where(((rows // 20) + (cols // 20)) % 2 == 1, 200, 20).astype(np.uint8)
    image += np.random.default_rng(seed).integers(0, 30, image.shape, dtype=np.uint8)
    if noise:
        image = np.random.default_rng(seed).integers(0, 255, image.shape, dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="uint8", crs="IAU_2015:49910",
                       transform=from_origin(0.0, 0.0, 6.0, 6.0)) as dst:
        dst.write(image, 1)
    return path


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders): the exact state."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*"))}


def plain_copy(dataset: Path, folder: Path) -> Path:
    """Hard links to ``dataset`` and its sidecars under a plain name, for pyogrio to read (it
    takes ``;`` in a path for a URI parameter when reading too)."""
    folder.mkdir()
    for part in dataset.parent.glob("*"):
        if part.name == dataset.name or part.name.startswith(dataset.stem + "."):
            os.link(part, folder / ("plain" + part.name[len(dataset.stem):]))
    return folder / ("plain" + dataset.suffix)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("models") / "bright.bundle")


@pytest.fixture(scope="module")
def state(bundle) -> dict:
    return load_bundle(bundle).state_dict


# --------------------------------------------------------------------------------------------
# item 1: --overwrite never deletes a folder that is not provably a bundle


def test_overwrite_replaces_a_bundle_but_never_another_folder(tmp_path, bundle, state):
    card = load_bundle(bundle).card
    folder = tmp_path / "somefolder"
    folder.mkdir()
    (folder / "thesis.tex").write_text("four years of work")
    before = tree(tmp_path)
    with pytest.raises(MomoGeoError, match="not a momo-geo model bundle"):
        save_bundle(folder, state, card, overwrite=True)
    assert tree(tmp_path) == before
    # A bundle this tool wrote is replaced, and nothing else is left behind.
    target = save_bundle(tmp_path / "model.bundle", state, card)
    (target / "card.json").write_text((target / "card.json").read_text().replace(
        '"bright-test"', '"old"'))
    save_bundle(target, state, card, overwrite=True)
    assert '"bright-test"' in (target / "card.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bundle", "somefolder"]


def test_overwrite_refuses_the_working_folder_home_and_folders_holding_an_input(
        tmp_path, bundle, state, monkeypatch):
    card = load_bundle(bundle).card
    home, work = tmp_path / "home", tmp_path / "home" / "mars" / "work"
    work.mkdir(parents=True)
    scene = make_scene(work / "scene.tif")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    before = tree(tmp_path)
    for target, reason in ((".", "the working folder"), ("..", "a parent of the working"),
                           (str(home), "your home folder")):
        with pytest.raises(MomoGeoError, match=reason):
            save_bundle(target, state, card, overwrite=True)
        with pytest.raises(MomoGeoError), atomic_output(target, overwrite=True) as tmp:
            tmp.write_text("x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MomoGeoError, match="a folder holding the input"):
        save_bundle(work, state, card, overwrite=True, inputs=[scene])
    assert tree(tmp_path) == before


def test_map_scene_with_a_folder_as_mask_path_keeps_the_folder(tmp_path, bundle):
    scene = make_scene(tmp_path / "scene.tif")
    folder = tmp_path / "results.tif"
    folder.mkdir()
    (folder / "field_notes.txt").write_text("keep me")
    before = tree(tmp_path)
    with pytest.raises(MomoGeoError, match="is a folder; momo-geo replaces files, never folders"):
        map_scene(scene, folder, model=bundle, overwrite=True)
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------------------------
# item 2: outputs reserved at the start, committed as one unit


def test_a_second_run_to_the_same_outputs_fails_at_once(tmp_path, bundle):
    scene = make_scene(tmp_path / "scene.tif")
    mask, vector = tmp_path / "m.tif", tmp_path / "v.gpkg"
    with OutputSet([mask], overwrite=True):  # another run holds the mask
        with pytest.raises(MomoGeoError, match="being written by another momo-geo run"):
            map_scene(scene, mask, vector, model=bundle, overwrite=True)
        assert not mask.exists() and not vector.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]  # lock gone too


def test_a_killed_runs_lock_is_taken_over_and_its_leftovers_removed(tmp_path, bundle):
    """After ``kill -9`` only a lock file and a staging folder remain; they hold nothing up."""
    import socket

    from momo_geo.outputs import LOCK_PREFIX, STAGING_PREFIX, _lock_path, remove_leftovers

    scene = make_scene(tmp_path / "scene.tif")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    mask = tmp_path / "m.tif"
    _lock_path(mask).write_text(f"{dead} {socket.gethostname()}\n")
    (tmp_path / f"{STAGING_PREFIX}{dead}-abc123" / "0").mkdir(parents=True)
    map_scene(scene, mask, model=bundle)  # the dead run's lock does not block
    assert mask.is_file() and not _lock_path(mask).exists()
    removed = remove_leftovers(tmp_path)
    assert [p.name for p in removed] == [f"{STAGING_PREFIX}{dead}-abc123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif", "scene.tif"]
    assert not list(tmp_path.glob(f"{LOCK_PREFIX}*"))


def test_mask_and_vector_are_committed_together(tmp_path, bundle, monkeypatch):
    """The mask cannot be put in place (disk full at the last moment): the vector layer of the
    same run does not appear either, and the files it was to replace are back."""
    scene = make_scene(tmp_path / "scene.tif")
    mask, vector = tmp_path / "m.tif", tmp_path / "v.gpkg"
    mask.write_bytes(b"old mask")
    vector.write_bytes(b"old vector")
    real_link, real_replace = os.link, os.replace

    def refuse(src: object, dst: object) -> None:
        """The new mask cannot be put in place (putting the old one back still works)."""
        if Path(str(dst)) == mask and "partial" in str(src) and "replaced" not in str(src):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", lambda src, dst: (refuse(src, dst), real_link(src, dst))[1])
    monkeypatch.setattr(os, "replace",
                        lambda src, dst: (refuse(src, dst), real_replace(src, dst))[1])
    with pytest.raises(MomoGeoError, match="No space left on device"):
        map_scene(scene, mask, vector, model=bundle, overwrite=True)
    assert mask.read_bytes() == b"old mask" and vector.read_bytes() == b"old vector"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif", "scene.tif", "v.gpkg"]


# --------------------------------------------------------------------------------------------
# item 4: a shapefile is all its sidecars


def test_an_existing_sidecar_counts_as_the_shapefile(tmp_path, bundle):
    scene = make_scene(tmp_path / "scene.tif")
    (tmp_path / "craters.dbf").write_bytes(b"someone else's attribute table")
    before = tree(tmp_path)
    with pytest.raises(MomoGeoError, match=r"craters.dbf exists \(part of craters.shp\)"):
        map_scene(scene, tmp_path / "m.tif", tmp_path / "craters.shp", model=bundle)
    assert tree(tmp_path) == before
    # With --overwrite the old dataset goes whole: a stale spatial index must not survive.
    (tmp_path / "craters.qix").write_bytes(b"index of the old features")
    map_scene(scene, tmp_path / "m.tif", tmp_path / "craters.shp", model=bundle, overwrite=True)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"scene.tif", "m.tif", "craters.shp", "craters.shx", "craters.dbf",
                     "craters.prj", "craters.cpg"}
    assert len(gpd.read_file(tmp_path / "craters.shp")) > 0


# --------------------------------------------------------------------------------------------
# item 11: names users really have


@pytest.mark.parametrize("name", ["(copy) ESP_1;2.gpkg", "#3 ;run.shp", "a;b.geojson",
                                  "-x.gpkg", "'quoted'.gpkg", "gpkg_like.gpkg"])
def test_punctuation_and_semicolons_in_output_names(tmp_path, bundle, name):
    scene = make_scene(tmp_path / "scene.tif")
    vector = tmp_path / name
    result = map_scene(scene, tmp_path / "m;1.tif", vector, model=bundle)
    assert vector.is_file() and (tmp_path / "m;1.tif").is_file()
    assert result.feature_counts["crater"] > 0
    readable = plain_copy(vector, tmp_path / "check")  # reading ";" names is another matter
    assert len(list_layers(readable)) == 1
    assert len(gpd.read_file(readable)) == result.feature_counts["crater"]
    leftovers = {p.name for p in tmp_path.iterdir()} - {"scene.tif", "m;1.tif", name, "check"}
    assert all(n.startswith(vector.stem) for n in leftovers), leftovers  # shapefile sidecars


def test_long_output_names_work(tmp_path, bundle):
    scene = make_scene(tmp_path / "scene.tif")
    stem = "ESP_037156_1800_RED_" + "x" * 226  # 246 characters, + suffix: under NAME_MAX
    mask, vector = tmp_path / f"{stem}.tif", tmp_path / f"{stem}.gpkg"
    map_scene(scene, mask, vector, model=bundle)
    assert mask.is_file() and vector.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([scene.name, mask.name,
                                                                 vector.name])


def test_a_png_mask_name_is_refused_before_the_model_loads(tmp_path):
    scene = make_scene(tmp_path / "scene.tif")
    with pytest.raises(MomoGeoError, match=r"mask.png: the class mask is written as a GeoTIFF"):
        map_scene(scene, tmp_path / "mask.png", model=tmp_path / "no-such.bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def test_outputs_named_like_the_engines_work_files_map_correctly(tmp_path):
    unsure = make_bundle(tmp_path / "unsure.bundle", weight=0.5)
    scene = make_scene(tmp_path / "scene.tif")
    plain = map_scene(scene, tmp_path / "mask.tif", tmp_path / "features.gpkg", model=unsure)
    odd = map_scene(scene, tmp_path / "_work_confidence.tif", tmp_path / "_work_mask.gpkg",
                    model=unsure)
    assert odd.feature_counts == plain.feature_counts
    expected = gpd.read_file(tmp_path / "features.gpkg").sort_values("area_m2")
    got = gpd.read_file(tmp_path / "_work_mask.gpkg").sort_values("area_m2")
    assert expected.mean_conf.between(0.5, 0.99).all()  # a confidence, not a class id
    np.testing.assert_allclose(got.mean_conf.to_numpy(), expected.mean_conf.to_numpy())
    with rasterio.open(tmp_path / "mask.tif") as a, \
            rasterio.open(tmp_path / "_work_confidence.tif") as b:
        assert np.array_equal(a.read(1), b.read(1)) and b.dtypes[0] == "uint8"


# --------------------------------------------------------------------------------------------
# item 13 (disk full): a failed write is one line naming the write


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_failed_write_is_one_line_naming_it(tmp_path, bundle):
    scene = make_scene(tmp_path / "scene.tif", size=1200, noise=True)
    proc = subprocess.run(
        [MOMO_GEO, "map", str(scene), "--model", str(bundle), "-q", "--no-vector"],
        capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(100_000),
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: writing the class mask") and "scene_mask.tif" in lines[0]
    assert "File too large" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]
