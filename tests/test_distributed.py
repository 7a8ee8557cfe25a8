"""Data-parallel training under torchrun reproduces single-process training (2 CPU processes)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mfutils import distributed, parallel_fit
from mfutils.data import make_synthetic
from mfutils.models import BiasedMF, SVDpp

ROOT = Path(__file__).resolve().parents[1]

MODELS = {  # small batches, so that every epoch has many all-reduced steps
    "sgd": lambda: BiasedMF(8, method="sgd", epochs=3, batch_size=512, seed=3, device="cpu"),
    "adam": lambda: BiasedMF(8, method="adam", epochs=3, batch_size=512, seed=3, device="cpu"),
    "svdpp": lambda: SVDpp(8, epochs=2, batch_size=1024, warm_start=False, seed=3, device="cpu"),
}

# Run by every rank: the same models on the same data, states saved by rank 0.
WORKER = """
import json, sys
import torch
from torch import nn
from mfutils import distributed
from mfutils.data import make_synthetic
from mfutils.train import TrainConfig, fit
sys.path.insert(0, {tests!r})
from test_distributed import MODELS

distributed.init_from_env("cpu")
data = make_synthetic(120, 80, 3000, seed=1)
report = {{"world": distributed.world_size()}}
for name, make in MODELS.items():
    model = make().fit(data)
    report[name] = model.history["train_loss"].tolist()
    if distributed.rank() == 0:
        torch.save(model.state_dict(), {out!r} + f"/{{name}}.pt")

class SetWise(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
    def forward(self, batch):
        return self.w.expand(len(batch["rating"]))
    def objective(self, batch):
        return (self.w - batch["rating"]).pow(2).mean()

try:
    fit(SetWise(), data.tensors(), config=TrainConfig(epochs=1, progress=False))
except ValueError as err:
    report["set_wise_error"] = str(err)
if distributed.rank() == 0:
    with open({out!r} + "/report.json", "w") as f:
        json.dump(report, f)
# leave together: a rank that exits with the gloo group alive can abort its peer
torch.distributed.barrier()
torch.distributed.destroy_process_group()
"""


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    script = out / "worker.py"
    script.write_text(textwrap.dedent(WORKER.format(tests=str(ROOT / "tests"), out=str(out))))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_two_processes_match_one_process(two_process_run, name):
    out, report = two_process_run
    assert report["world"] == 2
    single = MODELS[name]().fit(make_synthetic(120, 80, 3000, seed=1))
    parallel = torch.load(out / f"{name}.pt")
    state = single.state_dict()
    assert state.keys() == parallel.keys()
    for key, value in state.items():
        assert torch.allclose(value, parallel[key], atol=1e-5, rtol=1e-4), key
    assert report[name] == pytest.approx(single.history["train_loss"].tolist(), rel=1e-5)


def test_set_wise_objectives_are_refused_under_ddp(two_process_run):
    _, report = two_process_run
    assert "does not split over ranks" in report["set_wise_error"]


def test_one_process_helpers_are_neutral():
    index = torch.arange(10)
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert torch.equal(distributed.shard(index), index)
    value = torch.tensor(3.0)
    assert distributed.all_sum(value) is value


def test_launch_runs_the_cli_under_torchrun_and_matches_one_process():
    args = [
        "--ratings",
        "4000",
        "--users",
        "150",
        "--items",
        "90",
        "--factors",
        "4",
        "--epochs",
        "2",
        "--batch-size",
        "512",
        "--seed",
        "2",
    ]
    two = parallel_fit.launch(2, threads=1, args=args, timeout=120)
    one = parallel_fit.main([*args, "--device", "cpu"])
    assert (two["processes"], two["backend"], two["threads"]) == (2, "gloo", 1)
    assert one["processes"] == 1 and len(two["epoch_seconds"]) == 2
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    assert two["test_rmse"] == pytest.approx(one["test_rmse"], rel=1e-5)
    with pytest.raises(ValueError, match="threads=0"):
        parallel_fit.launch(2, threads=0)
    with pytest.raises(RuntimeError, match="failed"):
        parallel_fit.launch(1, threads=1, args=["--model", "NoSuchModel"], timeout=60)


def test_the_program_trains_any_registered_explicit_model(capsys):
    small = ["--ratings", "2000", "--users", "60", "--items", "40", "--factors", "3"]
    record = parallel_fit.main(
        [*small, "--model", "SVDpp", "-p", "warm_start=false", "--epochs", "1", "--device", "cpu"]
    )
    assert record["options"]["warm_start"] is False and record["options"]["n_factors"] == 3
    for bad, message in (
        (["--model", "EASE"], "a ranking model"),
        (["-p", "bogus=1"], "NAME one of"),
        (["--model", "NoSuchModel"], "unknown model"),
    ):
        with pytest.raises(SystemExit):
            parallel_fit.main([*small, *bad, "--device", "cpu"])
        assert message in capsys.readouterr().err
