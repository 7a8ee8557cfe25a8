"""The loss comparison of notebook 12: presets, tuning per loss, the summary table."""

import json

import pytest

from mfutils.data import make_synthetic
from mfutils.experiments import (
    ablation,
    compare_losses,
    ranking_split,
    refit_study,
    seeds_table,
    study_record,
    tuned_table,
)
from mfutils.losses import LOSSES
from mfutils.losses.presets import LOSS_SPACES, SAMPLERS, LossSpace, expand
from mfutils.models import TwoTower


def test_every_loss_has_a_start_inside_its_search_space():
    assert {space.base["loss"] for space in LOSS_SPACES.values()} == set(LOSSES)
    for name, space in LOSS_SPACES.items():
        assert "lr" in space.space, f"{name} does not search its learning rate"
        for key, value in space.start.items():
            kind, *bounds = space.space[key]
            if kind == "choice":
                assert value in bounds, (name, key)
            else:
                assert bounds[0] <= value <= bounds[1], (name, key)
        TwoTower(**space.base, **expand(space.start), device="cpu")  # a valid model
    softmax_family = ("ssm", "softmax", "infonce+", "mine+")
    assert all("loss_options.temperature" in LOSS_SPACES[n].space for n in softmax_family)
    negatives = [n for n in LOSS_SPACES if n not in ("directau", "mawu")]
    assert all(LOSS_SPACES[n].space["sampler"] == ("choice", *SAMPLERS) for n in negatives)


def test_expand_gathers_the_sampler_and_the_loss_options():
    assert expand({"sampler": "uniform-64", "lr": 0.1, "loss_options.temperature": 0.2}) == {
        "negatives": "uniform",
        "n_negatives": 64,
        "lr": 0.1,
        "loss_options": {"temperature": 0.2},
    }


def test_compare_losses_gives_every_loss_the_same_budget_and_replays_exactly():
    split = ranking_split(make_synthetic(60, 40, 1500, rank=3, seed=2), seed=0)
    spaces = {
        "bpr": LOSS_SPACES["bpr"],
        "ssm": LossSpace(
            LOSS_SPACES["ssm"].base,
            {"sampler": "shared-1024", "lr": 3e-3, "loss_options.temperature": 0.2},
            {"lr": ("log", 1e-3, 1e-2), "loss_options.temperature": ("log", 0.05, 1.0)},
        ),
    }
    tuned = compare_losses(
        split, spaces=spaces, trials=3, epochs=2, patience=1, progress=False, device="cpu"
    )
    assert list(tuned) == list(spaces)
    for name, result in tuned.items():
        assert result.model.config["loss"] == name
        assert len(result.grid) == 3  # the same number of trials for every loss
        assert result.grid["valid_ndcg@20"].is_monotonic_decreasing
        assert 0.0 <= result.scores["ndcg@20"] <= 1.0
    first = tuned["ssm"].grid.sort_values("fit_seconds").iloc[0]  # any row: all are trials
    assert {"lr", "loss_options.temperature", "valid_ndcg@20", "best_epoch"} <= set(first.index)
    table = tuned_table(tuned)
    assert list(table.index) == list(spaces)
    assert "epochs=" in table.loc["bpr", "chosen"]
    with pytest.raises(ValueError, match="unknown losses"):
        compare_losses(split, losses=["nope"], progress=False)

    record = json.loads(json.dumps(study_record(tuned)))  # as the benchmark saves it
    again = refit_study(record, split, device="cpu", progress=False)
    for name, result in again.items():
        assert result.scores == pytest.approx(tuned[name].scores)
        assert result.grid.shape == tuned[name].grid.shape
    old = {"ssm": {k: v for k, v in record["ssm"].items() if k != "base"}}
    with pytest.raises(ValueError, match=r"no base settings for \['ssm'\]"):
        refit_study(old, split, device="cpu", progress=False)


def test_seeds_table_averages_the_seeds_and_marks_the_ties():
    def record(**ndcg):
        return {k: {"scores": {"recall@20": v, "ndcg@20": v}} for k, v in ndcg.items()}

    table = seeds_table({0: record(a=0.40, b=0.40, c=0.30), 1: record(a=0.42, b=0.41, c=0.31)})
    assert list(table.index) == ["a", "b", "c"]
    assert table.loc["a", "ndcg@20 mean"] == pytest.approx(0.41)
    assert table.loc["a", "ndcg@20 std"] == pytest.approx(0.0141421, rel=1e-4)
    assert table["tie"].tolist() == [True, True, False]  # b is within one std of a
    assert (table["seeds"] == 2).all()


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
