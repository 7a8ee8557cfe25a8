"""Implicit-feedback losses against direct, slow formulas (values and gradients), masking,
logQ, hard negatives, MAWU's margins, errors and devices."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from mfutils.losses import (
    LOSSES,
    BPRLoss,
    CCLLoss,
    DirectAULoss,
    InfoNCEPlusLoss,
    MAWULoss,
    MINEPlusLoss,
    SampledSoftmaxLoss,
    SoftmaxLoss,
    make_loss,
    prepare_logits,
    uniformity,
)
from mfutils.sampling import accidental_hit_mask, in_batch_negatives

B, D, N, C = 4, 5, 6, 7


def _batch(shared: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    neg_shape = (C, D) if shared else (B, N, D)
    return {
        "user_emb": torch.randn(B, D, generator=g, dtype=torch.float64).requires_grad_(),
        "pos_emb": torch.randn(B, D, generator=g, dtype=torch.float64).requires_grad_(),
        "neg_emb": torch.randn(neg_shape, generator=g, dtype=torch.float64).requires_grad_(),
    }


def _logit_shape(shared: bool) -> tuple[int, int]:
    return (B, C) if shared else (B, N)


# ---------------------------------------------------------------- slow reference formulas
def _sim(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    dot = (a * b).sum()
    return dot / (a.norm() * b.norm()) if kind == "cosine" else dot


def _reference(
    row_formula,
    user_emb,
    pos_emb,
    neg_emb,
    *,
    similarity,
    temperature=1.0,
    neg_mask=None,
    pos_logq=None,
    neg_logq=None,
    sample_weight=None,
    k=None,
):
    """Loop over rows and negatives; legal negatives only; top-k after logQ and masking."""
    losses = []
    for b in range(len(user_emb)):
        negs = neg_emb if neg_emb.dim() == 2 else neg_emb[b]
        pos = _sim(user_emb[b], pos_emb[b], similarity) / temperature
        if pos_logq is not None:
            pos = pos - pos_logq[b]
        kept = []
        for j in range(len(negs)):
            if neg_mask is not None and neg_mask[b, j]:
                continue
            logit = _sim(user_emb[b], negs[j], similarity) / temperature
            if neg_logq is not None:
                logit = logit - (neg_logq[j] if neg_logq.dim() == 1 else neg_logq[b, j])
            kept.append(logit)
        if k is not None:
            kept = sorted(kept, key=lambda t: float(t.detach()), reverse=True)[:k]
        losses.append(row_formula(pos, kept))
    losses = torch.stack(losses)
    if sample_weight is None:
        return losses.mean()
    return (sample_weight * losses).sum() / sample_weight.sum()


def _mean(terms: list[torch.Tensor], zero: torch.Tensor) -> torch.Tensor:
    return torch.stack(terms).mean() if terms else zero * 0


def _bpr(pos, negs):
    return _mean([-torch.log(torch.sigmoid(pos - n)) for n in negs], pos)


def _hinge(pos, negs):
    return _mean([torch.clamp(1.0 - pos + n, min=0) for n in negs], pos)


def _ccl(margin, weight):
    def formula(pos, negs):
        terms = [torch.clamp(n - margin, min=0) for n in negs]
        neg = (sum(terms) if weight is None else weight * _mean(terms, pos)) if terms else 0
        return torch.clamp(1 - pos, min=0) + neg

    return formula


def _ssm(pos, negs):
    return -torch.log(torch.exp(pos) / (torch.exp(pos) + sum(torch.exp(n) for n in negs)))


def _infonce_plus(lam, eps):
    def formula(pos, negs):
        partition = eps * torch.exp(pos) + sum(torch.exp(n) for n in negs)
        return -pos + lam * torch.log(partition) if float(partition.detach()) > 0 else -pos

    return formula


# (loss, reference formula, similarity, temperature)
CASES = {
    "bpr": (lambda: BPRLoss(), _bpr, "dot", 1.0),
    "bpr-cosine": (lambda: BPRLoss(similarity="cosine", temperature=0.5), _bpr, "cosine", 0.5),
    "hinge": (lambda: make_loss("hinge"), _hinge, "dot", 1.0),
    "ccl": (lambda: CCLLoss(margin=0.1), _ccl(0.1, 150.0), "cosine", 1.0),
    "ccl-sum": (
        lambda: CCLLoss(margin=-0.2, negative_weight=None),
        _ccl(-0.2, None),
        "cosine",
        1.0,
    ),
    "ssm": (lambda: SampledSoftmaxLoss(), _ssm, "cosine", 0.1),
    "softmax": (lambda: make_loss("softmax"), _ssm, "dot", 1.0),
    "infonce+": (
        lambda: InfoNCEPlusLoss(lam=1.1, epsilon=0.3),
        _infonce_plus(1.1, 0.3),
        "cosine",
        0.1,
    ),
    "mine+": (
        lambda: MINEPlusLoss(lam=0.9, temperature=0.2),
        _infonce_plus(0.9, 0.0),
        "cosine",
        0.2,
    ),
}


def _compare(loss_value, ref_value, inputs):
    assert torch.allclose(loss_value, ref_value, rtol=1e-10, atol=1e-12), (loss_value, ref_value)
    grads = torch.autograd.grad(loss_value, inputs, allow_unused=True)
    ref_grads = torch.autograd.grad(ref_value, inputs, allow_unused=True)
    for got, want in zip(grads, ref_grads, strict=True):
        got = torch.zeros(()) if got is None else got
        want = torch.zeros(()) if want is None else want
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-row"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_matches_slow_formula(case, shared):
    make, formula, similarity, temperature = CASES[case]
    batch = _batch(shared)
    loss = make()
    value = loss(**batch)
    ref = _reference(formula, **batch, similarity=similarity, temperature=temperature)
    _compare(value, ref, list(batch.values()))


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-row"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_with_mask_logq_weights_and_hard_negatives(case, shared):
    make, formula, similarity, temperature = CASES[case]
    batch = _batch(shared, seed=1)
    g = torch.Generator().manual_seed(2)
    shape = _logit_shape(shared)
    mask = torch.rand(shape, generator=g) < 0.3
    mask[0] = True  # a row without any legal negative
    options = {
        "neg_mask": mask,
        "sample_weight": torch.rand(B, generator=g, dtype=torch.float64) + 0.5,
    }
    loss = make()
    if loss.supports_logq:
        options["pos_logq"] = -torch.rand(B, generator=g, dtype=torch.float64) * 3
        options["neg_logq"] = (
            -torch.rand(shape[1:] if shared else shape, generator=g, dtype=torch.float64) * 3
        )
    loss.hard_negatives = 3
    value = loss(**batch, **options)
    ref = _reference(
        formula, **batch, **options, similarity=similarity, temperature=temperature, k=3
    )
    _compare(value, ref, list(batch.values()))


@pytest.mark.parametrize("name", ["bpr", "ccl", "ssm", "infonce+", "mine+"])
def test_gradcheck(name):
    loss = make_loss(name, margin=0.0) if name == "ccl" else make_loss(name)
    batch = _batch(shared=False, seed=3)
    mask = torch.zeros(B, N, dtype=torch.bool)
    mask[1, 2] = True

    def fn(user_emb, pos_emb, neg_emb):
        return loss(user_emb, pos_emb, neg_emb, neg_mask=mask)

    assert torch.autograd.gradcheck(fn, tuple(t.detach().requires_grad_() for t in batch.values()))


def test_infonce_plus_special_cases():
    batch = _batch(shared=True, seed=4)
    ssm = SampledSoftmaxLoss(temperature=0.2)(**batch)
    assert torch.allclose(InfoNCEPlusLoss(temperature=0.2, lam=1.0, epsilon=1.0)(**batch), ssm)
    mine = MINEPlusLoss(temperature=0.2, lam=1.3)(**batch)
    assert torch.allclose(InfoNCEPlusLoss(temperature=0.2, lam=1.3, epsilon=0.0)(**batch), mine)


# ---------------------------------------------------------------- masking
def test_masking_removes_exactly_the_accidental_hits():
    """With ids, the loss masks duplicates of the positive; the result equals computing every
    row on its legal negatives alone."""
    batch = _batch(shared=False, seed=5)
    pos_items = torch.tensor([3, 8, 5, 1])
    neg_items = torch.tensor(
        [[3, 9, 3, 2, 4, 6], [0, 8, 7, 8, 9, 2], [5, 5, 5, 5, 5, 0], [2, 4, 6, 7, 9, 0]]
    )
    for loss in (SampledSoftmaxLoss(), BPRLoss(), MINEPlusLoss()):
        value = loss(**batch, neg_items=neg_items, pos_items=pos_items)
        rows = []
        for b in range(B):
            keep = neg_items[b] != pos_items[b]
            rows.append(
                loss(
                    batch["user_emb"][b : b + 1],
                    batch["pos_emb"][b : b + 1],
                    batch["neg_emb"][b : b + 1, keep],
                )
            )
        assert torch.allclose(value, torch.stack(rows).mean())
        explicit = loss(**batch, neg_mask=neg_items == pos_items[:, None])
        assert torch.allclose(value, explicit)


def test_in_batch_softmax_equals_tfrs_diagonal_cross_entropy():
    """In-batch candidates with the own column and same-user positives masked give TFRS's
    B x B cross-entropy with diagonal labels and accidental hits removed."""
    batch = _batch(shared=True, seed=6)
    user_emb, pos_emb = batch["user_emb"], batch["pos_emb"]
    users, items = torch.tensor([0, 1, 0, 2]), torch.tensor([10, 11, 12, 10])
    log_p = torch.log(torch.rand(20, generator=torch.Generator().manual_seed(0)))
    cand = in_batch_negatives(items, item_log_p=log_p)
    value = SoftmaxLoss()(
        user_emb,
        pos_emb,
        pos_emb,
        neg_items=cand.items,
        pos_items=items,
        user_idx=users,
        pos_logq=cand.log_q[:B],
        neg_logq=cand.log_q,
    )
    logits = user_emb @ pos_emb.T - log_p[items][None, :]  # shape: (B, B)
    # column c is illegal for row b when its item is a positive of b's user in the batch
    # (item 10 of row 3 is user 0's positive in row 0, so row 2 masks it too)
    same_user = users[:, None] == users[None, :]
    hits = torch.tensor(
        [[bool((same_user[b] & (items == items[c])).any()) for c in range(B)] for b in range(B)]
    )
    assert bool(hits[2, 3]) and not bool((users[:, None] == users[None, :])[2, 3])
    hits.fill_diagonal_(False)
    logits = logits.masked_fill(hits, -math.inf)
    assert torch.allclose(value, F.cross_entropy(logits, torch.arange(B)))
    mask = accidental_hit_mask(items, cand.items, users=users)
    assert torch.equal(mask, hits | torch.eye(B, dtype=torch.bool))


# ---------------------------------------------------------------- logQ and hard negatives
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-row"])
def test_logq_changes_logits_by_exactly_minus_log_q(shared):
    batch = {k: v.detach() for k, v in _batch(shared, seed=7).items()}
    shape = _logit_shape(shared)
    neg_logq = torch.rand(shape[1:] if shared else shape, dtype=torch.float64).log()
    pos_logq = torch.rand(B, dtype=torch.float64).log()
    pos0, neg0, _ = prepare_logits(**batch, similarity="cosine", temperature=0.1)
    pos1, neg1, _ = prepare_logits(
        **batch, similarity="cosine", temperature=0.1, pos_logq=pos_logq, neg_logq=neg_logq
    )
    assert torch.allclose(pos1 - pos0, -pos_logq)
    assert torch.allclose(neg1 - neg0, -neg_logq.expand(shape))


def test_pipeline_order_temperature_logq_mask_then_mining():
    user = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    pos = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    negs = torch.tensor([[[0.9, 0.0], [0.5, 0.0], [0.8, 0.0], [0.1, 0.0]]], dtype=torch.float64)
    # raw order 0 > 2 > 1 > 3; logQ lifts item 3 above all; mask removes item 0
    neg_logq = torch.tensor([[0.0, 0.0, 0.0, -2.0]], dtype=torch.float64)
    mask = torch.tensor([[True, False, False, False]])
    _, neg, valid = prepare_logits(
        user, pos, negs, temperature=0.5, neg_logq=neg_logq, neg_mask=mask, hard_negatives=2
    )
    assert torch.allclose(neg, torch.tensor([[0.1 / 0.5 + 2.0, 0.8 / 0.5]], dtype=torch.float64))
    assert bool(valid.all())


def test_hard_negatives_keep_the_top_k_in_the_loss():
    batch = _batch(shared=True, seed=8)
    k = 2
    full = SampledSoftmaxLoss(similarity="dot", temperature=1.0)
    hard = SampledSoftmaxLoss(similarity="dot", temperature=1.0, hard_negatives=k)
    logits = (batch["user_emb"] @ batch["neg_emb"].T).detach()  # shape: (B, C)
    top = logits.topk(k, dim=1).indices
    manual = torch.stack(
        [
            full(
                batch["user_emb"][b : b + 1], batch["pos_emb"][b : b + 1], batch["neg_emb"][top[b]]
            )
            for b in range(B)
        ]
    ).mean()
    assert torch.allclose(hard(**batch), manual)
    assert torch.allclose(
        SampledSoftmaxLoss(hard_negatives=100)(**batch), SampledSoftmaxLoss()(**batch)
    )


# ---------------------------------------------------------------- DirectAU and MAWU
def _official_uniformity(x, t=2.0):
    return torch.pdist(F.normalize(x, dim=-1), p=2).pow(2).mul(-t).exp().mean().log()


def test_directau_matches_official_formula():
    batch = _batch(shared=True, seed=9)
    user_emb, pos_emb = batch["user_emb"], batch["pos_emb"]
    loss = DirectAULoss(gamma=0.7)
    value = loss(user_emb, pos_emb)
    align = (F.normalize(user_emb, dim=-1) - F.normalize(pos_emb, dim=-1)).norm(dim=1).pow(2)
    ref = align.mean() + 0.7 * (_official_uniformity(user_emb) + _official_uniformity(pos_emb)) / 2
    _compare(value, ref, [user_emb, pos_emb])
    weights = torch.tensor([1.0, 0.0, 2.0, 1.0], dtype=torch.float64)
    ref_w = (weights * align).sum() / weights.sum() + 0.7 * (
        _official_uniformity(user_emb) + _official_uniformity(pos_emb)
    ) / 2
    assert torch.allclose(loss(user_emb, pos_emb, sample_weight=weights), ref_w)


def test_uniformity_keeps_duplicates_and_is_smooth_there():
    x = torch.randn(5, 3, dtype=torch.float64)
    x[3] = x[1] * 2.0  # the same direction twice, as a repeated user in a batch
    x.requires_grad_()
    assert torch.allclose(uniformity(x), _official_uniformity(x))
    (grad,) = torch.autograd.grad(uniformity(x), x)
    assert bool(torch.isfinite(grad).all())


def _mawu_reference(loss, user_emb, pos_emb, users, items):
    margin = loss.user_margin.weight[users, 0] + loss.item_margin.weight[items, 0]
    rows = []
    for b in range(len(users)):
        cos = _sim(user_emb[b], pos_emb[b], "cosine").clamp(-1 + 1e-7, 1 - 1e-7)
        angle = torch.arccos(cos) + 1 - torch.sigmoid(margin[b])
        rows.append(-torch.cos(angle.clamp(0, math.pi)))
    return (
        torch.stack(rows).mean()
        + loss.gamma1 * _official_uniformity(user_emb)
        + loss.gamma2 * _official_uniformity(pos_emb)
    )


def test_mawu_matches_formula_and_margins_learn():
    batch = _batch(shared=True, seed=10)
    user_emb, pos_emb = batch["user_emb"], batch["pos_emb"]
    users, items = torch.tensor([0, 2, 2, 5]), torch.tensor([1, 1, 3, 4])
    loss = make_loss("mawu", n_users=6, n_items=5, gamma1=1.2, gamma2=0.4).double()
    with torch.no_grad():
        loss.user_margin.weight.uniform_(0.1, 0.9)
        loss.item_margin.weight.uniform_(0.1, 0.9)
    value = loss(user_emb, pos_emb, user_idx=users, item_idx=items)
    ref = _mawu_reference(loss, user_emb, pos_emb, users, items)
    _compare(value, ref, [user_emb, pos_emb, loss.user_margin.weight, loss.item_margin.weight])
    assert torch.allclose(loss(user_emb, pos_emb, user_idx=users, pos_items=items), value)
    loss(user_emb, pos_emb, user_idx=users, item_idx=items).backward()
    grad_u = loss.user_margin.weight.grad[:, 0]
    assert bool((grad_u[users] != 0).all())
    assert bool((grad_u[[1, 3, 4]] == 0).all())  # users absent from the batch
    assert bool((loss.item_margin.weight.grad[items, 0] != 0).all())


def test_mawu_margins_are_clamped_in_training_only():
    loss = MAWULoss(n_users=4, n_items=4)
    batch = {k: v.float().detach() for k, v in _batch(shared=True, seed=11).items()}
    with torch.no_grad():
        loss.user_margin.weight.copy_(torch.tensor([[-1.0], [0.5], [2.0], [3.0]]))
    loss.eval()
    loss(batch["user_emb"], batch["pos_emb"], user_idx=torch.arange(4), item_idx=torch.arange(4))
    assert float(loss.user_margin.weight.detach().min()) == -1.0
    loss.train()
    loss(batch["user_emb"], batch["pos_emb"], user_idx=torch.arange(4), item_idx=torch.arange(4))
    weight = loss.user_margin.weight[:, 0]
    assert torch.equal(weight, torch.tensor([0.0, 0.5, 1.0, 1.0]))
    assert [name for name, _ in loss.named_parameters()] == [
        "user_margin.weight",
        "item_margin.weight",
    ]


# ---------------------------------------------------------------- errors
def test_make_loss_names_and_errors():
    assert set(LOSSES) == {
        "bpr",
        "hinge",
        "ccl",
        "ssm",
        "softmax",
        "directau",
        "mawu",
        "infonce+",
        "mine+",
    }
    assert isinstance(make_loss("SSM", temperature=0.05), SampledSoftmaxLoss)
    with pytest.raises(ValueError, match="unknown loss 'warp'"):
        make_loss("warp")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['gamma'\]"):
        make_loss("bpr", gamma=1.0)
    with pytest.raises(ValueError, match="missing required option"):
        make_loss("mawu")
    with pytest.raises(ValueError, match="similarity"):
        make_loss("ssm", similarity="euclid")
    with pytest.raises(ValueError, match="temperature"):
        make_loss("ssm", temperature=0.0)
    with pytest.raises(ValueError, match="hard_negatives"):
        make_loss("bpr", hard_negatives=0)


def test_bad_inputs_give_clear_errors():
    batch = {k: v.detach() for k, v in _batch(shared=False, seed=12).items()}
    u, p, n = batch["user_emb"], batch["pos_emb"], batch["neg_emb"]
    ssm, bpr = SampledSoftmaxLoss(), BPRLoss()
    with pytest.raises(ValueError, match="pos_emb must have user_emb's shape"):
        ssm(u, p[:2], n)
    with pytest.raises(ValueError, match="neg_emb must be"):
        ssm(u, p, n[..., :2])
    with pytest.raises(ValueError, match="needs negatives"):
        ssm(u, p)
    with pytest.raises(ValueError, match="neg_mask must be a bool tensor"):
        ssm(u, p, n, neg_mask=torch.zeros(B, N))
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        ssm(u, p, n, sample_weight=torch.ones(B + 1))
    with pytest.raises(ValueError, match="neg_logq must have shape"):
        ssm(u, p, n, neg_logq=torch.zeros(N))
    with pytest.raises(ValueError, match="needs the positives' ids"):
        ssm(u, p, n, neg_items=torch.zeros(B, N, dtype=torch.long))
    with pytest.raises(ValueError, match="does not take pos_logq/neg_logq"):
        bpr(u, p, n, neg_logq=torch.zeros(B, N))
    with pytest.raises(ValueError, match="uses no negatives"):
        DirectAULoss()(u, p, n)
    with pytest.raises(ValueError, match="at least 2 rows"):
        DirectAULoss()(u[:1], p[:1])
    with pytest.raises(ValueError, match="needs user_idx and item_idx"):
        MAWULoss(n_users=4, n_items=4).double()(u, p)
    with pytest.raises(ValueError, match="item_idx must lie in"):
        MAWULoss(n_users=4, n_items=4).double()(
            u, p, user_idx=torch.arange(4), item_idx=torch.tensor([0, 1, 2, 9])
        )


# ---------------------------------------------------------------- devices
def _all_losses():
    return [
        make_loss(name, **({"n_users": 8, "n_items": 8} if name == "mawu" else {}))
        for name in LOSSES
    ]


def _run_on(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    u, p = torch.randn(B, D, generator=g).to(device), torch.randn(B, D, generator=g).to(device)
    negs = torch.randn(B, N, D, generator=g).to(device).requires_grad_()
    neg_items = torch.randint(8, (B, N), generator=g).to(device)
    ids = torch.arange(B, device=device)
    for loss in _all_losses():
        loss = loss.to(device)
        if loss.needs_negatives:
            extra = {"neg_logq": torch.zeros(B, N, device=device)} if loss.supports_logq else {}
            value = loss(
                u,
                p,
                negs,
                neg_items=neg_items,
                pos_items=ids,
                user_idx=ids,
                sample_weight=torch.ones(B, device=device),
                **extra,
            )
        else:
            value = loss(u, p, user_idx=ids, item_idx=ids)
        assert value.device.type == device.type and value.dim() == 0
        assert bool(torch.isfinite(value))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_loss_runs_on_cuda():
    _run_on(torch.device("cuda"))


def test_every_loss_runs_on_cpu():
    _run_on(torch.device("cpu"))


def test_losses_create_no_tensor_off_device():
    """On the 'meta' device any tensor created without ``device=`` fails to mix with the
    inputs, so this catches CUDA bugs on a CPU-only machine (MAWU reads id values, which meta
    tensors lack; it is covered by the CPU/CUDA runs)."""
    meta = torch.device("meta")
    u, p = torch.randn(B, D, device=meta), torch.randn(B, D, device=meta)
    ids = torch.arange(B, device=meta)
    for name in sorted(set(LOSSES) - {"mawu"}):
        for negs, neg_items in (
            (torch.randn(B, N, D, device=meta), torch.randint(8, (B, N), device=meta)),
            (torch.randn(C, D, device=meta), torch.randint(8, (C,), device=meta)),
        ):
            loss = make_loss(name)
            if not loss.needs_negatives:
                assert loss(u, p).device == meta
                continue
            loss.hard_negatives = 2
            extra = (
                {
                    "neg_logq": torch.zeros(neg_items.shape, device=meta),
                    "pos_logq": torch.zeros(B, device=meta),
                }
                if loss.supports_logq
                else {}
            )
            value = loss(
                u,
                p,
                negs,
                neg_items=neg_items,
                pos_items=ids,
                user_idx=ids,
                neg_mask=torch.zeros(B, neg_items.shape[-1], dtype=torch.bool, device=meta),
                sample_weight=torch.ones(B, device=meta),
                **extra,
            )
            assert value.device == meta
