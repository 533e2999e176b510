"""The store lease on object storage (storage/lease.py), against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from storage import lease as lease_module
from storage import remote
from storage.holders import StoreLockedError
from storage.layout import Store
from storage.lease import Lease, store_lease
from storage.remote import URL

HOLDER = """
import sys
from storage.lease import store_lease
from storage.remote import location
with store_lease(location(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


def start_holder(store: URL) -> subprocess.Popen:
    """A second process holding the store's lease (its stdout says when)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def foreign_lease(store: URL, expires_in: float) -> None:
    record = {"host": "other-machine", "pid": 4242, "run_id": "abc123", "expires_at": time.time() + expires_in}
    remote.put(Store(store).lease, json.dumps(record).encode())


def test_a_second_run_stops_naming_the_holder_then_waits_for_it(s3, monkeypatch):
    store = URL(s3.new_prefix())
    holder = start_holder(store)
    try:
        with pytest.raises(StoreLockedError, match=rf"pid {holder.pid} on host {socket.gethostname()}"):
            with store_lease(store):
                pass
        refused_once = threading.Event()
        try_take = Lease._try_take

        def noting_refusals(self):
            taken = try_take(self)
            if not taken:
                refused_once.set()
            return taken

        monkeypatch.setattr(Lease, "_try_take", noting_refusals)
        holders_seen = []

        def waiting_run():
            with store_lease(store, wait=60) as key:
                holders_seen.append(json.loads(remote.read_bytes(key))["pid"])

        waiter = threading.Thread(target=waiting_run)
        waiter.start()
        assert refused_once.wait(timeout=60)  # the waiter found the holder and is polling
        holder.stdin.close()  # the holder finishes and releases
        assert holder.wait(timeout=60) == 0
        waiter.join(timeout=60)
        assert holders_seen == [os.getpid()]
    finally:
        holder.kill()
    assert not remote.exists(Store(store).lease)


def test_a_killed_holders_lease_is_taken_over_with_a_warning(s3, caplog):
    store = URL(s3.new_prefix())
    holder = start_holder(store)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with caplog.at_level(logging.WARNING, logger="storage.lease"), store_lease(store) as key:
        assert json.loads(remote.read_bytes(key))["pid"] == os.getpid()
    assert f"taking over the lease of pid {holder.pid}" in caplog.text
    assert "is no longer running" in caplog.text


def test_another_machines_lease_holds_until_it_expires(s3, caplog):
    store = URL(s3.new_prefix())
    foreign_lease(store, expires_in=120)
    with pytest.raises(StoreLockedError, match="pid 4242 on host other-machine"):
        Lease(store).take(wait=0)
    foreign_lease(store, expires_in=-1)
    with caplog.at_level(logging.WARNING, logger="storage.lease"), store_lease(store):
        pass
    assert "taking over the lease of pid 4242 on host other-machine" in caplog.text and "expired" in caplog.text


def test_renewal_extends_the_lease_and_notices_a_takeover(s3, caplog):
    store = URL(s3.new_prefix())
    mine = Lease(store, ttl=30)
    mine.take()
    first = mine.recorded()[0].expires_at
    assert mine.renew()
    assert mine.recorded()[0].expires_at > first
    foreign_lease(store, expires_in=120)  # as if this run had stalled past its expiry
    with caplog.at_level(logging.ERROR, logger="storage.lease"):
        assert not mine.renew()
    assert mine.lost_to.host == "other-machine" and "taken over by pid 4242" in caplog.text
    mine.release()  # not ours any more: left alone
    assert mine.recorded()[0].host == "other-machine"


def test_two_runs_taking_a_stale_lease_at_once_one_wins(s3):
    store = URL(s3.new_prefix())
    foreign_lease(store, expires_in=-1)
    first, second = Lease(store), Lease(store)
    stale_tag = first.recorded()[1]
    first.tag = first._write(stale_tag)
    with pytest.raises(FileExistsError):
        second._write(stale_tag)  # conditional on the stale version, which is gone
    assert first.recorded()[0].run_id == first.run_id


def test_reentrant_in_its_thread_exclusive_across_threads(s3):
    store = URL(s3.new_prefix())
    refused = []

    def other_thread():
        try:
            with store_lease(store):
                pass
        except StoreLockedError as err:
            refused.append(err)

    with store_lease(store) as key, store_lease(store) as again:
        assert key == again
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert len(refused) == 1


def test_stores_without_conditional_writes_verify_by_reading_back(monkeypatch):
    monkeypatch.setattr(lease_module, "SETTLE_S", 0.0)
    store = URL("memory://precal-lease-test")
    with store_lease(store):
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
            Lease(store).take()
    assert not remote.exists(Store(store).lease)


def test_a_held_lease_is_renewed_in_the_background(s3):
    store = URL(s3.new_prefix())
    probe = Lease(store)
    with store_lease(store, ttl=2.0):
        first = probe.recorded()[0].expires_at
        deadline = time.monotonic() + 30
        while probe.recorded()[0].expires_at == first and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the store for the renewer's write, with a deadline
        assert probe.recorded()[0].expires_at > first
