"""Shared fixtures: where the real Mars data lives, and small helpers for tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MOMO_GEO_SHARED_DATA", ROOT.parent / "shared" / "data"))
HIRISE_SCENE = SHARED_DATA / "hirise_scene" / "ESP_037156_1800_RED.byte.tif"


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
