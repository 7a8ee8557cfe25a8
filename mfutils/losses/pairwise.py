r"""Pairwise losses: BPR and the pairwise hinge.

Both compare the positive's score with each negative's, :math:`\hat x_{uij}=\hat x_{ui}-\hat
x_{uj}`, and average over the legal negatives of a row (masked negatives are left out and the
mean is over the count of the remaining ones; a row without any contributes 0).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mfutils.losses._common import (
    ScoredLoss,
    check_hard_negatives,
    check_positive,
    check_similarity,
    masked_row_mean,
)


class BPRLoss(ScoredLoss):
    r"""Bayesian Personalized Ranking (Rendle et al., UAI 2009: BPR-Opt; reference §1).

    BPR-Opt maximises :math:`\sum_{(u,i,j)}\ln\sigma(\hat x_{uij})`; per positive this loss is

    .. math:: \ell_{ui} = \frac1{|\mathcal N|}\sum_{j\in\mathcal N}
              \operatorname{softplus}\!\big(-(\hat x_{ui}-\hat x_{uj})/\tau\big),

    the negative log-likelihood :math:`-\ln\sigma` (not Spotlight's :math:`1-\sigma`, whose
    gradient vanishes for badly ranked pairs). The :math:`\lambda_\Theta\|\Theta\|^2` term
    belongs to the model (weight decay or a per-row penalty). Typical use: one uniform
    negative per positive, outside the user's items (:class:`~mfutils.sampling.UniformNegatives`).

    Parameters
    ----------
    similarity : {"dot", "cosine"}, default "dot"
        :math:`\hat x_{ui}`: the MF dot product of the paper, or cosine.
    temperature : float, default 1.0
        :math:`\tau` scales the score difference (useful with cosine scores in [-1, 1]).
    hard_negatives : int, optional
        Keep only the ``k`` highest-scoring legal negatives of each row.
    """

    def __init__(
        self,
        *,
        similarity: str = "dot",
        temperature: float = 1.0,
        hard_negatives: int | None = None,
    ) -> None:
        super().__init__()
        self.similarity = check_similarity(similarity)
        self.temperature = check_positive("temperature", temperature)
        self.hard_negatives = check_hard_negatives(hard_negatives)

    def row_loss(self, pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        terms = F.softplus(neg - pos[:, None])  # shape: (B, K) = -log sigmoid(pos - neg)
        return masked_row_mean(terms, valid)  # shape: (B,)


class HingeLoss(ScoredLoss):
    r"""Pairwise hinge (margin ranking) loss, as in Spotlight and similar codebases.

    .. math:: \ell_{ui} = \frac1{|\mathcal N|}\sum_{j\in\mathcal N}
              \max\big(0,\ m-(\hat x_{ui}-\hat x_{uj})\big)

    Parameters
    ----------
    similarity : {"dot", "cosine"}, default "dot"
    margin : float, default 1.0
        :math:`m`, on dot-product scores (reference §1).
    hard_negatives : int, optional
        Keep only the ``k`` highest-scoring legal negatives of each row.
    """

    def __init__(
        self, *, similarity: str = "dot", margin: float = 1.0, hard_negatives: int | None = None
    ) -> None:
        super().__init__()
        self.similarity = check_similarity(similarity)
        self.temperature = 1.0
        self.margin = check_positive("margin", margin)
        self.hard_negatives = check_hard_negatives(hard_negatives)

    def row_loss(self, pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        terms = F.relu(self.margin - pos[:, None] + neg)  # shape: (B, K)
        return masked_row_mean(terms, valid)  # shape: (B,)

    def extra_repr(self) -> str:
        return (
            f"similarity={self.similarity!r}, margin={self.margin}, "
            f"hard_negatives={self.hard_negatives}"
        )
