"""Adapters feeding the rest of the pipeline: MMSA feature files imported into the store, and each
layout end to end (import -> extract -> pack -> train)."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.adapters import import_dataset
from pipeline.adapters.common import DUPLICATE, LayoutError
from pipeline.adapters.mmsa_features import PickleRefused, import_and_pack, import_mmsa_features
from pipeline.config import EncoderChoice, ExtractConfig
from pipeline.extract import run_extraction, selection_for
from pipeline.manifest import read_manifest
from storage.catalog import Catalog
from storage.npy import load_npy
from storage.pack import pack
from storage.shards import read_shard
from tests.fixtures_layouts import (
    MMSA_SHAPES,
    MOSI_ROWS,
    ave_row,
    build_ave,
    build_cremad,
    build_mosi,
    build_ucf101,
    issues,
    mmsa_data,
    samples_of,
    write_pickle,
)
from trainers.config import TrainConfig
from trainers.train import train

CLASSIFICATION_METRICS = {"accuracy", "macro_f1"}
REGRESSION_METRICS = {"acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "acc5", "mae", "corr"}


def extract_pack_train(manifest: Path, store: Path, modalities: tuple[str, ...], out: Path) -> dict:
    """The whole pipeline on a manifest with the default encoders: 2 epochs of the late backbone."""
    samples = read_manifest(manifest)
    config = ExtractConfig(modalities={m: EncoderChoice() for m in modalities}, num_workers=0, batch_size=8)
    extraction = run_extraction(samples, store, config, progress=False)
    assert extraction.totals()["failed"] == 0, extraction.to_dict()
    packed = pack(store, samples, selection_for(store, config), progress=False)
    return train(
        TrainConfig(
            pack=packed.path,
            out=out,
            backbone="late",
            epochs=2,
            batch_size=4,
            num_workers=0,
            device="cpu",
            shuffle_buffer=8,
        )
    )


# ---- MMSA feature files -------------------------------------------------------------------------------


def test_mmsa_pickle_needs_the_flag_and_warns_with_it(tmp_path):
    from pipeline.cli import app

    path = write_pickle(tmp_path / "unaligned_50.pkl", mmsa_data())
    with pytest.raises(PickleRefused, match="--allow-pickle"):
        import_mmsa_features(path, tmp_path / "m.csv", tmp_path / "store")
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "store").exists()
    out, store = str(tmp_path / "m.csv"), str(tmp_path / "s")
    command = ["datasets", "import", "mmsa", str(path), "--out", out, "--store", store]
    refused = CliRunner().invoke(app, command)
    assert refused.exit_code == 2 and "can run any code" in refused.output
    allowed = CliRunner().invoke(app, [*command, "--allow-pickle"])
    assert allowed.exit_code == 0, allowed.output
    assert "warning" in allowed.output and "packed" in allowed.output and (tmp_path / "m.csv").is_file()


class Payload:
    def __reduce__(self):
        import os

        return os.getcwd, ()


def test_mmsa_loader_admits_arrays_only_even_with_the_flag(tmp_path):
    path = write_pickle(tmp_path / "bad.pkl", {"train": {"id": Payload(), "regression_labels": [0.0]}})
    with pytest.raises(LayoutError, match="refusing posix.getcwd"):
        import_mmsa_features(path, tmp_path / "m.csv", tmp_path / "store", allow_pickle=True)


def test_mmsa_features_land_in_the_store_matching_the_manifest(tmp_path):
    data = mmsa_data()
    data["valid"]["id"][0] = data["train"]["id"][0]  # a clip in two splits
    path = write_pickle(tmp_path / "MOSI" / "unaligned_50.pkl", data)
    store = tmp_path / "store"
    report = import_mmsa_features(path, tmp_path / "MOSI" / "features.csv", store, allow_pickle=True, progress=False)
    samples = samples_of(report.manifest)
    assert report.counts == {"train": 12, "valid": 3, "test": 4} and set(report.selection) == {"text", "audio", "video"}
    assert issues(report, DUPLICATE) == ["valid[0] vidtrain0$_$1"]
    first = samples["vidtrain0_1"]
    assert first.label == pytest.approx(float(data["train"]["regression_labels"][0]))
    assert first.text == str(data["train"]["raw_text"][0]) and first.video == path
    rows = {(r["sample_id"], r["modality"]): r for r in Catalog(store).latest()}
    assert len(rows) == 3 * 19 and {r["encoder"] for r in rows.values()} == {"mmsa-unaligned_50"}
    audio = dict(read_shard(store / rows[("vidtrain0_1", "audio")]["shard"]))["vidtrain0_1"]
    array = load_npy(audio["npy"])
    assert array.shape == (data["train"]["audio_lengths"][0], MMSA_SHAPES["audio"][1]) and np.isfinite(array).all()
    assert json.loads(audio["json"])["content_hash"] == rows[("vidtrain0_1", "audio")]["content_hash"]
    assert any("non-finite" in note for note in report.notes)
    parts = len(Catalog(store).parts())
    import_mmsa_features(path, tmp_path / "MOSI" / "features.csv", store, allow_pickle=True, progress=False)
    assert len(Catalog(store).parts()) == parts  # nothing written again


# ---- end to end: import -> extract -> pack -> train -------------------------------------------------


@pytest.mark.slow
def test_cremad_end_to_end(tmp_path):
    build_cremad(tmp_path / "cremad")
    report = import_dataset("cremad", tmp_path / "cremad", tmp_path / "cremad" / "e2e.csv", speaker_independent=True)
    metrics = extract_pack_train(report.manifest, tmp_path / "store", ("audio", "video"), tmp_path / "run")
    assert set(metrics["test"]) >= CLASSIFICATION_METRICS and metrics["modalities"] == ["audio", "video"]


@pytest.mark.slow
def test_ave_end_to_end_on_event_segments(tmp_path):
    rows = {
        split: [
            ave_row(c, f"{split}{c[:3]}{i}".replace(" ", ""), 0, 1) for c in ("Church bell", "Bark") for i in range(n)
        ]
        for split, n in (("train", 4), ("valid", 1), ("test", 1))
    }
    build_ave(tmp_path, rows)
    report = import_dataset("ave", tmp_path, tmp_path / "manifest.csv")
    metrics = extract_pack_train(report.manifest, tmp_path / "store", ("audio", "video"), tmp_path / "run")
    assert set(metrics["test"]) >= CLASSIFICATION_METRICS


@pytest.mark.slow
def test_mosi_end_to_end_reports_mosi_metrics(tmp_path):
    build_mosi(tmp_path, [r for r in MOSI_ROWS if r[2]])
    report = import_dataset("mosi", tmp_path, tmp_path / "manifest.csv")
    metrics = extract_pack_train(report.manifest, tmp_path / "store", ("text", "audio", "video"), tmp_path / "run")
    assert set(metrics["test"]) >= REGRESSION_METRICS and metrics["modalities"] == ["audio", "text", "video"]


@pytest.mark.slow
def test_ucf101_end_to_end_on_avi_clips(tmp_path):
    build_ucf101(tmp_path)
    report = import_dataset("ucf101", tmp_path, tmp_path / "manifest.csv")
    metrics = extract_pack_train(report.manifest, tmp_path / "store", ("audio", "video"), tmp_path / "run")
    assert set(metrics["test"]) >= CLASSIFICATION_METRICS


@pytest.mark.slow
def test_mmsa_features_import_pack_and_train(tmp_path):
    path = write_pickle(tmp_path / "unaligned_50.pkl", mmsa_data())
    report = import_and_pack(path, tmp_path / "features.csv", tmp_path / "store", allow_pickle=True, progress=False)
    info = json.loads((report.pack / "pack.json").read_text())
    assert info["task"] == "regression" and {s: v["count"] for s, v in info["splits"].items()} == report.counts
    assert {m: v["dim"] for m, v in info["modalities"].items()} == {"text": 8, "audio": 5, "video": 4}
    metrics = train(
        TrainConfig(
            pack=report.pack,
            out=tmp_path / "run",
            backbone="late",
            epochs=2,
            batch_size=4,
            num_workers=0,
            device="cpu",
            shuffle_buffer=8,
        )
    )
    assert set(metrics["test"]) >= REGRESSION_METRICS
