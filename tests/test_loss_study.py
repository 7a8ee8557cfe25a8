"""The loss comparison of notebook 12: presets, tuning per loss, the summary table."""

import json

import pytest

from mfutils.data import make_synthetic
from mfutils.experiments import (
    ablation,
    compare_losses,
    ranking_split,
    refit_study,
    study_record,
    tuned_table,
)
from mfutils.losses import LOSSES
from mfutils.losses.presets import LOSS_GRIDS, LossGrid
from mfutils.models import TwoTower


def test_every_loss_has_a_preset_with_a_small_grid():
    assert {grid.base["loss"] for grid in LOSS_GRIDS.values()} == set(LOSSES)
    assert all(1 <= len(grid.grid) <= 3 for grid in LOSS_GRIDS.values())


def test_compare_losses_tunes_each_loss_and_tabulates_the_choice():
    split = ranking_split(make_synthetic(60, 40, 1500, rank=3, seed=2), seed=0)
    grids = {
        "bpr": LOSS_GRIDS["bpr"],
        "ssm": LossGrid(LOSS_GRIDS["ssm"].base, [{"negatives": "popularity", "n_negatives": 16}]),
        "directau": LOSS_GRIDS["directau"],
    }
    tuned = compare_losses(split, grids=grids, epochs=2, patience=1, progress=False, device="cpu")
    assert list(tuned) == list(grids)
    for name, result in tuned.items():
        assert result.model.config["loss"] == name
        assert len(result.grid) == len(grids[name].grid)
        assert 0.0 <= result.scores["ndcg@20"] <= 1.0
    table = tuned_table(tuned)
    assert list(table.index) == list(grids)
    assert "epochs=" in table.loc["bpr", "chosen"]
    assert table.loc["ssm", "ndcg@20"] == pytest.approx(tuned["ssm"].scores["ndcg@20"])
    with pytest.raises(ValueError, match="unknown losses"):
        compare_losses(split, losses=["nope"], progress=False)

    record = json.loads(json.dumps(study_record(tuned)))  # as the benchmark saves it
    again = refit_study(record, split, grids=grids, device="cpu", progress=False)
    for name, result in again.items():
        assert result.scores == pytest.approx(tuned[name].scores)
        assert result.grid.shape == tuned[name].grid.shape
    # a preset changed since the run: the replay still fits the recorded settings
    changed = {**grids, "ssm": LossGrid({**grids["ssm"].base, "lr": 0.3}, grids["ssm"].grid)}
    replay = refit_study({"ssm": record["ssm"]}, split, grids=changed, device="cpu", progress=False)
    assert replay["ssm"].scores == pytest.approx(tuned["ssm"].scores)
    assert replay["ssm"].model.config["lr"] == grids["ssm"].base["lr"]
    old = {"ssm": {k: v for k, v in record["ssm"].items() if k != "base"}}  # older records
    assert (
        refit_study(old, split, grids=changed, device="cpu", progress=False)["ssm"].model.config[
            "lr"
        ]
        == 0.3
    )


def test_ablation_scores_each_labelled_variant_on_validation():
    split = ranking_split(make_synthetic(60, 40, 1500, rank=3, seed=2), seed=0)
    variants = {
        "in-batch": {"negatives": "in-batch"},
        "in-batch + logQ": {"negatives": "in-batch", "logq": "exact"},
    }
    table = ablation(
        lambda **o: TwoTower(**{"loss": "softmax", "epochs": 2, "device": "cpu", **o}),
        variants,
        split,
        progress=False,
    )
    assert list(table.index) == list(variants)
    assert table["valid ndcg@20"].between(0, 1).all()
    assert (table["best_epoch"] >= 1).all()
