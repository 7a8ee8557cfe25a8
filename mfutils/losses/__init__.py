"""Implicit-feedback losses with one keyword-only signature (see :class:`ImplicitLoss`).

=============  =====================================  ==========  =========
name           class                                  negatives   logQ
=============  =====================================  ==========  =========
``bpr``        :class:`BPRLoss`                       yes         no
``hinge``      :class:`HingeLoss`                     yes         no
``ccl``        :class:`CCLLoss`                       yes         no
``ssm``        :class:`SampledSoftmaxLoss` (cosine)   yes         yes
``softmax``    :class:`SoftmaxLoss` (dot)             yes         yes
``infonce+``   :class:`InfoNCEPlusLoss`               yes         yes
``mine+``      :class:`MINEPlusLoss`                  yes         yes
``directau``   :class:`DirectAULoss`                  no          --
``mawu``       :class:`MAWULoss` (has parameters)     no          --
=============  =====================================  ==========  =========

``make_loss(name, **options)`` builds one by name; the formulas, defaults and sources are in
each class's docstring and in ``shared/reference/implicit-losses-and-embeddings.md``.
"""

from __future__ import annotations

import inspect

from mfutils.losses._common import (
    SIMILARITIES,
    ImplicitLoss,
    candidate_similarity,
    pair_similarity,
    prepare_logits,
    weighted_mean,
)
from mfutils.losses.alignment import DirectAULoss, MAWULoss, uniformity
from mfutils.losses.ccl import CCLLoss
from mfutils.losses.pairwise import BPRLoss, HingeLoss
from mfutils.losses.softmax import InfoNCEPlusLoss, MINEPlusLoss, SampledSoftmaxLoss, SoftmaxLoss

LOSSES: dict[str, type[ImplicitLoss]] = {
    "bpr": BPRLoss,
    "hinge": HingeLoss,
    "ccl": CCLLoss,
    "ssm": SampledSoftmaxLoss,
    "softmax": SoftmaxLoss,
    "directau": DirectAULoss,
    "mawu": MAWULoss,
    "infonce+": InfoNCEPlusLoss,
    "mine+": MINEPlusLoss,
}


def make_loss(name: str, **options: object) -> ImplicitLoss:
    """The loss called ``name`` (see :data:`LOSSES`) built with keyword ``options``.

    Raises
    ------
    ValueError
        For an unknown name, an option the loss does not take, or a missing required option
        (MAWU's ``n_users`` / ``n_items``); the message lists what is accepted.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    cls = LOSSES[key]
    params = {
        p.name: p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(
            f"make_loss({name!r}): unknown option(s) {unknown}; "
            f"{cls.__name__} takes {sorted(params)}"
        )
    missing = sorted(
        p
        for p, spec in params.items()
        if spec.default is inspect.Parameter.empty and p not in options
    )
    if missing:
        raise ValueError(f"make_loss({name!r}): missing required option(s) {missing}")
    return cls(**options)


__all__ = [
    "BPRLoss",
    "CCLLoss",
    "DirectAULoss",
    "HingeLoss",
    "ImplicitLoss",
    "InfoNCEPlusLoss",
    "LOSSES",
    "MAWULoss",
    "MINEPlusLoss",
    "SIMILARITIES",
    "SampledSoftmaxLoss",
    "SoftmaxLoss",
    "candidate_similarity",
    "make_loss",
    "pair_similarity",
    "prepare_logits",
    "uniformity",
    "weighted_mean",
]
