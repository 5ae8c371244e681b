"""Shared fixtures: where the real Mars data lives, and small helpers for tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MOMO_GEO_SHARED_DATA", ROOT.parent / "shared" / "data"))
HIRISE_SCENE = SHARED_DATA / "hirise_scene" / "ESP_037156_1800_RED.byte.tif"


@pytest.fixture
def one_torch_thread():
    """Run a test's small models on one torch thread.

    On a 2-core machine shared with other work, tiny models run several times faster on one
    thread than on two competing ones; the previous setting is restored afterwards.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real Mars data); tests using it skip with a reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real Mars data not found at {SHARED_DATA} (set MOMO_GEO_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def hirise_scene(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real HiRISE scene, copied: QGIS and GDAL write ``.aux.xml`` statistics and default
    outputs beside a scene they read, and the shared data must stay as it is."""
    if not HIRISE_SCENE.is_file():
        pytest.skip(f"{HIRISE_SCENE} missing")
    import shutil

    copy = tmp_path_factory.mktemp("hirise_scene") / HIRISE_SCENE.name
    shutil.copyfile(HIRISE_SCENE, copy)
    return copy


@pytest.fixture(scope="session", autouse=True)
def shared_data_stays_untouched():
    """No test may write into ``../shared/data`` (GDAL ``.aux.xml`` statistics, default
    outputs beside a scene): every file there is listed before the session and after it."""
    def listing() -> set[str]:
        if not SHARED_DATA.is_dir():
            return set()
        return {str(p.relative_to(SHARED_DATA)) for p in SHARED_DATA.rglob("*")}

    before = listing()
    yield
    added = sorted(listing() - before)
    assert not added, f"tests wrote into the shared data: {added[:5]}"
