"""Starting points and small validation grids of every loss, for the two-tower MF model.

Each entry of :data:`LOSS_GRIDS` is a :class:`LossGrid`: the :class:`~mfutils.models.TwoTower`
options shared by every grid point (the loss, its sampler and its fixed options) and the
few option sets tried on validation. The fixed values come from the papers' recommended
settings (``shared/reference/implicit-losses-and-embeddings.md``, table "Summary of
recommended settings") and from a first look at ML-100K's validation part (notebook 12);
the grids vary the one or two options each paper says to tune.

Samplers: the pairwise losses (BPR, hinge) use one exact uniform negative per positive, as in
their papers; the candidate-set losses (CCL, SSM, softmax, InfoNCE+, MINE+) share 1024
uniform catalogue items per batch (``negatives="popularity"`` with exponent 0), close to the
large negative counts of CCL and SSM at one matrix product per batch (SSM also tries 64
exact uniform negatives per row, its paper's sampler); DirectAU and MAWU use
no negatives. On ML-100K the alignment/uniformity losses need a larger weight decay than their
papers' sparse data sets (1e-3 against 1e-6..1e-4): without it their validation NDCG@20 stays
below the most-popular list's (notebook 12).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LOSS_GRIDS", "LossGrid"]

_SHARED_UNIFORM = {"negatives": "popularity", "popularity_alpha": 0.0, "n_negatives": 1024}


@dataclass(frozen=True)
class LossGrid:
    """Fixed two-tower options of one loss and the option sets tried on validation."""

    base: dict[str, Any]
    grid: list[dict[str, Any]] = field(default_factory=lambda: [{}])


LOSS_GRIDS: dict[str, LossGrid] = {
    # Rendle et al. 2009: one uniform negative, L2 on the rows a batch uses
    "bpr": LossGrid(
        {"loss": "bpr", "negatives": "uniform", "lr": 3e-3}, [{"reg": 1e-3}, {"reg": 1e-2}]
    ),
    "hinge": LossGrid(
        {"loss": "hinge", "negatives": "uniform", "lr": 3e-3}, [{"reg": 1e-3}, {"reg": 1e-2}]
    ),
    # Mao et al. 2021: cosine, margin and negative weight (paper: 0.9 and 150 on sparse data)
    "ccl": LossGrid(
        {"loss": "ccl", **_SHARED_UNIFORM, "lr": 3e-3},
        [
            {"loss_options": {"margin": 0.5, "negative_weight": 10.0}},
            {"loss_options": {"margin": 0.3, "negative_weight": 50.0}},
        ],
    ),
    # Wu et al.: cosine over a temperature, tau ~ 0.05-0.2
    # (0.2 beat 0.1 and 0.3 on ML-100K's validation part); the grid: which of the two samplers.
    # Also tried on validation, none clear of the seed noise (about +-0.002 NDCG@20): d=128
    # or 256 with tau 0.15-0.25, lr 1e-3, batch 256 or 2048, 4096 candidates, popularity
    # candidates with logQ, per-user row weights, user-vector dropout, a SimpleX history tower.
    "ssm": LossGrid(
        {"loss": "ssm", "loss_options": {"temperature": 0.2}, "lr": 3e-3},
        [_SHARED_UNIFORM, {"negatives": "uniform", "n_negatives": 64}],
    ),
    # the plain (dot-product) sampled softmax of Yi et al. / Covington et al.
    # per-row L2 (frequent rows penalised more) or a global weight decay
    "softmax": LossGrid(
        {"loss": "softmax", **_SHARED_UNIFORM, "lr": 3e-3}, [{"reg": 1e-2}, {"weight_decay": 1e-4}]
    ),
    # Li, Jin & Ren 2023: lambda ~ 1 weighs the log-partition term
    "infonce+": LossGrid(
        {"loss": "infonce+", **_SHARED_UNIFORM, "lr": 3e-3},
        [{"loss_options": {"lam": 0.9}}, {"loss_options": {"lam": 1.1}}],
    ),
    "mine+": LossGrid(
        {"loss": "mine+", **_SHARED_UNIFORM, "lr": 3e-3},
        [{"loss_options": {"lam": 0.9}}, {"loss_options": {"lam": 1.1}}],
    ),
    # Wang et al. 2022: gamma weighs uniformity (searched over 0.01..10 in the paper); Adam's
    # weight decay as in the official code (1e-6..1e-4 there): the loss sees only directions,
    # so the decay is what ties an item's norm (its raw-dot score) to how often it is trained
    "directau": LossGrid(
        {"loss": "directau", "lr": 1e-3, "weight_decay": 1e-3},
        [{"loss_options": {"gamma": 0.5}}, {"loss_options": {"gamma": 1.0}}],
    ),
    # Park et al. 2023: separate uniformity weights of users and items, decay as DirectAU
    "mawu": LossGrid(
        {"loss": "mawu", "lr": 1e-3, "weight_decay": 1e-3},
        [
            {"loss_options": {"gamma1": 1.0, "gamma2": 0.1}},
            {"loss_options": {"gamma1": 0.8, "gamma2": 0.6}},
        ],
    ),
}
