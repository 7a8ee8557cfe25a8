"""The one registry of the package's models: every concrete model class by name, and the
named presets of the series (``"BiasedMF-SGD"`` is ``BiasedMF(method="sgd")``).

Every concrete subclass of :class:`mfutils.models.base.Model` registers itself when its
module is imported; ``import mfutils.models`` imports them all. The command line, the series'
model tables, the benchmarks, serving and checkpoints read this registry::

    from mfutils.models import registry
    registry.names(kind="ranking")        # ['EASE', 'ImplicitALS', 'MostPopular', 'TwoTower']
    cls, implied = registry.resolve("BiasedMF-ALS")   # BiasedMF, {"method": "als"}
    model = registry.create("FM-ids", n_factors=8)
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = [
    "KINDS",
    "PRESETS",
    "constructor_options",
    "current_options",
    "create",
    "get",
    "names",
    "register",
    "resolve",
]

KINDS = ("explicit", "ranking")
_CLASSES: dict[str, type] = {}
# Named settings of one class, declared once: the series' model names (notebooks, benchmarks,
# blending) and the command line accept them like class names.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "BaselineEstimates-ALS": ("BaselineEstimates", {"method": "als"}),
    "BiasedMF-SGD": ("BiasedMF", {"method": "sgd"}),
    "BiasedMF-Adam": ("BiasedMF", {"method": "adam"}),
    "BiasedMF-ALS": ("BiasedMF", {"method": "als"}),
    "FM-side": ("FactorizationMachine", {}),
    "FM-ids": ("FactorizationMachine", {"fields": ("user", "item")}),
    "iALS": ("ImplicitALS", {}),
    "BayesianFM-ids": ("BayesianFM", {"fields": ("user", "item"), "bags": ()}),
    "BayesianFM-flipped": ("BayesianFM", {"fields": ("user", "item")}),
    # the defaults without the time fields: issue 19's third myFM feature set (needs a users
    # table, as ML-100K's and ML-1M's)
    "BayesianFM-side": (
        "BayesianFM",
        {"fields": ("user", "gender", "occupation", "item", "genres", "year")},
    ),
    # chosen on a validation tenth of ML-100K's u1.base (README, "Bayesian models")
    "BayesianFM-ordinal": ("BayesianFM", {"output": "ordinal", "n_factors": 16}),
}


def register(cls: type) -> type:
    """Add a model class under its ``__name__`` (a re-definition replaces the old one);
    abstract classes and names starting with ``_`` are kept out of :func:`names` and
    :func:`get`."""
    if getattr(cls, "kind", None) not in KINDS:
        raise TypeError(f"{cls.__name__} needs a class attribute kind in {KINDS}")
    _CLASSES[cls.__name__] = cls
    return cls


def names(kind: str | None = None) -> list[str]:
    """The registered class names, sorted; ``kind`` ``"explicit"`` or ``"ranking"`` filters."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind={kind!r}; choose one of {KINDS} (or None for all)")
    return sorted(
        name
        for name, cls in _CLASSES.items()
        if _concrete(name, cls) and (kind is None or cls.kind == kind)
    )


def _concrete(name: str, cls: type) -> bool:
    # abstract bases register too (a class is registered while it is being created, before
    # ABCMeta knows its abstract methods), and are left out here
    return not name.startswith("_") and not inspect.isabstract(cls)


def get(name: str) -> type:
    """The class registered as ``name`` (exact, else case-insensitive).

    Raises
    ------
    KeyError
        An unknown name; the message lists the registered ones.
    """
    if name in _CLASSES and _concrete(name, _CLASSES[name]):
        return _CLASSES[name]
    by_lower = {key.lower(): cls for key, cls in _CLASSES.items() if _concrete(key, cls)}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    raise KeyError(f"unknown model {name!r}; registered models: {', '.join(names())}")


def resolve(name: str) -> tuple[type, dict[str, Any]]:
    """The class and the options a name implies: a preset (``"FM-ids"``), a class name, or
    ``Class-METHOD`` for a class with a ``method`` option (``"BaselineEstimates-SGD"``).

    Raises
    ------
    ValueError
        An unknown name (listing the registered classes and presets) or a ``-SUFFIX`` on a
        class without a ``method`` option.
    """
    presets = {key.lower(): value for key, value in PRESETS.items()}
    if name.lower() in presets:
        class_name, implied = presets[name.lower()]
        return get(class_name), dict(implied)
    head, _, suffix = name.partition("-")
    try:
        cls = get(head if suffix else name)
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; registered models: {', '.join(names())}; "
            f"presets: {', '.join(PRESETS)}"
        ) from None
    if not suffix:
        return cls, {}
    if "method" not in constructor_options(cls):
        raise ValueError(
            f"model {name!r}: {cls.__name__} has no 'method' option for the suffix -{suffix}"
        )
    return cls, {"method": suffix.lower()}


def create(name: str, **options: Any) -> Any:
    """An unfitted model of ``name`` (:func:`resolve`), ``options`` over the implied ones."""
    cls, implied = resolve(name)
    return cls(**{**implied, **options})


NOT_OPTIONS = frozenset(
    {"self", "device", "user_embeddings", "item_embeddings", "user_features", "item_features"}
)  # arrays and bags are data, not options


def constructor_options(cls: type) -> dict[str, Any]:
    """Keyword options of a model class settable by name, and their defaults: the keys of
    every instance's ``config`` (``device`` and the pretrained-embedding arrays are not
    options; a model constructor names all of its options, see
    :class:`mfutils.models.base.Model`)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.name not in NOT_OPTIONS}


# Options renamed to the package's one name per concept: model -> {old name: new name}.
RENAMED_OPTIONS: dict[str, dict[str, str]] = {
    "ImplicitALS": {"factors": "n_factors", "iterations": "epochs"},
    "TwoTower": {"dim": "n_factors"},
    "NNMF": {"latent_dim": "n_factors"},
}


def current_options(model: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` of the class named ``model`` as written before a rename (a checkpoint, a
    preset file), under today's names. BaselineEstimates' ``n_iters`` (the alternating
    passes) merged into ``epochs``, which was SGD's alone."""
    options = dict(options)
    if model == "BaselineEstimates" and "n_iters" in options:
        n_iters = options.pop("n_iters")
        if options.get("method", "als") != "sgd":
            options["epochs"] = n_iters
    renamed = RENAMED_OPTIONS.get(model, {})
    return {renamed.get(name, name): value for name, value in options.items()}
