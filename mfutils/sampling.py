r"""Negative sampling for implicit feedback, and the corrections sampled negatives need.

* Samplers: :class:`UniformNegatives` (uniform over the items a user has *not* interacted with,
  exact) and :class:`PopularityNegatives` (:math:`q_j\propto\text{count}_j^\alpha`).
* Shared candidate sets: :func:`in_batch_negatives` (the batch's positives) and
  :func:`mixed_negatives` (batch positives plus :math:`B'` uniform corpus items, Yang et al.,
  *Mixed Negative Sampling*, WWW'20 Companion), each with the log sampling probability that the
  logQ correction subtracts from the logits.
* :func:`accidental_hit_mask`: which sampled candidates are not legal negatives.
* :func:`hard_negative_mining`: keep the top-k scoring legal negatives of each row.
* Sampling probabilities for the logQ correction (Yi et al., *Sampling-Bias-Corrected Neural
  Modeling for Large Corpus Item Recommendations*, RecSys 2019): exact
  (:func:`item_log_frequencies`) or streamed (:class:`StreamingFrequencyEstimator`, Alg. 2).

Every function works on the device of its inputs; random draws take an optional
``torch.Generator`` (draws happen on the generator's device and are moved where they belong).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from mfutils.data.container import UserItemCSR

__all__ = [
    "Candidates",
    "PopularityNegatives",
    "StreamingFrequencyEstimator",
    "UniformNegatives",
    "accidental_hit_mask",
    "hard_negative_mining",
    "in_batch_negatives",
    "item_log_frequencies",
    "mixed_negatives",
]

_ID_SHIFT = 31  # (user << 31) | item packs a (user, item) pair into one int64 key
_HASH_PRIME = 2**31 - 1  # Mersenne prime of the universal hash ((a x + b) mod p) mod H

LogP = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------- helpers
def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Where a random draw happens: the generator's device, else ``device``."""
    return device if generator is None else generator.device


def _check_ids(name: str, ids: torch.Tensor, *, dim: int | None = None) -> None:
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of item/user ids; got {type(ids).__name__}")
    if ids.dtype in (torch.bool,) or ids.is_floating_point() or ids.is_complex():
        raise TypeError(f"{name} must hold integer ids; got dtype {ids.dtype}")
    if dim is not None and ids.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D; got shape {tuple(ids.shape)}")


def _contains(sorted_keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """``query`` entries present in ``sorted_keys`` (a sorted 1-D tensor), same shape as query."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(query, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, query).clamp_max(sorted_keys.numel() - 1)
    return sorted_keys[pos] == query


_SEEN_KEYS: weakref.WeakKeyDictionary[UserItemCSR, torch.Tensor] = weakref.WeakKeyDictionary()


def _seen_keys(seen: UserItemCSR) -> torch.Tensor:
    """Sorted unique keys ``user * n_items + item`` of a CSR (cached per CSR object)."""
    keys = _SEEN_KEYS.get(seen)
    if keys is None:
        keys = torch.unique(seen.row_ids() * seen.n_items + seen.indices)  # shape: (nnz_unique,)
        _SEEN_KEYS[seen] = keys
    return keys


# ---------------------------------------------------------------------------- samplers
class UniformNegatives:
    r"""Items drawn uniformly, optionally only among those a user has not interacted with.

    With ``seen`` every draw for user :math:`u` is uniform over :math:`\{j: j\notin I_u^+\}`,
    *exactly* and in one vectorized pass: draw a rank :math:`r` uniformly in
    :math:`[0, n-|I_u^+|)` and map it to the :math:`r`-th unseen item,
    :math:`j = r + \#\{s\in I_u^+: s - \text{rank}(s) \le r\}` (one ``searchsorted`` on the
    user's sorted seen items shifted by their rank). This replaces rejection sampling, which
    on ML-100K (a user has seen up to 44% of the items) needs several rounds and can still
    leave collisions. Draws are with replacement; a user who has seen every item gets uniform
    draws over all items (nothing else is possible), and mask them with
    :func:`accidental_hit_mask`.

    Parameters
    ----------
    n_items : int
        Catalogue size.
    seen : UserItemCSR, optional
        Each user's training items (e.g. ``train.csr(device)``), excluded from the draws
        (BPR's :math:`j\notin I_u^+`, Rendle et al. 2009).
    device : torch.device or str, optional
        Where the samples live; default ``seen.device`` or the CPU.
    """

    def __init__(
        self,
        n_items: int,
        *,
        seen: UserItemCSR | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(n_items, bool) or not isinstance(n_items, int) or n_items < 1:
            raise ValueError(f"n_items must be a positive int; got {n_items!r}")
        if seen is not None and seen.n_items != n_items:
            raise ValueError(f"seen.n_items={seen.n_items} but n_items={n_items}")
        self.n_items = n_items
        self.device = (
            torch.device(device)
            if device is not None
            else (seen.device if seen is not None else torch.device("cpu"))
        )
        self.seen = None if seen is None else seen.to(self.device)
        if self.seen is not None:
            keys = _seen_keys(self.seen)  # shape: (nnz,) sorted unique user * n + item
            user = keys // n_items
            item = keys - user * n_items
            counts = torch.bincount(user, minlength=self.seen.n_users)  # shape: (n_users,)
            first = torch.cumsum(counts, 0) - counts  # shape: (n_users,)
            rank = torch.arange(len(keys), device=self.device) - first[user]
            # shifted keys: user * n + (number of unseen items below each seen item)
            self._shifted = user * n_items + (item - rank)  # shape: (nnz,) sorted
            self._first = first
            self._n_free = n_items - counts  # shape: (n_users,)

    def __repr__(self) -> str:
        return (
            f"UniformNegatives(n_items={self.n_items}, "
            f"seen={'None' if self.seen is None else 'CSR'}, device={self.device})"
        )

    def sample(
        self, users: torch.Tensor, n: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``n`` negatives per user, shape ``(len(users), n)`` (long, on :attr:`device`).

        Parameters
        ----------
        users : torch.LongTensor, shape (B,)
            User of each row (repeats allowed); only needed for the ``seen`` exclusion.
        n : int
            Negatives per row.
        generator : torch.Generator, optional
            Source of randomness, for reproducible draws.
        """
        _check_ids("users", users, dim=1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int; got {n!r}")
        users = users.to(self.device)
        draw = _draw_device(generator, self.device)
        if self.seen is None:
            return torch.randint(
                self.n_items, (len(users), n), generator=generator, device=draw
            ).to(self.device)
        if users.numel() and (int(users.min()) < 0 or int(users.max()) >= self.seen.n_users):
            raise ValueError(
                f"users must lie in [0, {self.seen.n_users}); got "
                f"{int(users.min())}..{int(users.max())}"
            )
        n_free = self._n_free[users]  # shape: (B,)
        span = torch.where(n_free > 0, n_free, self.n_items).to(torch.float64)  # shape: (B,)
        unit = torch.rand(
            (len(users), n), generator=generator, dtype=torch.float64, device=draw
        ).to(self.device)  # shape: (B, n)
        rank = (unit * span[:, None]).long().minimum(span.long()[:, None] - 1)  # shape: (B, n)
        below = (
            torch.searchsorted(self._shifted, users[:, None] * self.n_items + rank, right=True)
            - self._first[users][:, None]
        )  # shape: (B, n)
        return torch.where(n_free[:, None] > 0, rank + below, rank)

    def log_q(self, items: torch.Tensor) -> torch.Tensor:
        r"""Log sampling probability :math:`-\log n` of each item, shape of ``items``.

        With ``seen`` the exact probability is :math:`1/(n-|I_u^+|)`; it is constant within a
        row, so a softmax over the row is unchanged by using :math:`1/n`.
        """
        return torch.full(items.shape, -math.log(self.n_items), device=items.device)


class PopularityNegatives:
    r"""Items drawn with probability :math:`q_j = c_j^\alpha / \sum_k c_k^\alpha`.

    ``alpha=1`` is the unigram (in-batch-like) distribution, ``alpha=0.75`` word2vec's
    smoothed unigram, ``alpha=0`` uniform over all items. Draws do not exclude a user's
    items: mask accidental hits with :func:`accidental_hit_mask`, and correct the logits with
    :meth:`log_q` (the logQ correction, Yi et al. 2019).

    Parameters
    ----------
    counts : array-like or torch.Tensor, shape (n_items,)
        Non-negative interaction count of every item (e.g. ``train.item_counts()``).
    alpha : float, default 1.0
        Exponent; items with count 0 are never drawn when ``alpha > 0``.
    device : torch.device or str, optional
        Where samples and probabilities live; default ``counts``' device (CPU for arrays).
    """

    def __init__(
        self,
        counts: np.ndarray | torch.Tensor,
        *,
        alpha: float = 1.0,
        device: torch.device | str | None = None,
    ) -> None:
        counts_t = _as_counts(counts, device)
        if not (alpha >= 0 and math.isfinite(alpha)):
            raise ValueError(f"alpha must be a finite number >= 0; got {alpha!r}")
        weights = counts_t.pow(alpha)  # shape: (n_items,); 0 ** 0 = 1
        total = weights.sum()
        if not total > 0:
            raise ValueError("counts has no positive entry; nothing can be sampled")
        self.alpha = alpha
        self.n_items = len(counts_t)
        self.q = weights / total  # shape: (n_items,)
        self.device = self.q.device

    def __repr__(self) -> str:
        return (
            f"PopularityNegatives(n_items={self.n_items}, alpha={self.alpha}, device={self.device})"
        )

    def sample(
        self, users: torch.Tensor, n: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``n`` draws per row, shape ``(len(users), n)``; ``users`` only sets the row count."""
        _check_ids("users", users, dim=1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int; got {n!r}")
        q = self.q.to(_draw_device(generator, self.device))
        flat = torch.multinomial(q, len(users) * n, replacement=True, generator=generator)
        return flat.view(len(users), n).to(self.device)  # shape: (B, n)

    def log_q(self, items: torch.Tensor) -> torch.Tensor:
        """``log q_j`` of each item id, shape of ``items``."""
        return self.q.to(items.device)[items].log()


def _as_counts(
    counts: np.ndarray | torch.Tensor, device: torch.device | str | None
) -> torch.Tensor:
    counts_t = torch.as_tensor(counts, device=device).to(torch.float32)
    if counts_t.dim() != 1 or counts_t.numel() == 0:
        raise ValueError(f"counts must be a non-empty 1-D array; got shape {tuple(counts_t.shape)}")
    if not bool(torch.isfinite(counts_t).all()) or bool((counts_t < 0).any()):
        raise ValueError("counts must be finite and non-negative")
    return counts_t


def item_log_frequencies(
    counts: np.ndarray | torch.Tensor, *, device: torch.device | str | None = None
) -> torch.Tensor:
    r"""Exact log unigram probabilities :math:`\log(c_j/\sum_k c_k)`, shape (n_items,).

    The static logQ correction for a fixed data set (Yi et al. 2019: the sampling
    probability of item :math:`j` as an in-batch negative is proportional to its frequency in
    the training stream). Items with count 0 get :math:`-\infty` (they never appear in a
    batch). Pass it as ``item_log_p`` to :func:`in_batch_negatives` / :func:`mixed_negatives`.
    """
    counts_t = _as_counts(counts, device)
    total = counts_t.sum()
    if not total > 0:
        raise ValueError("counts has no positive entry")
    return (counts_t / total).log()


# ---------------------------------------------------------------------------- shared candidates
class Candidates(NamedTuple):
    """A shared candidate set: item ids ``(C,)`` and their log sampling probabilities ``(C,)``
    (``None`` when no item probabilities were given). The first ``B`` entries are the batch's
    positives in batch order, so ``log_q[:B]`` is the ``pos_logq`` of the losses."""

    items: torch.Tensor
    log_q: torch.Tensor | None


def _lookup_log_p(item_log_p: LogP, items: torch.Tensor) -> torch.Tensor:
    if callable(item_log_p) and not isinstance(item_log_p, torch.Tensor):
        return item_log_p(items)
    return item_log_p.to(items.device)[items]


def mixed_negatives(
    pos_items: torch.Tensor,
    *,
    n_uniform: int,
    n_items: int,
    item_log_p: LogP | None = None,
    generator: torch.Generator | None = None,
) -> Candidates:
    r"""Mixed negative sampling: the batch's positives plus ``n_uniform`` uniform corpus items.

    Yang et al., *Mixed Negative Sampling for Learning Two-tower Neural Networks in
    Recommendations* (WWW'20 Companion): the item tower encodes the :math:`B` in-batch
    positives and :math:`B'` items drawn uniformly (with replacement) from the whole corpus
    :math:`\mathcal C`; every row is contrasted with all :math:`B+B'` candidates. The expected
    number of copies of item :math:`j` among them is :math:`Bp_j + B'/|\mathcal C|`, so the
    logQ correction uses the normalised mixture

    .. math:: q^*(j) = \tfrac{B}{B+B'}\,p_j + \tfrac{B'}{B+B'}\,\tfrac1{|\mathcal C|}

    (equal to the expected count up to the constant :math:`B+B'`, which a softmax ignores).
    This formula follows from the logQ principle; the paper's text does not spell it out.

    Parameters
    ----------
    pos_items : torch.LongTensor, shape (B,)
        The batch's positive items.
    n_uniform : int
        :math:`B'`, uniform corpus items to append (0 gives plain in-batch negatives).
    n_items : int
        Corpus size :math:`|\mathcal C|`.
    item_log_p : torch.Tensor of shape (n_items,) or callable, optional
        Log unigram probability :math:`\log p_j` of every item (e.g.
        :func:`item_log_frequencies`), or a function of item ids returning it. For a
        :class:`StreamingFrequencyEstimator`, whose estimate is the expected number of copies
        of an item in a batch of :math:`B` (about :math:`Bp_j`), pass
        ``lambda items: est.log_q(items) - math.log(B)``. ``None``: no ``log_q``.
    generator : torch.Generator, optional

    Returns
    -------
    Candidates
        ``items`` (B + n_uniform,) and ``log_q`` (B + n_uniform,) or ``None``.
    """
    _check_ids("pos_items", pos_items, dim=1)
    if isinstance(n_uniform, bool) or not isinstance(n_uniform, int) or n_uniform < 0:
        raise ValueError(f"n_uniform must be an int >= 0; got {n_uniform!r}")
    if isinstance(n_items, bool) or not isinstance(n_items, int) or n_items < 1:
        raise ValueError(f"n_items must be a positive int; got {n_items!r}")
    device = pos_items.device
    extra = torch.randint(
        n_items, (n_uniform,), generator=generator, device=_draw_device(generator, device)
    ).to(device)  # shape: (B',)
    items = torch.cat([pos_items.long(), extra])  # shape: (C,) = (B + B',)
    if item_log_p is None:
        return Candidates(items, None)
    batch = len(pos_items)
    log_p = _lookup_log_p(item_log_p, items)  # shape: (C,)
    if n_uniform == 0:
        return Candidates(items, log_p)
    total = batch + n_uniform
    # log(B/(B+B') p_j + B'/(B+B') / n), computed stably as a two-term logsumexp
    terms = torch.stack(
        [
            log_p + math.log(batch / total) if batch else torch.full_like(log_p, -math.inf),
            torch.full_like(log_p, math.log(n_uniform / total) - math.log(n_items)),
        ]
    )  # shape: (2, C)
    return Candidates(items, torch.logsumexp(terms, dim=0))


def in_batch_negatives(pos_items: torch.Tensor, *, item_log_p: LogP | None = None) -> Candidates:
    """The batch's positives as shared candidates (Yi et al. 2019), with ``log p_j``.

    Same as ``mixed_negatives(pos_items, n_uniform=0, ...)``; see there for ``item_log_p``.
    """
    _check_ids("pos_items", pos_items, dim=1)
    items = pos_items.long()
    return Candidates(items, None if item_log_p is None else _lookup_log_p(item_log_p, items))


# ---------------------------------------------------------------------------- masks and mining
def accidental_hit_mask(
    pos_items: torch.Tensor,
    candidates: torch.Tensor,
    *,
    users: torch.Tensor | None = None,
    seen: UserItemCSR | None = None,
) -> torch.Tensor:
    r"""Which candidates are not legal negatives ("accidental hits"), True = mask out.

    Row :math:`b` (user :math:`u_b`, positive :math:`i_b`) masks a candidate :math:`j` when

    1. :math:`j = i_b` -- a duplicate of the row's own positive, **including the row's own
       column of in-batch candidates**: the losses of :mod:`mfutils.losses` receive the
       positive separately (``pos_emb``), so its copy among the candidates would otherwise
       count it twice;
    2. with ``users``: :math:`j` is the positive of another row of the same user
       (:math:`j = i_{b'}` with :math:`u_{b'} = u_b`). The test is on item ids, so it also
       catches that item arriving through another user's column or a uniform draw (TFRS
       compares the columns' users instead);
    3. with ``seen`` (needs ``users``): :math:`j` is any training item of :math:`u_b`.

    Parameters
    ----------
    pos_items : torch.LongTensor, shape (B,)
    candidates : torch.LongTensor, shape (C,) shared or (B, N) per row
    users : torch.LongTensor, shape (B,), optional
    seen : UserItemCSR, optional
        Training items per user, on the candidates' device.

    Returns
    -------
    torch.BoolTensor, shape (B, C) or (B, N)
    """
    _check_ids("pos_items", pos_items, dim=1)
    _check_ids("candidates", candidates)
    batch = len(pos_items)
    if candidates.dim() == 1:
        cand = candidates[None, :].expand(batch, -1)  # shape: (B, C)
    elif candidates.dim() == 2 and candidates.shape[0] == batch:
        cand = candidates  # shape: (B, N)
    else:
        raise ValueError(
            f"candidates must be (C,) or (B, N) with B={batch}; got shape {tuple(candidates.shape)}"
        )
    mask = cand == pos_items[:, None]  # shape: (B, C)
    if users is not None:
        _check_ids("users", users, dim=1)
        if len(users) != batch:
            raise ValueError(f"users has {len(users)} rows; pos_items has {batch}")
        batch_keys = torch.sort((users.long() << _ID_SHIFT) | pos_items.long()).values
        mask |= _contains(batch_keys, (users.long()[:, None] << _ID_SHIFT) | cand.long())
    if seen is not None:
        if users is None:
            raise ValueError("accidental_hit_mask: seen= needs users= (whose items to mask)")
        in_range = (cand >= 0) & (cand < seen.n_items)  # shape: (B, C)
        query = users.long()[:, None] * seen.n_items + cand.clamp(0, seen.n_items - 1)
        mask |= _contains(_seen_keys(seen), query.to(seen.device)).to(mask.device) & in_range
    return mask


def hard_negative_mining(
    logits: torch.Tensor, mask: torch.Tensor | None, k: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``k`` highest-scoring legal negatives of every row.

    Apply after the temperature, the logQ correction and the accidental-hit mask (the TFRS
    order). Masked entries are ranked last; a row with fewer than ``k`` legal negatives keeps
    some masked ones, still masked. Gradients flow to the selected logits.

    Parameters
    ----------
    logits : torch.Tensor, shape (B, N)
        Negative logits.
    mask : torch.BoolTensor, shape (B, N), optional
        True = not a legal negative.
    k : int
        Negatives to keep per row (all of them when ``k >= N``).

    Returns
    -------
    (torch.Tensor, torch.BoolTensor or None), shapes (B, min(k, N))
        The kept logits (masked ones set to the dtype's minimum) and their mask.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (hard negatives) must be a positive int; got {k!r}")
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, N); got shape {tuple(logits.shape)}")
    if mask is not None:
        if mask.shape != logits.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor of shape {tuple(logits.shape)}; "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        logits = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
    if k >= logits.shape[1]:
        return logits, mask
    index = torch.topk(logits, k, dim=1).indices  # shape: (B, k)
    return logits.gather(1, index), None if mask is None else mask.gather(1, index)


# ---------------------------------------------------------------------------- streaming logQ
class StreamingFrequencyEstimator(nn.Module):
    r"""Streaming estimate of how often each item occurs per batch (Yi et al. 2019, Alg. 2).

    Two arrays over :math:`H` hash buckets: :math:`A[h]`, the last global step at which the
    bucket was seen, and :math:`B[h]`, the estimated gap :math:`\delta` between its
    occurrences. At step :math:`t`, for every occurrence of an item of the batch (Alg. 2 loops
    over the batch's items, repeats included):

    .. math:: B[h] \leftarrow (1-\alpha)\,B[h] + \alpha\,(t - A[h]),\qquad A[h]\leftarrow t,

    and the estimate is :math:`\hat p_y = 1/B[h(y)]`. An item's second and later copies in one
    batch see the gap :math:`0`, so :math:`c` copies per step drive :math:`B` to
    :math:`\alpha(1-\alpha)^{c-1}/(1-(1-\alpha)^c)\approx 1/c`: :math:`\hat p_y` estimates
    the expected number of copies of :math:`y` per batch (:math:`\approx B p_y`), not the
    probability of appearing at least once, which saturates at 1 for popular items. The
    :math:`c` updates of a bucket hit :math:`c` times are applied at once, in closed form:
    :math:`B \leftarrow (1-\alpha)^c B + \alpha(1-\alpha)^{c-1}(t - A)`. Call :meth:`update`
    with a step's items *before* :meth:`log_q` on them (update-then-estimate).

    Deviations from the paper's pseudo-code, all documented choices:

    * the first sighting of a bucket sets :math:`B[h]=t` (the gap since the stream began)
      instead of blending it into :math:`B=0`, which would start every estimate at
      :math:`\alpha t` and bias rare items upwards for hundreds of occurrences;
    * a bucket never seen yet gets the gap :math:`\max(t_\text{last}, 1)` (it has not
      appeared in the :math:`t_\text{last}` steps so far);
    * with ``n_hashes > 1`` each hash has its own arrays and the estimate takes the largest
      gap (collisions only shorten gaps), count-min style.

    Hashes are universal, :math:`h_k(y) = ((a_k y + b_k) \bmod p) \bmod H` with
    :math:`p = 2^{31}-1` and :math:`a_k, b_k` drawn from ``seed``: integer tensor arithmetic
    on the arrays' device, the same on every run and device. The arrays are buffers (saved in
    ``state_dict``, moved by ``.to(device)``), never parameters.

    Parameters
    ----------
    n_buckets : int
        :math:`H`; use at least the number of items (more buckets, fewer collisions).
    alpha : float, default 0.01
        Learning rate of the moving average (0.01 as community implementations; the paper's
        value is not given in our reference).
    n_hashes : int, default 1
    seed : int, default 0
    """

    def __init__(
        self, n_buckets: int, *, alpha: float = 0.01, n_hashes: int = 1, seed: int = 0
    ) -> None:
        super().__init__()
        for name, value in (("n_buckets", n_buckets), ("n_hashes", n_hashes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must lie in (0, 1]; got {alpha!r}")
        self.n_buckets, self.n_hashes, self.alpha = n_buckets, n_hashes, float(alpha)
        generator = torch.Generator().manual_seed(int(seed))
        self.register_buffer(
            "hash_a", torch.randint(1, _HASH_PRIME, (n_hashes,), generator=generator)
        )
        self.register_buffer(
            "hash_b", torch.randint(0, _HASH_PRIME, (n_hashes,), generator=generator)
        )
        self.register_buffer("last_step", torch.zeros(n_hashes, n_buckets, dtype=torch.long))
        self.register_buffer("gap", torch.zeros(n_hashes, n_buckets))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"n_buckets={self.n_buckets}, alpha={self.alpha}, n_hashes={self.n_hashes}"

    def _flat_buckets(self, items: torch.Tensor) -> torch.Tensor:
        """Index into the flattened ``(n_hashes * H)`` arrays, shape (n_hashes, *items.shape)."""
        _check_ids("items", items)
        x = items.to(self.gap.device).long().remainder(_HASH_PRIME)
        view = (-1,) + (1,) * x.dim()
        bucket = (
            (self.hash_a.view(view) * x + self.hash_b.view(view))
            .remainder(_HASH_PRIME)
            .remainder(self.n_buckets)
        )  # shape: (n_hashes, *items.shape)
        offset = torch.arange(self.n_hashes, device=x.device).view(view) * self.n_buckets
        return bucket + offset

    @torch.no_grad()
    def update(self, items: torch.Tensor, step: int) -> None:
        """Record that ``items`` (any shape; every copy counts) occurred at global ``step``.

        ``step`` counts training steps from 1 and must not decrease between calls.
        """
        if isinstance(step, torch.Tensor):
            step = int(step)
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"step must be an int >= 1 (steps count from 1); got {step!r}")
        index, copies = torch.unique(
            self._flat_buckets(items).reshape(-1), return_counts=True
        )  # shape: (n_hit,), (n_hit,)
        last = self.last_step.view(-1)[index]
        delta = (step - last).to(self.gap.dtype)  # shape: (n_hit,), the first copy's gap
        old = self.gap.view(-1)[index]
        keep = (1 - self.alpha) ** (copies - 1).to(self.gap.dtype)  # the later copies' decay
        self.gap.view(-1)[index] = torch.where(
            last > 0, keep * ((1 - self.alpha) * old + self.alpha * delta), keep * delta
        )
        self.last_step.view(-1)[index] = step
        self.step.fill_(step)

    @torch.no_grad()
    def log_q(self, items: torch.Tensor) -> torch.Tensor:
        r""":math:`\log\hat p_y = -\log B[h(y)]` of every item, shape of ``items`` (float32)."""
        gap = self.gap.view(-1)[self._flat_buckets(items)]  # shape: (n_hashes, *items.shape)
        unseen_gap = self.step.clamp_min(1).to(gap.dtype)
        gap = torch.where(gap > 0, gap, unseen_gap).amax(0)  # shape: items.shape
        return -gap.log()
