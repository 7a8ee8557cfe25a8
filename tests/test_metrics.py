"""Tests for mfutils.metrics against slow, obvious pure-Python references."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import mfutils.metrics as M
from mfutils.data.container import UserItemCSR
from mfutils.metrics import (
    mae,
    percentile_rank_cdf,
    percentile_ranks,
    rmse,
    sample_negatives,
    topk_metrics,
    topk_metrics_per_user,
)


# ====================================================================== references
def ref_rmse(pred, target, clip=None):
    total = 0.0
    for p, t in zip(pred, target, strict=True):
        if clip is not None:
            p = min(max(p, clip[0]), clip[1])
        total += (p - t) ** 2
    return math.sqrt(total / len(pred))


def ref_mae(pred, target, clip=None):
    total = 0.0
    for p, t in zip(pred, target, strict=True):
        if clip is not None:
            p = min(max(p, clip[0]), clip[1])
        total += abs(p - t)
    return total / len(pred)


def ref_user_metrics(scores, train, test, exclude, ks):
    """One user's metrics; scores is a list, the others sets. Assumes no ties at cut-offs."""
    n = len(scores)
    cands = [i for i in range(n) if i not in train and i not in exclude]
    ranking = sorted(cands, key=lambda i: -scores[i])
    out = {}
    for k in ks:
        top = ranking[:k]
        rel = [1 if i in test else 0 for i in top]
        n_hit = sum(rel)
        out[f"recall@{k}"] = n_hit / len(test)
        dcg = sum(r / math.log2(pos + 2) for pos, r in enumerate(rel))
        idcg = sum(1 / math.log2(pos + 2) for pos in range(min(len(test), k)))
        out[f"ndcg@{k}"] = dcg / idcg
        out[f"hitrate@{k}"] = 1.0 if n_hit else 0.0
        out[f"precision@{k}"] = n_hit / k
    reachable = [i for i in test if i in cands]
    if not reachable:
        out["mrr"] = 0.0
    else:
        best = max(scores[i] for i in reachable)
        above = sum(1 for j in cands if scores[j] > best)
        tied = sum(1 for j in cands if scores[j] == best and j not in test)
        out["mrr"] = 1.0 / (1 + above + 0.5 * tied)
    return out


def ref_topk(scores, train_sets, test_sets, exclude_sets, ks, users=None):
    """Per-user reference rows (users with test items only) and their means."""
    n_users = len(scores)
    chosen = range(n_users) if users is None else sorted(set(users))
    rows = {}
    for u in chosen:
        if not test_sets[u]:
            continue
        rows[u] = ref_user_metrics(scores[u], train_sets[u], test_sets[u], exclude_sets[u], ks)
    names = list(next(iter(rows.values())).keys()) if rows else []
    means = {name: float(np.mean([r[name] for r in rows.values()])) for name in names}
    means["n_users"] = len(rows)
    return rows, means


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


# ====================================================================== helpers
def csr_from_sets(sets, n_items):
    user = [u for u, items in enumerate(sets) for _ in items]
    item = [i for items in sets for i in sorted(items)]
    return UserItemCSR.from_pairs(
        np.asarray(user, dtype=np.int64),
        np.asarray(item, dtype=np.int64),
        n_users=len(sets),
        n_items=n_items,
    )


def table_score_fn(scores: torch.Tensor):
    def score_fn(users: torch.Tensor) -> torch.Tensor:
        return scores[users]

    return score_fn


def random_case(seed, n_users=13, n_items=9, overlap=False):
    rng = np.random.default_rng(seed)
    train, test, excl = [], [], []
    for _ in range(n_users):
        perm = rng.permutation(n_items).tolist()
        n_tr = int(rng.integers(0, n_items - 1))
        n_te = int(rng.integers(0, n_items - n_tr + 1))
        n_ex = int(rng.integers(0, n_items - n_tr - n_te + 1))
        tr = set(perm[:n_tr])
        te = set(perm[n_tr : n_tr + n_te])
        ex = set(perm[n_tr + n_te : n_tr + n_te + n_ex])
        if overlap and tr and rng.random() < 0.5:
            te.add(next(iter(tr)))  # a training item that is also a test item
        train.append(tr)
        test.append(te)
        excl.append(ex)
    # distinct scores: no ties, so top-K lists are unambiguous
    flat = torch.randperm(n_users * n_items, generator=torch.Generator().manual_seed(seed))
    scores = flat.reshape(n_users, n_items).double() / (n_users * n_items)
    return scores, train, test, excl


def assert_metrics_close(got: dict, want: dict):
    assert set(got) == set(want)
    assert got["n_users"] == want["n_users"]
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-9), name


# ====================================================================== rmse / mae
@pytest.mark.parametrize("clip", [None, (1.0, 5.0), (2.5, 3.5)])
def test_rmse_mae_match_reference(clip):
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 6, size=50)
    target = rng.integers(1, 6, size=50).astype(float)
    want_rmse = ref_rmse(pred.tolist(), target.tolist(), clip)
    want_mae = ref_mae(pred.tolist(), target.tolist(), clip)
    assert rmse(pred, target, clip=clip) == pytest.approx(want_rmse, rel=1e-12)
    assert mae(pred, target, clip=clip) == pytest.approx(want_mae, rel=1e-12)
    # tensors (float32 / mixed with numpy) give the same answer
    pt, tt = torch.tensor(pred, dtype=torch.float32), torch.tensor(target)
    assert rmse(pt, target, clip=clip) == pytest.approx(want_rmse, rel=1e-6)
    assert mae(pred, tt, clip=clip) == pytest.approx(want_mae, rel=1e-6)
    assert isinstance(rmse(pt, tt), float)


def test_rmse_mae_hand_values():
    assert rmse([1.0, 2.0, 3.0], [1.0, 2.0, 5.0]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1.0, 2.0, 3.0], [1.0, 2.0, 5.0]) == pytest.approx(2 / 3)
    assert rmse([0.0, 7.0], [1.0, 5.0], clip=(1, 5)) == 0.0
    assert mae([0.0, 7.0], [1.0, 5.0], clip=(1, 5)) == 0.0


def test_rmse_mae_errors_name_argument():
    with pytest.raises(ValueError, match="pred has shape.*target has shape"):
        rmse(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="pred has shape"):
        mae(np.zeros((3, 1)), np.zeros(3))
    with pytest.raises(ValueError, match="pred is empty"):
        rmse(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="target is empty"):
        mae(torch.zeros(2), torch.zeros(0))
    with pytest.raises(ValueError, match="clip"):
        rmse(np.zeros(2), np.zeros(2), clip=(5, 1))


# ====================================================================== top-K: hand case
# 4 users x 8 items. Users 0, 1 score items 8 > 7 > ... > 1 (item 0 best); users 2, 3 reversed.
HAND_SCORES = torch.tensor(
    [[8, 7, 6, 5, 4, 3, 2, 1]] * 2 + [[1, 2, 3, 4, 5, 6, 7, 8]] * 2, dtype=torch.float32
)
HAND_TRAIN = [{0}, set(), {3}, {7, 6}]
HAND_TEST = [{1, 4}, {7}, set(), {4, 5}]
D3 = 1 + 1 / math.log2(3)  # IDCG with two relevant items and k >= 2


def hand_csrs(exclude=None):
    train = csr_from_sets(HAND_TRAIN, 8)
    test = csr_from_sets(HAND_TEST, 8)
    excl = None if exclude is None else csr_from_sets(exclude, 8)
    return train, test, excl


def test_topk_hand_case():
    # user 0: masked item 0; ranking 1,2,3,4,...; test {1, 4}
    #   k=2 hits [1,0]: recall .5, prec .5, ndcg 1/D3; k=3 same hits: prec 1/3; mrr 1
    # user 1: nothing masked; test {7} is ranked last (8th): all top-K misses; mrr 1/8
    # user 2: no test item -> skipped
    # user 3: masked 7, 6; ranking 5,4,3,...; test {4, 5}: k=2 all hits; k=3 prec 2/3; mrr 1
    train, test, _ = hand_csrs()
    got = topk_metrics(table_score_fn(HAND_SCORES), train=train, test=test, ks=(2, 3))
    want = {
        "recall@2": (0.5 + 0 + 1) / 3,
        "ndcg@2": (1 / D3 + 0 + 1) / 3,
        "hitrate@2": 2 / 3,
        "precision@2": (0.5 + 0 + 1) / 3,
        "recall@3": (0.5 + 0 + 1) / 3,
        "ndcg@3": (1 / D3 + 0 + 1) / 3,
        "hitrate@3": 2 / 3,
        "precision@3": (1 / 3 + 0 + 2 / 3) / 3,
        "mrr": (1 + 1 / 8 + 1) / 3,
        "n_users": 3,
    }
    assert list(got) == list(want)  # key order: per k, then mrr, n_users
    assert_metrics_close(got, want)


def test_topk_hand_case_exclude():
    # excluding item 2 for user 0 lifts test item 4 from rank 4 to rank 3:
    # k=3 hits [1,0,1]: recall 1, precision 2/3, ndcg (1 + 1/log2 4) / D3
    train, test, excl = hand_csrs(exclude=[{2}, set(), set(), set()])
    per_user = topk_metrics_per_user(
        table_score_fn(HAND_SCORES), train=train, test=test, ks=3, exclude=excl
    ).set_index("user")
    assert per_user.loc[0, "recall@3"] == pytest.approx(1.0)
    assert per_user.loc[0, "precision@3"] == pytest.approx(2 / 3)
    assert per_user.loc[0, "ndcg@3"] == pytest.approx((1 + 0.5) / D3)
    assert per_user.loc[0, "mrr"] == pytest.approx(1.0)
    # user 1's test item 7 moves from rank 8 to ... it is unaffected (exclude only user 0)
    assert per_user.loc[1, "mrr"] == pytest.approx(1 / 8)


def test_topk_hand_case_k_beyond_catalogue():
    # k=10 > 8 items: user 0 has 7 candidates, both test items (ranks 1 and 4) are retrieved
    train, test, _ = hand_csrs()
    per_user = topk_metrics_per_user(
        table_score_fn(HAND_SCORES), train=train, test=test, ks=(10, 100)
    ).set_index("user")
    assert list(per_user.index) == [0, 1, 3]
    assert per_user["n_test"].tolist() == [2, 1, 2]
    assert per_user.loc[0, "recall@10"] == pytest.approx(1.0)
    assert per_user.loc[0, "precision@10"] == pytest.approx(2 / 10)
    assert per_user.loc[0, "precision@100"] == pytest.approx(2 / 100)
    assert per_user.loc[0, "ndcg@10"] == pytest.approx((1 + 1 / math.log2(5)) / D3)
    assert per_user.loc[1, "recall@10"] == pytest.approx(1.0)
    assert per_user.loc[1, "ndcg@10"] == pytest.approx(1 / math.log2(9))


def test_training_item_with_top_score_never_counts():
    # item 0 is user 0's best-scored item and a training item; also put it in the test set
    train = csr_from_sets([{0}], 4)
    test = csr_from_sets([{0, 3}], 4)
    scores = torch.tensor([[10.0, 1.0, 2.0, 3.0]])
    got = topk_metrics(table_score_fn(scores), train=train, test=test, ks=(1, 4))
    # item 3 is ranked 1st among candidates 3, 2, 1 -> one hit of two test items
    assert got["hitrate@1"] == 1.0
    assert got["recall@1"] == pytest.approx(0.5)
    assert got["recall@4"] == pytest.approx(0.5)  # masked test item 0 can never be hit
    assert got["precision@4"] == pytest.approx(1 / 4)
    assert got["mrr"] == pytest.approx(1.0)
    # only the masked test item: a guaranteed miss, mrr 0
    test_masked = csr_from_sets([{0}], 4)
    got = topk_metrics(table_score_fn(scores), train=train, test=test_masked, ks=4)
    assert got["recall@4"] == 0.0 and got["ndcg@4"] == 0.0 and got["mrr"] == 0.0


def test_mrr_ties_use_mid_rank():
    train = csr_from_sets([set(), set(), {0}], 8)
    test = csr_from_sets([{3}, {3, 5}, {3}], 8)
    scores = torch.zeros(3, 8)
    scores[2, 0] = 5.0  # masked, so it must not count as "above"
    scores[2, 6] = 1.0  # one item strictly above
    per_user = topk_metrics_per_user(table_score_fn(scores), train=train, test=test, ks=1)
    # constant scores: 7 tied non-test items -> rank 1 + 3.5; two tied test items: 6 -> rank 4
    # user 2: item 6 above, items 1,2,4,5,7 tied (5) -> rank 1 + 1 + 2.5
    assert per_user["mrr"].tolist() == pytest.approx([1 / 4.5, 1 / 4, 1 / 4.5])
    ref = [
        ref_user_metrics(scores[u].tolist(), tr, te, set(), [1])["mrr"]
        for u, (tr, te) in enumerate(zip([set(), set(), {0}], [{3}, {3, 5}, {3}], strict=True))
    ]
    assert per_user["mrr"].tolist() == pytest.approx(ref)


# ====================================================================== top-K: random cases
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("overlap", [False, True])
def test_topk_random_matches_reference_and_is_chunk_invariant(seed, overlap):
    scores, tr, te, ex = random_case(seed, overlap=overlap)
    n_items = scores.shape[1]
    train, test, excl = (csr_from_sets(s, n_items) for s in (tr, te, ex))
    ks = (1, 3, 5, 12)  # 12 > 9 items
    rows, want = ref_topk(scores.tolist(), tr, te, ex, ks)
    frames = []
    for chunk_size in (1, 2, 1000):
        kwargs = dict(train=train, test=test, ks=ks, exclude=excl, chunk_size=chunk_size)
        got = topk_metrics(table_score_fn(scores), **kwargs)
        assert_metrics_close(got, want)
        frame = topk_metrics_per_user(table_score_fn(scores), **kwargs)
        frames.append(frame)
        assert frame["user"].tolist() == sorted(rows)
        for _, r in frame.iterrows():
            for name, value in rows[int(r["user"])].items():
                assert r[name] == pytest.approx(value, abs=1e-12), name
        # the aggregate is the mean of the per-user table
        means = frame.drop(columns=["user", "n_test"]).mean()
        for name, value in means.items():
            assert got[name] == pytest.approx(value, abs=1e-12)
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0], check_exact=True)


def test_topk_random_without_exclude_and_float32_scores():
    scores, tr, te, _ = random_case(7, n_users=20, n_items=15)
    empty = [set() for _ in tr]
    train, test = csr_from_sets(tr, 15), csr_from_sets(te, 15)
    _, want = ref_topk(scores.tolist(), tr, te, empty, (2, 10))
    got = topk_metrics(
        table_score_fn(scores.float()), train=train, test=test, ks=(2, 10), chunk_size=3
    )
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-6), name


def test_topk_users_subset_skips_users_without_test_items():
    scores, tr, te, ex = random_case(4)
    n_items = scores.shape[1]
    te[5] = set()  # user 5 has no test item
    for u in (2, 9):  # users 2 and 9 have some
        tr[u], te[u], ex[u] = {0}, {1, 2}, {3}
    train, test, excl = (csr_from_sets(s, n_items) for s in (tr, te, ex))
    subset = [5, 2, 2, 9]  # duplicates are dropped
    _, want = ref_topk(scores.tolist(), tr, te, ex, (3,), users=subset)
    got = topk_metrics(
        table_score_fn(scores),
        train=train,
        test=test,
        ks=3,
        exclude=excl,
        users=np.asarray(subset),
        chunk_size=1,
    )
    assert got["n_users"] == want["n_users"] == 2
    assert_metrics_close(got, want)
    frame = topk_metrics_per_user(
        table_score_fn(scores),
        train=train,
        test=test,
        ks=3,
        exclude=excl,
        users=torch.tensor(subset),
    )
    assert 5 not in frame["user"].tolist()


def test_topk_no_users_gives_nan():
    train = csr_from_sets([{0}, set()], 3)
    test = csr_from_sets([set(), set()], 3)
    got = topk_metrics(table_score_fn(torch.zeros(2, 3)), train=train, test=test, ks=2)
    assert got["n_users"] == 0 and math.isnan(got["recall@2"]) and math.isnan(got["mrr"])
    frame = topk_metrics_per_user(table_score_fn(torch.zeros(2, 3)), train=train, test=test)
    assert len(frame) == 0 and "ndcg@10" in frame.columns


def test_topk_does_not_modify_score_fn_output():
    scores, tr, te, _ = random_case(1, n_users=4, n_items=6)
    te = [t or {i for i in range(6) if i not in tr[u]} for u, t in enumerate(te)]
    train, test = csr_from_sets(tr, 6), csr_from_sets(te, 6)
    before = scores.clone()
    topk_metrics(lambda users: scores, train=train, test=test, ks=2, chunk_size=4)
    assert torch.equal(scores, before)


def test_topk_score_fn_receives_long_ids_on_train_device():
    train, test, _ = hand_csrs()
    seen = []

    def score_fn(users):
        seen.append((users.dtype, users.device, users.tolist()))
        return HAND_SCORES[users]

    topk_metrics(score_fn, train=train, test=test, ks=2, chunk_size=2)
    assert [s[2] for s in seen] == [[0, 1], [3]]
    assert all(s[0] == torch.long and s[1] == train.device for s in seen)


def test_topk_errors():
    train, test, _ = hand_csrs()
    with pytest.raises(ValueError, match="expected"):
        topk_metrics(lambda u: torch.zeros(len(u), 7), train=train, test=test)
    with pytest.raises(ValueError, match="NaN"):
        topk_metrics(lambda u: torch.full((len(u), 8), float("nan")), train=train, test=test)
    with pytest.raises(ValueError, match="test has shape"):
        topk_metrics(table_score_fn(HAND_SCORES), train=train, test=csr_from_sets([{1}], 8))
    with pytest.raises(ValueError, match="positive int"):
        topk_metrics(table_score_fn(HAND_SCORES), train=train, test=test, ks=(0,))
    with pytest.raises(ValueError, match="chunk_size"):
        topk_metrics(table_score_fn(HAND_SCORES), train=train, test=test, chunk_size=0)
    with pytest.raises(ValueError, match="users"):
        topk_metrics(table_score_fn(HAND_SCORES), train=train, test=test, users=[4])


# ====================================================================== sampled negatives
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
    monkeypatch.setattr(M, "_SAMPLE_CHUNK_ELEMENTS", 64)  # 2 rows per chunk at 30 items
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


# ====================================================================== CUDA (skipped on CPU)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    scores, tr, te, ex = random_case(0)
    n_items = scores.shape[1]
    train, test, excl = (csr_from_sets(s, n_items) for s in (tr, te, ex))
    kwargs = dict(ks=(1, 3, 12), chunk_size=4)
    want = topk_metrics(table_score_fn(scores), train=train, test=test, exclude=excl, **kwargs)
    cuda_scores = scores.cuda()
    # CPU CSRs, model on CUDA: ids handed over on CUDA, CSRs moved once
    got = topk_metrics(
        table_score_fn(cuda_scores), train=train, test=test, exclude=excl, device="cuda", **kwargs
    )
    assert_metrics_close(got, want)
    # CSRs already on CUDA
    got = topk_metrics(
        table_score_fn(cuda_scores),
        train=train.to("cuda"),
        test=test.to("cuda"),
        exclude=excl.to("cuda"),
        **kwargs,
    )
    assert_metrics_close(got, want)

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
    assert rmse(pos, pos.cpu().numpy()) == 0.0
