"""MovieLens loading, the shared data container, splits, implicit views and synthetic data."""

from mfutils.data.container import Ratings, UserItemCSR

__all__ = ["Ratings", "UserItemCSR"]
