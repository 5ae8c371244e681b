"""The red-team suite: every case of ``tests/redteam_cases.py`` as a real ``momo-geo`` process.

For each case: the exit status, exactly one line on stderr (none for a success) containing the
case's text, and the exact set of files before and after (files not named as written, replaced
or removed byte-identical; no staging folder or lock file left). Signals are real signals sent
while the run maps; concurrent runs are two real processes. ``docs/reliability.md`` must be what
``tests/redteam_cases.py`` renders.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from redteam_cases import CASES, DOC, Case, render
from test_outputs import make_bundle

pytestmark = pytest.mark.redteam
MOMO_GEO = str(Path(sys.executable).parent / "momo-geo")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("MOMO_GEO_DEBUG", None)
SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "HUP": signal.SIGHUP}


def _scene(path: Path, size: int, noise: bool = False) -> None:
    rng = np.random.default_rng(size)
    if noise:
        image = rng.integers(0, 255, (size, size), dtype=np.uint8)
    else:
        rows, cols = np.indices((size, size))
        image = np.where(((rows // 16) + (cols // 16)) % 2 == 1, 200, 20).astype(np.uint8)
        image += rng.integers(0, 30, image.shape, dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="uint8", crs="IAU_2015:49910",
                       transform=from_origin(0.0, 0.0, 6.0, 6.0)) as dst:
        dst.write(image, 1)


@pytest.fixture(scope="module")
def materials(tmp_path_factory) -> dict[str, Path]:
    """The model and the scenes cases copy from (made once)."""
    folder = tmp_path_factory.mktemp("materials")
    made = {"model": make_bundle(folder / "tiny.bundle")}
    for kind, size, noise in (("scene", 96, False), ("big", 1500, False),
                              ("noise", 1200, True)):
        made[kind] = folder / f"{kind}.tif"
        _scene(made[kind], size, noise)
    return made


MAKERS: dict[str, Callable[[Path, str, dict[str, Path]], None]] = {
    "scene": lambda path, arg, m: shutil.copy(m["scene"], path),
    "big": lambda path, arg, m: shutil.copy(m["big"], path),
    "noise": lambda path, arg, m: shutil.copy(m["noise"], path),
    "bundle": lambda path, arg, m: shutil.copytree(m["model"], path),
    "folder": lambda path, arg, m: path.mkdir(),
    "text": lambda path, arg, m: path.write_text(arg),
}
"""File kinds of :attr:`Case.files` (``kind`` or ``kind:argument``): one function each."""


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*"))}


def _limit(size: int | None) -> Callable[[], None] | None:
    if size is None:
        return None

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return apply


def _under_way(folder: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until ``proc`` has a staging folder in ``folder``: mapping has started."""
    deadline = time.time() + timeout
    while not any(p.name.startswith(".momo-geo-partial") for p in folder.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the run never got under way"
        time.sleep(0.1)
    time.sleep(0.3)


def run_case(case: Case, folder: Path, model: Path) -> subprocess.CompletedProcess:
    argv = [MOMO_GEO, *(a.format(tmp=folder, model=model) for a in case.argv)]
    cwd = folder / case.cwd
    options = dict(cwd=cwd, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if case.action == "run":
        return subprocess.run(argv, timeout=180, preexec_fn=_limit(case.file_size_limit),
                              **options)
    first = subprocess.Popen(argv, **options)
    _under_way(folder, first)
    if case.action.startswith("signal:"):
        first.send_signal(SIGNALS[case.action.split(":")[1]])
        out, err = first.communicate(timeout=60)
        return subprocess.CompletedProcess(argv, first.returncode, out, err)
    assert case.action == "concurrent", case.action
    try:
        second = subprocess.run(argv, timeout=120, **options)
    finally:
        first.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=60)
    assert first.returncode == 143, first_err  # the first run was not disturbed until stopped
    return second


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case, materials: dict[str, Path], tmp_path: Path) -> None:
    for name, spec in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        kind, _, argument = spec.partition(":")
        MAKERS[kind](path, argument, materials)
    (tmp_path / case.cwd).mkdir(parents=True, exist_ok=True)
    before = snapshot(tmp_path)
    proc = run_case(case, tmp_path, materials["model"])
    lines = proc.stderr.splitlines()
    assert proc.returncode == case.exit, proc.stderr
    if case.says:
        assert len(lines) == 1, proc.stderr
        assert case.says.format(tmp=tmp_path) in lines[0], lines[0]
    else:
        assert lines == [], proc.stderr
    after = snapshot(tmp_path)
    expected = (set(before) - set(case.removed)) | set(case.created)
    assert set(after) == expected, (set(after) ^ expected)
    for name in case.changed:
        assert after[name] != before[name], f"{name} was not replaced"
    for name in set(before) & set(after) - set(case.changed):
        assert after[name] == before[name], f"{name} changed"


def test_reliability_doc_is_generated_from_the_cases() -> None:
    assert DOC.is_file() and DOC.read_text() == render(), (
        "docs/reliability.md is stale: run `python tests/redteam_cases.py`")
    assert len({c.name for c in CASES}) == len(CASES)
