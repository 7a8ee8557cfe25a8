"""Fold evaluation, the results table and the series runner's command line."""

import pandas as pd
import pytest

from mfutils.data import make_synthetic, validation_split
from mfutils.experiments import (
    evaluate_folds,
    fold_labels,
    rating_folds,
    summarize_folds,
    validation_grid,
)
from mfutils.models import BaselineEstimates, BiasedMF
from mfutils.results import ResultsLog, collect
from mfutils.series import _parse_value, main


@pytest.fixture(scope="module")
def data():
    return make_synthetic(80, 60, 2500, rank=3, seed=1)


def test_rating_folds_fall_back_to_seeded_kfold(data, ml100k):
    folds, protocol = rating_folds(data, seed=3)
    assert protocol == "5-fold random, seed 3" and len(folds) == 5
    again, _ = rating_folds(data, seed=3)
    assert all((a[1].user == b[1].user).all() for a, b in zip(folds, again, strict=True))
    canonical, label = rating_folds(ml100k)
    assert label == "u1..u5" and [len(test) for _, test in canonical] == [20_000] * 5
    assert fold_labels(label) == ["u1", "u2", "u3", "u4", "u5"]
    assert fold_labels(protocol, 2) == ["fold 1", "fold 2"]


def test_evaluate_and_summarize_folds(data):
    folds, _ = rating_folds(data)
    per_fold = pd.concat(
        [
            evaluate_folds(lambda: BaselineEstimates(device="cpu"), folds[:2], name="base"),
            evaluate_folds(lambda: BiasedMF(3, epochs=3, device="cpu"), folds[:2], name="mf"),
        ]
    )
    assert list(per_fold.fold) == ["u1", "u2"] * 2
    summary = summarize_folds(per_fold)
    assert list(summary.model) == ["base", "mf"] and (summary.folds == 2).all()
    assert summary.rmse_mean.between(0.3, 2).all()


def test_validation_grid_is_sorted_best_first(data):
    fit_part, valid_part = validation_split(data, fraction=0.2, seed=0)
    grid = [{"reg_item": r, "reg_user": r} for r in (0, 5, 50)]
    table = validation_grid(
        lambda **o: BaselineEstimates(device="cpu", **o), grid, fit_part, valid_part
    )
    assert table.valid_rmse.is_monotonic_increasing and len(table) == 3


def test_results_log_and_collect(tmp_path):
    for notebook, value in (("01_a", 0.9), ("02_b", 0.8)):
        log = ResultsLog(notebook, tmp_path / "results")
        log.add("m", "rmse", value, dataset="ml-100k", protocol="u1")
        log.save()
    log.save()  # saving again rewrites, never duplicates
    table = collect(tmp_path / "results", out_dir=tmp_path)
    assert table.value.tolist() == [0.9, 0.8]
    assert "| 02_b | m | rmse | 0.8000 | ml-100k | u1 |" in (tmp_path / "results.md").read_text()
    assert ResultsLog("x", None).save() is None


def test_series_parameters_and_empty_selection(tmp_path):
    assert _parse_value("3") == 3 and _parse_value("[1, 2]") == [1, 2]
    assert _parse_value("cpu") == "cpu"
    with pytest.raises(SystemExit):
        main(["--notebooks", str(tmp_path), "--output", str(tmp_path / "out")])
