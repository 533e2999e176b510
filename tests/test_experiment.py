"""Experiment grids: expansion, results.json/results.md, and resuming an interrupted grid."""

import json

import pytest

from tests.pack_helpers import write_pack
from trainers import experiment
from trainers.config import ExperimentConfig
from trainers.experiment import grid, results_markdown, run_experiment

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_grid(pack, out, **changes) -> ExperimentConfig:
    base = {
        "packs": [pack],
        "out": out,
        "backbones": ["late"],
        "methods": ["none", "calibration"],
        "calibrations": ["paper", "aux"],
        "seeds": [0, 1],
        "train": {"epochs": 1, "batch_size": 8, "num_workers": 0, "hidden": 8},
    }
    return ExperimentConfig(**{**base, **changes})


def test_grid_expands_calibration_variants_only_for_calibration(tmp_path):
    runs = grid(small_grid(tmp_path / "pack", tmp_path / "out", methods=["gate", "calibration"]))
    names = [(r.method, r.calibration, r.seed) for r in runs]
    assert names == [
        ("gate", "paper", 0),
        ("gate", "paper", 1),
        ("calibration", "paper", 0),
        ("calibration", "paper", 1),
        ("calibration", "aux", 0),
        ("calibration", "aux", 1),
    ]
    assert runs[4].out == tmp_path / "out" / "pack" / "late-calibration-aux" / "seed-0"
    assert all(r.epochs == 1 and r.hidden == 8 for r in runs)


def test_run_write_and_resume(tmp_path, monkeypatch):
    pack = write_pack(tmp_path / "pack")
    config = small_grid(pack, tmp_path / "out")
    results = run_experiment(config)
    assert len(results) == 6
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == results
    first = results[0]
    assert {"backbone", "method", "seed", "calibration", "valid", "test", "best_epoch"} <= set(first)
    assert (first["method"], first["calibration"]) == ("none", None) and results[2]["calibration"] == "paper"

    table = (tmp_path / "out" / "results.md").read_text()
    assert "| backbone | method | seeds | accuracy | macro_f1 | loss |" in table
    for row in ("| late | none | 2 |", "| late | calibration (paper) | 2 |", "| late | calibration (aux) | 2 |"):
        assert row in table
    assert "±" in table

    # An interrupted grid: one run lost its metrics.json; only that run trains again.
    (tmp_path / "out" / "pack" / "late-calibration-aux" / "seed-1" / "metrics.json").unlink()
    trained = []
    real_train = experiment.train
    monkeypatch.setattr(experiment, "train", lambda run: trained.append(run.out) or real_train(run))
    again = run_experiment(config)
    assert trained == [tmp_path / "out" / "pack" / "late-calibration-aux" / "seed-1"]
    assert [r["test"] for r in again] == [r["test"] for r in results]


def test_markdown_single_seed_and_missing_metrics():
    results = [
        {"pack": "p", "backbone": "conv", "method": "gate", "calibration": None, "test": {"mae": 0.5}},
        {"pack": "p", "backbone": "conv", "method": "none", "calibration": None, "test": {}},
    ]
    table = results_markdown(results)
    assert "| conv | gate | 1 | 0.5000 |" in table and "| conv | none | 1 | - |" in table
