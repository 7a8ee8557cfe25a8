"""Serving a trained model: versioned artifacts, a recommender by raw id, online updates, and
a FastAPI service (:mod:`mfutils.serving.service`, needs the ``serve`` extra).

    artifact = pipeline.train_artifact("BiasedMF-SGD", load_movielens("ml-100k"), split="u1")
    artifact.save("artifacts/mf")                    # or: mfutils train BiasedMF-SGD --out ...
    rec = Recommender("artifacts/mf")                # what `mfutils serve artifacts/mf` serves
    rec.recommend([1], k=10)[0]                      # raw MovieLens ids in and out
"""

from mfutils.serving import pipeline
from mfutils.serving.artifact import FORMAT_VERSION, Artifact, ArtifactError
from mfutils.serving.online import UnsupportedError
from mfutils.serving.recommender import GrowthLimitError, Ranking, Recommender, UnknownIdError

__all__ = [
    "FORMAT_VERSION",
    "Artifact",
    "ArtifactError",
    "GrowthLimitError",
    "Ranking",
    "Recommender",
    "UnknownIdError",
    "UnsupportedError",
    "pipeline",
]
