"""The trainable modules of the factor models: :class:`BiasedMFNet` (baseline estimates,
biased MF) and :class:`ItemBagNet` (SVD++, Asymmetric-SVD, and the factor half of the
integrated model and of timeSVD++).

``BiasedMFNet`` predicts (KorenBell-HB eq. 5.1 with ``n_factors = 0``; eq. 5.3 otherwise)

    r_hat_ui = mu + b_u + b_i + q_i^T p_u

and carries the per-rating penalty of eq. 5.2,
``lambda * (b_u^2 + b_i^2 + ||p_u||^2 + ||q_i||^2) / 2`` per row, so that its gradients
reproduce Funk's SGD rules ``b_u <- b_u + gamma (e_ui - lambda b_u)``,
``p_u <- p_u + gamma (e_ui q_i - lambda p_u)`` and their mirror images.
"""

from __future__ import annotations

import torch
from torch import nn

from mfutils.data.container import UserItemCSR
from mfutils.train import sequential_step_scale, step_workspace

INITIALIZERS = ("normal", "uniform", "xavier", "zeros")


class BiasedMFNet(nn.Module):
    """``mu + b_u + b_i + p_u . q_i`` with per-row L2 penalties and a hand-written SGD step.

    Parameters
    ----------
    n_users, n_items, n_factors : int
        Table sizes; ``n_factors = 0`` gives the baseline predictor ``mu + b_u + b_i``.
    mu : float
        Global mean (a fixed buffer; for logistic output the logit of the positive rate).
    reg, reg_bias : float
        Penalty weights for the factor and the bias rows (Koren's lambda_4 for both).
    init, init_std : str, float
        Factor initializer (``normal``, ``uniform``, ``xavier`` or ``zeros``) and its scale.
    freeze_users, freeze_items : bool
        Keep the user (item) table, factors and bias, fixed.
    sparse : bool
        Sparse gradients (for ``torch.optim.SparseAdam``).
    generator : torch.Generator, optional
        Seeded generator for the initialization (on the device of the tables).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_factors: int,
        *,
        mu: float,
        reg: float,
        reg_bias: float,
        init: str = "normal",
        init_std: float = 0.1,
        freeze_users: bool = False,
        freeze_items: bool = False,
        sparse: bool = False,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if init not in INITIALIZERS:
            raise ValueError(f"init={init!r}; choose one of {INITIALIZERS}")
        self.reg, self.reg_bias = reg, reg_bias
        self.register_buffer("mu", torch.tensor(float(mu), device=device))
        self.user_bias = nn.Embedding(n_users, 1, sparse=sparse, device=device)
        self.item_bias = nn.Embedding(n_items, 1, sparse=sparse, device=device)
        self.user_factors = nn.Embedding(n_users, n_factors, sparse=sparse, device=device)
        self.item_factors = nn.Embedding(n_items, n_factors, sparse=sparse, device=device)
        with torch.no_grad():
            self.user_bias.weight.zero_()
            self.item_bias.weight.zero_()
            for table in (self.user_factors.weight, self.item_factors.weight):
                _initialize(table, init, init_std, generator)
        self.freeze(users=freeze_users, items=freeze_items)

    def freeze(self, *, users: bool, items: bool) -> None:
        """Stop (or resume) gradient updates of the user and/or item rows."""
        for table in (self.user_bias, self.user_factors):
            table.weight.requires_grad_(not users)
        for table in (self.item_bias, self.item_factors):
            table.weight.requires_grad_(not items)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        user, item = batch["user"], batch["item"]  # shape: (batch,)
        dot = (self.user_factors(user) * self.item_factors(item)).sum(1)  # shape: (batch,)
        return self.mu + self.user_bias(user)[:, 0] + self.item_bias(item)[:, 0] + dot

    def penalty(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-row ``(reg (|p_u|^2 + |q_i|^2) + reg_bias (b_u^2 + b_i^2)) / 2``, shape (batch,)."""
        user, item = batch["user"], batch["item"]
        factors = self.user_factors(user).pow(2).sum(1) + self.item_factors(item).pow(2).sum(1)
        biases = self.user_bias(user)[:, 0] ** 2 + self.item_bias(item)[:, 0] ** 2
        return 0.5 * (self.reg * factors + self.reg_bias * biases)

    @torch.no_grad()
    def funk_step(self, batch: dict[str, torch.Tensor], lr: float) -> torch.Tensor:
        """One minibatch of Funk's per-rating SGD, gradients written out; returns the loss sum.

        Equal to ``torch.optim.SGD`` on the summed per-row objective (squared error halved, times
        ``batch['weight']`` if present, plus :meth:`penalty`), without autograd, for a batch in
        which no user and no item repeats. A row that occurs ``k > 1`` times gets the sum of its
        ``k`` steps scaled by :func:`~mfutils.train.sequential_step_scale` (``k`` sequential
        steps, not ``k`` steps at once), so that heavy users cannot make a batch diverge.
        """
        user, item = batch["user"], batch["item"]  # shape: (batch,)
        # index_select gathers whole rows; advanced indexing (weight[user]) is ~10x slower on CPU
        p_u = self.user_factors.weight.index_select(0, user)  # shape: (batch, f)
        q_i = self.item_factors.weight.index_select(0, item)  # shape: (batch, f)
        b_u = self.user_bias.weight[:, 0].index_select(0, user)  # shape: (batch,)
        b_i = self.item_bias.weight[:, 0].index_select(0, item)  # shape: (batch,)
        err = batch["rating"] - (self.mu + b_u + b_i + (p_u * q_i).sum(1))  # shape: (batch,)
        loss = 0.5 * err**2
        weight = batch.get("weight")  # shape: (batch,) or None
        if weight is not None:
            loss = loss * weight
            err = err * weight
        norms = torch.cat([(q_i**2).sum(1), (p_u**2).sum(1)])  # shape: (2 batch,)
        loss = loss + 0.5 * (
            self.reg * norms.view(2, -1).sum(0) + self.reg_bias * (b_u**2 + b_i**2)
        )
        # One scale pass over both tables: item rows are numbered after the user rows. The
        # curvature of a user's terms is c |q_i|^2 + lambda (factors), c + lambda (bias).
        rows = torch.cat([user, item + self.user_factors.num_embeddings])  # shape: (2 batch,)
        if weight is None:
            curvature = torch.stack(
                [torch.full_like(norms, 1.0 + self.reg_bias), norms + self.reg], 1
            )  # shape: (2 batch, 2)
        else:
            weights = weight.repeat(2)  # shape: (2 batch,)
            curvature = torch.stack([weights + self.reg_bias, weights * norms + self.reg], 1)
        repeats = batch.get("repeats")  # shape: (batch, 2) under torchrun, else None
        if repeats is not None:
            repeats = repeats.T.reshape(-1)  # shape: (2 batch,) users', then items'
        step = lr * sequential_step_scale(
            rows, curvature, lr, workspace=self._workspace(), repeats=repeats
        )
        step_u, step_i = step.split(len(user))  # shape: (batch, 2) each
        if self.user_factors.weight.requires_grad:
            self.user_bias.weight[:, 0].index_add_(
                0, user, step_u[:, 0] * (err - self.reg_bias * b_u)
            )
            self.user_factors.weight.index_add_(
                0, user, step_u[:, 1:] * (err[:, None] * q_i - self.reg * p_u)
            )
        if self.item_factors.weight.requires_grad:
            self.item_bias.weight[:, 0].index_add_(
                0, item, step_i[:, 0] * (err - self.reg_bias * b_i)
            )
            self.item_factors.weight.index_add_(
                0, item, step_i[:, 1:] * (err[:, None] * p_u - self.reg * q_i)
            )
        return loss.sum()

    def _workspace(self) -> torch.Tensor:
        """A zero scratch table for the step scale, kept between batches."""
        device = self.user_factors.weight.device
        work = getattr(self, "_step_work", None)
        if work is None or work.device != device:
            n_rows = self.user_factors.num_embeddings + self.item_factors.num_embeddings
            work = self._step_work = step_workspace(n_rows, device=device)
        return work


def _initialize(
    table: torch.Tensor, init: str, std: float, generator: torch.Generator | None
) -> None:
    if init == "normal":
        table.normal_(0.0, std, generator=generator)
    elif init == "uniform":
        table.uniform_(-std, std, generator=generator)
    elif init == "xavier":
        nn.init.xavier_normal_(table, generator=generator)
    else:
        table.zero_()


class ItemBagNet(nn.Module):
    """The net behind :class:`SVDpp` (``asymmetric=False``) and :class:`AsymmetricSVD`.

    Parameters
    ----------
    n_users, n_items, n_factors : int
    csr : UserItemCSR
        ``N(u) = R(u)`` of the training fold; its ``values`` are the residuals
        ``r_uj - b_uj`` used by the asymmetric ``x`` term.
    mu : float
    reg, reg_bias, reg_implicit : float
        Per-rating penalties: ``reg`` on ``p_u, q_i`` (Koren's lambda_6), ``reg_bias`` on
        ``b_u, b_i`` (lambda_5) and ``reg_implicit`` on every ``y_j`` (and ``x_j``) of the
        user's bag (lambda_6 in Koren's paper, which uses one constant for all factors).
    asymmetric : bool
        Asymmetric-SVD: no ``p_u``; add the residual-weighted ``x`` bag.
    attributes : Tensor of long, shape (n_users, n_attributes), optional
        ``A(u)`` as ids into a table of ``n_attribute_values`` vectors ``y_a`` whose sum joins
        the user vector (KBV09 eq. 6); see :func:`encode_user_attributes`.
    reg_attributes : float
        Per-rating penalty on the ``y_a`` (and ``b_a``) of the rating's user.
    attribute_biases : bool
        Also a bias ``b_a`` per attribute value, added to ``b_u`` (an extension of eq. 6).
    init_std : float
    generator : torch.Generator, optional
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_factors: int,
        *,
        csr: UserItemCSR,
        mu: float,
        reg: float,
        reg_bias: float,
        reg_implicit: float,
        asymmetric: bool = False,
        attributes: torch.Tensor | None = None,
        n_attribute_values: int = 0,
        reg_attributes: float = 0.0,
        attribute_biases: bool = False,
        init_std: float = 0.1,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.reg, self.reg_bias, self.reg_implicit = reg, reg_bias, reg_implicit
        self.reg_attributes = reg_attributes
        self.asymmetric = asymmetric
        self.register_buffer("mu", torch.tensor(float(mu), device=device))
        self.register_buffer("indptr", csr.indptr.to(device))
        self.register_buffer("indices", csr.indices.to(device))
        self.register_buffer("residuals", csr.values.to(device))
        counts = csr.counts().to(device)
        self.register_buffer("norm", counts.clamp(min=1).float().rsqrt())  # shape: (n_users,)
        self.user_bias = nn.Embedding(n_users, 1, device=device)
        self.item_bias = nn.Embedding(n_items, 1, device=device)
        self.item_factors = nn.Embedding(n_items, n_factors, device=device)
        self.implicit = nn.Embedding(n_items, n_factors, device=device)  # y_j
        tables = [self.item_factors, self.implicit]
        if asymmetric:
            self.explicit = nn.Embedding(n_items, n_factors, device=device)  # x_j
            tables.append(self.explicit)
        else:
            self.user_factors = nn.Embedding(n_users, n_factors, device=device)  # p_u
            tables.append(self.user_factors)
        self.has_attributes = attributes is not None
        self.attribute_biases = attribute_biases and attributes is not None
        if self.attribute_biases:
            self.attribute_bias = nn.Embedding(n_attribute_values, 1, device=device)  # b_a
            with torch.no_grad():
                self.attribute_bias.weight.zero_()
        if attributes is not None:
            self.register_buffer("attributes", attributes.to(device))  # shape: (n_users, A)
            self.attribute_factors = nn.Embedding(
                n_attribute_values, n_factors, device=device
            )  # y_a
            tables.append(self.attribute_factors)
        with torch.no_grad():
            self.user_bias.weight.zero_()
            self.item_bias.weight.zero_()
            for table in tables:
                table.weight.normal_(0.0, init_std, generator=generator)

    def _bag(
        self, users: torch.Tensor, table: torch.Tensor, weights: torch.Tensor | None
    ) -> torch.Tensor:
        """``sum_{j in N(u)} w_uj table_j`` for distinct ``users``, shape (U, table.shape[1]).

        A segment sum: the rows of every user's items gathered with ``index_select`` and
        added per user with ``index_add`` (on a CPU both directions are about twice as fast as
        ``embedding_bag`` here).
        """
        csr = UserItemCSR(self.indptr, self.indices, self.residuals, len(table))
        position, entry = csr.positions(users)  # shape: (nnz_U,) entries, grouped by user
        rows = table.index_select(0, self.indices[entry])  # shape: (nnz_U, f)
        if weights is not None:
            rows = rows * weights[entry][:, None]
        out = torch.zeros(len(users), table.shape[1], device=table.device, dtype=table.dtype)
        return out.index_add(0, position, rows)  # shape: (U, f)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """``p_u + |N(u)|^{-1/2} sum y_j [+ sum_{A(u)} y_a]`` (SVD++) or the two bags
        (Asymmetric-SVD), shape (U, f)."""
        norm = self.norm[users][:, None]  # shape: (U, 1)
        vectors = norm * self._bag(users, self.implicit.weight, None)  # shape: (U, f)
        if self.asymmetric:
            vectors = vectors + norm * self._bag(users, self.explicit.weight, self.residuals)
        else:
            vectors = vectors + self.user_factors(users)
        if self.has_attributes:
            vectors = vectors + self.attribute_vectors(users)
        return vectors

    def attribute_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """``sum_{a in A(u)} y_a`` (KBV09 eq. 6), shape (U, f)."""
        return self.attribute_factors(self.attributes[users]).sum(1)  # shape: (U, f)

    def attribute_bias_sum(self, users: torch.Tensor) -> torch.Tensor:
        """``sum_{a in A(u)} b_a``, 0 without attribute biases, shape (U,)."""
        if not self.attribute_biases:
            return torch.zeros(users.shape, device=users.device)
        return self.attribute_bias(self.attributes[users]).sum((1, 2))  # shape: (U,)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        user, item = batch["user"], batch["item"]  # shape: (B,)
        users, inverse = torch.unique(user, return_inverse=True)  # shape: (U,), (B,)
        z = self.user_vectors(users).index_select(0, inverse)  # shape: (B, f)
        dot = (self.item_factors.weight.index_select(0, item) * z).sum(1)  # shape: (B,)
        b_u = _rows(self.user_bias.weight[:, 0], user) + self.attribute_bias_sum(user)
        return self.mu + b_u + _rows(self.item_bias.weight[:, 0], item) + dot

    def penalty(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per rating: ``reg_bias (b_u^2 + b_i^2) + reg (|q_i|^2 [+ |p_u|^2])
        + reg_implicit sum_j (|y_j|^2 [+ |x_j|^2]) [+ reg_attributes sum_{A(u)} |y_a|^2]``,
        halved; shape (B,)."""
        user, item = batch["user"], batch["item"]
        users, inverse = torch.unique(user, return_inverse=True)
        bag_tables = [self.implicit.weight] + ([self.explicit.weight] if self.asymmetric else [])
        squares = sum(t.pow(2).sum(1, keepdim=True) for t in bag_tables)  # shape: (n_items, 1)
        bag = self._bag(users, squares, None)[inverse, 0]  # shape: (B,)
        # Squared norms of whole tables, then one scalar per row: the same per-rating penalty
        # as gathering the rows first, with a cheaper backward.
        factors = _rows(self.item_factors.weight.pow(2).sum(1), item)  # shape: (B,)
        if not self.asymmetric:
            factors = factors + _rows(self.user_factors.weight.pow(2).sum(1), user)
        biases = _rows(self.user_bias.weight[:, 0] ** 2, user) + _rows(
            self.item_bias.weight[:, 0] ** 2, item
        )  # shape: (B,)
        out = 0.5 * (self.reg * factors + self.reg_implicit * bag + self.reg_bias * biases)
        if self.has_attributes:
            squares = self.attribute_factors.weight.pow(2).sum(1)  # shape: (n_values,)
            if self.attribute_biases:
                squares = squares + self.attribute_bias.weight[:, 0] ** 2
            out = out + 0.5 * self.reg_attributes * squares[self.attributes[user]].sum(1)
        return out


def _rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` by ``index_select`` (a faster backward than ``nn.Embedding``)."""
    return values.index_select(0, index)
