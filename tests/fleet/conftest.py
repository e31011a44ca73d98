"""Fleet test fixtures: a private Mosquitto with dynamic security, started from deploy/mosquitto."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, run_mosquitto
from tests.deployed_broker import deployed_conf, open_ingest_gate

ROOT = Path(__file__).resolve().parents[2]
ADMIN = ("pulse-admin", "admin-secret-for-tests")
INGEST = ("pulse-ingest", "ingest-secret-for-tests")


def admin_url(port: int) -> str:
    return f"mqtt://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{port}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private Mosquitto from the deploy config, on a free loopback port, with a fresh dynsec file; its ingest gate
    is opened by the ingest account, so devices may connect."""
    tmp = tmp_path_factory.mktemp("mosquitto")
    port = free_port()
    dynsec = tmp / "dynamic-security.json"
    subprocess.run([str(ROOT / "deploy/mosquitto/init-dynsec.sh"), str(dynsec), *ADMIN], check=True,
                   capture_output=True)
    for _ in run_mosquitto(deployed_conf(tmp, port, dynsec), port):
        open_ingest_gate(port, ADMIN, INGEST)
        yield port
