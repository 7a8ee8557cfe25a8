"""Explicit-rating models sharing ``fit`` / ``predict`` / ``recommend``."""

from mfutils.models.base import CheckpointError, ExplicitModel
from mfutils.models.baseline import BaselineEstimates
from mfutils.models.mf import BiasedMF

__all__ = ["BaselineEstimates", "BiasedMF", "CheckpointError", "ExplicitModel"]
