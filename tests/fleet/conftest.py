"""Fleet test fixtures: a private Mosquitto with dynamic security, started from deploy/mosquitto."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import free_port, run_mosquitto
from tests.deployed_broker import deployed_conf, open_ingest_gate

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
    for _ in run_mosquitto(deployed_conf(tmp, port, ADMIN), port):
        open_ingest_gate(port, ADMIN, INGEST)
        yield port
