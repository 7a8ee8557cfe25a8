"""The field encoder: offsets, multi-valued genres, reserved buckets, time fields."""

import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from mfutils.data import load_movielens, make_synthetic
from mfutils.features import DAY, DEFAULT_FIELDS, FieldEncoder, available_fields


@pytest.fixture(scope="module")
def split():
    data = make_synthetic(150, 90, 5000, rank=3, seed=0)
    rng = np.random.default_rng(0)
    test = rng.random(len(data)) < 0.2
    test |= data.user == 7  # user 7 and item 5 have no training rating
    test |= data.item == 5
    return data.subset(~test), data.subset(test)


@pytest.fixture(scope="module")
def encoder(split):
    return FieldEncoder().fit(split[0])


def test_field_offsets_never_collide(encoder, split):
    train, test = split
    ranges = sorted(
        (encoder.field_offsets[f], encoder.field_offsets[f] + encoder.field_sizes[f])
        for f in encoder.fields
    )
    assert ranges[0][0] == 0 and ranges[-1][1] == encoder.n_features
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # contiguous
    columns = encoder.field_columns()
    for data in (train, test):
        index = encoder.transform(data)["index"]
        for field in encoder.fields:
            cols = index[:, columns[field]]
            lo = encoder.field_offsets[field]
            assert int(cols.min()) >= lo and int(cols.max()) < lo + encoder.field_sizes[field]


def test_genres_are_weighted_one_over_their_number(encoder, split):
    train, _ = split
    encoded = encoder.encode(
        torch.zeros(train.n_items, dtype=torch.long), torch.arange(train.n_items)
    )
    cols = encoder.field_columns()["genres"]
    index, value = encoded["index"][:, cols], encoded["value"][:, cols]
    flags = train.items.filter(like="genre_").to_numpy() > 0  # shape: (n_items, G)
    genre_names = list(train.items.filter(like="genre_").columns)
    offset = encoder.field_offsets["genres"]
    for item in range(train.n_items):
        active = value[item] > 0
        n = flags[item].sum()
        np.testing.assert_allclose(value[item][active].numpy(), 1.0 / n, rtol=1e-6)
        assert float(value[item].sum()) == pytest.approx(1.0)
        # global index -> genre: local ids number the genres seen in training, in column order
        seen = [
            g
            for g in genre_names
            if flags[:, genre_names.index(g)][np.isin(np.arange(train.n_items), train.item)].any()
        ]
        got = sorted(seen[int(i) - offset - 1] for i in index[item][active])
        assert got == sorted(np.asarray(genre_names)[flags[item]])


def test_unseen_ids_and_values_go_to_the_reserved_bucket(encoder, split):
    train, _ = split
    columns = encoder.field_columns()
    reserved = {f: encoder.field_offsets[f] for f in encoder.fields}
    row = encoder.encode(torch.tensor([7, -1, 10_000, 0]), torch.tensor([5, 0, -3, 99_999]))
    index = row["index"]
    assert int(index[0, columns["user"]]) == reserved["user"]  # no training rating
    assert int(index[0, columns["age"]]) != reserved["age"]  # ... but its age is known
    assert int(index[0, columns["item"]]) == reserved["item"]
    for r in (1, 2):  # out-of-range users lose every user-side feature
        for field in ("user", "age", "gender", "occupation", "zip"):
            assert int(index[r, columns[field]]) == reserved[field]
    for field in ("item", "genres", "year"):  # out-of-range items: every item-side feature
        assert (index[2:, columns[field]] == reserved[field]).all()
    assert row["value"][3, columns["genres"]].tolist()[0] == 1.0  # one reserved genre entry
    for field in ("weekday", "since_first"):  # no timestamp: time fields reserved
        assert (index[:, columns[field]] == reserved[field]).all()


def test_values_unseen_in_training_are_reserved():
    data = make_synthetic(60, 40, 1500, rank=2, seed=1)
    users = data.users.copy()
    users.loc[3, "zip"] = "X9999"  # a non-numeric code -> "other"
    users.loc[4, "occupation"] = "astronaut"
    data = replace(data, users=users)
    train = data.subset(data.user != 4)  # the only astronaut never rates in training
    enc = FieldEncoder(("user", "occupation", "zip"), zip_digits=2).fit(train)
    index = enc.encode(torch.tensor([4, 3]), torch.tensor([0, 0]))["index"]
    cols = enc.field_columns()
    assert int(index[0, cols["occupation"]]) == enc.field_offsets["occupation"]
    other = int(index[1, cols["zip"]]) - enc.field_offsets["zip"]
    assert other > 0  # "other" was seen in training (user 3 rates), so it has its own id


def test_fields_are_selectable_by_name(split):
    train, _ = split
    enc = FieldEncoder(("item", "user", "genres")).fit(train)
    assert enc.fields == ("user", "item", "genres")  # canonical order
    assert set(enc.columns) == {"user", "item", "genres"}
    assert enc.transform(train)["index"].shape == (len(train), len(enc.columns))
    with pytest.raises(ValueError, match="'colour'"):
        FieldEncoder(("user", "colour"))
    with pytest.raises(ValueError, match="users side table"):
        FieldEncoder(("user", "age")).fit(replace(train, users=None))
    with pytest.raises(RuntimeError, match="not fitted"):
        FieldEncoder().encode(torch.tensor([0]), torch.tensor([0]))


def test_time_fields_weekday_and_days_since_first_rating(split):
    train, _ = split
    enc = FieldEncoder(("user", "weekday", "since_first")).fit(train)
    user = int(train.user[0])
    first = int(train.timestamp[train.user == user].min()) // DAY * DAY
    monday = 4 * DAY  # 1970-01-05 was a Monday
    stamps = torch.tensor([first, first + 3 * DAY, first + 40 * DAY, first - 5 * DAY])
    row = enc.encode(torch.full((4,), user), torch.zeros(4, dtype=torch.long), stamps)
    cols = enc.field_columns()
    since = (row["index"][:, cols["since_first"]] - enc.field_offsets["since_first"]).tolist()
    assert since[0] == since[3]  # before the first rating counts as day 0
    assert since[0] < since[1] < since[2]
    weekday = enc.encode(torch.tensor([user]), torch.tensor([0]), torch.tensor([monday]))
    days = pd.to_datetime(train.timestamp, unit="s").day_of_week  # Monday = 0
    local = int(weekday["index"][0, cols["weekday"]]) - enc.field_offsets["weekday"]
    assert local == sorted(set(days)).index(0) + 1


def test_vocabularies_come_from_the_training_fold(split):
    train, test = split
    enc = FieldEncoder().fit(train)
    assert enc.describe().equals(FieldEncoder().fit(train).describe())  # deterministic
    both = replace(
        train,
        user=np.r_[train.user, test.user],
        item=np.r_[train.item, test.item],
        rating=np.r_[train.rating, test.rating],
        timestamp=np.r_[train.timestamp, test.timestamp],
        fold=None,
    )
    with_test = FieldEncoder().fit(both)
    user_col = enc.field_columns()["user"]
    seven = torch.tensor([7])
    assert int(enc.encode(seven, seven)["index"][0, user_col]) == 0  # unseen in training
    assert int(with_test.encode(seven, seven)["index"][0, user_col]) == 8


# ---------------------------------------------------------------------- defaults from the data
def _write(path, lines, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(f"{line}\n" for line in lines).encode(encoding))


def test_default_fields_are_those_the_data_carries(split, caplog):
    train, _ = split
    assert FieldEncoder(None).fit(train).fields == DEFAULT_FIELDS
    assert available_fields(train) == DEFAULT_FIELDS
    with caplog.at_level(logging.INFO, logger="mfutils.features"):
        enc = FieldEncoder(None).fit(replace(train, users=None))
    assert enc.fields == ("user", "item", "genres", "year", "weekday", "since_first")
    notes = [r.getMessage() for r in caplog.records if r.name == "mfutils.features"]
    assert notes == [
        f"default field {f!r} left out: the Ratings has no users side table"
        for f in ("gender", "occupation")
    ]
    assert FieldEncoder(None).fit(
        replace(train, users=train.users.drop(columns="gender"))
    ).fields == tuple(f for f in DEFAULT_FIELDS if f != "gender")
    no_time = replace(train, timestamp=np.zeros_like(train.timestamp))
    assert FieldEncoder(None).fit(no_time).fields == (
        "user",
        "gender",
        "occupation",
        "item",
        "genres",
        "year",
    )
    assert "since_first" in FieldEncoder(("user", "since_first")).fit(no_time).fields
    with pytest.raises(RuntimeError, match="fields=None"):
        FieldEncoder(None).n_fields  # noqa: B018 - unresolved before fit


def test_explicit_fields_the_data_lacks_are_one_line_errors(split):
    train, _ = split
    with pytest.raises(ValueError, match="^field 'gender' needs the users side table") as err:
        FieldEncoder(("user", "item", "gender")).fit(replace(train, users=None))
    assert "\n" not in str(err.value)
    users = train.users.drop(columns="occupation")
    with pytest.raises(
        ValueError, match="field 'occupation' needs a 'occupation' column in the users side table"
    ) as err:
        FieldEncoder(("user", "occupation")).fit(replace(train, users=users))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="field 'year' needs the items side table"):
        FieldEncoder(("item", "year")).fit(replace(train, items=None))


def test_ml1m_codes_and_a_release_without_users(tmp_path):
    # ML-1M: age and occupation are the release's integer codes (age 1 = "under 18").
    ages = [1, 18, 25, 35, 45, 50, 56]
    folder = tmp_path / "ml-1m"
    _write(
        folder / "users.dat",
        [f"{u + 1}::{'FM'[u % 2]}::{a}::{u % 3}::4806{u}" for u, a in enumerate(ages)],
    )
    _write(
        folder / "movies.dat",
        [
            "10::Toy Story (1995)::Animation|Children's|Comedy",
            "20::Star Wars (1977)::Action|Sci-Fi",
        ],
        encoding="latin-1",
    )
    _write(
        folder / "ratings.dat",
        [f"{u + 1}::{10 * (1 + u % 2)}::{1 + u % 5}::97830{u}760" for u in range(len(ages))],
    )
    ml1m = load_movielens("ml-1m", data_dir=tmp_path, download=False)
    assert available_fields(ml1m) == DEFAULT_FIELDS
    enc = FieldEncoder(("user", "age", "occupation")).fit(ml1m)
    cols = enc.field_columns()
    row = enc.encode(torch.arange(len(ages)), torch.zeros(len(ages), dtype=torch.long))["index"]
    age = (row[:, cols["age"]] - enc.field_offsets["age"])[:, 0]
    assert age.tolist() == [1, 2, 3, 4, 5, 6, 7]  # the seven ML-1M groups, in order
    assert enc.field_sizes["occupation"] == 4  # codes 0, 1, 2 and the reserved bucket
    # ml-latest-small: ratings and movies (genres, a year in the title), no users table.
    folder = tmp_path / "ml-latest-small"
    _write(
        folder / "ratings.csv",
        [
            "userId,movieId,rating,timestamp",
            "1,1,4.0,964982703",
            "2,3,0.5,964981247",
            "2,1,3.0,964981250",
        ],
    )
    _write(
        folder / "movies.csv",
        [
            "movieId,title,genres",
            "1,Toy Story (1995),Adventure|Animation|Children",
            '3,"American President, The (1995)",Comedy|Drama|Romance',
        ],
    )
    small = load_movielens("ml-latest-small", data_dir=tmp_path, download=False)
    assert small.users is None
    assert FieldEncoder(None).fit(small).fields == (
        "user",
        "item",
        "genres",
        "year",
        "weekday",
        "since_first",
    )


@pytest.mark.slow
def test_ml100k_defaults_encode_as_default_fields(ml100k):
    from mfutils.data import canonical_folds

    train, test = canonical_folds(ml100k)[0]
    resolved, explicit = FieldEncoder(None).fit(train), FieldEncoder(DEFAULT_FIELDS).fit(train)
    assert resolved.fields == DEFAULT_FIELDS
    for name, value in explicit.transform(test).items():
        assert torch.equal(resolved.transform(test)[name], value), name
