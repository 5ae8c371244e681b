"""A normal, non-editable install works from an unrelated folder, as a new user would have it.

The wheel is built from the checkout (``pip wheel --no-build-isolation --no-index``: no network)
and installed with ``--no-deps`` into a fresh venv; that venv reaches the dependencies already
installed for the tests through a ``.pth`` file (and the system site-packages where the project
venv uses them), never the checkout. Every command then runs from a temporary folder:
``--help``, ``info`` and ``map`` on the sample scene with the wheel's bundled weights, and a tiny
``pretrain`` and ``finetune``. The editable development venv hides packaging mistakes (a missing
import, code or data outside the package); this test does not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "crater_field.tif"
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "momo_geo")


@dataclass
class Installed:
    python: Path
    momo_geo: Path
    site_packages: Path
    work: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """``momo-geo ARGS`` from the work folder; fails the test with its stderr if it fails."""
        proc = subprocess.run([str(self.momo_geo), *args], cwd=self.work, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"momo-geo {args[0]}: {proc.stderr[-3000:]}"
        return proc

    def python_c(self, code: str) -> str:
        proc = subprocess.run([str(self.python), "-c", code], cwd=self.work, env=self.env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.strip()


def _require_build_backend() -> None:
    """Building without isolation uses this venv's setuptools: say so if it is too old."""
    import re
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    # [build-system] requires = [...] (tomllib is Python >= 3.11; momo-geo supports 3.10)
    line = re.search(r"^requires\s*=\s*\[(.*)\]", (ROOT / "pyproject.toml").read_text(), re.M)
    assert line, "pyproject.toml has no [build-system] requires"
    for text in re.findall(r'"([^"]+)"', line.group(1)):
        requirement = Requirement(text)
        try:
            found = version(requirement.name)
        except PackageNotFoundError:
            found = None
        if found is None or not requirement.specifier.contains(found, prereleases=True):
            pytest.fail(f"building the wheel offline needs {text} in this venv (found "
                        f"{found or 'none'}): pip install '{text}'")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout (building in place would leave build/)."""
    _require_build_backend()
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, source / name)
    out = tmp / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "--no-build-isolation", "--no-index", "-w", str(out), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = out.glob("momo_geo-*.whl")
    return built


def _dependency_paths() -> tuple[list[str], bool]:
    """This interpreter's own site-packages, and whether it also sees the system's."""
    paths = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    config = Path(sys.prefix) / "pyvenv.cfg"
    system = sys.prefix == sys.base_prefix or (
        config.is_file() and "include-system-site-packages = true" in config.read_text())
    return [p for p in paths if Path(p).is_dir()], system


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """A fresh venv holding only the wheel, and an empty work folder to run it from."""
    tmp = tmp_path_factory.mktemp("install")
    venv = tmp / "venv"
    paths, system = _dependency_paths()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)]
                   + (["--system-site-packages"] if system else []), check=True, timeout=120)
    python = venv / "bin" / "python"
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                           "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    site_packages = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    (site_packages / "_test_dependencies.pth").write_text("\n".join(paths) + "\n")
    work = tmp / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MOMO_GEO_DEBUG")}
    env["OMP_NUM_THREADS"] = "1"
    return Installed(python, venv / "bin" / "momo-geo", site_packages, work, env)


def test_the_wheel_holds_the_training_code_and_the_bundled_weights(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "momo_geo/training/__init__.py" in names
    assert {"momo_geo/training/pretrain.py", "momo_geo/training/finetune.py"} <= set(names)
    for bundle in sorted((ROOT / "momo_geo" / "weights").glob("*.bundle")):
        for part in ("card.json", "weights.safetensors"):
            assert f"momo_geo/weights/{bundle.name}/{part}" in names
    outside = [n for n in names if not n.startswith(("momo_geo/", "momo_geo-"))]
    assert outside == []  # nothing at the top level beside the package and its metadata


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Installed) -> None:
    where = installed.python_c("import momo_geo, sys; print(momo_geo.__file__)")
    assert Path(where).is_relative_to(installed.site_packages), where
    weights = installed.python_c(
        "from momo_geo.bundle import resolve_bundle_path; print(resolve_bundle_path('default'))")
    assert Path(weights).is_relative_to(installed.site_packages), weights
    found = installed.python_c("import importlib.util as u; print(u.find_spec('training'))")
    assert found == "None"  # the checkout's training/ folder is not reachable


def test_help_info_map_models_and_sample_scene(installed: Installed) -> None:
    from momo_geo.bundle import load_card

    help_text = installed.run("--help").stdout
    assert "map" in help_text and "pretrain" in help_text and "finetune" in help_text
    scene = installed.work / SAMPLE.name
    shutil.copy2(SAMPLE, scene)
    info = json.loads(installed.run("info", scene.name, "--json").stdout)
    assert info["body"] == "Mars" and info["width"] > 0
    mapped = installed.run("map", scene.name, "-q").stdout
    assert f"model {load_card('default').name} " in mapped
    assert (installed.work / "crater_field_mask.tif").is_file()
    assert (installed.work / "crater_field_features.gpkg").is_file()
    models = json.loads(installed.run("models", "--json").stdout)
    assert models and all(row["installed"] for row in models)
    installed.run("sample-scene", "synthetic.tif", "--size", "64")
    assert (installed.work / "synthetic_truth.tif").is_file()


def test_tiny_pretrain(installed: Installed, shared_data: Path) -> None:
    pytest.importorskip("lightning", reason="pretraining needs the [train] extra (Lightning)")
    from momo_geo.bundle import load_card

    installed.run("pretrain", "-o", "pre", "--sensors", "hirise", "--data-root",
                  str(shared_data), "--encoder", "vit_tiny", "--img-size", "32", "--samples",
                  "16", "--batch-size", "8", "--checkpoint-every", "8", "--pool-size", "16",
                  "--val-size", "4", "--threads", "1", "--accelerator", "cpu", "--loss",
                  "pixel=1")
    card = load_card(installed.work / "pre" / "encoder.bundle")
    assert card.task == "pretrain" and card.sensors == ["hirise"]


def _themis_like(root: Path, images: int = 6) -> Path:
    """Synthetic crater images (96 px) with YOLO labels, laid out like themis_craters/."""
    from PIL import Image

    from momo_geo.synthetic import render_crater_field

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(images):
        field = render_crater_field(size=(96, 96), gsd=100.0, seed=i, crater_cover=0.15,
                                    min_diameter_m=600, max_diameter_m=2400)
        Image.fromarray(field.image).save(root / "images" / f"crater{i}.png")
        rows = [f"0 {(c.col + 0.5) / 96} {(c.row + 0.5) / 96} {c.diameter_m / 9600} "
                f"{c.diameter_m / 9600}" for c in field.craters.itertuples()]
        (root / "labels" / f"crater{i}.txt").write_text("\n".join(rows) + "\n")
    return root


def test_tiny_finetune(installed: Installed) -> None:
    pytest.importorskip("lightning", reason="fine-tuning needs the [train] extra (Lightning)")
    from momo_geo.bundle import load_card

    data = _themis_like(installed.work / "themis_like")
    out = installed.run("finetune", "--task", "themis-craters", "--data", data.name, "--out",
                        "seg.bundle", "--epochs", "1", "--chips", "16", "--input-size", "32",
                        "--batch-size", "16").stdout
    assert "wrote seg.bundle" in out
    card = load_card(installed.work / "seg.bundle")
    assert card.task == "segmentation" and card.class_names == ["background", "crater"]
