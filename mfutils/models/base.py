"""The interface every model shares (:class:`Model`: ``recommend``, checkpoints, the
registry) and the explicit-rating one (:class:`ExplicitModel`: ``fit``, ``predict``).

Models take their hyperparameters in the constructor and learn from a :class:`Ratings` in
``fit``. Ids are the compact ids of the data set the model was fit on; ids that the model has
never seen in training (out of range, or in range without a training rating) are *unknown* and
are answered deliberately by the model's fallback (its baseline terms, or the global mean),
never with an ``IndexError`` or an untrained random vector.
"""

from __future__ import annotations

import abc
import functools
import inspect
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from mfutils.data.container import Ratings, UserItemCSR, encode_ids
from mfutils.device import get_device
from mfutils.models import registry

CHECKPOINT_FORMAT = 2  # 1: torch.save pickles (mfutils 0.1), read only by upgrade_checkpoint
HEADER_KEY = "mfutils"  # the safetensors metadata entry holding the JSON header


def _check_penalties(model: str, options: dict[str, Any], prefix: str = "") -> None:
    """Refuse negative or non-finite penalties (options named ``reg*``), nested ones included:
    a negative penalty rewards large parameters and training diverges."""
    for name, value in options.items():
        if isinstance(value, dict):
            _check_penalties(model, value, prefix=f"{prefix}{name}.")
        elif (
            name.startswith("reg")
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and not (value >= 0 and np.isfinite(value))
        ):
            raise ValueError(
                f"{model}: {prefix}{name}={value} must be a finite number >= 0 "
                "(a penalty; a negative one rewards large parameters)"
            )


def _recording_options(init: Any) -> Any:
    """``init`` that first records its call's options in ``self.config`` (see :class:`Model`).

    Only the outermost constructor records: the ``super().__init__`` calls inside it find
    ``config`` already set and run unchanged.
    """
    signature = inspect.signature(init)
    spread = [
        p.name for p in signature.parameters.values() if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if spread:
        raise TypeError(
            f"{init.__qualname__} takes *{spread[0]}: name every option in the "
            "signature (the constructor is the one source of a model's options)"
        )

    @functools.wraps(init)
    def __init__(self: Model, *args: Any, **kwargs: Any) -> None:
        if "config" not in self.__dict__:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            options = dict(list(bound.arguments.items())[1:])  # without self
            object.__setattr__(
                self,
                "config",
                {
                    name: value
                    for name, value in options.items()
                    if name not in registry.NOT_OPTIONS
                },
            )
        init(self, *args, **kwargs)

    return __init__


class CheckpointError(ValueError):
    """A checkpoint does not match the model or configuration it is loaded into."""


class Model(nn.Module, abc.ABC):
    """What every model of the package shares: ``recommend``, checkpoints, the registry.

    Subclasses (:class:`ExplicitModel`, :class:`mfutils.models.ranking.RankingModel`) set
    the id space, the id maps and ``train_csr`` in ``fit``, create their parameters in
    :meth:`_build` (also what :meth:`load` calls before it reads the saved ones) and
    implement :meth:`score_items`. Every concrete subclass is registered in
    :mod:`mfutils.models.registry` under its class name.

    The constructor is the one source of a model's options: every keyword of the most derived
    ``__init__`` (its defaults applied; ``device`` and data arrays excepted, see
    :data:`mfutils.models.registry.NOT_OPTIONS`) is recorded in ``self.config`` before its
    body runs, so ``type(m)(**m.config)`` rebuilds the model and a checkpoint carries every
    option. A body may replace an entry by the value it resolves to (a default that depends
    on another option); a ``**options`` pass-through is refused at class definition.

    Parameters
    ----------
    device : str or torch.device, optional
        Where parameters live and computation happens; default :func:`mfutils.get_device`.
    """

    config: dict[str, Any]
    kind: ClassVar[str]  # "explicit" or "ranking"
    # Buffers ``fit`` registers itself rather than ``_build`` (the fit-time statistics, or a
    # model's large learned tables): ``load`` registers them from the checkpoint as saved.
    FIT_BUFFERS: ClassVar[tuple[str, ...]] = ()
    # Hyper-parameter search space of mfutils.tuning, declared beside each model's defaults:
    # option -> ("log" | "float", low, high), ("int", low, high[, "log"]) or ("choice", ...),
    # or method -> such a map. Empty: nothing to tune.
    SEARCH_SPACE: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            cls.__init__ = _recording_options(cls.__init__)
        registry.register(cls)

    def __init__(self, *, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.device = get_device(device)
        if "config" not in self.__dict__:  # a model without options of its own
            self.config = {}
        self.history = None
        self.train_csr: UserItemCSR | None = None
        self.user_ids: np.ndarray | None = None
        self.item_ids: np.ndarray | None = None

    def _set_id_space(self, train: Ratings) -> None:
        """The id space, id maps, scale and training items of ``train`` (the start of
        ``fit``)."""
        self.n_users, self.n_items = train.n_users, train.n_items
        self.rating_scale = train.rating_scale
        self.user_ids, self.item_ids = train.user_ids, train.item_ids
        self.train_csr = train.csr(device=self.device)

    @abc.abstractmethod
    def _build(self, n_users: int, n_items: int) -> None:
        """Create the parameters for ``n_users`` x ``n_items``."""

    @abc.abstractmethod
    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for compact user ids, shape (len(users), n_items); unknown
        users get the model's fallback. The ``score_fn`` of :func:`mfutils.metrics.topk_metrics`."""

    def _require_fitted(self) -> None:
        if self.train_csr is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")

    @torch.no_grad()
    def recommend(
        self, users: np.ndarray | list[int], k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items per user by score.

        Returns
        -------
        items, scores : np.ndarray, shape (len(users), k)
            Compact item ids best first and their scores. With ``exclude_seen`` the user's
            training items are never recommended. Unknown users get the model's fallback
            ranking (explicit models: by item bias; ranking models: by popularity).

        Raises
        ------
        ValueError
            ``k`` outside ``[1, n_items]``.
        """
        self._require_fitted()
        if not 1 <= k <= self.n_items:
            raise ValueError(f"k={k} must lie in [1, n_items={self.n_items}]")
        user = torch.as_tensor(np.asarray(users), dtype=torch.long, device=self.device)
        scores = self.score_items(user).clone()  # shape: (B, n_items)
        if exclude_seen:
            in_range = (user >= 0) & (user < self.n_users)
            rows = torch.nonzero(in_range).squeeze(1)
            seen_rows, seen_items = self.train_csr.gather(user[rows])
            scores[rows[seen_rows], seen_items] = -torch.inf
        top = torch.topk(scores, k, dim=1)
        return top.indices.cpu().numpy(), top.values.cpu().numpy()

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_header(self) -> dict[str, Any]:
        """Header entries beyond the model, config and id space: the training data's scale."""
        return {"rating_scale": [float(x) for x in self.rating_scale]}

    def _checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors outside ``state_dict`` that :meth:`_restore` needs (saved as ``extra.*``)."""
        return {}

    def save(self, path: str | Path) -> Path:
        """Write parameters, configuration and id mappings to ``path`` (a safetensors file).

        The tensors are stored with :mod:`safetensors`, the configuration and class name as
        JSON in its header: nothing in the file is executable, and :meth:`load` opens files
        from anyone without running code. The file is written beside ``path`` and renamed
        into place, so a crash never leaves half a checkpoint.
        """
        self._require_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"state.{k}": v.detach().cpu().clone().contiguous()
            for k, v in self.state_dict().items()
        }
        tensors.update(
            {
                f"extra.{k}": v.detach().cpu().clone().contiguous()
                for k, v in self._checkpoint_tensors().items()
            }
        )
        tensors["train_csr.indptr"] = self.train_csr.indptr.cpu().contiguous()
        tensors["train_csr.indices"] = self.train_csr.indices.cpu().contiguous()
        header: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "model": type(self).__name__,
            "config": _json_config(type(self).__name__, self.config),
            "n_users": self.n_users,
            "n_items": self.n_items,
            **self._checkpoint_header(),
        }
        for key, ids in (("user_ids", self.user_ids), ("item_ids", self.item_ids)):
            if ids is None:
                continue
            if np.issubdtype(np.asarray(ids).dtype, np.integer):
                tensors[key] = torch.as_tensor(np.asarray(ids, dtype=np.int64))
            else:  # raw ids of one's own data may be strings
                header[key] = [str(x) for x in ids]
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            save_file(tensors, tmp, metadata={HEADER_KEY: json.dumps(header)})
            tmp.replace(path)  # never leave a half-written checkpoint behind
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device | None = None) -> Model:
        """Rebuild the model saved at ``path``; its scores are reproduced exactly.

        Raises
        ------
        CheckpointError
            If the file is no checkpoint of this package, or holds another model class than
            the one ``load`` was called on.
        """
        ckpt = _read_checkpoint(path)
        name = ckpt["model"]
        try:
            model_cls = registry.get(name)
        except KeyError:
            raise CheckpointError(f"{path}: unknown model class {name!r}") from None
        if model_cls.__name__ != name:
            raise CheckpointError(f"{path}: unknown model class {name!r}")
        if not issubclass(model_cls, cls):
            raise CheckpointError(f"{path} holds a {name} checkpoint, not a {cls.__name__}")
        model = model_cls(**dict(ckpt["config"]), device=device)
        model._restore(ckpt, path)
        return model

    def restore(self, path: str | Path) -> Model:
        """Load the checkpoint at ``path`` into this model, which must have the same config."""
        ckpt = _read_checkpoint(path)
        if ckpt["model"] != type(self).__name__:
            raise CheckpointError(
                f"{path} holds a {ckpt['model']} checkpoint; this model is a {type(self).__name__}"
            )
        mine = _json_config(type(self).__name__, self.config)
        saved = _json_config(type(self).__name__, dict(ckpt["config"]))
        if saved != mine:
            diff = {
                k: (saved.get(k), mine.get(k))
                for k in set(saved) | set(mine)
                if saved.get(k) != mine.get(k)
            }
            raise CheckpointError(
                f"{path} was saved with another configuration "
                f"(option: (checkpoint, this model)) {diff}"
            )
        self._restore(ckpt, path)
        return self

    def _restore(self, ckpt: dict[str, Any], path: str | Path) -> None:
        if ckpt.get("rating_scale") is None:
            raise CheckpointError(f"{path}: the checkpoint lacks the rating scale")
        self.rating_scale = tuple(ckpt["rating_scale"])
        self.n_users, self.n_items = ckpt["n_users"], ckpt["n_items"]
        self.user_ids, self.item_ids = ckpt["user_ids"], ckpt["item_ids"]
        self._build(self.n_users, self.n_items)
        for name in self.FIT_BUFFERS:
            if name not in ckpt["state"]:
                raise CheckpointError(f"{path}: the checkpoint lacks the buffer {name!r}")
            self.register_buffer(name, ckpt["state"][name].clone())
        try:
            self.load_state_dict(ckpt["state"])
        except RuntimeError as err:
            raise CheckpointError(
                f"{path}: parameters do not match {type(self).__name__}({self.config}): {err}"
            ) from err
        csr = {key: value.to(self.device) for key, value in ckpt["train_csr"].items()}
        self.train_csr = UserItemCSR(
            csr["indptr"],
            csr["indices"],
            torch.ones(len(csr["indices"]), device=self.device),
            self.n_items,
        )
        self.to(self.device)
        self.eval()


class ExplicitModel(Model):
    """Base class of rating-prediction models (``fit`` / ``predict`` / ``recommend``).

    Subclasses build their parameters in :meth:`_build` and implement :meth:`_fit` and
    :meth:`_predict_known`; their options are in ``self.config`` (see :class:`Model`).

    Parameters
    ----------
    device : str or torch.device, optional
        Where parameters live and computation happens; default :func:`mfutils.get_device`.
    clip : bool
        Clip predictions to the training data's rating scale.
    """

    kind: ClassVar[str] = "explicit"
    FIT_BUFFERS: ClassVar[tuple[str, ...]] = ("mu", "user_known", "item_known")
    supports_binary: ClassVar[bool] = False

    def __init__(self, *, device: str | torch.device | None = None, clip: bool = True) -> None:
        super().__init__(device=device)

    # ------------------------------------------------------------------ fitting
    def fit(
        self, train: Ratings, *, valid: Ratings | None = None, weights: np.ndarray | None = None
    ) -> ExplicitModel:
        """Learn from ``train``; ``valid`` (carved from training data) drives early stopping.

        Parameters
        ----------
        train : Ratings
        valid : Ratings, optional
            Validation ratings for models trained by gradient steps; never the test set.
        weights : np.ndarray, optional
            Per-rating confidence weights ``c_ui`` (same length as ``train``).
        """
        if len(train) == 0:
            raise ValueError("cannot fit on an empty Ratings")
        if train.implicit:
            raise ValueError(
                f"{type(self).__name__} predicts ratings, and {train.name!r} holds events "
                "without ratings: fit a ranking model (ImplicitALS, EASE, TwoTower, "
                "MostPopular), or load the data with its rating column (rating=NAME; CLI: "
                "--columns rating=NAME)"
            )
        _check_penalties(type(self).__name__, self.config)
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float32)
            if weights.shape != (len(train),):
                raise ValueError(
                    f"weights has shape {weights.shape}; expected ({len(train)},), "
                    "one weight per training rating"
                )
            if not np.isfinite(weights).all() or (weights < 0).any():
                raise ValueError("weights must be finite and non-negative")
        self._set_id_space(train)
        self._build(train.n_users, train.n_items)
        self.register_buffer("mu", torch.tensor(train.global_mean, device=self.device))
        self.register_buffer(
            "user_known", torch.as_tensor(train.user_counts() > 0, device=self.device)
        )
        self.register_buffer(
            "item_known", torch.as_tensor(train.item_counts() > 0, device=self.device)
        )
        self.to(self.device)
        self._fit(train, valid=valid, weights=weights)
        self.eval()
        return self

    def _held_out_probe(self, train: Ratings, weights: np.ndarray | None) -> ExplicitModel:
        """This model fitted on ``1 - valid_fraction`` of ``train``, the rest as ``valid``.

        How a model that chooses part of its schedule on held-out ratings (TimeSVDpp's time
        epochs, DeepFM's joint epochs) makes that choice before it refits on all of
        ``train``; the rows are :func:`holdout_mask`'s, seeded by the model's ``seed``.
        """
        c = self._resolved_config()
        held = holdout_mask(len(train), fraction=c["valid_fraction"], seed=c["seed"])
        probe = type(self)(
            **{**c, "valid_fraction": 0.0, "progress": False, "clip": False}, device=self.device
        )
        return probe.fit(
            train.subset(~held),
            valid=train.subset(held),
            weights=None if weights is None else weights[~held],
        )

    def _resolved_config(self) -> dict[str, Any]:
        """``config`` with the options resolved from the training data (``"auto"`` columns,
        default fields) set to what they resolved to, once ``fit`` has resolved them."""
        return dict(self.config)

    @abc.abstractmethod
    def _fit(self, train: Ratings, *, valid: Ratings | None, weights: np.ndarray | None) -> None:
        """Learn the parameters (``self.mu``, ``user_known``, ``item_known`` are set)."""

    @abc.abstractmethod
    def _predict_known(
        self,
        user: torch.Tensor,
        item: torch.Tensor,
        user_known: torch.Tensor,
        item_known: torch.Tensor,
    ) -> torch.Tensor:
        """Predictions for safe (in-range) ids; drop the terms of unknown users/items."""

    # ------------------------------------------------------------------ prediction
    def _known(self, user: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Masks of known ids and in-range copies of the ids (unknown ones set to 0)."""
        user_in = (user >= 0) & (user < self.n_users)
        item_in = (item >= 0) & (item < self.n_items)
        safe_user = torch.where(user_in, user, torch.zeros_like(user))
        safe_item = torch.where(item_in, item, torch.zeros_like(item))
        user_known = user_in & self.user_known[safe_user]
        item_known = item_in & self.item_known[safe_item]
        return safe_user, safe_item, user_known, item_known

    def _known_users(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """In-range copies of ``users`` (unknown ones set to 0) and the mask of known ones."""
        users = users.to(self.device)
        in_range = (users >= 0) & (users < self.n_users)
        safe = torch.where(in_range, users, torch.zeros_like(users))
        return safe, in_range & self.user_known[safe]

    @torch.no_grad()
    def predict_tensor(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Predicted ratings for compact id tensors on the model's device, shape (n,)."""
        self._require_fitted()
        safe_user, safe_item, user_known, item_known = self._known(user, item)
        pred = self._predict_known(safe_user, safe_item, user_known, item_known)
        return self._output(pred)

    def _output(self, pred: torch.Tensor) -> torch.Tensor:
        if self.config.get("binary"):
            return torch.sigmoid(pred)
        if self.config["clip"]:
            return pred.clamp(*self.rating_scale)
        return pred

    def predict(
        self,
        users: np.ndarray | list[int],
        items: np.ndarray | list[int],
        *,
        batch_size: int = 1 << 18,
    ) -> np.ndarray:
        """Predicted ratings for pairs of compact ids, as a float32 array.

        Unknown ids (``-1``, out of range, or never seen in training) fall back to the model's
        baseline terms: ``mu + b_i`` for an unknown user, ``mu + b_u`` for an unknown item and
        ``mu`` for both.
        """
        user = torch.as_tensor(np.asarray(users), dtype=torch.long, device=self.device)
        item = torch.as_tensor(np.asarray(items), dtype=torch.long, device=self.device)
        if user.shape != item.shape or user.dim() != 1:
            raise ValueError(
                f"users and items must be 1-d and equally long; got "
                f"{tuple(user.shape)} and {tuple(item.shape)}"
            )
        parts = [
            self.predict_tensor(user[lo : lo + batch_size], item[lo : lo + batch_size])
            for lo in range(0, len(user), batch_size)
        ]
        return torch.cat(parts).cpu().numpy() if parts else np.empty(0, dtype=np.float32)

    def predict_ratings(self, data: Ratings) -> np.ndarray:
        """Predictions for every (user, item) row of ``data``."""
        return self.predict(data.user, data.item)

    def predict_raw(self, raw_users: np.ndarray | list, raw_items: np.ndarray | list) -> np.ndarray:
        """Predictions for *original* MovieLens ids; unknown raw ids use the fallback."""
        self._require_fitted()
        lookup_users = encode_ids(self.user_ids, raw_users)
        lookup_items = encode_ids(self.item_ids, raw_items)
        return self.predict(lookup_users, lookup_items)

    @torch.no_grad()
    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for compact user ids, shape (len(users), n_items).

        This is the ``score_fn`` that :func:`mfutils.metrics.topk_metrics` expects.
        """
        self._require_fitted()
        users = users.to(self.device)
        items = torch.arange(self.n_items, device=self.device)
        grid_users = users[:, None].expand(-1, self.n_items).reshape(-1)  # shape: (B * n_items,)
        grid_items = items.repeat(len(users))  # shape: (B * n_items,)
        return self.predict_tensor(grid_users, grid_items).view(len(users), self.n_items)


def holdout_mask(n: int, *, fraction: float, seed: int, min_count: int = 0) -> np.ndarray:
    """Boolean mask of the rows a model holds out of its ``n`` training rows for validation.

    ``max(1, round(fraction * n), min(min_count, n // 5))`` rows, drawn by a seeded
    permutation (the draw of :func:`mfutils.data.random_holdout`), so a model fitted without
    ``valid`` stops early or chooses its epochs on ratings it does not train on.
    """
    n_held = max(1, round(fraction * n), min(min_count, n // 5))
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(seed).permutation(n)[:n_held]] = True
    return held


def _json_config(model: str, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as plain JSON values (tuples become lists); anything else is refused."""

    def plain(value: Any) -> Any:
        return value.item() if isinstance(value, np.generic) else value

    try:
        return json.loads(json.dumps(config, default=plain))
    except TypeError as err:
        raise CheckpointError(
            f"{model}: an option is not a plain value and cannot be saved ({err})"
        ) from err


def _read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` as the dict :meth:`ExplicitModel._restore` takes.

    Only safetensors files are opened: tensors and a JSON header, nothing that can run code.
    A pickle (the ``torch.save`` checkpoints of format 1) is refused with a pointer to
    :func:`upgrade_checkpoint`, which reads it with torch's weights-only unpickler.
    """
    path = Path(path)
    with path.open("rb") as handle:  # FileNotFoundError / PermissionError name the path
        head = handle.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header's "{" (the
    # length's low byte may be 0x80, a pickle's first byte); torch.save: a zip or a pickle
    safetensors = head[8:9] == b"{"
    if not safetensors and (head[:2] == b"PK" or head[:1] == b"\x80"):
        raise CheckpointError(
            f"{path} is a pickle checkpoint (torch.save, checkpoint format 1 of mfutils 0.1); "
            "this mfutils opens only safetensors checkpoints, because unpickling can run code: "
            "convert it once with `mfutils upgrade PATH` (or mfutils.models.base."
            "upgrade_checkpoint), which reads it with torch's weights-only unpickler"
        )
    try:
        with safe_open(path, framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        header = json.loads(metadata[HEADER_KEY])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a readable mfutils checkpoint "
            f"(safetensors with an {HEADER_KEY!r} header): {err}"
        ) from err
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not an mfutils checkpoint of format "
            f"{CHECKPOINT_FORMAT} (its header says "
            f"{header.get('format') if isinstance(header, dict) else None!r})"
        )
    try:
        ckpt = {key: header[key] for key in ("model", "config", "n_users", "n_items")}
        ckpt["config"] = registry.current_options(ckpt["model"], ckpt["config"])
        ckpt["rating_scale"] = header.get("rating_scale")
        ckpt["state"] = {
            key.removeprefix("state."): value
            for key, value in tensors.items()
            if key.startswith("state.")
        }
        ckpt["extra"] = {
            key.removeprefix("extra."): value
            for key, value in tensors.items()
            if key.startswith("extra.")
        }
        ckpt["train_csr"] = {
            "indptr": tensors["train_csr.indptr"],
            "indices": tensors["train_csr.indices"],
        }
        for key in ("user_ids", "item_ids"):
            ckpt[key] = (
                tensors[key].numpy()
                if key in tensors
                else np.asarray(header[key], dtype=object)
                if key in header
                else None
            )
    except KeyError as err:
        raise CheckpointError(f"{path}: the checkpoint lacks {err}") from err
    return ckpt


def upgrade_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Convert a format-1 checkpoint (``torch.save`` pickle of mfutils 0.1) to safetensors.

    The old file is read with ``torch.load(weights_only=True)``: tensors, plain containers
    and numpy arrays only, so a file that smuggles code is refused, never run.

    Raises
    ------
    CheckpointError
        If ``source`` holds anything but weights, or is not an mfutils checkpoint.
    """
    # numpy arrays of the old id mappings: an ndarray rebuilt from bytes and a dtype
    # (numpy 2 pickles name numpy._core, numpy 1 numpy.core; pyproject allows both)
    core = getattr(np, "_core", None) or np.core
    allowed = [
        core.multiarray._reconstruct,
        np.ndarray,
        np.dtype,
        *(type(np.dtype(t)) for t in (np.int64, np.int32, np.float32, np.float64)),
    ]
    try:
        with torch.serialization.safe_globals(allowed):
            ckpt = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - the unpickler's refusal, whatever its class
        raise CheckpointError(
            f"{source} holds more than weights and is refused "
            f"(nothing in it was run): {str(err).splitlines()[0]}"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != 1:
        raise CheckpointError(f"{source} is not a format-1 mfutils checkpoint")
    try:
        model = registry.get(ckpt["model"])
    except KeyError:
        raise CheckpointError(f"{source}: unknown model class {ckpt['model']!r}") from None
    restored = model(**ckpt["config"], device="cpu")
    restored._restore(ckpt, source)
    return restored.save(target)
