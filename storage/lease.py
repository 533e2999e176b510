"""One writer per store on object storage, where no file lock works: a lease object.

The lease object (Store.lease, `<store>/.lease.json`) names its holder (host, pid, run id) and an
expiry on the wall clock. It is taken with a create-only PUT (If-None-Match: *), renewed by a
background thread every quarter of its lifetime with a PUT conditional on the version this run wrote
last (If-Match), and deleted at the end. A second run finds it and stops, or polls up to `wait`
seconds, naming the holder. A lease is stale when it expired (its holder stopped renewing: killed, or
its machine lost), or when its holder ran on this machine and that process is gone; a stale lease is
taken over, with a warning naming the old holder, by a PUT conditional on the stale version, so of two
runs taking it over at once one wins.

Stores without conditional PUTs (not in remote.ATOMIC_CREATE) get a fallback: write, wait SETTLE_S,
read back, and count the lease as taken only if it still names this run; renewals there are plain
PUTs. Two runs writing within SETTLE_S of each other are told apart by the read-back; a store slower
than that can still let both through. Either way the store's data stays sound: shards and catalog
parts have unique names, so two writers at worst extract a sample twice and the newest catalog row
wins. Expiry compares the wall clocks of different machines: keep them in sync (NTP) to well under
the lease's lifetime.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from storage import remote
from storage.holders import StoreLockedError, alive
from storage.layout import Store
from storage.remote import URL

log = logging.getLogger(__name__)

LEASE_TTL_S = 60.0
SETTLE_S = 1.0  # fallback only: how long a written lease must survive before it counts as taken
POLL_S = 1.0


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    run_id: str
    expires_at: float  # seconds since the epoch

    def describe(self) -> str:
        until = datetime.fromtimestamp(self.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"pid {self.pid} on host {self.host} (run {self.run_id}, lease valid until {until})"

    def stale(self) -> bool:
        return time.time() > self.expires_at or (self.host == socket.gethostname() and not alive(self.pid))


def _decode(data: bytes) -> Holder | None:
    try:
        fields = json.loads(data)
        return Holder(str(fields["host"]), int(fields["pid"]), str(fields["run_id"]), float(fields["expires_at"]))
    except (ValueError, KeyError, TypeError):
        return None


class Lease:
    """This run's claim on a store's lease object."""

    def __init__(self, store: URL, ttl: float = LEASE_TTL_S):
        self.store = store
        self.key = Store(store).lease
        self.ttl = ttl
        self.run_id = uuid.uuid4().hex[:12]
        self.atomic = self.key.protocol in remote.ATOMIC_CREATE
        self.tag: str | None = None  # the version this run wrote last
        self.lost_to: Holder | None = None

    def take(self, wait: float = 0.0) -> None:
        """Take the lease, polling up to `wait` seconds while another run holds it."""
        deadline = time.monotonic() + wait
        while not self._try_take():
            holder, _ = self.recorded()
            if time.monotonic() >= deadline:
                who = holder.describe() if holder else "another run"
                raise StoreLockedError(
                    f"store {self.store} is in use by another precal run: {who} (lease "
                    f"object {self.key}); wait for it to finish or pass --wait SECONDS"
                )
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))  # polling a remote object

    def renew(self) -> bool:
        """Extend the lease; False (and an error logged) when another run has taken it over."""
        try:
            self.tag = self._write(self.tag if self.atomic else "")
        except FileExistsError:
            self.lost_to = self.recorded()[0]
            log.error(
                "store %s: this run's lease was taken over by %s after this run stopped renewing it for "
                "longer than %.0f s; another run may now write the store too",
                self.store,
                self.lost_to.describe() if self.lost_to else "another run",
                self.ttl,
            )
            return False
        return True

    def keep_renewing(self, stop: threading.Event) -> None:
        while not stop.wait(self.ttl / 4):
            if not self.renew():
                return

    def release(self) -> None:
        """Delete the lease if it is still this run's."""
        holder, _ = self.recorded()
        if holder is not None and holder.run_id == self.run_id:
            remote.remove(self.key)

    def recorded(self) -> tuple[Holder | None, str | None]:
        """The holder the lease object names and its version tag; (None, None) when there is none."""
        tag = remote.etag(self.key)
        try:
            data = remote.read_bytes(self.key)
        except FileNotFoundError:
            return None, None
        return _decode(data), tag or ""

    def _try_take(self) -> bool:
        holder, tag = self.recorded()
        if tag is not None and holder is not None and not holder.stale():
            return False
        if tag is not None:
            log.warning(
                "store %s: taking over the lease of %s, which %s",
                self.store,
                holder.describe() if holder else f"an unreadable lease object {self.key}",
                "expired"
                if holder is None or time.time() > holder.expires_at
                else "ran on this machine and is no longer running",
            )
        try:
            self.tag = self._write(tag) or remote.etag(self.key)
        except FileExistsError:
            return False  # another run wrote first
        return self.atomic or self._survives()

    def _write(self, previous: str | None) -> str | None:
        """Write this run's claim: create it (`previous` None) or replace the version `previous` names.
        FileExistsError when another run's write came first."""
        claim = Holder(socket.gethostname(), os.getpid(), self.run_id, time.time() + self.ttl)
        data = json.dumps(asdict(claim)).encode()
        if previous is None:
            return remote.put_once(self.key, data)
        if self.atomic and previous:
            return remote.put_if_unchanged(self.key, data, previous)
        return remote.put(self.key, data)

    def _survives(self) -> bool:
        """Fallback: the claim still names this run once a racing writer has had time to land."""
        time.sleep(SETTLE_S)
        holder, _ = self.recorded()
        return holder is not None and holder.run_id == self.run_id


_held: dict[URL, tuple[int, Lease]] = {}  # store -> (holding thread, lease) in this process


def _forget_in_child() -> None:
    _held.clear()  # a forked child holds nothing: its parent renews and releases


os.register_at_fork(after_in_child=_forget_in_child)


@contextmanager
def store_lease(store: URL, *, wait: float = 0.0, ttl: float = LEASE_TTL_S):
    """Hold the store's lease, as storage.lock.store_lock holds a local store's lock file.

    Re-entrant in the thread that holds it; other threads and processes are kept out."""
    if store in _held and _held[store][0] == threading.get_ident():
        yield _held[store][1].key
        return
    lease = Lease(store, ttl)
    lease.take(wait)
    _held[store] = (threading.get_ident(), lease)
    stop = threading.Event()
    renewer = threading.Thread(target=lease.keep_renewing, args=(stop,), daemon=True, name="precal-lease")
    renewer.start()
    try:
        yield lease.key
    finally:
        stop.set()
        renewer.join()
        del _held[store]
        lease.release()
