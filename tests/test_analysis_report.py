"""Analyses of one tiny trained experiment: removal, dynamics statistics, the report and the analyse command."""

import csv
import json
import re
import shutil
import subprocess

import httpx
import pytest
import torch
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.train import parse_severities
from tests.pack_helpers import write_pack
from trainers.analysis.analyse import analyse_run
from trainers.analysis.dynamics import epoch_statistics
from trainers.analysis.removal import removal_section, remove
from trainers.analysis.report import SECTIONS, publish_artifact
from trainers.analysis.runs import collect, find_baseline, load_batches, load_run, predict
from trainers.config import ExperimentConfig
from trainers.experiment import run_experiment

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A tiny experiment: late fusion with calibration ("paper" and "reliability") and without, one seed, 2 epochs."""
    root = tmp_path_factory.mktemp("analysis")
    torch.set_num_threads(1)
    pack = write_pack(root / "pack", counts={"train": 64, "valid": 24, "test": 36}, missing_rate=0.1)
    config = ExperimentConfig(
        packs=[pack],
        out=root / "exp",
        backbones=["late"],
        methods=["none", "calibration"],
        calibrations=["paper", "reliability"],
        seeds=[0],
        train={"epochs": 2, "batch_size": 16, "num_workers": 0, "hidden": 16},
    )
    run_experiment(config)
    runs = root / "exp" / "pack"
    return {
        "root": root,
        "pack": pack,
        "calibration": runs / "late-calibration-paper" / "seed-0",
        "reliability": runs / "late-calibration-reliability" / "seed-0",
        "none": runs / "late-none" / "seed-0",
    }


@pytest.fixture(scope="module")
def analysed(experiment):
    """The calibration run analysed (feature level) with a perturbation table for its test samples."""
    run = load_run(experiment["calibration"])
    ids = [sid for b in load_batches(run) for sid in b["sample_id"]]
    table = experiment["root"] / "perturbations.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sample_id", "split", "modality", "kind", "detail"])
        for i, sid in enumerate(ids):
            kind = ("clean", "conflict", "degraded")[i % 3]
            writer.writerow([sid, "test", "" if kind == "clean" else run.modalities[i % 2], kind, ""])
    result = analyse_run(
        experiment["calibration"], perturbations=table, severities=(1, 5), tsne_points=200, progress=False
    )
    return {**experiment, "result": result, "table": table}


# ---- removal ------------------------------------------------------------------------------------------


def test_removal_table_shape_and_values(experiment):
    run, baseline = load_run(experiment["calibration"]), load_run(experiment["none"])
    assert find_baseline(run) == experiment["none"]
    batches = load_batches(run)
    section = removal_section(run, baseline, batches)
    removed = [tuple(r["removed"]) for r in section["rows"]]
    assert removed == [(), ("audio",), ("text",), ("video",), ("audio", "text"), ("audio", "video"), ("text", "video")]
    first = section["rows"][0]
    assert first["run_drop"] == 0 and first["baseline_drop"] == 0
    assert first["run"] == pytest.approx(run.metrics["test"]["accuracy"])
    for row in section["rows"]:
        assert 0 <= row["run"] <= 1 and 0 <= row["baseline"] <= 1
        assert row["run_drop"] == pytest.approx(first["run"] - row["run"])


def test_removal_is_exactly_a_missing_modality(experiment):
    """Removing text gives the same predictions as a batch in which the data never had text."""
    run = load_run(experiment["calibration"])
    batches = load_batches(run)
    spec = run.spec()
    from trainers.data import _tar_samples

    decoded = [spec.decode(raw) for raw in _tar_samples(run.info.urls("test"))]
    for sample in decoded:
        sample["features"].pop("text", None)
    missing = spec.collate(decoded)
    missing["features"] = {m: x.float() for m, x in missing["features"].items()}
    ours = torch.cat([predict(run.model, [remove(b, run.modalities, ("text",))])[0] for b in batches])
    theirs = predict(run.model, [missing])[0]
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not remove(batches[0], run.modalities, ("text",))["present"][:, run.modalities.index("text")].any()
    assert batches[0]["present"][:, run.modalities.index("text")].any()  # the input batch is unchanged


# ---- dynamics -----------------------------------------------------------------------------------------


def test_epoch_statistics_leave_the_model_untouched(experiment):
    run = load_run(experiment["calibration"])
    model = run.model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = epoch_statistics(model, load_batches(run, "valid"))
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert stats["probe_metric"] == "accuracy" and set(stats["probe"]) == set(run.modalities)
    assert all(0 <= v <= 1 for v in stats["probe"].values())
    assert all(v > 0 for v in stats["grad_norm"].values())
    assert all(s["mean"] > 0 for s in stats["instance_scale"].values())
    json.dumps(stats)  # goes into metrics.json's history as it is


# ---- the report ---------------------------------------------------------------------------------------


def test_reliability_run_has_scales_detection_and_removal_ceiling(analysed):
    result = analyse_run(
        analysed["reliability"],
        perturbations=analysed["table"],
        severities=(1,),
        tsne_points=50,
        raw=False,
        progress=False,
    )
    assert set(result["detection"]["auroc"]) == {"conflict", "degraded", "all"}
    assert {r["modality"] for r in result["detection"]["by_status"]} == {"audio", "text", "video"}
    ceiling = result["removal"]["ceiling"]
    assert ceiling["samples"] == 24 and set(ceiling) >= {"run", "baseline"}  # two of every three test samples
    assert all(0 <= ceiling[k][v] <= 1 for k in ("run", "baseline") for v in ("as_is", "removed"))
    report = (analysed["reliability"] / "analysis" / "report.html").read_text()
    assert "Removal ceiling" in report and "calibration (reliability)" in report


def test_analysis_outputs_and_metrics(analysed):
    out = analysed["calibration"] / "analysis"
    result = json.loads((out / "analysis.json").read_text())
    assert result["baseline"] == str(analysed["none"])
    assert result["feature_corruption"]["severities"] == [0, 1, 5]
    assert result["raw_corruption"] is None and any("--manifest" in n for n in result["notes"])
    metrics = json.loads((analysed["calibration"] / "metrics.json").read_text())
    assert set(metrics["calibration_detection_auroc"]) == {"conflict", "degraded", "all"}
    assert metrics["calibration_detection_auroc"] == result["detection"]["auroc"]
    assert metrics["test"]  # the loop's own keys are kept
    for name in (
        "removal",
        "feature_corruption",
        "dynamics",
        "tsne_fused",
        "tsne_audio",
        "instance_scales",
        "dimension_scales",
    ):
        assert (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.md").read_text()
    assert "Modality removal" in summary and "| conflict |" in summary


def test_collect_reads_the_calibrated_features(experiment):
    run = load_run(experiment["calibration"])
    batches = load_batches(run)
    outputs = collect(run.model, batches)
    n = sum(len(b["sample_id"]) for b in batches)
    assert outputs.fused.shape == (n, len(run.modalities) * 16) and outputs.instance.shape == (n, 3)
    assert torch.allclose(outputs.logits, predict(run.model, batches)[0])
    scale = outputs.instance[:, 0, None] * outputs.dimension["audio"]  # pooled mean scales like the features
    present = outputs.present[:, 0]
    assert torch.allclose(outputs.calibrated["audio"][present], (outputs.pooled["audio"] * scale)[present], atol=1e-5)


def test_report_has_every_section_and_all_images_render(analysed, tmp_path):
    report = analysed["calibration"] / "analysis" / "report.html"
    page = report.read_text()
    for key in SECTIONS:
        assert f'<section id="{key}">' in page
    images = page.count("<img ")
    assert images >= 8 and page.count('src="data:image/png;base64,') == images
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium): cannot check that the images render")
    assert rendered(report, tmp_path) == (images, images)
    # The check itself catches a broken image.
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("</nav>", '</nav><img src="data:image/png;base64,AAAA" alt="broken">'))
    assert rendered(broken, tmp_path) == (images, images + 1)


def rendered(page, tmp_path) -> tuple[int, int]:
    """(images decoded, images) as the report's own script counts them in headless Chromium."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'data-images="(\d+)/(\d+)"', dom)
    assert found, "the report's render check did not run"
    return int(found[1]), int(found[2])


def test_publish_artifact_only_inside_a_flow_run():
    assert publish_artifact("# nothing") is None


def test_parse_severities():
    assert parse_severities("1..5") == [1, 2, 3, 4, 5]
    assert parse_severities("5,1,3") == [1, 3, 5]
    with pytest.raises(ValueError):
        parse_severities("0..6")


def test_cli_analyses_an_experiment_folder(analysed):
    result = CliRunner().invoke(
        app,
        [
            "analyse",
            str(analysed["root"] / "exp"),
            "--severities",
            "5",
            "--perturbations",
            str(analysed["table"]),
            "--tsne-points",
            "100",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((analysed["root"] / "exp" / "analysis" / "analysis.json").read_text())
    assert {r["name"] for r in summary["runs"]} == {
        "late-none seed 0",
        "late-calibration-paper seed 0",
        "late-calibration-reliability seed 0",
    }
    assert (analysed["none"] / "analysis" / "report.html").is_file()
    assert "calibration_detection_auroc" not in json.loads((analysed["none"] / "metrics.json").read_text())


def test_raw_level_corruption_comes_from_the_builder_it_is_given(analysed):
    """trainers reads no media: the raw variants come from the caller's builder, and its refusal is a note."""
    asked = []

    def unavailable(info, sample_ids, folder):
        asked.append((info.pack_id, sample_ids, folder))
        raise ValueError("/elsewhere is not a feature store; pass --store (the store the pack was made in).")

    run = analysed["reliability"]
    result = analyse_run(run, variants=unavailable, severities=(1,), tsne_points=50, publish=False, progress=False)
    pack_id = json.loads((run / "metrics.json").read_text())["pack_id"]
    assert [(p, len(ids), folder) for p, ids, folder in asked] == [(pack_id, 36, run / "analysis" / "variants")]
    assert result["raw_corruption"] is None
    assert (
        "Raw-level corruption skipped: /elsewhere is not a feature store; pass --store (the store the pack was "
        "made in)." in result["notes"]
    )


@flow(name="precal-analysis-artifact")
def publishing():
    return publish_artifact("# analysis\n\n| a | b |\n| --- | --- |\n| 1 | 2 |"), flow_run.id


@pytest.mark.slow
def test_publish_artifact_inside_a_flow_run():
    artifact_id, run_id = publishing()
    assert artifact_id is not None
    with get_client(sync_client=True) as client:  # the REST call, as tests/test_orchestration.py does
        body = {"artifacts": {"flow_run_id": {"any_": [run_id]}}, "limit": 5, "offset": 0, "sort": "CREATED_DESC"}
        response = httpx.post(f"{client.api_url}artifacts/filter", json=body)
    response.raise_for_status()
    [artifact] = response.json()
    assert artifact["key"] == "precal-analysis" and artifact["type"] == "markdown"
    assert "| 1 | 2 |" in artifact["data"]


def test_cli_refuses_a_folder_without_runs(experiment):
    # Runs lie at <out>/<pack>/<run>/seed-<n>: a folder above an experiment is not walked through.
    for folder in (experiment["root"], experiment["pack"]):
        result = CliRunner().invoke(app, ["analyse", str(folder), "--no-raw"])
        assert result.exit_code == 2 and "neither a finished training run" in result.output, result.output
