"""Tests for mfutils.metrics against slow, obvious pure-Python references."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mfutils.data.container import UserItemCSR
from mfutils.metrics import mae, rmse, topk_metrics, topk_metrics_per_user


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

    pos = torch.rand(4, device="cuda")
    assert rmse(pos, pos.cpu().numpy()) == 0.0
