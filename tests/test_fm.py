"""Factorization machines and DeepFM: the O(kn) identity, fallbacks, heads, checkpoints."""

import itertools
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mfutils.data import make_synthetic
from mfutils.features import DEFAULT_FIELDS
from mfutils.metrics import auc, log_loss, rmse
from mfutils.models import BaselineEstimates, DeepFM, ExplicitModel, FactorizationMachine
from mfutils.models.fm import FMNet
from mfutils.serving.artifact import Artifact


@pytest.fixture(scope="module")
def split():
    data = make_synthetic(150, 90, 6000, rank=3, seed=0)
    test = np.random.default_rng(0).random(len(data)) < 0.2
    test |= data.user == 7  # user 7 has no training rating
    return data.subset(~test), data.subset(test)


def _naive_fm(net: FMNet, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Eq. 1 of Rendle (2010) with the double sum over pairs of active features."""
    out = []
    net = net.requires_grad_(False)
    for row in range(len(index)):
        feats = [(int(i), float(x)) for i, x in zip(index[row], value[row], strict=True) if x]
        y = float(net.bias) + sum(float(net.linear.weight[i, 0]) * x for i, x in feats)
        for (i, xi), (j, xj) in itertools.combinations(feats, 2):
            y += float(net.factors.weight[i] @ net.factors.weight[j]) * xi * xj
        out.append(y)
    return torch.tensor(out)


def test_linear_time_identity_equals_the_pairwise_sum():
    gen = torch.Generator().manual_seed(0)
    net = FMNet(
        30,
        4,
        column_field=torch.tensor([0, 1, 2, 2, 2]),
        reserved=torch.tensor([0]),
        bias=0.3,
        reg_linear=0.0,
        reg_factors=0.0,
        init_std=0.5,
        generator=gen,
    )
    with torch.no_grad():
        net.linear.weight.normal_(generator=gen)
    index = torch.randint(1, 30, (12, 5), generator=gen)
    value = torch.rand(12, 5, generator=gen)
    value[:, 4] = 0.0  # padding of the multi-valued field
    index[3, 2:4] = index[3, 1]  # a feature repeated within a row
    with torch.no_grad():
        fast = net({"index": index, "value": value})
    torch.testing.assert_close(fast, _naive_fm(net, index, value), rtol=1e-5, atol=1e-5)
    # The per-field pooling is EmbeddingBag's weighted sum, one bag per (row, field).
    offsets = (torch.arange(12)[:, None] * 5 + torch.tensor([0, 1, 2])).reshape(-1)
    bags = F.embedding_bag(
        index.reshape(-1),
        net.factors.weight,
        offsets,
        mode="sum",
        per_sample_weights=value.reshape(-1),
    ).view(12, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(net.field_embeddings(index, value), bags)


def test_field_embeddings_pool_each_field(split):
    train, _ = split
    model = FactorizationMachine(4, epochs=1, device="cpu").fit(train)
    batch = model.encoder.transform(train)
    index, value = batch["index"][:50], batch["value"][:50]
    with torch.no_grad():
        pooled = model.net.field_embeddings(index, value)  # shape: (50, n_fields, 4)
    assert pooled.shape == (50, model.encoder.n_fields, 4)
    v = model.net.factors.weight.detach()
    for field, cols in model.encoder.field_columns().items():
        k = model.encoder.fields.index(field)
        expected = (v[index[:, cols]] * value[:, cols, None]).sum(1)
        torch.testing.assert_close(pooled[:, k], expected)


def test_ids_only_fm_is_biased_matrix_factorization(split):
    train, test = split
    model = FactorizationMachine(
        3, fields=("user", "item"), epochs=3, device="cpu", clip=False
    ).fit(train)
    enc, net = model.encoder, model.net
    u, i = torch.as_tensor(test.user[:20]), torch.as_tensor(test.item[:20])
    known = torch.as_tensor(train.user_counts() > 0)[u]
    rows_u = torch.where(known, u + 1 + enc.field_offsets["user"], enc.field_offsets["user"])
    rows_i = i + 1 + enc.field_offsets["item"]
    w, v = net.linear.weight.detach()[:, 0], net.factors.weight.detach()
    expected = net.bias.detach() + w[rows_u] + w[rows_i] + (v[rows_u] * v[rows_i]).sum(1)
    np.testing.assert_allclose(
        model.predict(test.user[:20], test.item[:20]), expected.numpy(), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: FactorizationMachine(4, epochs=15, batch_size=256, device="cpu"),
        lambda: DeepFM(4, hidden=(16, 16), dropout=0.1, epochs=15, batch_size=256, device="cpu"),
    ],
)
def test_training_beats_the_baseline_and_handles_unknown_ids(split, make):
    train, test = split
    model = make().fit(train)
    baseline = BaselineEstimates(device="cpu").fit(train)
    assert rmse(model.predict_ratings(test), test.rating) < rmse(
        baseline.predict_ratings(test), test.rating
    )
    pred = model.predict([-1, 10_000, 7, 0, 7], [3, 3, 3, -5, 10_000])
    assert np.isfinite(pred).all() and pred.shape == (5,)
    items, scores = model.recommend([0, 7, -1], k=5)
    assert items.shape == (3, 5) and np.isfinite(scores).all()
    seen = set(train.item[train.user == 0])
    assert not seen & set(items[0])
    np.testing.assert_allclose(scores[0], model.predict(np.zeros(5, int), items[0]), atol=1e-5)


def test_cold_users_keep_their_side_features(split):
    train, _ = split
    model = FactorizationMachine(
        4,
        fields=("user", "item", "age", "gender", "occupation"),
        epochs=10,
        lr=0.02,
        device="cpu",
        clip=False,
    ).fit(train)
    # User 7 never rated in training: the id feature is dropped, age/gender/occupation stay.
    cold = model.predict(np.full(train.n_items, 7), np.arange(train.n_items))
    anonymous = model.predict(np.full(train.n_items, -1), np.arange(train.n_items))
    assert not np.allclose(cold, anonymous)
    base = ExplicitModel.predict_tensor(model, torch.full((3,), 7), torch.arange(3))
    np.testing.assert_allclose(base.numpy(), anonymous[:3], atol=1e-6)  # base contract


def test_cold_fraction_trains_the_reserved_id_buckets(split):
    train, _ = split
    fields = ("user", "item", "gender", "occupation", "since_first")
    plain = FactorizationMachine(4, fields=fields, epochs=3, device="cpu").fit(train)
    model = FactorizationMachine(4, fields=fields, epochs=3, cold_fraction=0.2, device="cpu").fit(
        train
    )
    enc = model.encoder
    data = enc.transform(train)
    augmented = model._with_anonymous_copies(data)
    n_copies = round(0.2 * len(train))
    assert len(augmented["rating"]) == len(train) + 2 * n_copies
    user_col = enc.field_columns()["user"]
    copies = augmented["index"][len(train) :]
    assert (copies[:n_copies, user_col] == enc.field_offsets["user"]).all()  # user hidden
    since_col = enc.field_columns()["since_first"]
    assert (copies[:n_copies, since_col] == enc.field_offsets["since_first"]).all()
    assert (copies[n_copies:, user_col] > enc.field_offsets["user"]).all()  # item hidden
    for field in ("user", "item"):  # the newcomer's buckets are learned
        assert model.net.factors.weight[enc.field_offsets[field]].abs().sum() > 0
    for field in fields:  # without cold_fraction every reserved bucket stays at zero
        assert plain.net.factors.weight[enc.field_offsets[field]].abs().sum() == 0
        assert plain.net.linear.weight[enc.field_offsets[field]].abs().sum() == 0
    with pytest.raises(ValueError, match="cold_fraction="):
        FactorizationMachine(cold_fraction=1.5)


def test_binary_head_gives_probabilities(split):
    train, test = split
    liked, test_liked = train.with_ratings(train.rating >= 4), test.with_ratings(test.rating >= 4)
    for model in (
        FactorizationMachine(4, binary=True, epochs=10, lr=0.02, device="cpu"),
        DeepFM(4, hidden=(8,), binary=True, epochs=10, lr=0.02, device="cpu"),
    ):
        model.fit(liked, valid=test_liked)
        prob = model.predict_ratings(test_liked)
        assert ((prob > 0) & (prob < 1)).all()
        assert auc(prob, test_liked.rating) > 0.6
        assert log_loss(prob, test_liked.rating) < log_loss(
            np.full(len(prob), liked.rating.mean()), test_liked.rating
        )
        assert "valid" in model.history


@pytest.mark.parametrize(
    "make",
    [
        lambda: FactorizationMachine(3, epochs=2, device="cpu"),
        lambda: DeepFM(3, hidden=(8,), epochs=2, device="cpu"),
    ],
)
def test_checkpoint_round_trip(split, make, tmp_path):
    train, test = split
    model = make().fit(train)
    loaded = ExplicitModel.load(model.save(tmp_path / "fm.pt"))
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.predict_ratings(test), model.predict_ratings(test))
    np.testing.assert_array_equal(loaded.recommend([0, 7], k=4)[0], model.recommend([0, 7], k=4)[0])


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="'height'"):
        FactorizationMachine(fields=("user", "height"))
    with pytest.raises(ValueError, match="optimizer="):
        FactorizationMachine(optimizer="lbfgs")
    with pytest.raises(ValueError, match="dropout="):
        DeepFM(dropout=1.0)
    with pytest.raises(ValueError, match="n_factors="):
        DeepFM(0)


@pytest.mark.slow
def test_fm_side_features_on_ml100k_u1(ml100k):
    from mfutils.data import canonical_folds

    train, test = canonical_folds(ml100k)[0]
    model = FactorizationMachine(epochs=10, device="cpu").fit(train)  # 30 epochs: 0.919
    assert rmse(model.predict_ratings(test), test.rating) <= 0.935


# ---------------------------------------------------------------------- default fields
@pytest.mark.parametrize(
    "make",
    [
        lambda: FactorizationMachine(3, epochs=1, device="cpu"),
        lambda: DeepFM(3, hidden=(8,), epochs=1, device="cpu"),
    ],
)
def test_default_fields_follow_the_data(split, make, caplog, tmp_path):
    train, test = split
    assert make().config["fields"] is None
    assert make().fit(train).fields_ == DEFAULT_FIELDS
    no_users = replace(train, users=None)
    with caplog.at_level(logging.INFO, logger="mfutils.features"):
        model = make().fit(no_users)
    assert model.fields_ == ("user", "item", "genres", "year", "weekday", "since_first")
    notes = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("'gender'" in note and "users side table" in note for note in notes)
    assert np.isfinite(model.predict_ratings(replace(test, users=None))).all()
    # The resolved fields travel with the checkpoint and with a serving artifact.
    loaded = ExplicitModel.load(model.save(tmp_path / "fm.pt"))
    assert loaded.fields_ == model.fields_ and loaded.config["fields"] is None
    np.testing.assert_array_equal(loaded.predict_ratings(test), model.predict_ratings(test))
    restored = make().restore(tmp_path / "fm.pt")
    assert restored.fields_ == model.fields_
    artifact = Artifact.load(Artifact.from_training(model, no_users).save(tmp_path / "art"))
    assert artifact.model.fields_ == model.fields_
    np.testing.assert_array_equal(artifact.model.predict_ratings(test), model.predict_ratings(test))


@pytest.mark.parametrize("cls", [FactorizationMachine, DeepFM])
def test_an_explicit_field_the_data_lacks_is_an_error(split, cls):
    train, _ = split
    model = cls(3, fields=("user", "item", "gender"), epochs=1, device="cpu")
    with pytest.raises(ValueError, match="^field 'gender' needs the users side table") as err:
        model.fit(replace(train, users=None))
    assert "\n" not in str(err.value)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.fields_  # noqa: B018


def test_default_fields_fit_as_the_explicit_default_fields(split):
    train, test = split
    implicit = FactorizationMachine(3, epochs=2, device="cpu").fit(train)
    explicit = FactorizationMachine(3, fields=DEFAULT_FIELDS, epochs=2, device="cpu").fit(train)
    np.testing.assert_array_equal(implicit.predict_ratings(test), explicit.predict_ratings(test))


def test_deepfm_first_phase_is_the_fm_and_a_harmful_joint_phase_is_dropped(split):
    train, test = split
    common = dict(
        n_factors=4, fields=("user", "item"), epochs=6, batch_size=256, device="cpu", clip=False
    )
    fm = FactorizationMachine(**common).fit(train)
    fm_only = DeepFM(**common, hidden=(8,), joint_epochs=0).fit(train)
    np.testing.assert_allclose(fm_only.predict_ratings(test), fm.predict_ratings(test), atol=1e-5)
    wild = DeepFM(**common, hidden=(8,), joint_epochs=3, joint_lr=1.0, valid_fraction=0.0)
    wild.fit(train, valid=test)
    assert wild.joint_epochs_ == 0 and list(wild.history.phase.unique()) == ["fm", "joint"]
    np.testing.assert_allclose(wild.predict_ratings(test), fm.predict_ratings(test), atol=1e-5)
    assert (
        DeepFM(**common, hidden=(8,), joint_epochs=3, joint_lr=1.0).fit(train).joint_epochs_ == 0
    )  # chosen on a tenth of train, then refitted
    one_run = DeepFM(**common, hidden=(8,), warm_start=False).fit(train)
    assert "phase" not in one_run.history and one_run.joint_epochs_ == 6
