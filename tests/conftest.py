"""Shared fixtures: the real ML-100K files (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mfutils.data import Ratings, load_movielens


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Folder holding ``ml-100k/``: ``$MFUTILS_DATA_DIR``, else the repo's ``../shared/data``."""
    env = os.environ.get("MFUTILS_DATA_DIR")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (root / "ml-100k" / "u.data").is_file():
        pytest.skip(f"the real ML-100K files are absent ({root / 'ml-100k' / 'u.data'} not found)")
    return root


@pytest.fixture(scope="session")
def ml100k(shared_data_dir: Path) -> Ratings:
    """The real ML-100K, loaded once per session."""
    return load_movielens("ml-100k", data_dir=shared_data_dir, download=False)
