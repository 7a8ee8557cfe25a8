r"""Alignment + uniformity losses on the unit hypersphere: DirectAU and MAWU. No negatives.

Wang & Isola (ICML 2020) split contrastive learning into *alignment* (positive pairs close)
and *uniformity* (embeddings spread over the sphere). Both losses here optimise the two terms
directly on a batch of positive pairs, with :math:`O(B^2d)` uniformity over the batch's rows.
On unit vectors :math:`\|\hat p-\hat q\|^2=2-2\cos(p,q)`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from mfutils.losses._common import ImplicitLoss, check_positive, weighted_mean


def uniformity(emb: torch.Tensor, *, t: float = 2.0) -> torch.Tensor:
    r"""Uniformity :math:`\log\,\mathbb E_{a<b}\,e^{-t\|\tilde x_a-\tilde x_b\|^2}` of a batch.

    Over all unordered pairs of rows of ``emb`` (duplicates kept, as DirectAU's official
    ``pdist``), with :math:`\tilde x=x/\|x\|`. Computed as a log-mean-exp over the off-diagonal
    entries of :math:`2-2\tilde X\tilde X^\top` (each pair twice, same mean), which is smooth
    where ``pdist`` has a square-root kink at duplicate rows.

    Parameters
    ----------
    emb : torch.Tensor, shape (B, d), B >= 2
    t : float, default 2.0
    """
    batch = emb.shape[0]
    if batch < 2:
        raise ValueError(f"uniformity needs at least 2 rows; got {batch}")
    unit = F.normalize(emb, dim=-1)  # shape: (B, d)
    sq_dist = 2 - 2 * unit @ unit.T  # shape: (B, B)
    diagonal = torch.eye(batch, dtype=torch.bool, device=emb.device)
    exponent = (-t * sq_dist).masked_fill(diagonal, -math.inf)  # shape: (B, B)
    return torch.logsumexp(exponent.reshape(-1), dim=0) - math.log(batch * (batch - 1))


class _AlignmentLoss(ImplicitLoss):
    needs_negatives = False


class DirectAULoss(_AlignmentLoss):
    r"""DirectAU (Wang et al., *Towards Representation Alignment and Uniformity in Collaborative
    Filtering*, KDD 2022; reference §4).

    .. math:: \mathcal L = \mathbb E_{(u,i)}\|\tilde f(u)-\tilde f(i)\|^2
              + \frac{\gamma}{2}\big[\ell_{unif}(\text{users})+\ell_{unif}(\text{items})\big],

    with :func:`uniformity` (:math:`t=2`) over the batch's user rows and positive-item rows.
    No negatives. ``sample_weight`` weights the alignment term only. Score with the **raw**
    dot product at test time, as the official ``full_sort_predict``. Official search:
    :math:`\gamma\in\{0.5, 1, 5\}` by data set (Beauty / Yelp2018 / Gowalla), Adam 1e-3, d=64.

    Parameters
    ----------
    gamma : float, default 1.0
        Weight of the uniformity term.
    t : float, default 2.0
        Uniformity temperature.
    """

    def __init__(self, *, gamma: float = 1.0, t: float = 2.0) -> None:
        super().__init__()
        self.gamma = check_positive("gamma", gamma)
        self.t = check_positive("t", t)

    def forward(
        self,
        user_emb: torch.Tensor,
        pos_emb: torch.Tensor,
        neg_emb: torch.Tensor | None = None,
        *,
        neg_items: torch.Tensor | None = None,
        pos_items: torch.Tensor | None = None,
        neg_mask: torch.Tensor | None = None,
        pos_logq: torch.Tensor | None = None,
        neg_logq: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
        user_idx: torch.Tensor | None = None,
        item_idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._check(
            user_emb,
            pos_emb,
            neg_emb,
            neg_items=neg_items,
            pos_items=pos_items,
            neg_mask=neg_mask,
            pos_logq=pos_logq,
            neg_logq=neg_logq,
            sample_weight=sample_weight,
            user_idx=user_idx,
            item_idx=item_idx,
        )
        diff = F.normalize(user_emb, dim=-1) - F.normalize(pos_emb, dim=-1)  # shape: (B, d)
        align = weighted_mean(diff.pow(2).sum(-1), sample_weight)
        uniform = (uniformity(user_emb, t=self.t) + uniformity(pos_emb, t=self.t)) / 2
        return align + self.gamma * uniform

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, t={self.t}"


class MAWULoss(_AlignmentLoss):
    r"""MAWU: margin-aware alignment + weighted uniformity (Park et al., *Toward a Better
    Understanding of Loss Functions for Collaborative Filtering*, CIKM 2023).

    With :math:`\theta_{ui}=\arccos\cos(u,i)` (cosine clamped to :math:`[-1+10^{-7},
    1-10^{-7}]`) and learnable per-user and per-item scalars :math:`m_u, m_i`:

    .. math:: \ell_{MA} = -\frac1B\sum_{(u,i)}\cos\Big(\mathrm{clip}_{[0,\pi]}
              \big(\theta_{ui} + 1-\sigma(m_u+m_i)\big)\Big),\qquad
              \ell_{WU} = \gamma_1\ell_{unif}(\text{users})+\gamma_2\ell_{unif}(\text{items}),

    loss :math:`\ell_{MA}+\ell_{WU}` (:func:`uniformity`, :math:`t=2`, over the clean
    :math:`a<b` pairs; the official code's lower-triangular masking also averages in the
    masked entries as constants :math:`e^{-4}`, so expect small differences from published
    numbers). The angular margin :math:`1-\sigma(m_u+m_i)\in[0.12, 0.5]` is per user and item
    (mitigating user/item popularity bias, per the abstract); a smaller :math:`m` means a
    larger margin.

    The margins are parameters of this module (``nn.Embedding(n, 1)``, Xavier-normal init):
    **give the loss's parameters to the optimizer** and move it to the device. In training
    mode every forward first clamps them to :math:`[0, 1]` in place (projected gradient, as
    the official code clamps at every step), so the values used are always in range.

    Parameters
    ----------
    n_users, n_items : int
        Sizes of the margin tables (ids come from ``user_idx`` and ``item_idx``/``pos_items``).
    gamma1, gamma2 : float, default 0.8, 0.6
        Uniformity weights of users and items (official MF values on Yelp; Beauty 1.0/0.1,
        Gowalla 2.6/1.4).
    t : float, default 2.0
    """

    needs_ids = True

    def __init__(
        self,
        *,
        n_users: int,
        n_items: int,
        gamma1: float = 0.8,
        gamma2: float = 0.6,
        t: float = 2.0,
    ) -> None:
        super().__init__()
        for name, value in (("n_users", n_users), ("n_items", n_items)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        self.gamma1 = check_positive("gamma1", gamma1)
        self.gamma2 = check_positive("gamma2", gamma2)
        self.t = check_positive("t", t)
        self.user_margin = nn.Embedding(n_users, 1)
        self.item_margin = nn.Embedding(n_items, 1)
        nn.init.xavier_normal_(self.user_margin.weight)
        nn.init.xavier_normal_(self.item_margin.weight)

    @torch.no_grad()
    def clamp_margins_(self) -> None:
        """Project the margin tables onto :math:`[0, 1]` in place."""
        self.user_margin.weight.clamp_(0.0, 1.0)
        self.item_margin.weight.clamp_(0.0, 1.0)

    def angular_margin(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        r""":math:`1-\sigma(m_u+m_i)` of each pair, shape (B,)."""
        raw = self.user_margin(user_idx) + self.item_margin(item_idx)  # shape: (B, 1)
        return 1 - torch.sigmoid(raw.squeeze(-1))

    def forward(
        self,
        user_emb: torch.Tensor,
        pos_emb: torch.Tensor,
        neg_emb: torch.Tensor | None = None,
        *,
        neg_items: torch.Tensor | None = None,
        pos_items: torch.Tensor | None = None,
        neg_mask: torch.Tensor | None = None,
        pos_logq: torch.Tensor | None = None,
        neg_logq: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
        user_idx: torch.Tensor | None = None,
        item_idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._check(
            user_emb,
            pos_emb,
            neg_emb,
            neg_items=neg_items,
            pos_items=pos_items,
            neg_mask=neg_mask,
            pos_logq=pos_logq,
            neg_logq=neg_logq,
            sample_weight=sample_weight,
            user_idx=user_idx,
            item_idx=item_idx,
        )
        item_idx = pos_items if item_idx is None else item_idx
        if user_idx is None or item_idx is None:
            raise ValueError(
                "MAWULoss needs user_idx and item_idx (or pos_items): its margins "
                "are per user and per item"
            )
        for name, ids, size in (
            ("user_idx", user_idx, self.user_margin.num_embeddings),
            ("item_idx", item_idx, self.item_margin.num_embeddings),
        ):
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
                raise ValueError(
                    f"MAWULoss: {name} must lie in [0, {size}); got "
                    f"{int(ids.min())}..{int(ids.max())}"
                )
        if self.training:
            self.clamp_margins_()
        cos = (F.normalize(user_emb, dim=-1) * F.normalize(pos_emb, dim=-1)).sum(-1)
        theta = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))  # shape: (B,)
        shifted = (theta + self.angular_margin(user_idx, item_idx)).clamp(0.0, math.pi)
        align = weighted_mean(-torch.cos(shifted), sample_weight)
        return (
            align
            + self.gamma1 * uniformity(user_emb, t=self.t)
            + self.gamma2 * uniformity(pos_emb, t=self.t)
        )

    def extra_repr(self) -> str:
        return (
            f"n_users={self.user_margin.num_embeddings}, "
            f"n_items={self.item_margin.num_embeddings}, gamma1={self.gamma1}, "
            f"gamma2={self.gamma2}, t={self.t}"
        )
