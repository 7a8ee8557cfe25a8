"""Your own data: load_ratings on files and DataFrames, and the CLI and service on them."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from mfutils.cli import main
from mfutils.data import DataFormatError, load_ratings
from mfutils.data.own_data import parse_columns
from mfutils.models import BiasedMF, FactorizationMachine, ImplicitALS
from mfutils.serving import Artifact, Recommender
from mfutils.serving.runner import BackgroundServer
from mfutils.serving.service import create_app

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Ratings with string ids: 60 visitors, 25 products, a few repeated pairs."""
    rng = np.random.default_rng(0)
    n = 900
    users = np.array([f"v{u:02d}" for u in rng.integers(0, 60, n)])
    items = np.array([f"p-{i}" for i in rng.integers(0, 25, n)])
    taste = (
        pd.Series(users).str[1:].astype(int) % 5 + pd.Series(items).str[2:].astype(int) % 5
    ).to_numpy()
    stars = np.clip(1 + taste // 2 + rng.integers(0, 2, n), 1, 5).astype(float)
    when = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**7, n), unit="s")
    return pd.DataFrame(
        {
            "visitor": users,
            "product": items,
            "stars": stars,
            "time": when.strftime("%Y-%m-%d %H:%M:%S"),
        }
    )


@pytest.fixture(scope="module")
def csv_file(frame, tmp_path_factory):
    path = tmp_path_factory.mktemp("own") / "ratings.csv"
    frame.to_csv(path, index=False)
    return path


COLUMNS = {"user": "visitor", "item": "product", "rating": "stars", "timestamp": "time"}


def test_a_csv_with_string_ids_loads_like_a_release(frame, csv_file):
    data = load_ratings(csv_file, **COLUMNS)
    assert data.name == "ratings" and not data.implicit
    assert list(data.user_ids) == sorted(set(frame.visitor))  # compact ids in raw-id order
    pairs = frame.drop_duplicates(["visitor", "product"])
    assert len(data) == len(pairs)  # one rating per pair: the latest kept
    latest = (
        frame.assign(t=pd.to_datetime(frame.time))
        .sort_values("t")
        .groupby(["visitor", "product"])
        .stars.last()
    )
    got = pd.Series(
        data.rating,
        index=pd.MultiIndex.from_arrays([data.user_ids[data.user], data.item_ids[data.item]]),
    )
    pd.testing.assert_series_equal(
        got.sort_index(), latest.sort_index(), check_names=False, check_dtype=False
    )
    assert data.rating_scale == (1.0, 5.0)
    assert data.timestamp.min() >= pd.Timestamp("2024-01-01").timestamp()


def test_gzip_tsv_parquet_and_a_dataframe_give_the_same_data(frame, csv_file, tmp_path):
    reference = load_ratings(csv_file, **COLUMNS)
    gz = tmp_path / "ratings.tsv.gz"
    with gzip.open(gz, "wt") as handle:
        frame.to_csv(handle, sep="\t", index=False)
    parquet = tmp_path / "ratings.parquet"
    frame.to_parquet(parquet)
    for source in (gz, parquet, frame):
        data = load_ratings(source, **COLUMNS)
        for column in ("user", "item", "rating", "timestamp"):
            np.testing.assert_array_equal(getattr(data, column), getattr(reference, column))


def test_default_column_names_and_integer_ids(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("userId,movieId,rating,timestamp\n10,7,4.5,100\n2,7,3,200\n10,8,1,300\n")
    data = load_ratings(path, rating_scale=(0.5, 5.0))
    assert data.user_ids.tolist() == [2, 10] and data.user_ids.dtype == np.int64
    assert data.rating_scale == (0.5, 5.0) and data.timestamp.tolist() == [100, 200, 300]


@pytest.mark.parametrize(
    "text, options, message",
    [
        ("user,item,rating\nu1,i1,4\nu2,i1,x\n", {}, r"line 3: column 'rating': the rating 'x'"),
        ("user,item,rating\nu1,,4\n", {}, r"line 2: column 'item': the id is empty"),
        ("user,item,rating\nu1,i1,7\n", {"rating_scale": (1, 5)}, r"line 2: the rating 7 lies"),
        (
            "user,item,rating\nu1,i1,4\nu1,i1,5\n",
            {"duplicates": "error"},
            r"line 3: user u1 rated item i1 already on line 2",
        ),
        ("visitor,item\nu1,i1\n", {}, r"line 1: no user column: name it with user="),
        (
            "user,item,when\nu1,i1,yesterday\n",
            {"timestamp": "when"},
            r"line 2: column 'when': the timestamp 'yesterday'",
        ),
        ("user,item\nu1,i1\n", {"rating": "stars"}, r"line 1: no column 'stars' for the rating"),
    ],
)
def test_bad_input_names_file_line_and_column(text, options, message, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=message) as err:
        load_ratings(path, **options)
    assert str(path) in str(err.value)


def test_events_fit_ranking_models_only(tmp_path):
    path = tmp_path / "events.csv"
    rows = [f"u{u},i{(u * 3 + k) % 12}" for u in range(20) for k in range(4)]
    path.write_text("user,item\n" + "\n".join(rows + rows[:5]) + "\n")  # repeats: kept
    events = load_ratings(path)
    assert events.implicit and len(events) == 85 and set(events.rating) == {1.0}
    assert events.subset(np.arange(10)).implicit
    ImplicitALS(n_factors=4, reg=1.0, device="cpu").fit(events)  # reg 30 collapses 85 events
    with pytest.raises(ValueError, match="holds events without ratings: fit a ranking model"):
        BiasedMF(device="cpu").fit(events)


def test_side_tables_feed_the_feature_models(frame, csv_file, tmp_path):
    items = pd.DataFrame(
        {
            "product": [f"p-{i}" for i in range(25)],
            "title": [f"Thing {i} ({2000 + i % 7})" for i in range(25)],
            "genres": ["a|b" if i % 2 else "c" for i in range(25)],
        }
    )
    users = pd.DataFrame({"visitor": sorted(set(frame.visitor)), "gender": "F", "age": 30})
    data = load_ratings(csv_file, **COLUMNS, items=items, users=users)
    assert list(data.items.columns) == ["title", "year", "genre_a", "genre_b", "genre_c"]
    assert data.items.loc[0, "year"] == 2000 and data.users["gender"].eq("F").all()
    model = FactorizationMachine(
        fields=("user", "item", "genres", "year", "gender"), epochs=2, device="cpu"
    ).fit(data)
    assert np.isfinite(model.predict_ratings(data)).all()


def test_parse_columns():
    assert parse_columns("user=a, item=b") == {"user": "a", "item": "b"}
    with pytest.raises(ValueError, match="'colour=c' is not ROLE=COLUMN"):
        parse_columns("user=a,colour=c")


def test_the_cli_trains_recommends_and_serves_own_data(frame, csv_file, tmp_path, capsys):
    out = tmp_path / "mf"
    columns = "user=visitor,item=product,rating=stars,timestamp=time"
    assert (
        main(
            [
                "train",
                "BiasedMF-ALS",
                "--ratings",
                str(csv_file),
                "--columns",
                columns,
                "-p",
                "n_factors=4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    info = Artifact.load(out).info
    assert info["data"]["dataset"] == "ratings" and info["data"]["split"] == "random"
    assert "rmse" in info["metrics"]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--ratings", str(csv_file), "--columns", columns]) == 0
    assert "random 20% holdout" in capsys.readouterr().out
    assert main(["recommend", str(out), "--user", "v03", "-k", "3", "--json"]) == 0
    body = capsys.readouterr().out
    assert '"item": "p-' in body
    assert main(["recommend", str(out), "--rated", "p-1=5", "p-2=1", "-k", "2"]) == 0
    assert "fold-in" in capsys.readouterr().out
    rec = Recommender(out, device="cpu")
    with (
        BackgroundServer(create_app(rec)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        reply = client.get("/users/v03/recommendations", params={"k": 3}).json()
        assert reply["user"] == "v03"
        expected = rec.recommend(["v03"], 3)[0].items.tolist()
        assert [row["item"] for row in reply["items"]] == expected
        assert client.get("/users/nobody/recommendations").status_code == 404
        similar = client.get("/items/p-3/similar", params={"k": 2}).json()
        assert len(similar["items"]) == 2


def test_the_cli_trains_a_ranking_model_on_a_parquet_event_log(frame, tmp_path, capsys):
    parquet = tmp_path / "events.parquet"
    frame[["visitor", "product", "time"]].to_parquet(parquet)
    out = tmp_path / "ials"
    assert (
        main(
            [
                "train",
                "iALS",
                "--ratings",
                str(parquet),
                "--columns",
                "user=visitor,item=product",
                "--split",
                "per-user",
                "-p",
                "n_factors=4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "ndcg@20" in Artifact.load(out).info["metrics"]
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "train",
                "BiasedMF",
                "--ratings",
                str(parquet),
                "--columns",
                "user=visitor,item=product",
                "--out",
                str(tmp_path / "no"),
            ]
        )
    assert exit_.value.code == 2
    assert "holds events without ratings" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_the_readme_command_on_the_fixture(kind, tmp_path, capsys):
    """`mfutils train BiasedMF-SGD --ratings tests/data/events.csv --columns
    user=uid,item=sku,rating=stars --split random --out a && mfutils recommend a --user u_17`."""
    source = ROOT / "tests" / "data" / "events.csv"
    if kind == "parquet":
        pd.read_csv(source).to_parquet(tmp_path / "events.parquet")
        source = tmp_path / "events.parquet"
    out = tmp_path / "a"
    assert (
        main(
            [
                "train",
                "BiasedMF-SGD",
                "--ratings",
                str(source),
                "--columns",
                "user=uid,item=sku,rating=stars",
                "--split",
                "random",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["recommend", str(out), "--user", "u_17", "-k", "5"]) == 0
    table = capsys.readouterr().out
    assert "top-5 for user u_17" in table and table.count("sku-") == 5
