r"""Cosine contrastive loss (CCL) of SimpleX (Mao et al., CIKM 2021; reference §2)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mfutils.losses._common import (
    ScoredLoss,
    check_hard_negatives,
    check_similarity,
    masked_row_mean,
)


class CCLLoss(ScoredLoss):
    r"""Cosine contrastive loss (SimpleX, Mao et al., CIKM 2021; reference §2).

    .. math:: \mathcal L_{CCL}(u,i) = \big(1-\hat y_{ui}\big)
              + \frac{w}{|\mathcal N|}\sum_{j\in\mathcal N}\max(0,\ \hat y_{uj}-m),

    with :math:`\hat y` the cosine similarity. The positive term is computed as
    :math:`\mathrm{relu}(1-\hat y_{ui})` as in the official code (identical for cosine). Only
    negatives more similar than the margin :math:`m` are penalised. Masked negatives are left
    out and :math:`|\mathcal N|` counts the legal ones. Recommended (official MF-CCL configs):
    800-1000 uniform negatives per positive, Adam 1e-4, d=64, batch 512.

    Parameters
    ----------
    similarity : {"cosine", "dot"}, default "cosine"
    margin : float, default 0.9
        :math:`m`.
    negative_weight : float or None, default 150.0
        :math:`w`; ``None`` sums over the negatives (same as :math:`w=|\mathcal N|`).
    hard_negatives : int, optional
        Keep only the ``k`` most similar legal negatives of each row.
    """

    def __init__(
        self,
        *,
        similarity: str = "cosine",
        margin: float = 0.9,
        negative_weight: float | None = 150.0,
        hard_negatives: int | None = None,
    ) -> None:
        super().__init__()
        self.similarity = check_similarity(similarity)
        self.temperature = 1.0
        if isinstance(margin, bool) or not isinstance(margin, int | float):
            raise ValueError(f"margin must be a number; got {margin!r}")
        self.margin = float(margin)
        if negative_weight is not None and not negative_weight >= 0:
            raise ValueError(f"negative_weight must be >= 0 or None; got {negative_weight!r}")
        self.negative_weight = None if negative_weight is None else float(negative_weight)
        self.hard_negatives = check_hard_negatives(hard_negatives)

    def row_loss(self, pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        pos_term = F.relu(1.0 - pos)  # shape: (B,)
        neg_terms = F.relu(neg - self.margin)  # shape: (B, K); masked entries give 0
        if self.negative_weight is None:
            neg_term = torch.where(valid, neg_terms, torch.zeros_like(neg_terms)).sum(1)
        else:
            neg_term = self.negative_weight * masked_row_mean(neg_terms, valid)
        return pos_term + neg_term  # shape: (B,)

    def extra_repr(self) -> str:
        return (
            f"similarity={self.similarity!r}, margin={self.margin}, "
            f"negative_weight={self.negative_weight}, hard_negatives={self.hard_negatives}"
        )
