"""Issue 12, the extraction/store half, processes that die or stop: a killed extraction leaves no worker
and no lock, the lock is taken over only from a dead holder, and a full disk stops the run cleanly."""

import errno
import fcntl
import logging
import multiprocessing
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import EncoderChoice, ExtractConfig
from pipeline.extract import run_extraction
from pipeline.manifest import read_manifest
from storage.lock import StoreLockedError, store_lock
from storage.shards import StoreFullError
from tests.helpers import bundled_subset

ROOT = Path(__file__).resolve().parents[1]


# ---- 2: the store lock and killed extractions ----------------------------------------------------

HOLD_AND_HANG = """
import os, pathlib, sys
from extractors.base import Encoder
from extractors.extract import extract_features
from pipeline.manifest import Sample
from storage.lock import store_lock


class Hang:
    def __init__(self, report, never):
        self.report, self.never = report, never

    def __call__(self, sample):
        with open(self.report, "w") as out:
            out.write(f"{os.getpid()}\\n")
        open(self.never).read()  # a FIFO no one writes to: blocks forever, like a worker stuck on its queue


class HangEncoder(Encoder):
    modality, name = "audio", "hang"

    def __init__(self, report, never):
        super().__init__()
        self.loader = Hang(report, never)


if __name__ == "__main__":
    store, report, never = sys.argv[1:]
    with store_lock(pathlib.Path(store)):
        sample = Sample("a", "train", 0, audio=pathlib.Path("a.wav"))
        list(extract_features([sample], HangEncoder(report, never), num_workers=1))
"""


def exits_within(pid: int, seconds: float) -> bool:
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([handle], [], [], seconds)[0])
    finally:
        os.close(handle)


@pytest.mark.timeout(120)
def test_sigkill_of_extract_leaves_no_worker_and_no_lock(tmp_path, caplog):
    script, report, never = tmp_path / "hold_and_hang.py", tmp_path / "report", tmp_path / "never"
    script.write_text(HOLD_AND_HANG)
    os.mkfifo(report)
    os.mkfifo(never)
    store = tmp_path / "store"
    main = subprocess.Popen(
        [sys.executable, str(script), str(store), str(report), str(never)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    with open(report) as reports:  # opens once the decoding worker runs (and is about to block)
        worker = int(reports.readline())
    main.kill()  # what the OOM killer does
    main.wait()
    assert exits_within(worker, 30), "the decoding worker outlived its killed parent"
    with caplog.at_level(logging.WARNING), store_lock(store):
        pass
    assert not caplog.records  # free on its own, not by a takeover


def test_forked_children_do_not_hold_the_lock(tmp_path):
    read_end, write_end = os.pipe()
    ready_r, ready_w = os.pipe()
    with store_lock(tmp_path):
        child = os.fork()
        if child == 0:  # outlives the lock's holder
            os.write(ready_w, b"r")  # fork hooks have run: the inherited lock descriptor is closed
            os.read(read_end, 1)
            os._exit(0)
        os.read(ready_r, 1)
    try:
        with store_lock(tmp_path):
            pass
    finally:
        os.write(write_end, b"x")
        os.waitpid(child, 0)


def test_lock_held_for_a_dead_pid_is_taken_over_with_a_warning(tmp_path, caplog):
    gone = subprocess.Popen(["true"])
    gone.wait()
    leftover = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)  # as a worker of a killed holder keeps it
    try:
        fcntl.flock(leftover, fcntl.LOCK_EX)
        os.write(leftover, f"{gone.pid}\n".encode())
        with caplog.at_level(logging.WARNING), store_lock(tmp_path):
            pass
        assert f"pid {gone.pid}" in caplog.text and "taking the lock over" in caplog.text
    finally:
        os.close(leftover)


def test_lock_of_a_live_holder_is_not_taken_over(tmp_path):
    holder = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        os.write(holder, f"{os.getpid()}\n".encode())
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}.*{tmp_path / '.lock'}"):
            with store_lock(tmp_path):
                pass
    finally:
        os.close(holder)


# ---- 14: a full disk ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_full_disk_stops_the_run_and_closes_the_workers(tmp_path, monkeypatch):
    import storage.shards

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.shards, "_add_member", full)
    manifest = read_manifest(bundled_subset(tmp_path / "data", 3))
    config = ExtractConfig(modalities={"audio": EncoderChoice()}, num_workers=1, shard_size=1)
    with pytest.raises(StoreFullError, match="no space left on the store's device while writing .*shard") as caught:
        run_extraction(manifest, tmp_path / "store", config, progress=True)  # as in flows: a bar keeps its iterable
    assert caught.value.__traceback__ is not None  # the traceback (and the frames it holds) is still alive
    assert not multiprocessing.active_children(), "a decoding worker outlived the failed extraction"


class FakeChunk:
    def __init__(self, outcome):
        self.outcome, self.cancelled = outcome, False
        self.wrapped_future = self

    def wait(self):
        pass

    def result(self, raise_on_failure=True):
        return self.outcome

    def cancel(self):
        self.cancelled = True


def test_full_disk_cancels_the_chunks_not_started_and_is_not_retried():
    from flows.extract import retry_transient, wait_for_chunks

    full = StoreFullError(errno.ENOSPC, "no space left")
    chunks = [FakeChunk("ok"), FakeChunk(full), FakeChunk("ok"), FakeChunk("ok")]
    with pytest.raises(StoreFullError):
        wait_for_chunks(chunks)
    assert [c.cancelled for c in chunks] == [False, False, True, True]
    assert not retry_transient(None, None, type("State", (), {"data": full})())
