r"""Evaluation protocols that compare several fitted models: Koren's sampled top-K test.

:func:`koren_topk` runs Koren's (2008, §7) percentile-rank protocol, MovieLens "cleaner variant"
(see ``explicit-models.md`` §9), for any number of fitted models at once:

1. every test rating with ``rating >= min_rating`` (5 stars) is a row ``(u, i)``;
2. each row gets :math:`N_r=\min(N,\#\text{unrated})` random items that ``u`` rated neither in
   train nor in test, drawn **once** (:func:`sample_negatives`, fixed seed)
   and shared by every model;
3. each model scores the ``(M, 1 + N)`` block, and the percentile of the positive is
   :math:`(\#\{s^-_{rj}>s^+_r\}+\tfrac12\#\{s^-_{rj}=s^+_r\})/N_r`
   (:func:`percentile_ranks`): 0 means it beat every negative;
4. the report is the CDF :math:`P(\mathrm{pct}\le x)` for small ``x``
   (:func:`percentile_rank_cdf`) and the mean percentile rank.

A random ranker has :math:`P(\mathrm{pct}\le x)\approx x` and mean rank 0.5.

.. warning::

   This is a **sampled** metric. It is not consistent with full-ranking metrics
   (:func:`mfutils.metrics.topk_metrics`) and can reverse the order of two models
   (Krichene & Rendle, KDD 2020); report it as such.

:func:`mfutils.plotting.plot_percentile_cdf` draws the cumulative distributions, one line per
model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from mfutils.data.container import Ratings, UserItemCSR
from mfutils.losses import uniformity
from mfutils.metrics import ArrayLike, as_user_ids

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ItemPopularity",
    "KorenTopK",
    "ScoreTable",
    "koren_topk",
    "percentile_rank_cdf",
    "percentile_ranks",
    "sample_negatives",
    "known_items",
    "recommended_popularity",
    "sampled_hit_rate",
    "alignment_uniformity",
]

# Random keys per chunk in :func:`sample_negatives` (float64): 2**23 keys = 64 MiB. A fixed
# constant, so the negatives depend only on the inputs and the seed.
_SAMPLE_CHUNK_ELEMENTS = 2**23
# Float32 percentile ranks such as 50/1000 round to just above 0.05; the CDF comparison allows
# this much slack (far below the rank grid spacing 1 / (2 N) for any realistic N).
_CDF_TOLERANCE = 1e-7

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


class KorenTopK(NamedTuple):
    r"""Result of :func:`koren_topk` (a named tuple: ``ranks, cdf, mean_rank, ...``).

    Attributes
    ----------
    ranks : pandas.DataFrame
        One row per evaluated test rating: ``user``, ``item`` (compact ids), ``n_negatives``
        (valid negatives of the row) and one float column per model, its percentile rank in
        [0, 1].
    cdf : pandas.DataFrame
        :math:`P(\mathrm{pct}\le x)`, indexed by threshold ``x``, one column per model.
    mean_rank : pandas.Series
        Mean percentile rank per model (0.5 for a random ranker).
    negatives : torch.LongTensor, shape (M, n_negatives)
        The shared negatives (``-1`` padding), on the CPU.
    protocol : str
        A one-line description for results logs (threshold, N, seed, number of rows).
    """

    ranks: pd.DataFrame
    cdf: pd.DataFrame
    mean_rank: pd.Series
    negatives: torch.Tensor
    protocol: str


class ScoreTable:
    """A model's ``score_items`` rows for a fixed set of users, computed once and reused.

    Scoring every item is the expensive step of both :func:`koren_topk` and full-ranking
    :func:`mfutils.metrics.topk_metrics`; for a slow model (a kNN predictor) score the test
    users once and pass the table to both. The rows are the model's own outputs, so every
    metric computed from the table is exact.

    Parameters
    ----------
    model : fitted model
        Anything with ``score_items(users: LongTensor) -> (B, n_items)`` scores.
    users : array-like of int
        The users to score (duplicates are fine).
    n_users : int
        Size of the user id space.
    batch_users : int, default 256
        Users per ``score_items`` call.
    """

    def __init__(
        self,
        model: Any,
        users: np.ndarray | torch.Tensor | Sequence[int],
        *,
        n_users: int,
        batch_users: int = 256,
    ) -> None:
        if isinstance(batch_users, bool) or not isinstance(batch_users, int) or batch_users < 1:
            raise ValueError(f"batch_users must be a positive int; got {batch_users!r}")
        distinct = torch.unique(torch.tensor(np.array(users, dtype=np.int64), device="cpu"))
        if len(distinct) and (int(distinct[0]) < 0 or int(distinct[-1]) >= n_users):
            raise ValueError(f"users must lie in [0, {n_users})")
        parts = []
        with torch.no_grad():
            for lo in range(0, len(distinct), batch_users):
                scores = model.score_items(distinct[lo : lo + batch_users])  # shape: (B, n_items)
                parts.append(scores.detach().cpu())
        self.rows = torch.cat(parts) if parts else torch.zeros(0, 0, device="cpu")  # (U, n_items)
        self.lookup = torch.full((n_users,), -1, dtype=torch.long, device="cpu")  # (n_users,)
        self.lookup[distinct] = torch.arange(len(distinct), device="cpu")

    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        """The stored rows of ``users`` (on the CPU), shape (len(users), n_items).

        Raises
        ------
        KeyError
            If a user was not scored when the table was built.
        """
        idx = self.lookup[users.detach().cpu().long()]  # shape: (B,)
        if bool((idx < 0).any()):
            raise KeyError("ScoreTable holds no row for some of these users")
        return self.rows[idx]


class ItemPopularity:
    """Reference ranker: every user gets the items' training rating counts as scores.

    Not a rating model; the non-personalised yardstick of top-K evaluation (on MovieLens it is
    hard to beat in full ranking, because test ratings concentrate on popular movies).
    """

    def fit(self, train: Ratings) -> ItemPopularity:
        """Count the training ratings of every item."""
        self.counts = torch.as_tensor(train.item_counts(), dtype=torch.float32)  # (n_items,)
        return self

    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        """Item counts for every user, shape (len(users), n_items), on the CPU."""
        return self.counts[None, :].expand(len(users), -1).clone()


def known_items(*parts: Ratings, device: torch.device | str | None = None) -> UserItemCSR:
    """Every (user, item) pair rated in any of ``parts`` (e.g. train and test), as a CSR.

    Parameters
    ----------
    *parts : Ratings
        Ratings in one id space (same ``n_users`` and ``n_items``). A pair present in several
        parts is stored several times, which is harmless for masking.
    device : torch.device or str, optional

    Returns
    -------
    UserItemCSR
    """
    if not parts:
        raise ValueError("known_items needs at least one Ratings")
    n_users, n_items = parts[0].n_users, parts[0].n_items
    for part in parts[1:]:
        if (part.n_users, part.n_items) != (n_users, n_items):
            raise ValueError(
                f"all parts must share one id space; got ({part.n_users}, "
                f"{part.n_items}) and ({n_users}, {n_items})"
            )
    user = np.concatenate([p.user for p in parts])  # shape: (nnz,)
    item = np.concatenate([p.item for p in parts])  # shape: (nnz,)
    return UserItemCSR.from_pairs(user, item, n_users=n_users, n_items=n_items, device=device)


def _block_scores(
    model: Any, users: torch.Tensor, block: torch.Tensor, *, method: str, batch_users: int
) -> torch.Tensor:
    """Scores of ``block[r]`` items for ``users[r]``, shape (M, C), float32/64 on the CPU.

    ``"score_items"``: score every item for each distinct user once (``batch_users`` users per
    call) and gather the block's columns. ``"predict"``: ``model.predict`` on the flattened
    ``(M * C)`` pairs. Both return the model's exact predictions.
    """
    n_rows, n_cols = block.shape
    if method == "predict":
        flat_users = users[:, None].expand(-1, n_cols).reshape(-1)  # shape: (M * C,)
        pred = model.predict(flat_users.numpy(), block.reshape(-1).numpy())  # shape: (M * C,)
        return torch.as_tensor(np.asarray(pred)).reshape(n_rows, n_cols)
    distinct, inverse = torch.unique(users, return_inverse=True)  # shape: (U,), (M,)
    out: torch.Tensor | None = None
    for lo in range(0, len(distinct), batch_users):
        chunk = distinct[lo : lo + batch_users]  # shape: (B,)
        with torch.no_grad():
            scores = model.score_items(chunk)  # shape: (B, n_items), on the model's device
        if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or len(scores) != len(chunk):
            raise ValueError(
                f"{type(model).__name__}.score_items must return a (B, n_items) tensor"
            )
        rows = torch.nonzero((inverse >= lo) & (inverse < lo + len(chunk))).reshape(-1)
        local = (inverse[rows] - lo).to(scores.device)  # shape: (m,) row of each test rating
        picked = scores[local[:, None], block[rows].to(scores.device)]  # shape: (m, C)
        if out is None:
            dtype = scores.dtype if scores.is_floating_point() else torch.float32
            out = torch.empty((n_rows, n_cols), dtype=dtype, device="cpu")  # shape: (M, C)
        out[rows] = picked.detach().to("cpu", out.dtype)
    assert out is not None, "the caller checks that there is at least one row"
    return out


def sample_negatives(
    *,
    test_users: ArrayLike,
    known: UserItemCSR,
    n_items: int,
    n_negatives: int = 1000,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Random unrated items for each test row: the negatives of Koren's percentile protocol.

    For row ``r`` (user ``u = test_users[r]``) draw
    :math:`N_r=\min(\text{n\_negatives},\ \#\{i: i\notin\text{known}(u)\})` distinct items
    uniformly **without replacement** among the items absent from ``known`` (the user's train
    *and* test items) -- the "cleaner variant" of Koren's protocol for small catalogues such as
    ML-100K, where 1000 negatives are 59% of the items. Rows with fewer available items are
    padded with ``-1`` at the end.

    Draw the negatives **once** with a fixed ``seed`` and reuse them for every model compared:
    the output depends only on the arguments (random keys come from a CPU generator, so it is
    the same on every device).

    Parameters
    ----------
    test_users : array-like of int, shape (M,)
        User of every test row (one row per held-out rating, e.g. every 5-star test rating;
        a user appears once per rating and each row gets its own negatives).
    known : UserItemCSR
        Every item each user has rated (train + test), e.g. ``full_ratings.csr()``.
    n_items : int
        Catalogue size; must equal ``known.n_items``.
    n_negatives : int, default 1000
        Negatives per row (Koren 2008 used 1000 random movies).
    seed : int, default 0
    device : torch.device or str, optional
        Where the result lives and the selection runs; default ``known.device``.

    Returns
    -------
    torch.LongTensor, shape (M, n_negatives)
        Item ids, ``-1`` for padding. Within a row the valid ids are distinct and come first.

    Notes
    -----
    Vectorised per chunk of rows: i.i.d. uniform float64 keys for all items, the known items'
    keys set to :math:`+\infty`, then the ``n_negatives`` smallest keys
    (``topk(largest=False)``) -- a uniform random subset of the available items. Key ties are
    practically impossible in float64.

    This is a **sampled** metric: it is not consistent with full-ranking metrics and can
    reorder models (Krichene & Rendle, KDD 2020); report it as such.

    References
    ----------
    Y. Koren, *Factorization Meets the Neighborhood*, KDD 2008, §7.
    """
    if n_items != known.n_items:
        raise ValueError(f"n_items={n_items} but known.n_items={known.n_items}")
    if isinstance(n_negatives, bool) or not isinstance(n_negatives, int) or n_negatives < 1:
        raise ValueError(f"n_negatives must be a positive int; got {n_negatives!r}")
    out_device = known.device if device is None else torch.device(device)
    # float64 keys: MPS has none, so select on the CPU there
    work = torch.device("cpu") if out_device.type == "mps" else out_device
    known = known.to(work)
    rows_users = as_user_ids(test_users, known.n_users, work, "test_users")  # shape: (M,)
    n_rows = len(rows_users)
    n_take = min(n_negatives, n_items)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    chunk = max(1, _SAMPLE_CHUNK_ELEMENTS // max(n_items, 1))
    out = torch.full((n_rows, n_negatives), -1, dtype=torch.long, device=work)
    for start in range(0, n_rows, chunk):
        users = rows_users[start : start + chunk]  # shape: (B,)
        keys = torch.rand(  # drawn on the CPU so every device gets the same negatives
            (len(users), n_items), generator=generator, dtype=torch.float64, device="cpu"
        ).to(work)  # shape: (B, n_items)
        rows, cols = known.gather(users)  # shape: (nnz_B,), (nnz_B,)
        keys.index_put_((rows, cols), keys.new_full((), float("inf")))
        vals, idx = torch.topk(keys, n_take, dim=1, largest=False)  # shape: (B, n_take)
        out[start : start + len(users), :n_take] = torch.where(
            torch.isinf(vals), torch.full_like(idx, -1), idx
        )
    return out.to(out_device)


def percentile_ranks(
    pos_scores: torch.Tensor, neg_scores: torch.Tensor, neg_valid: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Koren's percentile rank of each positive among its sampled negatives.

    .. math::

        \mathrm{pct}_r=\frac{\#\{j: s^-_{rj}>s^+_r\}+\tfrac12\#\{j: s^-_{rj}=s^+_r\}}
                            {\#\{j\ \text{valid}\}},

    counting valid negatives only: 0 means the positive beat every negative, 1 that it lost to
    all. Ties count half (the expected rank under random tie-breaking). Note
    :math:`P(\mathrm{pct}\le x)` is a sampled HitRate@:math:`(\lfloor Nx\rfloor+1)` -- a
    *sampled* metric (Krichene & Rendle 2020).

    Parameters
    ----------
    pos_scores : torch.Tensor, shape (M,)
        Score of each held-out positive ``(u, i)``.
    neg_scores : torch.Tensor, shape (M, N)
        Scores of the row's negatives (e.g. from :func:`sample_negatives`; score padded ``-1``
        entries with any item, such as ``negatives.clamp(min=0)``, and mark them invalid).
    neg_valid : torch.BoolTensor, shape (M, N), optional
        Which negatives are real, e.g. ``negatives >= 0``. Default: all.

    Returns
    -------
    torch.Tensor, shape (M,)
        Percentile ranks in [0, 1], float32 (or the scores' dtype if float64), on the scores'
        device; NaN for a row without valid negatives.

    Raises
    ------
    ValueError
        On mismatched shapes or NaN scores.

    References
    ----------
    Y. Koren, *Factorization Meets the Neighborhood*, KDD 2008, §7.
    """
    if pos_scores.dim() != 1 or neg_scores.dim() != 2 or len(pos_scores) != len(neg_scores):
        raise ValueError(
            f"pos_scores must be (M,) and neg_scores (M, N); got {tuple(pos_scores.shape)} "
            f"and {tuple(neg_scores.shape)}"
        )
    if neg_valid is None:
        neg_valid = torch.ones_like(neg_scores, dtype=torch.bool)  # shape: (M, N)
    else:
        if neg_valid.shape != neg_scores.shape:
            raise ValueError(
                f"neg_valid has shape {tuple(neg_valid.shape)}; expected "
                f"{tuple(neg_scores.shape)} like neg_scores"
            )
        neg_valid = neg_valid.to(device=neg_scores.device, dtype=torch.bool)
    pos = pos_scores.detach().to(neg_scores.device)[:, None]  # shape: (M, 1)
    neg = neg_scores.detach()  # shape: (M, N)
    if bool(torch.isnan(pos).any()) or bool((torch.isnan(neg) & neg_valid).any()):
        raise ValueError("NaN in pos_scores or in the valid neg_scores")
    above = ((neg > pos) & neg_valid).sum(1)  # shape: (M,)
    ties = ((neg == pos) & neg_valid).sum(1)  # shape: (M,)
    n_valid = neg_valid.sum(1)  # shape: (M,)
    dtype = torch.float64 if neg.dtype == torch.float64 else torch.float32
    # (2 * above + ties) / (2 * n_valid): exact integers, one correctly rounded division
    return (2 * above + ties).to(dtype) / (2 * n_valid).to(dtype)  # 0/0 -> NaN


def percentile_rank_cdf(
    ranks: torch.Tensor | np.ndarray,
    thresholds: Iterable[float] = (0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
) -> pd.Series:
    r"""Cumulative distribution :math:`P(\mathrm{pct}\le x)` of percentile ranks.

    Koren (2008, §7) plots this over the top few percent: the fraction of held-out 5-star items
    ranked at or above each percentile. Report the mean percentile rank alongside.

    Parameters
    ----------
    ranks : torch.Tensor or np.ndarray, shape (M,)
        Output of :func:`percentile_ranks`; NaN entries (rows without negatives) are dropped.
    thresholds : iterable of float
        The ``x`` values, in [0, 1].

    Returns
    -------
    pd.Series
        Indexed by threshold (name ``"threshold"``), values
        :math:`\frac1M\#\{r:\mathrm{pct}_r\le x\}` (NaN if no rank is left); non-decreasing in
        ``x``. The comparison allows ``1e-7`` of slack so that float32 grid values such as
        ``50/1000`` count at ``x = 0.05``.
    """
    if isinstance(ranks, torch.Tensor):
        arr = ranks.detach().double().cpu().numpy()
    else:
        arr = np.asarray(ranks, dtype=np.float64)
    arr = arr.reshape(-1)
    arr = arr[~np.isnan(arr)]
    xs = np.asarray(list(thresholds), dtype=np.float64)
    if arr.size:
        values = (arr[None, :] <= xs[:, None] + _CDF_TOLERANCE).mean(axis=1)
    else:
        values = np.full(len(xs), np.nan)
    return pd.Series(values, index=pd.Index(xs, name="threshold"), name="P(rank <= x)")


def koren_topk(
    models: Mapping[str, Any],
    train: Ratings,
    test: Ratings,
    *,
    known: UserItemCSR | None = None,
    min_rating: float = 5.0,
    n_negatives: int = 1000,
    seed: int = 0,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    method: str = "score_items",
    batch_users: int = 256,
) -> KorenTopK:
    r"""Koren's sampled percentile-rank protocol for several fitted models on shared negatives.

    Parameters
    ----------
    models : mapping of str to fitted model
        Name -> model with ``score_items(users: LongTensor) -> (B, n_items)`` scores (for
        ``method="score_items"``) or ``predict(users, items) -> array`` (for ``"predict"``),
        fitted on ``train``. Higher score = better. Build rating models with ``clip=False``:
        clipping to the rating scale turns every prediction above 5 into a tie.
    train, test : Ratings
        One id space. Positives are the ``test`` rows with ``rating >= min_rating``.
    known : UserItemCSR, optional
        Items never used as negatives for a user; default every item the user rated in
        ``train`` or ``test`` (the "cleaner variant" of explicit-models.md §9).
    min_rating : float, default 5.0
        Test ratings at or above it are the positives (Koren: the 5-star ratings).
    n_negatives : int, default 1000
        Negatives per row, :math:`N_r=\min(N,\#\text{unrated items of }u)`.
    seed : int, default 0
        Seed of the negatives; equal arguments give identical negatives and ranks.
    thresholds : iterable of float
        The ``x`` of the reported CDF :math:`P(\mathrm{pct}\le x)`.
    method : {"score_items", "predict"}
        How the ``(M, 1 + N)`` score block is gathered (both exact): one ``score_items`` row
        per distinct user, then a gather (fast: a user has many 5-star ratings), or
        ``predict`` on the flattened pairs.
    batch_users : int, default 256
        Distinct users scored per ``score_items`` call (bounds memory: ``batch_users x
        n_items`` scores).

    Returns
    -------
    KorenTopK
        ``ranks`` (per-row percentile ranks), ``cdf``, ``mean_rank``, ``negatives``,
        ``protocol``.

    Raises
    ------
    ValueError
        On an empty model mapping, no positive test rating, mismatched id spaces, or a bad
        ``method`` / ``batch_users``.

    Notes
    -----
    No Python loop over users or ratings: the negatives come from one vectorised
    :func:`sample_negatives` call and each model's scores from a few batched
    calls. This is a *sampled* metric (Krichene & Rendle, KDD 2020).
    """
    if not models:
        raise ValueError("models is empty")
    if method not in ("score_items", "predict"):
        raise ValueError(f"method={method!r}; choose 'score_items' or 'predict'")
    if isinstance(batch_users, bool) or not isinstance(batch_users, int) or batch_users < 1:
        raise ValueError(f"batch_users must be a positive int; got {batch_users!r}")
    if (train.n_users, train.n_items) != (test.n_users, test.n_items):
        raise ValueError("train and test must share one id space")
    if known is None:
        known = known_items(train, test)
    keep = np.flatnonzero(test.rating >= min_rating)  # shape: (M,)
    if keep.size == 0:
        raise ValueError(f"no test rating >= {min_rating}")
    users = torch.as_tensor(test.user[keep], dtype=torch.long)  # shape: (M,)
    items = torch.as_tensor(test.item[keep], dtype=torch.long)  # shape: (M,)
    negatives = sample_negatives(
        test_users=users,
        known=known.to("cpu"),
        n_items=test.n_items,
        n_negatives=n_negatives,
        seed=seed,
        device="cpu",
    )  # (M, N)
    valid = negatives >= 0  # shape: (M, N)
    block = torch.cat([items[:, None], negatives.clamp(min=0)], dim=1)  # shape: (M, 1 + N)

    columns: dict[str, np.ndarray] = {
        "user": users.numpy(),
        "item": items.numpy(),
        "n_negatives": valid.sum(1).numpy(),
    }
    for name, model in models.items():
        scores = _block_scores(
            model, users, block, method=method, batch_users=batch_users
        )  # shape: (M, 1 + N)
        ranks = percentile_ranks(scores[:, 0], scores[:, 1:], valid)  # shape: (M,)
        columns[name] = ranks.double().numpy()
    ranks_df = pd.DataFrame(columns)
    xs = list(thresholds)
    names = list(models)
    cdf = pd.DataFrame({name: percentile_rank_cdf(ranks_df[name].to_numpy(), xs) for name in names})
    cdf.index.name = "threshold"
    mean_rank = ranks_df[names].mean().rename("mean percentile rank")
    protocol = (
        f"Koren top-K: test ratings >= {min_rating:g}, M={len(keep)}, "
        f"N=min({n_negatives}, #unrated) negatives unrated in train+test, seed {seed}"
    )
    return KorenTopK(ranks_df, cdf, mean_rank, negatives, protocol)


def sampled_hit_rate(result: KorenTopK, k: int = 10) -> pd.Series:
    r"""Sampled HitRate@k of every model: the share of test rows whose positive ranks among the
    top ``k`` of itself and its sampled negatives.

    With :math:`N_r` negatives per row, the positive is a hit when fewer than ``k`` negatives
    beat it (ties count half): :math:`\mathrm{pct}_r\,N_r < k`. With ``n_negatives=100`` this
    is the "HR@10 out of 100 negatives" protocol of NCF-style papers, a *sampled* metric that
    Krichene & Rendle (KDD 2020) show can disagree with the full ranking.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int; got {k!r}")
    ranks = result.ranks
    names = [c for c in ranks.columns if c not in ("user", "item", "n_negatives")]
    above = ranks[names].mul(ranks["n_negatives"], axis=0)  # negatives beating the positive
    return (above < k).mean().rename(f"sampled hitrate@{k}")


def alignment_uniformity(
    user_emb: torch.Tensor, item_emb: torch.Tensor, pairs: Ratings, *, t: float = 2.0
) -> dict[str, float]:
    r"""Alignment and uniformity of learned embeddings (Wang & Isola 2020; DirectAU, §3).

    With :math:`\tilde x = x/\|x\|`,

    .. math::
        \ell_{align} = \mathbb E_{(u,i)}\|\tilde f(u)-\tilde f(i)\|^2,\qquad
        \ell_{uniform} = \tfrac12\big[\log\mathbb E_{u\ne u'}e^{-t\|\tilde f(u)-\tilde f(u')\|^2}
        + \log\mathbb E_{i\ne i'}e^{-t\|\tilde f(i)-\tilde f(i')\|^2}\big],

    lower is better for both: positives close together, everything else spread over the
    sphere. The expectations run over the ``pairs`` (e.g. the test interactions) and over all
    distinct users and all distinct items of those pairs.

    Parameters
    ----------
    user_emb, item_emb : Tensor, shapes (n_users, d) and (n_items, d)
    pairs : Ratings
        The (user, item) pairs that should be aligned.
    t : float
        Uniformity temperature (2 in both papers).
    """

    users = torch.as_tensor(pairs.user, dtype=torch.long, device=user_emb.device)
    items = torch.as_tensor(pairs.item, dtype=torch.long, device=item_emb.device)
    with torch.no_grad():
        u = torch.nn.functional.normalize(user_emb[users], dim=1)  # shape: (P, d)
        i = torch.nn.functional.normalize(item_emb[items], dim=1)  # shape: (P, d)
        align = float((u - i).pow(2).sum(1).mean())
        uniform = 0.5 * (
            float(uniformity(user_emb[torch.unique(users)], t=t))
            + float(uniformity(item_emb[torch.unique(items)], t=t))
        )
    return {"alignment": align, "uniformity": uniform}


def recommended_popularity(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    train: Ratings,
    users: np.ndarray | torch.Tensor | Sequence[int],
    k: int = 10,
) -> float:
    """Mean number of training ratings of the items a model puts in its top ``k``.

    A diagnostic of popularity bias in full ranking: each user's training items are masked,
    the top ``k`` of the remaining items is taken, and the items' training rating counts are
    averaged over all ``len(users) * k`` recommendations.

    Parameters
    ----------
    score_fn : callable
        ``score_fn(users) -> (B, n_items)`` scores, e.g. ``model.score_items``.
    train : Ratings
        The model's training data (masking and popularity counts).
    users : array-like of int
        Users to recommend to (e.g. the test users).
    k : int, default 10

    Returns
    -------
    float
    """
    if not 1 <= k <= train.n_items:
        raise ValueError(f"k={k} must lie in [1, {train.n_items}]")
    user_t = torch.tensor(np.array(users, dtype=np.int64), device="cpu")  # shape: (B,)
    with torch.no_grad():
        scores = score_fn(user_t).detach().cpu().float().clone()  # shape: (B, n_items)
    rows, cols = train.csr().gather(user_t)  # shape: (nnz_B,), (nnz_B,)
    scores[rows, cols] = float("-inf")
    top = torch.topk(scores, k, dim=1).indices  # shape: (B, k)
    counts = torch.as_tensor(train.item_counts(), dtype=torch.float64)  # shape: (n_items,)
    return float(counts[top].mean())
