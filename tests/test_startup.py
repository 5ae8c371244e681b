"""Start-up: ``momo-geo --help`` and bad-path errors come before anything heavy is imported, and
work where torch cannot be imported at all; mapping a real scene never loads TorchGeo or
matplotlib (they are for the training datasets only).

Imports are per process, so every case runs ``momo_geo.cli.main`` in a fresh interpreter, with a
meta-path finder that refuses (and records) the heavy packages. Wall time is not asserted here
(a busy machine would make such a test flaky); ``benchmarks/bench_startup.py`` measures it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "crater_field.tif"
HEAVY = ("torch", "timm", "torchgeo", "matplotlib", "lightning")
"""Packages a command must not even try to import before its arguments are checked."""

# Runs one command line in this interpreter; writes what it imported to the report file.
RUNNER = """
import json, sys

report, blocked, argv = sys.argv[1], set(json.loads(sys.argv[2])), sys.argv[3:]
attempted = []


class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            attempted.append(name)
            raise ImportError(f"{name} is blocked by this test")
        return None


sys.meta_path.insert(0, Refuse())
code = 0
try:
    from momo_geo.cli import main

    main(argv)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
finally:
    loaded = sorted({name.partition(".")[0] for name in sys.modules})
    with open(report, "w") as handle:
        json.dump({"attempted": attempted, "loaded": loaded}, handle)
sys.exit(code)
"""


def run_momo_geo(args: list[str], tmp_path: Path, blocked: tuple[str, ...] = HEAVY,
                 timeout: float = 120) -> tuple[subprocess.CompletedProcess, dict]:
    """``momo-geo ARGS`` in a fresh interpreter with ``blocked`` packages unimportable."""
    report = tmp_path / "imports.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MOMO_GEO_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(report), json.dumps(blocked),
                           *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, json.loads(report.read_text())


def test_help_lists_every_command_without_heavy_imports(tmp_path: Path) -> None:
    from momo_geo.cli import COMMANDS

    proc, imports = run_momo_geo(["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for name in COMMANDS:
        assert f"  {name} " in proc.stdout, name
    assert imports["attempted"] == []
    assert "rasterio" not in imports["loaded"]  # GDAL is for commands that read rasters


MISSING = "/no/such/file.tif"
SAMPLE_ARG = str(SAMPLE)
# {tmp} is the test's temporary folder; {tmp}/a_folder exists, nothing else there does.
BAD_INPUTS = {
    "map-missing": (["map", MISSING], f"{MISSING}: no such file"),
    "map-second-missing": (["map", SAMPLE_ARG, "{tmp}/gone.tif"], "gone.tif: no such file"),
    "map-model": (["map", SAMPLE_ARG, "--model", "{tmp}/none.bundle"],
                  "none.bundle: no such model bundle"),
    "map-folder": (["map", "{tmp}/a_folder"], "is a directory"),
    "map-archive-missing": (["map-archive", MISSING, "--out", "{tmp}/archive"],
                            f"{MISSING}: no such file"),
    "map-archive-list": (["map-archive", "--list", "{tmp}/none.txt", "--out", "{tmp}/archive"],
                         "none.txt: no such file"),
    "map-archive-out-folder": (["map-archive", SAMPLE_ARG, "--out", "{tmp}/nothing/archive"],
                               "nothing: output folder does not exist"),
    "map-archive-model": (["map-archive", SAMPLE_ARG, "--out", "{tmp}/archive", "--model",
                           "{tmp}/none.bundle"], "none.bundle: no such model bundle"),
    "info-missing": (["info", MISSING], f"{MISSING}: no such file"),
    "info-folder": (["info", "{tmp}/a_folder"], "a_folder: is a folder, not a file"),
    "models": (["models", "{tmp}/none.bundle"], "no such model bundle"),
    "evaluate-data": (["evaluate", "--task", "themis-craters", "--data", "{tmp}/nothing"],
                      "nothing: no such folder"),
    "evaluate-model": (["evaluate", "--task", "themis-craters", "--data", "{tmp}/a_folder",
                        "--model", "{tmp}/none.bundle"], "none.bundle: no such model bundle"),
    "finetune-data": (["finetune", "--task", "themis-craters", "--data", "{tmp}/nothing",
                       "--out", "{tmp}/out.bundle"], "nothing: no such folder"),
    "finetune-encoder": (["finetune", "--task", "themis-craters", "--data", "{tmp}/a_folder",
                          "--encoder", "{tmp}/none.bundle", "--out", "{tmp}/out.bundle"],
                         "none.bundle: no such model bundle"),
    "pretrain-config": (["pretrain", "--config", "{tmp}/none.json"], "none.json: no such file"),
    "pretrain-data-root": (["pretrain", "-o", "{tmp}/run", "--data-root", "{tmp}/nothing"],
                           "nothing: no such folder"),
    "map-output-folder": (["map", SAMPLE_ARG, "-o", "{tmp}/nothing/mask.tif"],
                          "nothing: output folder does not exist"),
    "sample-scene-output-folder": (["sample-scene", "{tmp}/nothing/scene.tif"],
                                   "nothing: output folder does not exist"),
    "evl-run": (["evl", "{tmp}/nothing"], "nothing: no such file or folder"),
    "evl-no-log": (["evl", "{tmp}/a_folder"], "val_log.csv: no validation-loss log"),
    "evl-method": (["evl", "{tmp}/a_folder", "--method", "median"],
                   "unknown selection method 'median'"),
    "evl-output-folder": (["evl", "{tmp}/a_folder", "-o", "{tmp}/nothing/evl.json"],
                          "nothing: output folder does not exist"),
    "merge-runs": (["merge", "--runs", "{tmp}/nothing", "-o", "{tmp}/out.bundle"],
                   "nothing: no such file or folder"),
    "import-weights": (["import-weights", "{tmp}/momo.pth", "--arch", "vit_small", "-o",
                        "{tmp}/out.bundle"], "momo.pth: no such file"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_a_bad_path_is_one_line_before_any_heavy_import(case: str, tmp_path: Path) -> None:
    (tmp_path / "a_folder").mkdir()
    template, expected = BAD_INPUTS[case]
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in template]
    proc, imports = run_momo_geo(args, tmp_path)
    lines = proc.stderr.splitlines()
    assert proc.returncode in (1, 2), proc.stderr  # 2: click's own usage errors
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and expected in lines[0], lines[0]
    assert proc.stdout == ""
    assert imports["attempted"] == [], f"{args[0]} tried {imports['attempted']} first"
    assert not (tmp_path / "out.bundle").exists() and not (tmp_path / "run").exists()


def test_map_archive_without_dask_says_which_extra_to_install(tmp_path: Path) -> None:
    proc, imports = run_momo_geo(["map-archive", SAMPLE_ARG, "--out", str(tmp_path / "archive")],
                                 tmp_path, blocked=(*HEAVY, "dask", "distributed"))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == ["Error: map-archive needs Dask: pip install "
                                        "'momo-geo[archive]'"]
    assert not set(HEAVY) & {name.partition(".")[0] for name in imports["attempted"]}
    assert not (tmp_path / "archive").exists()


@pytest.fixture
def small_scene(tmp_path: Path) -> Path:
    """The top-left 320 x 320 px of the sample scene, with its CRS and georeference."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(SAMPLE) as src:  # a crop at the origin keeps the scene's transform
        profile = {**src.profile, "width": 320, "height": 320, "tiled": False}
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        data = src.read(window=Window(0, 0, 320, 320))
    path = tmp_path / "crater_field_crop.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_mapping_a_scene_loads_neither_torchgeo_nor_matplotlib(small_scene: Path,
                                                               tmp_path: Path) -> None:
    mask, vector = tmp_path / "mask.tif", tmp_path / "features.gpkg"
    proc, imports = run_momo_geo(["map", str(small_scene), "-o", str(mask), "--vector",
                                  str(vector), "-q"], tmp_path, blocked=())
    assert proc.returncode == 0, proc.stderr
    assert mask.is_file() and vector.is_file()
    assert {"torch", "timm"} <= set(imports["loaded"])  # the default ViT model really ran
    assert not {"torchgeo", "matplotlib", "lightning"} & set(imports["loaded"])
