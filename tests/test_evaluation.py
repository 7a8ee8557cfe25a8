"""Tests of mfutils.evaluation: Koren's sampled top-K protocol on shared negatives."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import math

import numpy as np
import pandas as pd
import pytest
import torch

import mfutils.evaluation as E
from mfutils.data import Ratings, make_synthetic
from mfutils.data.container import UserItemCSR
from mfutils.evaluation import (
    ItemPopularity,
    ScoreTable,
    alignment_uniformity,
    known_items,
    koren_topk,
    percentile_rank_cdf,
    percentile_ranks,
    recommended_popularity,
    sample_negatives,
    sampled_hit_rate,
)
from mfutils.models import BiasedMF
from mfutils.plotting import plot_percentile_cdf


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


# ====================================================================== Koren's protocol
def csr_from_sets(sets: list[set[int]], n_items: int) -> UserItemCSR:
    """The CSR whose row ``u`` holds the items of ``sets[u]``."""
    pairs = np.array(
        [(u, i) for u, items in enumerate(sets) for i in sorted(items)], dtype=np.int64
    ).reshape(-1, 2)
    return UserItemCSR.from_pairs(pairs[:, 0], pairs[:, 1], n_users=len(sets), n_items=n_items)


def ref_percentile_rank(pos, negs, valid):
    above = ties = n = 0
    for s, ok in zip(negs, valid, strict=True):
        if not ok:
            continue
        n += 1
        if s > pos:
            above += 1
        elif s == pos:
            ties += 1
    return (above + 0.5 * ties) / n if n else float("nan")


def known_case(seed=0, n_users=6, n_items=30):
    rng = np.random.default_rng(seed)
    sets = [
        set(rng.choice(n_items, size=int(rng.integers(0, n_items)), replace=False).tolist())
        for _ in range(n_users)
    ]
    sets[0] = set(range(n_items)) - {3, 17}  # rated almost everything
    sets[1] = set()
    return sets, csr_from_sets(sets, n_items)


@pytest.mark.parametrize("n_negatives", [1, 10, 50])
def test_sample_negatives_valid_unique_padded(n_negatives):
    sets, known = known_case()
    n_items = 30
    test_users = np.array([0, 1, 2, 3, 4, 5, 0, 2, 2, 5, 1])
    neg = sample_negatives(
        test_users=test_users, known=known, n_items=n_items, n_negatives=n_negatives, seed=3
    )
    assert neg.dtype == torch.long and neg.shape == (len(test_users), n_negatives)
    for row, u in zip(neg.tolist(), test_users.tolist(), strict=True):
        n_avail = n_items - len(sets[u])
        n_valid = min(n_negatives, n_avail)
        valid = row[:n_valid]
        assert row[n_valid:] == [-1] * (n_negatives - n_valid)  # padding at the end
        assert all(0 <= i < n_items for i in valid)
        assert not set(valid) & sets[u]  # never a known item
        assert len(set(valid)) == n_valid  # unique within the row
        if n_negatives >= n_avail:
            assert set(valid) == set(range(n_items)) - sets[u]
    # user 0 rated all but items 3 and 17
    drawn = set(neg[0].tolist()) - {-1}
    if n_negatives == 1:
        assert drawn in ({3}, {17})
    else:
        assert drawn == {3, 17} and neg[0, 2:].eq(-1).all()


def test_sample_negatives_deterministic_and_seed_dependent():
    _, known = known_case()
    kwargs = dict(test_users=torch.tensor([2, 3, 4, 2]), known=known, n_items=30, n_negatives=8)
    a = sample_negatives(**kwargs, seed=11)
    b = sample_negatives(**kwargs, seed=11)
    c = sample_negatives(**kwargs, seed=12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert sample_negatives(**kwargs, seed=11, device="cpu").device.type == "cpu"


def test_sample_negatives_chunked(monkeypatch):
    monkeypatch.setattr(E, "_SAMPLE_CHUNK_ELEMENTS", 64)  # 2 rows per chunk at 30 items
    sets, known = known_case(seed=5)
    users = np.arange(6).repeat(3)
    neg = sample_negatives(test_users=users, known=known, n_items=30, n_negatives=12, seed=0)
    for row, u in zip(neg.tolist(), users.tolist(), strict=True):
        valid = [i for i in row if i >= 0]
        assert len(valid) == min(12, 30 - len(sets[u])) == len(set(valid))
        assert not set(valid) & sets[u]
    assert not torch.equal(neg[2], neg[3])  # rows of one user get their own draws


def test_sample_negatives_roughly_uniform():
    known = csr_from_sets([set(range(5))], 10)  # items 5..9 available
    neg = sample_negatives(
        test_users=np.zeros(4000, dtype=np.int64), known=known, n_items=10, n_negatives=2, seed=0
    )
    freq = np.bincount(neg.reshape(-1).numpy(), minlength=10) / 4000
    assert np.all(freq[:5] == 0)
    assert np.allclose(freq[5:], 2 / 5, atol=0.03)


def test_sample_negatives_errors():
    _, known = known_case()
    with pytest.raises(ValueError, match="n_items"):
        sample_negatives(test_users=[0], known=known, n_items=31)
    with pytest.raises(ValueError, match="test_users"):
        sample_negatives(test_users=[6], known=known, n_items=30)
    with pytest.raises(ValueError, match="n_negatives"):
        sample_negatives(test_users=[0], known=known, n_items=30, n_negatives=0)


# ====================================================================== percentile ranks
def test_percentile_ranks_hand_ties():
    pos = torch.tensor([0.5, 0.5, 2.0, 0.0])
    neg = torch.tensor(
        [
            [0.9, 0.5, 0.1, 0.5],  # 1 above + 2 ties -> 2 / 4
            [0.9, 0.5, 0.1, 0.5],  # valid: 0.9, 0.1 -> 1 / 2
            [1.0, 1.0, 1.0, 1.0],  # beats all -> 0
            [0.0, 0.0, 0.0, 0.0],  # all tied -> 0.5
        ]
    )
    valid = torch.tensor([[True] * 4, [True, False, True, False], [True] * 4, [True] * 4])
    got = percentile_ranks(pos, neg, valid)
    assert got.tolist() == pytest.approx([0.5, 0.5, 0.0, 0.5])
    assert percentile_ranks(pos, neg)[1].item() == pytest.approx(0.5)  # default: all valid
    none_valid = percentile_ranks(pos[:1], neg[:1], torch.zeros(1, 4, dtype=torch.bool))
    assert math.isnan(none_valid.item())


def test_percentile_ranks_random_against_reference():
    g = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 5, (40,), generator=g).float()  # small ints: many ties
    neg = torch.randint(0, 5, (40, 17), generator=g).float()
    valid = torch.rand(40, 17, generator=g) < 0.8
    valid[:, 0] = True
    got = percentile_ranks(pos, neg, valid)
    want = [
        ref_percentile_rank(p, n, v)
        for p, n, v in zip(pos.tolist(), neg.tolist(), valid.tolist(), strict=True)
    ]
    assert got.tolist() == pytest.approx(want, abs=1e-7)


def test_percentile_ranks_errors():
    with pytest.raises(ValueError, match="neg_scores"):
        percentile_ranks(torch.zeros(3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="neg_valid"):
        percentile_ranks(torch.zeros(2), torch.zeros(2, 4), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        percentile_ranks(torch.tensor([float("nan")]), torch.zeros(1, 2))


def test_percentile_rank_cdf():
    ranks = torch.tensor([0.0, 0.004, 50 / 1000, 0.3, 0.07, float("nan"), 0.01, 1.0])
    thresholds = (0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 1.0)
    cdf = percentile_rank_cdf(ranks, thresholds)
    finite = [r for r in ranks.tolist() if not math.isnan(r)]
    # float32 50/1000 rounds just above 0.05 and must still count at x = 0.05
    want = [sum(r <= x + 1e-7 for r in finite) / len(finite) for x in thresholds]
    assert isinstance(cdf, pd.Series)
    assert cdf.index.tolist() == list(thresholds)
    assert cdf.tolist() == pytest.approx(want)
    assert cdf.loc[0.05] == pytest.approx(4 / 7)
    assert cdf.is_monotonic_increasing
    assert cdf.iloc[-1] == 1.0
    # default thresholds, numpy input, monotone on random ranks
    rnd = percentile_rank_cdf(np.random.default_rng(0).uniform(0, 0.3, size=500))
    assert len(rnd) == 7 and rnd.is_monotonic_increasing


def test_koren_protocol_end_to_end():
    # each held-out positive is a known (rated) item; the model scores item i as -i, so the
    # positive with the smallest id beats every sampled negative exactly when all smaller ids
    # are known too; otherwise its rank is the share of negatives with a smaller id
    n_items = 40
    sets, known = known_case(seed=2, n_users=4, n_items=n_items)
    users = [u for u in range(4) if sets[u]]
    pos_item = torch.tensor([min(sets[u]) for u in users])
    neg = sample_negatives(test_users=users, known=known, n_items=n_items, n_negatives=20)
    item_score = -torch.arange(n_items, dtype=torch.float32)
    ranks = percentile_ranks(item_score[pos_item], item_score[neg.clamp(min=0)], neg >= 0)
    want = []
    for row, p in zip(neg.tolist(), pos_item.tolist(), strict=True):
        valid = [i for i in row if i >= 0]
        assert p not in valid
        want.append(sum(i < p for i in valid) / len(valid))
    assert ranks.tolist() == pytest.approx(want)
    assert 0.0 in want and max(want) > 0  # both cases occur
    assert percentile_rank_cdf(ranks).loc[0.0] == pytest.approx(np.mean(np.asarray(want) == 0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_koren_sampling_and_ranks_on_cuda_match_cpu():
    sets, known = known_case()
    users = np.array([0, 2, 3, 5])
    neg_cpu = sample_negatives(test_users=users, known=known, n_items=30, n_negatives=7)
    neg_gpu = sample_negatives(test_users=users, known=known.to("cuda"), n_items=30, n_negatives=7)
    assert neg_gpu.is_cuda and torch.equal(neg_gpu.cpu(), neg_cpu)
    pos = torch.rand(4, device="cuda")
    neg = torch.rand(4, 7, device="cuda")
    ranks = percentile_ranks(pos, neg, neg_gpu >= 0)
    assert ranks.is_cuda
    assert torch.allclose(ranks.cpu(), percentile_ranks(pos.cpu(), neg.cpu(), neg_cpu >= 0))
