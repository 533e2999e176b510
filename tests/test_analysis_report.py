"""Analyses of trained runs: removal, corruption, dynamics statistics, detection, the report, raw variants."""
import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.train import parse_severities
from tests.helpers import bundled_subset
from tests.pack_helpers import write_pack
from trainers.analysis.analyse import analyse_run
from trainers.analysis.corruption import feature_corruption
from trainers.analysis.detection import detection_metrics, lowest_credit, read_perturbations
from trainers.analysis.dynamics import epoch_statistics
from trainers.analysis.removal import remove, removal_section
from trainers.analysis.report import SECTIONS, publish_artifact
from trainers.analysis.runs import collect, find_baseline, load_batches, load_run, predict
from trainers.config import ExperimentConfig, TrainConfig
from trainers.experiment import run_experiment
from trainers.train import train

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A tiny experiment: late fusion with calibration ("paper" and "reliability") and without, one seed, 2 epochs."""
    root = tmp_path_factory.mktemp("analysis")
    torch.set_num_threads(1)
    pack = write_pack(root / "pack", counts={"train": 64, "valid": 24, "test": 36}, missing_rate=0.1)
    config = ExperimentConfig(packs=[pack], out=root / "exp", backbones=["late"], methods=["none", "calibration"],
                              calibrations=["paper", "reliability"], seeds=[0],
                              train={"epochs": 2, "batch_size": 16, "num_workers": 0, "hidden": 16})
    run_experiment(config)
    runs = root / "exp" / "pack"
    return {"root": root, "pack": pack, "calibration": runs / "late-calibration-paper" / "seed-0",
            "reliability": runs / "late-calibration-reliability" / "seed-0", "none": runs / "late-none" / "seed-0"}


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
    result = analyse_run(experiment["calibration"], perturbations=table, severities=(1, 5), tsne_points=200,
                         progress=False)
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


# ---- corruption ---------------------------------------------------------------------------------------

def test_feature_corruption_lowers_accuracy_with_severity(tmp_path):
    pack = write_pack(tmp_path / "pack", dims={"audio": 8}, counts={"train": 96, "valid": 24, "test": 60},
                      missing_rate=0.0, signal=3.0)
    train(TrainConfig(pack=pack, out=tmp_path / "run", epochs=6, batch_size=16, lr=1e-2, num_workers=0, hidden=16))
    run = load_run(tmp_path / "run")
    batches = load_batches(run)
    curves = feature_corruption({"run": run}, batches)["curves"]
    noise = curves["noise"]["audio"]["run"]
    assert noise[0] > 0.8, "the model should have learned the class from dim 0"
    assert noise[-1] < noise[0] - 0.2
    assert all(b <= a + 0.05 for a, b in zip(noise, noise[1:])), noise
    assert curves["zero_dims"]["audio"]["run"][-1] < noise[0]
    # One step per sample is always kept: the modality never disappears.
    assert curves["drop_steps"]["audio"]["run"][-1] > 1 / 3


# ---- detection ----------------------------------------------------------------------------------------

def test_detection_auroc_on_a_known_case():
    modalities = ["audio", "text", "video"]
    ids = ["clean", "conflict_audio", "degraded_video", "conflict_text"]
    table = {"clean": ("", "clean"), "conflict_audio": ("audio", "conflict"),
             "degraded_video": ("video", "degraded"), "conflict_text": ("text", "conflict")}
    instance = np.array([[1.0, 1.1, 0.9],
                         [0.5, 1.2, 1.0],     # audio lowest: found
                         [1.0, 0.8, 0.95],    # text lowest, video perturbed: missed
                         [1.0, 0.7, 0.7]])    # text tied lowest with video: half credit
    present = np.ones_like(instance, bool)
    result = detection_metrics(instance, present, modalities, ids, table)
    # conflict: negatives 0.5 and 0.7 against positives {1.0, 1.1, 0.9, 1.2, 1.0, 1.0, 0.7}:
    # 0.5 is below all 7; 0.7 is below 6 and tied with 1 -> (7 + 6.5) / 14
    assert result["auroc"]["conflict"] == pytest.approx(13.5 / 14)
    # degraded: negative 0.95 against {1.0, 1.1, 0.9, 1.0, 0.8}: below 2 and tied with none above 3 -> 3 / 5
    assert result["auroc"]["degraded"] == pytest.approx(3 / 5)
    assert result["lowest_share"] == {"conflict": pytest.approx(0.75), "degraded": 0.0, "all": pytest.approx(0.5)}
    assert result["perturbed_samples"] == {"conflict": 2, "degraded": 1, "all": 3}
    # One modality at a time: audio and text drop when they are the conflicting one, video rises when degraded.
    within = result["auroc_within_modality"]
    assert within["audio"]["conflict"] == within["text"]["conflict"] == 1.0 and within["video"]["conflict"] is None
    assert within["video"]["degraded"] == 0.0
    assert result["auroc_within_modality_mean"]["conflict"] == 1.0
    perfect = detection_metrics(np.where([[0, 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]], 0.1, 1.5), present,
                                modalities, ids, table)
    assert perfect["auroc"] == {"conflict": 1.0, "degraded": 1.0, "all": 1.0}
    assert perfect["lowest_share"]["all"] == 1.0


def test_identity_scales_score_chance():
    assert lowest_credit(np.ones(3), np.ones(3, bool), 1) == pytest.approx(1 / 3)
    assert lowest_credit(np.ones(3), np.array([True, True, False]), 0) == pytest.approx(1 / 2)
    result = detection_metrics(np.ones((2, 3)), np.ones((2, 3), bool), ["a", "b", "c"], ["x", "y"],
                               {"x": ("a", "conflict"), "y": ("", "clean")})
    assert result["auroc"]["all"] == 0.5 and result["lowest_share"]["all"] == pytest.approx(1 / 3)
    assert result["auroc"]["degraded"] is None  # no degraded pair: undefined, not a number


def test_read_perturbations(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("sample_id,split,modality,kind,detail\na,test,,clean,\nb,test,audio,conflict,digit=3\n")
    assert read_perturbations(path) == {"a": ("", "clean"), "b": ("audio", "conflict")}
    path.write_text("sample_id,kind\na,clean\n")
    with pytest.raises(ValueError, match="modality"):
        read_perturbations(path)


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
    result = analyse_run(analysed["reliability"], perturbations=analysed["table"], severities=(1,), tsne_points=50,
                         raw=False, progress=False)
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
    for name in ("removal", "feature_corruption", "dynamics", "tsne_fused", "tsne_audio", "instance_scales",
                 "dimension_scales"):
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
    for key, title in SECTIONS.items():
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
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
               f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=5000", "--dump-dom",
               page.resolve().as_uri()]
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
    result = CliRunner().invoke(app, ["analyse", str(analysed["root"] / "exp"), "--severities", "5",
                                      "--perturbations", str(analysed["table"]), "--tsne-points", "100"])
    assert result.exit_code == 0, result.output
    summary = json.loads((analysed["root"] / "exp" / "analysis" / "analysis.json").read_text())
    assert {r["name"] for r in summary["runs"]} == {"late-none seed 0", "late-calibration-paper seed 0",
                                                    "late-calibration-reliability seed 0"}
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
    assert "Raw-level corruption skipped: /elsewhere is not a feature store; pass --store (the store the pack was " \
           "made in)." in result["notes"]


def test_variants_need_the_feature_store_the_pack_was_made_in(tmp_path):
    from pipeline.analysis import variant_builder
    from storage.packinfo import PackInfo

    info = PackInfo(tmp_path / "store" / "packed" / "p1", "p1", "classification", ["a", "b"], {"audio": 4},
                    {"audio": "f"}, {})
    build = variant_builder(tmp_path / "manifest.csv", None, (1,), 1, False)
    with pytest.raises(ValueError, match=f"{tmp_path / 'store'} is not a feature store; pass --store"):
        build(info, ["s1"], tmp_path / "variants")


# ---- raw-level variants ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """3 bundled AV-digits clips extracted (audio and video: no text model to load) and packed."""
    from pipeline.config import EncoderChoice, ExtractConfig
    from pipeline.extract import run_extraction, selection_for
    from pipeline.manifest import read_manifest
    from storage.pack import pack

    root = tmp_path_factory.mktemp("clips")
    manifest_path = bundled_subset(root / "data", 3)
    manifest = read_manifest(manifest_path)
    config = ExtractConfig(modalities={"audio": EncoderChoice(), "video": EncoderChoice()}, num_workers=0)
    run_extraction(manifest, root / "store", config, progress=False)
    packed = pack(root / "store", manifest, selection_for(root / "store", config), progress=False)
    return {"root": root, "manifest": manifest_path, "store": root / "store", "pack": packed.path,
            "ids": [s.sample_id for s in manifest.samples]}


def test_raw_variants_reextract_only_the_corrupted_modality(clips):
    from pipeline.variants import VARIANT_MARK, build_variants, variant_id
    from storage.catalog import Catalog
    from storage.packinfo import read_pack

    store, meta = clips["store"], read_pack(clips["pack"])
    before = sorted((r["sample_id"], r["modality"], r["content_hash"], r["shard"]) for r in Catalog(store).latest())
    records = build_variants(clips["manifest"], store, meta, clips["ids"], clips["root"] / "variants",
                             kinds=["video-blur", "audio-noise", "text-drop"], severities=(4,), num_workers=0,
                             progress=False)
    assert [r["kind"] for r in records] == ["video-blur", "audio-noise"]  # no text in this pack
    done = {r["kind"]: {s["modality"]: (s["ok"], s["skipped"]) for s in r["extraction"]["modalities"]}
            for r in records}
    assert done["video-blur"] == {"video": (3, 0), "audio": (0, 3)}  # audio stays on the original clip's track
    assert done["audio-noise"] == {"audio": (3, 0), "video": (0, 3)}
    # The data set's own rows say what they said before: the variants do not replace its features. They
    # have rows of their own, under variant ids: new content for the corrupted modality, and the unchanged
    # one reusing the data set's features.
    after = Catalog(store).latest()
    assert sorted((r["sample_id"], r["modality"], r["content_hash"], r["shard"])
                  for r in after if VARIANT_MARK not in r["sample_id"]) == before
    own = {(r["sample_id"], r["modality"]): r for r in after}
    variants = {key: row for key, row in own.items() if VARIANT_MARK in key[0]}
    assert sorted(variants) == sorted((variant_id(sid, v), m) for sid in clips["ids"]
                                      for v in ("video-blur-4", "audio-noise-4") for m in ("audio", "video"))
    for sid in clips["ids"]:
        for variant, changed, kept in (("video-blur-4", "video", "audio"), ("audio-noise-4", "audio", "video")):
            assert variants[variant_id(sid, variant), changed]["content_hash"] != own[sid, changed]["content_hash"]
            reused = variants[variant_id(sid, variant), kept]
            assert (reused["content_hash"], reused["shard"], reused["member"]) == (
                own[sid, kept]["content_hash"], own[sid, kept]["shard"], sid)

    clean, blurred = packed_features(clips["pack"]), packed_features(records[0]["pack"])
    assert sorted(clean) == sorted(blurred) == sorted(clips["ids"])
    for sid in clean:
        assert np.array_equal(clean[sid]["audio"], blurred[sid]["audio"])
        assert clean[sid]["video"].shape == blurred[sid]["video"].shape
        assert not np.array_equal(clean[sid]["video"], blurred[sid]["video"])

    again = build_variants(clips["manifest"], store, meta, clips["ids"], clips["root"] / "variants",
                           kinds=["video-blur"], severities=(4,), num_workers=0, progress=False)
    assert again[0]["cached"] and again[0]["pack"] == records[0]["pack"]


def digits_subset(folder: Path, splits: list[str]) -> Path:
    """One bundled AV-digits clip of each of the first len(splits) digits, given these splits; the
    perturbation table is copied beside the manifest, as the builder writes it."""
    from pipeline.datasets.avdigits import bundled_sample_dir

    source = bundled_sample_dir()
    rows = list(csv.DictReader(open(source / "manifest.csv", newline="")))
    chosen = [next(r for r in rows if r["label"] == str(d)) for d in range(len(splits))]
    (folder / "clips").mkdir(parents=True)
    for row, split in zip(chosen, splits):
        shutil.copy2(source / row["video"], folder / row["video"])
        row["split"] = split
    with open(folder / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(chosen[0]))
        writer.writeheader()
        writer.writerows(chosen)
    shutil.copy2(source / "perturbations.csv", folder / "perturbations.csv")
    return folder / "manifest.csv"


def test_analyse_with_raw_variants_end_to_end(tmp_path):
    """Extract and pack 6 clips (audio, video), train with and without calibration, analyse with --manifest."""
    from pipeline.config import EncoderChoice, ExtractConfig
    from pipeline.extract import run_extraction, selection_for
    from pipeline.manifest import read_manifest
    from storage.pack import pack

    manifest_path = digits_subset(tmp_path / "data", ["train", "train", "train", "valid", "test", "test"])
    manifest, store = read_manifest(manifest_path), tmp_path / "store"
    config = ExtractConfig(modalities={"audio": EncoderChoice(), "video": EncoderChoice()}, num_workers=0)
    run_extraction(manifest, store, config, progress=False)
    packed = pack(store, manifest, selection_for(store, config), progress=False)
    run_experiment(ExperimentConfig(packs=[packed.path], out=tmp_path / "exp", backbones=["late"],
                                    methods=["none", "calibration"], seeds=[0],
                                    train={"epochs": 1, "batch_size": 4, "num_workers": 0, "hidden": 8}))
    run_dir = tmp_path / "exp" / packed.path.name / "late-calibration-paper" / "seed-0"
    outcome = CliRunner().invoke(app, ["analyse", str(run_dir), "--manifest", str(manifest_path), "--severities", "5",
                                       "--workers", "0", "--tsne-points", "10"])
    assert outcome.exit_code == 0, outcome.output
    result = json.loads((run_dir / "analysis" / "analysis.json").read_text())
    raw = result["raw_corruption"]
    assert set(raw["curves"]) == {"video-noise", "video-blur", "audio-noise"}
    assert raw["curves"]["audio-noise"]["severities"] == [0, 5]
    assert set(raw["curves"]["audio-noise"]["values"]) == {"calibration (paper)", "none"}
    for variant in raw["variants"]:
        changed = "audio" if variant["kind"] == "audio-noise" else "video"
        kept = "video" if changed == "audio" else "audio"
        assert variant["extraction"][changed]["ok"] == 2 and variant["extraction"][kept] == {"ok": 0, "failed": 0,
                                                                                             "skipped": 2}
    assert (run_dir / "analysis" / "variants" / "audio-noise-5" / "audio").is_dir()
    assert result["detection"]["perturbed_samples"]["all"] >= 0  # the table beside the manifest was found
    assert json.loads((run_dir / "metrics.json").read_text())["calibration_detection_lowest_share"]
    page = (run_dir / "analysis" / "report.html").read_text()
    assert "Raw-level corruption: test accuracy" in page
    assert page.count("<img ") == 6 and "Too few samples (2) for t-SNE" in page  # 2 test clips: scales, no t-SNE


def packed_features(pack_path) -> dict[str, dict[str, np.ndarray]]:
    """{sample_id: {modality: features}} of every shard of a pack."""
    from storage.npy import load_npy
    from storage.shards import read_shard

    found = {}
    for shard in sorted(Path(pack_path).glob("*.tar")):
        for sid, members in read_shard(shard):
            found[sid] = {ext.split(".")[0]: load_npy(data) for ext, data in members.items() if ext.endswith(".npy")}
    return found


def test_drop_words_keeps_one_word():
    from pipeline.variants import drop_words

    rng = np.random.default_rng(0)
    assert drop_words("the speaker said seven", 1.0, rng) in {"the", "speaker", "said", "seven"}
    assert drop_words("the speaker said seven", 0.0, rng) == "the speaker said seven"


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
