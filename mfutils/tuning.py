"""Hyper-parameter search with Optuna on a validation part of the training data.

The protocol (the same as the defaults' choice in the notebooks, now automated):

1. Carve a validation part out of the *training* data (:func:`mfutils.data.splits.
   validation_split`, seeded); a test set is never given to :func:`tune`.
2. Every trial samples options from the model's declared search space (``SEARCH_SPACE`` beside
   its defaults, see :func:`search_space`), fits on the rest and scores the validation part.
3. Optuna's TPE sampler (Bergstra et al. 2011, "Algorithms for Hyper-Parameter Optimization";
   Akiba et al. 2019, "Optuna: A Next-generation Hyperparameter Optimization Framework")
   proposes the next trial from the finished ones, seeded so that a search is reproducible;
   a median pruner stops a trial whose validation curve (reported after every epoch through
   :func:`mfutils.train.epoch_callback`) is worse than the median of earlier trials at the
   same epoch (the median stopping rule of Golovin et al. 2017, "Google Vizier").

When the trainer keeps a trial's best epoch (it restores the best validation epoch of a fit
given validation data), the trial's options record that epoch count as ``epochs``: a refit
with these options trains exactly the model that was scored. The chosen setting is then refit
on the whole training data (``mfutils train --preset``, ``benchmarks/explicit.py --tune``).

A search space maps an option to ``("log", low, high)`` (log-uniform float), ``("float", low,
high)``, ``("int", low, high)`` or ``("int", low, high, "log")``, or ``("choice", a, b, ...)``;
models whose ``method`` changes what the options mean declare one such map per method.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch
from tqdm.auto import tqdm

import mfutils
from mfutils.blending import SERIES_MODELS, VARIANT_MODELS, series_model_spec, series_models
from mfutils.data.container import Ratings
from mfutils.data.splits import validation_split
from mfutils.experiments import suggest
from mfutils.metrics import mae, rmse
from mfutils.models.registry import constructor_options, current_options
from mfutils.train import TrainingDiverged, TrainingFailed, epoch_callback

__all__ = [
    "METRICS",
    "PRESET_KEYS",
    "TUNABLE_MODELS",
    "TuneResult",
    "load_preset",
    "make_model",
    "preset_options",
    "search_space",
    "tune",
]

TUNABLE_MODELS = (*SERIES_MODELS, *VARIANT_MODELS)
METRICS = {"rmse": rmse, "mae": mae}
PRESET_KEYS = (
    "model",
    "options",
    "metric",
    "value",
    "trials",
    "seed",
    "dataset",
    "split",
    "protocol",
    "mfutils",
)
_KINDS = ("log", "float", "int", "choice")
_FINISHED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


# ---------------------------------------------------------------------- models and spaces
def make_model(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Any:
    """An unfitted series model ``name`` with ``options`` on top of its defaults.

    Built by the factories of :func:`mfutils.blending.series_models`, so ``make_model(name)``
    is the benchmark's default model and a preset's options change only what they name.
    """
    return series_models([name], seed=seed, device=device, options={name: dict(options or {})})[
        name
    ]()


def search_space(name: str) -> dict[str, tuple]:
    """The declared search space of a tunable model name (``BiasedMF-SGD``, ``FM-ids``, ...).

    The class attribute ``SEARCH_SPACE`` of the model, for per-method spaces the one of the
    method the name implies; options the name fixes (``method``, FM-ids' ``fields``) are left
    out.

    Raises
    ------
    ValueError
        An unknown name, a model without a search space, or a malformed one.
    """
    cls, implied, _ = series_model_spec(name)
    space = getattr(cls, "SEARCH_SPACE", None)
    if not space:
        raise ValueError(f"{cls.__name__} declares no SEARCH_SPACE; nothing to tune")
    if all(isinstance(value, Mapping) for value in space.values()):  # one space per method
        method = implied.get("method") or _default(cls, "method")
        if method not in space:
            raise ValueError(f"{cls.__name__}.SEARCH_SPACE has no space for method {method!r}")
        space = space[method]
    space = {key: tuple(spec) for key, spec in space.items() if key not in implied}
    for key, spec in space.items():
        _check_spec(cls.__name__, key, spec)
    return space


def _default(cls: type, option: str) -> Any:
    return constructor_options(cls).get(option)


def _check_spec(owner: str, key: str, spec: tuple) -> None:
    bad = f"{owner}.SEARCH_SPACE[{key!r}] = {spec!r}"
    if not spec or spec[0] not in _KINDS:
        raise ValueError(f"{bad}: the kind must be one of {_KINDS}")
    kind = spec[0]
    if kind == "choice":
        if len(spec) < 2:
            raise ValueError(f"{bad}: a choice needs at least one value")
        return
    if len(spec) not in (3, 4) or (len(spec) == 4 and (kind != "int" or spec[3] != "log")):
        raise ValueError(f"{bad}: expected (kind, low, high) or ('int', low, high, 'log')")
    low, high = spec[1], spec[2]
    if not low < high or ((kind == "log" or len(spec) == 4) and low <= 0):
        raise ValueError(f"{bad}: need 0 < low < high on a log scale, low < high otherwise")


# ---------------------------------------------------------------------- result and presets
@dataclass(frozen=True, eq=False)
class TuneResult:
    """What :func:`tune` found.

    Attributes
    ----------
    name : str
        The model name (``BiasedMF-SGD``, ...).
    options : dict
        The best trial's options (with ``fixed``), as a refit should use them.
    value : float
        Its validation metric.
    metric : str
        ``rmse`` or ``mae``.
    trials : pandas.DataFrame
        One row per trial of the study: ``number, state, value``, the sampled ``params_*``,
        ``best_epoch``, ``options`` (those of the scored model, see the module notes) and
        ``seconds``.
    n_trials : int
        Finished trials of the study (completed, pruned or failed), resumed ones included.
    seed : int
    dataset : str
        Name of the data tuned on.
    valid_fraction : float
    split : str, optional
        The split whose training part was tuned on (set by the command line).
    """

    name: str
    options: dict[str, Any]
    value: float
    metric: str
    trials: pd.DataFrame = field(repr=False)
    n_trials: int
    seed: int
    dataset: str
    valid_fraction: float
    split: str | None = None

    @property
    def protocol(self) -> str:
        return f"validation part ({self.valid_fraction:.0%}) of the training data"

    def to_preset(self) -> dict[str, Any]:
        """The preset JSON object (see :func:`load_preset`)."""
        preset = {
            "model": self.name,
            "options": _jsonable(self.options),
            "metric": self.metric,
            "value": self.value,
            "trials": self.n_trials,
            "seed": self.seed,
            "dataset": self.dataset,
            "split": self.split,
            "protocol": self.protocol,
            "mfutils": mfutils.__version__,
        }
        if self.split is None:
            del preset["split"]
        return preset

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_preset` as JSON to ``path`` (folders created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_preset(), indent=2) + "\n")
        return path


def load_preset(path: str | Path) -> tuple[str, dict[str, Any]]:
    """``(model name, options)`` of a preset file written by :meth:`TuneResult.save`.

    Lists are turned back into tuples (the sequence options, e.g. ``fields``, ``hidden``).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        One line naming the file and what is wrong: not JSON, an unknown top-level key, an
        unknown model, an option the model does not take, or a value it rejects.
    """
    path = Path(path)
    try:
        preset = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"preset {path}: not JSON ({err})") from err
    if not isinstance(preset, dict):
        raise ValueError(f"preset {path}: expected a JSON object with 'model' and 'options'")
    for key in preset:
        if key not in PRESET_KEYS:
            raise ValueError(f"preset {path}: unknown key {key!r}; expected {list(PRESET_KEYS)}")
    for key in ("model", "options"):
        if key not in preset:
            raise ValueError(f"preset {path}: missing key {key!r}")
    name, options = preset["model"], preset["options"]
    if not isinstance(name, str) or name not in TUNABLE_MODELS:
        raise ValueError(
            f"preset {path}: key 'model' = {name!r} is not one of {list(TUNABLE_MODELS)}"
        )
    if not isinstance(options, dict):
        raise ValueError(f"preset {path}: key 'options' must be an object, got {options!r}")
    cls, _, _ = series_model_spec(name)
    defaults = constructor_options(cls)
    options = current_options(cls.__name__, options)
    for key, value in options.items():
        if key not in defaults:
            raise ValueError(
                f"preset {path}: option {key!r} is not an option of {cls.__name__} ({name})"
            )
        if isinstance(value, list):  # JSON has no tuples; sequence options are tuples
            options[key] = tuple(value)
    try:
        make_model(name, options, device="cpu")
    except (TypeError, ValueError) as err:
        raise ValueError(f"preset {path}: options {options} rejected by {name}: {err}") from err
    return name, options


def preset_options(presets: str | Path | Sequence[str | Path] | None) -> dict[str, dict[str, Any]]:
    """The options of one or several preset files by model name, for ``series_models(options=)``
    and the notebooks' ``preset`` parameter; ``{}`` for ``None``.

    Two presets for the same model are refused (one line naming both files).
    """
    if presets is None:
        return {}
    paths = [presets] if isinstance(presets, str | Path) else list(presets)
    out: dict[str, dict[str, Any]] = {}
    origin: dict[str, Path] = {}
    for path in map(Path, paths):
        name, options = load_preset(path)
        if name in out:
            raise ValueError(f"presets {origin[name]} and {path} are both for {name}; give one")
        out[name], origin[name] = options, path
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------- the search
def tune(
    name: str,
    data: Ratings,
    *,
    trials: int,
    seed: int = 0,
    metric: str = "rmse",
    valid_fraction: float = 0.1,
    storage: str | None = None,
    study_name: str | None = None,
    timeout: float | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
    fixed: Mapping[str, Any] | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> TuneResult:
    """Tune model ``name`` on a validation part of the training data ``data``.

    Parameters
    ----------
    name : str
        A model of :data:`TUNABLE_MODELS` (the series' names, as the CLI and the benchmark
        know them), built by :func:`make_model`.
    data : Ratings
        The *training* data only. A seeded validation part (``valid_fraction``) is carved from
        it; every trial fits on the rest and is scored there. Never pass a test set.
    trials : int
        Trials in total: finished trials of a resumed study (``storage``) count.
    seed : int
        Seed of the validation split, of the TPE sampler and of every model.
    metric : {"rmse", "mae"}
        Validation metric to minimize (the pruner follows the model's own validation curve,
        the RMSE for rating models).
    valid_fraction : float
        Share of ``data`` held out for validation.
    storage, study_name : str, optional
        An Optuna storage URL (``sqlite:///tune.db``) and study name: an interrupted search
        resumes where it stopped (``load_if_exists``). Without ``storage`` the study is in
        memory.
    timeout : float, optional
        Stop starting trials after this many seconds.
    progress : bool
        A progress bar and one line per trial (value and options); Optuna's own logging is
        quieted to warnings either way.
    device : str or torch.device, optional
    fixed : mapping, optional
        Options held fixed (removed from the search space), e.g. ``{"n_factors": 50}``.
    pruner : optuna.pruners.BasePruner, optional
        Default: ``MedianPruner(n_startup_trials=5, n_warmup_steps=2)``.

    Returns
    -------
    TuneResult

    Raises
    ------
    ValueError
        Unknown model or metric, ``trials < 1``, or no trial finished with a value (every
        trial pruned or diverged).
    """
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}; choose one of {sorted(METRICS)}")
    if trials < 1:
        raise ValueError(f"trials={trials} must be >= 1")
    fixed = dict(fixed or {})
    space = {key: spec for key, spec in search_space(name).items() if key not in fixed}
    fit_part, valid_part = validation_split(data, fraction=valid_fraction, seed=seed)
    score = METRICS[metric]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        load_if_exists=storage is not None,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
    )
    done = sum(trial.state in _FINISHED for trial in study.trials)

    def objective(trial: optuna.Trial) -> float:
        options = {**fixed, **{key: suggest(trial, key, spec) for key, spec in space.items()}}
        model = make_model(name, options, seed=seed, device=device)
        stages: list[int] = []  # epochs of every fit that reported a validation curve

        def report(epoch: int, record: dict[str, float]) -> None:
            if epoch == 1:
                stages.append(0)
            stages[-1] = epoch
            step = sum(stages)  # fits in stages (IntegratedModel) continue the step count
            trial.report(record["valid"], step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation {record['valid']:.4f} at step {step}")

        with epoch_callback(report):
            model.fit(fit_part, valid=valid_part)
        value = float(score(model.predict_ratings(valid_part), valid_part.rating))
        if not math.isfinite(value):
            raise TrainingDiverged(f"validation {metric} is {value}")
        trial.set_user_attr("options", _jsonable(_effective(model, options, stages)))
        history = getattr(model, "history", None)
        if isinstance(history, pd.DataFrame) and "best_epoch" in history.attrs:
            trial.set_user_attr("best_epoch", int(history.attrs["best_epoch"]))
        return value

    remaining = max(0, trials - done)
    bar = tqdm(
        total=trials,
        initial=done,
        desc=f"tune {name}",
        unit="trial",
        disable=not progress,
        leave=False,
    )

    def show(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        if not progress:
            return
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        state = "" if trial.state == optuna.trial.TrialState.COMPLETE else f" ({trial.state.name})"
        epoch = trial.user_attrs.get("options", {}).get("epochs")
        if epoch is not None and epoch != trial.params.get("epochs", epoch):
            params += f" (best epoch {epoch})"
        best = _best(study)
        tqdm.write(
            f"{name} trial {trial.number}: {metric} {value}{state}  {params}"
            + ("" if best is None else f"  [best {best.value:.4f}, #{best.number}]")
        )

    try:
        if remaining:
            study.optimize(
                objective,
                n_trials=remaining,
                timeout=timeout,
                callbacks=[show],
                catch=(TrainingFailed,),
                gc_after_trial=False,
            )
    finally:
        bar.close()
    best = _best(study)
    if best is None:
        raise ValueError(f"tuning {name}: no trial finished with a value (all pruned or failed)")
    options = best.user_attrs.get("options", {**fixed, **best.params})
    cls, _, _ = series_model_spec(name)
    defaults = constructor_options(cls)
    options = {
        key: tuple(v) if isinstance(v, list) and isinstance(defaults.get(key), tuple) else v
        for key, v in options.items()
    }
    return TuneResult(
        name=name,
        options=options,
        value=float(best.value),
        metric=metric,
        trials=_frame(study),
        n_trials=sum(t.state in _FINISHED for t in study.trials),
        seed=seed,
        dataset=data.name,
        valid_fraction=valid_fraction,
    )


def _effective(model: Any, options: dict[str, Any], stages: list[int]) -> dict[str, Any]:
    """The options of the scored model: with one validation-fed fit whose best epoch the
    trainer restored, the epoch option that counts that fit's epochs is set to that epoch."""
    history = getattr(model, "history", None)
    if len(stages) != 1 or not isinstance(history, pd.DataFrame):
        return options
    best = history.attrs.get("best_epoch")
    config = getattr(model, "config", {})
    for key in ("epochs", "neighbor_epochs"):
        if config.get(key) == stages[0] and best is not None and 1 <= best < stages[0]:
            return {**options, key: int(best)}
    return options


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return min(complete, key=lambda t: (t.value, t.number)) if complete else None


def _frame(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.trials:
        seconds = (
            None
            if t.datetime_start is None or t.datetime_complete is None
            else (t.datetime_complete - t.datetime_start).total_seconds()
        )
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                **{f"params_{k}": v for k, v in t.params.items()},
                "best_epoch": t.user_attrs.get("best_epoch"),
                "options": t.user_attrs.get("options"),
                "seconds": seconds,
            }
        )
    return pd.DataFrame(rows)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
