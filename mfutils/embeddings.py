r"""Compact id embeddings: drop-in replacements for an ``nn.Embedding`` table of ``n_ids`` rows.

A full table stores one ``dim``-vector per id, :math:`n\,d` parameters. The three modules here
store a pool of :math:`B<n` vectors and map every id to rows of it with seeded hashes:

===========================  =====================================================  =============
module                       vector of id :math:`x`                                 parameters
===========================  =====================================================  =============
:class:`HashingTrick`        :math:`\xi(x)\,E[h(x)]` (Weinberger et al. 2009)        :math:`Bd`
:class:`HashEmbedding`       :math:`\sum_{i=1}^k p_x^i\,E[h_i(x)]` (Svenstrup et     :math:`Bd+Kk`
                             al. 2017, eq. 1), optionally :math:`[\,\cdot\,;p_x]`
:class:`BloomEmbedding`      :math:`\sum_{i=1}^k E[h_i(x)]` (Serra & Karatzoglou     :math:`Bd`
                             2017; spaCy's ``HashEmbed``)
:class:`FullEmbedding`       :math:`E[x]`, the plain table                          :math:`nd`
===========================  =====================================================  =============

:math:`h, h_i` map ids to ``[0, B)``, :math:`\xi` to :math:`\pm1`, and :math:`p_x=P[D_1(x)]` is
a row of the learned importance weights :math:`P\in\mathbb R^{K\times k}`, indexed by the id
itself (:math:`K=n`) or by another hash :math:`D_1` into :math:`K<n` rows.

**Hashes.** :func:`hash_ids` is seeded and deterministic across processes, platforms and
devices (integer arithmetic only, unlike Python's salted ``hash()``): two rounds of universal
hashing :math:`(a\,x+b) \bmod p` with the Mersenne prime :math:`p=2^{31}-1` and
:math:`a, b < p` derived from the seed by SplitMix64, an xor-shift between the rounds to break
the linearity in :math:`x`, and a final ``mod B``. Every product is below :math:`2^{62}`, so
it runs in ``int64`` tensors on any device. The modules hash their id range once and keep the
rows in a buffer, so a lookup is a gather.

All modules share an interface: ``forward(ids) -> (*ids.shape, dim)``,
:meth:`CompactEmbedding.bag` for the mean over multi-valued fields (EmbeddingBag-like),
``rows`` (the ``(n_ids, k)`` hashed rows) and :attr:`CompactEmbedding.n_parameters`.
:func:`make_embedding` builds one from a parameter budget; :func:`collision_stats` and
:func:`expected_collisions` measure and predict the collisions (spec section 10).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "KINDS",
    "PRIME",
    "BloomEmbedding",
    "CompactEmbedding",
    "FullEmbedding",
    "HashEmbedding",
    "HashingTrick",
    "collision_stats",
    "expected_collisions",
    "hash_ids",
    "make_embedding",
]

PRIME = 2**31 - 1  # Mersenne prime of the universal hashes; ids must lie in [0, PRIME)
KINDS = ("full", "hashing", "hash", "bloom")
_MASK64 = 2**64 - 1


def _splitmix64(state: int) -> tuple[int, int]:
    """One SplitMix64 step in Python integers (Steele et al. 2014): (next state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def _hash_constants(seed: int, n_hashes: int) -> list[tuple[int, int, int, int]]:
    """Per hash function ``(a1, b1, a2, b2)`` with ``1 <= a < p`` and ``0 <= b < p``."""
    state = seed & _MASK64
    constants = []
    for _ in range(n_hashes):
        values = []
        for j in range(4):
            state, out = _splitmix64(state)
            values.append(1 + out % (PRIME - 1) if j % 2 == 0 else out % PRIME)
        constants.append(tuple(values))
    return constants


def hash_ids(ids: torch.Tensor, n_buckets: int, *, seed: int, n_hashes: int = 1) -> torch.Tensor:
    r"""``n_hashes`` seeded hashes of integer ids into ``[0, n_buckets)``.

    Each hash is :math:`h(x) = g_2(s(g_1(x))) \bmod B` with :math:`g_j(x) = (a_j x + b_j)
    \bmod p`, :math:`p = 2^{31}-1`, and the xor-shift :math:`s(y) = y \oplus (y \gg 16)`.
    Deterministic for a given ``seed`` on every platform and device.

    Parameters
    ----------
    ids : Tensor
        Integer ids in ``[0, 2**31 - 1)``, any shape, on any device.
    n_buckets : int
        Number of buckets ``B``.
    seed : int
        Seeds the constants (use a different seed per field and per role).
    n_hashes : int
        Number of independent hash functions ``k``.

    Returns
    -------
    Tensor
        ``int64`` bucket indices, shape ``(*ids.shape, n_hashes)``.
    """
    if n_buckets < 1 or n_hashes < 1:
        raise ValueError(f"n_buckets={n_buckets} and n_hashes={n_hashes} must be >= 1")
    x = ids.long()
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= PRIME):
        raise ValueError(f"ids must lie in [0, {PRIME}); got [{int(x.min())}, {int(x.max())}]")
    consts = torch.tensor(_hash_constants(seed, n_hashes), dtype=torch.long, device=x.device)
    a1, b1, a2, b2 = consts.unbind(1)  # shape: (k,) each
    y = (a1 * x[..., None] + b1) % PRIME  # shape: (*ids.shape, k), products < 2^62
    y = y ^ (y >> 16)
    y = (a2 * y + b2) % PRIME
    return y % n_buckets


class CompactEmbedding(nn.Module):
    """Common interface of the id embeddings: ``forward(ids)``, :meth:`bag`, ``n_parameters``.

    Subclasses set ``n_ids``, ``dim`` (the output width), ``n_buckets`` and the buffer ``rows``
    (shape ``(n_ids, k)``: the pool rows of every id).
    """

    n_ids: int
    dim: int
    n_buckets: int
    rows: torch.Tensor

    @property
    def n_parameters(self) -> int:
        """Number of learned scalars (pool rows x width, plus importance weights)."""
        return sum(p.numel() for p in self.parameters())

    @property
    def k(self) -> int:
        """Pool rows per id."""
        return self.rows.shape[1]

    def bag(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Mean vector of each bag of ids (``nn.EmbeddingBag(mode="mean")`` semantics).

        Parameters
        ----------
        ids : Tensor
            Flat ids of all bags, shape ``(N,)``.
        offsets : Tensor
            Start of each bag in ``ids``, shape ``(n_bags,)``; empty bags give zeros.

        Returns
        -------
        Tensor
            Shape ``(n_bags, dim)``.
        """
        n_bags = len(offsets)
        position = torch.arange(len(ids), device=ids.device)
        bag_of = torch.searchsorted(offsets, position, right=True) - 1  # shape: (N,)
        vectors = self(ids)  # shape: (N, dim)
        total = vectors.new_zeros(n_bags, self.dim).index_add_(0, bag_of, vectors)
        count = torch.bincount(bag_of, minlength=n_bags).clamp_min(1)  # shape: (n_bags,)
        return total / count[:, None].to(total.dtype)

    def extra_repr(self) -> str:
        return (
            f"n_ids={self.n_ids}, dim={self.dim}, n_buckets={self.n_buckets}, k={self.k}, "
            f"n_parameters={self.n_parameters}"
        )


class FullEmbedding(CompactEmbedding):
    """The plain table (one row per id), in the common interface: ``n_ids * dim`` parameters.

    Parameters
    ----------
    n_ids, dim : int
    init_std : float
        Standard deviation of the normal initialisation.
    """

    def __init__(
        self,
        n_ids: int,
        dim: int,
        *,
        init_std: float = 0.1,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(n_ids, dim)
        self.n_ids, self.dim, self.n_buckets = n_ids, dim, n_ids
        self.weight = nn.Parameter(torch.randn(n_ids, dim, device=device) * init_std)
        rows = torch.arange(n_ids, device=device)[:, None]  # shape: (n_ids, 1)
        self.register_buffer("rows", rows)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)  # shape: (*ids.shape, dim)


class HashingTrick(CompactEmbedding):
    r"""The hashing trick for ids (Weinberger et al. 2009): :math:`\xi(x)\,E[h(x)]`.

    With the sign hash :math:`\xi` two colliding ids share a row with opposite signs half of
    the time, which makes inner products unbiased (the paper's Lemma 2) instead of pulling
    colliding ids together. Parameters: ``n_buckets * dim``.

    Parameters
    ----------
    n_ids, dim : int
        Id range ``[0, n_ids)`` and vector width.
    n_buckets : int
        Pool rows ``B``.
    sign : bool
        Multiply by the sign hash :math:`\xi(x)\in\{\pm1\}`.
    seed : int
        Seeds :math:`h` and :math:`\xi`.
    init_std : float
        Standard deviation of the normal initialisation of the pool.
    """

    def __init__(
        self,
        n_ids: int,
        dim: int,
        *,
        n_buckets: int,
        sign: bool = True,
        seed: int = 0,
        init_std: float = 0.1,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(n_ids, dim, n_buckets)
        self.n_ids, self.dim, self.n_buckets, self.sign = n_ids, dim, n_buckets, sign
        ids = torch.arange(n_ids, device=device)
        self.weight = nn.Parameter(torch.randn(n_buckets, dim, device=device) * init_std)
        self.register_buffer("rows", hash_ids(ids, n_buckets, seed=seed))  # shape: (n_ids, 1)
        signs = 1.0 - 2.0 * hash_ids(ids, 2, seed=seed + 0x5157)[:, 0].float()
        self.register_buffer("signs", signs if sign else torch.ones_like(signs))  # (n_ids,)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = F.embedding(self.rows[ids, 0], self.weight)  # shape: (*ids.shape, dim)
        return out * self.signs[ids][..., None]


class HashEmbedding(CompactEmbedding):
    r"""Hash embeddings (Svenstrup, Hansen & Winther 2017, eq. 1).

    .. math:: \hat e_x = \sum_{i=1}^{k} p_x^i\,E\big[h_i(x)\big],\qquad
              e_x = \hat e_x \ \text{ or } \ [\hat e_x;\, p_x]

    with a shared pool :math:`E\in\mathbb R^{B\times d}` and learned importance weights
    :math:`p_x = P[D_1(x)]`, :math:`P\in\mathbb R^{K\times k}`. The component hashes take the
    raw id (not :math:`D_1(x)`), so two ids get the same vector only if :math:`D_1` *and* all
    :math:`k` component hashes collide. Parameters: ``n_buckets * d + n_weights * k``.

    Parameters
    ----------
    n_ids, dim : int
        Id range and output width; with ``concat`` the pool is ``dim - k`` wide.
    n_buckets : int
        Pool rows ``B``.
    k : int
        Component vectors per id (the paper typically uses 2).
    n_weights : int, optional
        Rows ``K`` of the importance table; ``None`` or ``n_ids`` gives every id its own
        weights (:math:`D_1` the identity), fewer rows are shared through a hash :math:`D_1`.
    concat : bool
        Append the ``k`` importance weights to the vector (the paper's optional variant).
    seed : int
    init_std : float
        The pool starts at :math:`\mathcal N(0, \sigma^2/k)` and every importance weight at 1,
        so an id's initial vector has the scale of a full table's row (with ``concat`` the
        weights start at :math:`\sigma` and the pool at :math:`\mathcal N(0, 1/k)`, so the
        appended weights do not dominate a dot product). The paper's code starts the weights
        near 0, which suits a classifier layer above; in a dot-product model a near-zero
        start slows the first epochs.
    """

    def __init__(
        self,
        n_ids: int,
        dim: int,
        *,
        n_buckets: int,
        k: int = 2,
        n_weights: int | None = None,
        concat: bool = False,
        seed: int = 0,
        init_std: float = 0.1,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(n_ids, dim, n_buckets, k)
        n_weights = n_ids if n_weights is None else n_weights
        if not 1 <= n_weights <= n_ids:
            raise ValueError(f"n_weights={n_weights} must lie in [1, n_ids={n_ids}]")
        pool_dim = dim - k if concat else dim
        if pool_dim < 1:
            raise ValueError(f"concat=True needs dim={dim} > k={k}")
        self.n_ids, self.dim, self.n_buckets, self.concat = n_ids, dim, n_buckets, concat
        self.n_weights = n_weights
        ids = torch.arange(n_ids, device=device)
        start = init_std if concat else 1.0  # appended weights get a table entry's scale
        std = init_std / (start * math.sqrt(k))
        self.weight = nn.Parameter(torch.randn(n_buckets, pool_dim, device=device) * std)
        self.importance = nn.Parameter(torch.full((n_weights, k), start, device=device))
        self.register_buffer("rows", hash_ids(ids, n_buckets, seed=seed, n_hashes=k))
        weight_rows = (
            ids if n_weights == n_ids else hash_ids(ids, n_weights, seed=seed + 0xD1)[:, 0]
        )
        self.register_buffer("weight_rows", weight_rows)  # shape: (n_ids,)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        vectors = F.embedding(self.rows[ids], self.weight)  # shape: (*ids.shape, k, d)
        p = F.embedding(self.weight_rows[ids], self.importance)  # shape: (*ids.shape, k)
        out = (p[..., None] * vectors).sum(-2)  # shape: (*ids.shape, d)
        return torch.cat([out, p], dim=-1) if self.concat else out


class BloomEmbedding(CompactEmbedding):
    r"""Bloom embeddings (Serra & Karatzoglou 2017; spaCy/Thinc ``HashEmbed``).

    A Bloom-encoded one-hot id times a dense layer: the **sum** of ``k`` pool rows,
    :math:`e_x=\sum_{i=1}^k E[h_i(x)]` -- hash embeddings with all importance weights fixed
    at 1. Two ids share a vector only if their ``k`` rows agree as a multiset, probability
    about :math:`k!/B^k`. Parameters: ``n_buckets * dim``.

    Parameters
    ----------
    n_ids, dim, n_buckets, k, seed :
        As in :class:`HashEmbedding`.
    init_std : float
        The pool starts at :math:`\mathcal N(0, \sigma^2/k)` so a sum of ``k`` rows has
        standard deviation :math:`\sigma`.
    """

    def __init__(
        self,
        n_ids: int,
        dim: int,
        *,
        n_buckets: int,
        k: int = 2,
        seed: int = 0,
        init_std: float = 0.1,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(n_ids, dim, n_buckets, k)
        self.n_ids, self.dim, self.n_buckets = n_ids, dim, n_buckets
        std = init_std / math.sqrt(k)
        self.weight = nn.Parameter(torch.randn(n_buckets, dim, device=device) * std)
        ids = torch.arange(n_ids, device=device)
        self.register_buffer("rows", hash_ids(ids, n_buckets, seed=seed, n_hashes=k))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(self.rows[ids], self.weight).sum(-2)  # shape: (*ids.shape, dim)


def make_embedding(
    kind: str,
    n_ids: int,
    dim: int,
    *,
    ratio: float | None = None,
    budget: int | None = None,
    k: int = 2,
    sign: bool = True,
    concat: bool = False,
    seed: int = 0,
    init_std: float = 0.1,
    device: torch.device | str | None = None,
) -> CompactEmbedding:
    """An id embedding of ``kind`` within a parameter budget.

    Parameters
    ----------
    kind : {"full", "hashing", "hash", "bloom"}
        :class:`FullEmbedding`, :class:`HashingTrick`, :class:`HashEmbedding` or
        :class:`BloomEmbedding`.
    n_ids, dim : int
        Id range and output width.
    ratio : float, optional
        Budget as a share of the full table's ``n_ids * dim`` parameters (e.g. 0.25).
    budget : int, optional
        Budget in parameters (give ``ratio`` or ``budget``, not both; neither means the full
        table's size).
    k : int
        Hashes per id (``hash``, ``bloom``).
    sign : bool
        Sign hash of the hashing trick.
    concat : bool
        Concatenate the importance weights (``hash``).
    seed : int
        Seeds the hashes; give user and item tables (and every field) different seeds.
    init_std : float
    device : str or torch.device, optional

    Returns
    -------
    CompactEmbedding
        With ``n_parameters <= budget``. The pool gets ``budget // dim`` rows; hash embeddings
        first give every id its own ``k`` importance weights when that takes at most half the
        budget, and otherwise share ``K = budget // (2k)`` weight rows through a hash (then
        ``K >= 10 B`` for ``dim >= 20 k``, the paper's rule of thumb).
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; choose one of {KINDS}")
    _check_sizes(n_ids, dim)
    if ratio is not None and budget is not None:
        raise ValueError("give ratio or budget, not both")
    if ratio is not None:
        if not ratio > 0:
            raise ValueError(f"ratio={ratio} must be > 0")
        budget = int(ratio * n_ids * dim)
    budget = n_ids * dim if budget is None else budget
    if kind == "full":
        if budget < n_ids * dim:
            raise ValueError(
                f"kind='full' needs budget >= n_ids*dim = {n_ids * dim}; "
                f"got {budget} (shrink dim instead, or pick a hashed kind)"
            )
        return FullEmbedding(n_ids, dim, init_std=init_std, device=device)
    if kind == "hash":
        pool_dim = dim - k if concat else dim
        n_weights = n_ids if k * n_ids <= budget // 2 else budget // (2 * k)
        n_buckets = (budget - n_weights * k) // max(pool_dim, 1)
        _check_budget(kind, budget, n_buckets, n_weights)
        return HashEmbedding(
            n_ids,
            dim,
            n_buckets=n_buckets,
            k=k,
            n_weights=n_weights,
            concat=concat,
            seed=seed,
            init_std=init_std,
            device=device,
        )
    n_buckets = budget // dim
    _check_budget(kind, budget, n_buckets)
    if kind == "hashing":
        return HashingTrick(
            n_ids, dim, n_buckets=n_buckets, sign=sign, seed=seed, init_std=init_std, device=device
        )
    return BloomEmbedding(
        n_ids, dim, n_buckets=n_buckets, k=k, seed=seed, init_std=init_std, device=device
    )


def collision_stats(rows: torch.Tensor, n_buckets: int) -> dict[str, float]:
    """Measured collisions of hashed ids.

    Parameters
    ----------
    rows : Tensor
        Pool rows per id, shape ``(n_ids, k)`` (a module's ``rows`` buffer).
    n_buckets : int

    Returns
    -------
    dict
        ``occupied_buckets`` (distinct rows used), ``shared_fraction`` (share of ids whose
        first row also is another id's first row: the hashing trick's collision
        probability), ``colliding_pairs`` (pairs of ids with the same first row) and
        ``identical_pairs`` (pairs of ids with the same multiset of ``k`` rows: the same
        vector for Bloom embeddings).
    """
    first = rows[:, 0]
    counts = torch.bincount(first, minlength=n_buckets)  # shape: (n_buckets,)
    shared = (counts[first] > 1).float().mean()
    _, multiplicity = torch.unique(rows.sort(dim=1).values, dim=0, return_counts=True)
    return {
        "occupied_buckets": int(torch.unique(rows).numel()),
        "shared_fraction": float(shared),
        "colliding_pairs": int((counts * (counts - 1) // 2).sum()),
        "identical_pairs": int((multiplicity * (multiplicity - 1) // 2).sum()),
    }


def expected_collisions(n_ids: int, n_buckets: int, *, k: int = 1) -> dict[str, float]:
    r"""The same quantities under a uniform hash (spec sections 10 and 12).

    :math:`P(\text{shared}) = 1-(1-1/m)^{n-1}`, colliding pairs :math:`\binom n2/m`, occupied
    buckets :math:`m(1-(1-1/m)^{nk})`, and identical row multisets
    :math:`\binom n2\,k!/m^k` (for :math:`k \ll m`).
    """
    n, m = n_ids, n_buckets
    pairs = n * (n - 1) / 2
    return {
        "occupied_buckets": m * (1 - (1 - 1 / m) ** (n * k)),
        "shared_fraction": 1 - (1 - 1 / m) ** (n - 1),
        "colliding_pairs": pairs / m,
        "identical_pairs": pairs * math.factorial(k) / m**k,
    }


def _check_sizes(*sizes: int) -> None:
    if any(int(s) != s or s < 1 for s in sizes):
        raise ValueError(f"sizes must be positive integers; got {sizes}")


def _check_budget(kind: str, budget: int, n_buckets: int, n_weights: int = 0) -> None:
    if n_buckets < 1:
        raise ValueError(
            f"budget={budget} parameters is too small for kind={kind!r} "
            f"(no pool row left after {n_weights} importance rows)"
        )
