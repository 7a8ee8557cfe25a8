"""Smoke tests of mfutils.plotting on tiny synthetic data (Agg backend, no display)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from mfutils import plotting  # noqa: E402
from mfutils.data.synthetic import make_synthetic  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data():
    return make_synthetic(60, 40, 900, seed=1)


def test_set_style_sets_theme():
    plotting.set_style()
    assert plt.rcParams["axes.spines.top"] is False
    assert tuple(plt.rcParams["figure.figsize"]) == (7.0, 4.0)


def test_top_share():
    counts = np.array([0, 10, 30, 60])
    assert plotting.top_share(counts, 0.25) == pytest.approx(0.6)
    assert plotting.top_share(counts, 0.5) == pytest.approx(0.9)
    assert plotting.top_share(counts, 1.0) == pytest.approx(1.0)
    assert plotting.top_share(counts, 0.3) == pytest.approx(0.9)  # ceil(1.2) = 2 entries
    with pytest.raises(ValueError, match="fraction"):
        plotting.top_share(counts, 0.0)
    with pytest.raises(ValueError, match="sum to zero"):
        plotting.top_share(np.zeros(3), 0.5)


def test_rating_distribution_one_bar_per_value(data):
    ax = plotting.plot_rating_distribution(data.rating)
    assert len(ax.patches) == len(np.unique(data.rating))
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        f"{v:g}" for v in np.unique(data.rating)
    ]
    heights = [p.get_height() for p in ax.patches]
    assert sum(heights) == len(data)


def test_rating_distribution_half_stars_and_given_ax():
    _, ax = plt.subplots()
    out = plotting.plot_rating_distribution(np.array([0.5, 1.0, 3.5, 3.5]), normalize=False, ax=ax)
    assert out is ax
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "1", "3.5"]
    assert "2" in [t.get_text() for t in ax.texts]  # the count above the 3.5 bar


def test_long_tail_curve_and_annotations(data):
    counts = data.item_counts()
    ax = plotting.plot_long_tail(counts, top=(0.1, 0.2))
    assert len(ax.lines) == 1
    y = ax.lines[0].get_ydata()
    assert np.all(np.diff(y) <= 0) and y[0] == counts.max()
    assert ax.get_yscale() == "log"
    assert len(ax.texts) == 2
    share = plotting.top_share(counts, 0.2)
    assert f"{share:.0%} of ratings" in ax.texts[1].get_text()


def test_long_tail_skips_zero_counts_on_log_axis():
    ax = plotting.plot_long_tail(np.array([5, 0, 3, 1, 0]), top=(0.2,))
    assert len(ax.lines[0].get_ydata()) == 3
    assert "top 20% of items" in ax.texts[0].get_text()


def test_user_activity_histogram(data):
    ax = plotting.plot_user_activity(data.user_counts(), bins=12)
    assert len(ax.patches) == 12
    assert ax.get_xscale() == "log"
    assert len(ax.lines) == 2  # minimum and median
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == f"minimum: {data.user_counts().min():,}"


def test_ratings_over_time_per_week(data):
    ax = plotting.plot_ratings_over_time(data.timestamp, freq="W")
    days = (data.timestamp.max() - data.timestamp.min()) / 86_400
    n_points = len(ax.lines[0].get_xdata())
    assert days / 7 <= n_points <= days / 7 + 2
    assert ax.lines[0].get_ydata().sum() == len(data)
    assert ax.get_ylabel() == "ratings per week"


def test_demographics_one_panel_per_column(data):
    fig = plotting.plot_demographics(data.users)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    age, gender, occupation = fig.axes
    assert age.get_title() == "age" and len(age.patches) > 0
    assert len(gender.patches) == data.users["gender"].nunique()
    n_jobs = data.users["occupation"].nunique()
    assert len(occupation.get_yticklabels()) == n_jobs  # horizontal bars for many categories


def test_demographics_rejects_missing_column(data):
    with pytest.raises(ValueError, match="zipcode"):
        plotting.plot_demographics(data.users, columns=("age", "zipcode"))


def test_genre_counts_movies_and_ratings(data):
    genres = [c for c in data.items.columns if c.startswith("genre_")]
    ax = plotting.plot_genre_counts(data.items)
    assert len(ax.patches) == len(genres)
    widths = sorted((p.get_width() for p in ax.patches), reverse=True)
    assert widths == sorted(data.items[genres].sum().to_numpy(), reverse=True)
    ax = plotting.plot_genre_counts(data.items, weights=data.item_counts())
    total = (data.items[genres].to_numpy() * data.item_counts()[:, None]).sum()
    assert sum(p.get_width() for p in ax.patches) == pytest.approx(total)
    assert "genre_" not in ax.get_yticklabels()[0].get_text()


def _history(values, seconds_per_epoch=0.5):
    epochs = np.arange(1, len(values) + 1)
    return pd.DataFrame(
        {
            "epoch": epochs,
            "valid": values,
            "train_loss": values,
            "seconds": seconds_per_epoch * epochs,
        }
    )


def test_learning_curves_one_line_per_label():
    histories = {"SGD": _history([1.0, 0.95, 0.94, 0.96]), "ALS": _history([0.98, 0.93])}
    ax = plotting.plot_learning_curves(histories)
    assert len(ax.lines) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SGD", "ALS"]
    best = ax.collections[0].get_offsets()[0]
    assert tuple(best) == (3, 0.94)
    ax = plotting.plot_learning_curves(histories, x="seconds", y="train_loss", best=None)
    assert ax.lines[0].get_xdata()[-1] == pytest.approx(2.0)
    assert ax.get_xlabel() == "training seconds" and not ax.collections


def test_learning_curves_missing_column():
    with pytest.raises(ValueError, match="'ALS' lacks"):
        plotting.plot_learning_curves({"ALS": _history([1.0]).drop(columns="valid")})


def _per_fold():
    rng = np.random.default_rng(0)
    rows = [
        {
            "model": model,
            "fold": f"u{k}",
            "rmse": base + 0.01 * rng.normal(),
            "mae": 0.75,
            "fit_seconds": 1.0,
        }
        for model, base in (("baseline", 0.94), ("MF", 0.91), ("SVD++", 0.90))
        for k in range(1, 6)
    ]
    return pd.DataFrame(rows)


def test_fold_results_dots_and_means():
    per_fold = _per_fold()
    ax = plotting.plot_fold_results(per_fold, metric="rmse")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["baseline", "MF", "SVD++"]
    dots = sum(len(c.get_offsets()) for c in ax.collections)
    assert dots == len(per_fold) + 3  # five folds per model plus one mean marker each
    means = per_fold.groupby("model", sort=False)["rmse"].mean()
    assert [t.get_text().split(" ")[0] for t in ax.texts] == [f"{m:.4f}" for m in means]
    ax = plotting.plot_fold_results(per_fold, metric="rmse", sort=True)
    assert ax.get_yticklabels()[0].get_text() == means.idxmin()


def test_heatmap_cells_and_best_outline():
    table = pd.DataFrame(
        [
            {"factors": f, "reg": r, "valid_rmse": 1 - 0.01 * f + r}
            for f in (10, 20, 50)
            for r in (0.01, 0.1)
        ]
    )
    ax = plotting.plot_heatmap(table, index="factors", columns="reg", values="valid_rmse")
    assert len(ax.texts) == 6
    assert {t.get_text() for t in ax.texts} >= {"0.5100", "1.0000"}  # best and worst cells
    outline = [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]
    assert len(outline) == 1 and outline[0].get_xy() == (0, 2)  # factors 50, reg 0.01
    with pytest.raises(ValueError, match="lacks"):
        plotting.plot_heatmap(table, index="rank", columns="reg", values="valid_rmse")


def test_pca_puts_dominant_direction_first():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, size=(50, 6))
    x[:, 2] += np.linspace(-5, 5, 50)  # the dominant direction is the third axis
    coords, explained = plotting.pca_2d(x)
    assert coords.shape == (50, 2) and explained[0] > 0.95
    assert np.argmax(np.abs(coords[:, 0])) in (0, 49)
    assert np.corrcoef(coords[:, 0], x[:, 2])[0, 1] > 0.99  # sign fixed: loading positive
    assert np.abs(coords[:, 1]).max() < 1.0


def test_pca_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        plotting.pca_2d(np.ones(5))


def test_embeddings_scatter_and_highlight():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, size=(30, 4))
    x[:, 0] += np.linspace(-3, 3, 30)
    labels = np.where(np.arange(30) < 15, "left", "right")
    ax = plotting.plot_embeddings_2d(x, labels=labels, highlight={"far right": 29, "mid": 14})
    assert len(ax.collections[0].get_offsets()) == 30
    assert [t.get_text() for t in ax.texts] == ["far right", "mid"]
    far = ax.texts[0].xy
    assert far[0] == pytest.approx(plotting.pca_2d(x)[0][:, 0].max())
    assert ax.get_xlabel().startswith("PC1")
    with pytest.raises(ValueError, match="highlight"):
        plotting.plot_embeddings_2d(x, highlight={"nope": 30})


def test_plot_alignment_uniformity_labels_each_point():
    frame = pd.DataFrame(
        {"alignment": [0.8, 1.1], "uniformity": [-3.0, -2.5], "ndcg@20": [0.4, 0.3]},
        index=["bpr", "ssm"],
    )
    ax = plotting.plot_alignment_uniformity(frame, hue="ndcg@20")
    assert [t.get_text() for t in ax.texts] == ["bpr", "ssm"]
    assert "alignment" in ax.get_ylabel()
    with pytest.raises(ValueError, match="lacks"):
        plotting.plot_alignment_uniformity(frame.drop(columns="alignment"))


def _chain_history(chains: int = 1) -> pd.DataFrame:
    sweeps = np.arange(1, 31)
    frames = [
        pd.DataFrame(
            {
                "sweep": sweeps,
                "train_rmse": 1 / sweeps + 0.8,
                "alpha": 1.5 + 0 * sweeps,
                "cg_residual": 10.0 ** -(2 + sweeps % 3),
                "lambda_user": 20 / sweeps,
                "lambda_item": 30 / sweeps,
                **({"chain": k} if chains > 1 else {}),
            }
        )
        for k in range(chains)
    ]
    return pd.concat(frames, ignore_index=True)


def test_chain_panels_follow_the_history_columns():
    curve = pd.DataFrame({"samples": [1, 2, 3], "mean": [0.95, 0.93, 0.92]})
    axes = plotting.plot_chain(_chain_history(), burn_in=5, curve=curve, curve_label="u1 RMSE")
    labels = [ax.get_ylabel() for ax in axes]
    assert labels == [
        "training RMSE of the sample",
        "noise precision α",
        "CG relative residual",
        "factor precision",
        "u1 RMSE",
    ]
    assert [ax.get_yscale() for ax in axes[2:4]] == ["log", "log"]
    assert len(axes[3].get_lines()) == 3  # lambda_user, lambda_item and the burn-in line
    assert axes[0].get_lines()[-1].get_xdata()[0] == 5


def test_chain_draws_one_line_per_chain_and_names_missing_columns():
    axes = plotting.plot_chain(_chain_history(chains=2), columns=["train_rmse"], precisions=())
    assert len(axes) == 1 and len(axes[0].get_lines()) == 2
    with pytest.raises(ValueError, match="w0"):
        plotting.plot_chain(_chain_history(), columns=["w0"])
    with pytest.raises(ValueError, match="sweep"):
        plotting.plot_chain(pd.DataFrame({"train_rmse": [1.0]}))
