"""MovieLens releases: locate (or download and extract) the files, parse them into :class:`Ratings`.

The files are looked for in ``<data_dir>/<name>/`` where ``data_dir`` is the ``data_dir``
argument, else ``$MFUTILS_DATA_DIR``, else ``pooch.os_cache("mfutils")``. Missing releases are
downloaded from GroupLens with :mod:`pooch` (MD5-checked) and extracted atomically. The MovieLens
license forbids redistribution: never commit the files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pooch
import requests

from mfutils.data import parsing
from mfutils.data.container import Ratings
from mfutils.data.parsing import DataFormatError, TableSpec

__all__ = ["DATASETS", "DATA_DIR_ENV", "DatasetInfo", "load_movielens", "resolve_data_dir"]

DATA_DIR_ENV = "MFUTILS_DATA_DIR"
_BASE_URL = "https://files.grouplens.org/datasets/movielens"
_FOLD_FILES = tuple(f"u{k}.test" for k in range(1, 6))
_YEAR_IN_TITLE = r"\((\d{4})\)\s*$"
_NO_GENRE = "(no genres listed)"


@dataclass(frozen=True)
class DatasetInfo:
    """One MovieLens release.

    Parameters
    ----------
    name : str
        Registry key, e.g. ``"ml-1m"``; also the folder the archive is extracted to.
    url : str
        The official GroupLens archive.
    md5 : str or None
        Published MD5 of the archive; ``None`` for releases that change over time.
    format : str
        File layout: ``"ml-100k"`` (``u.*``), ``"ml-1m"`` / ``"ml-10m"`` (``::``-separated
        ``.dat``, with and without ``users.dat``) or ``"csv"``.
    rating_scale : tuple of float
        ``(min, max)`` rating.
    folders : tuple of str
        Folder names accepted under the data directory.
    """

    name: str
    url: str
    md5: str | None
    format: str
    rating_scale: tuple[float, float]
    folders: tuple[str, ...]


@dataclass(frozen=True)
class _Layout:
    """Which file of a format holds what (``users`` is ``None`` without a user file)."""

    ratings: tuple[str, TableSpec]
    items: tuple[str, TableSpec]
    users: tuple[str, TableSpec] | None

    @property
    def files(self) -> tuple[str, ...]:
        side = () if self.users is None else (self.users[0],)
        return (self.ratings[0], self.items[0], *side)


_LAYOUTS = {
    "ml-100k": _Layout(
        ("u.data", parsing.ML100K_RATINGS),
        ("u.item", parsing.ML100K_ITEMS),
        ("u.user", parsing.ML100K_USERS),
    ),
    "ml-1m": _Layout(
        ("ratings.dat", parsing.DAT_RATINGS),
        ("movies.dat", parsing.DAT_MOVIES),
        ("users.dat", parsing.ML1M_USERS),
    ),
    "ml-10m": _Layout(
        ("ratings.dat", parsing.DAT_RATINGS), ("movies.dat", parsing.DAT_MOVIES), None
    ),
    "csv": _Layout(("ratings.csv", parsing.CSV_RATINGS), ("movies.csv", parsing.CSV_MOVIES), None),
}


def _release(
    name: str, md5: str | None, fmt: str, scale: tuple[float, float], *extra_folders: str
) -> DatasetInfo:
    return DatasetInfo(name, f"{_BASE_URL}/{name}.zip", md5, fmt, scale, (name, *extra_folders))


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        _release("ml-100k", "0e33842e24a9c977be4e0107933c0723", "ml-100k", (1.0, 5.0)),
        _release("ml-1m", "c4d9eecfca2ab87c1945afe126590906", "ml-1m", (1.0, 5.0)),
        _release("ml-10m", "ce571fd55effeba0271552578f2648bd", "ml-10m", (0.5, 5.0), "ml-10M100K"),
        _release("ml-20m", "cd245b17a1ae2cc31bb14903e1204af3", "csv", (0.5, 5.0)),
        _release("ml-25m", "6b51fb2759a8657d3bfcbfc42b592ada", "csv", (0.5, 5.0)),
        _release("ml-latest-small", None, "csv", (0.5, 5.0)),
    )
}


def load_movielens(
    name: str, *, data_dir: str | Path | None = None, download: bool = True
) -> Ratings:
    """Load a MovieLens release as :class:`Ratings`.

    Parameters
    ----------
    name : str
        One of ``DATASETS``: ``"ml-100k"``, ``"ml-1m"``, ``"ml-10m"``, ``"ml-20m"``,
        ``"ml-25m"``, ``"ml-latest-small"``.
    data_dir : str or Path, optional
        Folder holding ``<name>/`` (for ML-10M, ``ml-10m/`` or ``ml-10M100K/``). Defaults to
        ``$MFUTILS_DATA_DIR``, else ``pooch.os_cache("mfutils")``.
    download : bool
        Download and extract the official archive into ``data_dir`` when the files are absent.
        The archive's MD5 is checked against the published value; ``ml-latest-small`` changes
        over time and has no fixed hash, so it is downloaded unchecked.

    Returns
    -------
    Ratings
        Compact ids ordered by raw id, ratings float32, Unix timestamps int64. ``items`` (all
        releases) holds ``title``, ``year`` (nullable Int64, from the release date or the
        ``"(1995)"`` title suffix) and 0/1 ``genre_<Name>`` columns; movies listed in the item
        file without any rating are kept in the id space (ML-1M: 3,883 items, 3,706 rated).
        ``users`` is ``age, gender, occupation, zip`` for ML-100K and ML-1M (ML-1M ``age`` and
        ``occupation`` are the release's integer codes), ``None`` otherwise. For ML-100K with
        its ``u1..u5.test`` files, ``fold[r] == k`` iff rating ``r`` is in ``u{k}.test``.

    Raises
    ------
    ValueError
        Unknown ``name``; a downloaded archive whose hash differs from the published one (it is
        not kept) or that is not a valid zip (it is removed).
    FileNotFoundError
        The files are absent and ``download=False``, or the download failed.
    DataFormatError
        A malformed file; the message names the file and the line. A (user, item) pair
        rated twice is refused (naming both lines) rather than resolved silently, and so is a
        ratings file without ratings. Blank lines at the end of a file are skipped; a latin-1
        side file (``u.item``, ``movies.dat``) that was re-encoded as UTF-8 is read as UTF-8,
        with a logged warning.
    """
    info = _dataset_info(name)
    root = resolve_data_dir(data_dir)
    folder = _find_folder(root, info)
    if folder is None:
        if not download:
            raise _missing_error(root, info)
        _download(root, info)
        folder = _find_folder(root, info)
        if folder is None:
            raise _missing_error(root, info, note=f"the archive {info.url} lacked them.")
    return _read_release(folder, info)


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """``data_dir``, else ``$MFUTILS_DATA_DIR``, else ``pooch.os_cache("mfutils")``."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    return Path(chosen if chosen is not None else pooch.os_cache("mfutils")).expanduser()


def _dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown MovieLens release {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


# ---------------------------------------------------------------------- locating, downloading
def _find_folder(root: Path, info: DatasetInfo) -> Path | None:
    files = _LAYOUTS[info.format].files
    for folder in (root / name for name in info.folders):
        if all((folder / f).is_file() for f in files):
            return folder
    return None


def _missing_error(root: Path, info: DatasetInfo, *, note: str = "") -> FileNotFoundError:
    files = ", ".join(_LAYOUTS[info.format].files)
    folders = " or ".join(str(root / f) for f in info.folders)
    where = (
        f"Download {info.url} and extract it so that these files lie in "
        f"{root / info.name}, or point data_dir= or the {DATA_DIR_ENV} environment "
        f"variable at the folder that holds {info.name}/"
    )
    if note:  # the download was tried: say why it failed first, not "download=True"
        return FileNotFoundError(
            f"MovieLens {info.name!r} not found in {folders} and {note} {where}."
        )
    return FileNotFoundError(
        f"MovieLens {info.name!r} not found: looked for {files} in "
        f"{folders}. {where}, or call load_movielens({info.name!r}, "
        "download=True)."
    )


def _download(root: Path, info: DatasetInfo) -> None:
    """Fetch ``<root>/<name>.zip`` (hash-checked by pooch) and extract it to ``<root>/<name>``."""
    known_hash = None if info.md5 is None else f"md5:{info.md5}"
    try:
        archive = pooch.retrieve(
            info.url, known_hash=known_hash, fname=f"{info.name}.zip", path=root, progressbar=True
        )
    except (requests.RequestException, OSError) as err:
        raise _missing_error(root, info, note=f"downloading it failed ({err}).") from err
    except ValueError as err:
        raise ValueError(
            f"download of {info.url} failed its checksum and was not kept: {err}"
        ) from err
    _extract(Path(archive), root / info.name)


def _extract(archive: Path, target: Path) -> None:
    """Unzip into a temporary sibling of ``target``, renamed to ``target`` once complete.

    A corrupt archive is removed so that the next call downloads it afresh.
    """
    if target.exists():
        raise FileExistsError(f"{target} exists but is incomplete; remove it and retry")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(staging)
        _single_top_folder(staging).rename(target)
    except (zipfile.BadZipFile, EOFError) as err:
        archive.unlink(missing_ok=True)
        raise ValueError(
            f"{archive} is not a valid zip archive ({err}); it was removed, retry to download "
            "it again"
        ) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _single_top_folder(folder: Path) -> Path:
    """The archive's one top-level folder (e.g. ``ml-100k/``), else ``folder`` itself."""
    entries = list(folder.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


# ---------------------------------------------------------------------- parsing a release
def _read_release(folder: Path, info: DatasetInfo) -> Ratings:
    layout = _LAYOUTS[info.format]
    ratings_path, ratings_spec = folder / layout.ratings[0], layout.ratings[1]
    frame = parsing.read_table(ratings_path, ratings_spec, scale=info.rating_scale)
    if frame.empty:
        raise DataFormatError(ratings_path, None, "holds no ratings")
    items, item_ids = _read_side_file(folder, *layout.items)
    item = _encode_known(frame["item"], item_ids, ratings_path, ratings_spec, layout.items[0])
    if layout.users is None:
        # pd.unique (hashing) is much faster than np.unique on tens of millions of ids
        users, user_ids = None, np.sort(pd.unique(frame["user"].to_numpy()))
        user = np.searchsorted(user_ids, frame["user"].to_numpy())
    else:
        users, user_ids = _read_side_file(folder, *layout.users)
        user = _encode_known(frame["user"], user_ids, ratings_path, ratings_spec, layout.users[0])
    _refuse_repeated_pairs(user, item, len(item_ids), ratings_path, ratings_spec, frame)
    fold = None
    if info.format == "ml-100k":
        fold = _canonical_folds(folder, user * len(item_ids) + item, user_ids, item_ids)
    return Ratings(
        user=user,
        item=item,
        rating=frame["rating"].to_numpy(dtype=np.float32),
        timestamp=frame["timestamp"].to_numpy(dtype=np.int64),
        n_users=len(user_ids),
        n_items=len(item_ids),
        user_ids=user_ids,
        item_ids=item_ids,
        users=None if users is None else _user_table(users),
        items=_item_table(items, info.format),
        name=info.name,
        rating_scale=info.rating_scale,
        fold=fold,
    )


def _read_side_file(folder: Path, name: str, spec: TableSpec) -> tuple[pd.DataFrame, np.ndarray]:
    """A user or item file and its sorted raw ids (first column); a repeated id is an error."""
    path = folder / name
    table = parsing.read_table(path, spec)
    ids = table[spec.columns[0]]
    repeated = ids.duplicated().to_numpy()
    if repeated.any():
        row = int(np.argmax(repeated))
        raise DataFormatError(path, spec.line_of(row), f"id {ids.iloc[row]} appears twice")
    return table, np.sort(ids.to_numpy(dtype=np.int64))


def _refuse_repeated_pairs(
    user: np.ndarray,
    item: np.ndarray,
    n_items: int,
    path: Path,
    spec: TableSpec,
    frame: pd.DataFrame,
) -> None:
    """A (user, item) pair rated twice is an error naming both lines: no release has one,
    so it means an edited or concatenated file, and no choice between the two is safe."""
    key = pd.Series(user.astype(np.int64) * n_items + item)
    repeated = key.duplicated().to_numpy()
    if repeated.any():
        row = int(np.argmax(repeated))
        first = int(np.argmax(key.to_numpy() == key.iloc[row]))
        raise DataFormatError(
            path,
            spec.line_of(row),
            f"user {frame['user'].iloc[row]} rated item "
            f"{frame['item'].iloc[row]} already on line {spec.line_of(first)}"
            " (each pair must appear once; remove one of the two)",
        )


def _encode_known(
    raw: pd.Series, known: np.ndarray, path: Path, spec: TableSpec, reference: str
) -> np.ndarray:
    """Compact ids of ``raw`` among sorted ``known``; an unknown id names its line."""
    codes = _encode(raw.to_numpy(dtype=np.int64), known)
    if (codes < 0).any():
        row = int(np.argmax(codes < 0))
        raise DataFormatError(
            path, spec.line_of(row), f"{raw.name} id {raw.iloc[row]} is not in {reference}"
        )
    return codes


def _encode(raw: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Positions of ``raw`` in sorted ``known``; ``-1`` where absent."""
    position = np.minimum(np.searchsorted(known, raw), max(len(known) - 1, 0))
    found = known[position] == raw if len(known) else np.zeros(len(raw), dtype=bool)
    return np.where(found, position, -1).astype(np.int64)


def _canonical_folds(
    folder: Path, keys: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray
) -> np.ndarray | None:
    """ML-100K: the ``u{k}.test`` file (k = 1..5) holding each rating of ``u.data``.

    ``keys`` identifies the ratings of ``u.data`` as ``user * n_items + item``.
    """
    missing = [f for f in _FOLD_FILES if not (folder / f).is_file()]
    if len(missing) == len(_FOLD_FILES):
        return None
    if missing:
        raise FileNotFoundError(f"{folder} has some canonical fold files but lacks {missing}")
    order = np.argsort(keys)
    fold = np.zeros(len(keys), dtype=np.int8)
    spec = parsing.ML100K_RATINGS
    for k, name in enumerate(_FOLD_FILES, start=1):
        rows = order[_fold_positions(folder / name, keys[order], user_ids, item_ids)]
        taken = fold[rows] != 0
        if taken.any():
            line = spec.line_of(int(np.argmax(taken)))
            raise DataFormatError(folder / name, line, "this rating is already in an earlier fold")
        fold[rows] = k
    if (fold == 0).any():
        line = spec.line_of(int(np.argmax(fold == 0)))
        reason = f"this rating is in none of {', '.join(_FOLD_FILES)}"
        raise DataFormatError(folder / "u.data", line, reason)
    return fold


def _fold_positions(
    path: Path, sorted_keys: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray
) -> np.ndarray:
    """Positions in ``sorted_keys`` of the ratings listed in fold file ``path``."""
    spec = parsing.ML100K_RATINGS
    test = parsing.read_table(path, spec)
    user = _encode_known(test["user"], user_ids, path, spec, "u.data")
    item = _encode_known(test["item"], item_ids, path, spec, "u.data")
    keys = user * len(item_ids) + item
    positions = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    absent = sorted_keys[positions] != keys
    if absent.any():
        row = int(np.argmax(absent))
        reason = f"rating of user {test['user'].iloc[row]} on item {test['item'].iloc[row]} "
        raise DataFormatError(path, spec.line_of(row), reason + "is not in u.data")
    return positions


# ---------------------------------------------------------------------- side tables
def _user_table(users: pd.DataFrame) -> pd.DataFrame:
    table = users.sort_values("user", kind="stable").reset_index(drop=True)
    table.index.name = "user"
    return table[["age", "gender", "occupation", "zip"]]


def _item_table(items: pd.DataFrame, fmt: str) -> pd.DataFrame:
    items = items.sort_values("item", kind="stable").reset_index(drop=True)
    year = _year_from_title(items["title"])
    if fmt == "ml-100k":
        genres = items[[c for c in items.columns if c.startswith("genre_")]].astype(np.int8)
        released = pd.to_datetime(items["release_date"], format="%d-%b-%Y", errors="coerce")
        year = pd.Series(released.dt.year, dtype="Int64").fillna(year)
    else:
        dummies = items["genres"].str.get_dummies(sep="|").rename(columns={_NO_GENRE: "unknown"})
        genres = dummies.add_prefix("genre_").astype(np.int8)
    table = pd.concat([items[["title"]], year.rename("year"), genres], axis=1)
    table.index.name = "item"
    return table


def _year_from_title(title: pd.Series) -> pd.Series:
    digits = title.str.extract(_YEAR_IN_TITLE, expand=False)
    return pd.to_numeric(digits, errors="coerce").astype("Int64")
