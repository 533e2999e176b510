"""Commands with nothing heavy to do import nothing heavy: a no-op extract answers without Prefect,
torch or transformers, and --help, status, verify and gc never need them.

Each command runs in a fresh interpreter, which then reports the modules it imported."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from extractors import EncoderSpec
from pipeline.cli import app
from pipeline.config import EncoderChoice, ExtractConfig
from pipeline.extract_chunks import nothing_to_extract
from pipeline.manifest import read_manifest
from pipeline.spec_cache import spec_for
from tests.orchestration_helpers import split_subset

ROOT = Path(__file__).resolve().parents[1]
FRESH_CLI = """
import json, sys
from pipeline.cli import app
try:
    app(sys.argv[1:], prog_name="precal")
    code = 0
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "transformers", "prefect") if m in sys.modules)}))
"""


def fresh_cli(*args: str) -> tuple[dict, str]:
    """Run `precal ARGS` in a new interpreter: (its exit code and the heavy modules it imported, its output)."""
    done = subprocess.run(
        [sys.executable, "-c", FRESH_CLI, *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    *output, last = done.stdout.strip().splitlines()
    return json.loads(last), "\n".join(output) + done.stderr


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """Three bundled clips extracted once (text with the default transformers encoder, audio)."""
    folder = tmp_path_factory.mktemp("fast")
    manifest = split_subset(folder, {"train": 3})
    store = folder / "store"
    args = [
        "extract",
        "--manifest",
        str(manifest),
        "--store",
        str(store),
        "-m",
        "text",
        "-m",
        "audio",
        "--workers",
        "0",
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    return manifest, store, args


def test_a_no_op_extract_prints_the_summary_without_prefect_torch_or_transformers(extracted):
    _, _, args = extracted
    outcome, output = fresh_cli(*args)
    assert outcome == {"code": 0, "heavy": []}, output
    assert "extraction" in output
    rows = [line for line in output.splitlines() if line.startswith("│ ")]
    assert [row.split("│")[1].strip() for row in rows] == ["text", "audio"]
    assert all(row.split("│")[5].strip() == "3" for row in rows), output  # skipped: 3 each


@pytest.mark.parametrize("command", [["--help"], ["status"], ["status", "--json"], ["verify"], ["gc", "--dry-run"]])
def test_store_commands_import_neither_torch_nor_transformers(extracted, command):
    _, store, _ = extracted
    args = command if command == ["--help"] else [*command, "--store", str(store)]
    outcome, output = fresh_cli(*args)
    assert outcome["code"] == 0, output
    assert not {"torch", "transformers"} & set(outcome["heavy"]), output


def test_a_changed_sample_is_work_for_the_flow(extracted):
    manifest, store, _ = extracted
    config = ExtractConfig(modalities={"text": EncoderChoice(), "audio": EncoderChoice()})
    report = nothing_to_extract(read_manifest(manifest, check_files=False), store, config)
    assert report is not None and report["totals"]["skipped"] == 6 and report["chunks"] == 0
    rows = list(csv.DictReader(open(manifest, newline="")))
    rows[0]["text"] += " again"
    edited = manifest.with_name("edited.csv")
    with open(edited, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert nothing_to_extract(read_manifest(edited, check_files=False), store, config) is None


class CountingBuilder:
    """Stands in for extractors.encoder_spec: counts builds; `weights` is what the spec names."""

    def __init__(self, weights: str | None):
        self.weights, self.builds = weights, 0

    def __call__(self, modality, name, **options) -> EncoderSpec:
        self.builds += 1
        return EncoderSpec(modality, name, options, {"name": name, "weights": self.weights, "n": self.builds})


def test_a_cached_spec_is_used_while_its_named_files_are_unchanged(tmp_path, monkeypatch):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"first")
    builder = CountingBuilder("sha256:local")
    monkeypatch.setattr("pipeline.spec_cache.extractors.encoder_spec", builder)
    options = {"weights": str(weights)}
    first = spec_for(tmp_path / "store", "video", "fake", options)
    again = spec_for(tmp_path / "store", "video", "fake", options)
    assert builder.builds == 1 and again == first
    weights.write_bytes(b"second, longer")
    rebuilt = spec_for(tmp_path / "store", "video", "fake", options)
    assert builder.builds == 2 and rebuilt.description["n"] == 2
    spec_for(tmp_path / "store", "video", "fake", {**options, "pooled": True})  # other options: another entry
    assert builder.builds == 3


def test_a_spec_naming_hub_weights_is_never_cached(tmp_path, monkeypatch):
    builder = CountingBuilder("hub:org/model@abc123")
    monkeypatch.setattr("pipeline.spec_cache.extractors.encoder_spec", builder)
    for _ in range(2):
        spec_for(tmp_path / "store", "text", "hf", {"model": "org/model"})
    assert builder.builds == 2


def test_a_damaged_spec_cache_only_costs_a_rebuild(tmp_path, monkeypatch):
    builder = CountingBuilder(None)
    monkeypatch.setattr("pipeline.spec_cache.extractors.encoder_spec", builder)
    (tmp_path / "store" / "cache").mkdir(parents=True)
    (tmp_path / "store" / "cache" / "encoder_specs.json").write_text("{not json")
    assert spec_for(tmp_path / "store", "audio", "logmel", {}).description["n"] == 1
    assert spec_for(tmp_path / "store", "audio", "logmel", {}).description["n"] == 1
