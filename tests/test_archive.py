"""``map_archive`` / ``momo-geo map-archive`` on a real Dask ``LocalCluster`` of 2 worker processes.

Scenes are crops of the sample scene (Mars, ``IAU_2015:49910``) named like CTX products, mapped
with the bundled crater U-Net: a few seconds each on one CPU thread. Among them a truncated file
and one labelled EPSG:4326; a worker process is killed mid-scene; a CLI run is interrupted with
Ctrl-C and started again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import rasterio
from affine import Affine
from rasterio.transform import from_origin
from rasterio.windows import Window

pytest.importorskip("distributed")

from momo_geo.archive import map_archive  # noqa: E402
from momo_geo.errors import MomoGeoError  # noqa: E402
from momo_geo.inference.options import MapOptions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "crater_field.tif"
MOMO_GEO = str(Path(sys.executable).parent / "momo-geo")
OPTIONS = MapOptions(device="cpu")


def ctx_name(i: int) -> str:
    """A CTX-like product name, so the catalogue's sensor column says ``ctx``."""
    return f"B{i:02d}_0100{i:02d}_1800_XN_18N077E.tif"


def crop(path: Path, col: int, row: int, size: int = 320, shift_m: float = 0.0,
         crs: str | None = None, transform: Affine | None = None) -> Path:
    """A ``size`` px crop of the sample scene at (col, row), its georeference kept (or moved
    ``shift_m`` east, or replaced)."""
    with rasterio.open(SAMPLE) as src:
        window = Window(col, row, size, size)
        data = src.read(window=window)
        profile = {**src.profile, "width": size, "height": size,
                   "transform": transform or Affine.translation(shift_m, 0)
                   @ src.window_transform(window)}
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """4 good scenes (the first two overlap by 160 px), a truncated one, one in EPSG:4326."""
    folder = tmp_path_factory.mktemp("scenes")
    good = [crop(folder / ctx_name(i), col, row)
            for i, (col, row) in enumerate([(0, 0), (160, 0), (0, 480), (480, 480)])]
    corrupt = folder / "B10_010010_1800_XN_18N077E.tif"
    corrupt.write_bytes(good[0].read_bytes()[:3000])  # header intact, pixels cut off
    earth = crop(folder / "B11_010011_1800_XN_18N077E.tif", 480, 0, crs="EPSG:4326",
                 transform=from_origin(77.0, 18.0, 1e-4, 1e-4))
    return {"good": good, "corrupt": corrupt, "earth": earth}


def foreground_sigint() -> None:
    """In the child: Ctrl-C at its default, as for a job a terminal runs in the foreground.
    A test session started in the background (``cmd &`` in a script, as CI may) ignores SIGINT
    and its children inherit that, so map-archive would rightly not stop on it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def manifest_rows(folder: Path) -> dict[str, dict]:
    with sqlite3.connect(folder / "manifest.sqlite") as db:
        db.row_factory = sqlite3.Row
        return {row["name"]: dict(row) for row in db.execute("SELECT * FROM scenes")}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "scenes").iterdir() if p.name.startswith("."))


def read_catalogue(folder: Path):
    from pyogrio import read_dataframe

    return read_dataframe(folder / "catalogue.gpkg", layer="features")


def test_good_scenes_are_mapped_bad_ones_reported_and_one_catalogue_holds_them(
        scenes: dict, tmp_path: Path) -> None:
    from momo_geo.crs import is_mars

    out = tmp_path / "archive"
    lines: list[str] = []
    everything = [*scenes["good"], scenes["corrupt"], scenes["earth"]]
    result = map_archive(everything, out, options=OPTIONS, workers=2,
                         progress=lambda event: lines.append(event.line))

    good = {p.name for p in scenes["good"]}
    assert set(result.mapped) == good and not result.skipped
    assert set(result.failed) == {scenes["corrupt"].name, scenes["earth"].name}
    rows = manifest_rows(out)
    for name, row in rows.items():
        assert row["attempts"] == 1 and row["started"] and row["finished"], row
        assert row["model_hash"] and row["options_hash"]
        if name in good:
            assert row["status"] == "done" and row["error"] is None and row["sensor"] == "ctx"
            assert Path(row["mask_path"]).is_file() and Path(row["vector_path"]).is_file()
        else:  # one line saying why; no output of it anywhere
            assert row["status"] == "failed" and "\n" not in row["error"]
            assert not Path(row["mask_path"]).exists() and not Path(row["vector_path"]).exists()
    assert "truncated or corrupt" in rows[scenes["corrupt"].name]["error"]
    assert "Earth CRS" in rows[scenes["earth"].name]["error"]
    assert leftovers(out) == []
    assert len(lines) == 6 and lines[-1].startswith("[6/6]") and "ETA" in lines[-1]
    # one model per worker process, whatever the number of scenes
    assert set(result.model_loads.values()) == {1} and len(result.model_loads) <= 2

    catalogue = read_catalogue(out)
    assert is_mars(catalogue.crs) and catalogue.crs.is_geographic
    assert set(catalogue["scene"]) == good
    assert set(catalogue["sensor"]) == {"ctx"}
    per_scene = catalogue["scene"].value_counts()
    mapped = {name: rows[name]["features"] for name in good}
    assert result.catalogue.duplicates > 0  # the two overlapping scenes saw the same craters
    assert len(catalogue) == sum(mapped.values()) - result.catalogue.duplicates
    for name in good:
        assert 0 < per_scene[name] <= mapped[name]
    for i in (2, 3):  # scenes overlapping no other keep every feature
        assert per_scene[scenes["good"][i].name] == mapped[scenes["good"][i].name]
    assert catalogue["mean_conf"].between(0, 1).all()
    assert catalogue.geometry.is_valid.all()

    # Run again (failed scenes left alone with --max-attempts 1): nothing is recomputed.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "scenes").iterdir()}
    again = map_archive(everything, out, options=OPTIONS, workers=2, max_attempts=1)
    assert again.mapped == [] and set(again.skipped) == good
    assert set(again.failed) == set(result.failed)
    assert {p: p.stat().st_mtime_ns for p in (out / "scenes").iterdir()} == stamps
    assert manifest_rows(out) == rows
    assert len(read_catalogue(out)) == len(catalogue)


def test_changed_options_make_done_scenes_stale(scenes: dict, tmp_path: Path) -> None:
    """The manifest's options hash decides: device and batch size do not change outputs."""
    from momo_geo.archive.manifest import options_hash

    base = OPTIONS.as_dict()
    assert options_hash(base) == options_hash({**base, "batch_size": 2, "device": "cuda"})
    assert options_hash(base) != options_hash({**base, "min_area": 500.0})


def test_a_killed_worker_s_scene_is_mapped_by_another_worker(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    folder = tmp_path / "scenes"
    folder.mkdir()
    victim = folder / ctx_name(20)
    # 768 px of the sample scene moved 2,000 km east: 4 tiles, seconds to map, overlaps none
    crop(victim, 0, 0, size=768, shift_m=2e6)
    others = [crop(folder / ctx_name(21 + i), col, 0, shift_m=-1e6 * (i + 1))
              for i, col in enumerate((0, 320))]
    out = tmp_path / "archive"
    killed: dict[str, object] = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:

        def executing(dask_worker) -> list[str]:  # noqa: ANN001 - Dask's name for it
            return [str(task.key) for task in dask_worker.state.executing]

        def kill_when_mapping() -> None:
            """SIGKILL the worker process 1 s into the victim scene: it is still in it on any
            machine (its worker imports torch and loads the model first, then maps 4 tiles)."""
            seen: dict[str, float] = {}
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                for address, keys in client.run(executing).items():
                    if any(victim.name in key for key in keys):
                        seen.setdefault(address, time.monotonic())
                        if time.monotonic() - seen[address] > 1.0:
                            pid = client.run(os.getpid, workers=[address])[address]
                            os.kill(pid, signal.SIGKILL)
                            killed.update(address=address, pid=pid)
                            return
                time.sleep(0.1)

        killer = threading.Thread(target=kill_when_mapping, daemon=True)
        killer.start()
        result = map_archive([victim, *others], out, options=OPTIONS,
                             scheduler=cluster.scheduler_address)
        killer.join(timeout=5)
    assert killed, "the victim scene was never seen mid-run"
    names = {p.name for p in [victim, *others]}
    assert set(result.mapped) == names and not result.failed
    rows = manifest_rows(out)
    assert rows[victim.name]["status"] == "done" and rows[victim.name]["attempts"] == 1
    assert rows[victim.name]["worker"] != killed["address"]  # another worker finished it
    assert leftovers(out) == []  # the killed worker's staging folder was cleaned up
    catalogue = read_catalogue(out)
    assert result.catalogue.duplicates == 0  # the scenes do not overlap
    counts = catalogue["scene"].value_counts().to_dict()
    assert counts == {name: rows[name]["features"] for name in names}  # none missing or twice


# An interrupt that lands while a cold cluster is still settling was seen lost once on a fresh
# CI clone (all scenes then finish with exit 0); never reproduced warm. One rerun, not more:
# a Ctrl-C that is lost twice in a row is a failure.
@pytest.mark.flaky(reruns=1, reruns_delay=2)
def test_ctrl_c_stops_the_cli_and_the_same_command_resumes(scenes: dict, tmp_path: Path) -> None:
    out = tmp_path / "archive"
    # the second scene (768 px, 4 tiles) is still being mapped when Ctrl-C comes after the first
    longer = crop(tmp_path / ctx_name(30), 0, 0, size=768, shift_m=3e6)
    good = [scenes["good"][0], longer, scenes["good"][1]]
    args = [MOMO_GEO, "map-archive", *map(str, good), "--out", str(out),
            "--workers", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True, preexec_fn=foreground_sigint)
    manifest = out / "manifest.sqlite"
    deadline = time.monotonic() + 120
    done: dict[str, dict] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists():
            # the file exists a moment before its table: not yet created is "none done yet"
            with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(manifest) as db:
                if db.execute("SELECT count(*) FROM scenes WHERE status = 'done'").fetchone()[0]:
                    break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "run the same command again" in stderr
    done = {n: r for n, r in manifest_rows(out).items() if r["status"] == "done"}
    assert 1 <= len(done) < len(good)
    assert leftovers(out) == []
    finished = {n: (r["finished"], Path(r["mask_path"]).stat().st_mtime_ns)
                for n, r in done.items()}
    for row in manifest_rows(out).values():  # nothing of an unfinished scene was left
        if row["status"] != "done":
            assert not Path(row["mask_path"]).exists() and not Path(row["vector_path"]).exists()

    rerun = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(done)} already mapped" in rerun.stdout
    rows = manifest_rows(out)
    assert all(r["status"] == "done" for r in rows.values())
    for name, (stamp, mtime) in finished.items():  # not recomputed
        assert rows[name]["finished"] == stamp and rows[name]["attempts"] == 1
        assert Path(rows[name]["mask_path"]).stat().st_mtime_ns == mtime
    assert set(read_catalogue(out)["scene"]) == {p.name for p in good}


def test_scene_names_must_be_unique_and_the_catalogue_on_mars(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    crop(a / "scene.tif", 0, 0, size=64)
    shutil.copy(a / "scene.tif", b / "scene.tif")
    with pytest.raises(MomoGeoError, match="two scenes are named scene.tif"):
        map_archive([a / "scene.tif", b / "scene.tif"], tmp_path / "out")
    with pytest.raises(MomoGeoError, match="not a Mars CRS"):
        map_archive([a / "scene.tif"], tmp_path / "out", catalogue_crs="EPSG:4326")
    assert not (tmp_path / "out").exists()


def test_duplicates_keep_the_more_confident_feature() -> None:
    import geopandas as gpd
    from shapely.geometry import box

    from momo_geo.archive.catalogue import drop_duplicates

    frame = gpd.GeoDataFrame({
        "scene": ["a", "b", "a", "b", "a", "a"], "class_id": [1, 1, 1, 1, 1, 1],
        "mean_conf": [0.6, 0.9, 0.8, 0.7, 0.5, 0.4]},
        geometry=[box(0, 0, 1, 1), box(0.1, 0, 1.1, 1),  # the same crater in two scenes
                  box(5, 5, 6, 6), box(5.9, 5.9, 7, 7),  # neighbours that barely touch
                  box(5.2, 5.2, 5.5, 5.5),  # inside a feature of its own scene: kept
                  box(0.2, 0.2, 0.4, 0.4)])  # inside the other scene's crater: the same one
    kept, dropped = drop_duplicates(frame)
    assert dropped == 2
    assert sorted(kept["mean_conf"]) == [0.5, 0.7, 0.8, 0.9]


def test_without_dask_the_command_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from momo_geo.archive import INSTALL_HINT, require_dask

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "distributed" else real(name, *a))
    with pytest.raises(MomoGeoError) as error:
        require_dask()
    assert str(error.value) == INSTALL_HINT and "momo-geo[archive]" in INSTALL_HINT


# An interrupt that lands while a cold cluster is still settling was seen lost once on a fresh
# CI clone (all scenes then finish with exit 0); never reproduced warm. One rerun, not more:
# a Ctrl-C that is lost twice in a row is a failure.
@pytest.mark.flaky(reruns=1, reruns_delay=2)
def test_the_qgis_plugin_worker_maps_an_archive_and_cancels_like_ctrl_c(scenes: dict,
                                                                        tmp_path: Path) -> None:
    """The plugin's Processing algorithm runs ``worker.py archive`` in the engine's Python:
    progress per scene, cancel keeps finished scenes, a request again answers from them."""
    import json

    worker = ROOT / "qgis_plugin" / "momo_geo_plugin" / "worker.py"
    longer = crop(tmp_path / ctx_name(31), 0, 0, size=768, shift_m=3e6)  # still running at cancel
    request = {"scenes": [str(scenes["good"][0]), str(longer)], "out_dir": str(tmp_path / "a"),
               "model": "default", "options": {"device": "cpu"}, "workers": 1}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(worker), "archive"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        return proc

    proc = start()
    messages = []
    for line in proc.stdout:
        messages.append(json.loads(line))
        if "progress" in messages[-1]:
            proc.stdin.write("cancel\n")
            proc.stdin.flush()
            break
    rest, stderr = proc.communicate(timeout=60)
    messages += [json.loads(line) for line in rest.splitlines()]
    assert messages[-1] == {"error": "cancelled"}, (messages, stderr)
    assert "Traceback" not in stderr
    assert [m["progress"] for m in messages if "progress" in m][0] == [1, 2]
    first = manifest_rows(tmp_path / "a")
    done_first = [name for name, r in first.items() if r["status"] == "done"]
    assert len(done_first) == 1

    # Again with the finished scene only: answered from the manifest, no cluster needed.
    assert done_first == [scenes["good"][0].name]
    request["scenes"] = [str(scenes["good"][0])]
    proc = start()  # stdin stays open: closing it means "QGIS went away", a cancel
    last = {}
    for line in proc.stdout:
        last = json.loads(line)
        if "done" in last or "error" in last:
            break
    proc.stdin.close()
    proc.wait(timeout=60)
    stderr = proc.stderr.read()
    proc.stdout.close(), proc.stderr.close()
    assert proc.returncode == 0 and "done" in last, (last, stderr)
    done = last["done"]
    assert done["skipped"] == done_first and done["mapped"] == [] and done["failed"] == {}
    assert done["features"] == first[done_first[0]]["features"]
    assert Path(done["catalogue"]).is_file()


def test_a_folder_of_other_files_or_in_use_by_another_run_is_refused(tmp_path: Path) -> None:
    import socket

    from momo_geo.archive.run import RUN_LOCK, _run_lock

    scene = crop(tmp_path / "scene.tif", 0, 0, size=64)
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    with pytest.raises(MomoGeoError, match="not an archive folder of momo-geo"):
        map_archive([scene], project)
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt"]

    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / RUN_LOCK).write_text(f"{os.getpid()} {socket.gethostname()}")  # a live run
    with pytest.raises(MomoGeoError, match="another map-archive run is using it"):
        map_archive([scene], archive)
    (archive / RUN_LOCK).write_text(f"999999999 {socket.gethostname()}")  # a killed run's
    with _run_lock(archive):
        assert (archive / RUN_LOCK).read_text().split()[0] == str(os.getpid())
    assert not (archive / RUN_LOCK).exists()


def test_the_plan_skips_done_scenes_retries_failed_ones_up_to_the_limit(tmp_path: Path) -> None:
    """What a run maps, from the manifest alone (no cluster): done and unchanged is skipped;
    a changed model or options hash, missing outputs or --overwrite map it again; a failed scene
    is tried again, keeping its attempts, until max_attempts."""
    from momo_geo.archive.manifest import Manifest, SceneRecord
    from momo_geo.archive.run import ArchiveResult, _plan

    folder = tmp_path / "archive"
    (folder / "scenes").mkdir(parents=True)
    paths = [tmp_path / f"s{i}.tif" for i in range(5)]
    outputs = {}
    for path in paths:
        path.write_bytes(b"")
        outputs[path.name] = (folder / "scenes" / f"{path.stem}_mask.tif",
                              folder / "scenes" / f"{path.stem}_features.gpkg")
        for output in outputs[path.name]:
            output.write_bytes(b"x")
    rows = [("done", 1, "m", "o"), ("done", 1, "m", "other options"), ("failed", 1, "m", "o"),
            ("failed", 3, "m", "o"), ("done", 1, "m", "o")]
    outputs["s4.tif"][1].unlink()  # a done scene whose layer was deleted since
    with Manifest(folder) as manifest:
        for path, (status, attempts, model_hash, opt_hash) in zip(paths, rows, strict=True):
            mask, vector = outputs[path.name]
            manifest.put(SceneRecord(name=path.name, path=str(path), status=status,
                                     attempts=attempts, mask_path=str(mask),
                                     vector_path=str(vector), model_hash=model_hash,
                                     options_hash=opt_hash, error="x" if status == "failed"
                                     else None))

        def plan(overwrite: bool = False, model_hash: str = "m") -> tuple[dict, list]:
            result = ArchiveResult(folder, folder / "manifest.sqlite")
            todo = _plan(manifest, paths, folder, "default", model_hash, "o", overwrite, 3,
                         result)
            return {r.name: r.attempts for r in todo}, result.skipped

        assert plan() == ({"s1.tif": 0, "s2.tif": 1, "s4.tif": 0}, ["s0.tif"])
        assert manifest.get("s2.tif").status == "failed"  # until it is tried again
        assert plan(overwrite=True)[0] == dict.fromkeys(["s0.tif", "s1.tif", "s2.tif",
                                                          "s3.tif", "s4.tif"], 0)
        assert set(plan(model_hash="new model")[0]) == {p.name for p in paths}


def test_a_scene_list_has_comments_and_paths_relative_to_itself(tmp_path: Path) -> None:
    from momo_geo.archive import read_scene_list

    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "scenes.txt"
    listing.write_text("# CTX over Jezero\n\n../ctx/a.tif\n  /data/b.tif  \n# done\n")
    assert read_scene_list(listing) == [str(tmp_path / "lists" / "../ctx/a.tif"), "/data/b.tif"]
    with pytest.raises(MomoGeoError, match="cannot read the scene list"):
        read_scene_list(tmp_path / "none.txt")


def test_a_retried_scene_takes_over_the_reservation_a_dead_worker_left_elsewhere(
        scenes: dict, tmp_path: Path) -> None:
    """On a multi-machine cluster the retry runs on another host, which cannot tell that the
    dead worker's output lock is stale; the task removes it (only one task per scene runs)."""
    outputs = pytest.importorskip("momo_geo.outputs")
    from momo_geo.archive.scene_task import map_one

    scene = scenes["good"][2]
    mask, vector = tmp_path / "m_mask.tif", tmp_path / "m_features.gpkg"
    outputs._lock_path(mask).write_text("4242 another-node-of-the-cluster")
    record = map_one({"scene": str(scene), "mask_path": str(mask), "vector_path": str(vector),
                      "model": "default", "options": {"device": "cpu", "overwrite": True}})
    assert record["status"] == "done", record.get("error")
    assert mask.is_file() and vector.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mask.name, vector.name])
