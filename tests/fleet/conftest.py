"""Fleet test fixtures: a private Mosquitto with dynamic security, started from deploy/mosquitto."""

from __future__ import annotations

import getpass
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, run_mosquitto

ROOT = Path(__file__).resolve().parents[2]
ADMIN = ("pulse-admin", "admin-secret-for-tests")
INGEST = ("pulse-ingest", "ingest-secret-for-tests")


def admin_url(port: int) -> str:
    return f"mqtt://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{port}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private Mosquitto from the deploy config, on a free loopback port, with a fresh dynsec file."""
    tmp = tmp_path_factory.mktemp("mosquitto")
    port = free_port()
    dynsec = tmp / "dynamic-security.json"
    subprocess.run([str(ROOT / "deploy/mosquitto/init-dynsec.sh"), str(dynsec), *ADMIN], check=True,
                   capture_output=True)
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    conf = (conf.replace("listener 1883", f"listener {port} 127.0.0.1")
            .replace("/mosquitto/config/dynamic-security.json", str(dynsec))
            .replace("persistence_location /mosquitto/data/", f"persistence_location {tmp}/"))
    conf += f"\n# the test's files belong to the test's user; run the broker as that user\nuser {getpass.getuser()}\n"
    (tmp / "mosquitto.conf").write_text(conf)
    for _ in run_mosquitto(tmp / "mosquitto.conf", port):
        yield port
