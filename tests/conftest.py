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
def hirise_scene(shared_data: Path) -> Path:
    if not HIRISE_SCENE.is_file():
        pytest.skip(f"{HIRISE_SCENE} missing")
    return HIRISE_SCENE
