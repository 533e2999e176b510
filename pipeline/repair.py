"""Repair: re-extract what damaged or missing shards held, with the encoder recorded beside them.

The store is data, not code: its `encoder.json` may have been edited by anyone who could write the
store. So repair never enables `trust_remote_code` unless the user passes it on the command line,
says what it is about to load before loading it, and reads every record it needs before deleting
anything, so that a damaged record leaves the store as it found it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from extractors import DEFAULTS, Encoder
from pipeline.encoders import DTYPES, choose_spec, store_fingerprint
from pipeline.extract import extract_modality, plan
from pipeline.extract_report import ModalitySummary
from pipeline.manifest import Manifest
from storage.catalog import Catalog
from storage.layout import Store
from storage.lock import store_lock
from storage.maintenance import VerifyReport


class RepairError(RuntimeError):
    """Repair cannot start; nothing has been deleted. The message names the file and the reason."""


@dataclass
class RepairJob:
    record: Path  # features/<modality>/<fingerprint>/encoder.json
    modality: str
    name: str | None
    options: dict
    dtype: str

    @property
    def fingerprint(self) -> str:
        return self.record.parent.name

    def describe(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in sorted(self.options.items())) or "no options"
        return (
            f"{self.modality} encoder {self.name or DEFAULTS[self.modality]} with {options}, "
            f"stored as {self.dtype} "
            f"(recorded in {self.record})"
        )


def plan_repair(store: Path, report: VerifyReport, *, trust_remote_code: bool = False) -> list[RepairJob]:
    """One job per encoder whose shards are bad, read from its encoder.json; RepairError before any change."""
    records = sorted({Store(store).encoder_record_of_shard(shard) for shard in report.bad})
    return [_job(store, record, trust_remote_code) for record in records]


def repair_store(store: Path, manifest: Manifest, report: VerifyReport, jobs: list[RepairJob]) -> list[ModalitySummary]:
    with store_lock(store):
        encoders = [_encoder_for(job) for job in jobs]  # loaded and checked before anything is deleted
        for shard in report.bad:
            Store(store).shard_path(shard).unlink(missing_ok=True)  # damaged bytes must not be read again
        return [
            extract_modality(plan(manifest, store, encoder, job.dtype)[0], encoder, store, dtype=job.dtype)
            for job, encoder in zip(jobs, encoders)
        ]


def _job(store: Path, record: Path, trust_remote_code: bool) -> RepairJob:
    info = _read_record(record)
    options = dict(info["options"])
    recorded_trust = options.pop("trust_remote_code", False)
    if recorded_trust and not trust_remote_code:
        raise RepairError(
            f"{record}: these features were made with trust_remote_code=true, which runs Python code "
            f"shipped with the model ({options.get('model', 'unknown model')}); repair enables it only "
            "when you pass --trust-remote-code"
        )
    if recorded_trust:
        options["trust_remote_code"] = True
    dtype = info.get("dtype") or _dtype_of(store, record.parent.name)
    if dtype not in DTYPES:
        raise RepairError(f"{record}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return RepairJob(record, info["modality"], info["name"], options, dtype)


def _read_record(record: Path) -> dict:
    if not record.is_file():
        raise RepairError(f"{record}: no record of the encoder that made these features; run `precal extract` again")
    try:
        info = json.loads(record.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RepairError(
            f"{record}: damaged encoder record ({err}); run `precal extract` with the same encoder "
            "to extract these samples again"
        ) from None
    if not (isinstance(info, dict) and isinstance(info.get("options"), dict) and "modality" in info and "name" in info):
        raise RepairError(
            f"{record}: damaged encoder record (expected modality, name and options); run "
            "`precal extract` with the same encoder to extract these samples again"
        )
    return info


def _encoder_for(job: RepairJob) -> Encoder:
    spec = choose_spec(job.modality, job.name, job.options)
    made = store_fingerprint(spec, job.dtype)
    if made != job.fingerprint:  # features would land beside the damaged ones, not replace them
        raise RepairError(
            f"{job.record}: this encoder now has fingerprint {made}, not {job.fingerprint} (its weights, "
            "options or precal changed); run `precal extract` instead"
        )
    encoder = spec.build()
    encoder.load_model()  # a model that cannot load fails here, before any shard is deleted
    return encoder


def _dtype_of(store: Path, fingerprint: str) -> str:
    for row in Catalog(store).latest():
        if row["fingerprint"] == fingerprint and row["dtype"]:
            return row["dtype"]
    return "float16"
