r"""Softmax-family losses: sampled softmax (SSM), plain in-batch / full softmax, InfoNCE+ and
MINE+. They take the logQ correction (``pos_logq`` / ``neg_logq``)."""

from __future__ import annotations

import math

import torch

from mfutils.losses._common import (
    ScoredLoss,
    check_hard_negatives,
    check_positive,
    check_similarity,
)


class SampledSoftmaxLoss(ScoredLoss):
    r"""Sampled softmax loss (SSM; Wu et al., *On the Effectiveness of Sampled Softmax Loss for
    Item Recommendation*, TOIS 2024; reference §3).

    .. math:: \ell_{ui} = -\log\frac{e^{s(u,i)/\tau}}{e^{s(u,i)/\tau}
              + \sum_{j\in\mathcal S_u}e^{s(u,j)/\tau}},

    cross-entropy over ``[positive, negatives]`` with target 0 (the positive stays in the
    denominator: InfoNCE on user-item pairs). With in-batch or popularity negatives pass the
    log sampling probabilities (logQ correction, Yi et al. 2019; reference §7), subtracted from the
    logits after the temperature, as TFRS does. Cosine similarity cannot learn embedding
    magnitudes (paper's finding 4); tune :math:`\tau` on validation.

    Parameters
    ----------
    similarity : {"cosine", "dot"}, default "cosine"
    temperature : float, default 0.1
        :math:`\tau` (≈0.05-0.2 is typical for cosine logits; unverified in the reference).
    hard_negatives : int, optional
        Keep only the ``k`` highest logits among each row's legal negatives.
    """

    supports_logq = True

    def __init__(
        self,
        *,
        similarity: str = "cosine",
        temperature: float = 0.1,
        hard_negatives: int | None = None,
    ) -> None:
        super().__init__()
        self.similarity = check_similarity(similarity)
        self.temperature = check_positive("temperature", temperature)
        self.hard_negatives = check_hard_negatives(hard_negatives)

    def row_loss(self, pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        logits = torch.cat([pos[:, None], neg], dim=1)  # shape: (B, 1 + K)
        return torch.logsumexp(logits, dim=1) - pos  # shape: (B,)


class SoftmaxLoss(SampledSoftmaxLoss):
    r"""Softmax over the positive and in-batch (or all) items with dot-product logits.

    The two-tower in-batch softmax of Yi et al. 2019 (reference §7): pass the batch's positives as
    shared candidates (:func:`~mfutils.sampling.in_batch_negatives`) with ``neg_items`` and
    ``pos_items`` so the row's own column is masked, and their ``log_q`` for the correction; or
    every item for a full softmax. Same as :class:`SampledSoftmaxLoss` with dot similarity and
    :math:`\tau=1` by default.
    """

    def __init__(
        self,
        *,
        similarity: str = "dot",
        temperature: float = 1.0,
        hard_negatives: int | None = None,
    ) -> None:
        super().__init__(
            similarity=similarity, temperature=temperature, hard_negatives=hard_negatives
        )


class InfoNCEPlusLoss(ScoredLoss):
    r"""InfoNCE+ (Li, Jin & Ren, *Revisiting Recommendation Loss Functions through Contrastive
    Learning*, 2023): InfoNCE with balance coefficients.

    .. math:: \ell_{ui} = -\frac{s(u,i)}{\tau} + \lambda\log\Big(\epsilon\,e^{s(u,i)/\tau}
              + \sum_{j\in\mathcal N_u}e^{s(u,j)/\tau}\Big).

    :math:`\lambda=\epsilon=1` is InfoNCE (= :class:`SampledSoftmaxLoss`); :math:`\epsilon=0`
    removes the positive from the denominator (= :class:`MINEPlusLoss`). **The formula is the
    reference's reconstruction from the abstract (its §6), not checked against the paper**;
    the paper's sweep reportedly favours :math:`\epsilon\to0` with :math:`\lambda` near 1, so
    tune both on validation. A row whose negatives are all masked contributes only
    :math:`-s/\tau` when :math:`\epsilon=0` (its log-partition term is empty).

    Parameters
    ----------
    similarity : {"cosine", "dot"}, default "cosine"
    temperature : float, default 0.1
    lam : float, default 1.0
        :math:`\lambda`, weight of the log-partition term.
    epsilon : float, default 1.0
        :math:`\epsilon\ge0`, the positive's share of the denominator.
    hard_negatives : int, optional
    """

    supports_logq = True

    def __init__(
        self,
        *,
        similarity: str = "cosine",
        temperature: float = 0.1,
        lam: float = 1.0,
        epsilon: float = 1.0,
        hard_negatives: int | None = None,
    ) -> None:
        super().__init__()
        self.similarity = check_similarity(similarity)
        self.temperature = check_positive("temperature", temperature)
        self.lam = check_positive("lam", lam)
        if (
            isinstance(epsilon, bool)
            or not isinstance(epsilon, int | float)
            or not (epsilon >= 0 and math.isfinite(epsilon))
        ):
            raise ValueError(f"epsilon must be a finite number >= 0; got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.hard_negatives = check_hard_negatives(hard_negatives)

    def row_loss(self, pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self.epsilon > 0:
            shifted = (pos + math.log(self.epsilon))[:, None]  # shape: (B, 1)
            log_partition = torch.logsumexp(torch.cat([shifted, neg], dim=1), dim=1)
        else:
            # masked logits hold the dtype's minimum and add nothing; an empty row gives 0
            log_partition = torch.logsumexp(neg, dim=1)  # shape: (B,)
            log_partition = torch.where(
                valid.any(1), log_partition, torch.zeros_like(log_partition)
            )
        return self.lam * log_partition - pos  # shape: (B,)

    def extra_repr(self) -> str:
        return (
            f"similarity={self.similarity!r}, temperature={self.temperature}, "
            f"lam={self.lam}, epsilon={self.epsilon}, hard_negatives={self.hard_negatives}"
        )


class MINEPlusLoss(InfoNCEPlusLoss):
    r"""MINE+ (Li, Jin & Ren 2023), the decoupled contrastive loss.

    .. math:: \ell_{ui} = -\frac{s(u,i)}{\tau} + \lambda\log\sum_{j\in\mathcal N_u}
              e^{s(u,j)/\tau}

    A Donsker-Varadhan (MINE, Belghazi et al. 2018) bound with a cosine/temperature critic and
    the positive removed from the denominator (as in DCL). The positive gets a constant
    gradient :math:`-1/\tau`; negative :math:`j` gets :math:`\lambda\,\mathrm{softmax}_j/\tau`,
    which emphasises hard negatives. Reconstruction from the reference's §6, not checked
    against the paper (recommended start: :math:`\tau\approx0.1`,
    :math:`\lambda\in\{0.9, 1, 1.1\}`).

    Parameters
    ----------
    similarity : {"cosine", "dot"}, default "cosine"
    temperature : float, default 0.1
    lam : float, default 1.0
    hard_negatives : int, optional
    """

    def __init__(
        self,
        *,
        similarity: str = "cosine",
        temperature: float = 0.1,
        lam: float = 1.0,
        hard_negatives: int | None = None,
    ) -> None:
        super().__init__(
            similarity=similarity,
            temperature=temperature,
            lam=lam,
            epsilon=0.0,
            hard_negatives=hard_negatives,
        )

    def extra_repr(self) -> str:
        return (
            f"similarity={self.similarity!r}, temperature={self.temperature}, "
            f"lam={self.lam}, hard_negatives={self.hard_negatives}"
        )
