"""torchrun on CPU (gloo): two processes train one run and one small grid to the end."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.pack_helpers import write_pack


def torchrun(module: str, config_path, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        module,
        str(config_path),
    ]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return write_pack(
        tmp_path_factory.mktemp("ddp") / "pack", counts={"train": 44, "valid": 10, "test": 10}, shard_size=12
    )


def test_two_processes_train_one_run(pack, tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "pack": str(pack),
                "out": "run",
                "epochs": 2,
                "batch_size": 4,
                "num_workers": 1,
                "hidden": 8,
                "method": "calibration",
            }
        )
    )
    done = torchrun("trainers.train", path, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in tmp_path.rglob("metrics.json")] == ["metrics.json"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert [h["train_batches"] for h in metrics["history"]] == [[6, 6], [6, 6]]  # ceil(44 / (2 * 4))
    assert set(metrics["test"]) == {"accuracy", "macro_f1", "loss"}


@pytest.mark.slow
def test_two_processes_run_a_grid_with_ogm_ge(pack, tmp_path):
    path = tmp_path / "experiment.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "pack": str(pack),
                "out": "grid",
                "backbones": ["conv"],
                "methods": ["none", "ogm_ge"],
                "seeds": [0],
                "train": {"epochs": 1, "batch_size": 4, "num_workers": 0, "hidden": 8},
            }
        )
    )
    done = torchrun("trainers.experiment", path, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "grid" / "results.json").read_text())
    assert [r["method"] for r in results] == ["none", "ogm_ge"]
    for r in results:
        metrics = json.loads((tmp_path / r["out"] / "metrics.json").read_text())
        assert metrics["history"][0]["train_batches"] == [6, 6]
