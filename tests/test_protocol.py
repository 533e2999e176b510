"""The calibration protocol: method names, the grid, paired intervals, and a tiny run from training to results."""

import csv
import json

import numpy as np
import pytest

import trainers.protocol_eval as protocol_eval
from pipeline.config import ConfigError
from pipeline.protocol import ProtocolConfig, load_protocol_config
from tests.pack_helpers import write_pack
from trainers.model_config import ModelOptions
from trainers.protocol import parse_method, plan_runs, train_all
from trainers.protocol_eval import evaluate_runs, robustness
from trainers.protocol_results import paired_bootstrap, write_results

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_method_names():
    assert parse_method("reliability+aug+branch") == ("calibration", "reliability", {"aug", "branch"})
    assert parse_method("none") == ("none", "paper", set())
    assert parse_method("ogm_ge+aug") == ("ogm_ge", "paper", {"aug"})
    for bad in ("magic", "none+aug+aug", "none+dropout"):
        with pytest.raises(ValueError):
            parse_method(bad)


def protocol(tmp_path, **changes) -> ProtocolConfig:
    base = {
        "data": {"fsdd": "f", "mnist": "m", "folder": str(tmp_path / "data")},
        "out": str(tmp_path / "out"),
        "train": {"epochs": 1, "batch_size": 8, "hidden": 16, "num_workers": 0, "shuffle_buffer": 16},
        "augment": {"share": 0.5},
        "reliability": {"evidence_hidden": 8},
        "grid": [
            {
                "regimes": ["standard"],
                "backbones": ["late"],
                "methods": ["none+aug", "none+aug+branch", "reliability+aug"],
                "seeds": [0, 1],
            }
        ],
    }
    return ProtocolConfig.model_validate({**base, **changes})


def test_plan_gives_each_method_its_options_and_each_regime_its_pack(tmp_path):
    config = protocol(
        tmp_path,
        grid=[
            {
                "regimes": ["standard", "clean"],
                "backbones": ["late", "conv"],
                "methods": ["none", "reliability+aug+branch"],
                "seeds": [3],
            },
            {"regimes": ["clean"], "backbones": ["conv"], "methods": ["none"], "seeds": [3], "train": {"epochs": 9}},
        ],
    )
    runs = plan_runs(config, {"standard": tmp_path / "s", "clean": tmp_path / "c"})
    assert len(runs) == 8  # the second block's only run is already in the first: planned once
    by_name = {(regime, r.backbone, method): r for regime, method, r in runs}
    plain, full = by_name[("clean", "conv", "none")], by_name[("standard", "late", "reliability+aug+branch")]
    assert plain.pack == tmp_path / "c" and plain.augment is None and plain.branch_unimodal_weight == 0
    assert full.pack == tmp_path / "s" and full.augment.share == 0.5 and full.branch_unimodal_weight == 1.0
    assert (full.method, full.calibration, full.model_options) == (
        "calibration",
        "reliability",
        ModelOptions(reliability={"evidence_hidden": 8}),
    )
    assert full.out == tmp_path / "out" / "runs" / "standard" / "late-reliability+aug+branch" / "seed-3"


def test_preset_paths_are_relative_to_the_preset(tmp_path):
    (tmp_path / "p.yaml").write_text("protocol:\n  data: {fsdd: a, mnist: b, folder: c}\n  out: d\n")
    config = load_protocol_config(tmp_path / "p.yaml")
    assert config.data.fsdd == tmp_path / "a" and config.out == tmp_path / "d"
    (tmp_path / "bad.yaml").write_text(
        "protocol:\n  data: {fsdd: a, mnist: b, folder: c}\n  out: d\n  grid: [{methods: [none+magic]}]\n"
    )
    with pytest.raises(ConfigError, match="none\\+magic"):
        load_protocol_config(tmp_path / "bad.yaml")


def test_paired_bootstrap():
    same = paired_bootstrap([[1, 0, 1, 1]], [[1, 0, 1, 1]], resamples=200)
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0}
    rng = np.random.default_rng(0)
    theirs = rng.integers(0, 2, (3, 400))
    ours = np.where(rng.random((3, 400)) < 0.3, 1, theirs)  # ours fixes ~30% of their errors
    result = paired_bootstrap(ours.tolist(), theirs.tolist(), resamples=500)
    assert 0 < result["low"] < result["diff"] < result["high"]
    assert result["diff"] == pytest.approx((ours - theirs).mean() * 100)


def write_table(path, ids, perturbed):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sample_id", "modality", "kind", "detail"])
        for i, sid in enumerate(ids):
            modality = perturbed(i)
            writer.writerow([sid, modality, ("conflict", "degraded")[i % 2] if modality else "clean", ""])
    return path


@pytest.mark.slow
def test_protocol_from_training_to_results(tmp_path, monkeypatch):
    pack = write_pack(tmp_path / "pack", missing_rate=0.0)
    ids = [f"test_{i:05d}" for i in range(12)]
    mods = ["audio", "text", "video"]
    builds = {
        "standard": (pack, write_table(tmp_path / "s.csv", ids, lambda i: mods[i % 3] if i % 3 == 0 else "")),
        "clean": (pack, write_table(tmp_path / "c.csv", ids, lambda i: "")),
        "perturbed": (pack, write_table(tmp_path / "p.csv", ids, lambda i: mods[i % 3])),
    }
    config = protocol(tmp_path, bootstrap=100)
    runs = plan_runs(config, {"standard": pack, "clean": pack})
    train_all(runs)
    results = write_results(config, runs, evaluate_runs(runs, builds))

    on_disk = json.loads((config.out / "results.json").read_text())
    assert on_disk == results
    rows = {r["method"]: r for r in results["summary"]}
    assert set(rows) == {"none+aug", "none+aug+branch", "reliability+aug"}
    assert rows["reliability+aug"]["auroc_all"]["n"] == 2 and "auroc_all" not in rows["none+aug"]
    assert len(rows["reliability+aug"]["corruption"]["auroc"]) == 5 and rows["none+aug"]["corruption"]["auroc"] is None
    assert set(rows["none+aug"]["pert_by_kind"]) == {f"{m}/{k}" for m in mods for k in ("conflict", "degraded")}
    compared = [c for c in results["comparisons"] if c["method"] == "reliability+aug"]
    assert {c["baseline"] for c in compared} == {"none+aug", "none+aug+branch"}
    assert all(c[s]["low"] <= c[s]["diff"] <= c[s]["high"] for c in compared for s in ("test", "clean", "pert"))
    assert [(v["backbone"], v["baseline"]) for v in results["verdicts"]] == [("late", "none+aug")]
    assert "| late | reliability+aug | 2 |" in (config.out / "results.md").read_text()

    # the demo's summary: clean samples of the run's own test split, and the perturbed test set
    entries = [
        {
            "out": str(r.out),
            "backbone": r.backbone,
            "method": r.method,
            "calibration": r.calibration if r.method == "calibration" else None,
        }
        for _, _, r in runs
    ]
    summary = robustness(entries, builds["standard"][1], pack, builds["perturbed"][1])
    reliability, none = summary["late / calibration (reliability)"], summary["late / none"]
    assert (reliability["runs"], none["runs"]) == (2, 4)  # none+aug and none+aug+branch share the name
    assert reliability["auroc"]["n"] == 2 and none["auroc"] is None
    assert 0 <= reliability["clean"]["mean"] <= 1 and 0 <= none["pert"]["mean"] <= 1
    # evaluations are kept beside each run: a second pass reads them instead of evaluating again
    monkeypatch.setattr(protocol_eval, "evaluate_run", lambda *a: pytest.fail("evaluated again"))
    again = evaluate_runs(runs, builds)[0]["sets"]["pert"]["accuracy"]
    assert again == pytest.approx(results["runs"][0]["sets"]["pert"]["accuracy"], abs=1e-4)  # results.json rounds


def test_precal_experiment_runs_a_protocol_preset(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import pipeline.protocol
    from pipeline.cli import app

    seen = []
    verdict = {
        "regime": "standard",
        "backbone": "late",
        "method": "reliability+aug",
        "auroc_pert": 0.9,
        "baseline": "none+aug",
        "pert_vs_baseline": {"diff": 5.0},
        "clean_vs_baseline": {"diff": 0.0},
    }
    monkeypatch.setattr(
        pipeline.protocol, "run_protocol", lambda config: seen.append(config) or {"verdicts": [verdict]}
    )
    (tmp_path / "p.yaml").write_text("protocol:\n  data: {fsdd: a, mnist: b, folder: c}\n  out: d\n")
    result = CliRunner().invoke(app, ["experiment", str(tmp_path / "p.yaml")])
    assert result.exit_code == 0, result.output
    assert seen[0].out == tmp_path / "d" and "standard / late / reliability+aug: AUROC on pert 0.9" in result.output
