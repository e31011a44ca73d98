"""A Mosquitto of the test's own from deploy/mosquitto/mosquitto.conf (dynamic security, persistence in a temporary
directory, a free loopback port) that the test may stop and start again, with the accounts Pulse needs."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pulse.fleet.broker_accounts import BrokerAdmin
from tests.conftest import free_port
from tests.deployed_broker import deployed_conf

ADMIN = ("pulse-admin", "faults-admin-secret")


class PrivateBroker:
    """Start, stop (SIGTERM: Mosquitto saves its persistence file) and start again on the same port and files."""

    def __init__(self) -> None:
        binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
        if binary is None or shutil.which("mosquitto_ctrl") is None:
            pytest.skip("mosquitto and mosquitto_ctrl are installed by `make test`")
        self.binary = binary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pulse-faults-mqtt-"))
        self.log = self.root / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = deployed_conf(self.root, self.port, ADMIN)
        assert "persistence true" in self.conf.read_text()

    @property
    def admin_url(self) -> str:
        return f"mqtt://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{self.port}"

    def url(self, username: str, password: str) -> str:
        return f"mqtt://{username}:{password}@127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None, "already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"mosquitto did not start:\n{self.log_tail()}")

    def stop(self) -> None:
        """A clean stop: Mosquitto writes its in-memory state (sessions, queued messages) to mosquitto.db."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
            self.proc = None

    def destroy(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def account(self, username: str, acls: list[dict[str, Any]]) -> tuple[str, str]:
        """A client with its own role holding `acls`; returns (username, password)."""
        password = secrets.token_urlsafe(16)
        async with BrokerAdmin(self.admin_url) as admin:
            await admin.execute([{"command": "createRole", "rolename": f"role-{username}", "acls": acls}])
            await admin.execute([{"command": "createClient", "username": username, "password": password,
                                  "roles": [{"rolename": f"role-{username}"}]}])
        return username, password

    async def ingest_account(self) -> tuple[str, str]:
        password = secrets.token_urlsafe(16)
        async with BrokerAdmin(self.admin_url) as admin:
            await admin.ensure_ingest_account("pulse-ingest", password)
        return "pulse-ingest", password


def publisher_acls(tenant_id: str) -> list[dict[str, Any]]:
    """A gateway or the simulator: publishes for every device of one tenant."""
    return [{"acltype": "publishClientSend", "topic": f"tenant/{tenant_id}/device/+/#", "allow": True}]


@pytest.fixture
def private_broker() -> Iterator[PrivateBroker]:
    broker = PrivateBroker()
    try:
        broker.start()
        yield broker
    finally:
        broker.destroy()
