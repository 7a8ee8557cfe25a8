"""MovieLens loading: the real ML-100K, tiny hand-written releases, bad input, downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pooch
import pytest
import requests

from mfutils.data import DATASETS, DataFormatError, load_movielens
from mfutils.data.movielens import resolve_data_dir

# ---------------------------------------------------------------------- tiny releases
U_DATA = [
    "1\t1\t5\t874965758",
    "1\t2\t3\t876893171",
    "2\t1\t4\t878542960",
    "2\t3\t1\t876893119",
    "3\t2\t2\t889751712",
]


def _flags(*genres: int) -> str:
    return "|".join("1" if g in genres else "0" for g in range(19))


U_ITEM = [
    f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story|{_flags(3, 4)}",
    f"2|GoldenEye (1995)|01-Jan-1995|||{_flags(1, 2, 16)}",
    f"3|Four Rooms (1995)||||{_flags(16)}",
    f"4|Café Society (1995)|01-Jan-1996|||{_flags(8)}",  # latin-1, never rated
]
U_USER = [
    "1|24|M|technician|85711",
    "2|53|F|other|94043",
    "3|23|M|writer|32067",
    "4|33|F|other|01002",  # never rated; the zip code keeps its leading zero
]


def _write(path: Path, lines: list[str] | bytes, *, encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = lines if isinstance(lines, bytes) else "".join(f"{x}\n" for x in lines).encode(encoding)
    path.write_bytes(data)


def write_ml100k(folder: Path, *, data: list[str] | bytes = U_DATA, folds: bool = True) -> Path:
    """A tiny ML-100K-shaped folder; rating ``k`` of ``U_DATA`` is in ``u{k}.test``."""
    _write(folder / "u.data", data)
    _write(folder / "u.item", U_ITEM, encoding="latin-1")
    _write(folder / "u.user", U_USER)
    for k, line in enumerate(U_DATA[:5] if folds else [], start=1):
        _write(folder / f"u{k}.test", [line])
    return folder


def write_ml1m(folder: Path) -> Path:
    _write(folder / "ratings.dat", ["1::10::5::978300760", "1::20::3::978302109", "6::10::4::97"])
    movies = [
        "10::Toy Story (1995)::Animation|Children's|Comedy",
        "20::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi",
        "30::Amélie (2001)::Comedy|Romance",  # never rated
    ]
    _write(folder / "movies.dat", movies, encoding="latin-1")
    _write(folder / "users.dat", ["1::F::1::10::48067", "6::M::56::16::70072"])
    return folder


def write_ml10m(folder: Path) -> Path:
    _write(folder / "ratings.dat", ["1::122::5::838985046", "2::185::4.5::838983525"])
    _write(folder / "movies.dat", ["122::Boomerang (1992)::Comedy", "185::Net, The (1995)::Action"])
    return folder


CSV_RATINGS = ["userId,movieId,rating,timestamp", "1,1,4.0,964982703", "2,3,0.5,964981247"]
CSV_MOVIES = [
    "movieId,title,genres",
    "1,Toy Story (1995),Adventure|Animation|Children",
    '3,"American President, The (1995)",Comedy|Drama|Romance',
    "7,Unknown Film,(no genres listed)",  # no year, no genres, never rated
]


def write_csv_release(folder: Path, *, ratings: list[str] = CSV_RATINGS) -> Path:
    _write(folder / "ratings.csv", ratings)
    _write(folder / "movies.csv", CSV_MOVIES)
    return folder


# ---------------------------------------------------------------------- real ML-100K
@pytest.mark.slow
def test_real_ml100k_sizes_and_scale(ml100k):
    assert (ml100k.n_users, ml100k.n_items, len(ml100k)) == (943, 1682, 100_000)
    assert ml100k.name == "ml-100k" and ml100k.rating_scale == (1.0, 5.0)
    assert set(np.unique(ml100k.rating)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ml100k.rating.dtype == np.float32 and ml100k.timestamp.dtype == np.int64
    assert np.array_equal(ml100k.user_ids, np.arange(1, 944))
    assert np.array_equal(ml100k.item_ids, np.arange(1, 1683))


@pytest.mark.slow
def test_real_ml100k_canonical_folds_partition(ml100k):
    assert ml100k.fold is not None and ml100k.fold.dtype == np.int8
    assert np.array_equal(np.bincount(ml100k.fold), [0] + [20_000] * 5)


@pytest.mark.slow
def test_real_ml100k_side_tables(ml100k):
    assert list(ml100k.users.columns) == ["age", "gender", "occupation", "zip"]
    assert len(ml100k.users) == 943 and set(ml100k.users["gender"]) == {"M", "F"}
    genres = [c for c in ml100k.items.columns if c.startswith("genre_")]
    assert len(genres) == 19 and len(ml100k.items) == 1682
    assert ml100k.items.loc[0, "title"] == "Toy Story (1995)"
    assert ml100k.items.loc[0, "year"] == 1995
    assert ml100k.items[genres].isin([0, 1]).all().all()
    assert ml100k.items["year"].dtype == "Int64"


@pytest.mark.slow
def test_real_ml100k_raw_id_round_trip(ml100k, shared_data_dir):
    raw = pd.read_csv(
        shared_data_dir / "ml-100k" / "u.data", sep="\t", names=["user", "item", "r", "t"]
    )
    frame = ml100k.to_frame(original_ids=True)
    assert np.array_equal(frame["user"], raw["user"]) and np.array_equal(frame["item"], raw["item"])
    assert np.array_equal(ml100k.encode_users(raw["user"]), ml100k.user)
    assert np.array_equal(ml100k.encode_items(raw["item"]), ml100k.item)


# ---------------------------------------------------------------------- tiny releases
def test_tiny_ml100k(tmp_path):
    write_ml100k(tmp_path / "ml-100k")
    data = load_movielens("ml-100k", data_dir=tmp_path, download=False)
    assert (data.n_users, data.n_items, len(data)) == (4, 4, 5)
    assert np.array_equal(data.user, [0, 0, 1, 1, 2]) and np.array_equal(data.item, [0, 1, 0, 2, 1])
    assert np.array_equal(data.fold, [1, 2, 3, 4, 5])
    assert data.items.loc[3, "title"] == "Café Society (1995)"
    assert data.items["year"].tolist() == [1995, 1995, 1995, 1996]  # date first, else title
    assert data.items.loc[0, ["genre_Animation", "genre_Children's", "genre_Action"]].tolist() == [
        1,
        1,
        0,
    ]
    assert data.users.loc[3, "zip"] == "01002"


def test_tiny_ml100k_without_fold_files(tmp_path):
    write_ml100k(tmp_path / "ml-100k", folds=False)
    assert load_movielens("ml-100k", data_dir=tmp_path, download=False).fold is None


def test_some_fold_files_missing(tmp_path):
    (write_ml100k(tmp_path / "ml-100k") / "u3.test").unlink()
    with pytest.raises(FileNotFoundError, match="u3.test"):
        load_movielens("ml-100k", data_dir=tmp_path, download=False)


def test_rating_in_no_fold(tmp_path):
    _write(write_ml100k(tmp_path / "ml-100k") / "u5.test", b"")
    with pytest.raises(DataFormatError, match=r"u\.data, line 5: .*none of"):
        load_movielens("ml-100k", data_dir=tmp_path, download=False)


def test_rating_in_two_folds(tmp_path):
    _write(write_ml100k(tmp_path / "ml-100k") / "u5.test", [U_DATA[4], U_DATA[0]])
    with pytest.raises(DataFormatError, match=r"u5\.test, line 2: .*earlier fold"):
        load_movielens("ml-100k", data_dir=tmp_path, download=False)


def test_tiny_ml1m_keeps_unrated_movies(tmp_path):
    write_ml1m(tmp_path / "ml-1m")
    data = load_movielens("ml-1m", data_dir=tmp_path, download=False)
    assert (data.n_users, data.n_items, len(data)) == (2, 3, 3)
    assert np.array_equal(data.item_ids, [10, 20, 30]) and data.item_counts()[2] == 0
    assert data.items.loc[2, "title"] == "Amélie (2001)"
    assert data.items["year"].tolist() == [1995, 1977, 2001]
    assert data.items.loc[1, "title"].startswith("Star Wars: Episode IV")
    assert data.items.loc[0, ["genre_Children's", "genre_Action"]].tolist() == [1, 0]
    assert list(data.users.columns) == ["age", "gender", "occupation", "zip"]
    assert data.users.loc[1].tolist() == [56, "M", 16, "70072"]


@pytest.mark.parametrize("folder", ["ml-10m", "ml-10M100K"])
def test_tiny_ml10m_either_folder_name(tmp_path, folder):
    write_ml10m(tmp_path / folder)
    data = load_movielens("ml-10m", data_dir=tmp_path, download=False)
    assert data.users is None and data.rating_scale == (0.5, 5.0)
    assert data.rating.tolist() == [5.0, 4.5]
    assert data.items.loc[1, "title"] == "Net, The (1995)"


def test_tiny_csv_release(tmp_path):
    write_csv_release(tmp_path / "ml-latest-small")
    data = load_movielens("ml-latest-small", data_dir=tmp_path, download=False)
    assert (data.n_users, data.n_items, len(data)) == (2, 3, 2)
    assert data.items["title"].tolist()[1] == "American President, The (1995)"
    assert data.items["year"].isna().tolist() == [False, False, True]
    assert data.items.loc[2, "genre_unknown"] == 1  # "(no genres listed)"
    assert data.users is None


def test_data_dir_from_environment(tmp_path, monkeypatch):
    write_ml10m(tmp_path / "ml-10m")
    monkeypatch.setenv("MFUTILS_DATA_DIR", str(tmp_path))
    assert len(load_movielens("ml-10m", download=False)) == 2
    monkeypatch.delenv("MFUTILS_DATA_DIR")
    assert resolve_data_dir() == Path(pooch.os_cache("mfutils"))


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        (b"3\t2\t2", "expected 4 fields"),
        (b"3\t2\t2\t889751712\t7", "expected 4 fields"),
        (b"3\tabc\t2\t889751712", "not a number: 'abc'"),
        (b"3\t2.5\t2\t889751712", "not an integer"),
        (b"3\t2\t7\t889751712", "outside the rating scale"),
        (b"3\t2\t\xff\t889751712", "cannot decode byte 0xff"),
        (b"", "empty line"),
    ],
)
def test_bad_u_data_line_is_located(tmp_path, bad_line, reason):
    lines = [x.encode() for x in U_DATA]
    lines[2] = bad_line
    write_ml100k(tmp_path / "ml-100k", data=b"\n".join(lines) + b"\n")
    with pytest.raises(DataFormatError, match=reason) as caught:
        load_movielens("ml-100k", data_dir=tmp_path, download=False)
    assert caught.value.line == 3 and caught.value.path.name == "u.data"
    assert "u.data, line 3:" in str(caught.value)


def test_bad_csv_line_counts_the_header(tmp_path):
    write_csv_release(tmp_path / "ml-25m", ratings=[*CSV_RATINGS, "2,7,5.5,964981247"])
    with pytest.raises(DataFormatError, match=r"ratings\.csv, line 4: rating 5\.5 is outside"):
        load_movielens("ml-25m", data_dir=tmp_path, download=False)


def test_bad_dat_line(tmp_path):
    folder = write_ml1m(tmp_path / "ml-1m")
    _write(folder / "ratings.dat", ["1::10::5::978300760", "1::20::3"])
    with pytest.raises(DataFormatError, match=r"ratings\.dat, line 2: expected 4 fields"):
        load_movielens("ml-1m", data_dir=tmp_path, download=False)


def test_bad_item_file_line(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    _write(folder / "u.item", [*U_ITEM[:3], "4|Short line|01-Jan-1996"], encoding="latin-1")
    with pytest.raises(DataFormatError, match=r"u\.item, line 4: expected 24 fields"):
        load_movielens("ml-100k", data_dir=tmp_path, download=False)


def test_rated_item_missing_from_item_file(tmp_path):
    write_ml100k(tmp_path / "ml-100k", data=[*U_DATA, "3\t9\t4\t889751712"], folds=False)
    with pytest.raises(DataFormatError, match=r"u\.data, line 6: item id 9 is not in u\.item"):
        load_movielens("ml-100k", data_dir=tmp_path, download=False)


def test_repeated_item_id(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    _write(folder / "u.item", [*U_ITEM, U_ITEM[1]], encoding="latin-1")
    with pytest.raises(DataFormatError, match=r"u\.item, line 5: id 2 appears twice"):
        load_movielens("ml-100k", data_dir=tmp_path, download=False)


def test_data_format_error_pickles():
    error = pickle.loads(pickle.dumps(DataFormatError("x/u.data", 7, "bad")))
    assert (error.path, error.line, error.reason, str(error)) == (
        Path("x/u.data"),
        7,
        "bad",
        "x/u.data, line 7: bad",
    )


def test_unknown_release_lists_the_known_ones():
    with pytest.raises(ValueError, match="ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ml-latest-small"):
        load_movielens("ml-42k", data_dir="/nonexistent")


def test_missing_files_without_download(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        load_movielens("ml-100k", data_dir=tmp_path, download=False)
    message = str(caught.value)
    expected = ("u.data", str(tmp_path / "ml-100k"), DATASETS["ml-100k"].url, "MFUTILS_DATA_DIR")
    assert all(part in message for part in expected)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- downloads (faked)
def _zip_of(folder: Path, top: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted(folder.iterdir()):
            bundle.write(path, f"{top}/{path.name}")
    return buffer.getvalue()


@pytest.fixture
def serve(monkeypatch):
    """Make pooch's HTTP downloader write ``payload`` (or raise it); returns the URLs asked."""
    asked: list[str] = []

    def install(payload: bytes | Exception) -> list[str]:
        def fake_download(self, url, output_file, pooch_obj, check_only=False):
            asked.append(url)
            if isinstance(payload, Exception):
                raise payload
            Path(output_file).write_bytes(payload)

        monkeypatch.setattr(pooch.HTTPDownloader, "__call__", fake_download)
        return asked

    return install


def _set_md5(monkeypatch, name: str, payload: bytes) -> None:
    info = dataclasses.replace(DATASETS[name], md5=hashlib.md5(payload).hexdigest())
    monkeypatch.setitem(DATASETS, name, info)


def test_download_extract_and_load(tmp_path, serve, monkeypatch):
    archive = _zip_of(write_ml100k(tmp_path / "src"), "ml-100k")
    _set_md5(monkeypatch, "ml-100k", archive)
    asked = serve(archive)
    cache = tmp_path / "cache"
    data = load_movielens("ml-100k", data_dir=cache)
    assert len(data) == 5 and np.array_equal(data.fold, [1, 2, 3, 4, 5])
    assert asked == [DATASETS["ml-100k"].url]
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k", "ml-100k.zip"]  # no leftovers
    assert len(load_movielens("ml-100k", data_dir=cache)) == 5 and len(asked) == 1


def test_download_renames_ml10m_folder(tmp_path, serve, monkeypatch):
    archive = _zip_of(write_ml10m(tmp_path / "src"), "ml-10M100K")
    _set_md5(monkeypatch, "ml-10m", archive)
    serve(archive)
    assert len(load_movielens("ml-10m", data_dir=tmp_path / "cache")) == 2
    assert (tmp_path / "cache" / "ml-10m" / "ratings.dat").is_file()


def test_download_without_known_hash(tmp_path, serve):
    assert DATASETS["ml-latest-small"].md5 is None
    serve(_zip_of(write_csv_release(tmp_path / "src"), "ml-latest-small"))
    assert len(load_movielens("ml-latest-small", data_dir=tmp_path / "cache")) == 2


def test_wrong_hash_is_reported_and_not_kept(tmp_path, serve):
    archive = _zip_of(write_ml100k(tmp_path / "src"), "ml-100k")
    serve(archive)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="checksum") as caught:
        load_movielens("ml-100k", data_dir=cache)
    message = str(caught.value)
    assert "ml-100k.zip" in message and DATASETS["ml-100k"].md5 in message
    assert hashlib.md5(archive).hexdigest() in message
    assert list(cache.iterdir()) == []


def test_corrupt_archive_is_removed(tmp_path, serve, monkeypatch):
    payload = b"this is not a zip archive"
    _set_md5(monkeypatch, "ml-100k", payload)
    serve(payload)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="not a valid zip archive"):
        load_movielens("ml-100k", data_dir=cache)
    assert list(cache.iterdir()) == []


def test_network_error_becomes_one_clear_error(tmp_path, serve):
    serve(requests.ConnectionError("no route to host"))
    with pytest.raises(FileNotFoundError, match="no route to host") as caught:
        load_movielens("ml-1m", data_dir=tmp_path)
    assert "MFUTILS_DATA_DIR" in str(caught.value) and DATASETS["ml-1m"].url in str(caught.value)
    message = str(caught.value)  # the failure first; never "download=True", the step that failed
    assert message.index("no route to host") < message.index("MFUTILS_DATA_DIR")
    assert "download=True" not in message
