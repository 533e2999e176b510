"""A real Google Cloud Storage server for the tests: the `gcp-storage-emulator` package, which answers
the GCS JSON API that gcsfs speaks, in memory, on loopback, on a free port.

gcsfs finds it through STORAGE_EMULATOR_HOST. GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false keeps gcsfs from
asking the storage-control API (gRPC, which the emulator lacks) for each bucket's layout: a 60-second
timeout per bucket otherwise. The emulator does not check preconditions (`ifGenerationMatch`), so
precal treats gs:// as a store without conditional writes (storage/lease.py's fallback).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from tests.s3server import free_ports


def client_env(port: int) -> dict[str, str]:
    return {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def emulator_installed() -> bool:
    try:
        import gcp_storage_emulator  # noqa: F401
        import gcsfs  # noqa: F401
    except ImportError:
        return False
    return True


class GCSServer:
    def __init__(self, log_dir: Path, bucket: str = "precal", port: int | None = None):
        self.log_dir = Path(log_dir)
        self.bucket = bucket
        self.port = port or free_ports(1)[0]
        self.env = client_env(self.port)
        self.process: subprocess.Popen | None = None

    def url(self, *parts: str) -> str:
        return "/".join([f"gs://{self.bucket}", *parts])

    def new_prefix(self) -> str:
        """A fresh URL prefix in the bucket, so tests sharing one server never see each other's objects."""
        return self.url(uuid.uuid4().hex[:12])

    def start(self, timeout: float = 60.0) -> GCSServer:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_dir / "gcs-emulator.log", "wb")
        command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--default-bucket", self.bucket, "--in-memory"]
        self.process = subprocess.Popen(command, cwd=self.log_dir, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        """Poll until the emulator lists the bucket it creates at start."""
        deadline = time.monotonic() + timeout
        listing = f"http://127.0.0.1:{self.port}/storage/v1/b/{self.bucket}/o"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the GCS emulator exited with {self.process.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(listing, timeout=5):
                    return
            except OSError:  # refused while starting; a timeout is an OSError too
                time.sleep(0.2)  # polling a server that is starting up
        raise TimeoutError(f"the GCS emulator did not answer on port {self.port} within {timeout:.0f} s")

    def object_generations(self) -> dict[str, str]:
        """Every object in the bucket with its generation (a new one for each write)."""
        import fsspec

        fs = fsspec.filesystem("gs", use_listings_cache=False, skip_instance_cache=True)
        return {info["name"]: info["generation"] for info in fs.find(self.bucket, detail=True).values()}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
        if getattr(self, "log", None):
            self.log.close()
