"""The series beyond ML-100K: notebooks 00-06 run end to end on an ml-latest-small replica.

The replica (``mfutils.data.write_release``) has the layout of ml-latest-small -- ``ratings.csv``
with half stars, ``movies.csv``, no user table, no canonical folds -- so every notebook takes its
"other release" branches: seeded random folds labelled ``fold 1..5``, no demographics, relative
asserts instead of ML-100K's absolute targets. Light parameters keep it to a few minutes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import mfutils.data
from mfutils.series import INLINE_BACKEND, missing_figures

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
DATASET = "ml-latest-small"
LIGHT = {  # smaller grids than the defaults; every notebook still runs every section
    "00_movielens": {},
    "01_baseline_estimates": {"reg_grid": [0, 10]},
    "02_matrix_factorization": {"factor_grid": [20], "reg_grid": [0.08, 0.15]},
    "03_neighborhood_model": {"knn_k_grid": [20], "global_k_grid": [25]},
    "04_asymmetric_svd_and_svdpp": {},
    "05_integrated_model": {},
    "06_temporal_dynamics": {"lr_time_grid": [1.0], "reg_time_grid": [0.5], "bin_grid": [4]},
}

if not hasattr(mfutils.data, "write_release"):
    pytest.skip(
        "mfutils.data.write_release (the MovieLens-shaped replicas) is not available yet",
        allow_module_level=True,
    )
papermill = pytest.importorskip("papermill")


@pytest.fixture(scope="module")
def replica(latest_small_full_replica_dir) -> Path:
    """The folder of the full-size ml-latest-small replica of ``conftest.py`` (100,836
    ratings: the release's size and difficulty, the data the defaults must work on)."""
    return latest_small_full_replica_dir


@pytest.mark.parametrize("name", list(LIGHT))
def test_notebook_runs_on_ml_latest_small(name, replica, tmp_path, monkeypatch):
    # the kernels inherit the environment: the replica, this checkout's mfutils, one thread
    monkeypatch.setenv("MFUTILS_DATA_DIR", str(replica))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", INLINE_BACKEND)  # as `make run`: figures, not "<Axes>"
    monkeypatch.setenv("MFUTILS_DEVICE", "cpu")
    results = tmp_path / "results"
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK_DIR / f"{name}.ipynb"),
        str(out),
        kernel_name="python3",
        parameters={"dataset": DATASET, "results_dir": str(results), **LIGHT[name]},
        cwd=str(NOTEBOOK_DIR),
        progress_bar=False,
    )
    text = "\n".join(
        "".join(output.get("text", ""))
        for cell in json.loads(out.read_text())["cells"]
        for output in cell.get("outputs", ())
    )
    assert missing_figures(out) == [], "a drawing cell of the executed notebook has no image"
    if name != "00_movielens":  # the others log numbers, under this release's protocol
        logged = (results / f"{name}.csv").read_text()
        assert DATASET in logged and "u1" not in logged, logged
    if name in ("00_movielens", "04_asymmetric_svd_and_svdpp"):  # no user table: skipped
        assert "has no user table" in text, text
