"""Planning block by block while the next blocks' clips in a bucket are hashed: blocks come in order and
whole shards, planning a block does not wait for later blocks, a hashing failure reaches the planner, and
local or already hashed clips make a single block."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline import hash_ahead
from pipeline.hash_ahead import planned_blocks
from pipeline.manifest import Manifest, Sample
from storage.remote import URL


class Hashes:
    """The two calls planned_blocks makes of a FileHashCache; `prefetch` runs `on_prefetch` first."""

    def __init__(self, on_prefetch=lambda files: None):
        self.on_prefetch = on_prefetch
        self.hashed: list[str] = []

    def known(self, file):
        return None

    def prefetch(self, files):
        self.on_prefetch(files)
        self.hashed += [str(f) for f in files]


def manifest(count: int, remote: bool = True) -> Manifest:
    media = (lambda i: URL(f"s3://bucket/clips/{i}.mp4")) if remote else (lambda i: Path(f"/data/{i}.mp4"))
    return Manifest(Path("m.csv"), Path("."), [Sample(f"s{i}", "train", 0, video=media(i)) for i in range(count)])


def ids(block: Manifest) -> list[str]:
    return [s.sample_id for s in block.samples]


def test_blocks_are_whole_shards_in_order_and_every_clip_is_hashed_once(monkeypatch):
    monkeypatch.setattr(hash_ahead, "BLOCK", 5)
    files = Hashes()
    blocks = list(planned_blocks(manifest(14), "video", files, 3, ids))
    assert [len(b) for b in blocks] == [6, 6, 2]  # 5 rounded up to whole shards of 3
    assert sum(blocks, []) == [f"s{i}" for i in range(14)]
    assert files.hashed == [f"s3://bucket/clips/{i}.mp4" for i in range(14)]


def test_a_block_is_planned_before_the_later_ones_are_hashed(monkeypatch):
    monkeypatch.setattr(hash_ahead, "BLOCK", 2)
    first_planned = threading.Event()

    def later_blocks_wait(files):
        if "s3://bucket/clips/0.mp4" not in {str(f) for f in files}:
            assert first_planned.wait(60), "planning waited for every block to be hashed"

    def plan(block):
        first_planned.set()
        return ids(block)

    assert len(list(planned_blocks(manifest(6), "video", Hashes(later_blocks_wait), 2, plan))) == 3


def test_a_hashing_failure_is_raised_to_the_planner(monkeypatch):
    monkeypatch.setattr(hash_ahead, "BLOCK", 2)

    def unreadable(files):
        raise PermissionError("s3://bucket/clips: access denied")

    with pytest.raises(PermissionError, match="access denied"):
        list(planned_blocks(manifest(6), "video", Hashes(unreadable), 2, ids))


def test_local_or_hashed_clips_make_one_block(monkeypatch):
    monkeypatch.setattr(hash_ahead, "BLOCK", 2)
    assert list(planned_blocks(manifest(6, remote=False), "video", Hashes(), 2, ids)) == [ids(manifest(6))]
    known = Hashes()
    known.known = lambda file: "0" * 64
    assert list(planned_blocks(manifest(6), "video", known, 2, ids)) == [ids(manifest(6))]
    assert known.hashed == []
