"""A versioned, self-describing model artifact: one directory that a service can serve.

Layout (``FORMAT_VERSION`` 1)::

    ARTIFACT/
        manifest.json   format and model version, model class and options, data set and
                        split, metrics with their protocol, created-at, package versions, and
                        the SHA-256 of every other file
        model.pt        the model's own checkpoint (:meth:`ExplicitModel.save`): parameters,
                        options, compact <-> raw id mappings, the training items of every user
        users.csv       ``user_id``: the raw id of every compact user id, in order
        items.csv       ``item_id, title, year, genres``: raw id and metadata of every item
        ratings.npz     the training ratings (compact ``user, item, rating``): what online
                        updates re-solve against, what popularity and co-occurrence count

An artifact is written to a temporary directory next to its destination and renamed into
place, so a reader never sees half an artifact. :meth:`Artifact.load` checks the format and
version, every file's checksum and the agreement of the id tables with the model, and names
what is wrong in an :class:`ArtifactError`.

``version`` counts model states: 1 for a trained model, one more each time a served model
that took online updates is saved again (``parent`` then names the version it grew from).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import mfutils
from mfutils.data.container import Ratings
from mfutils.models.base import CheckpointError, ExplicitModel

FORMAT = "mfutils-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FILES = ("model.pt", "users.csv", "items.csv", "ratings.npz")
_GENRE_PREFIX = "genre_"


class ArtifactError(ValueError):
    """An artifact directory is missing, corrupted, or of a format this package cannot read."""


@dataclass
class Artifact:
    """A fitted model with everything needed to serve it by raw MovieLens ids.

    Parameters
    ----------
    model : ExplicitModel
        Fitted; its ``user_ids`` / ``item_ids`` map compact ids to raw ids.
    items : pandas.DataFrame
        One row per compact item id: ``item_id`` (raw), ``title``, ``year`` and ``genres``
        (a list of genre names); titles may be missing (``None``).
    ratings : dict of str to np.ndarray
        The training ratings: compact ``user``, ``item`` (int64) and ``rating`` (float32).
    info : dict
        Manifest fields: ``version``, ``created_at``, ``model`` (``class``, ``name``,
        ``config``), ``data`` (``dataset``, ``split``, ``protocol``, sizes), ``metrics``,
        ``parent``, ``online_updates``, package versions.
    """

    model: ExplicitModel
    items: pd.DataFrame
    ratings: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_training(
        cls, model: ExplicitModel, train: Ratings, *, name: str | None = None,
        split: str = "full", protocol: str = "", metrics: dict[str, float] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Artifact:
        """Package ``model``, fitted on ``train``, with its data set's item metadata.

        Parameters
        ----------
        model : ExplicitModel
            Fitted on ``train``.
        train : Ratings
            The training part (its ``items`` table gives titles and genres).
        name : str, optional
            Display name, e.g. ``"BiasedMF-SGD"``; default the class name.
        split, protocol : str
            Which split the model was trained on (``"u1"``, ``"full"``, ...) and how the
            metrics were measured.
        metrics : dict, optional
            Held-out metrics, e.g. ``{"rmse": 0.93}``.
        params : dict, optional
            The options the model was built with (the CLI's ``--param`` values).
        """
        model._require_fitted()
        if len(model.item_ids) != train.n_items or len(model.user_ids) != train.n_users:
            raise ValueError(f"model was fitted on {len(model.user_ids)} users x "
                             f"{len(model.item_ids)} items; train has {train.n_users} x "
                             f"{train.n_items}: pass the Ratings the model was fitted on")
        ratings = {"user": train.user.astype(np.int64), "item": train.item.astype(np.int64),
                   "rating": train.rating.astype(np.float32)}
        info = {
            "version": 1,
            "model": {"class": type(model).__name__, "name": name or type(model).__name__,
                      "params": _jsonable(params or {}), "config": _jsonable(model.config)},
            "data": {"dataset": train.name, "split": split, "n_users": train.n_users,
                     "n_items": train.n_items, "n_ratings": len(train),
                     "rating_scale": list(train.rating_scale)},
            "metrics": {key: float(value) for key, value in (metrics or {}).items()},
            "protocol": protocol,
            "parent": None,
            "online_updates": {"ratings": 0, "users": 0, "items": 0},
        }
        return cls(model, item_table(train), ratings, info)

    # ------------------------------------------------------------------ writing
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the artifact directory at ``path`` atomically (temp directory + rename).

        Raises
        ------
        FileExistsError
            If ``path`` exists and ``overwrite`` is false.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) or "
                                  "choose a new directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            self._write_files(tmp)
            if path.exists():  # swap: the old artifact disappears only once the new one is whole
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
                os.replace(path, old / path.name)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return path

    def _write_files(self, folder: Path) -> None:
        model = self.model
        model.save(folder / "model.pt")
        pd.DataFrame({"user_id": model.user_ids}).to_csv(folder / "users.csv", index=False)
        items = self.items.assign(genres=self.items["genres"].map("|".join))
        items.to_csv(folder / "items.csv", index=False)
        np.savez(folder / "ratings.npz", **self.ratings)
        info = {
            "format": FORMAT, "format_version": FORMAT_VERSION, **self.info,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "mfutils_version": mfutils.__version__, "torch_version": torch.__version__,
            "files": {name: _digest(folder / name) for name in FILES},
        }
        info["data"] = {**info["data"], "n_users": model.n_users, "n_items": model.n_items,
                        "n_ratings": len(self.ratings["rating"])}
        (folder / MANIFEST).write_text(json.dumps(info, indent=2) + "\n")
        self.info = {k: v for k, v in info.items() if k not in ("format", "format_version",
                                                                "files")}

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device | None = None) -> Artifact:
        """Read and check the artifact at ``path``; the model goes to ``device``.

        Raises
        ------
        ArtifactError
            The directory or its manifest is missing or unreadable, the format or its version
            is not one this package reads, a file is missing or its checksum differs from the
            manifest (a corrupted or hand-edited artifact), the model checkpoint does not load,
            or the id tables disagree with the model.
        """
        path = Path(path)
        info = read_manifest(path)
        for name, expected in info["files"].items():
            file = path / name
            if not file.is_file():
                raise ArtifactError(f"{path}: {name} is missing (the manifest lists it)")
            actual = _digest(file)
            if actual["sha256"] != expected.get("sha256"):
                raise ArtifactError(
                    f"{path}: {name} is corrupted: its SHA-256 {actual['sha256'][:12]}... "
                    f"({actual['bytes']} bytes) differs from the manifest's "
                    f"{str(expected.get('sha256'))[:12]}... ({expected.get('bytes')} bytes)")
        try:
            model = ExplicitModel.load(path / "model.pt", device=device)
        except CheckpointError as err:
            raise ArtifactError(f"{path}: the model does not load: {err}") from err
        declared = info["model"]["class"]
        if type(model).__name__ != declared:
            raise ArtifactError(f"{path}: manifest declares a {declared} but model.pt holds a "
                                f"{type(model).__name__}")
        users = pd.read_csv(path / "users.csv")["user_id"].to_numpy()
        items = _read_items(path / "items.csv")
        with np.load(path / "ratings.npz") as npz:
            ratings = {key: npz[key] for key in ("user", "item", "rating")}
        _check_tables(path, model, users, items, ratings)
        body = {k: v for k, v in info.items() if k not in ("format", "format_version", "files")}
        return cls(model, items, ratings, body)

    def next_version(self, model: ExplicitModel, items: pd.DataFrame,
                     ratings: dict[str, np.ndarray], updates: dict[str, int]) -> Artifact:
        """The artifact of ``model`` after online updates: version + 1, this one its parent."""
        info = dict(self.info)
        info["parent"] = {"version": self.info.get("version", 1),
                          "created_at": self.info.get("created_at")}
        info["version"] = self.info.get("version", 1) + 1
        info["online_updates"] = updates
        info["model"] = {**info["model"], "config": _jsonable(model.config)}
        return replace(self, model=model, items=items, ratings=ratings, info=info)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The checked ``manifest.json`` of the artifact at ``path`` (see :meth:`Artifact.load`)."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path} is not an artifact directory (no such directory); "
                            "write one with `mfutils train ... --out DIR` or Artifact.save")
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise ArtifactError(f"{path} has no {MANIFEST}: not an mfutils artifact")
    try:
        info = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{manifest} is not valid JSON: {err}") from err
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ArtifactError(f"{manifest} does not describe an {FORMAT!r} (its format field is "
                            f"{info.get('format') if isinstance(info, dict) else None!r})")
    version = info.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{manifest}: format_version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise ArtifactError(f"{path} has format version {version}, written by a newer mfutils "
                            f"({info.get('mfutils_version')}); this mfutils "
                            f"({mfutils.__version__}) reads format version {FORMAT_VERSION}: "
                            "upgrade mfutils")
    if version < FORMAT_VERSION:
        raise ArtifactError(f"{path} has format version {version}; this mfutils reads format "
                            f"version {FORMAT_VERSION} only: export the model again")
    missing = [key for key in ("files", "model", "data", "version") if key not in info]
    if missing or set(info["files"]) != set(FILES):
        raise ArtifactError(f"{manifest} is incomplete: missing fields {missing} or file list "
                            f"{sorted(info.get('files', {}))} is not {sorted(FILES)}")
    return info


def item_table(data: Ratings) -> pd.DataFrame:
    """``item_id, title, year, genres`` for every compact item id of ``data``."""
    side = data.items
    flags = [] if side is None else [c for c in side.columns if c.startswith(_GENRE_PREFIX)]
    if flags:
        names = np.array([c.removeprefix(_GENRE_PREFIX) for c in flags])
        genres = [list(names[row.astype(bool)]) for row in side[flags].to_numpy()]
    else:
        genres = [[] for _ in range(data.n_items)]
    return pd.DataFrame({
        "item_id": data.item_ids,
        "title": pd.Series(_column(side, "title", data.n_items), dtype=object),
        "year": pd.Series(_column(side, "year", data.n_items), dtype=object),  # ints or None
        "genres": genres,
    })


def _column(side: pd.DataFrame | None, name: str, n: int) -> list:
    """A side-table column as Python values with ``None`` where missing."""
    if side is None or name not in side:
        return [None] * n
    values = side[name].astype(object)
    return values.where(values.notna(), None).to_list()


def _read_items(file: Path) -> pd.DataFrame:
    items = pd.read_csv(file, dtype={"title": str, "year": str, "genres": str},
                        keep_default_na=False)
    return pd.DataFrame({
        "item_id": items["item_id"].to_numpy(),
        "title": pd.Series([title or None for title in items["title"]], dtype=object),
        "year": pd.Series([int(float(year)) if year else None for year in items["year"]],
                          dtype=object),
        "genres": [text.split("|") if text else [] for text in items["genres"]],
    })


def _check_tables(path: Path, model: ExplicitModel, users: np.ndarray, items: pd.DataFrame,
                  ratings: dict[str, np.ndarray]) -> None:
    if not np.array_equal(users, model.user_ids):
        raise ArtifactError(f"{path}: users.csv ({len(users)} ids) disagrees with the model's "
                            f"user id mapping ({len(model.user_ids)} ids)")
    if not np.array_equal(items["item_id"].to_numpy(), model.item_ids):
        raise ArtifactError(f"{path}: items.csv ({len(items)} ids) disagrees with the model's "
                            f"item id mapping ({len(model.item_ids)} ids)")
    n = len(ratings["rating"])
    if not (len(ratings["user"]) == len(ratings["item"]) == n):
        raise ArtifactError(f"{path}: ratings.npz columns differ in length")
    if n and (ratings["user"].min() < 0 or ratings["user"].max() >= model.n_users
              or ratings["item"].min() < 0 or ratings["item"].max() >= model.n_items):
        raise ArtifactError(f"{path}: ratings.npz holds ids outside the model's "
                            f"{model.n_users} users x {model.n_items} items")


def _digest(file: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return {"sha256": sha.hexdigest(), "bytes": file.stat().st_size}


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """Plain JSON values; anything else (an array option) is recorded by its ``repr``."""
    out = {}
    for key, value in values.items():
        try:
            json.dumps(value)
            out[key] = value
        except TypeError:
            out[key] = repr(value)
    return out
