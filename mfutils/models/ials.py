r"""Implicit ALS: factorization of confidence-weighted preferences (Hu, Koren & Volinsky 2008).

Every (user, item) pair has a preference :math:`p_{ui}=1` if the user interacted with the item
and 0 otherwise, and a confidence :math:`c_{ui}=1+\alpha r_{ui}` (HKV08 eq. 3; ``r`` is 1 per
interaction, or a count). The model minimises over *all* pairs (HKV08 eq. 3)

.. math::
    \sum_{u,i} c_{ui}(p_{ui}-x_u^\top y_i)^2 + \lambda\Big(\sum_u\|x_u\|^2+\sum_i\|y_i\|^2\Big)

by alternating exact ridge solves. With item factors :math:`Y` fixed (HKV08 eq. 4)

.. math:: x_u = \big(Y^\top Y + Y^\top(C^u-I)Y + \lambda I\big)^{-1} Y^\top C^u p(u),

where :math:`Y^\top Y` is shared by all users and :math:`Y^\top(C^u-I)Y` only involves the
user's own items, so a sweep costs :math:`O(f^2\,\mathrm{nnz} + f^3 n)`. Here the sums over a
user's items are segment sums over a CSR (``index_add_``), and the solves run batched on the
device: either by Cholesky (exact) or by a few steps of conjugate gradient warm-started at the
previous factors (Takács, Pilászy & Tikk 2011), which needs only :math:`O(f\,\mathrm{nnz})`
per step and is what the ``implicit`` library does by default.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mfutils.data.container import Ratings, UserItemCSR
from mfutils.metrics import topk_metrics
from mfutils.models.ranking import RankingModel
from mfutils.train import TrainingCollapsed

__all__ = ["ImplicitALS"]

SOLVERS = ("cg", "cholesky")
# A fit whose every predicted preference is below this has collapsed: preferences are 0 or 1,
# and float32 resolves about 1e-7 of 1.
COLLAPSED = 1e-6


class ImplicitALS(RankingModel):
    r"""Weighted matrix factorization for implicit feedback, fit by alternating least squares.

    Parameters
    ----------
    n_factors : int
        Latent dimension :math:`f`.
    reg : float
        :math:`\lambda`, the same for users and items (HKV08 eq. 3).
    alpha : float
        Confidence slope: :math:`c_{ui}=1+\alpha r_{ui}` (HKV08 use 40 on TV data). The
        defaults (64 factors, :math:`\lambda=30`, :math:`\alpha=2`) were chosen on the
        validation part of the series' ML-100K split (notebook 11).
    epochs : int
        Alternating sweeps (users, then items).
    solver : {"cg", "cholesky"}
        Batched conjugate gradient (``cg_steps`` steps, warm-started) or exact Cholesky.
    cg_steps : int
        Conjugate-gradient steps per sweep (3 is the ``implicit`` library's default).
    use_ratings : bool
        Use the rating column as :math:`r_{ui}` (e.g. counts); by default every interaction
        counts 1. Rows repeating a (user, item) pair (an event log) are added up first, so
        :math:`r_{ui}` is the pair's count (or summed ratings) and :math:`c_{ui} = 1 + \alpha
        r_{ui}` as in HKV08, not one :math:`1 + \alpha` per row.
    init_std : float
        Standard deviation of the random initial factors.
    chunk_floats : int
        Memory bound of one group of rows solved together, in floats (about
        ``interactions * n_factors`` per group).
    seed : int
        Seed of the initial factors.
    valid_every : int, optional
        With ``valid`` given to :meth:`fit`, record the validation NDCG@20 every this many
        sweeps (a learning curve); ``None`` records it after the last sweep only. ALS has no
        early stopping: every sweep runs.
    progress : bool
        Show a progress bar over sweeps.
    device : str or torch.device, optional

    Raises
    ------
    mfutils.train.TrainingCollapsed
        From :meth:`fit`, when ``reg`` is so large for the data that every factor shrinks to
        zero (the trivial solution; the message says so).

    Notes
    -----
    ``history`` holds one row per sweep with its cumulative seconds and, when ``valid`` is
    given to :meth:`fit`, the validation NDCG@20 (see ``valid_every``).
    """

    def __init__(
        self,
        *,
        n_factors: int = 64,
        reg: float = 30.0,
        alpha: float = 2.0,
        epochs: int = 15,
        solver: str = "cg",
        cg_steps: int = 3,
        use_ratings: bool = False,
        init_std: float = 0.01,
        chunk_floats: int = 2**24,
        seed: int = 0,
        valid_every: int | None = None,
        progress: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(device=device)
        if valid_every is not None and valid_every < 1:
            raise ValueError(f"valid_every={valid_every} must be None or >= 1")
        if solver not in SOLVERS:
            raise ValueError(f"solver={solver!r}; choose one of {SOLVERS}")
        for name, value in (
            ("n_factors", n_factors),
            ("epochs", epochs),
            ("cg_steps", cg_steps),
            ("chunk_floats", chunk_floats),
        ):
            if value < 1:
                raise ValueError(f"{name}={value} must be >= 1")
        if reg < 0 or alpha < 0:
            raise ValueError(f"reg={reg} and alpha={alpha} must be non-negative")
        self.config.update(reg=float(reg), alpha=float(alpha))

    # ------------------------------------------------------------------ fitting
    def _build(self, n_users: int, n_items: int) -> None:
        f = self.config["n_factors"]
        self.register_buffer("user_factors", torch.zeros(n_users, f, device=self.device))
        self.register_buffer("item_factors", torch.zeros(n_items, f, device=self.device))

    def _fit(self, train: Ratings, *, valid: Ratings | None) -> None:
        cfg = self.config
        gen = torch.Generator(device=self.device).manual_seed(cfg["seed"])
        f = cfg["n_factors"]
        self.user_factors = cfg["init_std"] * torch.randn(
            self.n_users, f, generator=gen, device=self.device
        )  # shape: (n_users, f)
        self.item_factors = cfg["init_std"] * torch.randn(
            self.n_items, f, generator=gen, device=self.device
        )  # shape: (n_items, f)
        user, item, strength = _aggregated_pairs(
            train, self.n_items, self.device, use_ratings=cfg["use_ratings"]
        )
        by_user = UserItemCSR.from_pairs(
            user,
            item,
            n_users=self.n_users,
            n_items=self.n_items,
            values=strength,
            device=self.device,
        )
        by_item = UserItemCSR.from_pairs(
            item,
            user,
            n_users=self.n_items,
            n_items=self.n_users,
            values=strength,
            device=self.device,
        )
        valid_csr = valid.csr(device=self.device) if valid is not None else None
        rows, start = [], time.perf_counter()
        for sweep in tqdm(
            range(1, cfg["epochs"] + 1),
            desc="ImplicitALS",
            unit="sweep",
            disable=not cfg["progress"],
            leave=False,
        ):
            self.user_factors = self.solve(self.item_factors, by_user, self.user_factors)
            self.item_factors = self.solve(self.user_factors, by_item, self.item_factors)
            record = {"epoch": sweep, "seconds": time.perf_counter() - start}
            every = cfg["valid_every"] or cfg["epochs"]
            if valid_csr is not None and (sweep % every == 0 or sweep == cfg["epochs"]):
                record["valid_ndcg@20"] = topk_metrics(
                    self.score_items,
                    train=self.train_csr,
                    test=valid_csr,
                    ks=(20,),
                    device=self.device,
                )["ndcg@20"]
            rows.append(record)
        self.history = pd.DataFrame(rows)
        self._check_collapse(by_user)

    def _check_collapse(self, by_user: UserItemCSR) -> None:
        r"""Raise :class:`~mfutils.train.TrainingCollapsed` when every factor has shrunk to zero.

        Near zero a sweep is linear: :math:`x_u \approx \lambda^{-1}\sum_{i\in I_u} c_{ui}
        y_i`, so zero attracts the sweeps when :math:`\lambda` is above :math:`\sigma_{\max}`
        of the confidence matrix :math:`W_{ui}=c_{ui}` over the observed pairs, and the factors
        decay towards it geometrically: the ranking left is that of the decaying start, not a
        fit. One host sync per fit; :math:`\sigma_{\max}` (for the message) only on failure.
        """
        # |x_u . y_i| <= max_u ||x_u|| max_i ||y_i||: a bound on every predicted preference
        peak = float(self.user_factors.norm(dim=1).max() * self.item_factors.norm(dim=1).max())
        if peak >= COLLAPSED:
            return
        cfg = self.config
        sigma = _largest_singular_value(by_user, 1.0 + cfg["alpha"] * by_user.values)
        where = "above" if cfg["reg"] >= sigma else "just below"
        raise TrainingCollapsed(
            f"ImplicitALS collapsed to the zero solution (every predicted preference below "
            f"{peak:.1e} after {cfg['epochs']} sweeps): reg={cfg['reg']:g} is {where} "
            f"{sigma:.4g}, the largest singular value of this data's confidence matrix "
            f"(1 + alpha*r over its {len(by_user.values)} pairs, alpha={cfg['alpha']:g}), "
            f"where zero is the only fixed point; choose reg well below {sigma:.4g}"
        )

    def solve(self, fixed: torch.Tensor, csr: UserItemCSR, current: torch.Tensor) -> torch.Tensor:
        r"""One half-sweep: the factors of every row of ``csr`` given the ``fixed`` side.

        Parameters
        ----------
        fixed : Tensor, shape (n_cols, f)
            The other side's factors (item factors when solving users).
        csr : UserItemCSR
            Rows to solve (users or items) with their interactions; ``values`` hold
            :math:`r_{ui}`.
        current : Tensor, shape (n_rows, f)
            The rows' present factors (the conjugate-gradient starting point).

        Returns
        -------
        Tensor, shape (n_rows, f)
        """
        cfg = self.config
        f = fixed.shape[1]
        # shape: (f, f) Y^T Y + lambda I, shared by every row
        gram = fixed.T @ fixed + cfg["reg"] * torch.eye(f, device=fixed.device)
        exact = cfg["solver"] == "cholesky"
        out = torch.empty_like(current)
        for rows in _chunks(csr.counts(), padded=exact, budget=cfg["chunk_floats"] // f):
            if exact:
                row, entry = csr.positions(rows)  # row: (nnz_c,) local row of every entry
                vecs = fixed[csr.indices[entry]]  # shape: (nnz_c, f) y_i of every entry
                extra = cfg["alpha"] * csr.values[entry]  # shape: (nnz_c,) c_ui - 1
                # shape: (B, f) Y^T C^u p(u) = sum_i c_ui y_i
                rhs = torch.zeros(len(rows), f, device=fixed.device).index_add_(
                    0, row, (1.0 + extra)[:, None] * vecs
                )
                out[rows] = _cholesky_solve(gram, vecs, extra, row, rhs)
            else:  # rows are a contiguous range lo..hi-1
                lo, hi = int(rows[0]), int(rows[-1]) + 1
                start, stop = int(csr.indptr[lo]), int(csr.indptr[hi])
                out[lo:hi] = _conjugate_gradient(
                    gram,
                    fixed,
                    csr.indptr[lo : hi + 1] - start,
                    csr.indices[start:stop],
                    cfg["alpha"] * csr.values[start:stop],
                    current[lo:hi],
                    steps=cfg["cg_steps"],
                )
        return out

    def _score_known(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_factors[users] @ self.item_factors.T  # shape: (B, n_items)

    @torch.no_grad()
    def fold_in(self, items: torch.Tensor, ratings: torch.Tensor | None = None) -> torch.Tensor:
        r"""Factors of one user outside the training data, from their items alone.

        The user half of an iALS sweep, solved exactly (Hu, Koren & Volinsky 2008, eq. 4):
        :math:`x_u = (Y^\top Y + Y^\top(C^u - I)Y + \lambda I)^{-1} Y^\top C^u p(u)` with
        :math:`c_{ui} = 1 + \alpha\,r_{ui}`, ``r`` the count of each item (or, with
        ``use_ratings``, the sum of its ``ratings``), the item side fixed.

        Parameters
        ----------
        items : Tensor, shape (n,)
            Compact item ids (repeats add up, as in ``fit``).
        ratings : Tensor, shape (n,), optional
            Used as the strengths with ``use_ratings``; otherwise every row counts 1.

        Returns
        -------
        Tensor, shape (n_factors,)
        """
        self._require_fitted()
        cfg, y = self.config, self.item_factors  # y: (n_items, f)
        items = torch.as_tensor(items, dtype=torch.long, device=self.device)
        strength = (
            torch.ones(len(items), device=self.device)
            if not cfg["use_ratings"] or ratings is None
            else torch.as_tensor(ratings, dtype=torch.float32, device=self.device)
        )
        r = torch.zeros(self.n_items, device=self.device).index_add_(0, items, strength)
        rated = torch.nonzero(r).squeeze(1)  # shape: (m,)
        extra = cfg["alpha"] * r[rated]  # shape: (m,) c_ui - 1
        vecs = y[rated]  # shape: (m, f)
        lhs = y.T @ y + (extra[:, None] * vecs).T @ vecs  # shape: (f, f)
        lhs.diagonal().add_(cfg["reg"])
        rhs = ((1.0 + extra)[:, None] * vecs).sum(0)  # shape: (f,)
        return torch.linalg.solve(lhs, rhs)


def _aggregated_pairs(
    train: Ratings, n_items: int, device: torch.device, *, use_ratings: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unique (user, item) pairs and their summed strength: the count of the pair's rows, or
    with ``use_ratings`` their summed ratings (HKV08's ``r_ui`` of an event log)."""
    user = torch.as_tensor(train.user, dtype=torch.long, device=device)
    item = torch.as_tensor(train.item, dtype=torch.long, device=device)
    r = torch.as_tensor(train.rating, dtype=torch.float32, device=device)
    strength = r if use_ratings else torch.ones_like(r)  # shape: (n,)
    pairs, inverse = torch.unique(user * n_items + item, return_inverse=True)  # (nnz,), (n,)
    summed = torch.zeros(len(pairs), device=device).index_add_(0, inverse, strength)
    return pairs // n_items, pairs % n_items, summed


def _largest_singular_value(csr: UserItemCSR, weights: torch.Tensor, steps: int = 50) -> float:
    r""":math:`\sigma_{\max}` of the sparse matrix with ``csr``'s pattern and entries
    ``weights``, by power iteration on :math:`W^\top W` (segment sums both ways)."""
    device = weights.device
    n_rows = len(csr.indptr) - 1
    row = torch.repeat_interleave(torch.arange(n_rows, device=device), csr.indptr.diff())
    v = torch.ones(csr.n_items, device=device)  # shape: (n_items,)
    norm = torch.zeros((), device=device)
    for _ in range(steps):  # a fixed number of steps, only on the way to an error
        wv = torch.zeros(n_rows, device=device).index_add_(0, row, weights * v[csr.indices])
        v = torch.zeros(csr.n_items, device=device).index_add_(
            0, csr.indices, weights * wv[row]
        )  # shape: (n_items,) W^T W v
        norm = v.norm()
        v = v / norm.clamp_min(1e-30)
    return float(norm.sqrt())


def _chunks(counts: torch.Tensor, *, padded: bool, budget: int) -> list[torch.Tensor]:
    """Groups of rows solved together, each holding about ``budget`` (row, entry) slots.

    ``padded`` groups rows of similar length (sorted by count), because the exact solver pads
    every row of a group to the group's longest one.
    """
    counts_np = counts.clamp_min(1).cpu().numpy()
    order = np.argsort(counts_np, kind="stable") if padded else np.arange(len(counts_np))
    groups, lo = [], 0
    while lo < len(order):
        rest = counts_np[order[lo:]]
        cost = np.arange(1, len(rest) + 1) * rest if padded else np.cumsum(rest)
        hi = lo + max(1, int(np.searchsorted(cost, budget, side="right")))
        groups.append(torch.as_tensor(order[lo:hi], device=counts.device))
        lo = hi
    return groups


def _cholesky_solve(
    gram: torch.Tensor,
    vecs: torch.Tensor,
    extra: torch.Tensor,
    row: torch.Tensor,
    rhs: torch.Tensor,
) -> torch.Tensor:
    """Exact batched solve of ``(G + sum_i extra_i y_i y_i^T) x = rhs`` for every row.

    Each row's interactions are padded to the group's longest row, so that the per-row sums
    of outer products are one batched matrix product.
    """
    b, f = rhs.shape
    first = torch.searchsorted(row, torch.arange(b, device=row.device))  # shape: (B,)
    slot = torch.arange(len(row), device=row.device) - first[row]  # shape: (nnz_c,)
    padded = vecs.new_zeros(b, int(slot.max()) + 1 if len(row) else 1, f)  # shape: (B, L, f)
    padded[row, slot] = extra.sqrt()[:, None] * vecs
    a = gram + padded.transpose(1, 2) @ padded  # shape: (B, f, f)
    chol = torch.linalg.cholesky(a)
    return torch.cholesky_solve(rhs[:, :, None], chol).squeeze(2)  # shape: (B, f)


def _conjugate_gradient(
    gram: torch.Tensor,
    fixed: torch.Tensor,
    indptr: torch.Tensor,
    cols: torch.Tensor,
    extra: torch.Tensor,
    x: torch.Tensor,
    *,
    steps: int,
) -> torch.Tensor:
    r"""``steps`` of batched conjugate gradient from ``x`` on every row's system.

    Row :math:`u` solves :math:`(G + \sum_{i\in R(u)} e_{ui}\,y_iy_i^\top)\,x_u =
    \sum_{i\in R(u)}(1+e_{ui})\,y_i`. The product with the matrix is never formed: it is
    ``p @ G`` plus :math:`\sum_i e_{ui}(y_i^\top p_u)\,y_i`, a sampled dense-dense product on
    the interaction pattern followed by a sparse-dense one (two ``torch.sparse`` kernels).

    Parameters
    ----------
    gram : Tensor, shape (f, f)
        :math:`G = Y^\top Y + \lambda I`.
    fixed : Tensor, shape (n_cols, f)
        :math:`Y`.
    indptr, cols : Tensor
        CSR of the rows' interactions, shapes (B + 1,) and (nnz_c,).
    extra : Tensor, shape (nnz_c,)
        :math:`e_{ui} = c_{ui} - 1`.
    x : Tensor, shape (B, f)
        Starting point.
    """
    shape = (len(indptr) - 1, len(fixed))

    def sparse(values: torch.Tensor) -> torch.Tensor:  # the (B, n_cols) interaction matrix
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(indptr, cols, values, size=shape, check_invariants=False)

    pattern = sparse(extra)
    # shape: (f, n_cols), a view: the CPU kernel reads mat2 transposed, so a contiguous copy
    # here would be copied back, the whole table per call (superlinear at ML-25M's size)
    fixed_t = fixed.T

    def matvec(p: torch.Tensor) -> torch.Tensor:  # shape: (B, f) -> (B, f)
        dots = torch.sparse.sampled_addmm(pattern, p, fixed_t, beta=0.0)  # y_i^T p_u per entry
        return p @ gram + sparse(dots.values() * extra) @ fixed

    rhs = sparse(1.0 + extra) @ fixed  # shape: (B, f)
    x = x.clone()
    resid = rhs - matvec(x)  # shape: (B, f)
    direction = resid.clone()
    rs_old = (resid * resid).sum(1)  # shape: (B,)
    for _ in range(steps):
        a_dir = matvec(direction)  # shape: (B, f)
        curvature = (direction * a_dir).sum(1)  # shape: (B,)
        step = torch.where(
            curvature > 0, rs_old / curvature.clamp_min(1e-30), torch.zeros_like(curvature)
        )
        x += step[:, None] * direction
        resid -= step[:, None] * a_dir
        rs_new = (resid * resid).sum(1)
        beta = torch.where(rs_old > 0, rs_new / rs_old.clamp_min(1e-30), torch.zeros_like(rs_old))
        direction = resid + beta[:, None] * direction
        rs_old = rs_new
    return x
