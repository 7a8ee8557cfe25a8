r"""What every implicit-feedback loss shares: the interface, input checks, similarities, the
logit pipeline and the weighted mean over positives.

"Reference §N" points to ``shared/reference/implicit-losses-and-embeddings.md``.

Notation (reference §0): a batch holds :math:`B` positive pairs :math:`(u_b, i_b)` with user
embeddings :math:`P\in\mathbb R^{B\times d}` and positive item embeddings
:math:`Q^+\in\mathbb R^{B\times d}`. Negatives are either a candidate set shared by all rows,
:math:`Q^-\in\mathbb R^{C\times d}` (in-batch or mixed sampling; logits :math:`B\times C`), or
per-row negatives :math:`Q^-\in\mathbb R^{B\times N\times d}` (logits :math:`B\times N`).

The logit pipeline follows TensorFlow Recommenders' retrieval task: similarity
:math:`\to /\tau \to -\log q` (logQ correction, Yi et al. 2019) :math:`\to` accidental-hit
mask :math:`\to` hard-negative mining (top-k of the remaining negatives) :math:`\to` loss.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from mfutils.sampling import accidental_hit_mask, hard_negative_mining

SIMILARITIES = ("dot", "cosine")
_NORMALIZE_EPS = 1e-12  # F.normalize's default eps


class ImplicitLoss(nn.Module):
    r"""Base of every implicit-feedback loss: one keyword-only call signature.

    ``loss(user_emb, pos_emb, neg_emb=None, *, neg_items=None, pos_items=None, neg_mask=None,
    pos_logq=None, neg_logq=None, sample_weight=None, user_idx=None, item_idx=None)`` returns
    a scalar: the (weighted) mean of the per-positive losses.

    Parameters of ``forward``
    -------------------------
    user_emb : torch.Tensor, shape (B, d)
    pos_emb : torch.Tensor, shape (B, d)
        Embeddings of the positive items.
    neg_emb : torch.Tensor, shape (C, d) or (B, N, d), optional
        Shared candidates (logits (B, C)) or per-row negatives (logits (B, N)). Required when
        :attr:`needs_negatives`. One negative per row is shaped ``(B, 1, d)``: a ``(B, d)``
        tensor is read as ``B`` candidates shared by every row.
    neg_items : torch.LongTensor, shape (C,) or (B, N), optional
        Ids of the negatives. With ``pos_items`` the loss masks accidental hits itself
        (see :func:`mfutils.sampling.accidental_hit_mask`: a negative equal to the row's
        positive, and with ``user_idx`` also one equal to another positive of the same user in
        the batch), in addition to ``neg_mask``.
    pos_items : torch.LongTensor, shape (B,), optional
        Ids of the positives (``item_idx`` is accepted as the same thing).
    neg_mask : torch.BoolTensor, logits' shape, optional
        True = not a legal negative; such negatives are left out.
    pos_logq, neg_logq : torch.Tensor, shapes (B,) and (C,) or (B, N), optional
        Log sampling probabilities, subtracted from the logits (logQ correction, training
        only). Only losses with :attr:`supports_logq` accept them.
    sample_weight : torch.Tensor, shape (B,), optional
        Weight of each positive; the loss is :math:`\sum_b w_b\ell_b/\sum_b w_b`.
    user_idx, item_idx : torch.LongTensor, shape (B,), optional
        Ids of the users and positive items (MAWU's per-id margins need them).

    Attributes
    ----------
    needs_negatives : bool
        False for the alignment/uniformity losses (DirectAU, MAWU), which use no negatives.
    supports_logq : bool
        True for the softmax-family losses, whose logits the logQ correction is defined for.
    needs_ids : bool
        True when ``user_idx`` and ``item_idx`` are required (MAWU).
    """

    needs_negatives: bool = True
    supports_logq: bool = False
    needs_ids: bool = False

    def _check(
        self,
        user_emb: torch.Tensor,
        pos_emb: torch.Tensor,
        neg_emb: torch.Tensor | None,
        *,
        neg_items: torch.Tensor | None = None,
        pos_items: torch.Tensor | None = None,
        neg_mask: torch.Tensor | None = None,
        pos_logq: torch.Tensor | None = None,
        neg_logq: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
        user_idx: torch.Tensor | None = None,
        item_idx: torch.Tensor | None = None,
    ) -> None:
        """Raise a ``ValueError`` naming the first argument of the wrong shape or kind."""
        name = type(self).__name__
        for arg, value in (("user_emb", user_emb), ("pos_emb", pos_emb)):
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise ValueError(f"{name}: {arg} must be a floating-point tensor")
        if user_emb.dim() != 2:
            raise ValueError(f"{name}: user_emb must be (B, d); got shape {tuple(user_emb.shape)}")
        batch, dim = user_emb.shape
        if pos_emb.shape != user_emb.shape:
            raise ValueError(
                f"{name}: pos_emb must have user_emb's shape (B, d) = "
                f"{(batch, dim)}; got {tuple(pos_emb.shape)}"
            )
        if not self.needs_negatives:
            given = [
                arg
                for arg, value in (
                    ("neg_emb", neg_emb),
                    ("neg_items", neg_items),
                    ("neg_mask", neg_mask),
                    ("neg_logq", neg_logq),
                    ("pos_logq", pos_logq),
                )
                if value is not None
            ]
            if given:
                raise ValueError(
                    f"{name} uses no negatives (needs_negatives=False); "
                    f"do not pass {', '.join(given)}"
                )
        else:
            if neg_emb is None:
                raise ValueError(f"{name} needs negatives: pass neg_emb, shape (C, d) or (B, N, d)")
            if neg_emb.dim() == 2 and neg_emb.shape[1] == dim:
                logits_shape = (batch, neg_emb.shape[0])
                logq_shape: tuple[int, ...] = (neg_emb.shape[0],)
            elif neg_emb.dim() == 3 and neg_emb.shape[0] == batch and neg_emb.shape[2] == dim:
                logits_shape = logq_shape = (batch, neg_emb.shape[1])
            else:
                raise ValueError(
                    f"{name}: neg_emb must be (C, d) or (B, N, d) with B={batch}, "
                    f"d={dim}; got shape {tuple(neg_emb.shape)}"
                )
            if logits_shape[1] == 0:
                raise ValueError(f"{name}: neg_emb holds no negatives")
            if neg_mask is not None and (
                neg_mask.dtype != torch.bool or tuple(neg_mask.shape) != logits_shape
            ):
                raise ValueError(
                    f"{name}: neg_mask must be a bool tensor of the logits' shape "
                    f"{logits_shape}; got {neg_mask.dtype} {tuple(neg_mask.shape)}"
                )
            if neg_items is not None and tuple(neg_items.shape) != logq_shape:
                raise ValueError(
                    f"{name}: neg_items must have shape {logq_shape}; got {tuple(neg_items.shape)}"
                )
            if neg_items is not None and pos_items is None and item_idx is None:
                raise ValueError(
                    f"{name}: neg_items is used to mask accidental hits and needs "
                    "the positives' ids too (pos_items or item_idx)"
                )
            if (pos_logq is not None or neg_logq is not None) and not self.supports_logq:
                raise ValueError(
                    f"{name} does not take pos_logq/neg_logq: the logQ correction "
                    "is defined for softmax-family losses (ssm, softmax, infonce+, "
                    "mine+)"
                )
            if neg_logq is not None and tuple(neg_logq.shape) != logq_shape:
                raise ValueError(
                    f"{name}: neg_logq must have shape {logq_shape}; got {tuple(neg_logq.shape)}"
                )
        for arg, value in (
            ("pos_items", pos_items),
            ("pos_logq", pos_logq),
            ("sample_weight", sample_weight),
            ("user_idx", user_idx),
            ("item_idx", item_idx),
        ):
            if value is not None and tuple(value.shape) != (batch,):
                raise ValueError(
                    f"{name}: {arg} must have shape (B,) = ({batch},); got {tuple(value.shape)}"
                )


def check_similarity(similarity: str) -> str:
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity={similarity!r}; choose one of {SIMILARITIES}")
    return similarity


def check_positive(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value > 0 and math.isfinite(value))
    ):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return float(value)


def check_hard_negatives(k: int | None) -> int | None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"hard_negatives must be None (off) or a positive int; got {k!r}")
    return k


def pair_similarity(user_emb: torch.Tensor, item_emb: torch.Tensor, kind: str) -> torch.Tensor:
    r"""Row-wise :math:`s(u_b, i_b)`, shape (B,): dot product or cosine (``F.normalize``)."""
    if kind == "cosine":
        user_emb, item_emb = F.normalize(user_emb, dim=-1), F.normalize(item_emb, dim=-1)
    return (user_emb * item_emb).sum(-1)  # shape: (B,)


def candidate_similarity(user_emb: torch.Tensor, neg_emb: torch.Tensor, kind: str) -> torch.Tensor:
    """Similarity of every row with its negatives: (B, C) for (C, d) candidates, (B, N) for
    (B, N, d) per-row negatives.

    Cosine divides the dot products by the negatives' norms instead of normalising the
    (B, N, d) tensor: the same value as ``F.normalize`` (norm clamped at its eps), with two
    passes over that large tensor in the backward instead of five.
    """
    if kind == "cosine":
        user_emb = F.normalize(user_emb, dim=-1)
    if neg_emb.dim() == 2:
        scores = user_emb @ neg_emb.T  # shape: (B, C)
    else:
        scores = torch.einsum("bnd,bd->bn", neg_emb, user_emb)  # shape: (B, N)
    if kind == "cosine":
        norms = torch.linalg.vector_norm(neg_emb, dim=-1).clamp_min(_NORMALIZE_EPS)
        scores = scores / norms  # (C,) broadcasts over rows; (B, N) matches
    return scores


def combined_mask(
    neg_mask: torch.Tensor | None,
    neg_items: torch.Tensor | None,
    pos_items: torch.Tensor | None,
    user_idx: torch.Tensor | None,
) -> torch.Tensor | None:
    """``neg_mask`` OR the accidental hits found from the ids (when both id sets are given)."""
    if neg_items is None or pos_items is None:
        return neg_mask
    hits = accidental_hit_mask(pos_items, neg_items, users=user_idx)  # shape: logits
    return hits if neg_mask is None else hits | neg_mask


def prepare_logits(
    user_emb: torch.Tensor,
    pos_emb: torch.Tensor,
    neg_emb: torch.Tensor,
    *,
    similarity: str = "dot",
    temperature: float = 1.0,
    pos_logq: torch.Tensor | None = None,
    neg_logq: torch.Tensor | None = None,
    neg_mask: torch.Tensor | None = None,
    hard_negatives: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Positive and negative logits after the TFRS pipeline.

    similarity :math:`\to /\tau\to -\log q\to` mask (masked logits set to the dtype's minimum,
    so their softmax weight is 0 and no gradient reaches them) :math:`\to` top-k hard
    negatives.

    Returns
    -------
    pos_logits : torch.Tensor, shape (B,)
    neg_logits : torch.Tensor, shape (B, K)
        K = C, N, or ``min(hard_negatives, ...)``.
    neg_valid : torch.BoolTensor, shape (B, K)
        True for legal negatives.
    """
    pos = pair_similarity(user_emb, pos_emb, similarity) / temperature  # shape: (B,)
    neg = candidate_similarity(user_emb, neg_emb, similarity) / temperature  # shape: (B, K)
    if pos_logq is not None:
        pos = pos - pos_logq
    if neg_logq is not None:
        neg = neg - neg_logq  # (C,) broadcasts over rows; (B, N) matches
    if neg_mask is not None:
        neg = neg.masked_fill(neg_mask, torch.finfo(neg.dtype).min)
    if hard_negatives is not None:
        neg, neg_mask = hard_negative_mining(neg, neg_mask, hard_negatives)
    valid = torch.ones_like(neg, dtype=torch.bool) if neg_mask is None else ~neg_mask
    return pos, neg, valid


def weighted_mean(values: torch.Tensor, sample_weight: torch.Tensor | None) -> torch.Tensor:
    r"""Mean of per-positive losses, or :math:`\sum_b w_b\ell_b/\sum_b w_b` with weights."""
    if sample_weight is None:
        return values.mean()
    weight = sample_weight.to(values.dtype)
    return (weight * values).sum() / weight.sum().clamp_min(torch.finfo(values.dtype).tiny)


def masked_row_mean(terms: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the legal negatives of each row (0 for a row without any), shape (B,)."""
    total = torch.where(valid, terms, torch.zeros_like(terms)).sum(1)  # shape: (B,)
    return total / valid.sum(1).clamp_min(1).to(terms.dtype)


class ScoredLoss(ImplicitLoss):
    """Losses on a positive logit and negative logits: check, score, reduce.

    Subclasses set :attr:`similarity`, :attr:`temperature`, :attr:`hard_negatives` and
    implement ``row_loss(pos, neg, valid) -> (B,)``.
    """

    similarity: str
    temperature: float
    hard_negatives: int | None

    def row_loss(self, pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Loss of each positive, shape (B,), from logits (B,), (B, K) and validity (B, K)."""
        raise NotImplementedError(f"{type(self).__name__} must implement row_loss")

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
        pos_items = item_idx if pos_items is None else pos_items
        mask = combined_mask(neg_mask, neg_items, pos_items, user_idx)
        pos, neg, valid = prepare_logits(
            user_emb,
            pos_emb,
            neg_emb,
            similarity=self.similarity,
            temperature=self.temperature,
            pos_logq=pos_logq,
            neg_logq=neg_logq,
            neg_mask=mask,
            hard_negatives=self.hard_negatives,
        )
        return weighted_mean(self.row_loss(pos, neg, valid), sample_weight)

    def extra_repr(self) -> str:
        return (
            f"similarity={self.similarity!r}, temperature={self.temperature}, "
            f"hard_negatives={self.hard_negatives}"
        )
