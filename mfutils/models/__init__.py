"""Explicit-rating models (``fit`` / ``predict`` / ``recommend``) and implicit-feedback ranking
models (``fit`` / ``score_items`` / ``recommend``)."""

from mfutils.models import registry
from mfutils.models.base import CheckpointError, ExplicitModel, Model
from mfutils.models.baseline import BaselineEstimates
from mfutils.models.bayesian import BayesianFM, BayesianMF
from mfutils.models.deepfm import DeepFM
from mfutils.models.fm import FactorizationMachine
from mfutils.models.ials import ImplicitALS
from mfutils.models.integrated import IntegratedModel
from mfutils.models.mf import BiasedMF
from mfutils.models.neighborhood import GlobalNeighborhood, ItemKNN, shrunk_pearson
from mfutils.models.nnmf import NNMF
from mfutils.models.ranking import EASE, MostPopular, RankingModel
from mfutils.models.svdpp import AsymmetricSVD, SVDpp
from mfutils.models.timesvdpp import TimeSVDpp
from mfutils.models.two_tower import TwoTower

__all__ = [
    "EASE",
    "NNMF",
    "AsymmetricSVD",
    "BaselineEstimates",
    "BayesianFM",
    "BayesianMF",
    "BiasedMF",
    "CheckpointError",
    "DeepFM",
    "ExplicitModel",
    "FactorizationMachine",
    "GlobalNeighborhood",
    "ImplicitALS",
    "IntegratedModel",
    "ItemKNN",
    "MostPopular",
    "Model",
    "RankingModel",
    "SVDpp",
    "TimeSVDpp",
    "TwoTower",
    "registry",
    "shrunk_pearson",
]
