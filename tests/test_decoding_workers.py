"""Decoding workers are started once per run: chunks inside `reused_decoding_workers()` share them, and
none outlives the block (or, outside it, the call)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from extractors import extract as extract_module
from extractors import extract_features, get_encoder
from extractors.extract import reused_decoding_workers
from pipeline.manifest import Sample
from tests.helpers import assert_features_agree


@pytest.fixture(scope="module")
def clips(shared_data) -> list[Sample]:
    paths = sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))[:12]
    return [Sample(f"s{i}", "train", "0", audio=Path(p)) for i, p in enumerate(paths)]


def worker_pids() -> set[int]:
    """The pids of the kept (idle) decoding workers, if any."""
    return {w.pid for loader in extract_module._idle for w in loader._iterator._workers}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


def features_of(chunk, encoder, workers):
    return {s.sample_id: f.array for s, f in extract_features(chunk, encoder, num_workers=workers, batch_size=4)}


def test_chunks_of_a_run_share_one_set_of_workers_and_none_outlives_it(clips):
    encoder = get_encoder("audio")
    expected = features_of(clips, encoder, workers=0)
    found, seen = {}, []
    with reused_decoding_workers():
        for chunk in (clips[:5], clips[5:9], clips[9:]):
            found.update(features_of(chunk, encoder, workers=2))
            seen.append(worker_pids())
    assert len(seen[0]) == 2 and seen[0] == seen[1] == seen[2]
    assert not extract_module._idle and not any(alive(pid) for pid in seen[0])
    assert sorted(found) == sorted(expected)
    for sample_id, array in expected.items():
        assert_features_agree(found[sample_id], array)


def test_outside_a_run_a_call_keeps_no_workers(clips):
    encoder = get_encoder("audio")
    features_of(clips[:4], encoder, workers=2)
    assert not extract_module._idle


def test_a_call_closed_early_stops_its_workers_even_inside_a_run(clips):
    encoder = get_encoder("audio")
    with reused_decoding_workers():
        stream = extract_features(clips, encoder, num_workers=2, batch_size=2)
        next(stream)
        running = stream.gi_frame.f_locals["loader"]._iterator._workers  # the generator's own loader
        pids = [w.pid for w in running]
        stream.close()
        assert not extract_module._idle and len(pids) == 2
        assert not any(alive(pid) for pid in pids)
