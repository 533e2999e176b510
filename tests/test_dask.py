"""Extraction on a Dask cluster (2 worker processes) gives the same store as extraction in-process: the same
catalog, and features equal within float16 resolution (other processes may sum in another order)."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from distributed import LocalCluster

from flows.extract import extract_flow, task_runner
from pipeline.config import ExtractConfig
from storage.catalog import Catalog
from tests.helpers import assert_features_agree
from tests.orchestration_helpers import split_subset

pytestmark = pytest.mark.slow

COMPARED = ("status", "error", "shape", "dtype", "content_hash", "encoder", "fingerprint")


def catalog_by_key(store: Path) -> dict:
    return {(r["sample_id"], r["modality"]): {k: r[k] for k in COMPARED} for r in Catalog(store).latest()}


def arrays(store: Path) -> dict:
    """{(sample_id, modality): (array, metadata)} from every feature shard of the store."""
    found = {}
    for shard in store.glob("features/*/*/*.tar"):
        modality = shard.parts[-3]
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        for name, data in members.items():
            if name.endswith(".npy"):
                sid = name[:-4]
                found[sid, modality] = (
                    np.load(io.BytesIO(data), allow_pickle=False),
                    json.loads(members[f"{sid}.json"]),
                )
    return found


def test_dask_runner_yields_the_same_store(tmp_path):
    manifest = split_subset(tmp_path / "data", {"train": 4, "valid": 1, "test": 1})
    config = ExtractConfig(shard_size=2, num_workers=1)  # text, audio, video; 3 chunks each
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        on_dask = extract_flow.with_options(task_runner=task_runner("dask", cluster.scheduler_address))
        report = on_dask(str(manifest), str(tmp_path / "dask"), config, progress=False)
        workers = len(cluster.scheduler_info["workers"])
    local = extract_flow(str(manifest), str(tmp_path / "local"), config)
    assert workers == 2 and report["chunks"] == local["chunks"] == 9
    assert report["key"] == local["key"]
    assert report["totals"] == local["totals"] and (report["totals"]["ok"], report["totals"]["failed"]) == (18, 0)
    assert catalog_by_key(tmp_path / "dask") == catalog_by_key(tmp_path / "local")
    on_cluster, in_process = arrays(tmp_path / "dask"), arrays(tmp_path / "local")
    assert on_cluster.keys() == in_process.keys() and len(on_cluster) == 18
    for key, (array, meta) in in_process.items():
        assert on_cluster[key][1] == meta
        assert_features_agree(on_cluster[key][0], array, err_msg=str(key))
