"""Shared fixtures: the real ML-100K files (skipped when absent), a synthetic ml-latest-small."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mfutils.data import Ratings, load_movielens, write_release


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


@pytest.fixture(scope="session")
def latest_small_replica_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data directory holding a synthetic ml-latest-small replica (scale 0.2, seed 0)."""
    root = tmp_path_factory.mktemp("replicas")
    write_release(root, "ml-latest-small", scale=0.2, seed=0)
    return root


@pytest.fixture(scope="session")
def latest_small_replica(latest_small_replica_dir: Path) -> Ratings:
    """The ml-latest-small replica (~20k ratings, 122 users, 1,948 movies), loaded once."""
    return load_movielens("ml-latest-small", data_dir=latest_small_replica_dir, download=False)


@pytest.fixture(scope="session")
def latest_small_full_replica_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data directory holding an ml-latest-small replica at full size (scale 1, seed 0)."""
    root = tmp_path_factory.mktemp("full-replica")
    write_release(root, "ml-latest-small", scale=1.0, seed=0)
    return root


@pytest.fixture(scope="session")
def latest_small_full_replica(latest_small_full_replica_dir: Path) -> Ratings:
    """The full-size ml-latest-small replica (100,836 ratings, 610 users), loaded once."""
    return load_movielens("ml-latest-small", data_dir=latest_small_full_replica_dir, download=False)
