r"""A two-tower (dual-encoder) retrieval model trained with any implicit loss and sampler.

The user tower maps a user to :math:`u\in\mathbb R^d`, the item tower an item to
:math:`v\in\mathbb R^d`, and the score is their similarity (dot or cosine): with id embeddings
only this is matrix factorization (BPR-MF, Rendle et al. 2009; MF-CCL, Mao et al. 2021;
MF-DirectAU, Wang et al. 2022), and optional side-feature bags (e.g. a user's occupation, a
movie's genres) are averaged into either tower, the two-tower retrieval model of Yi et al.
(RecSys 2019).

A training step takes a batch of positive pairs :math:`(u_b, i_b)`, draws negatives with one
of the samplers of :mod:`mfutils.sampling`, and hands embeddings, ids and (with ``logq``) the
log sampling probabilities to one of the losses of :mod:`mfutils.losses`, which applies the
logQ correction, masks accidental hits and mines hard negatives in TFRS's order.

=============  ==================================================================
negatives      candidates of a row
=============  ==================================================================
``uniform``    ``n_negatives`` items per row, uniform over the user's unseen items
``popularity`` ``n_negatives`` items shared by the batch, drawn by count^alpha (alpha=0:
               uniform over the catalogue; cheap, one matrix product per batch)
``in-batch``   the batch's other positives (Yi et al. 2019)
``mixed``      in-batch plus ``n_negatives`` uniform corpus items (Yang et al. 2020)
=============  ==================================================================
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mfutils.data.container import Ratings, UserItemCSR
from mfutils.embeddings import KINDS, make_embedding
from mfutils.losses import ImplicitLoss, make_loss
from mfutils.metrics import topk_metrics
from mfutils.models.ranking import RankingModel
from mfutils.sampling import (
    PopularityNegatives,
    StreamingFrequencyEstimator,
    UniformNegatives,
    accidental_hit_mask,
    item_log_frequencies,
    mixed_negatives,
)
from mfutils.train import TrainConfig, fit

__all__ = ["NEGATIVES", "TwoTower", "TwoTowerNet"]

NEGATIVES = ("uniform", "popularity", "in-batch", "mixed")
DENSE_MASK_ITEMS = 16384  # up to this catalogue size, seen items are masked through a bitmap
LOGQ = (None, "exact", "streaming")


class TwoTowerNet(nn.Module):
    """Id embeddings (plus optional feature bags) for users and items, and the training step.

    Parameters
    ----------
    n_users, n_items, dim : int
    loss : ImplicitLoss
        With ``normalize`` it receives unit vectors and should use the dot product.
    normalize : bool
        L2-normalise tower outputs before the loss (cosine similarity).
    sampler : dict
        ``negatives``, ``n_negatives``, ``logq`` and the objects they need (built by
        :class:`TwoTower`).
    reg : float
        L2 weight on the embeddings a batch uses, per row (BPR's :math:`\\lambda_\\Theta`).
    user_features, item_features : UserItemCSR, optional
        Bags of feature ids per user / item; their mean embedding is added to the id's.
    init_std : float
        Standard deviation of the initial embeddings.
    embedding : {"full", "hashing", "hash", "bloom"}
        Kind of the user and item id tables (:func:`mfutils.embeddings.make_embedding`).
    embedding_options : dict, optional
        Options of :func:`mfutils.embeddings.make_embedding` (``ratio``, ``k``, ``sign``,
        ``concat``, ``seed``); the item table hashes with ``seed + 1``.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        *,
        loss: ImplicitLoss,
        normalize: bool,
        sampler: dict[str, Any],
        reg: float,
        init_std: float,
        user_features: UserItemCSR | None = None,
        item_features: UserItemCSR | None = None,
        embedding: str = "full",
        embedding_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if embedding == "full":
            self.user_emb = nn.Embedding(n_users, dim)
            self.item_emb = nn.Embedding(n_items, dim)
            nn.init.normal_(self.user_emb.weight, std=init_std)
            nn.init.normal_(self.item_emb.weight, std=init_std)
        else:
            options = {"seed": 0, "init_std": init_std, **(embedding_options or {})}
            self.user_emb = make_embedding(embedding, n_users, dim, **options)
            options["seed"] += 1
            self.item_emb = make_embedding(embedding, n_items, dim, **options)
        self.user_features, self.item_features = user_features, item_features
        self.user_bag = _feature_bag(user_features, dim, init_std)
        self.item_bag = _feature_bag(item_features, dim, init_std)
        self.loss = loss
        self.normalize = normalize
        self.sampler = sampler
        self.reg = reg
        self.n_items = n_items
        self.step = 0

    def users(self, users: torch.Tensor) -> torch.Tensor:
        """User-tower outputs, shape (len(users), dim)."""
        return _tower(self.user_emb, self.user_bag, self.user_features, users)

    def items(self, items: torch.Tensor) -> torch.Tensor:
        """Item-tower outputs, shape (len(items), dim)."""
        return _tower(self.item_emb, self.item_bag, self.item_features, items)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Similarity of each (user, item) row, shape (batch,)."""
        user_vec, item_vec = self.users(batch["user"]), self.items(batch["item"])
        if self.normalize:
            user_vec, item_vec = F.normalize(user_vec, dim=1), F.normalize(item_vec, dim=1)
        return (user_vec * item_vec).sum(1)

    def objective(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean loss of a batch of positive pairs, with freshly drawn negatives (a scalar).

        The item tower runs once over the whole catalogue and every positive and negative is a
        row of that table: with cosine similarity the normalisation then costs
        ``n_items x dim`` instead of ``batch x negatives x dim``.
        """
        users, pos = batch["user"], batch["item"]  # shape: (B,)
        self.step += 1
        user_vec = self.users(users)  # shape: (B, d)
        table = self.items(torch.arange(self.n_items, device=users.device))  # (n_items, d)
        # the user's and the positive's share of the L2 penalty (each row's negatives below);
        # rows are gathered with index_select, whose backward (index_add_) is 2x faster on the
        # CPU than advanced indexing's, and a penalty gathers the items' squared norms, not
        # their (B, N, d) vectors
        sq_norms = table.pow(2).sum(1)  # shape: (n_items,)
        penalty = self.reg * (user_vec.pow(2).sum(1) + sq_norms[pos]).mean()
        if self.normalize:
            user_vec, table = F.normalize(user_vec, dim=1), F.normalize(table, dim=1)
        pos_vec = table.index_select(0, pos)  # shape: (B, d)
        if not self.loss.needs_negatives:
            return self.loss(user_vec, pos_vec, user_idx=users, item_idx=pos) + penalty
        cand, pos_logq, neg_logq = self._negatives(users, pos)
        if self.reg:  # BPR's SGD regularises the negative item too: a row's negatives share
            # one item penalty (their mean), which with one negative per row is Rendle's step
            penalty = penalty + self.reg * sq_norms[cand].mean()
        # shape: (C, d) shared or (B, N, d) per row
        neg_vec = table.index_select(0, cand.reshape(-1)).view(*cand.shape, -1)
        options: dict[str, torch.Tensor] = {}
        if cand.dim() == 1:  # shared candidates: mask the accidental hits
            options["neg_mask"] = self._shared_mask(users, pos, cand)  # shape: (B, C)
        if self.loss.supports_logq and neg_logq is not None:
            options.update(pos_logq=pos_logq, neg_logq=neg_logq)
        return (
            self.loss(user_vec, pos_vec, neg_vec, user_idx=users, item_idx=pos, **options) + penalty
        )

    def _shared_mask(
        self, users: torch.Tensor, pos: torch.Tensor, cand: torch.Tensor
    ) -> torch.Tensor:
        """Candidates that are no negatives of a row: its positive (including its own in-batch
        column: the loss gets the positive separately) or any training item of its user
        (which covers the user's other positives in the batch), shape (B, C)."""
        seen = self.sampler["seen"]
        if self.sampler.get("seen_dense") is not None:  # small catalogues: one gather
            mask = self.sampler["seen_dense"][users][:, cand]  # shape: (B, C)
        else:
            mask = accidental_hit_mask(pos, cand, users=users, seen=seen)
        return mask | (cand[None, :] == pos[:, None])

    def _negatives(
        self, users: torch.Tensor, pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Candidate ids ((B, N) or (C,)) and the log q of positives and candidates."""
        kind, n, gen = self.sampler["negatives"], self.sampler["n_negatives"], self.sampler["gen"]
        if kind == "uniform":  # exact draws outside the user's items: no accidental hits, and
            # q is constant within a row, so no logQ correction either
            return self.sampler["uniform"].sample(users, n, generator=gen), None, None
        if kind == "popularity":
            draws = self.sampler["popularity"]
            cand = draws.sample(users[:1], n, generator=gen)[0]  # shape: (n,) shared
            if self.sampler["logq"] is None:  # the sampler's q is known exactly: "exact"
                return cand, None, None
            return cand, draws.log_q(pos), draws.log_q(cand)
        log_p = self._item_log_p(pos)
        extra = n if kind == "mixed" else 0
        cands = mixed_negatives(
            pos, n_uniform=extra, n_items=self.n_items, item_log_p=log_p, generator=gen
        )
        if cands.log_q is None:
            return cands.items, None, None
        return cands.items, cands.log_q[: len(pos)], cands.log_q

    def _item_log_p(self, pos: torch.Tensor) -> Any:
        """Log unigram probability of items as in-batch candidates (exact or streamed)."""
        logq = self.sampler["logq"]
        if logq == "exact":
            return self.sampler["log_freq"]
        if logq == "streaming":
            estimator = self.sampler["estimator"]
            estimator.update(pos, self.step)  # update, then estimate (Yi et al. Alg. 2)
            batch = len(pos)
            return lambda items: estimator.log_q(items) - math.log(batch)
        return None


class TwoTower(RankingModel):
    r"""Two-tower retrieval / MF model for implicit feedback, trained by :func:`mfutils.train.fit`.

    Parameters
    ----------
    n_factors : int
        Embedding size :math:`d` (the towers' output width).
    loss : str
        A name of :data:`mfutils.losses.LOSSES` (``bpr``, ``hinge``, ``ccl``, ``ssm``,
        ``softmax``, ``directau``, ``mawu``, ``infonce+``, ``mine+``).
    loss_options : dict, optional
        Keyword options of the loss (similarity, temperature, margin, hard_negatives, ...).
    negatives : {"uniform", "popularity", "in-batch", "mixed"}
        How negatives are drawn (module docstring); unused by DirectAU and MAWU.
    n_negatives : int
        Negatives per row (``uniform``), shared per batch (``popularity``), or uniform extras
        (``mixed``).
    popularity_alpha : float
        Exponent of the ``popularity`` sampler, :math:`q_j\propto c_j^\alpha`: 1 follows the
        training frequencies (like in-batch negatives), 0.75 is word2vec's smoothing, 0 draws
        uniformly from the catalogue.
    logq : {None, "exact", "streaming"}
        LogQ correction of the softmax-family losses for popularity-skewed candidates.
        ``None``: none. ``"exact"``: for in-batch and mixed candidates the training
        frequencies, for ``popularity`` negatives the sampler's own :math:`q_j\propto
        c_j^\alpha`. ``"streaming"``: Yi et al.'s streaming estimate of the in-batch
        frequencies (in-batch and mixed candidates only: the popularity sampler's ``q`` is
        known, so estimating it is refused).
    epochs, batch_size, lr, optimizer, patience :
        Training options of :class:`mfutils.train.TrainConfig`; early stopping watches the
        validation NDCG@20 when ``valid`` is given to :meth:`fit`.
    reg : float
        L2 weight on the embeddings of a batch's rows: the user, the positive item and the
        row's negatives (their mean), so frequent users and items are penalised more often and
        with one negative per row each triple is regularised as in BPR's SGD (Rendle et al.
        2009, §4.3.1, with :math:`\lambda_{H^+}=\lambda_{H^-}`).
    weight_decay : float
        Optimizer weight decay on every parameter at every step (how DirectAU's and MAWU's
        official code regularise).
    init_std : float
        Standard deviation of the initial embeddings.
    user_features, item_features : UserItemCSR, optional
        Side-feature bags (rows = users / items, columns = feature ids).
    embedding : {"full", "hashing", "hash", "bloom"}
        The user and item id tables: full, or a compact hashed table of
        :mod:`mfutils.embeddings` (notebook 13).
    embedding_options : dict, optional
        Options of :func:`mfutils.embeddings.make_embedding`, e.g. ``{"ratio": 0.25, "k": 2}``
        (size as a share of the full table, hashes per id, ``sign``, ``concat``, ``seed``).
    score : {"auto", "dot", "cosine"}
        How :meth:`score_items` ranks: ``auto`` uses the loss's similarity (cosine for the
        cosine losses) and the raw dot product for DirectAU/MAWU, as their official code does.
    seed : int
    progress : bool
    device : str or torch.device, optional
    """

    def __init__(
        self,
        *,
        n_factors: int = 64,
        loss: str = "bpr",
        loss_options: dict[str, Any] | None = None,
        negatives: str = "uniform",
        n_negatives: int = 1,
        popularity_alpha: float = 1.0,
        logq: str | None = None,
        epochs: int = 30,
        batch_size: int = 1024,
        lr: float = 1e-3,
        optimizer: str = "adam",
        patience: int | None = 5,
        reg: float = 0.0,
        weight_decay: float = 0.0,
        init_std: float = 0.1,
        user_features: UserItemCSR | None = None,
        item_features: UserItemCSR | None = None,
        embedding: str = "full",
        embedding_options: dict[str, Any] | None = None,
        score: str = "auto",
        seed: int = 0,
        progress: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(device=device)
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives={negatives!r}; choose one of {NEGATIVES}")
        if logq not in LOGQ:
            raise ValueError(f"logq={logq!r}; choose one of {LOGQ}")
        if negatives == "popularity" and logq == "streaming":
            raise ValueError(
                "logq='streaming' estimates in-batch frequencies; the "
                "negatives='popularity' sampler's q is known: use logq='exact' "
                "(or None for no correction)"
            )
        if score not in ("auto", "dot", "cosine"):
            raise ValueError(f"score={score!r}; choose 'auto', 'dot' or 'cosine'")
        if embedding not in KINDS:
            raise ValueError(f"embedding={embedding!r}; choose one of {KINDS}")
        if n_factors < 1 or n_negatives < 1:
            raise ValueError(f"n_factors={n_factors} and n_negatives={n_negatives} must be >= 1")
        self.config.update(
            loss_options=dict(loss_options or {}), embedding_options=dict(embedding_options or {})
        )
        self._features = (user_features, item_features)
        make_loss(loss, **self._loss_options(1, 1))  # unknown names/options fail here

    def _loss_options(self, n_users: int, n_items: int) -> dict[str, Any]:
        options = dict(self.config["loss_options"])
        if self.config["loss"].lower() == "mawu":
            options.update(n_users=n_users, n_items=n_items)
        return options

    def _build(self, n_users: int, n_items: int) -> None:
        cfg = self.config
        options = self._loss_options(n_users, n_items)
        # Cosine losses get unit vectors from the net (normalised once per catalogue row).
        normalize = getattr(make_loss(cfg["loss"], **options), "similarity", None) == "cosine"
        if normalize:
            options["similarity"] = "dot"
        torch.manual_seed(cfg["seed"])  # the initial embeddings
        user_features, item_features = (
            None if f is None else f.to(self.device) for f in self._features
        )
        self.net = TwoTowerNet(
            n_users,
            n_items,
            cfg["n_factors"],
            loss=make_loss(cfg["loss"], **options),
            normalize=normalize,
            sampler={},
            reg=cfg["reg"],
            init_std=cfg["init_std"],
            user_features=user_features,
            item_features=item_features,
            embedding=cfg["embedding"],
            embedding_options=cfg["embedding_options"],
        ).to(self.device)

    def _fit(self, train: Ratings, *, valid: Ratings | None) -> None:
        cfg = self.config
        gen = torch.Generator(device=self.device).manual_seed(cfg["seed"] + 1)
        counts = torch.as_tensor(train.item_counts(), dtype=torch.float32, device=self.device)
        sampler: dict[str, Any] = {
            "negatives": cfg["negatives"],
            "gen": gen,
            "n_negatives": cfg["n_negatives"],
            "logq": cfg["logq"],
            "seen": self.train_csr,
        }
        if self.n_items <= DENSE_MASK_ITEMS and self.n_users * self.n_items <= 2**28:
            sampler["seen_dense"] = self.train_csr.to_dense()  # shape: (n_users, n_items)
        if cfg["negatives"] == "uniform":
            sampler["uniform"] = UniformNegatives(
                self.n_items, seen=self.train_csr, device=self.device
            )
        elif cfg["negatives"] == "popularity":
            sampler["popularity"] = PopularityNegatives(
                counts, alpha=cfg["popularity_alpha"], device=self.device
            )
        if cfg["logq"] == "exact":
            sampler["log_freq"] = item_log_frequencies(counts.clamp_min(1.0))
        elif cfg["logq"] == "streaming":
            sampler["estimator"] = StreamingFrequencyEstimator(
                max(self.n_items, 1), seed=cfg["seed"]
            ).to(self.device)
        self.net.sampler = sampler
        config = TrainConfig(
            epochs=cfg["epochs"],
            batch_size=cfg["batch_size"],
            lr=cfg["lr"],
            optimizer=cfg["optimizer"],
            patience=cfg["patience"],
            weight_decay=cfg["weight_decay"],
            seed=cfg["seed"],
            progress=cfg["progress"],
        )
        valid_rows, metric = None, None
        if valid is not None:
            valid_rows = valid.tensors(self.device)
            valid_csr = valid.csr(self.device)

            def metric(net: nn.Module, rows: dict[str, torch.Tensor]) -> float:
                return topk_metrics(
                    self._score_known,
                    train=self.train_csr,
                    test=valid_csr,
                    ks=(20,),
                    device=self.device,
                )["ndcg@20"]

        self.history = fit(
            self.net,
            train.tensors(self.device),
            config=config,
            valid=valid_rows,
            valid_metric=metric,
            maximize=True,
        )

    def _checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """The side-feature bags (not options: they are data), so a loaded model scores
        with them."""
        tensors = {}
        for side, features in zip(("user", "item"), self._features, strict=True):
            if features is not None:
                tensors.update(
                    {
                        f"{side}_features.indptr": features.indptr,
                        f"{side}_features.indices": features.indices,
                        f"{side}_features.values": features.values,
                        f"{side}_features.n_features": torch.tensor(features.n_items),
                    }
                )
        return tensors

    def _restore(self, ckpt: dict[str, Any], path: Any) -> None:
        extra = ckpt.get("extra", {})
        self._features = tuple(
            UserItemCSR(
                extra[f"{side}_features.indptr"],
                extra[f"{side}_features.indices"],
                extra[f"{side}_features.values"],
                int(extra[f"{side}_features.n_features"]),
            )
            if f"{side}_features.indptr" in extra
            else None
            for side in ("user", "item")
        )
        super()._restore(ckpt, path)

    def _scoring(self) -> str:
        if self.config["score"] != "auto":
            return self.config["score"]
        if not self.net.loss.needs_negatives:
            return "dot"
        return "cosine" if self.net.normalize else "dot"

    @torch.no_grad()
    def _score_known(self, users: torch.Tensor) -> torch.Tensor:
        user_vec = self.net.users(users)  # shape: (B, d)
        item_vec = self.net.items(torch.arange(self.n_items, device=self.device))  # (n, d)
        if self._scoring() == "cosine":  # the user's norm does not change their ranking
            item_vec = F.normalize(item_vec, dim=1)
        return user_vec @ item_vec.T  # shape: (B, n_items)

    @torch.no_grad()
    def item_embeddings(self) -> torch.Tensor:
        """Item-tower outputs of every item, shape (n_items, dim)."""
        return self.net.items(torch.arange(self.n_items, device=self.device))

    @torch.no_grad()
    def user_embeddings(self) -> torch.Tensor:
        """User-tower outputs of every user, shape (n_users, dim)."""
        return self.net.users(torch.arange(self.n_users, device=self.device))


def _feature_bag(features: UserItemCSR | None, dim: int, init_std: float) -> nn.EmbeddingBag | None:
    if features is None:
        return None
    bag = nn.EmbeddingBag(features.n_items, dim, mode="mean")
    nn.init.normal_(bag.weight, std=init_std)
    return bag


def _tower(
    table: nn.Module, bag: nn.EmbeddingBag | None, features: UserItemCSR | None, ids: torch.Tensor
) -> torch.Tensor:
    """Id embedding plus the mean embedding of the id's feature bag, shape (len(ids), dim)."""
    out = table(ids)  # shape: (B, d)
    if bag is None:
        return out
    position, entry = features.positions(ids)
    offsets = torch.searchsorted(position, torch.arange(len(ids), device=ids.device))
    return out + bag(features.indices[entry], offsets)  # empty bags add zeros
