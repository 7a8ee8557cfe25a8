"""A versioned, self-describing model artifact: one directory that a service can serve.

Layout (``FORMAT_VERSION`` 2)::

    ARTIFACT/
        manifest.json   format and model version, model class and options, data set and
                        split, metrics with their protocol, created-at, package versions, and
                        the SHA-256 of every other file
        model.safetensors  the model's own checkpoint (:meth:`Model.save`):
                        parameters, compact <-> raw id mappings and the training items of
                        every user as tensors, options as a JSON header
        users.csv       ``user_id``: the raw id of every compact user id, in order
        items.csv       ``item_id, title, year, genres``: raw id and metadata of every item
        ratings.npz     the training ratings (compact ``user, item, rating``): what online
                        updates re-solve against, what popularity and co-occurrence count

Nothing in an artifact can run code when it is opened: tensors in safetensors, tables in CSV,
ratings in an NPZ read with ``allow_pickle=False``, the rest JSON. Format version 1 (mfutils
0.1) held a ``torch.save`` pickle; :func:`upgrade_artifact` (``mfutils upgrade``) converts it
with torch's weights-only unpickler.

An artifact is written to a temporary directory next to its destination
(``.NAME.tmp-PID-*``) and renamed into place, so a reader never sees half an artifact; a
temporary left by a killed process is removed by the next save beside it.
:meth:`Artifact.load` checks the format and version, every file's checksum and the
agreement of the id tables with the model, and names what is wrong in an
:class:`ArtifactError`.

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
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import mfutils
from mfutils.data.container import Ratings
from mfutils.models.base import CheckpointError, Model, upgrade_checkpoint

FORMAT = "mfutils-artifact"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"
FILES = (MODEL_FILE, "users.csv", "items.csv", "ratings.npz")
LEGACY_FILES = ("model.pt", "users.csv", "items.csv", "ratings.npz")  # format version 1
_GENRE_PREFIX = "genre_"


class ArtifactError(ValueError):
    """An artifact directory is missing, corrupted, or of a format this package cannot read."""


@dataclass
class Artifact:
    """A fitted model with everything needed to serve it by raw MovieLens ids.

    Parameters
    ----------
    model : Model
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

    model: Model
    items: pd.DataFrame
    ratings: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_training(
        cls,
        model: Model,
        train: Ratings,
        *,
        name: str | None = None,
        split: str = "full",
        protocol: str = "",
        metrics: dict[str, float] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Artifact:
        """Package ``model``, fitted on ``train``, with its data set's item metadata.

        Parameters
        ----------
        model : Model
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
            raise ValueError(
                f"model was fitted on {len(model.user_ids)} users x "
                f"{len(model.item_ids)} items; train has {train.n_users} x "
                f"{train.n_items}: pass the Ratings the model was fitted on"
            )
        ratings = {
            "user": train.user.astype(np.int64),
            "item": train.item.astype(np.int64),
            "rating": train.rating.astype(np.float32),
        }
        info = {
            "version": 1,
            "model": {
                "class": type(model).__name__,
                "name": name or type(model).__name__,
                "params": _jsonable(params or {}),
                "config": _jsonable(model.config),
            },
            "data": {
                "dataset": train.name,
                "split": split,
                "n_users": train.n_users,
                "n_items": train.n_items,
                "n_ratings": len(train),
                "rating_scale": list(train.rating_scale),
            },
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
            raise FileExistsError(
                f"{path} exists; pass overwrite=True (CLI: --overwrite) or choose a new directory"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
        try:
            self._write_files(tmp)
            if path.exists():  # swap: the old artifact disappears only once the new one is whole
                old = Path(
                    tempfile.mkdtemp(prefix=f".{path.name}.old-{os.getpid()}-", dir=path.parent)
                )
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
        model.save(folder / MODEL_FILE)
        pd.DataFrame({"user_id": model.user_ids}).to_csv(folder / "users.csv", index=False)
        items = self.items.assign(genres=self.items["genres"].map("|".join))
        items.to_csv(folder / "items.csv", index=False)
        np.savez(folder / "ratings.npz", **self.ratings)
        info = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **self.info,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "mfutils_version": mfutils.__version__,
            "torch_version": torch.__version__,
            "files": {name: _digest(folder / name) for name in FILES},
        }
        info["data"] = {
            **info["data"],
            "n_users": model.n_users,
            "n_items": model.n_items,
            "n_ratings": len(self.ratings["rating"]),
        }
        (folder / MANIFEST).write_text(json.dumps(info, indent=2) + "\n")
        self.info = {
            k: v for k, v in info.items() if k not in ("format", "format_version", "files")
        }

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
        _verify_files(path, info, FILES)
        try:
            model = Model.load(path / MODEL_FILE, device=device)
        except CheckpointError as err:
            raise ArtifactError(f"{path}: the model does not load: {err}") from err
        declared = info["model"]["class"]
        if type(model).__name__ != declared:
            raise ArtifactError(
                f"{path}: manifest declares a {declared} but {MODEL_FILE} holds a "
                f"{type(model).__name__}"
            )
        users, items, ratings = _read_tables(path)
        _check_tables(path, model, users, items, ratings)
        body = {k: v for k, v in info.items() if k not in ("format", "format_version", "files")}
        return cls(model, items, ratings, body)

    def next_version(
        self,
        model: Model,
        items: pd.DataFrame,
        ratings: dict[str, np.ndarray],
        updates: dict[str, int],
    ) -> Artifact:
        """The artifact of ``model`` after online updates: version + 1, this one its parent."""
        info = dict(self.info)
        info["parent"] = {
            "version": self.info.get("version", 1),
            "created_at": self.info.get("created_at"),
        }
        info["version"] = self.info.get("version", 1) + 1
        info["online_updates"] = updates
        info["model"] = {**info["model"], "config": _jsonable(model.config)}
        return replace(self, model=model, items=items, ratings=ratings, info=info)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The checked ``manifest.json`` of the artifact at ``path`` (see :meth:`Artifact.load`)."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(
            f"{path} is not an artifact directory (no such directory); "
            "write one with `mfutils train ... --out DIR` or Artifact.save"
        )
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise ArtifactError(f"{path} has no {MANIFEST}: not an mfutils artifact")
    try:
        info = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{manifest} is not valid JSON: {err}") from err
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ArtifactError(
            f"{manifest} does not describe an {FORMAT!r} (its format field is "
            f"{info.get('format') if isinstance(info, dict) else None!r})"
        )
    version = info.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{manifest}: format_version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format version {version}, written by a newer mfutils "
            f"({info.get('mfutils_version')}); this mfutils "
            f"({mfutils.__version__}) reads format version {FORMAT_VERSION}: "
            "upgrade mfutils"
        )
    if version == 1:
        raise ArtifactError(
            f"{path} has format version 1, whose model.pt is a pickle that "
            "could run code when opened; convert it once with `mfutils upgrade "
            f"{path} --out NEW_DIR` (reads it without running anything)"
        )
    if version < FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format version {version}; this mfutils reads format "
            f"version {FORMAT_VERSION} only: export the model again"
        )
    missing = [key for key in ("files", "model", "data", "version") if key not in info]
    if missing or set(info["files"]) != set(FILES):
        raise ArtifactError(
            f"{manifest} is incomplete: missing fields {missing} or file list "
            f"{sorted(info.get('files', {}))} is not {sorted(FILES)}"
        )
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
    return pd.DataFrame(
        {
            "item_id": data.item_ids,
            "title": pd.Series(_column(side, "title", data.n_items), dtype=object),
            "year": pd.Series(_column(side, "year", data.n_items), dtype=object),  # ints or None
            "genres": genres,
        }
    )


def _column(side: pd.DataFrame | None, name: str, n: int) -> list:
    """A side-table column as Python values with ``None`` where missing."""
    if side is None or name not in side:
        return [None] * n
    values = side[name].astype(object)
    return values.where(values.notna(), None).to_list()


def _read_items(file: Path) -> pd.DataFrame:
    items = pd.read_csv(
        file, dtype={"title": str, "year": str, "genres": str}, keep_default_na=False
    )
    return pd.DataFrame(
        {
            "item_id": items["item_id"].to_numpy(),
            "title": pd.Series([title or None for title in items["title"]], dtype=object),
            "year": pd.Series(
                [int(float(year)) if year else None for year in items["year"]], dtype=object
            ),
            "genres": [text.split("|") if text else [] for text in items["genres"]],
        }
    )


def _read_tables(path: Path) -> tuple[np.ndarray, pd.DataFrame, dict[str, np.ndarray]]:
    """``users.csv``, ``items.csv`` and ``ratings.npz`` (no pickles), or an ArtifactError
    naming the file that does not parse."""
    name = "users.csv"
    try:
        users = pd.read_csv(path / name)["user_id"].to_numpy()
        name = "items.csv"
        items = _read_items(path / name)
        name = "ratings.npz"
        with np.load(path / name, allow_pickle=False) as npz:
            ratings = {key: npz[key] for key in ("user", "item", "rating")}
    except (
        ValueError,
        KeyError,
        OSError,
        EOFError,
        pd.errors.ParserError,
        zipfile.BadZipFile,
    ) as err:
        raise ArtifactError(f"{path / name} does not parse: {err}") from err
    return users, items, ratings


def _remove_stale_temporaries(path: Path) -> None:
    """Remove ``.NAME.tmp-PID-*`` / ``.NAME.old-PID-*`` folders of processes that died
    mid-save (their PID no longer runs); a live concurrent save keeps its own."""
    for kind in ("tmp", "old"):
        for folder in path.parent.glob(f".{path.name}.{kind}-*-*"):
            pid = folder.name.removeprefix(f".{path.name}.{kind}-").partition("-")[0]
            if folder.is_dir() and pid.isdigit() and not _running(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def upgrade_artifact(source: str | Path, target: str | Path, *, overwrite: bool = False) -> Path:
    """Convert a format-version-1 artifact (pickled ``model.pt``) to the current format.

    The checksums of the old manifest are verified first and the model is read with torch's
    weights-only unpickler (:func:`mfutils.models.base.upgrade_checkpoint`): an artifact that
    smuggles code is refused and nothing in it runs. Manifest fields and tables are kept.
    """
    source, target = Path(source), Path(target)
    manifest = source / MANIFEST
    try:
        info = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{manifest} does not read as JSON: {err}") from err
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ArtifactError(f"{source} is not an mfutils artifact")
    if info.get("format_version") != 1:
        raise ArtifactError(
            f"{source} has format version {info.get('format_version')!r}; "
            "only version 1 needs upgrading"
        )
    _verify_files(source, info, LEGACY_FILES)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            upgrade_checkpoint(source / "model.pt", Path(scratch) / MODEL_FILE)
            model = Model.load(Path(scratch) / MODEL_FILE, device="cpu")
        except CheckpointError as err:
            raise ArtifactError(f"{source}: {err}") from err
    users, items, ratings = _read_tables(source)
    _check_tables(source, model, users, items, ratings)
    body = {k: v for k, v in info.items() if k not in ("format", "format_version", "files")}
    artifact = Artifact(model, items, ratings, body)
    return artifact.save(target, overwrite=overwrite)


def _verify_files(path: Path, info: dict[str, Any], names: tuple[str, ...]) -> None:
    """Every file of ``names`` exists and matches the manifest's SHA-256."""
    files = info.get("files") or {}
    for name in names:
        file, expected = path / name, files.get(name) or {}
        if not file.is_file():
            raise ArtifactError(f"{path}: {name} is missing (the manifest lists it)")
        actual = _digest(file)
        if actual["sha256"] != expected.get("sha256"):
            raise ArtifactError(
                f"{path}: {name} is corrupted: its SHA-256 {actual['sha256'][:12]}... "
                f"({actual['bytes']} bytes) differs from the manifest's "
                f"{str(expected.get('sha256'))[:12]}... ({expected.get('bytes')} bytes)"
            )


def _check_tables(
    path: Path, model: Model, users: np.ndarray, items: pd.DataFrame, ratings: dict[str, np.ndarray]
) -> None:
    if not np.array_equal(users, model.user_ids):
        raise ArtifactError(
            f"{path}: users.csv ({len(users)} ids) disagrees with the model's "
            f"user id mapping ({len(model.user_ids)} ids)"
        )
    if not np.array_equal(items["item_id"].to_numpy(), model.item_ids):
        raise ArtifactError(
            f"{path}: items.csv ({len(items)} ids) disagrees with the model's "
            f"item id mapping ({len(model.item_ids)} ids)"
        )
    n = len(ratings["rating"])
    if not (len(ratings["user"]) == len(ratings["item"]) == n):
        raise ArtifactError(f"{path}: ratings.npz columns differ in length")
    if n and (
        ratings["user"].min() < 0
        or ratings["user"].max() >= model.n_users
        or ratings["item"].min() < 0
        or ratings["item"].max() >= model.n_items
    ):
        raise ArtifactError(
            f"{path}: ratings.npz holds ids outside the model's "
            f"{model.n_users} users x {model.n_items} items"
        )


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
