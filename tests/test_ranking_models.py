"""Implicit-feedback models: iALS against the closed-form solve, EASE, popularity, the protocol."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mfutils.data import make_synthetic, to_implicit
from mfutils.experiments import evaluate_ranking, ranking_grid, ranking_split, tune_and_test
from mfutils.models import EASE, ImplicitALS, MostPopular, TwoTower
from mfutils.models.base import HEADER_KEY, Model
from mfutils.train import TrainingCollapsed


@pytest.fixture(scope="module")
def events():
    return to_implicit(make_synthetic(50, 30, 500, rank=3, seed=4))


def _dense(data):
    x = np.zeros((data.n_users, data.n_items))
    x[data.user, data.item] = 1.0
    return x


def _closed_form(fixed, x, alpha, reg):
    """HKV08 eq. 4 for every row of ``x``, one dense solve per row over *all* columns."""
    out = []
    for row in x:
        c = 1.0 + alpha * row
        a = fixed.T @ (c[:, None] * fixed) + reg * np.eye(fixed.shape[1])
        out.append(np.linalg.solve(a, fixed.T @ (c * row)))
    return np.array(out)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_one_sweep_equals_the_closed_form_solve(events, solver):
    model = ImplicitALS(
        n_factors=4,
        reg=0.5,
        alpha=3.0,
        epochs=1,
        solver=solver,
        cg_steps=40,
        init_std=0.3,
        device="cpu",
    )
    gen = torch.Generator().manual_seed(0)  # the initial factors fit() draws
    torch.randn(events.n_users, 4, generator=gen)
    item0 = (0.3 * torch.randn(events.n_items, 4, generator=gen)).double().numpy()
    model.fit(events)
    x = _dense(events)
    users = _closed_form(item0, x, 3.0, 0.5)
    items = _closed_form(users, x.T, 3.0, 0.5)
    np.testing.assert_allclose(model.user_factors.numpy(), users, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(model.item_factors.numpy(), items, rtol=1e-3, atol=1e-4)


def test_conjugate_gradient_approaches_cholesky(events):
    exact = ImplicitALS(n_factors=6, epochs=3, solver="cholesky", device="cpu").fit(events)
    approx = ImplicitALS(n_factors=6, epochs=3, cg_steps=6, device="cpu").fit(events)
    users = torch.arange(events.n_users)
    np.testing.assert_allclose(approx.score_items(users), exact.score_items(users), atol=2e-3)


def test_small_chunks_give_the_same_factors(events):
    whole = ImplicitALS(n_factors=4, epochs=2, device="cpu").fit(events)
    pieces = ImplicitALS(n_factors=4, epochs=2, chunk_floats=64, device="cpu").fit(events)
    torch.testing.assert_close(pieces.user_factors, whole.user_factors)
    exact = ImplicitALS(n_factors=4, epochs=2, solver="cholesky", device="cpu").fit(events)
    exact_pieces = ImplicitALS(
        n_factors=4, epochs=2, solver="cholesky", chunk_floats=64, device="cpu"
    ).fit(events)
    torch.testing.assert_close(exact_pieces.item_factors, exact.item_factors)


def test_ease_matches_its_closed_form(events):
    model = EASE(reg=5.0, device="cpu").fit(events)
    x = _dense(events)
    p = np.linalg.inv(x.T @ x + 5.0 * np.eye(events.n_items))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    scores = model.score_items(torch.arange(events.n_users)).numpy()
    np.testing.assert_allclose(scores, x @ b, atol=1e-4)


def test_unknown_users_get_popularity_and_seen_items_are_excluded(events):
    train = events.subset(events.user != 0)  # user 0 has no training events
    model = ImplicitALS(n_factors=4, epochs=2, device="cpu").fit(train)
    scores = model.score_items(torch.tensor([0, events.n_users + 5, -1]))
    counts = torch.as_tensor(train.item_counts(), dtype=torch.float32)
    assert torch.equal(scores, counts.expand(3, -1))
    items, _ = model.recommend([1, 2], k=5)
    for user, row in zip([1, 2], items, strict=True):
        assert not set(row) & set(train.item[train.user == user])
    with pytest.raises(ValueError, match="k=0"):
        model.recommend([1], k=0)


def test_most_popular_ranks_by_count(events):
    model = MostPopular(device="cpu").fit(events)
    items, _ = model.recommend([3], k=3, exclude_seen=False)
    counts = events.item_counts()
    assert list(counts[items[0]]) == sorted(counts, reverse=True)[:3]


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="solver"):
        ImplicitALS(solver="lu")
    with pytest.raises(ValueError, match="n_factors"):
        ImplicitALS(n_factors=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        ImplicitALS().score_items(torch.tensor([0]))


def test_ranking_split_is_per_user_and_disjoint():
    data = make_synthetic(80, 60, 2400, rank=3, seed=1)
    split = ranking_split(data, seed=3)
    assert len(split.train) + len(split.test) == len(data)
    assert len(split.fit) + len(split.valid) == len(split.train)
    pairs = {*zip(split.train.user, split.train.item, strict=True)}
    assert not pairs & {*zip(split.test.user, split.test.item, strict=True)}
    share = split.test.user_counts() / data.user_counts()
    assert np.all(np.abs(share - 0.2) < 0.1)
    assert (split.train.rating == 1.0).all()
    assert "per-user random 80%/20% (seed 3)" in split.protocol
    again = ranking_split(data, seed=3)
    assert np.array_equal(again.test.item, split.test.item)


def test_ranking_grid_sorts_by_validation_ndcg():
    split = ranking_split(make_synthetic(80, 60, 2400, rank=3, seed=1), seed=0)
    table = ranking_grid(
        lambda **o: ImplicitALS(epochs=3, device="cpu", **o),
        [{"reg": 1.0}, {"reg": 30.0}, {"reg": 0.1}],
        split,
        progress=False,
    )
    assert list(table.columns) == ["reg", "valid_ndcg@20", "fit_seconds"]
    assert table["valid_ndcg@20"].is_monotonic_decreasing


def test_ials_collapses_where_reg_exceeds_the_largest_singular_value_of_its_confidences(events):
    # Near zero a sweep multiplies the factors by W^T W / reg^2, W_ui = 1 + alpha on the pairs:
    # zero attracts them exactly when reg > sigma_max(W), and the error says so with sigma_max.
    w = torch.zeros(events.n_users, events.n_items)
    w[torch.as_tensor(events.user), torch.as_tensor(events.item)] = 1.0 + 2.0
    sigma = float(torch.linalg.svdvals(w)[0])
    ImplicitALS(n_factors=4, reg=0.5 * sigma, alpha=2.0, device="cpu").fit(events)
    with pytest.raises(TrainingCollapsed) as err:
        ImplicitALS(n_factors=4, reg=2.0 * sigma, alpha=2.0, device="cpu").fit(events)
    reported = re.search(r"is above (\S+), the largest singular value", str(err.value))
    assert float(reported[1]) == pytest.approx(sigma, rel=1e-3)


def test_ranking_grid_returns_the_best_fitted_model_and_never_a_collapsed_one():
    split = ranking_split(make_synthetic(80, 60, 2400, rank=3, seed=1), seed=0)
    with pytest.raises(TrainingCollapsed, match=r"zero solution.*reg=10000 is above"):
        ImplicitALS(epochs=3, reg=1e4, device="cpu").fit(split.fit)
    table, best, options = ranking_grid(
        lambda **o: ImplicitALS(epochs=3, device="cpu", **o),
        [{"reg": 1e4}, {"reg": 1.0}],
        split,
        progress=False,
        return_best=True,
    )
    assert best.config["reg"] == table.loc[0, "reg"] == options["reg"] == 1.0
    again = evaluate_ranking(best, train=split.fit, test=split.valid, ks=(20,))["ndcg@20"]
    assert again == pytest.approx(table.loc[0, "valid_ndcg@20"])
    collapsed = table.loc[1]  # kept in the table, scored NaN, with its reason
    assert np.isnan(collapsed["valid_ndcg@20"]) and "collapsed" in collapsed["failed"]


def test_tune_and_test_refits_the_early_stopped_epochs_on_the_whole_train_part():
    split = ranking_split(make_synthetic(80, 60, 2400, rank=3, seed=1), seed=0)
    seen = []

    def make(**options):
        seen.append(options)
        return TwoTower(
            **{
                "n_factors": 8,
                "epochs": 6,
                "patience": 2,
                "batch_size": 256,
                "lr": 1e-2,
                "device": "cpu",
                **options,
            }
        )

    tuned = tune_and_test(make, [{"reg": 0.0}, {"reg": 1.0}], split, name="bpr", progress=False)
    best_epoch = int(tuned.valid_model.history.attrs["best_epoch"])
    assert tuned.options == {**seen[-1]} and tuned.options["epochs"] == best_epoch
    assert tuned.options["patience"] is None and len(tuned.model.history) == best_epoch
    assert tuned.options["reg"] == tuned.grid.loc[0, "reg"]
    assert tuned.scores == evaluate_ranking(tuned.model, train=split.train, test=split.test)


def test_ials_beats_popularity_on_ml100k(ml100k):
    split = ranking_split(ml100k, seed=0)
    scores = {
        name: evaluate_ranking(
            model.fit(split.train), train=split.train, test=split.test, ks=(20,)
        )["ndcg@20"]
        for name, model in {
            "pop": MostPopular(device="cpu"),
            "ials": ImplicitALS(device="cpu"),
        }.items()
    }
    assert scores["pop"] > 0.2
    assert scores["ials"] > 0.43


def test_repeated_events_count_once_per_row_in_the_confidence(events):
    """An event log repeating pairs fits as the unique pairs with r_ui = their count
    (c_ui = 1 + alpha * count, HKV08), not one 1 + alpha per repeated row."""
    rng = np.random.default_rng(0)
    repeats = rng.integers(1, 4, len(events))  # every pair seen 1..3 times
    log = events.subset(np.repeat(np.arange(len(events)), repeats))
    counted = events.with_ratings(repeats.astype(np.float32))
    options = dict(n_factors=4, reg=0.5, alpha=3.0, epochs=2, solver="cholesky", device="cpu")
    from_log = ImplicitALS(**options).fit(log)
    from_counts = ImplicitALS(**options, use_ratings=True).fit(counted)
    torch.testing.assert_close(from_log.user_factors, from_counts.user_factors)
    torch.testing.assert_close(from_log.item_factors, from_counts.item_factors)


def test_a_checkpoint_with_the_old_option_names_loads(events, tmp_path):
    """iALS checkpoints written before the rename (factors, iterations) still load."""
    model = ImplicitALS(n_factors=4, epochs=2, device="cpu").fit(events)
    path = model.save(tmp_path / "new.safetensors")
    with safe_open(path, framework="pt") as f:
        header = json.loads(f.metadata()[HEADER_KEY])
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    config = header["config"]
    config["factors"], config["iterations"] = config.pop("n_factors"), config.pop("epochs")
    save_file(tensors, tmp_path / "old.safetensors", metadata={HEADER_KEY: json.dumps(header)})
    old = Model.load(tmp_path / "old.safetensors", device="cpu")
    assert old.config == model.config
    users = torch.arange(3)
    torch.testing.assert_close(old.score_items(users), model.score_items(users))
