"""Planning a modality block by block while a thread hashes the next blocks' clips in a bucket.

A clip in a bucket must be fetched to be hashed before planning knows whether it needs extracting, and
on a first run that is every clip: fetched all before extraction starts, the requests (their CPU above
all: about 1 ms per GET in the S3 client, as much again in a server on the same machine) keep the
decoding cores idle for seconds. Fetched a block ahead instead, the requests for the next block overlap
the extraction of this one. Blocks are whole shards, so the store gets the same shards but for the last
of each block. Local files, and clips whose hashes are known, make one block: planning as before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

from pipeline.manifest import Manifest
from storage import remote
from storage.fingerprint import FileHashCache, source_file

BLOCK = 512  # samples per block, rounded up to whole shards


def planned_blocks(
    manifest: Manifest, modality: str, files: FileHashCache, shard_size: int, plan_block: Callable[[Manifest], tuple]
) -> Iterator[tuple]:
    """plan_block's answer for each block of the manifest, in order, once the block's clips are hashed."""
    samples = [s for s in manifest.samples if s.has(modality)]
    unknown = [f for s in samples if remote.is_remote(f := source_file(modality, s)) and files.known(f) is None]
    if not unknown:
        yield plan_block(manifest)
        return
    size = -(-max(BLOCK, shard_size) // shard_size) * shard_size
    blocks = [replace(manifest, samples=samples[i : i + size]) for i in range(0, len(samples), size)]
    hasher = _Hasher(files, [[source_file(modality, s) for s in block.samples] for block in blocks])
    try:
        for i, block in enumerate(blocks):
            hasher.wait_for(i)
            yield plan_block(block)
    finally:
        hasher.stop()


class _Hasher:
    """Hashes the blocks' files in order in a thread; a failure is raised where a block is waited for."""

    def __init__(self, files: FileHashCache, blocks: list[list]):
        self.files, self.blocks = files, blocks
        self.done = 0
        self.stopped = False
        self.failure: BaseException | None = None
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="hash-ahead", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for block in self.blocks:
                if self.stopped:
                    return
                self.files.prefetch(block)
                with self.changed:
                    self.done += 1
                    self.changed.notify_all()
        except BaseException as failure:  # raised in the planning thread by wait_for
            with self.changed:
                self.failure = failure
                self.changed.notify_all()

    def wait_for(self, block: int) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.done > block or self.failure is not None)
            if self.failure is not None:
                raise self.failure

    def stop(self) -> None:
        self.stopped = True
        self.thread.join()
