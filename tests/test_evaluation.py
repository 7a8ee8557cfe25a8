"""Tests of mfutils.evaluation: Koren's sampled top-K protocol on shared negatives."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from mfutils.data import Ratings, make_synthetic
from mfutils.evaluation import (
    ItemPopularity,
    ScoreTable,
    alignment_uniformity,
    known_items,
    koren_topk,
    plot_percentile_cdf,
    recommended_popularity,
    sampled_hit_rate,
)
from mfutils.models import BiasedMF


@pytest.fixture(scope="module")
def split() -> tuple[Ratings, Ratings]:
    data = make_synthetic(60, 80, 1500, seed=1)
    perm = np.random.default_rng(0).permutation(len(data))
    return data.subset(perm[:1200]), data.subset(perm[1200:])


class Oracle:
    """Scores 1 for the user's high test items, 0 elsewhere: every positive ranks first."""

    def __init__(self, test: Ratings, min_rating: float = 5.0) -> None:
        keep = test.rating >= min_rating
        self.dense = torch.zeros(test.n_users, test.n_items)
        self.dense[test.user[keep], test.item[keep]] = 1.0

    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        return self.dense[users]

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.dense[users, items].numpy()


class Constant:
    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(users), self.n_items)


def test_oracle_zero_and_constant_half(split: tuple[Ratings, Ratings]) -> None:
    train, test = split
    res = koren_topk(
        {"oracle": Oracle(test), "const": Constant(test.n_items)},
        train,
        test,
        n_negatives=30,
        seed=3,
    )
    assert (res.ranks["oracle"] == 0).all()
    np.testing.assert_allclose(res.ranks["const"], 0.5)
    assert res.mean_rank["oracle"] == 0 and res.mean_rank["const"] == pytest.approx(0.5)
    assert (res.cdf["oracle"] == 1).all()
    assert res.cdf.loc[0.2, "const"] == 0  # all ties: rank exactly 0.5


def test_shapes_negatives_and_protocol(split: tuple[Ratings, Ratings]) -> None:
    train, test = split
    res = koren_topk(
        {"const": Constant(test.n_items)},
        train,
        test,
        n_negatives=30,
        seed=0,
        thresholds=(0.0, 0.1),
    )
    m = int((test.rating >= 5).sum())
    assert res.negatives.shape == (m, 30)
    assert len(res.ranks) == m and list(res.cdf.index) == [0.0, 0.1]
    assert list(res.ranks.columns) == ["user", "item", "n_negatives", "const"]
    assert f"M={m}" in res.protocol and "seed 0" in res.protocol
    # negatives are never rated by the user, in train or in test, and distinct in a row
    known = known_items(train, test).to_dense().bool()
    neg = res.negatives
    valid = neg >= 0
    users = torch.tensor(res.ranks["user"].to_numpy())
    assert not known[users[:, None].expand_as(neg)[valid], neg[valid]].any()
    for row in neg[:20]:
        row = row[row >= 0]
        assert len(torch.unique(row)) == len(row)
    assert (res.ranks["n_negatives"] == valid.sum(1).numpy()).all()


def test_shared_negatives_and_determinism(split: tuple[Ratings, Ratings]) -> None:
    train, test = split
    mf = BiasedMF(4, epochs=3, device="cpu", clip=False).fit(train)
    one = koren_topk({"mf": mf}, train, test, n_negatives=25, seed=7)
    two = koren_topk(
        {"pop": ItemPopularity().fit(train), "mf": mf}, train, test, n_negatives=25, seed=7
    )
    other = koren_topk({"mf": mf}, train, test, n_negatives=25, seed=8)
    assert torch.equal(one.negatives, two.negatives)  # same negatives whatever the models
    np.testing.assert_array_equal(one.ranks["mf"], two.ranks["mf"])
    assert not torch.equal(one.negatives, other.negatives)


def test_predict_and_score_items_agree(split: tuple[Ratings, Ratings]) -> None:
    train, test = split
    mf = BiasedMF(4, epochs=3, device="cpu", clip=False).fit(train)
    a = koren_topk({"mf": mf}, train, test, n_negatives=40, method="score_items", batch_users=7)
    b = koren_topk({"mf": mf}, train, test, n_negatives=40, method="predict")
    np.testing.assert_allclose(a.ranks["mf"], b.ranks["mf"])
    table = ScoreTable(mf, test.user, n_users=test.n_users, batch_users=5)
    c = koren_topk({"mf": table}, train, test, n_negatives=40)
    np.testing.assert_allclose(a.ranks["mf"], c.ranks["mf"])


def test_score_table_rows_and_missing_user(split: tuple[Ratings, Ratings]) -> None:
    train, _ = split
    mf = BiasedMF(4, epochs=2, device="cpu").fit(train)
    table = ScoreTable(mf, [3, 1, 3], n_users=train.n_users)
    users = torch.tensor([1, 3, 1])
    torch.testing.assert_close(table.score_items(users), mf.score_items(users).cpu())
    with pytest.raises(KeyError):
        table.score_items(torch.tensor([0]))
    with pytest.raises(ValueError):
        ScoreTable(mf, [train.n_users], n_users=train.n_users)


def test_errors(split: tuple[Ratings, Ratings]) -> None:
    train, test = split
    with pytest.raises(ValueError, match="empty"):
        koren_topk({}, train, test)
    with pytest.raises(ValueError, match="method"):
        koren_topk({"c": Constant(test.n_items)}, train, test, method="bogus")
    with pytest.raises(ValueError, match="no test rating"):
        koren_topk({"c": Constant(test.n_items)}, train, test, min_rating=99)


def test_plot_percentile_cdf(split: tuple[Ratings, Ratings]) -> None:
    train, test = split
    res = koren_topk(
        {"oracle": Oracle(test), "const": Constant(test.n_items)}, train, test, n_negatives=30
    )
    ax = plot_percentile_cdf(res.ranks)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["oracle", "const", "random ranker"]
    assert ax.lines[0].get_ydata()[0] == 1.0 and ax.lines[1].get_ydata()[-1] == 0.0
    with pytest.raises(ValueError):
        plot_percentile_cdf(res.ranks, ["nope"])
    matplotlib.pyplot.close("all")


def test_recommended_popularity(split: tuple[Ratings, Ratings]) -> None:
    train, test = split
    pop = ItemPopularity().fit(train)
    users = np.unique(test.user)
    top_pop = recommended_popularity(pop.score_items, train=train, users=users, k=5)
    rand = recommended_popularity(
        lambda u: torch.rand(len(u), train.n_items, generator=torch.Generator().manual_seed(0)),
        train=train,
        users=users,
        k=5,
    )
    assert top_pop > rand > 0
    # a single user: the mean count of that user's 5 most popular unseen items, by hand
    counts = train.item_counts().astype(float)
    counts_masked = counts.copy()
    counts_masked[train.item[train.user == users[0]]] = -1
    expected = np.sort(counts_masked)[-5:].mean()
    got = recommended_popularity(pop.score_items, train=train, users=[users[0]], k=5)
    assert got == pytest.approx(expected)


def test_sampled_hit_rate(split: tuple[Ratings, Ratings]) -> None:
    train, test = split
    res = koren_topk(
        {"oracle": Oracle(test), "const": Constant(test.n_items)},
        train,
        test,
        n_negatives=30,
        seed=3,
    )
    hits = sampled_hit_rate(res, 10)
    assert hits["oracle"] == 1.0
    # all ties: half of a row's negatives "beat" the positive
    assert hits["const"] == pytest.approx((res.ranks["n_negatives"] / 2 < 10).mean())
    assert sampled_hit_rate(res, 16)["const"] == 1.0
    assert hits.name == "sampled hitrate@10"
    with pytest.raises(ValueError, match="k must"):
        sampled_hit_rate(res, 0)


def test_alignment_uniformity_against_direct_formulas() -> None:
    gen = torch.Generator().manual_seed(0)
    users, items = torch.randn(5, 3, generator=gen), torch.randn(4, 3, generator=gen)
    pairs = Ratings.from_triples(
        [(0, 2, 1.0), (1, 0, 1.0), (4, 3, 1.0), (4, 0, 1.0)], n_users=5, n_items=4
    )
    got = alignment_uniformity(users, items, pairs)

    def unit(x):
        return x / x.norm(dim=1, keepdim=True)

    def uniform(x):
        x = unit(x)
        d = [
            float((x[a] - x[b]).pow(2).sum())
            for a in range(len(x))
            for b in range(len(x))
            if a != b
        ]
        return float(np.log(np.mean(np.exp(-2.0 * np.array(d)))))

    u, i = unit(users), unit(items)
    pairs_list = [(0, 2), (1, 0), (4, 3), (4, 0)]
    align = np.mean([float((u[a] - i[b]).pow(2).sum()) for a, b in pairs_list])
    assert got["alignment"] == pytest.approx(align, rel=1e-5)
    assert got["uniformity"] == pytest.approx(
        0.5 * (uniform(users[[0, 1, 4]]) + uniform(items[[0, 2, 3]])), rel=1e-5
    )
    same = alignment_uniformity(
        users, users[:4], Ratings.from_triples([(0, 0, 1.0), (1, 1, 1.0)], n_users=5, n_items=4)
    )
    assert same["alignment"] == pytest.approx(0.0, abs=1e-6)
