"""The trainable module behind baseline estimates and biased matrix factorization.

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
