"""One writer per store: an advisory file lock, released by the OS when the holder dies."""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path


class StoreLockedError(RuntimeError):
    pass


@contextmanager
def store_lock(store: Path, *, wait: float = 0.0):
    """Hold `<store>/.lock`; wait up to `wait` seconds for another writer, then stop with a clear message."""
    store.mkdir(parents=True, exist_ok=True)
    path = store / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, wait)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fd: int, path: Path, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = path.read_text().strip() or "unknown"
                raise StoreLockedError(
                    f"store {path.parent} is in use by another precal process (pid {holder}); "
                    "wait for it to finish or pass --wait SECONDS"
                ) from None
            time.sleep(0.2)  # polling an OS lock; not test synchronisation
