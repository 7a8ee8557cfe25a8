"""Koren's item-item neighbourhood models (Koren 2008; KorenBell-HB §5.4–5.5).

* :func:`shrunk_pearson` -- Pearson correlation of baseline residuals ``z_ui = r_ui - b_ui``
  over the common raters, shrunk towards 0 by its support: ``s_ij = n_ij / (n_ij + lambda_2)
  rho_ij`` (Koren08 eq. 2) or ``(n_ij - 1) / (n_ij - 1 + lambda_8) rho_ij`` (Handbook
  eq. 5.16). Three matrix products per chunk of item rows, no loop over item pairs.
* :class:`ItemKNN` -- the kNN interpolation predictor (Koren08 eq. 3; "CorNgbr")
  ``r_hat_ui = b_ui + sum_{j in S^k(i;u)} s_ij (r_uj - b_uj) / sum_{j in S^k(i;u)} s_ij``.
* :class:`GlobalNeighborhood` -- the global neighbourhood model (Koren08 eq. 10, loss eq. 11)
  with learned offsets ``w_ij`` and implicit weights ``c_ij`` over the ``k`` globally most
  similar items, trained by the shared trainer with Koren's SGD rules.

``b_uj`` inside the residuals is a fixed :class:`~mfutils.models.BaselineEstimates` fitted on
the training data in ``fit``; ``N(u) = R(u)``, the items the user rated in training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mfutils.data.container import Ratings, UserItemCSR
from mfutils.models.base import ExplicitModel
from mfutils.models.baseline import BaselineEstimates
from mfutils.train import TrainConfig, fit, sequential_step_scale, step_workspace

SHRINKAGE_FORMS = ("koren08", "handbook")
LOOKUP_COLUMNS = ("nbr_rated", "nbr_residual", "nbr_norm")  # GlobalNeighborhoodNet.lookup
DENSE_LOOKUP_CELLS = 1 << 25  # user x item cells (int32) up to which lookups are dense
CACHED_LOOKUP_CELLS = 1 << 24  # rows x k up to which training lookups are computed once


# ---------------------------------------------------------------------- similarity
@torch.no_grad()
def residual_matrix(
    data: Ratings, baseline: ExplicitModel, *, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense residuals ``Z[u, i] = r_ui - b_ui`` (0 where unrated) and the rated mask ``M``.

    Parameters
    ----------
    data : Ratings
        Training ratings (one rating per pair).
    baseline : ExplicitModel
        A fitted baseline predictor ``b_ui`` (e.g. :class:`BaselineEstimates`).

    Returns
    -------
    Z, M : Tensor, shape (n_users, n_items)
        Float32 residuals and boolean mask on ``device`` (default: the baseline's).
    """
    device = baseline.device if device is None else torch.device(device)
    t = data.tensors(device)
    base = torch.as_tensor(baseline.predict(data.user, data.item), device=device)  # shape: (n,)
    z = torch.zeros(data.n_users, data.n_items, device=device)  # shape: (m, n)
    z[t["user"], t["item"]] = t["rating"] - base
    mask = torch.zeros(data.n_users, data.n_items, dtype=torch.bool, device=device)
    mask[t["user"], t["item"]] = True
    return z, mask


@torch.no_grad()
def shrunk_pearson(
    residuals: torch.Tensor,
    mask: torch.Tensor,
    *,
    shrinkage: float = 100.0,
    form: str = "koren08",
    min_support: int = 2,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Shrunk Pearson similarity of items on baseline residuals (Koren08 eq. 2).

    ``rho_ij = sum_{u in U(i,j)} z_ui z_uj / sqrt(sum_{U(i,j)} z_ui^2 sum_{U(i,j)} z_uj^2)``
    over the users ``U(i,j)`` who rated both items, shrunk by its support ``n_ij = |U(i,j)|``.
    Computed as ``Z^T Z``, ``(Z^2)^T M`` and ``M^T M`` on the residuals' device, a chunk of
    item rows at a time; no loop over item pairs.

    Parameters
    ----------
    residuals : Tensor, shape (n_users, n_items)
        ``z_ui = r_ui - b_ui`` where rated, 0 elsewhere (see :func:`residual_matrix`).
    mask : Tensor of bool, shape (n_users, n_items)
        Which entries are rated.
    shrinkage : float
        ``lambda_2`` of Koren08 eq. 2 (typical 100), or ``lambda_8`` of Handbook eq. 5.16.
    form : {"koren08", "handbook"}
        ``n_ij / (n_ij + lambda)`` (Koren08 eq. 2) or ``(n_ij - 1) / (n_ij - 1 + lambda)``
        (Handbook eq. 5.16, what Surprise's ``pearson_baseline`` uses).
    min_support : int
        Pairs with ``n_ij < min_support`` get similarity 0 (2 by default); so does the diagonal.
    chunk_size : int, optional
        Item rows per block (default: all); bounds the temporary memory at
        ``chunk_size x n_items`` floats per product.

    Returns
    -------
    Tensor, shape (n_items, n_items)
        Symmetric similarities ``s_ij`` in ``[-1, 1]``, float32.
    """
    if form not in SHRINKAGE_FORMS:
        raise ValueError(f"form={form!r}; choose one of {SHRINKAGE_FORMS}")
    if shrinkage < 0:
        raise ValueError(f"shrinkage={shrinkage} must be >= 0")
    if residuals.shape != mask.shape or residuals.dim() != 2:
        raise ValueError(
            f"residuals {tuple(residuals.shape)} and mask {tuple(mask.shape)} must "
            "be equally shaped (n_users, n_items) matrices"
        )
    n_items = residuals.shape[1]
    chunk_size = n_items if chunk_size is None else max(int(chunk_size), 1)
    m = mask.to(residuals.dtype)  # shape: (m, n)
    z = residuals * m  # shape: (m, n)
    z2 = z * z  # shape: (m, n)
    sim = torch.empty(n_items, n_items, dtype=residuals.dtype, device=residuals.device)
    for lo in range(0, n_items, chunk_size):
        hi = min(lo + chunk_size, n_items)
        num = z[:, lo:hi].T @ z  # shape: (c, n)  sum z_ui z_uj
        sq_i = z2[:, lo:hi].T @ m  # shape: (c, n)  sum over U(i,j) of z_ui^2
        sq_j = m[:, lo:hi].T @ z2  # shape: (c, n)  sum over U(i,j) of z_uj^2
        support = m[:, lo:hi].T @ m  # shape: (c, n)  n_ij
        den = torch.sqrt(sq_i * sq_j)  # shape: (c, n)
        rho = torch.where(den > 0, num / den.clamp(min=1e-30), torch.zeros_like(num))
        shrunk = support if form == "koren08" else (support - 1).clamp(min=0)
        factor = shrunk / (shrunk + shrinkage).clamp(min=1e-30)  # shape: (c, n)
        block = (rho * factor).clamp(-1.0, 1.0)  # shape: (c, n)
        block[support < min_support] = 0.0
        rows = torch.arange(lo, hi, device=residuals.device)  # shape: (c,)
        block[rows - lo, rows] = 0.0
        sim[lo:hi] = block
    return sim


# ---------------------------------------------------------------------- shared helpers
def _fit_baseline(
    train: Ratings, options: dict[str, Any], device: torch.device
) -> BaselineEstimates:
    options = {"method": "als", **options}
    return BaselineEstimates(**options, device=device, clip=False).fit(train)


class _ResidualStore:
    """Mixin: the training residuals ``r_uj - b_uj`` aligned with ``train_csr`` (a buffer)."""

    def _restore(self, ckpt: dict[str, Any], path: Any) -> None:
        self._nnz = len(ckpt["train_csr"]["indices"])
        super()._restore(ckpt, path)  # type: ignore[misc]

    def _residual_buffers(self, nnz: int) -> None:
        self.register_buffer(  # type: ignore[attr-defined]
            "train_residual", torch.zeros(nnz, device=self.device)
        )  # type: ignore[attr-defined]

    @torch.no_grad()
    def _set_baseline(self, train: Ratings) -> BaselineEstimates:
        baseline = _fit_baseline(train, self.config["baseline_options"], self.device)
        self.base_user.copy_(torch.as_tensor(baseline.user_bias, device=self.device))
        self.base_item.copy_(torch.as_tensor(baseline.item_bias, device=self.device))
        csr: UserItemCSR = self.train_csr
        rows = csr.row_ids()  # shape: (nnz,)
        fixed = self.mu + self.base_user[rows] + self.base_item[csr.indices]  # shape: (nnz,)
        self._residual_buffers(len(csr.indices))
        self.train_residual.copy_(csr.values - fixed)
        return baseline

    def _baseline_known(
        self,
        user: torch.Tensor,
        item: torch.Tensor,
        user_known: torch.Tensor,
        item_known: torch.Tensor,
    ) -> torch.Tensor:
        b_u = self.base_user[user] * user_known  # shape: (B,)
        b_i = self.base_item[item] * item_known  # shape: (B,)
        return self.mu + b_u + b_i


# ---------------------------------------------------------------------- kNN interpolation
class ItemKNN(_ResidualStore, ExplicitModel):
    """Item-item kNN interpolation on baseline residuals (Koren08 eq. 3; Handbook eq. 5.18).

    ``r_hat_ui = b_ui + sum_j s_ij (r_uj - b_uj) / (lambda_9 + sum_j s_ij)`` over ``S^k(i;u)``,
    the ``k`` items rated by ``u`` in training that are most similar to ``i`` by
    :func:`shrunk_pearson`. When the denominator is not positive (no neighbours, or only
    negative ones) the prediction is ``b_ui`` -- an implementation choice, not from the paper.

    Parameters
    ----------
    k : int
        Neighbourhood size (Koren: 20 on Netflix; Surprise's default 40).
    shrinkage : float
        Similarity shrinkage ``lambda_2`` (Koren08: 100).
    shrinkage_form : {"koren08", "handbook"}
        See :func:`shrunk_pearson`.
    positive_only : bool
        Keep only the positive similarities among the top ``k`` (as Surprise's
        ``KNNBaseline``); otherwise negative ones enter numerator and denominator.
    denominator_reg : float
        ``lambda_9`` added to the denominator, shrinking towards ``b_ui`` when the
        neighbours are weak (Handbook eq. 5.18); 0 gives eq. 3. Default 0.5: on a validation
        split of ML-100K's ``u1.base`` 0.5 scored 0.9214 against 0.9274 for 0 (1: 0.9231),
        and on a release whose neighbours carry little beyond the baseline (the ml-latest-small
        replica) 0 was worse than the baseline alone (0.8867 vs 0.8807) and 0.5 better (0.8762).
    baseline_options : dict, optional
        Options of the fixed :class:`BaselineEstimates` ``b_ui`` (default ALS, reg 2 / 5).
    predict_batch : int
        Rows per internal block (memory ``predict_batch x n_items``); results do not
        depend on it.
    chunk_size : int, optional
        Item rows per block of the similarity computation.
    device, clip
        As in :class:`~mfutils.models.base.ExplicitModel`.
    """

    # Search space of mfutils.tuning (Optuna): option -> ("log" | "float", low, high),
    # ("int", low, high[, "log"]) or ("choice", value, ...); around the defaults.
    SEARCH_SPACE = {
        "k": ("int", 10, 200, "log"),
        "shrinkage": ("log", 10.0, 1000.0),
        "denominator_reg": ("log", 0.05, 5.0),
    }

    def __init__(
        self,
        k: int = 40,
        *,
        shrinkage: float = 100.0,
        shrinkage_form: str = "koren08",
        positive_only: bool = True,
        denominator_reg: float = 0.5,
        baseline_options: dict[str, Any] | None = None,
        predict_batch: int = 2048,
        chunk_size: int | None = None,
        device: str | torch.device | None = None,
        clip: bool = True,
    ) -> None:
        super().__init__(device=device, clip=clip)
        if k < 1:
            raise ValueError(f"k={k} must be >= 1")
        if shrinkage_form not in SHRINKAGE_FORMS:
            raise ValueError(f"shrinkage_form={shrinkage_form!r}; choose one of {SHRINKAGE_FORMS}")
        if denominator_reg < 0 or shrinkage < 0 or predict_batch < 1:
            raise ValueError("denominator_reg and shrinkage must be >= 0, predict_batch >= 1")
        self.config["baseline_options"] = dict(baseline_options or {})

    def _build(self, n_users: int, n_items: int) -> None:
        self.register_buffer("base_user", torch.zeros(n_users, device=self.device))
        self.register_buffer("base_item", torch.zeros(n_items, device=self.device))
        self.register_buffer("similarity", torch.zeros(n_items, n_items, device=self.device))
        self._residual_buffers(getattr(self, "_nnz", 0))

    @torch.no_grad()
    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        c = self.config
        baseline = self._set_baseline(train)
        z, mask = residual_matrix(train, baseline, device=self.device)
        self.similarity.copy_(
            shrunk_pearson(
                z,
                mask,
                shrinkage=c["shrinkage"],
                form=c["shrinkage_form"],
                chunk_size=c["chunk_size"],
            )
        )

    def _predict_known(self, user, item, user_known, item_known):
        base = self._baseline_known(user, item, user_known, item_known)  # shape: (B,)
        step = self.config["predict_batch"]
        parts = [
            self._offsets(user[lo : lo + step], item[lo : lo + step])
            for lo in range(0, len(user), step)
        ]
        offset = torch.cat(parts) if parts else torch.zeros_like(base)  # shape: (B,)
        return base + offset * (user_known & item_known)

    def _offsets(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """``sum s z / (lambda_9 + sum s)`` over ``S^k(i;u)``, 0 without neighbours, shape (B,)."""
        c = self.config
        n_items = self.similarity.shape[0]
        position, flat = self.train_csr.positions(user)  # shape: (nnz_B,)
        rated_items = self.train_csr.indices[flat]  # shape: (nnz_B,)
        sims = torch.full(
            (len(user), n_items), -torch.inf, device=self.device
        )  # shape: (B, n_items)
        sims[position, rated_items] = self.similarity[item[position], rated_items]
        res = torch.zeros(len(user), n_items, device=self.device)  # shape: (B, n_items)
        res[position, rated_items] = self.train_residual[flat]
        top = torch.topk(sims, min(c["k"], n_items), dim=1)  # shape: (B, k)
        use = torch.isfinite(top.values)  # shape: (B, k)
        if c["positive_only"]:
            use &= top.values > 0
        s = torch.where(use, top.values, torch.zeros_like(top.values))  # shape: (B, k)
        num = (s * res.gather(1, top.indices)).sum(1)  # shape: (B,)
        den = s.sum(1) + c["denominator_reg"]  # shape: (B,)
        ok = den > 0
        return torch.where(
            ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num)
        )


# ---------------------------------------------------------------------- global neighbourhood
class GlobalNeighborhoodNet(nn.Module):
    """Koren08 eq. 10 as a net for :func:`mfutils.train.fit`.

    ``r_hat_ui = mu + b_u + b_i + |R^k(i;u)|^{-1/2} sum_{j in R^k(i;u)} (r_uj - b_uj) w_ij
    + |N^k(i;u)|^{-1/2} sum_{j in N^k(i;u)} c_ij`` with ``R^k(i;u) = N^k(i;u) = R(u) cap
    S^k(i)``; an empty set contributes 0. ``w_ij`` and ``c_ij`` are stored aligned with the
    neighbour table ``neighbors[i] = S^k(i)``. Membership ``j in R(u)`` and the residual
    ``r_uj - b_uj`` are looked up in a dense ``user x item`` table of positions when it has at
    most :data:`DENSE_LOOKUP_CELLS` cells (ML-100K: 1.6 M), else by ``searchsorted`` in the
    sorted keys ``u * n_items + j`` of the training ratings; a ``B x k`` gather per batch.

    Parameters
    ----------
    neighbors : Tensor of long, shape (n_items, k)
        ``S^k(i)``, the ``k`` items most similar to each item.
    keys, residual : Tensor, shape (nnz,)
        Sorted ``user * n_items + item`` of the training ratings and their ``r_uj - b_uj``.
    n_users : int
    mu : float
    reg, reg_bias : float
        ``lambda_4`` on ``w, c`` and on ``b_u, b_i`` (penalty inside the sum over ratings).
    """

    def __init__(
        self,
        neighbors: torch.Tensor,
        keys: torch.Tensor,
        residual: torch.Tensor,
        *,
        n_users: int,
        mu: float,
        reg: float,
        reg_bias: float,
    ) -> None:
        super().__init__()
        n_items, k = neighbors.shape
        device = neighbors.device
        self.n_items, self.reg, self.reg_bias = n_items, reg, reg_bias
        self.register_buffer("mu", torch.tensor(float(mu), device=device))
        self.register_buffer("neighbors", neighbors)
        self.register_buffer("keys", keys)
        self.register_buffer("residual", residual)
        self.user_bias = nn.Parameter(torch.zeros(n_users, device=device))
        self.item_bias = nn.Parameter(torch.zeros(n_items, device=device))
        self.weights = nn.Parameter(torch.zeros(n_items, k, device=device))  # w_ij
        self.implicit = nn.Parameter(torch.zeros(n_items, k, device=device))  # c_ij
        self._index_keys()
        self.register_load_state_dict_post_hook(lambda module, _: module._index_keys())

    def _index_keys(self) -> None:
        """The dense table ``position[u * n_items + j]`` of each training rating (-1: none),
        rebuilt whenever ``keys`` are loaded; ``None`` when it would be too large."""
        cells, device = len(self.user_bias) * self.n_items, self.keys.device
        table = None
        if cells <= DENSE_LOOKUP_CELLS:
            table = torch.full((cells,), -1, dtype=torch.int32, device=device)  # (m * n,)
            table[self.keys] = torch.arange(len(self.keys), dtype=torch.int32, device=device)
        self.register_buffer("position", table, persistent=False)

    def lookup(self, user: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``rated`` (B x k bool), residuals ``r_uj - b_uj`` (B x k, 0 where unrated) and
        ``|R^k(i;u)|^{-1/2}`` (B, 0 where empty) for the neighbours ``j`` of each ``i``."""
        nbrs = self.neighbors[item]  # shape: (B, k)
        query = user[:, None] * self.n_items + nbrs  # shape: (B, k)
        if self.keys.numel() == 0:
            rated = torch.zeros_like(query, dtype=torch.bool)
            return (
                rated,
                torch.zeros(query.shape, device=query.device),
                torch.zeros(len(user), device=query.device),
            )
        if self.position is not None:
            pos = self.position[query]  # shape: (B, k), -1 where unrated
            rated = pos >= 0
            pos = pos.clamp(min=0).long()
        else:
            pos = torch.searchsorted(self.keys, query).clamp(max=self.keys.numel() - 1)
            rated = self.keys[pos] == query  # shape: (B, k)
        res = torch.where(rated, self.residual[pos], torch.zeros_like(self.residual[pos]))
        count = rated.sum(1)  # shape: (B,)
        norm = torch.where(
            count > 0,
            count.clamp(min=1).float().rsqrt(),
            torch.zeros(count.shape, device=count.device),
        )  # shape: (B,)
        return rated, res, norm

    def lookup_columns(
        self, user: torch.Tensor, item: torch.Tensor, *, chunk_size: int = 65536
    ) -> dict[str, torch.Tensor]:
        """:meth:`lookup` of fixed rows as batch columns ``nbr_rated, nbr_residual,
        nbr_norm``: the training rows never change, so the trainer can slice these instead of
        searching the keys again in every epoch (``n_rows x k`` bools and floats)."""
        parts = [
            self.lookup(user[lo : lo + chunk_size], item[lo : lo + chunk_size])
            for lo in range(0, len(user), chunk_size)
        ]
        return {
            name: torch.cat([part[col] for part in parts])
            for col, name in enumerate(LOOKUP_COLUMNS)
        }

    def training_columns(
        self, train: Ratings, weights: np.ndarray | None = None
    ) -> dict[str, torch.Tensor]:
        """``user, item, rating`` (and ``weight``) of ``train`` for :func:`mfutils.train.fit`,
        plus the :meth:`lookup_columns` when they take at most :data:`CACHED_LOOKUP_CELLS`."""
        device = self.neighbors.device
        data = {
            key: value
            for key, value in train.tensors(device).items()
            if key in ("user", "item", "rating")
        }
        if weights is not None:
            data["weight"] = torch.as_tensor(weights, device=device)
        if len(train) * self.neighbors.shape[1] <= CACHED_LOOKUP_CELLS:
            data.update(self.lookup_columns(data["user"], data["item"]))
        return data

    def batch_lookup(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The batch's :meth:`lookup`, from its precomputed columns when it has them."""
        if LOOKUP_COLUMNS[0] in batch:
            return tuple(batch[name] for name in LOOKUP_COLUMNS)
        return self.lookup(batch["user"], batch["item"])

    def neighborhood(
        self, user: torch.Tensor, item: torch.Tensor, found: tuple[torch.Tensor, ...] | None = None
    ) -> torch.Tensor:
        """The two neighbourhood sums of eq. 10, shape (B,); ``found`` is :meth:`lookup`'s
        result if already known."""
        rated, res, norm = self.lookup(user, item) if found is None else found
        w = self.weights[item]  # shape: (B, k)
        c = self.implicit[item]  # shape: (B, k)
        return norm * ((res * w).sum(1) + (rated * c).sum(1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        user, item = batch["user"], batch["item"]  # shape: (B,)
        base = batch.get("offset", self.mu)  # mu, or a fixed prediction to add the terms to
        biases = base + self.user_bias[user] + self.item_bias[item]  # shape: (B,)
        return biases + self.neighborhood(user, item, self.batch_lookup(batch))

    def penalty(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-row ``lambda_4 (b_u^2 + b_i^2 + sum_{R^k} w_ij^2 + sum_{N^k} c_ij^2) / 2``
        (Koren08 eq. 11, halved like the squared error), shape (B,)."""
        user, item = batch["user"], batch["item"]
        biases = self.user_bias[user] ** 2 + self.item_bias[item] ** 2  # shape: (B,)
        return self.neighborhood_penalty(batch) + 0.5 * self.reg_bias * biases

    def neighborhood_penalty(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``lambda_4 (sum_{R^k} w_ij^2 + sum_{N^k} c_ij^2) / 2`` per row, shape (B,)."""
        rated, _, _ = self.batch_lookup(batch)
        item = batch["item"]
        touched = (rated * (self.weights[item] ** 2 + self.implicit[item] ** 2)).sum(1)
        return 0.5 * self.reg * touched

    @torch.no_grad()
    def funk_step(self, batch: dict[str, torch.Tensor], lr: float) -> torch.Tensor:
        """One minibatch of Koren's SGD rules (Koren08 §3), written out; returns the loss sum.

        ``b_u += gamma (e - lambda b_u)`` (likewise ``b_i``); for ``j in R^k(i;u)``:
        ``w_ij += gamma (|R^k|^{-1/2} e (r_uj - b_uj) - lambda w_ij)`` and
        ``c_ij += gamma (|N^k|^{-1/2} e - lambda c_ij)``. Equal to ``torch.optim.SGD`` on the
        summed per-row objective (halved squared error times ``batch['weight']`` if present,
        plus :meth:`penalty`), all gradients taken at the parameters before the step, for a
        batch without repeated rows; a repeated row's summed step is scaled to sequential SGD
        by :func:`~mfutils.train.sequential_step_scale`.
        A batch column ``offset`` replaces ``mu`` (a fixed prediction the terms are added to);
        biases with ``requires_grad`` off stay fixed.
        """
        user, item = batch["user"], batch["item"]  # shape: (B,)
        rated, res, norm = self.batch_lookup(batch)  # shape: (B, k), (B, k), (B,)
        b_u, b_i = self.user_bias[user], self.item_bias[item]  # shape: (B,)
        w, c = self.weights[item], self.implicit[item]  # shape: (B, k)
        base = batch.get("offset", self.mu)
        pred = base + b_u + b_i + norm * ((res * w).sum(1) + (rated * c).sum(1))
        err = batch["rating"] - pred  # shape: (B,)
        loss = 0.5 * err**2
        if "weight" in batch:
            loss = loss * batch["weight"]
            err = err * batch["weight"]
        touched = (rated * (w**2 + c**2)).sum(1)  # shape: (B,)
        loss = loss + 0.5 * (self.reg * touched + self.reg_bias * (b_u**2 + b_i**2))
        weight = batch.get("weight", torch.ones_like(err))  # shape: (B,)
        work = getattr(self, "_step_work", None)
        if work is None or work.device != err.device:  # zeros, reused by every batch
            work = self._step_work = step_workspace(
                max(len(self.user_bias), len(self.item_bias)), device=err.device
            )
        # Repeated users and items: each summed step scaled to sequential SGD. w_ij and c_ij
        # repeat as often as item i does; their scale is the item's, at a curvature that bounds
        # every slot's, c_b |R^k|^-1 max(1, (r_uj - b_uj)^2) + lambda_4.
        slots = weight * norm**2 * (res**2).amax(1).clamp(min=1.0) + self.reg  # shape: (B,)
        repeats = batch.get("repeats")  # shape: (B, 2) under torchrun, else None
        user_scale = sequential_step_scale(
            user,
            (weight + self.reg_bias)[:, None],
            lr,
            workspace=work,
            repeats=None if repeats is None else repeats[:, 0],
        )  # shape: (B, 1)
        item_scale = sequential_step_scale(
            item,
            torch.stack([weight + self.reg_bias, slots], 1),
            lr,
            workspace=work,
            repeats=None if repeats is None else repeats[:, 1],
        )  # shape: (B, 2)
        for bias, rows, b, scale in (
            (self.user_bias, user, b_u, user_scale[:, 0]),
            (self.item_bias, item, b_i, item_scale[:, 0]),
        ):
            if bias.requires_grad:
                bias.index_add_(0, rows, lr * scale * (err - self.reg_bias * b))
        k = w.shape[1]
        flat = (item[:, None] * k + torch.arange(k, device=item.device)).reshape(-1)  # (B*k,)
        scaled = (err * norm)[:, None]  # shape: (B, 1)
        step = lr * item_scale[:, 1:]  # shape: (B, 1)
        grad_w = rated * (scaled * res - self.reg * w)  # shape: (B, k)
        grad_c = rated * (scaled - self.reg * c)  # shape: (B, k)
        self.weights.view(-1).index_add_(0, flat, (step * grad_w).reshape(-1))
        self.implicit.view(-1).index_add_(0, flat, (step * grad_c).reshape(-1))
        return loss.sum()


class GlobalNeighborhood(_ResidualStore, ExplicitModel):
    """Koren's global neighbourhood model (Koren08 eq. 10–11; Handbook §5.5.1, "GlobalNgbr").

    ``r_hat_ui = mu + b_u + b_i + |R^k(i;u)|^{-1/2} sum_{R^k(i;u)} (r_uj - b_uj) w_ij
    + |N^k(i;u)|^{-1/2} sum_{N^k(i;u)} c_ij`` with learned ``b_u, b_i, w_ij, c_ij``, a
    fixed baseline ``b_uj`` (:class:`BaselineEstimates`) in the residuals, ``N(u) = R(u)`` and
    ``S^k(i)`` the ``k`` items most similar to ``i`` by :func:`shrunk_pearson`. Trained by
    :func:`mfutils.train.fit`, by default with the hand-written SGD step of Koren's rules.

    Parameters
    ----------
    k : int, optional
        Neighbourhood size ``|S^k(i)|``; ``None`` means all other items (``k = infinity``).
        Koren: accuracy improves with ``k``, which trades accuracy against cost. Default 100,
        15 epochs and ``lr = 0.01``: the choice on a validation split carved from ML-100K
        ``u1.base`` (k = 200 was 0.0008 better there at twice the cost; k = 50 overfits).
    epochs, lr, lr_decay : int, float, float
        SGD schedule (Koren on Netflix: 15–20 passes, ``gamma = 0.005``; 0.005 is 0.003
        worse after 15 epochs on ML-100K); decay per epoch optional. ``epochs=0`` only builds
        the neighbour table, with ``w = c = 0`` and the baseline's biases (the start of the
        integrated model's neighbourhood tier).
    reg, reg_bias : float, optional
        ``lambda_4`` on ``w, c`` and on the biases (Koren's 0.002; 0.01 validated equal);
        ``reg_bias`` defaults to ``reg``.
    batch_size : int
        Ratings per SGD step (256 and 1024 validate equal; 1024 is 6x faster on a CPU).
    optimizer : str
        Trainer optimizer: ``funk`` (hand-written SGD, default), ``sgd`` (autograd, same
        updates) or ``adam``.
    init_biases : bool
        Start ``b_u, b_i`` at the fixed baseline's values instead of 0.
    shrinkage, shrinkage_form : float, str
        Similarity used to pick the neighbours (see :func:`shrunk_pearson`).
    baseline_options : dict, optional
        Options of the fixed :class:`BaselineEstimates` (default ALS, reg 2 / 5).
    patience, seed, progress, device, clip
        As in :class:`~mfutils.models.mf.BiasedMF`.
    """

    # Search space of mfutils.tuning (Optuna): option -> ("log" | "float", low, high),
    # ("int", low, high[, "log"]) or ("choice", value, ...); around the defaults.
    SEARCH_SPACE = {
        "k": ("int", 25, 300, "log"),
        "lr": ("log", 0.002, 0.03),
        "reg": ("log", 0.0002, 0.02),
        "shrinkage": ("log", 10.0, 1000.0),
        "epochs": ("int", 5, 45),
    }

    def __init__(
        self,
        k: int | None = 100,
        *,
        epochs: int = 15,
        lr: float = 0.01,
        lr_decay: float = 1.0,
        reg: float = 0.002,
        reg_bias: float | None = None,
        batch_size: int = 1024,
        optimizer: str = "funk",
        init_biases: bool = True,
        shrinkage: float = 100.0,
        shrinkage_form: str = "koren08",
        baseline_options: dict[str, Any] | None = None,
        patience: int | None = None,
        seed: int = 0,
        progress: bool = False,
        device: str | torch.device | None = None,
        clip: bool = True,
    ) -> None:
        super().__init__(device=device, clip=clip)
        if k is not None and k < 1:
            raise ValueError(f"k={k} must be >= 1 or None (all items)")
        if epochs < 0:
            raise ValueError(f"epochs={epochs} must be >= 0")
        if shrinkage_form not in SHRINKAGE_FORMS:
            raise ValueError(f"shrinkage_form={shrinkage_form!r}; choose one of {SHRINKAGE_FORMS}")
        self.config.update(
            reg_bias=reg if reg_bias is None else reg_bias,
            baseline_options=dict(baseline_options or {}),
        )

    def _build(self, n_users: int, n_items: int) -> None:
        c = self.config
        k = max(min(n_items - 1 if c["k"] is None else c["k"], n_items - 1), 1)
        nnz = getattr(self, "_nnz", 0)
        self.register_buffer("base_user", torch.zeros(n_users, device=self.device))
        self.register_buffer("base_item", torch.zeros(n_items, device=self.device))
        self._residual_buffers(nnz)
        self.net = GlobalNeighborhoodNet(
            torch.zeros(n_items, k, dtype=torch.long, device=self.device),
            torch.zeros(nnz, dtype=torch.long, device=self.device),
            torch.zeros(nnz, device=self.device),
            n_users=n_users,
            mu=0.0,
            reg=c["reg"],
            reg_bias=c["reg_bias"],
        )

    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        c = self.config
        with torch.no_grad():
            baseline = self._set_baseline(train)
            z, mask = residual_matrix(train, baseline, device=self.device)
            sim = shrunk_pearson(z, mask, shrinkage=c["shrinkage"], form=c["shrinkage_form"])
            sim.fill_diagonal_(-torch.inf)
            k = self.net.neighbors.shape[1]
            csr = self.train_csr
            keys = csr.row_ids() * self.n_items + csr.indices  # shape: (nnz,) sorted
            self.net = GlobalNeighborhoodNet(
                torch.topk(sim, k, dim=1).indices,
                keys,
                self.train_residual.clone(),
                n_users=self.n_users,
                mu=float(self.mu),
                reg=c["reg"],
                reg_bias=c["reg_bias"],
            )
            if c["init_biases"]:
                self.net.user_bias.copy_(self.base_user)
                self.net.item_bias.copy_(self.base_item)
        if c["epochs"] == 0:
            return
        data = self.net.training_columns(train, weights)
        config = TrainConfig(
            epochs=c["epochs"],
            batch_size=c["batch_size"],
            optimizer=c["optimizer"],
            lr=c["lr"],
            lr_decay=c["lr_decay"],
            patience=c["patience"],
            seed=c["seed"],
            progress=c["progress"],
        )
        self.history = fit(
            self.net,
            data,
            config=config,
            valid=None if valid is None else valid.tensors(self.device),
        )

    def _predict_known(self, user, item, user_known, item_known):
        net = self.net
        b_u = net.user_bias[user] * user_known  # shape: (B,)
        b_i = net.item_bias[item] * item_known  # shape: (B,)
        return net.mu + b_u + b_i + net.neighborhood(user, item) * (user_known & item_known)

    @property
    def neighbors(self) -> np.ndarray:
        """The neighbour table ``S^k(i)``, shape (n_items, k)."""
        return self.net.neighbors.cpu().numpy()
