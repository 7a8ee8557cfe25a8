"""Starting points and search spaces of every loss, for the two-tower MF model (notebook 12).

Each entry of :data:`LOSS_SPACES` is a :class:`LossSpace`: the :class:`~mfutils.models.TwoTower`
options every trial shares (the loss), the paper's recommended setting (``start``, the first
trial of every search) and the options searched (``space``). The study
(:func:`mfutils.experiments.compare_losses`) gives every loss the same budget: the same number
of Optuna trials, drawn by the same seeded sampler, on the same validation part. So that a
gap in the table is the loss's and not its tuning's:

* every loss searches its learning rate (Adam, ``1e-3 .. 1e-2``);
* every softmax-family loss (SSM, softmax, InfoNCE+, MINE+) searches its temperature
  ``tau`` (``0.05 .. 1``; the plain dot-product softmax ``0.1 .. 2``), InfoNCE+ also its
  ``lambda`` and ``epsilon``, MINE+ its ``lambda``;
* every loss that scores negatives chooses among the same samplers (:data:`SAMPLERS`: one or
  64 uniform negatives per row, 1024 uniform catalogue items shared by the batch, the batch's
  other positives with the exact logQ correction);
* the dot-product losses (BPR, hinge, softmax) search the per-row L2 ``reg``; the losses that
  see only directions (DirectAU, MAWU) search Adam's ``weight_decay`` (it is what ties an
  item's norm, its raw-dot score, to how often it is trained) and the batch size (their
  uniformity term is computed over the batch).

The starting points come from the papers' recommended settings
(``shared/reference/implicit-losses-and-embeddings.md``, "Summary of recommended settings")
and from the earlier validation grids of ML-100K (notebook 12). A search space is written as
in :mod:`mfutils.tuning`: ``("log", low, high)``, ``("float", low, high)`` or ``("choice",
value, ...)``; ``loss_options.NAME`` is an option of the loss, ``sampler`` a key of
:data:`SAMPLERS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["LOSS_SPACES", "SAMPLERS", "LossSpace", "expand"]

# The candidate sets offered to every loss that scores negatives (TwoTower options).
SAMPLERS: dict[str, dict[str, Any]] = {
    "uniform-1": {"negatives": "uniform", "n_negatives": 1},
    "uniform-64": {"negatives": "uniform", "n_negatives": 64},
    "shared-1024": {"negatives": "popularity", "popularity_alpha": 0.0, "n_negatives": 1024},
    "in-batch-logq": {"negatives": "in-batch", "logq": "exact"},
}
_SAMPLER = ("choice", *SAMPLERS)
_LR = ("log", 1e-3, 1e-2)
_TAU = ("log", 0.05, 1.0)


@dataclass(frozen=True)
class LossSpace:
    """The fixed options of one loss, its paper's starting point and its search space."""

    base: dict[str, Any]
    start: dict[str, Any]
    space: dict[str, tuple]


def expand(options: dict[str, Any]) -> dict[str, Any]:
    """Trial options as :class:`~mfutils.models.TwoTower` takes them: ``sampler`` replaced by
    its :data:`SAMPLERS` entry, ``loss_options.NAME`` gathered into ``loss_options``."""
    out: dict[str, Any] = {}
    loss_options: dict[str, Any] = {}
    for key, value in options.items():
        if key == "sampler":
            out.update(SAMPLERS[value])
        elif key.startswith("loss_options."):
            loss_options[key.removeprefix("loss_options.")] = value
        else:
            out[key] = value
    if loss_options:
        out["loss_options"] = {**out.get("loss_options", {}), **loss_options}
    return out


LOSS_SPACES: dict[str, LossSpace] = {
    # Rendle et al. 2009: one uniform negative, L2 on the rows a batch uses
    "bpr": LossSpace(
        {"loss": "bpr"},
        {"sampler": "uniform-1", "lr": 3e-3, "reg": 1e-2},
        {"sampler": _SAMPLER, "lr": _LR, "reg": ("log", 1e-4, 1e-1)},
    ),
    "hinge": LossSpace(
        {"loss": "hinge"},
        {"sampler": "uniform-1", "lr": 3e-3, "reg": 1e-2},
        {"sampler": _SAMPLER, "lr": _LR, "reg": ("log", 1e-4, 1e-1)},
    ),
    # Mao et al. 2021: cosine, margin and negative weight (paper: 0.9 and 150 on sparse data)
    "ccl": LossSpace(
        {"loss": "ccl"},
        {
            "sampler": "shared-1024",
            "lr": 3e-3,
            "loss_options.margin": 0.5,
            "loss_options.negative_weight": 10.0,
        },
        {
            "sampler": _SAMPLER,
            "lr": _LR,
            "loss_options.margin": ("float", 0.1, 0.9),
            "loss_options.negative_weight": ("log", 1.0, 300.0),
        },
    ),
    # Wu et al.: cosine over a temperature, tau ~ 0.05-0.2 (0.2 best on ML-100K's grid)
    "ssm": LossSpace(
        {"loss": "ssm"},
        {"sampler": "uniform-64", "lr": 3e-3, "loss_options.temperature": 0.2},
        {"sampler": _SAMPLER, "lr": _LR, "loss_options.temperature": _TAU},
    ),
    # the plain (dot-product) sampled softmax of Yi et al. / Covington et al.: tau = 1 is
    # the textbook loss; per-row L2 (frequent rows penalised more)
    "softmax": LossSpace(
        {"loss": "softmax"},
        {"sampler": "shared-1024", "lr": 3e-3, "reg": 1e-2, "loss_options.temperature": 1.0},
        {
            "sampler": _SAMPLER,
            "lr": _LR,
            "reg": ("log", 1e-4, 1e-1),
            "loss_options.temperature": ("log", 0.1, 2.0),
        },
    ),
    # Li, Jin & Ren 2023: lambda ~ 1 weighs the log-partition term, epsilon the positive's
    # share of it (lambda = epsilon = 1 is SSM)
    "infonce+": LossSpace(
        {"loss": "infonce+"},
        {
            "sampler": "shared-1024",
            "lr": 3e-3,
            "loss_options.temperature": 0.1,
            "loss_options.lam": 0.9,
            "loss_options.epsilon": 1.0,
        },
        {
            "sampler": _SAMPLER,
            "lr": _LR,
            "loss_options.temperature": _TAU,
            "loss_options.lam": ("float", 0.5, 1.5),
            "loss_options.epsilon": ("float", 0.0, 1.0),
        },
    ),
    "mine+": LossSpace(
        {"loss": "mine+"},
        {
            "sampler": "shared-1024",
            "lr": 3e-3,
            "loss_options.temperature": 0.1,
            "loss_options.lam": 0.9,
        },
        {
            "sampler": _SAMPLER,
            "lr": _LR,
            "loss_options.temperature": _TAU,
            "loss_options.lam": ("float", 0.5, 1.5),
        },
    ),
    # Wang et al. 2022: gamma weighs uniformity (searched over 0.01..10 in the paper), Adam's
    # weight decay as in the official code (1e-8..1e-4 there). The start is the MAWU repo's
    # re-tuned DirectAU on Beauty (gamma 0.4, wd 1e-4, batch 256), the best of the papers'
    # settings on ML-100K's validation part (benchmarks/implicit.py --paper-settings)
    "directau": LossSpace(
        {"loss": "directau"},
        {"lr": 1e-3, "weight_decay": 1e-4, "loss_options.gamma": 0.4, "batch_size": 256},
        {
            "lr": _LR,
            "weight_decay": ("log", 1e-6, 1e-2),
            "loss_options.gamma": ("log", 0.1, 10.0),
            "batch_size": ("choice", 256, 1024, 2048),
        },
    ),
    # Park et al. 2023: separate uniformity weights of users and items, decay as DirectAU
    "mawu": LossSpace(
        {"loss": "mawu"},
        {
            "lr": 1e-3,
            "weight_decay": 1e-3,
            "loss_options.gamma1": 1.0,
            "loss_options.gamma2": 0.1,
            "batch_size": 1024,
        },
        {
            "lr": _LR,
            "weight_decay": ("log", 1e-6, 1e-2),
            "loss_options.gamma1": ("log", 0.1, 5.0),
            "loss_options.gamma2": ("log", 0.05, 5.0),
            "batch_size": ("choice", 256, 1024, 2048),
        },
    ),
}
