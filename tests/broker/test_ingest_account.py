"""deploy/mosquitto/create-ingest-account.sh gives `pulse ingest` the account Pulse's code expects."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from pulse.fleet.broker_accounts import INGEST_ACLS, INGEST_ROLE, BrokerAdmin
from tests.broker.conftest import ADMIN, NOT_AUTHORISED, Peer, connect_error, requires_mosquitto

pytestmark = requires_mosquitto

SCRIPT = Path(__file__).resolve().parents[2] / "deploy/mosquitto/create-ingest-account.sh"
USERNAME = "pulse-ingest"


async def _run_script(port: int, ingest_password: str, admin_password: str = ADMIN[1]
                      ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BROKER_PORT": str(port), "ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": admin_password,
           "INGEST_USERNAME": USERNAME, "INGEST_PASSWORD": ingest_password}
    return await asyncio.to_thread(subprocess.run, [str(SCRIPT)], env=env, capture_output=True, text=True,
                                   timeout=30, check=False)


async def test_the_script_creates_an_ingest_account_that_reads_every_device_and_publishes_nowhere(
        broker: int, admin: BrokerAdmin) -> None:
    done = await _run_script(broker, "first-ingest-password")
    assert done.returncode == 0, done.stderr
    role = (await admin.execute([{"command": "getRole", "rolename": INGEST_ROLE}]))[0]["data"]["role"]
    assert sorted((a["acltype"], a["topic"], a["allow"]) for a in role["acls"]) == \
        sorted((a["acltype"], a["topic"], a["allow"]) for a in INGEST_ACLS)

    await admin.ensure_device("acme", "meter-1", "acme/meter-1", "meter-password-0123")
    ingest = await Peer("ingest").connect(broker, USERNAME, "first-ingest-password")
    device = await Peer("device").connect(broker, "acme/meter-1", "meter-password-0123")
    try:
        assert await ingest.subscribe("#") == NOT_AUTHORISED
        assert await ingest.subscribe("$share/pulse-ingest/tenant/+/device/+/+") == 1
        assert await device.publish("tenant/acme/device/meter-1/telemetry", b'{"seq": 7}') == 0
        assert await ingest.next_message() == ("tenant/acme/device/meter-1/telemetry", b'{"seq": 7}')
        assert await ingest.publish("tenant/acme/device/meter-1/command/reset", b"{}") == NOT_AUTHORISED
    finally:
        await device.close()
        await ingest.close()


async def test_running_the_script_again_changes_the_password(broker: int, admin: BrokerAdmin) -> None:
    assert (await _run_script(broker, "password-before")).returncode == 0
    done = await _run_script(broker, "password-after")
    assert done.returncode == 0, done.stderr
    assert await connect_error(broker, USERNAME, "password-before") == NOT_AUTHORISED
    assert await connect_error(broker, USERNAME, "password-after") is None
    await admin.ensure_ingest_account(USERNAME, "password-after")  # Pulse's own call agrees with the script


async def test_the_script_fails_loudly_when_the_broker_refuses_the_admin(broker: int) -> None:
    done = await _run_script(broker, "never-set", admin_password="wrong-admin-password")
    assert done.returncode != 0
    assert "Not authorized" in done.stderr
