"""Negative samplers, candidate sets, accidental-hit masks, hard-negative mining and the
static and streaming item-frequency estimates of the logQ correction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mfutils.data import UserItemCSR
from mfutils.sampling import (
    PopularityNegatives,
    StreamingFrequencyEstimator,
    UniformNegatives,
    accidental_hit_mask,
    hard_negative_mining,
    in_batch_negatives,
    item_log_frequencies,
    mixed_negatives,
)

N_ITEMS = 50


def _seen() -> UserItemCSR:
    """User 0 has seen 45 of 50 items, user 1 all but item 17, user 2 nothing, user 3 all
    (with a duplicate pair), user 4 a few."""
    pairs = [(0, i) for i in range(N_ITEMS) if i % 10 != 3]
    pairs += [(1, i) for i in range(N_ITEMS) if i != 17]
    pairs += [(3, i) for i in range(N_ITEMS)] + [(3, 5)]
    pairs += [(4, 0), (4, 49), (4, 20)]
    users, items = np.array(pairs).T
    return UserItemCSR.from_pairs(users, items, n_users=5, n_items=N_ITEMS)


def _chi_square_ok(counts: torch.Tensor) -> bool:
    """Counts compatible with a uniform distribution (very generous 6-sigma bound)."""
    expected = counts.sum() / len(counts)
    stat = float(((counts - expected) ** 2 / expected).sum())
    dof = len(counts) - 1
    return stat < dof + 6 * math.sqrt(2 * dof)


# ---------------------------------------------------------------- uniform
def test_uniform_never_returns_a_seen_item_and_is_uniform():
    seen = _seen()
    sampler = UniformNegatives(N_ITEMS, seen=seen)
    users = torch.tensor([0, 1, 2, 4, 0])
    draws = sampler.sample(users, 4000, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (5, 4000) and draws.dtype == torch.long
    dense = seen.to_dense()
    assert not bool(dense[users[:, None], draws].any())
    assert bool((draws[1] == 17).all())  # the only item user 1 has not seen
    for row, n_free in ((0, 5), (2, N_ITEMS), (3, N_ITEMS - 3), (4, 5)):
        counts = torch.bincount(draws[row], minlength=N_ITEMS)
        free = ~dense[users[row]]
        assert int((counts > 0).sum()) == int(free.sum()) == n_free
        assert _chi_square_ok(counts[free].double())


def test_uniform_edge_cases_and_reproducibility():
    seen = _seen()
    sampler = UniformNegatives(N_ITEMS, seen=seen)
    everything = sampler.sample(torch.tensor([3]), 500, generator=torch.Generator().manual_seed(1))
    assert bool(((everything >= 0) & (everything < N_ITEMS)).all())  # no free item: fallback
    draw = [
        sampler.sample(torch.tensor([0, 2]), 7, generator=torch.Generator().manual_seed(5))
        for _ in range(2)
    ]
    assert torch.equal(draw[0], draw[1])
    plain = UniformNegatives(N_ITEMS).sample(
        torch.zeros(3, dtype=torch.long), 3000, generator=torch.Generator().manual_seed(2)
    )
    assert _chi_square_ok(torch.bincount(plain.reshape(-1), minlength=N_ITEMS).double())
    assert torch.allclose(sampler.log_q(torch.tensor([1, 2])), torch.full((2,), -math.log(50)))


def test_uniform_bad_input():
    with pytest.raises(ValueError, match="seen.n_items"):
        UniformNegatives(10, seen=_seen())
    sampler = UniformNegatives(N_ITEMS, seen=_seen())
    with pytest.raises(ValueError, match="users must lie in"):
        sampler.sample(torch.tensor([0, 7]), 3)
    with pytest.raises(ValueError, match="n must be a positive int"):
        sampler.sample(torch.tensor([0]), 0)
    with pytest.raises(TypeError, match="integer ids"):
        sampler.sample(torch.tensor([0.0]), 2)


# ---------------------------------------------------------------- popularity and frequencies
def test_popularity_sampler_follows_count_power():
    counts = np.array([0, 1, 4, 9, 16, 70])
    sampler = PopularityNegatives(counts, alpha=0.5)
    q = np.sqrt(counts) / np.sqrt(counts).sum()
    assert torch.allclose(
        sampler.log_q(torch.arange(1, 6)).exp(), torch.tensor(q[1:], dtype=torch.float32)
    )
    draws = sampler.sample(
        torch.zeros(20, dtype=torch.long), 1000, generator=torch.Generator().manual_seed(0)
    )
    assert draws.shape == (20, 1000)
    freq = torch.bincount(draws.reshape(-1), minlength=6).double() / draws.numel()
    assert freq[0] == 0  # count 0 is never drawn
    assert np.allclose(freq.numpy(), q, atol=0.01)
    uniform = PopularityNegatives(counts, alpha=0.0)
    assert torch.allclose(uniform.log_q(torch.arange(6)), torch.full((6,), -math.log(6)))


def test_item_log_frequencies_are_exact():
    counts = torch.tensor([3.0, 0.0, 1.0, 4.0])
    log_p = item_log_frequencies(counts)
    assert torch.allclose(log_p[[0, 2, 3]].exp(), torch.tensor([3 / 8, 1 / 8, 4 / 8]))
    assert log_p[1] == -math.inf
    with pytest.raises(ValueError, match="non-negative"):
        item_log_frequencies([1, -1])
    with pytest.raises(ValueError, match="no positive entry"):
        item_log_frequencies([0, 0])
    with pytest.raises(ValueError, match="no positive entry"):
        PopularityNegatives([0, 0])


# ---------------------------------------------------------------- candidate sets
def test_mixed_negatives_candidates_and_mixture_log_q():
    pos = torch.tensor([4, 1, 4])
    log_p = item_log_frequencies(torch.arange(1.0, 11.0))  # p_j = (j + 1) / 55
    cand = mixed_negatives(
        pos, n_uniform=5, n_items=10, item_log_p=log_p, generator=torch.Generator().manual_seed(0)
    )
    assert cand.items.shape == (8,) and torch.equal(cand.items[:3], pos)
    assert bool(((cand.items >= 0) & (cand.items < 10)).all())
    p = log_p.exp()[cand.items]
    expected = torch.log(3 / 8 * p + 5 / 8 / 10)
    assert torch.allclose(cand.log_q, expected)
    # a callable gives the same; no probabilities give no log_q
    again = mixed_negatives(
        pos,
        n_uniform=5,
        n_items=10,
        item_log_p=lambda i: log_p[i],
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(again.items, cand.items) and torch.allclose(again.log_q, cand.log_q)
    assert mixed_negatives(pos, n_uniform=2, n_items=10).log_q is None
    in_batch = in_batch_negatives(pos, item_log_p=log_p)
    assert torch.equal(in_batch.items, pos) and torch.allclose(in_batch.log_q, log_p[pos])
    assert torch.allclose(
        mixed_negatives(pos, n_uniform=0, n_items=10, item_log_p=log_p).log_q, in_batch.log_q
    )
    with pytest.raises(ValueError, match="n_uniform"):
        mixed_negatives(pos, n_uniform=-1, n_items=10)


# ---------------------------------------------------------------- masks and mining
def test_accidental_hit_mask_shared_candidates():
    users = torch.tensor([0, 1, 0, 2])
    pos = torch.tensor([5, 6, 7, 5])
    cand = torch.cat([pos, torch.tensor([7, 9, 6])])  # in-batch + 3 uniform draws
    only_ids = accidental_hit_mask(pos, cand)
    expected_ids = cand[None, :] == pos[:, None]  # includes each row's own column
    assert torch.equal(only_ids, expected_ids)
    with_users = accidental_hit_mask(pos, cand, users=users)
    expected = expected_ids.clone()
    # user 0 (rows 0 and 2) has positives 5 and 7: both rows mask every 5 and 7
    for row in (0, 2):
        expected[row] |= (cand == 5) | (cand == 7)
    assert torch.equal(with_users, expected)
    seen = UserItemCSR.from_pairs(np.array([1, 2]), np.array([9, 6]), n_users=3, n_items=10)
    with_seen = accidental_hit_mask(pos, cand, users=users, seen=seen)
    expected[1] |= cand == 9
    expected[3] |= cand == 6
    assert torch.equal(with_seen, expected)


def test_accidental_hit_mask_per_row_and_errors():
    pos = torch.tensor([1, 2])
    neg = torch.tensor([[1, 3, 2, 1], [0, 2, 1, 4]])
    users = torch.tensor([8, 8])
    assert torch.equal(
        accidental_hit_mask(pos, neg),
        torch.tensor([[True, False, False, True], [False, True, False, False]]),
    )
    assert torch.equal(
        accidental_hit_mask(pos, neg, users=users),
        torch.tensor([[True, False, True, True], [False, True, True, False]]),
    )
    with pytest.raises(ValueError, match="candidates must be"):
        accidental_hit_mask(pos, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="needs users"):
        accidental_hit_mask(pos, neg, seen=_seen())


def test_hard_negative_mining_picks_the_top_k_legal_negatives():
    logits = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.2, 0.8, 0.4]])
    mask = torch.tensor([[False, True, False, False], [True, True, True, False]])
    top, top_mask = hard_negative_mining(logits, mask, 2)
    assert torch.equal(top[0], torch.tensor([0.7, 0.5]))
    assert not bool(top_mask[0].any())
    assert top[1, 0] == logits[1, 3] and bool(top_mask[1, 1])  # one legal negative only
    plain, no_mask = hard_negative_mining(logits, None, 1)
    assert torch.equal(plain, torch.tensor([[0.9], [0.8]])) and no_mask is None
    all_kept, _ = hard_negative_mining(logits, None, 10)
    assert torch.equal(all_kept, logits)
    with pytest.raises(ValueError, match="positive int"):
        hard_negative_mining(logits, None, 0)


# ---------------------------------------------------------------- streaming frequencies
def test_streaming_estimator_converges_to_true_frequencies():
    n_items, batch, steps = 30, 8, 3000
    generator = torch.Generator().manual_seed(0)
    p = 1 / torch.arange(1, n_items + 1, dtype=torch.float64)
    p /= p.sum()
    stream = torch.multinomial(p, steps * batch, replacement=True, generator=generator).view(
        steps, batch
    )
    copies = batch * p  # expected copies of an item per batch (Yi et al.: about B p_j)
    estimator = StreamingFrequencyEstimator(64, n_hashes=2, seed=1)
    for step in range(steps):
        estimator.update(stream[step], step + 1)
    estimate = estimator.log_q(torch.arange(n_items)).double().exp()
    relative = (estimate - copies).abs() / copies
    assert float(relative.median()) < 0.1
    assert float(relative[copies > 0.1].max()) < 0.25
    assert float(estimate[0]) > 1.5  # the top item, 2.0 copies per batch: no saturation at 1


def test_streaming_estimator_equals_algorithm_2_one_occurrence_at_a_time():
    """The closed-form batch update equals Yi et al.'s loop over every item of the batch."""
    alpha, n_buckets = 0.1, 7  # few buckets: collisions and repeats in every batch
    estimator = StreamingFrequencyEstimator(n_buckets, alpha=alpha, seed=2)
    gap, last = [0.0] * n_buckets, [0] * n_buckets
    generator = torch.Generator().manual_seed(0)
    for step in range(1, 60):
        items = torch.randint(
            20, (int(torch.randint(1, 12, (1,), generator=generator)),), generator=generator
        )
        for bucket in estimator._flat_buckets(items)[0].tolist():
            delta = step - last[bucket]
            gap[bucket] = (1 - alpha) * gap[bucket] + alpha * delta if last[bucket] else delta
            last[bucket] = step
        estimator.update(items, step)
    torch.testing.assert_close(estimator.gap[0], torch.tensor(gap), rtol=1e-5, atol=1e-6)


def test_streaming_estimator_update_rule_state_and_hash():
    estimator = StreamingFrequencyEstimator(1000, alpha=0.5, seed=3)
    assert list(estimator.parameters()) == []
    assert set(estimator.state_dict()) == {"hash_a", "hash_b", "last_step", "gap", "step"}
    estimator.update(torch.tensor([7, 7, 9]), 2)  # first sighting: gap = 2; 7's copy: gap 0
    assert torch.allclose(
        estimator.log_q(torch.tensor([7, 9])), torch.tensor([-math.log(0.5 * 2), -math.log(2)])
    )
    estimator.update(torch.tensor([7]), 6)  # gap 0.5 * 1 + 0.5 * (6 - 2) = 2.5
    assert math.isclose(float(estimator.log_q(torch.tensor([7]))), -math.log(2.5), rel_tol=1e-6)
    # an item never seen: the gap is the steps so far (no collision with 7 and 9 here)
    assert (
        estimator._flat_buckets(torch.tensor([11]))[0, 0]
        not in estimator._flat_buckets(torch.tensor([7, 9]))[0]
    )
    assert math.isclose(float(estimator.log_q(torch.tensor([11]))), -math.log(6), rel_tol=1e-6)
    same = StreamingFrequencyEstimator(1000, alpha=0.5, seed=3)
    assert torch.equal(
        same._flat_buckets(torch.arange(100)), estimator._flat_buckets(torch.arange(100))
    )
    copy = StreamingFrequencyEstimator(1000, alpha=0.5, seed=99)
    copy.load_state_dict(estimator.state_dict())
    assert torch.equal(copy.log_q(torch.arange(20)), estimator.log_q(torch.arange(20)))
    with pytest.raises(ValueError, match="step must be an int >= 1"):
        estimator.update(torch.tensor([1]), 0)
    with pytest.raises(ValueError, match="alpha"):
        StreamingFrequencyEstimator(10, alpha=0.0)


def test_sampling_creates_no_tensor_off_device():
    """The 'meta' device rejects any tensor created without ``device=`` (see test_losses)."""
    meta = torch.device("meta")
    pos = torch.randint(10, (4,), device=meta)
    users = torch.randint(3, (4,), device=meta)
    cand = mixed_negatives(pos, n_uniform=3, n_items=10, item_log_p=torch.zeros(10, device=meta))
    assert cand.items.device == meta and cand.log_q.device == meta
    mask = accidental_hit_mask(pos, cand.items, users=users)
    assert mask.shape == (4, 7) and mask.device == meta
    logits, kept = hard_negative_mining(torch.randn(4, 7, device=meta), mask, 2)
    assert logits.device == meta and kept.device == meta


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_samplers_run_on_cuda():
    cuda = torch.device("cuda")
    seen = _seen().to(cuda)
    users = torch.tensor([0, 1, 4], device=cuda)
    draws = UniformNegatives(N_ITEMS, seen=seen).sample(users, 100)
    assert draws.device.type == "cuda"
    assert not bool(seen.to_dense()[users[:, None], draws].any())
    cpu_gen = UniformNegatives(N_ITEMS, seen=seen).sample(
        users, 5, generator=torch.Generator().manual_seed(0)
    )
    assert cpu_gen.device.type == "cuda"
    pop = PopularityNegatives(torch.arange(1.0, 11.0, device=cuda))
    assert pop.sample(users, 4).device.type == "cuda"
    pos = torch.tensor([0, 1, 20], device=cuda)  # seen items, so never drawn
    assert not bool(accidental_hit_mask(pos, draws, users=users, seen=seen).any())
    estimator = StreamingFrequencyEstimator(64).to(cuda)
    estimator.update(draws[0], 1)
    assert estimator.log_q(draws[0]).device.type == "cuda"
