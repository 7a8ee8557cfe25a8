"""The two-tower model: every loss and sampler trains, masks are right, scoring is consistent."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mfutils.data import make_synthetic, to_implicit
from mfutils.experiments import ranking_split
from mfutils.losses import LOSSES
from mfutils.models.two_tower import NEGATIVES, TwoTower


@pytest.fixture(scope="module")
def split():
    return ranking_split(make_synthetic(60, 40, 1200, rank=3, seed=5), seed=0)


def _fit(split, **options):
    model = TwoTower(n_factors=8, epochs=2, batch_size=128, device="cpu", **options)
    return model.fit(split.fit, valid=split.valid)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_trains(split, loss):
    model = _fit(split, loss=loss, n_negatives=4)
    assert np.isfinite(model.history["train_loss"]).all()
    scores = model.score_items(torch.arange(split.fit.n_users))
    assert scores.shape == (split.fit.n_users, split.fit.n_items)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("negatives", NEGATIVES)
@pytest.mark.parametrize("logq", [None, "exact", "streaming"])
def test_every_sampler_with_and_without_logq(split, negatives, logq):
    if negatives == "popularity" and logq == "streaming":  # the sampler's q is known
        with pytest.raises(ValueError, match="logq='exact'"):
            _fit(split, loss="ssm", negatives=negatives, logq=logq)
        return
    model = _fit(split, loss="ssm", negatives=negatives, n_negatives=8, logq=logq)
    assert np.isfinite(model.history["valid"]).all()


def test_popularity_negatives_correct_only_when_logq_asks(split):
    model = _fit(split, loss="ssm", negatives="popularity", n_negatives=8, logq="exact")
    users, pos = torch.tensor([0, 1, 2]), torch.as_tensor(split.fit.item[:3])
    draws = model.net.sampler["popularity"]
    cand, pos_logq, neg_logq = model.net._negatives(users, pos)
    torch.testing.assert_close(neg_logq, draws.log_q(cand))  # the sampler's own q
    torch.testing.assert_close(pos_logq, draws.log_q(pos))
    model.net.sampler["logq"] = None
    assert model.net._negatives(users, pos)[1:] == (None, None)


def test_reg_penalises_user_positive_and_negative_as_bprs_sgd(split):
    model = _fit(split, loss="bpr", negatives="uniform", n_negatives=1, reg=0.0)
    net = model.net
    batch = {"user": torch.tensor([0, 1, 2, 3]), "item": torch.as_tensor(split.fit.item[:4])}

    def objective(reg):
        net.reg = reg
        net.sampler["gen"].manual_seed(7)  # the same negatives for both calls
        return net.objective(batch)

    with torch.no_grad():
        plain = objective(0.0)
        net.sampler["gen"].manual_seed(7)
        neg = net._negatives(batch["user"], batch["item"])[0]  # shape: (4, 1)
        penalised = objective(0.5)
    table = net.items(torch.arange(net.n_items))
    norms = (
        net.users(batch["user"]).pow(2).sum(1)
        + table[batch["item"]].pow(2).sum(1)
        + table[neg[:, 0]].pow(2).sum(1)
    )  # ||w_u||^2 + ||h_i||^2 + ||h_j||^2 per triple
    torch.testing.assert_close(penalised - plain, 0.5 * norms.mean().detach())


def test_shared_mask_removes_seen_items_and_the_positive(split):
    model = _fit(split, loss="softmax", negatives="in-batch")
    net = model.net
    users = torch.tensor([0, 0, 1])
    pos = torch.tensor(
        [
            int(split.fit.item[split.fit.user == 0][0]),
            int(split.fit.item[split.fit.user == 0][1]),
            int(split.fit.item[split.fit.user == 1][0]),
        ]
    )
    cand = torch.arange(split.fit.n_items)
    mask = net._shared_mask(users, pos, cand)
    seen = model.train_csr.to_dense()
    assert torch.equal(mask[0], seen[0] | (cand == pos[0]))
    assert torch.equal(mask[2], seen[1] | (cand == pos[2]))
    net.sampler["seen_dense"] = None  # the sparse path gives the same mask
    assert torch.equal(net._shared_mask(users, pos, cand), mask)


def test_uniform_negatives_are_never_seen_items(split):
    model = _fit(split, loss="bpr", negatives="uniform", n_negatives=16)
    users = torch.as_tensor(split.fit.user[:64])
    cand, pos_logq, neg_logq = model.net._negatives(users, torch.as_tensor(split.fit.item[:64]))
    seen = model.train_csr.to_dense()
    assert cand.shape == (64, 16) and pos_logq is None and neg_logq is None
    assert not seen[users[:, None], cand].any()


def test_cosine_losses_score_by_cosine(split):
    model = _fit(split, loss="ssm", loss_options={"temperature": 0.2})
    assert model.net.normalize and model.net.loss.similarity == "dot"
    users = torch.arange(5)
    user_vec = F.normalize(model.user_embeddings()[users], dim=1)
    item_vec = F.normalize(model.item_embeddings(), dim=1)
    ranks = model.score_items(users).argsort(1, descending=True)
    assert torch.equal(ranks, (user_vec @ item_vec.T).argsort(1, descending=True))


def test_side_feature_bags_are_added_to_the_towers(split):
    from mfutils.data import UserItemCSR

    n_items = split.fit.n_items
    genre = UserItemCSR.from_pairs(
        np.arange(n_items), np.arange(n_items) % 3, n_users=n_items, n_items=3
    )
    model = _fit(split, loss="bpr", item_features=genre)
    net = model.net
    items = torch.tensor([0, 3])  # same genre
    expected = net.item_emb(items) + net.item_bag.weight[0]
    torch.testing.assert_close(net.items(items), expected)


def test_unknown_users_fall_back_to_popularity(split):
    model = _fit(split, loss="bpr")
    scores = model.score_items(torch.tensor([split.fit.n_users + 3]))
    expected = torch.as_tensor(split.fit.item_counts(), dtype=torch.float32)
    assert torch.equal(scores[0], expected)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="negatives"):
        TwoTower(negatives="hard")
    with pytest.raises(ValueError, match="logq"):
        TwoTower(logq="yes")
    with pytest.raises(ValueError, match="unknown loss"):
        TwoTower(loss="triplet")
    with pytest.raises(ValueError, match="unknown option"):
        TwoTower(loss="bpr", loss_options={"margin": 1.0})


def test_same_seed_same_model(split):
    a = _fit(split, loss="bpr", seed=3)
    b = _fit(split, loss="bpr", seed=3)
    torch.testing.assert_close(a.item_embeddings(), b.item_embeddings())


def test_implicit_data_with_every_rating_one():
    data = to_implicit(make_synthetic(30, 20, 300, seed=1))
    model = TwoTower(n_factors=4, epochs=1, device="cpu").fit(data)
    assert model.history["train_loss"].notna().all()


def test_weight_decay_shrinks_every_embedding(split):
    plain = _fit(split, loss="directau", lr=1e-2)
    decayed = _fit(split, loss="directau", lr=1e-2, weight_decay=1.0)
    assert decayed.item_embeddings().norm() < 0.7 * plain.item_embeddings().norm()
