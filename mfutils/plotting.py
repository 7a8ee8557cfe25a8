"""Figures of the notebook series: data exploration, learning curves, fold results, embeddings.

Every function draws on ``ax`` (a new figure when omitted) and returns the ``Axes`` (the
``Figure`` for multi-panel plots); none calls ``plt.show()``. Call :func:`set_style` once per
notebook for a consistent seaborn theme.

    from mfutils import plotting
    plotting.set_style()
    plotting.plot_long_tail(data.item_counts())
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, StrMethodFormatter
from numpy.typing import ArrayLike

__all__ = [
    "plot_compact_curves",
    "plot_percentile_cdf",
    "set_style",
    "top_share",
    "plot_rating_distribution",
    "plot_long_tail",
    "plot_user_activity",
    "plot_ratings_over_time",
    "plot_demographics",
    "plot_genre_counts",
    "plot_learning_curves",
    "plot_fold_results",
    "plot_heatmap",
    "pca_2d",
    "plot_embeddings_2d",
]

_PERIOD_NAMES = {"D": "day", "W": "week", "MS": "month", "ME": "month", "QS": "quarter"}


# ---------------------------------------------------------------------- theme and helpers
def set_style(*, context: str = "notebook", font_scale: float = 1.0) -> None:
    """Set the series' seaborn theme (white grid, colour-blind palette, no top/right spines).

    Parameters
    ----------
    context : {"paper", "notebook", "talk", "poster"}
        Seaborn scaling context.
    font_scale : float
        Extra scaling of every font.
    """
    sns.set_theme(
        context=context,
        style="whitegrid",
        palette="colorblind",
        font_scale=font_scale,
        rc={
            "figure.figsize": (7.0, 4.0),
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titleweight": "bold",
        },
    )


def _axes(ax: Axes | None, figsize: tuple[float, float] | None = None) -> Axes:
    if ax is not None:
        return ax
    _, new = plt.subplots(figsize=figsize)
    return new


def _as_array(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    return array


def top_share(counts: ArrayLike, fraction: float) -> float:
    """Share of the total held by the largest ``fraction`` of ``counts``.

    Parameters
    ----------
    counts : array-like of shape (n,)
        Non-negative counts, e.g. ``Ratings.item_counts()`` (ratings per item).
    fraction : float
        Share of the entries, in ``(0, 1]``; the ``ceil(fraction * n)`` largest are taken.

    Returns
    -------
    float
        ``sum(top counts) / sum(counts)``, e.g. the share of all ratings that fall on the
        most popular 20% of items.
    """
    counts = _as_array(counts, "counts")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    total = counts.sum()
    if total <= 0:
        raise ValueError("counts sum to zero; there is no share to compute")
    k = math.ceil(fraction * len(counts))
    return float(np.sort(counts)[::-1][:k].sum() / total)


# ---------------------------------------------------------------------- data exploration
def plot_rating_distribution(
    ratings: ArrayLike, *, normalize: bool = True, ax: Axes | None = None
) -> Axes:
    """Bar plot of how often each rating value occurs, with the mean marked.

    Parameters
    ----------
    ratings : array-like of shape (n,)
        Rating values, e.g. ``Ratings.rating``.
    normalize : bool
        Show shares (percent) rather than counts above the bars.
    ax : Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    Axes
        One bar per distinct rating value.
    """
    ratings = _as_array(ratings, "ratings")
    values, counts = np.unique(ratings, return_counts=True)
    ax = _axes(ax)
    names = [f"{v:g}" for v in values]
    sns.barplot(x=names, y=counts, order=names, color=sns.color_palette()[0], ax=ax)
    shares = 100 * counts / counts.sum()
    labels = [f"{s:.1f}%" for s in shares] if normalize else [f"{c:,}" for c in counts]
    ax.bar_label(ax.containers[0], labels=labels, padding=2, fontsize="small")
    ax.set(
        xlabel="rating",
        ylabel="number of ratings",
        title=f"Rating distribution (mean {ratings.mean():.2f})",
    )
    ax.margins(y=0.12)
    return ax


def plot_long_tail(
    counts: ArrayLike,
    *,
    top: Sequence[float] = (0.1, 0.2),
    what: str = "items",
    ax: Axes | None = None,
) -> Axes:
    """Popularity curve: entries sorted by count (log scale), the head's share annotated.

    Parameters
    ----------
    counts : array-like of shape (n,)
        Ratings per item (``Ratings.item_counts()``) or per user.
    top : sequence of float
        Fractions of the entries whose share of all ratings is marked (see :func:`top_share`).
    what : str
        Name of the entries in the labels ("items", "movies", "users").
    ax : Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    Axes
        One line (the curve), one shaded head and one text annotation per fraction in ``top``.
        Entries with a zero count are part of the ranking but cannot appear on the log axis.
    """
    counts = np.sort(_as_array(counts, "counts"))[::-1]
    rank = np.arange(1, len(counts) + 1)
    ax = _axes(ax)
    positive = counts > 0
    ax.plot(rank[positive], counts[positive], lw=2)
    ax.set_yscale("log")
    for level, fraction in enumerate(sorted(top)):
        k = math.ceil(fraction * len(counts))
        ax.axvspan(0.5, k + 0.5, color="grey", alpha=0.12, lw=0)
        share = top_share(counts, fraction)
        ax.annotate(
            f"top {fraction:.0%} of {what}: {share:.0%} of ratings",
            xy=(k, counts[k - 1]),
            xytext=(0.4, 0.9 - 0.12 * level),
            textcoords="axes fraction",
            fontsize="small",
            arrowprops={"arrowstyle": "->", "color": "0.3", "shrinkB": 2},
        )
    ax.set(
        xlabel=f"{what} ranked by number of ratings",
        ylabel="number of ratings (log)",
        title=f"Popularity long tail ({len(counts):,} {what})",
    )
    ax.set_xlim(0, len(counts) + 1)
    return ax


def plot_user_activity(
    counts: ArrayLike, *, bins: int = 30, what: str = "users", ax: Axes | None = None
) -> Axes:
    """Histogram of ratings per user on log-spaced bins, with the minimum and median marked.

    Parameters
    ----------
    counts : array-like of shape (n,)
        Ratings per user (``Ratings.user_counts()``); zero counts are left out.
    bins : int
        Number of log-spaced bins.
    what : str
        Name of the entries in the labels.
    ax : Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    Axes
        ``bins`` bars and two vertical lines (minimum, median).
    """
    counts = _as_array(counts, "counts")
    counts = counts[counts > 0]
    if counts.size == 0:
        raise ValueError("every count is zero; there is no activity to plot")
    ax = _axes(ax)
    sns.histplot(x=counts, bins=bins, log_scale=True, ax=ax)
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    low, mid = counts.min(), np.median(counts)
    ax.axvline(low, color="C3", ls="--", label=f"minimum: {low:,.0f}")
    ax.axvline(mid, color="C2", ls="-", label=f"median: {mid:,.0f}")
    ax.legend()
    ax.set(
        xlabel="ratings per user (log)",
        ylabel=f"number of {what}",
        title=f"Activity of {len(counts):,} {what}",
    )
    return ax


def plot_ratings_over_time(
    timestamps: ArrayLike, *, freq: str = "W", ax: Axes | None = None
) -> Axes:
    """Number of ratings per period (default: per week) against calendar time.

    Parameters
    ----------
    timestamps : array-like of shape (n,)
        Unix seconds, e.g. ``Ratings.timestamp``.
    freq : str
        A pandas offset alias for the periods: ``"D"``, ``"W"``, ``"MS"``, ...
    ax : Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    Axes
        One line with a point per period, from the first to the last rating.
    """
    when = pd.to_datetime(_as_array(timestamps, "timestamps"), unit="s")
    per_period = pd.Series(1, index=when).resample(freq, label="left", closed="left").size()
    ax = _axes(ax)
    ax.plot(per_period.index, per_period.to_numpy(), marker="o", ms=3)
    ax.fill_between(per_period.index, per_period.to_numpy(), alpha=0.15)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    period = _PERIOD_NAMES.get(freq, freq)
    span = (when.max() - when.min()).total_seconds() / 86_400
    ax.set(
        ylabel=f"ratings per {period}", ylim=(0, None), title=f"Ratings over time ({span:.0f} days)"
    )
    return ax


def plot_demographics(
    users: pd.DataFrame,
    *,
    columns: Sequence[str] = ("age", "gender", "occupation"),
    hue: str | None = "gender",
    max_bars: int = 25,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """One panel per user attribute: a histogram for numbers, bar counts for categories.

    Parameters
    ----------
    users : pandas.DataFrame
        One row per user (``Ratings.users``).
    columns : sequence of str
        Attributes to show, one panel each, left to right.
    hue : str, optional
        Categorical column that splits the numeric histograms (stacked), e.g. ``"gender"``;
        ignored when absent.
    max_bars : int
        Categorical panels show at most this many of the most frequent categories.
    figsize : (float, float), optional
        Figure size; by default 4.5 inches wide per panel.

    Returns
    -------
    Figure
        ``len(columns)`` axes; categories with more than six values are drawn as horizontal
        bars sorted by count.
    """
    missing = [c for c in columns if c not in users.columns]
    if missing:
        raise ValueError(f"users has no column(s) {missing}; it has {list(users.columns)}")
    fig, axes = plt.subplots(
        1,
        len(columns),
        figsize=figsize or (4.5 * len(columns), 4.5),
        squeeze=False,
        layout="constrained",
    )
    for column, ax in zip(columns, axes[0], strict=True):
        values = users[column]
        if pd.api.types.is_numeric_dtype(values) and values.nunique() > 10:
            split = hue if hue is not None and hue in users.columns and hue != column else None
            sns.histplot(users, x=column, hue=split, multiple="stack", bins=20, ax=ax)
            ax.set_ylabel("number of users")
        else:
            counts = values.value_counts().iloc[:max_bars]
            names = counts.index.astype(str)
            if len(counts) > 6:
                sns.barplot(x=counts.to_numpy(), y=names, order=names, color="C0", ax=ax)
                ax.set(xlabel="number of users", ylabel="")
            else:
                sns.barplot(x=names, y=counts.to_numpy(), order=names, color="C0", ax=ax)
                ax.set(ylabel="number of users")
                ax.bar_label(ax.containers[0], fmt="{:,.0f}", padding=2, fontsize="small")
        ax.set_title(column)
    return fig


def plot_genre_counts(
    items: pd.DataFrame,
    *,
    weights: ArrayLike | None = None,
    prefix: str = "genre_",
    ax: Axes | None = None,
) -> Axes:
    """Horizontal bars of movies per genre (or ratings per genre), sorted.

    A movie with several genres counts once in each.

    Parameters
    ----------
    items : pandas.DataFrame
        One row per item with 0/1 columns ``<prefix><Name>`` (``Ratings.items``).
    weights : array-like of shape (n_items,), optional
        Weight of each item, e.g. ``Ratings.item_counts()`` to count ratings rather than
        movies.
    prefix : str
        Prefix of the genre columns; it is stripped from the labels.
    ax : Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    Axes
        One bar per genre column.
    """
    genres = [c for c in items.columns if c.startswith(prefix)]
    if not genres:
        raise ValueError(f"items has no columns starting with {prefix!r}")
    flags = items[genres].to_numpy(dtype=float)
    if weights is None:
        totals, unit = flags.sum(axis=0), "movies"
    else:
        weights = _as_array(weights, "weights")
        if len(weights) != len(items):
            raise ValueError(f"weights has {len(weights)} entries, items has {len(items)} rows")
        totals, unit = weights @ flags, "ratings"
    table = pd.Series(totals, index=[g[len(prefix) :] for g in genres]).sort_values(ascending=False)
    ax = _axes(ax, figsize=(6.0, 0.28 * len(genres) + 1.0))
    sns.barplot(x=table.to_numpy(), y=table.index, order=table.index, color="C0", ax=ax)
    ax.set(xlabel=f"number of {unit}", ylabel="", title=f"{unit.capitalize()} per genre")
    return ax


# ---------------------------------------------------------------------- training and results
def plot_learning_curves(
    histories: Mapping[str, pd.DataFrame],
    *,
    x: str = "epoch",
    y: str = "valid",
    best: str | None = "min",
    logy: bool = False,
    ax: Axes | None = None,
) -> Axes:
    """One line per model: a metric of the training history against epochs or seconds.

    Parameters
    ----------
    histories : mapping of str to pandas.DataFrame
        Label -> history, one row per epoch (as returned by ``mfutils.train``), holding the
        columns ``x`` and ``y``.
    x : {"epoch", "seconds"}
        Horizontal axis: epoch number or cumulative training seconds.
    y : str
        Column to plot, e.g. ``"valid"`` (validation metric) or ``"train_loss"``.
    best : {"min", "max"} or None
        Mark each line's best point with a dot (``"min"`` for RMSE and losses).
    logy : bool
        Logarithmic vertical axis.
    ax : Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    Axes
        One line per history, in the order given, labelled with its key.
    """
    if not histories:
        raise ValueError("histories is empty")
    if best not in (None, "min", "max"):
        raise ValueError(f"best must be 'min', 'max' or None, got {best!r}")
    ax = _axes(ax)
    for color, (label, history) in zip(
        sns.color_palette(n_colors=len(histories)), histories.items(), strict=True
    ):
        missing = [c for c in (x, y) if c not in history.columns]
        if missing:
            raise ValueError(
                f"history {label!r} lacks column(s) {missing}; it has {list(history.columns)}"
            )
        ax.plot(history[x], history[y], label=label, color=color, lw=1.8)
        if best is not None and history[y].notna().any():
            row = history[y].idxmin() if best == "min" else history[y].idxmax()
            ax.scatter(
                [history.loc[row, x]],
                [history.loc[row, y]],
                color=color,
                zorder=3,
                s=30,
                edgecolor="black",
                linewidth=0.6,
            )
    if logy:
        ax.set_yscale("log")
    if x == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(
        xlabel="training seconds" if x == "seconds" else x,
        ylabel="validation metric" if y == "valid" else y.replace("_", " "),
    )
    ax.legend(title=None)
    return ax


# Labels and scales of the per-sweep columns of a Gibbs chain's history (mfutils.models.bayesian)
_CHAIN_PANELS = {
    "train_rmse": ("training RMSE of the sample", False),
    "alpha": ("noise precision α", False),
    "cg_residual": ("CG relative residual", True),
}


def plot_chain(
    history: pd.DataFrame,
    *,
    burn_in: int | None = None,
    columns: Sequence[str] | None = None,
    precisions: Sequence[str] = ("lambda_user", "lambda_item"),
    curve: pd.DataFrame | None = None,
    curve_label: str = "test RMSE",
    figsize: tuple[float, float] | None = None,
) -> np.ndarray:
    """Trace plots of a Gibbs chain: one panel per per-sweep quantity, side by side.

    Parameters
    ----------
    history : pandas.DataFrame
        One row per sweep with a ``sweep`` column (``BayesianMF.history``,
        ``BayesianFM.history``); with a ``chain`` column (``n_chains > 1``) one line per chain.
    burn_in : int, optional
        Marked on every sweep panel by a dotted line: the sweeps discarded.
    columns : sequence of str, optional
        The single-quantity panels, in order; by default those of ``train_rmse``, ``alpha``
        and ``cg_residual`` the history has (the residual on a log axis).
    precisions : sequence of str
        ``lambda_<group>`` columns drawn together in one log-scaled "factor precision" panel
        (only those present; none: no panel).
    curve : pandas.DataFrame, optional
        A last panel from ``model.sample_curve(test)``: the error of the mean of the first
        ``k`` kept samples against ``k``.
    curve_label : str
        The vertical label of that panel (say which data it is measured on).
    figsize : (float, float), optional
        Defaults to 4.5 inches per panel by 3.5.

    Returns
    -------
    numpy.ndarray of Axes
        The panels, left to right.
    """
    if "sweep" not in history.columns:
        raise ValueError(f"history lacks the 'sweep' column; it has {list(history.columns)}")
    if columns is None:
        columns = [c for c in _CHAIN_PANELS if c in history.columns]
    missing = [c for c in columns if c not in history.columns]
    if missing:
        raise ValueError(f"history lacks column(s) {missing}; it has {list(history.columns)}")
    panels = [([c], *_CHAIN_PANELS.get(c, (c.replace("_", " "), False))) for c in columns]
    groups = [c for c in precisions if c in history.columns]
    if groups:
        panels.append((groups, "factor precision", True))
    n_panels = len(panels) + (curve is not None)
    if not n_panels:
        raise ValueError("nothing to plot: no columns, precisions or curve")
    fig, axes = plt.subplots(1, n_panels, figsize=figsize or (4.5 * n_panels, 3.5), squeeze=False)
    axes = axes[0]
    chains = list(history.groupby("chain")) if "chain" in history.columns else [(None, history)]
    for ax, (panel, label, log) in zip(axes, panels, strict=False):
        for chain, rows in chains:
            for column in panel:
                name = column if chain is None else f"{column}, chain {chain}"
                ax.plot(rows["sweep"], rows[column], lw=1.4, label=name)
        ax.set(xlabel="sweep", ylabel=label, yscale="log" if log else "linear")
        if len(panel) * len(chains) > 1:
            ax.legend(title=None, fontsize="small")
        if burn_in is not None:
            ax.axvline(burn_in, color="grey", linestyle=":")
    if curve is not None:
        ax = axes[-1]
        ax.plot(curve["samples"], curve["mean"], lw=1.8)
        ax.set(xlabel="kept samples k", ylabel=curve_label)
    fig.tight_layout()
    return axes


def plot_fold_results(
    per_fold: pd.DataFrame, *, metric: str = "rmse", sort: bool = False, ax: Axes | None = None
) -> Axes:
    """Per-model metric on every fold (dots) with the mean marked and written out.

    Parameters
    ----------
    per_fold : pandas.DataFrame
        One row per (model, fold) with columns ``model``, ``fold`` and ``metric`` (as returned
        by ``mfutils.experiments.evaluate_folds``, concatenated over models).
    metric : str
        Column to show, e.g. ``"rmse"``, ``"mae"`` or ``"fit_seconds"``.
    sort : bool
        Order models by their mean (best, i.e. lowest, on top) rather than first-seen order.
    ax : Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    Axes
        Models on the vertical axis, one dot per fold coloured by fold, a black diamond per
        model at its mean and a ``mean ± s.d.`` label beside it.
    """
    missing = [c for c in ("model", "fold", metric) if c not in per_fold.columns]
    if missing:
        raise ValueError(f"per_fold lacks column(s) {missing}; it has {list(per_fold.columns)}")
    summary = per_fold.groupby("model", sort=False)[metric].agg(["mean", "std"])
    if sort:
        summary = summary.sort_values("mean")
    order = list(summary.index)
    ax = _axes(ax, figsize=(7.0, 0.55 * len(order) + 1.5))
    sns.stripplot(
        per_fold,
        x=metric,
        y="model",
        hue="fold",
        order=order,
        jitter=0.12,
        size=6,
        alpha=0.8,
        ax=ax,
    )
    ax.scatter(
        summary["mean"],
        np.arange(len(order)),
        marker="D",
        s=60,
        color="black",
        zorder=3,
        label="mean",
    )
    for pos, (mean, std) in enumerate(summary.itertuples(index=False)):
        text = f"{mean:.4f}" if np.isnan(std) else f"{mean:.4f} ± {std:.4f}"
        ax.annotate(
            text,
            xy=(mean, pos),
            xytext=(0, -14),
            textcoords="offset points",
            ha="center",
            va="top",
            fontsize="small",
        )
    label = metric.upper() if len(metric) <= 4 else metric.replace("_", " ")
    ax.set(xlabel=label, ylabel="")
    ax.legend(title="fold", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.margins(x=0.15)
    return ax


def plot_heatmap(
    table: pd.DataFrame,
    *,
    index: str,
    columns: str,
    values: str,
    fmt: str = ".4f",
    best: str | None = "min",
    cmap: str = "rocket_r",
    ax: Axes | None = None,
) -> Axes:
    """Annotated heatmap of ``values`` over two hyperparameters, the best cell outlined.

    Parameters
    ----------
    table : pandas.DataFrame
        Long format, one row per setting (e.g. ``mfutils.experiments.validation_grid``).
        Rows sharing an ``(index, columns)`` pair, such as several seeds, are averaged.
    index, columns, values : str
        Columns giving the heatmap's rows, its columns and the cell values.
    fmt : str
        Format of the cell annotations.
    best : {"min", "max"} or None
        Outline the lowest (RMSE) or highest cell.
    cmap : str
        Colormap; the default makes low values light.
    ax : Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    Axes
        One annotation per cell.
    """
    if best not in (None, "min", "max"):
        raise ValueError(f"best must be 'min', 'max' or None, got {best!r}")
    missing = [c for c in (index, columns, values) if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}; it has {list(table.columns)}")
    grid = table.pivot_table(index=index, columns=columns, values=values, aggfunc="mean")
    ax = _axes(ax, figsize=(1.0 * grid.shape[1] + 2.5, 0.6 * grid.shape[0] + 1.5))
    sns.heatmap(grid, annot=True, fmt=fmt, cmap=cmap, cbar_kws={"label": values}, ax=ax)
    if best is not None and grid.notna().to_numpy().any():
        cells = grid.to_numpy()
        flat = np.nanargmin(cells) if best == "min" else np.nanargmax(cells)
        row, col = np.unravel_index(flat, cells.shape)
        ax.add_patch(Rectangle((col, row), 1, 1, fill=False, edgecolor="C0", lw=3))
    ax.set(xlabel=columns, ylabel=index)
    return ax


def pca_2d(embeddings: Any) -> tuple[np.ndarray, np.ndarray]:
    """Project embeddings onto their first two principal components.

    Parameters
    ----------
    embeddings : array-like of shape (n, d)
        One row per user or item, ``d >= 2``; a torch tensor is detached and moved to the CPU.

    Returns
    -------
    coords : np.ndarray of shape (n, 2)
        Coordinates of the centred rows on the components. Each component's sign is fixed so
        that its largest-magnitude loading is positive, so reruns give the same picture.
    explained : np.ndarray of shape (2,)
        Share of the total variance carried by each component.
    """
    if hasattr(embeddings, "detach"):
        embeddings = embeddings.detach().cpu().numpy()
    data = np.asarray(embeddings, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 2:
        raise ValueError(f"embeddings must have shape (n >= 2, d >= 2), got {data.shape}")
    centred = data - data.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    components = components[:2]  # shape: (2, d)
    signs = np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    total = (singular**2).sum()
    explained = singular[:2] ** 2 / total if total > 0 else np.zeros(2)
    return centred @ components.T, explained


def plot_embeddings_2d(
    embeddings: Any,
    *,
    labels: ArrayLike | None = None,
    highlight: Mapping[str, int] | None = None,
    size: float = 12.0,
    ax: Axes | None = None,
) -> Axes:
    """Scatter of embeddings on their first two principal components (see :func:`pca_2d`).

    Parameters
    ----------
    embeddings : array-like of shape (n, d)
        E.g. the item factors ``Q`` of a trained model.
    labels : array-like of shape (n,), optional
        A group (e.g. a movie's first genre) or number (e.g. log popularity) per row, used
        as the colour.
    highlight : mapping of str to int, optional
        Name -> row index of points to outline and annotate, e.g.
        ``{"Star Wars (1977)": 49}``.
    size : float
        Marker size of the points.
    ax : Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    Axes
        The scatter (first collection), the highlighted points and one text per name.
    """
    coords, explained = pca_2d(embeddings)
    if labels is not None and len(np.asarray(labels)) != len(coords):
        raise ValueError(
            f"labels has {len(np.asarray(labels))} entries, embeddings has {len(coords)} rows"
        )
    ax = _axes(ax, figsize=(7.0, 6.0))
    sns.scatterplot(
        x=coords[:, 0],
        y=coords[:, 1],
        hue=labels,
        s=size,
        alpha=0.6,
        linewidth=0,
        ax=ax,
        legend="auto" if labels is not None else False,
    )
    if highlight:
        rows = np.fromiter(highlight.values(), dtype=np.int64, count=len(highlight))
        if rows.min() < 0 or rows.max() >= len(coords):
            raise ValueError(f"highlight indices must lie in [0, {len(coords)}), got {rows}")
        ax.scatter(
            coords[rows, 0],
            coords[rows, 1],
            s=4 * size,
            facecolor="none",
            edgecolor="black",
            linewidth=1.2,
            zorder=3,
        )
        for name, row in highlight.items():
            ax.annotate(
                name,
                xy=coords[row],
                xytext=(5, 5),
                textcoords="offset points",
                fontsize="small",
                zorder=4,
            )
    ax.set(
        xlabel=f"PC1 ({explained[0]:.0%} of variance)",
        ylabel=f"PC2 ({explained[1]:.0%} of variance)",
    )
    if labels is not None and ax.get_legend() is not None:
        sns.move_legend(
            ax, "center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize="small"
        )
    return ax


def plot_alignment_uniformity(
    frame: pd.DataFrame, *, hue: str | None = None, ax: Axes | None = None
) -> Axes:
    """Alignment against uniformity of learned embeddings, one labelled point per row.

    The map of Wang & Isola (ICML 2020), used by DirectAU (Wang et al., KDD 2022, Fig. 1):
    lower is better on both axes, so good encoders sit towards the lower left.

    Parameters
    ----------
    frame : pandas.DataFrame
        Index = labels (e.g. loss names); columns ``alignment`` and ``uniformity`` (as
        returned by :func:`mfutils.evaluation.alignment_uniformity`).
    hue : str, optional
        A column coloring the points (e.g. ``"ndcg@20"``), with a color bar.
    ax : Axes, optional
    """
    missing = [c for c in ("alignment", "uniformity", *([hue] if hue else [])) if c not in frame]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; it has {list(frame.columns)}")
    ax = _axes(ax, figsize=(6, 4.5))
    points = ax.scatter(
        frame["uniformity"],
        frame["alignment"],
        s=60,
        edgecolor="black",
        linewidth=0.6,
        c=frame[hue] if hue else None,
        cmap="viridis",
    )
    for label, row in frame.iterrows():
        ax.annotate(
            str(label),
            (row["uniformity"], row["alignment"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=9,
        )
    if hue:
        ax.figure.colorbar(points, ax=ax, label=hue)
    ax.set(
        xlabel=r"uniformity $\ell_{uniform}$ (lower: more spread)",
        ylabel=r"alignment $\ell_{align}$ (lower: positives closer)",
    )
    return ax


def plot_percentile_cdf(
    ranks: pd.DataFrame,
    models: Sequence[str] | None = None,
    *,
    max_rank: float = 0.2,
    random_baseline: bool = True,
    ax: Axes | None = None,
) -> Axes:
    r"""Cumulative distribution :math:`P(\mathrm{pct}\le x)` of percentile ranks, per model.

    Parameters
    ----------
    ranks : pandas.DataFrame
        :attr:`KorenTopK.ranks`: one float column of percentile ranks per model.
    models : sequence of str, optional
        Columns to draw; default every column except ``user``, ``item``, ``n_negatives``.
    max_rank : float, default 0.2
        Right end of the x axis (Koren plots the top 20%).
    random_baseline : bool, default True
        Draw the diagonal :math:`P = x` of a random ranker.
    ax : Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    Axes
        Step curves, x in percent of the negatives, y the fraction of positives.
    """
    if models is None:
        models = [c for c in ranks.columns if c not in ("user", "item", "n_negatives")]
    missing = [m for m in models if m not in ranks.columns]
    if missing:
        raise ValueError(f"ranks lacks column(s) {missing}")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 4.5))
    xs = np.linspace(0.0, max_rank, 401)  # shape: (X,)
    for name in models:
        values = np.sort(ranks[name].dropna().to_numpy())  # shape: (M,)
        cdf = np.searchsorted(values, xs + 1e-7, side="right") / max(len(values), 1)
        ax.step(100 * xs, cdf, where="post", label=name)
    if random_baseline:
        ax.plot(100 * xs, xs, color="grey", linestyle=":", label="random ranker")
    ax.set(
        xlabel="percentile rank of the held-out item (%)",
        ylabel=r"P(rank $\leq$ x)",
        xlim=(0, 100 * max_rank),
        ylim=(0, None),
    )
    ax.legend(loc="lower right", fontsize="small")
    return ax


def plot_compact_curves(ranking: pd.DataFrame, rating: pd.DataFrame | None = None) -> Figure:
    """Accuracy against id-table parameters, one line per method, the full table as a star.

    Parameters
    ----------
    ranking : pandas.DataFrame
        :func:`mfutils.compact.ranking_curve` output (NDCG@20, higher is better).
    rating : pandas.DataFrame, optional
        :func:`mfutils.compact.rating_curve` output (RMSE, lower is better), in a second panel.
    """
    panels = [(ranking, "ndcg@20", "test NDCG@20 (two-tower)")]
    if rating is not None:
        panels.append((rating, "rmse", "test RMSE (biased MF)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.2), squeeze=False)
    for ax, (table, metric, label) in zip(axes[0], panels, strict=True):
        curves = table[table["method"] != "full"]
        sns.lineplot(
            data=curves,
            x="parameters",
            y=metric,
            hue="method",
            style="method",
            markers=True,
            dashes=False,
            ax=ax,
        )
        full = table[table["method"] == "full"].iloc[0]
        ax.scatter(
            [full["parameters"]],
            [full[metric]],
            marker="*",
            s=220,
            color="black",
            zorder=5,
            label="full table",
        )
        if metric == "ndcg@20":
            ax.axhline(0.95 * full[metric], ls=":", color="gray", label="full - 5%")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel="parameters of the id tables (log scale)", ylabel=label)
        ax.legend(title=None, fontsize=9)
    fig.tight_layout()
    return fig
