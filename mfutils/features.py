"""Categorical fields for feature-based models (FM, DeepFM): one embedding table, field offsets.

A rating ``(u, i, t)`` becomes a short list of *active features*, each a global index into one
embedding table with a value ``x`` (Rendle 2010, Fig. 1: the design matrix of an FM):

==============  ==================================================  ===================
field           value                                               ``x``
==============  ==================================================  ===================
``user``        the user id                                         1
``item``        the item id                                         1
``age``         age bucket (ML-1M's edges 18/25/35/45/50/56)        1
``gender``      the user's gender                                   1
``occupation``  the user's occupation                               1
``zip``         the first ``zip_digits`` characters of the zip      1
``genres``      every genre of the item (multi-valued)              ``1 / n_genres(i)``
``year``        release-year bucket                                 1
``weekday``     weekday of the rating time ``t`` (UTC)              1
``since_first`` days from the user's first training rating to ``t``  1
                (buckets 0, 1-6, 7-29, 30-89, 90+)
==============  ==================================================  ===================

Every field ``f`` has ``n_f`` *local* ids: ``0`` is the field's reserved bucket, ``1..n_f-1``
the values seen in the training data. The global index is ``o_f + local`` with the field
offset ``o_f = sum_{g<f} n_g`` (the pytorch-fm layout), so fields never share a row of the
table. Everything unseen in training -- a user or item without training ratings, an
out-of-range id, a zip prefix or genre that no training rating carried, a prediction without a
timestamp -- maps to the reserved bucket of its field, whose embedding the models keep at zero
(or, for the id fields, train as "a newcomer" with ``cold_fraction``).

Not every release carries every field: ML-100K and ML-1M have a users table (age, gender,
occupation, zip), ml-latest-small and the larger releases have none; every release has genres
and a year, and timestamps (``0`` where a release has none). ``fields=None`` asks for the
fields of :data:`DEFAULT_FIELDS` that the training data carries (:func:`available_fields`,
which logs a note at INFO for each one it leaves out); a field asked for by name that the data
lacks is an error naming the field and the missing table or column.

All statistics (vocabularies, each user's first rating time) come from the data passed to
:meth:`FieldEncoder.fit`, the training fold. After fitting, encoding is a handful of gathers:
the user-side and item-side columns are precomputed per compact id, so
:meth:`FieldEncoder.encode` never loops over ratings and runs on the encoder's device.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from mfutils.data.container import Ratings

__all__ = [
    "DEFAULT_FIELDS",
    "FIELDS",
    "USER_FIELDS",
    "ITEM_FIELDS",
    "TIME_FIELDS",
    "FieldEncoder",
    "available_fields",
    "missing_reason",
    "USER_ATTRIBUTES",
    "available_user_attributes",
    "encode_user_attributes",
]

logger = logging.getLogger(__name__)

USER_FIELDS = ("user", "age", "gender", "occupation", "zip")
ITEM_FIELDS = ("item", "genres", "year")
TIME_FIELDS = ("weekday", "since_first")
FIELDS = USER_FIELDS + ITEM_FIELDS + TIME_FIELDS
# The fields kept on a validation split of ML-100K's u1.base (notebook 08): every field but
# age and zip, which cost accuracy once the user id is known. ``fields=None`` takes the ones
# of these that the training data carries (all of them on ML-100K and ML-1M).
DEFAULT_FIELDS = (
    "user",
    "gender",
    "occupation",
    "item",
    "genres",
    "year",
    "weekday",
    "since_first",
)
DAY = 86_400
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # ML-1M's age groups: <18, 18-24, ..., 50-55, 56+
YEAR_EDGES = (1940, 1960, 1970, 1980, 1990, 1993, 1995, 1996, 1997, 1998)
# SVD++'s ``user_attributes="auto"``: those of these columns the data's users table carries.
USER_ATTRIBUTES = ("age", "gender", "occupation")
SINCE_FIRST_EDGES = (1, 7, 30, 90)  # days: same day, first week, month, quarter, later
_UNIX_WEEKDAY_0 = 3  # 1970-01-01 was a Thursday (Monday = 0)


class FieldEncoder(nn.Module):
    """Encode ratings as ``(index, value)`` rows over one table of categorical features.

    Parameters
    ----------
    fields : sequence of str or None
        Which fields to use, any subset of :data:`FIELDS` (an ablation drops or adds fields
        by name); the column order follows :data:`FIELDS`. A field the training data lacks
        is an error at :meth:`fit`. ``None``: the fields of :data:`DEFAULT_FIELDS` that the
        training data carries, resolved in :meth:`fit` (:func:`available_fields`; each one
        left out is logged at INFO).
    zip_digits : int
        Length of the zip prefix; codes whose prefix is not all digits share one ``"other"``
        value.
    age_edges, year_edges, since_first_edges : sequence of int
        Bucket edges (a value ``v`` falls in bucket ``searchsorted(edges, v, "right")``).

    Attributes (after :meth:`fit`)
    -------------------------------
    fields : tuple of str
        The fields encoded (``None`` before :meth:`fit` when resolved from the data).
    field_sizes : dict of str to int
        ``n_f`` per field, the reserved bucket included.
    field_offsets : dict of str to int
        ``o_f`` per field.
    n_features : int
        Rows of the embedding table, ``sum_f n_f``.
    columns : list of str
        The field of every column of the encoded ``(n, L)`` rows (``genres`` spans as many
        columns as the item with the most genres).
    """

    def __init__(
        self,
        fields: Sequence[str] | None = FIELDS,
        *,
        zip_digits: int = 1,
        age_edges: Sequence[int] = AGE_EDGES,
        year_edges: Sequence[int] = YEAR_EDGES,
        since_first_edges: Sequence[int] = SINCE_FIRST_EDGES,
    ) -> None:
        super().__init__()
        if isinstance(fields, str):
            raise ValueError(
                f"fields={fields!r} must be a sequence of field names, e.g. ({fields!r},), or None"
            )
        if fields is not None:
            fields = tuple(fields)
            unknown = sorted(set(fields) - set(FIELDS))
            if unknown:
                raise ValueError(f"fields {unknown} are not known; choose from {FIELDS}")
            if not fields:
                raise ValueError("fields is empty; give at least one of " + ", ".join(FIELDS))
            fields = tuple(f for f in FIELDS if f in fields)
        if zip_digits < 1:
            raise ValueError(f"zip_digits={zip_digits} must be >= 1")
        self.requested_fields: tuple[str, ...] | None = fields
        self.fields: tuple[str, ...] | None = fields
        self.zip_digits = zip_digits
        self.edges = {
            "age": np.asarray(age_edges),
            "year": np.asarray(year_edges),
            "since_first": np.asarray(since_first_edges),
        }
        self.field_sizes: dict[str, int] = {}
        self.field_offsets: dict[str, int] = {}
        self.columns: list[str] = []
        self._fitted = False

    # ------------------------------------------------------------------ layout
    @property
    def n_features(self) -> int:
        self._require_fitted()
        return sum(self.field_sizes.values())

    @property
    def n_fields(self) -> int:
        self._require_fields()
        return len(self.fields)

    def reserved_indices(self) -> torch.Tensor:
        """Global index of every field's reserved bucket, shape (n_fields,)."""
        self._require_fitted()
        return torch.tensor(
            [self.field_offsets[f] for f in self.fields], device=self.column_field.device
        )

    def field_columns(self) -> dict[str, slice]:
        """The columns of each field in the encoded rows."""
        self._require_fitted()
        out = {}
        for field in self.fields:
            cols = [k for k, name in enumerate(self.columns) if name == field]
            out[field] = slice(cols[0], cols[-1] + 1)
        return out

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError("FieldEncoder is not fitted: call fit(train) first")

    def _require_fields(self) -> None:
        if self.fields is None:
            raise RuntimeError(
                "FieldEncoder(fields=None) resolves its fields from the data: call fit(train) first"
            )

    # ------------------------------------------------------------------ fitting
    def fit(self, train: Ratings, *, device: torch.device | str | None = None) -> FieldEncoder:
        """Learn every field's vocabulary from ``train`` and precompute the per-id columns.

        With ``fields=None`` the fields are first resolved to those of :data:`DEFAULT_FIELDS`
        that ``train`` carries (see :func:`available_fields`).

        Raises
        ------
        ValueError
            If a user-side (item-side) field is asked for by name but ``train.users``
            (``train.items``) is missing or lacks the column it needs.
        """
        if len(train) == 0:
            raise ValueError("cannot fit a FieldEncoder on an empty Ratings")
        if self.requested_fields is None:
            self.fields = available_fields(train, DEFAULT_FIELDS)
        users_seen = train.user_counts() > 0  # shape: (n_users,)
        items_seen = train.item_counts() > 0  # shape: (n_items,)
        sizes: dict[str, int] = {}
        user_cols: list[tuple[str, np.ndarray, np.ndarray]] = []  # (field, local, value)
        item_cols: list[tuple[str, np.ndarray, np.ndarray]] = []
        for field in self.fields:
            if field == "user":
                local = np.where(users_seen, np.arange(train.n_users) + 1, 0)
                sizes[field] = train.n_users + 1
                user_cols.append((field, local[:, None], np.ones((train.n_users, 1))))
            elif field == "item":
                local = np.where(items_seen, np.arange(train.n_items) + 1, 0)
                sizes[field] = train.n_items + 1
                item_cols.append((field, local[:, None], np.ones((train.n_items, 1))))
            elif field in USER_FIELDS:
                values = self._user_values(train, field)  # shape: (n_users,)
                local, sizes[field] = _vocabulary(values, users_seen)
                user_cols.append((field, local[:, None], np.ones((train.n_users, 1))))
            elif field == "year":
                values = self._year_values(train)
                local, sizes[field] = _vocabulary(values, items_seen)
                item_cols.append((field, local[:, None], np.ones((train.n_items, 1))))
            elif field == "genres":
                local, value, sizes[field] = self._genre_columns(train, items_seen)
                item_cols.append((field, local, value))
        first_day = np.full(train.n_users, -1, dtype=np.int64)
        time_vocab = {}
        if "since_first" in self.fields or "weekday" in self.fields:
            days = np.floor_divide(train.timestamp, DAY)  # shape: (n,)
            first = pd.Series(days).groupby(train.user).min()
            first_day[first.index.to_numpy()] = first.to_numpy()
            for field in TIME_FIELDS:
                if field in self.fields:
                    n_values = 7 if field == "weekday" else len(self.edges[field]) + 1
                    values = self._time_values(field, train.user, days, first_day)
                    seen = np.zeros(n_values, dtype=bool)
                    seen[values] = True
                    time_vocab[field], sizes[field] = _vocabulary(np.arange(n_values), seen)

        self.field_sizes = {f: sizes[f] for f in self.fields}
        offsets = np.cumsum([0] + [sizes[f] for f in self.fields])[:-1]
        self.field_offsets = {f: int(o) for f, o in zip(self.fields, offsets, strict=True)}
        self.columns = (
            [f for f, local, _ in user_cols for _ in range(local.shape[1])]
            + [f for f, local, _ in item_cols for _ in range(local.shape[1])]
            + [f for f in TIME_FIELDS if f in self.fields]
        )

        def table(
            cols: list[tuple[str, np.ndarray, np.ndarray]], n: int
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if not cols:
                return (
                    torch.zeros(n, 0, dtype=torch.long, device=device),
                    torch.zeros(n, 0, device=device),
                )
            index = np.concatenate([local + self.field_offsets[f] for f, local, _ in cols], 1)
            value = np.concatenate([v for _, _, v in cols], 1)
            return (
                torch.as_tensor(index, dtype=torch.long, device=device),
                torch.as_tensor(value, dtype=torch.float32, device=device),
            )

        user_index, user_value = table(user_cols, train.n_users)  # shape: (n_users, L_u)
        item_index, item_value = table(item_cols, train.n_items)  # shape: (n_items, L_i)
        # Rows for ids outside the tables: every column in its field's reserved bucket, value 1
        # on the first column of a field and 0 on the padding of a multi-valued field.
        unknown_user = table(
            [
                (f, np.zeros((1, loc.shape[1]), dtype=np.int64), np.eye(1, loc.shape[1]))
                for f, loc, _ in user_cols
            ],
            1,
        )
        unknown_item = table(
            [
                (f, np.zeros((1, loc.shape[1]), dtype=np.int64), np.eye(1, loc.shape[1]))
                for f, loc, _ in item_cols
            ],
            1,
        )
        buffers = {
            "user_index": user_index,
            "user_value": user_value,
            "item_index": item_index,
            "item_value": item_value,
            "unknown_user_index": unknown_user[0][0],
            "unknown_user_value": unknown_user[1][0],
            "unknown_item_index": unknown_item[0][0],
            "unknown_item_value": unknown_item[1][0],
            "first_day": torch.as_tensor(first_day, device=device),
            "weekday_local": torch.as_tensor(
                time_vocab.get("weekday", np.zeros(0, np.int64)), dtype=torch.long, device=device
            ),
            "since_first_local": torch.as_tensor(
                time_vocab.get("since_first", np.zeros(0, np.int64)),
                dtype=torch.long,
                device=device,
            ),
            "since_first_edges": torch.as_tensor(
                self.edges["since_first"], dtype=torch.long, device=device
            ),
            "column_field": torch.as_tensor(
                [self.fields.index(f) for f in self.columns], dtype=torch.long, device=device
            ),
            "sizes": torch.as_tensor(
                [sizes[f] for f in self.fields], dtype=torch.long, device=device
            ),
            # The fields themselves (positions in FIELDS), so a checkpoint of fields=None
            # reloads with the fields resolved at fit time.
            "field_ids": torch.as_tensor(
                [FIELDS.index(f) for f in self.fields], dtype=torch.long, device=device
            ),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value)
        self._fitted = True
        return self

    def allocate_like(self, state: dict[str, torch.Tensor], prefix: str = "") -> FieldEncoder:
        """Empty buffers shaped as a saved ``state`` (checkpoint loading), then fill them.

        The fields come from the saved ``field_ids`` (checkpoints written before it existed
        need explicit ``fields``).

        Raises
        ------
        ValueError
            If the saved fields differ from explicit ``fields``, or ``fields=None`` and the
            state does not say which fields were resolved.
        """
        for name, value in state.items():
            if name.startswith(prefix) and "." not in name[len(prefix) :]:
                self.register_buffer(name[len(prefix) :], value.clone())
        if hasattr(self, "field_ids"):
            saved = tuple(FIELDS[k] for k in self.field_ids.tolist())
            if self.requested_fields is not None and saved != self.requested_fields:
                raise ValueError(
                    f"the saved encoder has fields {saved}; this one asks for "
                    f"{self.requested_fields}"
                )
            self.fields = saved
        elif self.requested_fields is None:
            raise ValueError(
                "the saved encoder does not record its fields (an older "
                "checkpoint); pass them explicitly"
            )
        self._restore_layout()
        return self

    def _restore_layout(self) -> None:
        sizes = self.sizes.tolist()
        self.field_sizes = dict(zip(self.fields, sizes, strict=True))
        offsets = np.cumsum([0] + sizes)[:-1]
        self.field_offsets = {f: int(o) for f, o in zip(self.fields, offsets, strict=True)}
        self.columns = [self.fields[k] for k in self.column_field.tolist()]
        self._fitted = True

    # ------------------------------------------------------------------ raw values
    def _user_values(self, train: Ratings, field: str) -> np.ndarray:
        table = _side_table(train.users, "users", field, train.n_users)
        if field == "age":
            column = _column(table, "age", field, "users")
            age = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
            bucket = np.searchsorted(self.edges["age"], age, side="right")
            return np.where(np.isfinite(age), bucket, -1).astype(object)
        if field == "zip":
            prefix = _column(table, "zip", field, "users").astype(str).str[: self.zip_digits]
            numeric = prefix.str.fullmatch(r"\d+") & (prefix.str.len() == self.zip_digits)
            return prefix.where(numeric, "other").to_numpy(dtype=object)
        return _column(table, field, field, "users").astype(str).to_numpy(dtype=object)

    def _year_values(self, train: Ratings) -> np.ndarray:
        table = _side_table(train.items, "items", "year", train.n_items)
        year = pd.to_numeric(_column(table, "year", "year", "items"), errors="coerce")
        year = year.to_numpy(dtype=float, na_value=np.nan)
        bucket = np.searchsorted(self.edges["year"], year, side="right")
        return np.where(np.isfinite(year), bucket, -1).astype(object)  # -1: no date

    def _genre_columns(
        self, train: Ratings, items_seen: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Local genre ids and values ``1/g_i``, padded to the most genres of any item."""
        table = _side_table(train.items, "items", "genres", train.n_items)
        names = [c for c in table.columns if str(c).startswith("genre_")]
        if not names:
            raise ValueError("field 'genres' needs genre_* flag columns in the items table")
        flags = table[names].to_numpy(dtype=np.float64) > 0  # shape: (n_items, G)
        seen = (flags & items_seen[:, None]).any(0)  # shape: (G,) genres of rated items
        genre_local = np.where(seen, np.cumsum(seen), 0)  # shape: (G,) 1.. for seen genres
        n_genres = flags.sum(1)  # shape: (n_items,)
        width = max(int(n_genres.max()), 1)
        order = np.argsort(~flags, axis=1, kind="stable")[:, :width]  # active genres first
        active = np.take_along_axis(flags, order, axis=1)  # shape: (n_items, width)
        local = np.where(active, genre_local[order], 0)
        value = np.where(active, 1.0 / np.maximum(n_genres, 1)[:, None], 0.0)
        value[n_genres == 0, 0] = 1.0  # no genre at all: the reserved bucket, value 1
        return local, value, int(seen.sum()) + 1

    def _time_values(
        self, field: str, user: np.ndarray, days: np.ndarray, first_day: np.ndarray
    ) -> np.ndarray:
        if field == "weekday":
            return (days + _UNIX_WEEKDAY_0) % 7
        since = np.maximum(days - first_day[user], 0)
        return np.searchsorted(self.edges["since_first"], since, side="right")

    # ------------------------------------------------------------------ encoding
    def encode(
        self, user: torch.Tensor, item: torch.Tensor, timestamp: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Active features of every ``(user, item, timestamp)`` row.

        Parameters
        ----------
        user, item : Tensor of int64, shape (n,)
            Compact ids; ``-1`` or out-of-range ids are unknown (reserved buckets).
        timestamp : Tensor of int64, shape (n,), optional
            Unix seconds of the ratings; ``None`` puts the time fields in their reserved bucket.

        Returns
        -------
        dict
            ``index`` (n, L) global feature indices and ``value`` (n, L) their values ``x``
            (0 on the padding of multi-valued fields).
        """
        self._require_fitted()
        device = self.user_index.device
        user, item = user.to(device), item.to(device)
        user_in = (user >= 0) & (user < len(self.user_index))  # shape: (n,)
        item_in = (item >= 0) & (item < len(self.item_index))  # shape: (n,)
        safe_user = torch.where(user_in, user, torch.zeros_like(user))
        safe_item = torch.where(item_in, item, torch.zeros_like(item))
        parts_index = [
            torch.where(user_in[:, None], self.user_index[safe_user], self.unknown_user_index),
            torch.where(item_in[:, None], self.item_index[safe_item], self.unknown_item_index),
        ]  # shape: (n, L_u), (n, L_i)
        parts_value = [
            torch.where(user_in[:, None], self.user_value[safe_user], self.unknown_user_value),
            torch.where(item_in[:, None], self.item_value[safe_item], self.unknown_item_value),
        ]
        for field in TIME_FIELDS:
            if field not in self.fields:
                continue
            local = torch.zeros_like(user)  # shape: (n,) reserved unless computable
            if timestamp is not None:
                days = torch.div(timestamp.to(device), DAY, rounding_mode="floor")  # shape: (n,)
                if field == "weekday":
                    local = self.weekday_local[(days + _UNIX_WEEKDAY_0) % 7]
                else:
                    first = self.first_day[safe_user]  # shape: (n,) -1 for unseen users
                    since = (days - first).clamp(min=0)
                    bucket = torch.searchsorted(self.since_first_edges, since, right=True)
                    known = user_in & (first >= 0)
                    local = torch.where(known, self.since_first_local[bucket], local)
            parts_index.append((local + self.field_offsets[field])[:, None])
            parts_value.append(torch.ones_like(local, dtype=torch.float32)[:, None])
        return {"index": torch.cat(parts_index, 1), "value": torch.cat(parts_value, 1)}

    def transform(self, data: Ratings) -> dict[str, torch.Tensor]:
        """:meth:`encode` of every rating of ``data`` plus its ``user``, ``item``, ``rating``
        columns, as tensors on the encoder's device (the batch format of the FM nets)."""
        tensors = data.tensors(self.user_index.device)
        encoded = self.encode(tensors["user"], tensors["item"], tensors["timestamp"])
        return {
            "user": tensors["user"],
            "item": tensors["item"],
            "rating": tensors["rating"],
            **encoded,
        }

    def describe(self) -> pd.DataFrame:
        """One row per field: cardinality ``n_f`` (reserved bucket included), offset, columns."""
        self._require_fitted()
        columns = self.field_columns()
        return pd.DataFrame(
            {
                "field": list(self.fields),
                "size": [self.field_sizes[f] for f in self.fields],
                "offset": [self.field_offsets[f] for f in self.fields],
                "columns": [columns[f].stop - columns[f].start for f in self.fields],
            }
        )


def missing_reason(data: Ratings, field: str) -> str | None:
    """Why ``data`` cannot give ``field`` (the missing table or column), ``None`` if it can.

    A side column counts as carried when it exists and holds at least one value; the time
    fields need timestamps (a release without them stores ``0`` everywhere).
    """
    if field not in FIELDS:
        raise ValueError(f"field {field!r} is not known; choose from {FIELDS}")
    if field in ("user", "item"):
        return None
    if field in TIME_FIELDS:
        if len(data) and not np.any(data.timestamp != 0):
            return "the ratings carry no timestamps (all 0)"
        return None
    name, table = ("users", data.users) if field in USER_FIELDS else ("items", data.items)
    if table is None:
        return f"the Ratings has no {name} side table"
    if field == "genres":
        if not any(str(c).startswith("genre_") for c in table.columns):
            return f"the {name} side table has no genre_* columns"
        return None
    if field not in table.columns:
        return f"the {name} side table has no {field!r} column"
    if not table[field].notna().any():
        return f"the {name} side table's {field!r} column holds no value"
    return None


def available_fields(
    data: Ratings, fields: Sequence[str] = DEFAULT_FIELDS, *, log: bool = True
) -> tuple[str, ...]:
    """The fields of ``fields`` that ``data`` carries, in the order of :data:`FIELDS`.

    Every field left out is logged at INFO on ``mfutils.features``, one line naming the field
    and the missing table or column (``log=False`` keeps quiet). On ML-100K and ML-1M the
    result for :data:`DEFAULT_FIELDS` is :data:`DEFAULT_FIELDS`; without a users table it
    loses ``gender`` and ``occupation``.
    """
    kept = []
    for field in (f for f in FIELDS if f in set(fields)):
        reason = missing_reason(data, field)
        if reason is None:
            kept.append(field)
        elif log:
            logger.info("default field %r left out: %s", field, reason)
    return tuple(kept)


def _vocabulary(values: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, int]:
    """Local ids ``1..`` for the values of seen rows (sorted), ``0`` for all others.

    ``values`` has one entry per row (users, items or value codes); ``-1`` means missing.
    Returns the local id of every row and the vocabulary size with the reserved bucket.
    """
    series = pd.Series(values)
    valid = ~series.isin([-1])
    vocab = pd.Index(sorted(series[seen & valid.to_numpy()].unique(), key=str))
    local = vocab.get_indexer(series) + 1  # -1 (unseen) becomes 0, the reserved bucket
    local[~valid.to_numpy()] = 0
    return local.astype(np.int64), len(vocab) + 1


def _side_table(table: pd.DataFrame | None, name: str, field: str, n: int) -> pd.DataFrame:
    if table is None:
        raise ValueError(
            f"field {field!r} needs the {name} side table, but the Ratings has "
            f"none; drop {field!r} from fields (or pass fields=None)"
        )
    if len(table) != n:
        raise ValueError(
            f"the {name} side table has {len(table)} rows; expected {n}, one per compact id"
        )
    return table


def _column(table: pd.DataFrame, column: str, field: str, name: str) -> pd.Series:
    if column not in table.columns:
        raise ValueError(
            f"field {field!r} needs a {column!r} column in the {name} side table; "
            f"it has {list(table.columns)}"
        )
    return table[column]


def available_user_attributes(
    users: pd.DataFrame | None, attributes: Sequence[str] = USER_ATTRIBUTES
) -> tuple[str, ...]:
    """The columns of ``attributes`` that ``users`` carries (present, with a value).

    Each one left out is logged at INFO on ``mfutils.features``, one line naming the
    attribute and the missing table or column. Without a users table (ml-latest-small and the
    other releases after ML-1M) the result is empty.
    """
    kept = []
    for name in attributes:
        if users is None:
            reason = "the Ratings has no users side table"
        elif name not in users.columns:
            reason = f"the users side table has no {name!r} column"
        elif not users[name].notna().any():
            reason = f"the users side table's {name!r} column holds no value"
        else:
            kept.append(name)
            continue
        logger.info("user attribute %r left out: %s", name, reason)
    return tuple(kept)


def encode_user_attributes(
    users: pd.DataFrame | None, attributes: Sequence[str], *, age_edges: Sequence[float] = AGE_EDGES
) -> tuple[np.ndarray, list[str]]:
    """Each user's attribute values ``A(u)`` as ids into one table of all values.

    ``age`` is bucketed at ``age_edges`` (ML-100K's exact ages, or ML-1M's group codes,
    fall into the ML-1M groups); any other column is categorical. Every attribute gets its
    own block of ids (field offsets), and a missing value is a value of its own.

    Parameters
    ----------
    users : pandas.DataFrame or None
        The users table of a :class:`Ratings` (one row per compact user id).
    attributes : sequence of str
        Columns of ``users``, e.g. ``("age", "gender", "occupation")``.
    age_edges : sequence of float
        Left edges of the age buckets after the first.

    Returns
    -------
    ids : np.ndarray of int64, shape (n_users, len(attributes))
    labels : list of str
        ``labels[id]``, e.g. ``"age:25-34"``, ``"gender:F"``.

    Raises
    ------
    ValueError
        Without a users table, or for a column it does not have; the message names
        ``user_attributes``.
    """
    if users is None:
        raise ValueError(
            f"user_attributes={tuple(attributes)!r} needs a users table, and these "
            "ratings have none (ML-100K and ML-1M have one); pass "
            "user_attributes=None or 'auto'"
        )
    missing = [name for name in attributes if name not in users.columns]
    if missing or not len(attributes):
        raise ValueError(
            f"user_attributes={tuple(attributes)!r}: the users table has no column "
            f"{missing}; it has {list(users.columns)}"
        )
    ids, labels = [], []
    for name in attributes:
        column = users[name]
        if name == "age":
            edges = list(age_edges)
            names = (
                [f"<{edges[0]:g}"]
                + [f"{lo:g}-{hi - 1:g}" for lo, hi in zip(edges, edges[1:], strict=False)]
                + [f"{edges[-1]:g}+"]
            )
            codes = np.digitize(column.to_numpy(dtype=float), edges)  # shape: (n_users,)
            codes = np.where(column.isna().to_numpy(), len(names), codes)
            names = names + ["missing"]
        else:
            codes, uniques = pd.factorize(column, sort=True)
            names = [str(value) for value in uniques] + ["missing"]
            codes = np.where(codes < 0, len(names) - 1, codes)
        ids.append(codes.astype(np.int64) + len(labels))
        labels.extend(f"{name}:{value}" for value in names)
    return np.stack(ids, axis=1), labels
