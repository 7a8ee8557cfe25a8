"""Your own ratings or events as :class:`Ratings`: a CSV/TSV/Parquet file or a DataFrame.

:func:`load_ratings` follows the conventions of :func:`mfutils.data.load_movielens`: compact
ids ``0..n-1`` in sorted raw-id order with the maps back (``user_ids``, ``item_ids``; raw ids
may be strings), ratings float32, Unix-second timestamps int64, and errors that name the file,
the line and the column. Without a rating column the rows are implicit events (a click, a
play, a purchase): every row becomes an interaction of strength 1, the result is marked
``implicit``, and only ranking models fit it.

Duplicate policy. Events keep every row (iALS counts repeats into its confidence,
``c = 1 + alpha * count``). Ratings keep one rating per (user, item) pair: by default the
latest (by timestamp, else the later row), the number dropped logged; ``duplicates="error"``
refuses them, naming both lines, as the MovieLens loader does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mfutils.data.container import Ratings
from mfutils.data.movielens import _year_from_title
from mfutils.data.parsing import DataFormatError

__all__ = ["DEFAULT_COLUMNS", "load_ratings", "parse_columns"]

log = logging.getLogger(__name__)

# Column names tried, in order, when a column is not named explicitly (case-insensitive).
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "user": ("user", "user_id", "userid", "uid", "customer_id", "visitor_id"),
    "item": ("item", "item_id", "itemid", "iid", "movieid", "movie_id", "product_id"),
    "rating": ("rating", "score", "stars"),
    "timestamp": ("timestamp", "time", "ts", "datetime", "date", "event_time"),
}
DUPLICATES = ("last", "error")
_PARQUET = (".parquet", ".pq")


def parse_columns(text: str) -> dict[str, str]:
    """``"user=visitor,item=product"`` (the CLI's ``--columns``) as keyword arguments."""
    mapping = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in DEFAULT_COLUMNS or not value.strip():
            raise ValueError(
                f"--columns {text!r}: {part!r} is not ROLE=COLUMN with ROLE one "
                f"of {', '.join(DEFAULT_COLUMNS)}"
            )
        mapping[key.strip()] = value.strip()
    return mapping


def load_ratings(
    source: str | Path | pd.DataFrame,
    *,
    user: str | None = None,
    item: str | None = None,
    rating: str | bool | None = None,
    timestamp: str | bool | None = None,
    sep: str | None = None,
    rating_scale: tuple[float, float] | None = None,
    duplicates: str = "last",
    users: str | Path | pd.DataFrame | None = None,
    items: str | Path | pd.DataFrame | None = None,
    name: str | None = None,
    chunksize: int = 1 << 20,
    progress: bool = False,
) -> Ratings:
    """Read a table of ratings or events.

    Parameters
    ----------
    source : path or pandas.DataFrame
        CSV or TSV (``.gz`` and other compressions are read transparently; the separator is
        ``sep``, else ``\\t`` for ``.tsv`` and ``,`` otherwise), Parquet (``.parquet``,
        ``.pq``; needs pyarrow), or a DataFrame.
    user, item : str, optional
        The id columns; default the first of :data:`DEFAULT_COLUMNS` present.
    rating : str, bool or None
        The rating column. ``None``: a default name if present, else none; ``False``: none
        even if present. Without one the rows are implicit events (``Ratings.implicit``).
    timestamp : str, bool or None
        The time column: Unix seconds, or dates pandas parses. ``None``: a default name if
        present; ``False`` or absent: every timestamp 0.
    sep : str, optional
        Field separator of a text file.
    rating_scale : (low, high), optional
        The scale; default the data's smallest and largest rating (``(1, 1)`` for events). A
        rating outside a given scale is an error naming its line.
    duplicates : {"last", "error"}
        What to do with a (user, item) pair rated twice (see the module docstring).
    users, items : path or DataFrame, optional
        Side tables keyed by the raw id in the column named like ``user`` / ``item`` (else
        their first column). Users: any of ``age``, ``gender``, ``occupation``, ``zip``. Items:
        ``title``, ``year`` (else taken from a ``"(1995)"`` title suffix) and ``genres``
        (``|``-separated) or ``genre_*`` 0/1 columns. Ids the ratings do not use are dropped;
        ids without a row get missing values.
    name : str, optional
        The data set's name; default the file's stem (``"dataframe"`` for a DataFrame).
    chunksize : int
        Rows per chunk when reading a text file (with a progress bar if ``progress``).

    Returns
    -------
    Ratings

    Raises
    ------
    DataFormatError
        A missing column, a missing id, a rating that is not a number or lies off the scale,
        a timestamp that does not parse, or (``duplicates="error"``) a repeated pair; the
        message names the file, the line (1-based, the header is line 1) and the column.
    FileNotFoundError
        ``source`` does not exist.
    """
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates={duplicates!r}; choose one of {DUPLICATES}")
    frame, where, first_line = _read(source, sep=sep, chunksize=chunksize, progress=progress)
    columns = _columns(
        frame,
        where,
        1 if first_line else None,
        user=user,
        item=item,
        rating=rating,
        timestamp=timestamp,
    )
    implicit = columns["rating"] is None
    raw_user = _ids(frame[columns["user"]], where, first_line)
    raw_item = _ids(frame[columns["item"]], where, first_line)
    values = (
        np.ones(len(frame), dtype=np.float32)
        if implicit
        else _numbers(frame[columns["rating"]], where, first_line)
    )
    times = (
        np.zeros(len(frame), dtype=np.int64)
        if columns["timestamp"] is None
        else _seconds(frame[columns["timestamp"]], where, first_line)
    )
    scale = _scale(values, rating_scale, where, first_line, implicit=implicit)
    if len(frame) == 0:
        raise DataFormatError(where, None, "holds no rows")
    user_codes, user_ids = pd.factorize(raw_user, sort=True)
    item_codes, item_ids = pd.factorize(raw_item, sort=True)
    keep = (
        np.ones(len(frame), dtype=bool)
        if implicit
        else _one_per_pair(
            user_codes,
            item_codes,
            times,
            len(item_ids),
            duplicates,
            where,
            first_line,
            raw_user,
            raw_item,
        )
    )
    user_ids, item_ids = np.asarray(user_ids), np.asarray(item_ids)
    data = Ratings(
        user=user_codes[keep].astype(np.int64),
        item=item_codes[keep].astype(np.int64),
        rating=values[keep],
        timestamp=times[keep],
        n_users=len(user_ids),
        n_items=len(item_ids),
        user_ids=user_ids,
        item_ids=item_ids,
        users=None if users is None else _user_table(users, user, user_ids),
        items=None if items is None else _item_table(items, item, item_ids),
        name=name
        or (
            Path(where).name.split(".")[0] if not isinstance(source, pd.DataFrame) else "dataframe"
        ),
        rating_scale=scale,
        implicit=implicit,
    )
    log.info(
        "%s: %d %s by %d users on %d items",
        where,
        len(data),
        "events" if implicit else "ratings",
        data.n_users,
        data.n_items,
    )
    return data


# ---------------------------------------------------------------------- reading
def _read(
    source: str | Path | pd.DataFrame, *, sep: str | None, chunksize: int, progress: bool
) -> tuple[pd.DataFrame, str, int]:
    """The table, how errors name it, and the line of its first row (2: after a header)."""
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True), "<DataFrame>", 0
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffixes = [s.lower() for s in path.suffixes]
    if any(s in _PARQUET for s in suffixes):
        try:
            return pd.read_parquet(path).reset_index(drop=True), str(path), 2
        except ImportError as err:
            raise ImportError(
                f"{path}: reading Parquet needs pyarrow (pip install pyarrow)"
            ) from err
    if sep is None:
        sep = "\t" if ".tsv" in suffixes or ".tab" in suffixes else ","
    try:
        reader = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            chunksize=chunksize,
            compression="infer",
        )
        parts = list(tqdm(reader, desc=path.name, unit="chunk", disable=not progress, leave=False))
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataFormatError(
            path,
            _line_in(str(err)),
            f"not a {sep!r}-separated table: {str(err).strip().splitlines()[-1]}",
        ) from err
    except pd.errors.EmptyDataError as err:
        raise DataFormatError(path, None, "is empty (not even a header)") from err
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return frame, str(path), 2


def _line_in(message: str) -> int | None:
    digits = [int(w) for w in message.replace(",", " ").split() if w.isdigit()]
    return digits[0] if "line" in message and digits else None


def _columns(
    frame: pd.DataFrame, where: str, header: int | None, **named: str | bool | None
) -> dict[str, str | None]:
    """Each role's column: the one named, else the first default present, else ``None``
    (an error for the ids)."""
    by_lower = {str(c).lower(): c for c in frame.columns}
    found: dict[str, str | None] = {}
    for role, choice in named.items():
        if choice is False:
            found[role] = None
        elif isinstance(choice, str):
            if choice not in frame.columns:
                raise DataFormatError(
                    where,
                    header,
                    f"no column {choice!r} for the {role} "
                    f"(columns: {', '.join(map(str, frame.columns))})",
                )
            found[role] = choice
        else:
            found[role] = next((by_lower[c] for c in DEFAULT_COLUMNS[role] if c in by_lower), None)
    for role in ("user", "item"):
        if found[role] is None:
            raise DataFormatError(
                where,
                header,
                f"no {role} column: name it with {role}=... "
                f"(CLI: --columns {role}=NAME); columns: "
                f"{', '.join(map(str, frame.columns))}",
            )
    return found


def _blank(column: pd.Series) -> np.ndarray:
    return (column.isna() | (column.astype(str).str.strip() == "")).to_numpy()


def _ids(column: pd.Series, where: str, first_line: int) -> pd.Series:
    """Raw ids: integers when every value is one, else strings; a missing id is an error."""
    missing = _blank(column)
    if missing.any():
        raise _error(where, first_line, int(np.argmax(missing)), column.name, "the id is empty")
    if pd.api.types.is_integer_dtype(column):
        return column.astype(np.int64)
    text = column.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    if (
        numbers.notna().all()
        and (numbers == numbers.round()).all()
        and text.str.fullmatch(r"[+-]?\d+").all()
    ):
        return numbers.astype(np.int64)
    return text


def _numbers(column: pd.Series, where: str, first_line: int) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce")
    bad = (values.isna() | ~np.isfinite(values.astype(float))).to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise _error(
            where,
            first_line,
            row,
            column.name,
            f"the rating {column.iloc[row]!r} is not a finite number",
        )
    return values.to_numpy(dtype=np.float32)


def _seconds(column: pd.Series, where: str, first_line: int) -> np.ndarray:
    """Unix seconds from numbers or from dates pandas parses."""
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().all():
        return numbers.to_numpy(dtype=np.float64).astype(np.int64)
    stamps = pd.to_datetime(column, errors="coerce", utc=True, format="mixed")
    bad = stamps.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise _error(
            where,
            first_line,
            row,
            column.name,
            f"the timestamp {column.iloc[row]!r} is neither Unix seconds nor a date",
        )
    return ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(
        dtype=np.int64
    )


def _scale(
    values: np.ndarray,
    scale: tuple[float, float] | None,
    where: str,
    first_line: int,
    *,
    implicit: bool,
) -> tuple[float, float]:
    if scale is None:
        return (
            (1.0, 1.0)
            if implicit or not len(values)
            else (float(values.min()), float(values.max()))
        )
    low, high = (float(x) for x in scale)
    if not low <= high:
        raise ValueError(f"rating_scale={scale}: low must not exceed high")
    off = (values < low) | (values > high)
    if not implicit and off.any():
        row = int(np.argmax(off))
        raise DataFormatError(
            where,
            _line(first_line, row),
            f"the rating {values[row]:g} lies outside rating_scale [{low:g}, {high:g}]",
        )
    return low, high


def _one_per_pair(
    user: np.ndarray,
    item: np.ndarray,
    times: np.ndarray,
    n_items: int,
    policy: str,
    where: str,
    first_line: int,
    raw_user: pd.Series,
    raw_item: pd.Series,
) -> np.ndarray:
    """Rows kept: one per (user, item) pair, the latest (``"last"``), or an error."""
    key = user.astype(np.int64) * n_items + item
    order = np.lexsort((np.arange(len(key)), times, key))  # by pair, then time, then row
    last = np.ones(len(key), dtype=bool)
    last[order[:-1]] = key[order[:-1]] != key[order[1:]]  # the last of each run
    if last.all():
        return last
    if policy == "error":
        repeated = pd.Series(key).duplicated().to_numpy()
        row = int(np.argmax(repeated))
        first = int(np.argmax(key == key[row]))
        raise DataFormatError(
            where,
            _line(first_line, row),
            f"user {raw_user.iloc[row]} rated item {raw_item.iloc[row]} "
            f"already on line {_line(first_line, first)} (duplicates='last' "
            "keeps the latest rating)",
        )
    log.info(
        "%s: %d repeated (user, item) ratings dropped, the latest of each pair kept",
        where,
        int((~last).sum()),
    )
    return last


def _line(first_line: int, row: int) -> int:
    return first_line + row if first_line else row


def _error(where: str, first_line: int, row: int, column: object, reason: str) -> DataFormatError:
    place = f"column {column!r}"
    if not first_line:  # a DataFrame: rows, not lines
        return DataFormatError(where, None, f"row {row}, {place}: {reason}")
    return DataFormatError(where, _line(first_line, row), f"{place}: {reason}")


# ---------------------------------------------------------------------- side tables
def _side(
    source: str | Path | pd.DataFrame, key: str | None, ids: np.ndarray, what: str
) -> pd.DataFrame:
    """The side table's rows for the compact ids (raw ``ids`` in order), indexed 0..n-1."""
    frame, where, first_line = _read(source, sep=None, chunksize=1 << 20, progress=False)
    column = key if key in frame.columns else frame.columns[0] if len(frame.columns) else None
    if column is None:
        raise DataFormatError(where, 1, f"the {what} table has no columns")
    raw = _ids(frame[column], where, first_line)
    repeated = raw.duplicated().to_numpy()
    if repeated.any():
        raise _error(
            where,
            first_line,
            int(np.argmax(repeated)),
            column,
            f"{what} id {raw.iloc[int(np.argmax(repeated))]} appears twice",
        )
    integer = pd.api.types.is_integer_dtype
    if not (integer(raw.dtype) and integer(np.asarray(ids).dtype)):  # match ids as text
        raw = raw.astype(str)
        ids = np.asarray(ids).astype(str)
    table = frame.drop(columns=[column]).set_axis(pd.Index(raw), axis=0).reindex(ids)
    return table.reset_index(drop=True)


def _user_table(
    source: str | Path | pd.DataFrame, key: str | None, ids: np.ndarray
) -> pd.DataFrame:
    table = _side(source, key, ids, "user")
    if "age" in table:
        table["age"] = pd.to_numeric(table["age"], errors="coerce")
    table.index.name = "user"
    return table


def _item_table(
    source: str | Path | pd.DataFrame, key: str | None, ids: np.ndarray
) -> pd.DataFrame:
    table = _side(source, key, ids, "item")
    title = table["title"] if "title" in table else pd.Series([None] * len(table))
    if "year" in table:
        year = pd.to_numeric(table["year"], errors="coerce").astype("Int64")
    else:
        year = _year_from_title(title.astype("string"))
    parts: list[pd.DataFrame | pd.Series] = [title.rename("title"), year.rename("year")]
    flags = [c for c in table.columns if str(c).startswith("genre_")]
    if flags:
        parts.append(table[flags].apply(pd.to_numeric, errors="coerce").fillna(0).astype(np.int8))
    elif "genres" in table:
        parts.append(
            table["genres"]
            .fillna("")
            .astype(str)
            .str.get_dummies(sep="|")
            .add_prefix("genre_")
            .astype(np.int8)
        )
    out = pd.concat(parts, axis=1)
    out.index.name = "item"
    return out
