"""`precal run` as a user runs it: a console command in its own process, training with loader workers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.prefect_env import log_temporary_server
from tests.orchestration_helpers import TINY_TRAIN, split_subset, write_config

PRECAL = Path(sys.executable).with_name("precal")


def test_temporary_server_output_goes_to_its_log(capfd):
    from prefect.server.api import server

    log = log_temporary_server()
    server.subprocess.Popen([sys.executable, "-c", "import sys; sys.stderr.write('Traceback: at shutdown')"]).wait()
    assert "Traceback" not in capfd.readouterr().err
    assert "Traceback: at shutdown" in log.read_text()


@pytest.mark.slow
def test_precal_run_trains_with_a_loader_worker(tmp_path):
    split_subset(tmp_path, {"train": 24, "valid": 6, "test": 6})
    train = {**TINY_TRAIN, "train": {**TINY_TRAIN["train"], "epochs": 2, "num_workers": 1}}
    config = write_config(tmp_path, {"text": {}, "audio": {"name": "logmel"}}, train=train)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    result = subprocess.run([str(PRECAL), "run", str(config)], env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]  # a successful command prints no traceback
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    (variant,) = metrics["variants"].values()
    assert 0 <= variant["test"]["accuracy"]["mean"] <= 1 and variant["runs"] == 1
    assert (tmp_path / "prefect" / "temporary-server.log").is_file()
