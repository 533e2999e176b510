"""The orchestrated pipeline: stage skipping by content keys, chunked extraction tasks, retries, artifacts, CLI."""

import json
import shutil
from pathlib import Path

import httpx
import pytest
import yaml
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.states import Failed
from typer.testing import CliRunner

from extractors import DecodeError
from flows import extract as extract_flows
from flows.extract import GPU_LIMIT, extract_flow, gpu_slot, retry_transient
from flows.pipeline import pipeline_flow
from pipeline.cli import app
from pipeline.config import ConfigError, ExtractConfig, load_pipeline_config
from pipeline.extract_chunks import ExtractionPlan, ModalityPlan, extract_chunk, merge_summaries, plan_extraction
from pipeline.extract_report import ModalitySummary
from pipeline.manifest import read_manifest
from pipeline.stage_records import read_stages
from pipeline.stages import STAGES, StageError, experiment_for, prepare_run
from storage.catalog import Catalog
from tests.orchestration_helpers import split_subset, write_config
from trainers.config import load_experiment_config

SPLITS = {"train": 12, "valid": 6, "test": 6}


def statuses(result: dict) -> dict:
    return {r["stage"]: r["status"] for r in result["stages"]}


def edit_config(path: Path, change) -> None:
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """Text and audio of 24 AV-digits clips through every stage once (chunks of 5 samples)."""
    folder = tmp_path_factory.mktemp("pipeline")
    split_subset(folder, SPLITS)
    config = write_config(folder, {"text": {}, "audio": {"name": "logmel"}}, shard_size=5)
    return folder, pipeline_flow(str(config))


@pytest.fixture
def workdir(first_run, tmp_path):
    """A private copy of the first run's folder (manifest, clips, store, out)."""
    shutil.copytree(first_run[0], tmp_path / "w")
    return tmp_path / "w"


def test_first_run_runs_every_stage_in_chunk_tasks(first_run):
    folder, result = first_run
    assert statuses(result) == dict.fromkeys(STAGES, "ran")
    extract = result["stages"][0]["result"]
    assert extract["chunks"] == 2 * 5  # 24 samples in chunks of 5, for each of 2 modalities
    assert {m["modality"]: m["ok"] for m in extract["modalities"]} == {"text": 24, "audio": 24}
    assert {m["modality"]: m["shards_written"] for m in extract["modalities"]} == {"text": 5, "audio": 5}
    recorded = read_stages(folder / "out")
    assert {name: r["status"] for name, r in recorded["stages"].items()} == dict.fromkeys(STAGES, "ran")
    assert recorded["stages"]["pack"]["key"] == recorded["stages"]["pack"]["result"]["pack_id"]
    metrics = json.loads((folder / "out" / "metrics.json").read_text())
    assert metrics["key"] == recorded["stages"]["train"]["key"]
    (variant,) = metrics["variants"].values()  # one backbone, one method
    assert set(variant["test"]) >= {"accuracy", "macro_f1"} and variant["runs"] == 1


def test_unchanged_inputs_skip_every_stage(workdir, first_run):
    before = read_stages(workdir / "out")["stages"]
    result = pipeline_flow(str(workdir / "pipeline.yaml"))
    assert statuses(result) == dict.fromkeys(STAGES, "skipped")
    after = read_stages(workdir / "out")
    assert {s: after["stages"][s]["key"] for s in STAGES} == {s: before[s]["key"] for s in STAGES}
    assert [h["stages"] for h in after["history"]] == [dict.fromkeys(STAGES, "ran"), dict.fromkeys(STAGES, "skipped")]
    assert result["variants"] == first_run[1]["variants"]


def test_changed_training_config_retrains_only(workdir):
    before = read_stages(workdir / "out")["stages"]
    edit_config(workdir / "pipeline.yaml", lambda c: c["train"]["train"].update(epochs=2))
    result = pipeline_flow(str(workdir / "pipeline.yaml"))
    assert statuses(result) == {"extract": "skipped", "pack": "skipped", "train": "ran", "evaluate": "ran"}
    after = read_stages(workdir / "out")["stages"]
    assert after["train"]["key"] != before["train"]["key"]
    assert after["train"]["result"]["out"] != before["train"]["result"]["out"]  # a new run folder
    run = Path(after["train"]["result"]["out"])
    assert [json.loads(p.read_text())["config"]["epochs"] for p in run.rglob("metrics.json")] == [2]
    assert json.loads((workdir / "out" / "metrics.json").read_text())["key"] == after["train"]["key"]


def test_swapping_one_encoder_reextracts_only_that_modality(workdir):
    before = read_stages(workdir / "out")["stages"]
    edit_config(workdir / "pipeline.yaml", lambda c: c["extract"]["modalities"].update(audio={"name": "mfcc"}))
    result = pipeline_flow(str(workdir / "pipeline.yaml"))
    assert statuses(result) == dict.fromkeys(STAGES, "ran")
    modalities = {m["modality"]: m for m in result["stages"][0]["result"]["modalities"]}
    assert (modalities["text"]["ok"], modalities["text"]["skipped"]) == (0, 24)
    assert (modalities["audio"]["ok"], modalities["audio"]["encoder"]) == (24, "mfcc")
    assert result["stages"][1]["key"] != before["pack"]["key"]


def test_changed_transcript_reextracts_that_sample_only(workdir):
    manifest = workdir / "manifest.csv"
    lines = manifest.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",a new transcript"
    manifest.write_text("\n".join(lines) + "\n")
    result = pipeline_flow(str(workdir / "pipeline.yaml"), stages=["extract", "pack"])
    assert statuses(result) == {"extract": "ran", "pack": "ran"}
    modalities = {m["modality"]: (m["ok"], m["skipped"]) for m in result["stages"][0]["result"]["modalities"]}
    assert modalities == {"text": (1, 23), "audio": (0, 24)}


def test_stage_selection_uses_the_recorded_pack(workdir):
    result = pipeline_flow(str(workdir / "pipeline.yaml"), stages=["evaluate", "train"])
    assert statuses(result) == {"train": "skipped", "evaluate": "skipped"}
    recorded = read_stages(workdir / "out")["stages"]
    outcome = CliRunner().invoke(
        app, ["run", str(workdir / "pipeline.yaml"), "--export-experiment", str(workdir / "experiment.yaml")]
    )
    assert outcome.exit_code == 0, outcome.output
    exported = yaml.safe_load((workdir / "experiment.yaml").read_text())  # what torchrun would be given
    assert exported["packs"] == [recorded["pack"]["result"]["path"]]
    assert exported["out"] == recorded["train"]["result"]["out"]
    assert load_experiment_config(workdir / "experiment.yaml").packs == [Path(exported["packs"][0])]
    (workdir / "out" / "stages.json").unlink()
    with pytest.raises(ConfigError, match="run it first"):
        pipeline_flow(str(workdir / "pipeline.yaml"), stages=["train"])
    outcome = CliRunner().invoke(app, ["run", str(workdir / "pipeline.yaml"), "--stages", "evaluate"])
    assert outcome.exit_code == 2 and "run it first (--stages pack,evaluate)" in outcome.output, outcome.output


def artifacts_of(flow_run_id: str) -> list[dict]:
    # the REST call itself: this Prefect's client sends unset filter fields as nulls, which the server refuses
    with get_client(sync_client=True) as client:
        body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 50, "offset": 0, "sort": "CREATED_DESC"}
        response = httpx.post(f"{client.api_url}artifacts/filter", json=body)
    response.raise_for_status()
    return response.json()


def test_run_command_prints_the_stage_table_and_links_the_report(workdir):
    (workdir / "out" / "report.html").write_text("<html>report</html>")
    outcome = CliRunner().invoke(app, ["run", str(workdir / "pipeline.yaml"), "--stages", "extract,pack", "-m", "text"])
    assert outcome.exit_code == 0, outcome.output
    assert "pipeline stages" in outcome.output and "skipped" in outcome.output
    by_key = {a["key"]: a for a in artifacts_of(read_stages(workdir / "out")["history"][-1]["flow_run_id"])}
    assert {"precal-stages", "precal-report"} <= set(by_key)
    assert (workdir / "out" / "report.html").resolve().as_uri() in by_key["precal-report"]["data"]
    assert json.loads(by_key["precal-stages"]["data"])[0]["status"] == "skipped"


def test_run_command_rejects_bad_choices_before_starting(workdir):
    runner = CliRunner()
    for args, message in (
        (["--stages", "extract,deploy"], "unknown stage"),
        (["-m", "video"], "not in the config"),
        (["--runner", "ray"], "choose default or dask"),
        (["--address", "tcp://x:1"], "--runner dask"),
    ):
        outcome = runner.invoke(app, ["run", str(workdir / "pipeline.yaml"), *args])
        assert outcome.exit_code == 2 and message in outcome.output, outcome.output
    edit_config(workdir / "pipeline.yaml", lambda c: c["train"].update(packs=["x"]))
    outcome = runner.invoke(app, ["run", str(workdir / "pipeline.yaml")])
    assert outcome.exit_code == 2 and "leave out packs" in outcome.output


def test_bad_manifest_rows_are_rejected_and_the_rest_extracted(tmp_path):
    manifest = split_subset(tmp_path, {"train": 6}, media=False)
    with open(manifest, "a") as f:
        f.write("bad id!,train,1,,,some words\n")
    config = write_config(tmp_path, {"text": {}}, max_failed=0.2)
    first, again = (pipeline_flow(str(config), stages=["extract"]) for _ in range(2))
    totals = first["stages"][0]["result"]["totals"]
    assert (totals["ok"], totals["rejected_rows"]) == (6, 1)
    assert statuses(again) == {"extract": "skipped"}  # the rejected row does not fail a run with nothing new
    report = extract_flow(str(manifest), str(tmp_path / "store2"), ExtractConfig(modalities={"text": {}}))
    assert "row 7: sample_id 'bad id!'" in report["rejected"][0]


def test_too_many_rejected_rows_fail_every_run_not_only_the_first(tmp_path):
    manifest = split_subset(tmp_path, {"train": 4}, media=False)
    with open(manifest, "a") as f:
        f.write("bad id!,train,1,,,some words\n")
    config = write_config(tmp_path, {"text": {}}, max_failed=0.1)
    for _ in range(2):  # the second run has nothing new to extract and is judged the same
        with pytest.raises(StageError, match=r"20.0% of extractions failed \(above max_failed 10.0%\)"):
            pipeline_flow(str(config), stages=["extract"])
    args = ["extract", "--manifest", str(manifest), "--store", str(tmp_path / "store"), "-m", "text"]
    outcome = CliRunner().invoke(app, [*args, "--max-failed", "0.1"])
    assert outcome.exit_code == 1 and "above max_failed 10.0%" in outcome.output, outcome.output


def test_extract_command_still_works_in_chunks(tmp_path):
    manifest = split_subset(tmp_path, {"train": 7}, media=False)
    store = tmp_path / "store"
    args = ["extract", "--manifest", str(manifest), "--store", str(store), "-m", "text", "--shard-size", "3"]
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    rows = Catalog(store).latest()
    assert len(rows) == 7 and {r["status"] for r in rows} == {"ok"}
    assert len({r["shard"] for r in rows}) == 3  # one shard per chunk task


def test_pack_and_a_no_op_extract_load_no_model(tmp_path, monkeypatch):
    """Fingerprints come from the encoders' specs: only computing features loads a model."""
    import extractors.text
    from extractors import Encoder

    manifest = split_subset(tmp_path, {"train": 3}, media=False)
    store = tmp_path / "store"
    args = ["--manifest", str(manifest), "--store", str(store), "-m", "text"]
    assert CliRunner().invoke(app, ["extract", *args]).exit_code == 0
    loads = []

    def refuse(*args, **kwargs):
        loads.append(args)
        raise ValueError("a model was loaded")

    monkeypatch.setattr(Encoder, "load_model", refuse)
    monkeypatch.setattr(
        extractors.text,
        "hf_load",
        lambda auto, *a, real=extractors.text.hf_load, **kw: (
            refuse(auto) if auto == "AutoModel" else real(auto, *a, **kw)
        ),
    )
    again = CliRunner().invoke(app, ["extract", *args])
    assert again.exit_code == 0, again.output
    assert len(Catalog(store).latest()) == 3
    packed = CliRunner().invoke(app, ["pack", *args])
    assert packed.exit_code == 0, packed.output
    assert not loads and "already packed" not in packed.output


# ---- retries and the GPU slot --------------------------------------------------------------------


def test_retry_condition_skips_deterministic_errors():
    assert not retry_transient(None, None, Failed(data=DecodeError("a.mp4", "no video stream")))
    assert not retry_transient(None, None, Failed(data=ValueError("bad dtype")))
    assert retry_transient(None, None, Failed(data=OSError("stale file handle")))
    assert retry_transient(None, None, Failed(data=RuntimeError("CUDA out of memory")))


@pytest.mark.parametrize("error, tries", [(OSError("stale NFS handle"), 2), (DecodeError("x.mp4", "broken"), 1)])
def test_chunk_tasks_retry_transient_errors_only(tmp_path, monkeypatch, error, tries):
    manifest = split_subset(tmp_path, {"train": 3}, media=False)
    calls = []
    real = extract_flows.extract_chunk

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(extract_flows, "extract_chunk", flaky)
    monkeypatch.setattr(
        extract_flows, "extract_chunk_task", extract_flows.extract_chunk_task.with_options(retry_delay_seconds=0)
    )
    config = ExtractConfig(modalities={"text": {}}, num_workers=0)
    if tries == 1:
        with pytest.raises(DecodeError):
            extract_flow(str(manifest), str(tmp_path / "store"), config)
    else:
        assert extract_flow(str(manifest), str(tmp_path / "store"), config)["totals"]["ok"] == 3
    assert len(calls) == tries


def test_gpu_slot_needs_no_limit_on_the_server():
    @flow
    def hold_slots() -> bool:
        with gpu_slot("cpu"), gpu_slot("cuda:0"):  # no `precal-gpu` limit exists on this server
            return True

    assert hold_slots()


def test_gpu_slot_holds_a_slot_of_the_limit_on_cuda():
    def active_slots() -> int:
        with get_client(sync_client=True) as client:
            return client.read_global_concurrency_limit_by_name(GPU_LIMIT).active_slots

    @flow
    def occupied() -> tuple[int, int]:
        with gpu_slot("cpu"):
            on_cpu = active_slots()
        with gpu_slot("cuda"):
            return on_cpu, active_slots()

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=2))
    try:
        assert occupied() == (0, 1)
        assert active_slots() == 0
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(GPU_LIMIT)


# ---- plain functions ---------------------------------------------------------------------------


def test_chunks_cover_each_modality_in_order():
    todo = list(range(7))
    plan = ExtractionPlan(
        [ModalityPlan("text", "minilm", "f1", todo, 0), ModalityPlan("audio", "logmel", "f2", [], 3)], key="k"
    )
    chunks = plan.chunks(3)
    assert [(m.modality, i, part) for m, i, part in chunks] == [
        ("text", 0, [0, 1, 2]),
        ("text", 1, [3, 4, 5]),
        ("text", 2, [6]),
    ]
    merged = merge_summaries(
        plan.modalities[0],
        [
            ModalitySummary("text", "minilm", "f1", ok=3, failed=1, seconds=1.0, shards_written=1, errors=["x: bad"]),
            ModalitySummary("text", "minilm", "f1", ok=2, seconds=0.5, shards_written=1),
        ],
    )
    assert (merged.ok, merged.failed, merged.shards_written, merged.errors) == (5, 1, 2, ["x: bad"])
    assert merged.seconds == 1.5


def test_training_key_follows_what_is_trained(tmp_path):
    train = {"backbones": ["late"], "seeds": [0], "train": {"epochs": 3, "num_workers": 2}}
    _, key = experiment_for(train, tmp_path / "pack", "p1", tmp_path)
    how = {**train, "train": {"epochs": 3, "num_workers": 0, "device": "cpu"}}
    assert experiment_for(how, tmp_path, "p1", tmp_path)[1] == key  # workers and device change how, not what
    assert experiment_for({**train, "train": {"epochs": 4}}, tmp_path, "p1", tmp_path)[1] != key
    assert experiment_for(train, tmp_path, "p2", tmp_path)[1] != key
    experiment, _ = experiment_for(train, tmp_path / "pack", "p1", tmp_path)
    assert experiment.out == tmp_path / "runs" / key


def test_prepare_run_names_bad_training_configs(tmp_path):
    manifest = split_subset(tmp_path, {"train": 2}, media=False)
    config = load_pipeline_config(write_config(manifest.parent, {"text": {}}, train={"backbones": ["rnn"]}))
    with pytest.raises(ConfigError, match="backbones"):
        prepare_run(config, None, None)
    assert prepare_run(config, ["extract"], ["text"])[1] == ["extract"]  # training is not checked when not run


def test_plan_and_chunks_without_prefect(tmp_path):
    manifest = read_manifest(split_subset(tmp_path, {"train": 5}, media=False))
    store, config = tmp_path / "store", ExtractConfig(modalities={"text": {}}, num_workers=0)
    plan = plan_extraction(manifest, store, config)
    (text,) = plan.modalities
    with pytest.raises(ValueError, match="fingerprint"):
        extract_chunk(text.todo, store, "text", config, "0" * 16)
    summaries = [
        extract_chunk(chunk, store, "text", config, text.fingerprint, progress=False) for _, _, chunk in plan.chunks(2)
    ]
    assert [s.ok for s in summaries] == [2, 2, 1]
    again = plan_extraction(manifest, store, config)
    assert again.nothing_to_do() and again.key == plan.key and again.modalities[0].skipped == 5
