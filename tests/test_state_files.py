"""The store's state files are written whole or not at all, and a torn one is mended, not trusted."""

import json
import os

import pytest

from pipeline.config import EncoderChoice, ExtractConfig
from pipeline.extract import run_extraction
from pipeline.manifest import read_manifest
from storage.atomic import write_bytes_atomic, write_json_atomic
from storage.layout import TMP_MARK
from tests.helpers import bundled_subset


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"version": 1})

    def disk_error(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", disk_error)
    with pytest.raises(OSError):
        write_bytes_atomic(path, b'{"version": 2}')
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_nan_is_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "metrics.json"
    with pytest.raises(ValueError):
        write_json_atomic(path, {"loss": float("nan")})
    assert not path.exists() and not any(TMP_MARK in p.name for p in tmp_path.iterdir())


def test_a_torn_encoder_record_is_rewritten_with_its_dtype(tmp_path):
    manifest = read_manifest(bundled_subset(tmp_path / "data", 3))
    config = ExtractConfig(modalities={"audio": EncoderChoice(name="logmel")}, num_workers=0)
    store = tmp_path / "store"
    run_extraction(manifest, store, config, progress=False)
    (record,) = store.glob("features/audio/*/encoder.json")
    whole = record.read_text()
    assert json.loads(whole)["dtype"] == "float16" and json.loads(whole)["name"] == "logmel"
    record.write_text(whole[: len(whole) // 2])  # a crash of an older version, or a disk that lost the tail
    again = run_extraction(manifest, store, config, progress=False)
    assert again.totals()["skipped"] == 3  # the features were intact: nothing is extracted again
    assert record.read_text() == whole


def test_a_torn_encoder_record_is_named_when_variants_read_it(tmp_path):
    from pipeline.variants import extraction_config_for

    record = tmp_path / "features" / "audio" / "0123" / "encoder.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"modality": "audio", "na')
    with pytest.raises(ValueError, match="encoder.json is damaged"):
        extraction_config_for(tmp_path, {"audio": "0123"})
