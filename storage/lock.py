"""One writer per store: an advisory file lock, released by the OS when the holder dies.

A flock belongs to the open file, so a process forked while the lock is held (a decoding worker)
would hold it too, and keep the store locked after its parent is killed. Forked children therefore
close the lock's descriptor at once; and a lock whose recorded holder is dead (left by such a child
of an older version) is taken over, with a warning, by replacing the lock file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from storage import remote
from storage.holders import StoreLockedError, alive
from storage.layout import Store
from storage.lease import store_lease
from storage.remote import location

log = logging.getLogger(__name__)

_held: dict[Path, tuple[int, int]] = {}  # store -> (holding thread, lock descriptor) in this process


def _close_in_child() -> None:
    # Closing a duplicate does not release the parent's lock (it is released when the last copy closes).
    for _, fd in _held.values():
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


@contextmanager
def store_lock(store: Path, *, wait: float = 0.0):
    """Hold `<store>/.lock`; wait up to `wait` seconds for another writer, then stop with a clear message.
    A store on an object store (a URL) is held by its lease instead (storage/lease.py).

    Re-entrant in the thread that holds it (a flow holding the lock may call pack, which takes it);
    other threads and processes are kept out."""
    store = location(store)
    if remote.is_remote(store):
        with store_lease(store, wait=wait) as lease:
            yield lease
        return
    store.mkdir(parents=True, exist_ok=True)
    path = Store(store).lock
    key = store.resolve()
    if key in _held and _held[key][0] == threading.get_ident():
        yield path
        return
    fd = _acquire(path, wait)
    _held[key] = (threading.get_ident(), fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield path
    finally:
        del _held[key]
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(path: Path, wait: float) -> int:
    """A descriptor of the lock file at `path`, locked."""
    deadline = time.monotonic() + wait
    while True:
        fd = _try_lock(path)
        if fd is not None:
            return fd
        if _take_over_if_stale(path):
            continue
        if time.monotonic() >= deadline:
            pid, _ = _holder(path)
            raise StoreLockedError(
                f"store {path.parent} is in use by another precal process (pid {pid or 'unknown'}, lock file "
                f"{path}); wait for it to finish or pass --wait SECONDS"
            )
        time.sleep(0.2)  # polling an OS lock; not test synchronisation


def _try_lock(path: Path) -> int | None:
    """A locked descriptor of the file now at `path`, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if _same_file(fd, path):
        return fd
    os.close(fd)  # a takeover replaced the file after we opened it: lock the new one
    return _try_lock(path)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _holder(path: Path) -> tuple[int | None, str | None]:
    """(pid, host) recorded by the holder; host None for files from versions that wrote the pid only."""
    try:
        fields = path.read_text().split()
    except OSError:
        return None, None
    if not fields or not fields[0].isdigit():
        return None, None
    return int(fields[0]), fields[1] if len(fields) > 1 else None


def _take_over_if_stale(path: Path) -> bool:
    """Replace the lock file when its recorded holder is a dead process on this machine.

    Takeovers are serialised by a lock on the store folder, so two of them cannot both unlink: only
    the file whose holder was found dead is removed, and every locker re-checks it locked the file
    still at `path`.
    """
    guard = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        fd = _try_lock(path)
        if fd is not None:  # freed meanwhile: nothing to take over
            os.close(fd)
            return True
        pid, host = _holder(path)
        if pid is None or (host is not None and host != socket.gethostname()) or alive(pid):
            return False
        log.warning(
            "store %s: the lock file %s names pid %d, which is no longer running, yet the lock is still "
            "held (by a process it left behind); taking the lock over",
            path.parent,
            path,
            pid,
        )
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(guard)
