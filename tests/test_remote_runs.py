"""Run outputs in a bucket (a real S3 server, SeaweedFS): training's checkpoints, best.pt and metrics.json,
resumption after a kill, evaluation and load_model from a checkpoint URL, an experiment grid and its
analysis, and the pipeline's train and evaluate stages under a store URL's runs folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.config import PipelineConfig
from pipeline.stage_records import StageOutcome, read_stages, run_stage
from pipeline.stages import evaluate_stage, out_dir, train_stage
from storage import remote
from storage.layout import Store
from storage.packinfo import read_pack
from storage.remote import URL
from tests.helpers import killed_at_step
from tests.orchestration_helpers import TINY_TRAIN, split_subset
from tests.pack_helpers import write_pack
from tests.s3server import upload
from trainers.analysis.analyse import analyse
from trainers.checkpoints import load_checkpoint, load_model
from trainers.config import ExperimentConfig, TrainConfig
from trainers.data import eval_loader
from trainers.experiment import run_experiment
from trainers.protocol import ProtocolTraining, plan_runs, train_all
from trainers.protocol_eval import evaluate_runs
from trainers.protocol_results import write_results
from trainers.train import batch_spec, evaluate, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = {"epochs": 3, "batch_size": 8, "num_workers": 0, "shuffle_buffer": 16, "hidden": 16, "lr": 3e-3}


@pytest.fixture(scope="module")
def local_pack(tmp_path_factory):
    return write_pack(tmp_path_factory.mktemp("remote-runs") / "pack")


@pytest.fixture
def bucket(s3, local_pack):
    """(a fresh prefix in the bucket, the URL of a copy of the pack under it)."""
    prefix = URL(s3.new_prefix())
    upload(local_pack, prefix / "store" / "packed" / local_pack.name)
    return prefix, str(prefix / "store" / "packed" / local_pack.name)


def objects(folder: URL) -> list[str]:
    return sorted(str(found.relative_to(folder)) for found in remote.files_under(folder))


def logits(model, pack) -> torch.Tensor:
    info = read_pack(pack)
    config = TrainConfig(pack=pack, out="unused", **SETTINGS)
    batches = eval_loader(info, batch_spec(config, info, model.modalities), "test", batch_size=64)
    with torch.no_grad():
        return torch.cat([model(batch).logits for batch in batches])


def test_a_run_in_the_bucket_matches_a_local_run(bucket, local_pack, tmp_path):
    prefix, pack = bucket
    out = prefix / "runs" / "a"
    in_bucket = train(TrainConfig(pack=pack, out=str(out), **SETTINGS))
    local = train(TrainConfig(pack=local_pack, out=tmp_path / "local", **SETTINGS))

    assert objects(out) == ["best.pt", "checkpoints/epoch-002.pt", "checkpoints/epoch-003.pt", "metrics.json"]
    assert json.loads((out / "metrics.json").read_text()) == in_bucket
    assert in_bucket["history"] == local["history"] and in_bucket["test"] == local["test"]
    from_bucket, from_disk = load_model(str(out / "best.pt")), load_model(tmp_path / "local" / "best.pt")
    assert torch.equal(logits(from_bucket, pack), logits(from_disk, local_pack))
    assert evaluate(str(out / "best.pt"), pack, "test") == pytest.approx(in_bucket["test"])
    from typer.testing import CliRunner

    from pipeline.cli import app

    shown = CliRunner().invoke(app, ["evaluate", str(out / "best.pt"), "--pack", pack])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == pytest.approx(in_bucket["test"])


def test_a_run_killed_in_the_bucket_resumes_exactly(bucket, local_pack, tmp_path):
    """The local resumption test (tests/test_train.py) with the run's folder in the bucket: its
    checkpoints are listed, loaded and pruned there."""
    prefix, pack = bucket
    out = prefix / "runs" / "resumed"
    straight = train(TrainConfig(pack=local_pack, out=tmp_path / "straight", method="calibration", **SETTINGS))

    with killed_at_step(12):  # 5 steps per epoch: the 2nd step of epoch 3
        train(TrainConfig(pack=pack, out=str(out), method="calibration", **SETTINGS))
    assert objects(out) == ["best.pt", "checkpoints/epoch-001.pt", "checkpoints/epoch-002.pt"]
    resumed = train(TrainConfig(pack=pack, out=str(out), method="calibration", **SETTINGS))

    assert resumed["history"] == straight["history"]
    assert resumed["valid"] == straight["valid"] and resumed["test"] == straight["test"]
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "epoch-003.pt")
    b = load_checkpoint(out / "checkpoints" / "epoch-003.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert objects(out / "checkpoints") == ["epoch-002.pt", "epoch-003.pt"]


def test_an_unreadable_checkpoint_url_is_named(bucket):
    from typer.testing import CliRunner

    from pipeline.cli import app

    prefix, pack = bucket
    missing = str(prefix / "runs" / "none" / "best.pt")
    shown = CliRunner().invoke(app, ["evaluate", missing, "--pack", pack])
    assert shown.exit_code != 0 and f"{missing}: no such checkpoint" in shown.output
    with pytest.raises(ValueError, match=f"{missing}: unreadable checkpoint"):
        evaluate(missing, pack, "test")
    remote.put(URL(missing), b"not a checkpoint")
    with pytest.raises(ValueError, match=f"{missing}: unreadable checkpoint"):
        load_model(missing)


def test_an_experiment_grid_and_its_analysis_write_to_the_bucket(bucket, monkeypatch):
    prefix, pack = bucket
    out = prefix / "experiment"
    config = ExperimentConfig(
        packs=[pack], out=str(out), backbones=["late"], methods=["none", "calibration"], seeds=[0], train=SETTINGS
    )
    results = run_experiment(config)
    assert json.loads((out / "results.json").read_text()) == results
    assert "| late | calibration (paper) | 1 |" in (out / "results.md").read_text()
    assert [r["out"] for r in results] == [
        str(out / "pack" / name / "seed-0") for name in ("late-none", "late-calibration-paper")
    ]

    def trains_again(run):
        raise AssertionError(f"trained {run.out} again")

    monkeypatch.setattr("trainers.experiment.train", trains_again)
    assert run_experiment(config) == results  # finished runs are read back from the bucket

    summary = analyse(str(out), tsne_points=20, progress=False)
    assert [row["run"] for row in summary["runs"]] == [r["out"] for r in results[::-1]]
    calibrated = out / "pack" / "late-calibration-paper" / "seed-0" / "analysis"
    assert {"analysis.json", "report.html", "summary.md"} <= set(objects(calibrated))
    assert any(name.startswith("figures/") and name.endswith(".png") for name in objects(calibrated))
    assert {"analysis.json", "report.html", "summary.md"} <= set(objects(out / "analysis"))
    report = json.loads((calibrated / "analysis.json").read_text())
    assert report["baseline"] == str(out / "pack" / "late-none" / "seed-0")


def test_a_protocol_grid_writes_its_runs_and_results_to_the_bucket(s3, tmp_path):
    prefix = URL(s3.new_prefix())
    pack = prefix / "pack"
    upload(write_pack(tmp_path / "pack", missing_rate=0.0), pack)
    table = tmp_path / "perturbations.csv"
    rows = [f"test_{i:05d},{('audio', 'text', 'video')[i % 3]},degraded," for i in range(12)]
    table.write_text("\n".join(["sample_id,modality,kind,detail", *rows]) + "\n")
    config = ProtocolTraining(
        out=str(prefix / "protocol"),
        train={**SETTINGS, "epochs": 1},
        augment={"share": 0.5},
        grid=[{"regimes": ["standard"], "backbones": ["late"], "methods": ["none+aug", "paper+aug"], "seeds": [0]}],
        bootstrap=100,
    )
    runs = plan_runs(config, {"standard": str(pack), "clean": str(pack)})
    train_all(runs)
    results = write_results(
        config, runs, evaluate_runs(runs, {b: (str(pack), table) for b in ("standard", "clean", "perturbed")})
    )

    assert json.loads((prefix / "protocol" / "results.json").read_text()) == results
    assert "| late | paper+aug | 1 |" in (prefix / "protocol" / "results.md").read_text()
    run = "runs/standard/late-paper+aug/seed-0"
    assert {f"{run}/best.pt", f"{run}/metrics.json", f"{run}/protocol.json"} <= set(objects(prefix / "protocol"))


def test_the_pipeline_runs_under_a_store_url_without_out(bucket):
    prefix, pack = bucket
    store = str(prefix / "store")
    config = PipelineConfig(manifest=str(prefix / "manifest.csv"), store=store, train={"seeds": [0]})
    runs = out_dir(config)
    assert runs == Store(store).runs_dir and remote.is_remote(runs)

    pack_id = read_pack(pack).pack_id
    packed = run_stage(runs, "pack", lambda: StageOutcome("ran", pack_id, {"path": pack, "pack_id": pack_id}))
    train = {"backbones": ["late"], "methods": ["none"], "seeds": [0], "train": {**SETTINGS, "epochs": 1}}
    trained = run_stage(runs, "train", lambda: train_stage(train, packed.result, runs))
    evaluated = run_stage(runs, "evaluate", lambda: evaluate_stage(train, packed.result, runs))

    assert (trained.status, evaluated.status) == ("ran", "ran")
    assert trained.result["out"].startswith(str(runs / "runs")) and remote.exists(URL(trained.result["out"]))
    assert set(read_stages(runs)["stages"]) == {"pack", "train", "evaluate"}
    metrics = json.loads((runs / "metrics.json").read_text())
    assert metrics["key"] == evaluated.key and metrics["runs"][0]["out"].startswith(trained.result["out"])
    again = train_stage(train, packed.result, runs), evaluate_stage(train, packed.result, runs)
    assert [outcome.status for outcome in again] == ["skipped", "skipped"]


def test_a_bucket_run_writes_nothing_locally(bucket, tmp_path, monkeypatch):
    """Nothing of a bucket run lands in the working directory."""
    prefix, pack = bucket
    monkeypatch.chdir(tmp_path)
    train(TrainConfig(pack=pack, out=str(prefix / "runs" / "cwd"), **{**SETTINGS, "epochs": 1}))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_precal_run_with_a_store_url_and_no_out_keeps_its_runs_in_the_store(s3, tmp_path):
    """`precal run` as a user runs it, everything in the bucket: media, manifest, store and run outputs."""
    prefix = URL(s3.new_prefix())
    split_subset(tmp_path / "data", {"train": 8, "valid": 4, "test": 4})
    upload(tmp_path / "data", prefix / "data")
    config = tmp_path / "pipeline.yaml"
    settings = {
        "manifest": str(prefix / "data" / "manifest.csv"),
        "store": str(prefix / "store"),
        "extract": {"modalities": {"text": {}, "audio": {"name": "logmel"}}, "num_workers": 0},
        "train": TINY_TRAIN,
    }
    config.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    precal = Path(sys.executable).with_name("precal")
    result = subprocess.run([str(precal), "run", str(config)], env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Traceback" not in output, output[-4000:]

    runs = prefix / "store" / "runs"
    assert f"record: {runs / 'stages.json'}" in result.stdout
    stages = read_stages(runs)["stages"]
    assert [stages[s]["status"] for s in ("extract", "pack", "train", "evaluate")] == ["ran"] * 4
    assert stages["train"]["result"]["out"].startswith(str(runs / "runs"))
    (variant,) = json.loads((runs / "metrics.json").read_text())["variants"].values()
    assert variant["runs"] == 1 and 0 <= variant["test"]["accuracy"]["mean"] <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "pipeline.yaml", "prefect"]
