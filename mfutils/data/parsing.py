"""Readers for the MovieLens file formats, with errors that name the file and the line.

Parsing is done by :func:`pandas.read_csv` (C engine). Only when pandas fails, or when the parsed
table fails validation (missing fields, non-numeric values, ratings outside the scale), the file
is looked at line by line to report the first offending line, so the happy path stays fast.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "DataFormatError",
    "TableSpec",
    "read_table",
    "ML100K_GENRES",
    "ML100K_RATINGS",
    "ML100K_ITEMS",
    "ML100K_USERS",
    "DAT_RATINGS",
    "DAT_MOVIES",
    "ML1M_USERS",
    "CSV_RATINGS",
    "CSV_MOVIES",
]

_log = logging.getLogger(__name__)
_DAT_SEP_REPLACEMENT = "\x1f"  # ASCII unit separator: stands in for "::" so the C engine can parse


class DataFormatError(ValueError):
    """A data file is malformed.

    Attributes
    ----------
    path : pathlib.Path
        The offending file.
    line : int or None
        1-based line number of the first offending line (``None`` when it cannot be located).
    reason : str
        What is wrong with that line.
    """

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}, line {line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[Path, int | None, str]]:
        return (type(self), (self.path, self.line, self.reason))


@dataclass(frozen=True)
class TableSpec:
    """The layout of one delimited text file.

    Parameters
    ----------
    columns : tuple of str
        Column names, in file order; every line must have exactly this many fields.
    sep : str
        Field separator; ``"::"`` (ML-1M/10M) is supported, ``","`` means CSV with quoting.
    encoding : str
        Text encoding; undecodable bytes are reported with their line.
    header : bool
        Whether the first line is a header (it is skipped, not checked).
    integer : tuple of str
        Columns that must hold integers.
    numeric : tuple of str
        Columns that must hold finite numbers (integers included).
    optional : tuple of str
        Text columns that may be empty; every other column is required.
    """

    columns: tuple[str, ...]
    sep: str
    encoding: str = "utf-8"
    header: bool = False
    integer: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    def line_of(self, row: int) -> int:
        """1-based file line of parsed row ``row`` (0-based)."""
        return row + 1 + int(self.header)

    @property
    def text(self) -> tuple[str, ...]:
        """Columns kept as strings."""
        return tuple(c for c in self.columns if c not in self.integer + self.numeric)


ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_RATING_COLUMNS = ("user", "item", "rating", "timestamp")

ML100K_RATINGS = TableSpec(
    _RATING_COLUMNS, "\t", integer=("user", "item", "timestamp"), numeric=("rating",)
)
ML100K_ITEMS = TableSpec(
    ("item", "title", "release_date", "video_release_date", "imdb_url")
    + tuple(f"genre_{g}" for g in ML100K_GENRES),
    "|",
    encoding="latin-1",
    integer=("item",) + tuple(f"genre_{g}" for g in ML100K_GENRES),
    optional=("release_date", "video_release_date", "imdb_url"),
)
ML100K_USERS = TableSpec(
    ("user", "age", "gender", "occupation", "zip"), "|", encoding="latin-1", integer=("user", "age")
)
DAT_RATINGS = TableSpec(
    _RATING_COLUMNS, "::", integer=("user", "item", "timestamp"), numeric=("rating",)
)
DAT_MOVIES = TableSpec(("item", "title", "genres"), "::", encoding="latin-1", integer=("item",))
ML1M_USERS = TableSpec(
    ("user", "gender", "age", "occupation", "zip"),
    "::",
    encoding="latin-1",
    integer=("user", "age", "occupation"),
)
CSV_RATINGS = TableSpec(
    _RATING_COLUMNS, ",", header=True, integer=("user", "item", "timestamp"), numeric=("rating",)
)
CSV_MOVIES = TableSpec(("item", "title", "genres"), ",", header=True, integer=("item",))


def read_table(
    path: str | Path, spec: TableSpec, *, scale: tuple[float, float] | None = None
) -> pd.DataFrame:
    """Parse ``path`` laid out as ``spec`` into a DataFrame with a 0-based RangeIndex.

    Parameters
    ----------
    path : str or Path
        The file to read.
    spec : TableSpec
        Its layout.
    scale : tuple of float, optional
        ``(min, max)`` allowed for the ``rating`` column.

    Returns
    -------
    pd.DataFrame
        One column per ``spec.columns``: int64 for ``integer``, float64 for other ``numeric``
        columns, strings otherwise (empty optional fields are NaN). Row ``r`` is file line
        ``spec.line_of(r)``.

    Raises
    ------
    DataFormatError
        For the first malformed line: wrong field count, non-numeric or missing value, rating
        outside ``scale``, undecodable bytes.
    """
    path = Path(path)
    spec = _actual_encoding(path, spec)
    try:
        frame = pd.read_csv(_source(path, spec), **_read_options(spec))
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame({name: pd.Series(dtype=object) for name in spec.columns})
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise _scan_for_error(path, spec, scale, fallback=f"cannot parse the file: {err}") from err
    frame = frame.iloc[: len(frame) - _trailing_blank_lines(path)]
    bad = _invalid_rows(frame, spec, scale)
    if bad.any():
        raise _error_at_row(path, spec, scale, int(np.argmax(bad)))
    return _typed(frame, spec)


# ---------------------------------------------------------------------- fast path (pandas)
def _actual_encoding(path: Path, spec: TableSpec) -> TableSpec:
    """``spec``, read as UTF-8 if a latin-1 file turns out to be valid UTF-8 with non-ASCII
    text: someone re-encoded it, and reading it as latin-1 would give mojibake ("Ã©")."""
    if spec.encoding != "latin-1":
        return spec
    raw = path.read_bytes()
    if raw.isascii():
        return spec
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return spec
    _log.warning("%s is UTF-8, not the release's latin-1 (was it re-encoded?): read as UTF-8", path)
    return dataclasses.replace(spec, encoding="utf-8")


def _trailing_blank_lines(path: Path) -> int:
    """How many lines at the end of ``path`` are blank (skipped, not an error)."""
    with path.open("rb") as handle:
        size = handle.seek(0, io.SEEK_END)
        handle.seek(max(0, size - 4096))
        tail = handle.read()
    lines = tail.split(b"\n")
    if lines and lines[-1] == b"":  # the newline that ends the last line
        lines.pop()
    blank = 0
    while blank < len(lines) - 1 and not lines[-1 - blank].strip():
        blank += 1
    return blank


def _source(path: Path, spec: TableSpec) -> Path | io.BytesIO:
    if spec.sep != "::":
        return path
    return io.BytesIO(path.read_bytes().replace(b"::", _DAT_SEP_REPLACEMENT.encode()))


def _read_options(spec: TableSpec) -> dict:
    return {
        "sep": _DAT_SEP_REPLACEMENT if spec.sep == "::" else spec.sep,
        "header": 0 if spec.header else None,
        "names": list(spec.columns),
        "encoding": spec.encoding,
        "engine": "c",
        "quoting": csv.QUOTE_MINIMAL if spec.sep == "," else csv.QUOTE_NONE,
        "dtype": dict.fromkeys(spec.text, str),
        "keep_default_na": False,
        "na_values": [""],
        "skip_blank_lines": False,
    }


def _invalid_rows(
    frame: pd.DataFrame, spec: TableSpec, scale: tuple[float, float] | None
) -> np.ndarray:
    """Mask of the rows that break ``spec`` (missing or non-numeric fields) or ``scale``."""
    bad = np.zeros(len(frame), dtype=bool)
    for name in spec.columns:
        if name in spec.integer or name in spec.numeric:
            values = _numbers(frame[name])
            bad |= ~np.isfinite(values)
            if name in spec.integer:
                bad |= np.floor(values) != values
        elif name not in spec.optional:
            bad |= frame[name].isna().to_numpy()
    if scale is not None:
        rating = _numbers(frame["rating"])
        bad |= (rating < scale[0]) | (rating > scale[1])
    return bad


def _typed(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """``frame`` (already validated) with int64 integer and float64 numeric columns."""
    dtypes = dict.fromkeys(spec.numeric, np.float64) | dict.fromkeys(spec.integer, np.int64)
    return frame.astype({name: dtypes[name] for name in spec.columns if name in dtypes})


def _numbers(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)


# ---------------------------------------------------------------------- slow path (diagnosis)
def _scan_for_error(
    path: Path, spec: TableSpec, scale: tuple[float, float] | None, *, fallback: str
) -> DataFormatError:
    """The error for the first bad line of the file (``fallback`` if every line looks fine)."""
    for number, raw in _numbered_lines(path, spec):
        reason = _check_line(raw, spec, scale)
        if reason is not None:
            return DataFormatError(path, number, reason)
    return DataFormatError(path, None, fallback)


def _error_at_row(
    path: Path, spec: TableSpec, scale: tuple[float, float] | None, row: int
) -> DataFormatError:
    number = spec.line_of(row)
    with path.open("rb") as handle:
        raw = next(itertools.islice(handle, number - 1, None), b"")
    reason = _check_line(raw, spec, scale) or "invalid or missing value"
    return DataFormatError(path, number, reason)


def _numbered_lines(path: Path, spec: TableSpec) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        yield from itertools.islice(enumerate(handle, start=1), int(spec.header), None)


def _check_line(raw: bytes, spec: TableSpec, scale: tuple[float, float] | None) -> str | None:
    """What is wrong with one raw line, or ``None`` if it is valid."""
    try:
        text = raw.decode(spec.encoding).rstrip("\r\n")
    except UnicodeDecodeError as err:
        return (
            f"cannot decode byte 0x{raw[err.start]:02x} (column {err.start + 1}) as {spec.encoding}"
        )
    if not text.strip():
        return "empty line"
    fields = next(csv.reader([text])) if spec.sep == "," else text.split(spec.sep)
    if len(fields) != len(spec.columns):
        return f"expected {len(spec.columns)} fields separated by {spec.sep!r}, found {len(fields)}"
    for name, value in zip(spec.columns, fields, strict=True):
        reason = _check_field(name, value, spec)
        if reason is not None:
            return reason
    if scale is not None:
        rating = float(fields[spec.columns.index("rating")])
        if not scale[0] <= rating <= scale[1]:
            return f"rating {rating:g} is outside the rating scale [{scale[0]:g}, {scale[1]:g}]"
    return None


def _check_field(name: str, value: str, spec: TableSpec) -> str | None:
    if value == "":
        return None if name in spec.optional else f"field {name!r} is empty"
    if name not in spec.integer and name not in spec.numeric:
        return None
    number = _as_number(value)
    if number is None:
        return f"field {name!r} is not a number: {value!r}"
    if name in spec.integer and not number.is_integer():
        return f"field {name!r} is not an integer: {value!r}"
    return None


def _as_number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
