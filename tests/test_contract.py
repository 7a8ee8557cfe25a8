"""The contract every registered model keeps, explicit and ranking alike.

One parametrized suite over :mod:`mfutils.models.registry`: a new model inherits it by being
registered. Small data with an obvious answer; each model at its defaults except where a
default schedule is sized for MovieLens and would not move on a few hundred rows (``FAST``).
"""

import numpy as np
import pytest
import torch

import mfutils.compact  # noqa: F401 (registers CompactBiasedMF)
import mfutils.models  # noqa: F401 (registers every model)
from mfutils.data import make_synthetic
from mfutils.data.container import Ratings
from mfutils.metrics import rmse
from mfutils.models import registry
from mfutils.models.base import Model
from mfutils.serving import pipeline

# Ranking models trained by minibatches: one batch per epoch of the block data is too few.
FAST = {"TwoTower": {"batch_size": 64, "lr": 0.01}}


def _options(name: str) -> dict:
    return {**FAST.get(name, {}), "device": "cpu"}


@pytest.fixture(scope="module")
def ratings():
    """Explicit ratings from a rank-3 model, a random fifth held out."""
    data = make_synthetic(300, 150, 20000, rank=3, noise=0.3, seed=0)
    test = np.random.default_rng(0).random(len(data)) < 0.2
    return data.subset(~test), data.subset(test)


@pytest.fixture(scope="module")
def blocks():
    """Two user groups, each interacting with every item of its half of the catalogue but
    one withheld item per user: the withheld item is the one unseen item a model that learns
    anything ranks first."""
    n_users, n_items = 40, 20
    user = np.repeat(np.arange(n_users), n_items // 2)
    item = np.tile(np.arange(n_items // 2), n_users) * 2 + user % 2  # the user's half
    withheld = (user // 2) % (n_items // 2) * 2 + user % 2
    keep = item != withheld
    triples = [(u, i, 1.0) for u, i in zip(user[keep], item[keep], strict=True)]
    train = Ratings.from_triples(triples, n_users=n_users, n_items=n_items, name="blocks")
    return train, withheld.reshape(n_users, -1)[:, 0]


_fitted: dict[str, Model] = {}


def _fit(name, ratings, blocks):
    if name not in _fitted:
        model = registry.create(name, **_options(name))
        model.fit(ratings[0] if model.kind == "explicit" else blocks[0])
        _fitted[name] = model
    return _fitted[name]


@pytest.mark.parametrize("name", registry.names())
def test_the_model_learns_the_obvious(name, ratings, blocks):
    model = _fit(name, ratings, blocks)
    if model.kind == "explicit":
        train, test = ratings
        baseline = registry.create("BaselineEstimates", device="cpu").fit(train)
        reference = (
            np.full(len(test), train.global_mean)
            if name == "BaselineEstimates"
            else baseline.predict_ratings(test)
        )
        assert rmse(model.predict_ratings(test), test.rating) < rmse(reference, test.rating)
    elif name != "MostPopular":  # not personalised: it ranks by popularity
        train, withheld = blocks
        top, _ = model.recommend(np.arange(train.n_users), k=1)
        assert (top[:, 0] == withheld).mean() >= 0.9


@pytest.mark.parametrize("name", registry.names())
def test_recommend_keeps_the_contract(name, ratings, blocks):
    model = _fit(name, ratings, blocks)
    n_items = model.n_items
    with pytest.raises(ValueError, match=f"k={n_items + 1} must lie in"):
        model.recommend([0], k=n_items + 1)
    items, scores = model.recommend([0, 1], k=5)
    assert items.shape == scores.shape == (2, 5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    seen = set(model.train_csr.gather(torch.tensor([0]))[1].tolist())
    every, _ = model.recommend([0], k=n_items - len(seen))
    assert not seen & set(every[0].tolist())  # exclude_seen: never a training item
    assert seen <= set(model.recommend([0], k=n_items, exclude_seen=False)[0][0].tolist())
    unknown, unknown_scores = model.recommend([-1, 10**6], k=5)  # unknown users: a fallback
    assert np.isfinite(unknown_scores).all()
    np.testing.assert_array_equal(unknown[0], unknown[1])


@pytest.mark.parametrize("name", registry.names())
def test_save_load_and_the_config_round_trip(name, ratings, blocks, tmp_path):
    model = _fit(name, ratings, blocks)
    users = torch.tensor([0, 3, -1])
    loaded = Model.load(model.save(tmp_path / "model.safetensors"), device="cpu")
    assert type(loaded) is type(model)
    torch.testing.assert_close(loaded.score_items(users), model.score_items(users))
    assert type(model)(**model.config, device="cpu").config == model.config
    if model.kind == "explicit":  # score_items is predict over the catalogue
        items = np.arange(model.n_items)
        np.testing.assert_allclose(
            model.score_items(torch.tensor([3]))[0].numpy(),
            model.predict(np.full(model.n_items, 3), items),
            rtol=1e-5,
        )


@pytest.mark.parametrize("name", registry.names())
def test_the_constructor_is_the_one_source_of_the_options(name):
    cls = registry.get(name)
    defaults = registry.constructor_options(cls)
    model = cls(device="cpu")
    assert set(model.config) == set(defaults), "config keys are not the constructor's options"
    # every option reaches the command line's -p by name (a non-default value, parsed back)
    for option, default in defaults.items():
        if isinstance(default, bool):
            assert pipeline.parse_params(cls, [f"{option}={not default}"]) == {option: not default}
    changed = {o: v + 1 for o, v in defaults.items() if type(v) is int and o != "seed"}
    rebuilt = cls(**{**model.config, **changed}, device="cpu").config
    assert {o: rebuilt[o] for o in changed} == changed  # an int is taken as given


def test_options_written_under_their_old_names_are_read_under_todays():
    old = {"method": "als", "n_iters": 7, "epochs": 20, "reg": 0.02}
    assert registry.current_options("BaselineEstimates", old) == {
        "method": "als",
        "epochs": 7,
        "reg": 0.02,
    }
    assert registry.current_options("BaselineEstimates", {**old, "method": "sgd"})["epochs"] == 20
    assert registry.current_options("NNMF", {"latent_dim": 5}) == {"n_factors": 5}
    assert registry.current_options("TwoTower", {"dim": 8, "lr": 0.1}) == {
        "n_factors": 8,
        "lr": 0.1,
    }


def test_a_model_constructor_with_spread_options_is_refused():
    with pytest.raises(TypeError, match=r"takes \*options: name every option"):

        class Spread(registry.get("EASE")):  # noqa: F841 (refused at definition)
            def __init__(self, *, reg: float = 1.0, **options):
                super().__init__(reg=reg, **options)


@pytest.mark.parametrize("name", registry.names())
def test_the_same_seed_gives_the_same_scores(name, ratings, blocks):
    model = _fit(name, ratings, blocks)
    again = registry.create(name, **_options(name))
    again.fit(ratings[0] if again.kind == "explicit" else blocks[0])
    users = torch.arange(5)
    torch.testing.assert_close(again.score_items(users), model.score_items(users))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", registry.names())
def test_the_model_runs_on_cuda(name, ratings, blocks):
    model = registry.create(name, **{**_options(name), "device": "cuda"})
    model.fit(ratings[0] if model.kind == "explicit" else blocks[0])
    cpu = _fit(name, ratings, blocks)
    users = torch.arange(5)
    torch.testing.assert_close(
        model.score_items(users).cpu(), cpu.score_items(users), rtol=1e-3, atol=1e-3
    )


def test_the_registry_names_resolves_and_refuses():
    assert {"EASE", "ImplicitALS", "MostPopular", "TwoTower"} == set(registry.names("ranking"))
    assert "BiasedMF" in registry.names("explicit") and "ExplicitModel" not in registry.names()
    assert registry.resolve("biasedmf-als") == (registry.get("BiasedMF"), {"method": "als"})
    assert registry.resolve("FM-ids")[1] == {"fields": ("user", "item")}
    assert registry.create("EASE", reg=10.0, device="cpu").config == {"reg": 10.0}
    with pytest.raises(ValueError, match="unknown model 'Nope'.*presets: BaselineEstimates-ALS"):
        registry.resolve("Nope")
    with pytest.raises(ValueError, match="EASE has no 'method' option"):
        registry.resolve("EASE-ALS")
    with pytest.raises(ValueError, match="kind='implicit'"):
        registry.names("implicit")
