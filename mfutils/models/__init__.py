"""Explicit-rating models sharing ``fit`` / ``predict`` / ``recommend``."""

from mfutils.models.base import CheckpointError, ExplicitModel
from mfutils.models.baseline import BaselineEstimates
from mfutils.models.deepfm import DeepFM
from mfutils.models.fm import FactorizationMachine
from mfutils.models.integrated import IntegratedModel
from mfutils.models.mf import BiasedMF
from mfutils.models.neighborhood import GlobalNeighborhood, ItemKNN, shrunk_pearson
from mfutils.models.nnmf import NNMF
from mfutils.models.svdpp import AsymmetricSVD, SVDpp
from mfutils.models.timesvdpp import TimeSVDpp

__all__ = ["AsymmetricSVD", "BaselineEstimates", "BiasedMF", "CheckpointError", "DeepFM",
           "ExplicitModel", "FactorizationMachine", "GlobalNeighborhood", "IntegratedModel",
           "ItemKNN", "NNMF", "SVDpp", "TimeSVDpp", "shrunk_pearson"]
