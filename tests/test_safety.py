"""Safe artifacts and one-line errors: opening a file runs nothing in it, and every anticipated
failure of the command line ends in one line on stderr with a non-zero exit."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mfutils.cli import main
from mfutils.data import load_movielens, make_synthetic, parsing
from mfutils.models import BiasedMF
from mfutils.models.base import CheckpointError, ExplicitModel
from mfutils.serving import Artifact, ArtifactError, pipeline
from mfutils.serving.artifact import upgrade_artifact
from mfutils.train import TrainingDiverged


class _Payload:
    """A pickle that, once unpickled, writes a file: what a hostile artifact would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture(scope="module")
def data():
    return make_synthetic(40, 30, 800, seed=0)


@pytest.fixture(scope="module")
def model(data):
    return BiasedMF(3, method="als", epochs=3, device="cpu").fit(data)


@pytest.fixture(scope="module")
def artifact_dir(model, data, tmp_path_factory):
    return Artifact.from_training(model, data, split="full").save(
        tmp_path_factory.mktemp("art") / "mf"
    )


def _rewrite_checksums(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in manifest["files"]:
        blob = (folder / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _legacy_copy(
    artifact_dir: Path, model: ExplicitModel, target: Path, payload: object | None = None
) -> Path:
    """The artifact as format version 1 wrote it: a torch.save pickle named model.pt."""
    shutil.copytree(artifact_dir, target)
    (target / "model.safetensors").unlink()
    ckpt = {
        "format": 1,
        "model": type(model).__name__,
        "config": dict(model.config),
        "state": {k: v.cpu() for k, v in model.state_dict().items()},
        "n_users": model.n_users,
        "n_items": model.n_items,
        "rating_scale": tuple(model.rating_scale),
        "user_ids": model.user_ids,
        "item_ids": model.item_ids,
        "train_csr": {"indptr": model.train_csr.indptr, "indices": model.train_csr.indices},
    }
    if payload is not None:
        ckpt["extra"] = payload
    torch.save(ckpt, target / "model.pt")
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["format_version"] = 1
    manifest["files"] = {
        "model.pt": {},
        **{k: v for k, v in manifest["files"].items() if k != "model.safetensors"},
    }
    (target / "manifest.json").write_text(json.dumps(manifest))
    _rewrite_checksums(target)
    return target


# ---------------------------------------------------------------------- artifacts
def test_a_malicious_model_file_runs_nothing_and_fails_cleanly(artifact_dir, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = shutil.copytree(artifact_dir, tmp_path / "evil")
    (evil / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    _rewrite_checksums(evil)  # the attacker controls the manifest too
    with pytest.raises(ArtifactError, match="pickle checkpoint"):
        Artifact.load(evil)
    for argv in (["recommend", str(evil), "--user", "1"], ["evaluate", str(evil)]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "unpickling can run code" in err
    assert not marker.exists()


def test_a_malicious_legacy_artifact_is_refused_by_the_upgrade_too(artifact_dir, model, tmp_path):
    marker = tmp_path / "pwned"
    old = _legacy_copy(artifact_dir, model, tmp_path / "old", payload=_Payload(marker))
    with pytest.raises(ArtifactError, match="mfutils upgrade"):
        Artifact.load(old)
    with pytest.raises(ArtifactError, match="holds more than weights"):
        upgrade_artifact(old, tmp_path / "new")
    assert not marker.exists() and not (tmp_path / "new").exists()


def test_a_legacy_artifact_upgrades_to_the_same_model(artifact_dir, model, data, tmp_path, capsys):
    old = _legacy_copy(artifact_dir, model, tmp_path / "old")
    assert main(["upgrade", str(old), "--out", str(tmp_path / "new")]) == 0
    new = Artifact.load(tmp_path / "new")
    assert np.array_equal(
        new.model.predict(data.user, data.item), model.predict(data.user, data.item)
    )
    assert new.info["version"] == 1


def test_a_checkpoint_is_tensors_and_json_only(model, data, tmp_path):
    path = model.save(tmp_path / "mf.safetensors")
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        header = json.loads(handle.metadata()["mfutils"])
    assert header["model"] == "BiasedMF" and header["config"]["n_factors"] == 3
    same = ExplicitModel.load(path, device="cpu")
    assert np.array_equal(same.predict(data.user, data.item), model.predict(data.user, data.item))
    (tmp_path / "junk").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable mfutils checkpoint"):
        ExplicitModel.load(tmp_path / "junk")


def test_a_safetensors_header_length_ending_in_0x80_is_no_pickle(tmp_path):
    """The first byte of a safetensors file is its header length's lowest byte, 0x80 for
    some lengths: a pickle's first byte too. Such a file is opened, not refused as a pickle."""
    from safetensors.torch import save_file

    for pad in range(200):  # the header is padded to a multiple of 8: 0x80 is reachable
        path = tmp_path / "tensors.safetensors"
        save_file({"x": torch.zeros(2)}, path, metadata={"note": "y" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    with pytest.raises(CheckpointError, match="not a readable mfutils checkpoint") as err:
        ExplicitModel.load(path)
    assert "pickle" not in str(err.value)


def test_a_corrupt_table_inside_an_artifact_is_named(artifact_dir, tmp_path):
    bad = shutil.copytree(artifact_dir, tmp_path / "bad")
    (bad / "ratings.npz").write_bytes(b"PK\x03\x04 truncated")
    _rewrite_checksums(bad)
    with pytest.raises(ArtifactError, match=r"ratings\.npz does not parse"):
        Artifact.load(bad)


def test_stale_temporaries_of_a_killed_save_are_removed(artifact_dir, model, data, tmp_path):
    dead = tmp_path / ".mf.tmp-999999999-abc"  # no such process
    alive = tmp_path / f".mf.tmp-{os.getpid()}-def"  # a save of this (live) process
    dead.mkdir()
    alive.mkdir()
    Artifact.from_training(model, data, split="full").save(tmp_path / "mf")
    assert not dead.exists() and alive.exists()


# ---------------------------------------------------------------------- command-line errors
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    folder = root / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("1\t1\t5\t881250949\n1\t2\t3\t881250950\n2\t1\t4\t881250951\n")
    (folder / "u.item").write_text(
        "".join(
            f"{i}|Movie {i} (1995)|01-Jan-1995|||" + "|".join(["0"] * 19) + "\n" for i in (1, 2)
        )
    )
    (folder / "u.user").write_text("1|30|M|other|12345\n2|25|F|writer|54321\n")
    return root


def _one_line_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    return err


def _train(data_dir: Path, out: Path, *params: str) -> list[str]:
    return [
        "train",
        "BiasedMF-ALS",
        "--dataset",
        "ml-100k",
        "--no-download",
        "--data-dir",
        str(data_dir),
        "--split",
        "full",
        "--out",
        str(out),
        *(x for p in params for x in ("-p", p)),
    ]


def test_a_malformed_data_file_is_one_line_naming_file_and_line(data_dir, tmp_path, capsys):
    bad = shutil.copytree(data_dir, tmp_path / "bad")
    with (bad / "ml-100k" / "u.data").open("a") as handle:
        handle.write("2\tx\t4\t881250952\n")
    err = _one_line_error(_train(bad, tmp_path / "out"), capsys)
    assert "u.data, line 4" in err and "'item' is not a number" in err


def test_a_repeated_pair_is_refused_naming_both_lines(data_dir, tmp_path):
    bad = shutil.copytree(data_dir, tmp_path / "bad")
    with (bad / "ml-100k" / "u.data").open("a") as handle:
        handle.write("1\t2\t1\t881250999\n")
    with pytest.raises(ValueError, match="line 4: user 1 rated item 2 already on line 2"):
        load_movielens("ml-100k", data_dir=bad, download=False)


def test_trailing_blank_lines_are_skipped_and_an_empty_file_is_named(data_dir, tmp_path):
    padded = shutil.copytree(data_dir, tmp_path / "padded")
    with (padded / "ml-100k" / "u.data").open("a") as handle:
        handle.write("\n\n")
    assert len(load_movielens("ml-100k", data_dir=padded, download=False)) == 3
    (padded / "ml-100k" / "u.data").write_text("")
    with pytest.raises(ValueError, match=r"u\.data: holds no ratings"):
        load_movielens("ml-100k", data_dir=padded, download=False)


def test_a_re_encoded_item_file_reads_as_utf8_with_a_warning(data_dir, tmp_path, caplog):
    copy = shutil.copytree(data_dir, tmp_path / "utf8")
    item = copy / "ml-100k" / "u.item"
    item.write_text(item.read_text().replace("Movie 1", "Amélie"), encoding="utf-8")
    data = load_movielens("ml-100k", data_dir=copy, download=False)
    assert data.items["title"].iloc[0] == "Amélie (1995)"
    assert "re-encoded" in caplog.text


def test_permission_denied_is_one_line(data_dir, tmp_path, capsys, monkeypatch):
    def locked(path, *args, **kwargs):  # chmod 0 does not stop root, who runs CI
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(parsing, "read_table", locked)
    err = _one_line_error(_train(data_dir, tmp_path / "out"), capsys)
    assert "Permission denied" in err and "u.data" in err


@pytest.mark.parametrize(
    "param, message",
    [
        ("lr=nan", "'lr' must be a finite number"),
        ("reg=-1", "'reg' must be >= 0"),
        ("n_factors=0", "'n_factors' must be > 0"),
        ("epochs=inf", "'epochs' must be a finite number"),
    ],
)
def test_bad_parameter_values_are_one_line(param, message, data_dir, tmp_path, capsys):
    argv = _train(data_dir, tmp_path / "out", param)
    argv[1] = "BiasedMF-SGD"
    assert message in _one_line_error(argv, capsys)


def test_divergence_and_ctrl_c_are_one_line(data_dir, tmp_path, capsys, monkeypatch):
    def diverge(self, *args, **kwargs):
        raise TrainingDiverged("BiasedMFNet: loss is nan in epoch 1: lower lr")

    monkeypatch.setattr(BiasedMF, "fit", diverge)
    assert "loss is nan in epoch 1" in _one_line_error(_train(data_dir, tmp_path / "o"), capsys)

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(BiasedMF, "fit", interrupt)
    assert main(_train(data_dir, tmp_path / "o")) == 130
    assert capsys.readouterr().err == "mfutils train: interrupted\n"
    with pytest.raises(KeyboardInterrupt):  # --debug shows what happened
        main([*_train(data_dir, tmp_path / "o"), "--debug"])


def test_an_out_of_range_user_id_is_an_argument_error(artifact_dir, capsys):
    with pytest.raises(SystemExit):
        main(["recommend", str(artifact_dir), "--user", "99999999999999999999"])
    assert "user id 99999999999999999999 is out of range (ids are 64-bit integers)" in (
        capsys.readouterr().err
    )


def test_a_fit_worse_than_the_mean_warns(model, data):
    assert pipeline.fit_warnings(model, data, {"lr": 0.01}) == []
    broken = copy.deepcopy(model)
    broken.net.user_bias.weight.data.fill_(50.0)  # a diverged fit: every prediction at 5
    (warning,) = pipeline.fit_warnings(broken, data, {"lr": 1e6})
    assert "worse than predicting the training mean" in warning and "lr=1000000.0" in warning
