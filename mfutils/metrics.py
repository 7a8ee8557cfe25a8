r"""Evaluation metrics: rating error, full-ranking top-K metrics, binary labels.

Three families, all vectorised and device-agnostic (everything runs where the scores live):

**Rating prediction** -- :func:`rmse` and :func:`mae` over paired predictions and targets,
optionally clipping the predictions to the rating scale first:

.. math::

    \mathrm{RMSE}=\sqrt{\tfrac1n\textstyle\sum_i(\hat r_i-r_i)^2},\qquad
    \mathrm{MAE}=\tfrac1n\textstyle\sum_i|\hat r_i-r_i|.

**Full-ranking top-K** -- :func:`topk_metrics` and :func:`topk_metrics_per_user`. For every user
``u`` with held-out test items :math:`T_u\neq\emptyset`, all items are scored, the user's training
items (and ``exclude`` items, e.g. validation items when testing) are masked to :math:`-\infty`,
and :math:`L_u` is the top-:math:`K` list, :math:`\mathrm{rel}_r=\mathbb 1[L_u(r)\in T_u]`.
Following RecBole (the convention of DirectAU / MAWU):

.. math::

    \mathrm{Recall@}K=\frac{|L_u\cap T_u|}{|T_u|},\quad
    \mathrm{Precision@}K=\frac{|L_u\cap T_u|}{K},\quad
    \mathrm{HitRate@}K=\mathbb 1\big[|L_u\cap T_u|\ge1\big],

.. math::

    \mathrm{NDCG@}K=\frac{\sum_{r=1}^{K}\mathrm{rel}_r/\log_2(r+1)}
                        {\sum_{r=1}^{\min(|T_u|,K)}1/\log_2(r+1)},\qquad
    \mathrm{MRR}=\frac1{\mathrm{rank}_u},

where :math:`\mathrm{rank}_u` is the rank of the best-ranked test item in the *full*, untruncated
ranking of the non-masked items (not MRR@K). Ties in the MRR rank use the **mid-rank**
convention (see :func:`topk_metrics`). Each metric is averaged over the evaluated users.

**Binary labels** -- :func:`auc` (rank-based, ties counted as one half) and :func:`log_loss`,
for models with a logistic output (e.g. the binarised task ``rating >= 4``).

.. warning::

   Sampled metrics are *not* consistent with their full-ranking counterparts: they can reverse
   the order of two models, and the fewer negatives, the closer every metric gets to AUC
   (Krichene & Rendle 2020). Full ranking (:func:`topk_metrics`) is the default of this package;
   label Koren's percentile protocol as a *sampled* metric whenever it is reported.

References
----------
.. [RecBole] W. X. Zhao et al., *RecBole: Towards a Unified, Comprehensive and Efficient
   Framework for Recommendation Algorithms*, CIKM 2021 (metric definitions in
   ``recbole.evaluator.metrics``).
.. [KR20] W. Krichene, S. Rendle, *On Sampled Metrics for Item Recommendation*, KDD 2020.
.. [Koren08] Y. Koren, *Factorization Meets the Neighborhood: a Multifaceted Collaborative
   Filtering Model*, KDD 2008, §7.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from mfutils.data.container import UserItemCSR

__all__ = [
    "rmse",
    "mae",
    "interval_coverage",
    "topk_metrics",
    "topk_metrics_per_user",
    "auc",
    "log_loss",
]

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]
ScoreFn = Callable[[torch.Tensor], torch.Tensor]


# ====================================================================== rating error
def _paired(
    pred: ArrayLike, target: ArrayLike, clip: tuple[float, float] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pred`` and ``target`` as floating tensors on one device, checked and clipped."""
    device = next((x.device for x in (pred, target) if isinstance(x, torch.Tensor)), None)
    # float64 for accuracy wherever the device has it (MPS does not)
    dtype = torch.float32 if device is not None and device.type == "mps" else torch.float64
    out = []
    for label, x in (("pred", pred), ("target", target)):
        if isinstance(x, torch.Tensor):
            t = x.detach().to(device=device, dtype=dtype)
        else:
            arr = np.asarray(x)
            if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                raise ValueError(f"{label} must be numeric; got dtype {arr.dtype}")
            t = torch.as_tensor(arr.astype(np.float64), device=device).to(dtype)
        if t.numel() == 0:
            raise ValueError(f"{label} is empty")
        out.append(t)
    p, t = out
    if p.shape != t.shape:
        raise ValueError(
            f"pred has shape {tuple(p.shape)} but target has shape {tuple(t.shape)}; "
            "they must match exactly"
        )
    if clip is not None:
        lo, hi = clip
        if not lo <= hi:
            raise ValueError(f"clip must be (lo, hi) with lo <= hi; got {clip!r}")
        p = p.clamp(float(lo), float(hi))
    return p, t


def rmse(pred: ArrayLike, target: ArrayLike, *, clip: tuple[float, float] | None = None) -> float:
    r"""Root mean squared error :math:`\sqrt{\frac1n\sum_i(\hat r_i-r_i)^2}`.

    Parameters
    ----------
    pred, target : np.ndarray or torch.Tensor, same shape
        Predicted and true ratings. Tensors may live on any device (the computation runs there;
        a NumPy argument is moved to the tensor's device).
    clip : tuple of float, optional
        ``(lo, hi)``: clip the predictions to this range first, e.g. the rating scale
        ``(1, 5)`` -- common practice for ML-100K, state it when reporting.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        When the shapes differ, an input is empty, or ``clip`` has ``lo > hi``.
    """
    p, t = _paired(pred, target, clip)
    return float(torch.sqrt(torch.mean((p - t) ** 2)))


def mae(pred: ArrayLike, target: ArrayLike, *, clip: tuple[float, float] | None = None) -> float:
    r"""Mean absolute error :math:`\frac1n\sum_i|\hat r_i-r_i|`.

    Parameters
    ----------
    pred, target : np.ndarray or torch.Tensor, same shape
        Predicted and true ratings, on any device.
    clip : tuple of float, optional
        ``(lo, hi)``: clip the predictions to this range first.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        When the shapes differ, an input is empty, or ``clip`` has ``lo > hi``.
    """
    p, t = _paired(pred, target, clip)
    return float(torch.mean(torch.abs(p - t)))


def interval_coverage(
    mean: ArrayLike,
    std: ArrayLike,
    target: ArrayLike,
    *,
    levels: Sequence[float] = (0.5, 0.8, 0.9, 0.95),
) -> pd.DataFrame:
    r"""Share of ratings inside central Gaussian predictive intervals, per nominal level.

    The interval of level :math:`q` is :math:`\hat r \pm z_{(1+q)/2}\,\sigma`; a
    calibrated model covers about :math:`q` of the held-out ratings (Bayesian MF reference
    §5).

    Returns
    -------
    pandas.DataFrame
        One row per level: ``level``, ``coverage`` and the mean interval ``width``.
    """
    m, t = _paired(mean, target, None)
    s, _ = _paired(std, target, None)
    normal = torch.distributions.Normal(0.0, 1.0)
    rows = []
    for level in levels:
        if not 0 < level < 1:
            raise ValueError(f"level={level} must lie in (0, 1)")
        half = float(normal.icdf(torch.tensor((1 + level) / 2))) * s  # shape: (n,)
        rows.append(
            {
                "level": level,
                "coverage": float(((t - m).abs() <= half).float().mean()),
                "width": float(2 * half.mean()),
            }
        )
    return pd.DataFrame(rows)


# ====================================================================== CSR helpers
def as_user_ids(
    users: ArrayLike | Iterable[int], n_users: int, device: torch.device, label: str
) -> torch.Tensor:
    """User ids as a 1-D LongTensor on ``device``, range-checked."""
    if isinstance(users, torch.Tensor):
        t = users.detach().to(device=device, dtype=torch.long)
    else:
        arr = users if isinstance(users, np.ndarray) else np.asarray(list(users))
        t = torch.as_tensor(arr.astype(np.int64), device=device)
    t = t.reshape(-1)  # shape: (n,)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_users):
        raise ValueError(f"{label} must lie in [0, {n_users}); got {int(t.min())}..{int(t.max())}")
    return t


# ====================================================================== full-ranking top-K
def _check_ks(ks: int | Iterable[int]) -> tuple[int, ...]:
    ks_t = (ks,) if isinstance(ks, int) else tuple(ks)
    if not ks_t:
        raise ValueError("ks must hold at least one cut-off")
    for k in ks_t:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"every k in ks must be a positive int; got {k!r}")
    return tuple(dict.fromkeys(int(k) for k in ks_t))


def _evaluate_topk(
    score_fn: ScoreFn,
    *,
    train: UserItemCSR,
    test: UserItemCSR,
    ks: int | Iterable[int],
    users: ArrayLike | Iterable[int] | None,
    chunk_size: int,
    exclude: UserItemCSR | None,
    device: torch.device | str | None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Per-user metrics shared by :func:`topk_metrics` and :func:`topk_metrics_per_user`.

    Returns ``(users, n_test, metrics)``: the evaluated user ids, their test-set sizes and a
    dict of per-user metric tensors (all shape ``(n_eval,)``, on the scores' device).
    """
    ks_t = _check_ks(ks)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    n_users, n_items = train.n_users, train.n_items
    for label, csr in (("test", test), ("exclude", exclude)):
        if csr is not None and (csr.n_users != n_users or csr.n_items != n_items):
            raise ValueError(
                f"{label} has shape ({csr.n_users}, {csr.n_items}) but train has "
                f"({n_users}, {n_items}); all CSRs must share one id space"
            )

    # users to evaluate: those with >= 1 test item (optionally restricted to `users`)
    has_test = test.counts() > 0  # shape: (n_users,)
    if users is None:
        eval_users = torch.nonzero(has_test).reshape(-1)  # shape: (n_eval,)
    else:
        wanted = torch.unique(as_user_ids(users, n_users, test.device, "users"))
        eval_users = wanted[has_test[wanted]]  # shape: (n_eval,)
    ids_device = train.device if device is None else torch.device(device)

    k_max = max(ks_t)
    k_top = min(k_max, n_items)  # topk never asks for more items than the catalogue holds
    names = [f"{m}@{k}" for k in ks_t for m in ("recall", "ndcg", "hitrate", "precision")]
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in [*names, "mrr"]}
    n_test_parts: list[torch.Tensor] = []

    with torch.no_grad():
        for start in range(0, len(eval_users), chunk_size):
            chunk = eval_users[start : start + chunk_size]  # shape: (B,)
            scores = score_fn(chunk.to(ids_device))
            if not isinstance(scores, torch.Tensor):
                raise TypeError(f"score_fn must return a torch.Tensor; got {type(scores)}")
            if tuple(scores.shape) != (len(chunk), n_items):
                raise ValueError(
                    f"score_fn returned shape {tuple(scores.shape)}; expected "
                    f"({len(chunk)}, {n_items}) = (len(users), n_items)"
                )
            # own copy: masking in place must not touch the caller's tensor
            dtype = scores.dtype if scores.is_floating_point() else torch.float32
            scores = scores.detach().to(dtype=dtype, copy=True)  # shape: (B, n_items)
            if bool(torch.isnan(scores).any()):
                raise ValueError("score_fn returned NaN scores")
            dev = scores.device
            # move the CSRs to the scores' device once (a no-op on later chunks)
            if train.device != dev:
                train = train.to(dev)
            if test.device != dev:
                test = test.to(dev)
            if exclude is not None and exclude.device != dev:
                exclude = exclude.to(dev)
            chunk = chunk.to(dev)

            # test membership, shape: (B, n_items); n_test counts distinct test items
            test_dense = torch.zeros_like(scores, dtype=torch.bool)
            test_dense.index_put_(test.gather(chunk), test_dense.new_ones(()))
            n_test = test_dense.sum(1)  # shape: (B,)

            # mask seen items to -inf; a masked test item can never be a hit
            for csr in (train, exclude):
                if csr is None:
                    continue
                rows, cols = csr.gather(chunk)  # shape: (nnz_B,), (nnz_B,)
                scores.index_put_((rows, cols), scores.new_full((), float("-inf")))
                test_dense.index_put_((rows, cols), test_dense.new_zeros(()))

            # top-K hits, padded with misses up to k_max when the catalogue is smaller
            # per-user metric arithmetic in float64 (MPS has none: float32 there)
            mdtype = torch.float32 if dev.type == "mps" else torch.float64
            top_idx = torch.topk(scores, k_top, dim=1).indices  # shape: (B, k_top)
            hits = torch.zeros((len(chunk), k_max), dtype=mdtype, device=dev)  # (B, k_max)
            hits[:, :k_top] = test_dense.gather(1, top_idx).to(mdtype)
            discount = 1.0 / torch.log2(
                torch.arange(2, k_max + 2, device=dev, dtype=mdtype)
            )  # shape: (k_max,)
            ideal = torch.cumsum(discount, 0)  # shape: (k_max,) IDCG for 1..k_max relevant
            n_test_f = n_test.to(mdtype)  # shape: (B,)
            # running sums along each row: exact per row whatever the chunk size
            hits_cum = torch.cumsum(hits, 1)  # shape: (B, k_max)
            dcg_cum = torch.cumsum(hits * discount, 1)  # shape: (B, k_max)
            for k in ks_t:
                n_hit = hits_cum[:, k - 1]  # shape: (B,)
                dcg = dcg_cum[:, k - 1]  # shape: (B,)
                idcg = ideal[torch.clamp(n_test, max=k) - 1]  # shape: (B,)
                parts[f"recall@{k}"].append(n_hit / n_test_f)
                parts[f"ndcg@{k}"].append(dcg / idcg)
                parts[f"hitrate@{k}"].append((n_hit > 0).to(mdtype))
                parts[f"precision@{k}"].append(n_hit / k)

            # MRR over the full ranking, mid-rank ties with non-test items
            neg_inf = scores.new_full((), float("-inf"))
            best = torch.where(test_dense, scores, neg_inf).amax(1)  # shape: (B,)
            above = (scores > best[:, None]).sum(1)  # shape: (B,)
            tied = ((scores == best[:, None]) & ~test_dense).sum(1)  # shape: (B,)
            rank = 1.0 + above.to(mdtype) + 0.5 * tied.to(mdtype)  # shape: (B,)
            parts["mrr"].append(torch.where(best > neg_inf, 1.0 / rank, 0.0))  # shape: (B,)
            n_test_parts.append(n_test)

    out_device = eval_users.device if not n_test_parts else n_test_parts[0].device
    metrics = {
        name: torch.cat(vals) if vals else torch.zeros(0, device=out_device)
        for name, vals in parts.items()
    }
    n_test_all = (
        torch.cat(n_test_parts)
        if n_test_parts
        else torch.zeros(0, dtype=torch.long, device=out_device)
    )
    return eval_users.to(out_device), n_test_all, metrics


_TOPK_PARAMS_DOC = r"""
    Parameters
    ----------
    score_fn : callable
        ``score_fn(users) -> scores``: ``users`` is a LongTensor of shape ``(B,)`` on
        ``device``; ``scores`` a floating tensor of shape ``(B, n_items)`` (higher = better) on
        the model's device. Call ``model.eval()`` first; the calls run under ``torch.no_grad()``.
        The returned tensor is copied before masking, so returning a view of a cached score
        matrix is safe.
    train : UserItemCSR
        Items seen in training; they are masked to :math:`-\infty` for their user.
    test : UserItemCSR
        Held-out items :math:`T_u`. Users with no test item are skipped. A test item that is
        also a training or ``exclude`` item is masked, so it can never be hit, but it still
        counts in :math:`|T_u|`.
    ks : int or iterable of int, default (10, 20)
        Cut-offs. A ``k`` larger than the number of candidate items is allowed: the missing
        positions count as misses (so Precision@k still divides by ``k``).
    users : array-like of int, optional
        Evaluate only these users (deduplicated and sorted; those without test items are
        skipped). Default: every user with at least one test item.
    chunk_size : int, default 1024
        Users scored per call of ``score_fn``; memory is ``O(chunk_size * n_items)``. Results do
        not depend on it.
    exclude : UserItemCSR, optional
        More items to mask, e.g. validation items when evaluating on the test set.
    device : torch.device or str, optional
        Device of the user ids passed to ``score_fn``; default ``train.device``. Everything
        else runs on the device of the returned scores: the CSRs are moved there once (a
        no-op when they already live there), so passing CSRs on the model's device avoids any
        copy.
"""

_TOPK_NOTES_DOC = r"""
    Notes
    -----
    For each user the scores of training and ``exclude`` items are set to :math:`-\infty`,
    the top-``max(ks)`` list is taken with :func:`torch.topk`, and with
    :math:`\mathrm{rel}_r=\mathbb 1[L_u(r)\in T_u]` (RecBole definitions):

    * ``recall@k`` :math:`=\sum_{r\le k}\mathrm{rel}_r/|T_u|`;
    * ``precision@k`` :math:`=\sum_{r\le k}\mathrm{rel}_r/k`;
    * ``hitrate@k`` :math:`=\mathbb 1[\sum_{r\le k}\mathrm{rel}_r\ge1]`;
    * ``ndcg@k`` :math:`=\mathrm{DCG}/\mathrm{IDCG}` with
      :math:`\mathrm{DCG}=\sum_{r\le k}\mathrm{rel}_r/\log_2(r+1)` and the ideal DCG truncated
      at :math:`\min(|T_u|,k)`: :math:`\sum_{r=1}^{\min(|T_u|,k)}1/\log_2(r+1)`;
    * ``mrr`` :math:`=1/\mathrm{rank}_u` over the **full** ranking (not truncated at any k).
      With :math:`s^*` the best score of a non-masked test item,
      :math:`\mathrm{rank}_u=1+\#\{j: s_j>s^*\}+\tfrac12\#\{j\notin T_u: s_j=s^*\}`, counting
      non-masked items only. This **mid-rank** tie convention is the expected rank under
      random tie-breaking for a single tied test item (a constant scorer gets
      :math:`1+(n_c-|T_u|)/2` with :math:`n_c` non-masked items, not 1) and matches the
      ``0.5 * ties`` rule of :func:`percentile_ranks`; other test items tied with
      :math:`s^*` do not push it down.
      ``mrr`` is 0 when every test item is masked.

    Ties at the top-k cut-off are resolved by :func:`torch.topk` (implementation-defined);
    with continuous scores they do not occur in practice.

    Full ranking is deliberate: sampled versions of these metrics are inconsistent with the
    exact ones and can reorder models (Krichene & Rendle 2020).

    References
    ----------
    RecBole metric definitions (``recbole.evaluator.metrics``); W. Krichene, S. Rendle, *On
    Sampled Metrics for Item Recommendation*, KDD 2020.
"""


def topk_metrics(
    score_fn: ScoreFn,
    *,
    train: UserItemCSR,
    test: UserItemCSR,
    ks: int | Iterable[int] = (10, 20),
    users: ArrayLike | Iterable[int] | None = None,
    chunk_size: int = 1024,
    exclude: UserItemCSR | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    r"""Full-ranking Recall, NDCG, HitRate, Precision @k and MRR, averaged over test users.

    Users are scored ``chunk_size`` at a time, so a 60k-item catalogue fits in memory; the
    masking uses vectorised CSR gathers and ``index_put_`` (no Python loop over users).
    {params}
    Returns
    -------
    dict of str to float
        ``recall@k, ndcg@k, hitrate@k, precision@k`` for each ``k`` in ``ks``, then ``mrr``:
        means over the evaluated users; and ``n_users``, their number (an int). With no
        evaluated user every mean is NaN and ``n_users`` is 0.

    Raises
    ------
    ValueError
        On incompatible CSR shapes, a bad ``ks`` / ``chunk_size`` / ``users``, scores of the
        wrong shape, or NaN scores.
    {notes}
    See Also
    --------
    topk_metrics_per_user : the same metrics per user, as a DataFrame.
    """
    eval_users, _, metrics = _evaluate_topk(
        score_fn,
        train=train,
        test=test,
        ks=ks,
        users=users,
        chunk_size=chunk_size,
        exclude=exclude,
        device=device,
    )
    n = len(eval_users)
    out: dict[str, float] = {
        name: float(vals.mean()) if n else float("nan")  # float64 mean except on MPS
        for name, vals in metrics.items()
    }
    out["n_users"] = n
    return out


def topk_metrics_per_user(
    score_fn: ScoreFn,
    *,
    train: UserItemCSR,
    test: UserItemCSR,
    ks: int | Iterable[int] = (10, 20),
    users: ArrayLike | Iterable[int] | None = None,
    chunk_size: int = 1024,
    exclude: UserItemCSR | None = None,
    device: torch.device | str | None = None,
) -> pd.DataFrame:
    r"""The metrics of :func:`topk_metrics` for every evaluated user, one row each.

    Same computation (shared code); the column means equal :func:`topk_metrics`' values.
    {params}
    Returns
    -------
    pd.DataFrame
        Columns ``user, n_test`` (distinct test items) and one float column per metric
        (``recall@k, ndcg@k, hitrate@k, precision@k`` for each ``k``, then ``mrr``), one row
        per evaluated user in increasing id order.
    {notes}
    """
    eval_users, n_test, metrics = _evaluate_topk(
        score_fn,
        train=train,
        test=test,
        ks=ks,
        users=users,
        chunk_size=chunk_size,
        exclude=exclude,
        device=device,
    )
    columns: dict[str, np.ndarray] = {
        "user": eval_users.cpu().numpy().astype(np.int64),
        "n_test": n_test.cpu().numpy().astype(np.int64),
    }
    for name, vals in metrics.items():
        columns[name] = vals.double().cpu().numpy()
    return pd.DataFrame(columns)


for _fn in (topk_metrics, topk_metrics_per_user):
    _fn.__doc__ = _fn.__doc__.replace("{params}", _TOPK_PARAMS_DOC).replace(
        "{notes}", _TOPK_NOTES_DOC
    )
del _fn


# ====================================================================== binary labels
def _binary_pair(prob: ArrayLike, label: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """``prob`` and ``label`` as float64 tensors on one device; labels checked to be 0/1."""
    p, y = _paired(prob, label, None)
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("label must hold only 0 and 1")
    return p, y


def auc(score: ArrayLike, label: ArrayLike) -> float:
    r"""Area under the ROC curve by ranks (Mann-Whitney U), ties counted as one half.

    .. math::

        \mathrm{AUC}=\frac{\sum_{i:y_i=1}\mathrm{rank}_i-n_+(n_++1)/2}{n_+\,n_-},

    with mid-ranks for tied scores: the probability that a random positive scores above a random
    negative. One sort, no loop over pairs.

    Parameters
    ----------
    score : np.ndarray or torch.Tensor, shape (n,)
        Any monotone score (probabilities or logits).
    label : np.ndarray or torch.Tensor, shape (n,)
        0/1 labels.

    Raises
    ------
    ValueError
        When the shapes differ, labels are not 0/1, or only one class is present.
    """
    s, y = _binary_pair(score, label)
    s, y = s.reshape(-1), y.reshape(-1)
    n_pos = float(y.sum())
    n_neg = y.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"AUC needs both classes; got {n_pos:.0f} positives and {n_neg:.0f} negatives"
        )
    sorted_scores, order = torch.sort(s)
    _, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    ends = torch.cumsum(counts, 0).double()  # shape: (n_unique,) last 1-based rank of each tie
    mid_rank = ends - (counts.double() - 1) / 2  # shape: (n_unique,)
    rank_sum = float((mid_rank[inverse] * y[order]).sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def log_loss(prob: ArrayLike, label: ArrayLike, *, eps: float = 1e-7) -> float:
    r"""Mean logistic loss :math:`-\frac1n\sum_i[y_i\log p_i+(1-y_i)\log(1-p_i)]`.

    Parameters
    ----------
    prob : np.ndarray or torch.Tensor, shape (n,)
        Predicted probabilities of the label 1, clipped to ``[eps, 1 - eps]``.
    label : np.ndarray or torch.Tensor, shape (n,)
        0/1 labels.
    """
    p, y = _binary_pair(prob, label)
    if bool(((p < 0) | (p > 1)).any()):
        raise ValueError("prob must be probabilities in [0, 1] (apply a sigmoid to logits)")
    p = p.clamp(eps, 1 - eps)
    return float(-(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean())
