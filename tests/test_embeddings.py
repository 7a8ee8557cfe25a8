"""Compact id embeddings: stable hashes, shapes, parameter counts, special cases, gradients."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from mfutils.compact import (
    CompactBiasedMF,
    best_on_valid,
    collision_table,
    memory_table,
    ranking_curve,
    table_parameters,
)
from mfutils.data import make_synthetic
from mfutils.embeddings import (
    KINDS,
    BloomEmbedding,
    HashEmbedding,
    HashingTrick,
    collision_stats,
    expected_collisions,
    hash_ids,
    make_embedding,
)
from mfutils.experiments import ranking_split
from mfutils.models import TwoTower

_SCRIPT = (
    "import torch; from mfutils.embeddings import hash_ids; "
    "print(hash_ids(torch.arange(0, 2**31 - 1, 2**21), 1000, seed=7, n_hashes=3)"
    ".flatten().tolist())"
)


def test_hashes_are_stable_across_processes():
    here = hash_ids(torch.arange(0, 2**31 - 1, 2**21), 1000, seed=7, n_hashes=3)
    # a fresh interpreter with another hash salt must give the same buckets
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(out.stdout) == here.flatten().tolist()
    # pinned values: a change of the hash function is a change of every trained model
    assert hash_ids(torch.tensor([0, 1, 2]), 100, seed=0, n_hashes=2).tolist() == [
        [77, 6],
        [65, 83],
        [36, 21],
    ]


def test_hashes_are_seeded_uniform_and_checked():
    ids = torch.arange(20000)
    a = hash_ids(ids, 64, seed=0)[:, 0]
    assert not torch.equal(a, hash_ids(ids, 64, seed=1)[:, 0])
    counts = torch.bincount(a, minlength=64).float()
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()
    two = hash_ids(ids, 64, seed=0, n_hashes=2)
    assert (two[:, 0] == two[:, 1]).float().mean() < 0.05  # independent-looking hashes
    with pytest.raises(ValueError, match="ids must lie"):
        hash_ids(torch.tensor([-1]), 10, seed=0)
    with pytest.raises(ValueError, match="n_buckets"):
        hash_ids(ids, 0, seed=0)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_bags_and_parameter_counts(kind):
    n, d = 500, 16
    ratio = 1.0 if kind == "full" else 0.25
    emb = make_embedding(kind, n, d, ratio=ratio, k=2, seed=3)
    assert emb(torch.tensor([[0, 1, 2], [3, 4, 499]])).shape == (2, 3, d)
    assert emb.n_parameters == sum(p.numel() for p in emb.parameters())
    assert emb.n_parameters <= ratio * n * d
    assert emb.n_parameters >= 0.9 * ratio * n * d
    ids, offsets = torch.tensor([1, 2, 3, 7]), torch.tensor([0, 3, 3])
    bags = emb.bag(ids, offsets)  # bags {1, 2, 3}, {}, {7}
    assert bags.shape == (3, d)
    assert torch.allclose(bags[0], emb(ids[:3]).mean(0))
    assert torch.equal(bags[1], torch.zeros(d))
    assert torch.allclose(bags[2], emb(ids[3:])[0])


def test_documented_parameter_counts():
    assert HashingTrick(1000, 8, n_buckets=100).n_parameters == 100 * 8
    assert BloomEmbedding(1000, 8, n_buckets=100, k=3).n_parameters == 100 * 8
    hashed = HashEmbedding(1000, 8, n_buckets=100, k=2)
    assert hashed.n_parameters == 100 * 8 + 1000 * 2  # B d + K k
    shared = HashEmbedding(1000, 8, n_buckets=100, k=2, n_weights=300, concat=True)
    assert shared.n_parameters == 100 * 6 + 300 * 2
    assert shared(torch.arange(4)).shape == (4, 8)
    # the spec's ML-100K example: B=200, K=n=1682, k=2, d=64 -> 16,164 parameters
    assert HashEmbedding(1682, 64, n_buckets=200, k=2).n_parameters == 16164
    with pytest.raises(ValueError, match="too small"):
        make_embedding("hash", 1000, 8, budget=10)
    with pytest.raises(ValueError, match="kind="):
        make_embedding("lsh", 10, 4)
    with pytest.raises(ValueError, match="shrink dim"):
        make_embedding("full", 10, 4, ratio=0.5)


def test_hashing_trick_with_enough_buckets_is_a_permuted_table():
    n, d = 50, 4
    rows = hash_ids(torch.arange(n), 4096, seed=1)[:, 0]
    assert len(rows.unique()) == n  # injective for this seed, so the table is a permutation
    emb = HashingTrick(n, d, n_buckets=4096, sign=False, seed=1)
    table = nn.Embedding(n, d)
    with torch.no_grad():
        table.weight.copy_(emb.weight[emb.rows[:, 0]])
    ids = torch.tensor([3, 0, 49, 3])
    assert torch.equal(emb(ids), table(ids))
    # the trained value of id x lives in row h(x): one optimizer step changes both the same way
    for module in (emb, table):
        torch.optim.SGD(module.parameters(), lr=0.1).zero_grad()
        module(ids).pow(2).sum().backward()
        with torch.no_grad():
            for p in module.parameters():
                p -= 0.1 * p.grad
    assert torch.allclose(emb(torch.arange(n)), table(torch.arange(n)))
    signed = HashingTrick(n, d, n_buckets=4096, sign=True, seed=1)
    assert set(signed.signs.tolist()) == {-1.0, 1.0}
    assert torch.allclose(signed(ids).abs(), signed.weight[signed.rows[ids, 0]].abs())


def test_gradients_reach_the_importance_weights():
    emb = HashEmbedding(100, 8, n_buckets=10, k=3, seed=1)
    ids = torch.tensor([4, 9])
    emb(ids).pow(2).sum().backward()
    grad = emb.importance.grad
    assert grad is not None and grad[ids].abs().sum() > 0
    untouched = torch.ones(100, dtype=torch.bool)
    untouched[ids] = False
    assert grad[untouched].abs().sum() == 0
    assert emb.weight.grad[emb.rows[ids].flatten()].abs().sum() > 0
    # e_x = sum_i p_x^i E[h_i(x)]: the gradient of <e_x, 1> w.r.t. p_x^i is sum(E[h_i(x)])
    emb.zero_grad()
    emb(ids[:1]).sum().backward()
    assert torch.allclose(emb.importance.grad[4], emb.weight[emb.rows[4]].sum(1))


def test_bloom_is_a_sum_of_rows_and_collisions_match_theory():
    emb = BloomEmbedding(300, 4, n_buckets=40, k=2, seed=2)
    assert torch.allclose(emb(torch.tensor([7]))[0], emb.weight[emb.rows[7]].sum(0))
    emb = make_embedding("hashing", 1682, 64, ratio=0.25)
    measured = collision_stats(emb.rows, emb.n_buckets)
    expected = expected_collisions(1682, emb.n_buckets)
    assert measured["colliding_pairs"] == pytest.approx(expected["colliding_pairs"], rel=0.1)
    assert measured["occupied_buckets"] == pytest.approx(expected["occupied_buckets"], rel=0.05)
    # the spec's table: n=1682, m=4096 -> P(collide) 0.34, 345 pairs, 1380 occupied
    spec = expected_collisions(1682, 4096)
    assert (round(spec["shared_fraction"], 2), round(spec["colliding_pairs"])) == (0.34, 345)
    assert round(spec["occupied_buckets"]) == 1380


def test_compact_models_train_and_count_their_tables():
    data = make_synthetic(n_users=60, n_items=40, n_ratings=1200, seed=0)
    model = TwoTower(
        n_factors=8, epochs=2, embedding="hash", embedding_options={"ratio": 0.5}, device="cpu"
    ).fit(data)
    assert table_parameters(model.net) <= 0.5 * (60 + 40) * 8
    assert model.score_items(torch.arange(3)).shape == (3, 40)
    assert table_parameters(TwoTower(n_factors=8, epochs=1, device="cpu").fit(data).net) == 800
    with pytest.raises(ValueError, match="embedding="):
        TwoTower(embedding="lsh")
    mf = CompactBiasedMF(
        4, embedding="bloom", embedding_options={"ratio": 0.5}, epochs=2, device="cpu"
    ).fit(data)
    pred = mf.predict([0, 1, 10**6], [0, 1, 2])  # an unknown user gets the item baseline
    assert np.isfinite(pred).all() and mf.n_parameters <= 0.5 * 100 * 4


def test_curves_tables_and_width_choice():
    data = make_synthetic(n_users=60, n_items=40, n_ratings=1500, seed=1)
    split = ranking_split(data, seed=0)
    curve = ranking_curve(
        split,
        model_options={"n_factors": 8, "epochs": 1, "device": "cpu"},
        methods=("hash", "small dim"),
        ratios=(0.5,),
        widths={"hash": (8, 4)},
        progress=False,
    )
    assert list(curve["method"]) == ["full", "hash", "hash", "small dim"]
    assert list(curve["dim"]) == [8, 8, 4, 4]
    assert (curve["relative"].iloc[1:] <= 0.5).all() and curve["relative"].iloc[0] == 1.0
    chosen = best_on_valid(curve)
    assert len(chosen) == 3 and chosen["method"].is_unique
    assert set(curve.columns) >= {"ndcg@20", "recall@20", "valid_ndcg@20", "parameters"}
    memory = memory_table(40, 8, ratios=(0.5,))
    assert list(memory["kind"]) == ["full", "hashing", "hash", "bloom"]
    assert (memory["parameters"].iloc[1:] <= 160).all()
    collisions = collision_table(400, 8, ratios=(0.25,), ks=(1, 2))
    assert list(collisions["k"]) == [1, 2] and (collisions["rows"] == 100).all()
