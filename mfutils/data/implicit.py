"""Implicit-feedback views: which items a user interacted with, not how they rated them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from mfutils.data.container import Ratings, UserItemCSR

__all__ = ["to_implicit", "user_item_csr"]


def to_implicit(data: Ratings, *, threshold: float | None = None) -> Ratings:
    """Binarise explicit ratings: keep those ``>= threshold`` and set them to 1.0.

    Parameters
    ----------
    data : Ratings
        Explicit ratings.
    threshold : float, optional
        Lowest rating counted as a positive interaction; ``None`` keeps every rating.

    Returns
    -------
    Ratings
        The kept interactions with rating 1.0 and ``rating_scale`` ``(0.0, 1.0)``; id spaces
        and side tables are those of ``data``.
    """
    kept = data if threshold is None else data.subset(data.rating >= threshold)
    return replace(kept.with_ratings(np.ones(len(kept))), rating_scale=(0.0, 1.0))


def user_item_csr(data: Ratings, *, device: torch.device | str | None = None) -> UserItemCSR:
    """Each user's items (and ratings) as a :class:`UserItemCSR` on ``device``."""
    return data.csr(device)
