"""The broker of the deployment is the broker of the tests: deploy/mosquitto/mosquitto.conf is what the broker
fixture starts (only the listener, the file locations and the user differ), what the compose file mounts, and the
simulator's account script works on it."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
import yaml  # PyYAML comes with Litestar

from tests.broker.conftest import ADMIN, NOT_AUTHORISED, Peer, requires_mosquitto
from tests.deploy.conftest import DEPLOY
from tests.deployed_broker import CONF, GATE_DEPLOYED, REPLACED
from tests.fleet.conftest import broker  # noqa: F401 - the fixture

pytestmark = requires_mosquitto



def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_broker_fixture_runs_the_deployed_configuration(broker: int,  # noqa: F811
                                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    deployed = _lines(CONF.read_text())
    started = {p.resolve() for p in tmp_path_factory.getbasetemp().glob("mosquitto*/mosquitto.conf")
               if f"listener {broker} 127.0.0.1" in p.read_text()}
    assert len(started) == 1
    tested = _lines(started.pop().read_text())
    for marker in REPLACED:
        assert any(marker in line for line in deployed), f"deploy/mosquitto/mosquitto.conf lost {marker!r}"
    differs = [line for line in deployed if line not in tested]
    assert all(any(marker in line for marker in REPLACED) for line in differs), differs
    added = [line for line in tested if line not in deployed]
    assert len(added) == len(differs) + 1 and added[-1].startswith("user ")  # the test's own user, nothing else
    assert "allow_anonymous false" in deployed and any("mosquitto_dynamic_security.so" in x for x in deployed)


def test_compose_runs_the_deployed_configuration() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mqtt = compose["services"]["mqtt"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in mqtt["volumes"]}
    assert (DEPLOY / mounts["/mosquitto/config/mosquitto.conf"]).resolve() == CONF.resolve()
    assert "/mosquitto/config" in mounts and "/mosquitto/data" in mounts  # the plugin's file and persistence
    assert mqtt["build"]["target"] == "mosquitto"
    entrypoint = (DEPLOY / "mosquitto/entrypoint.sh").read_text()
    assert "mosquitto -c /mosquitto/config/mosquitto.conf" in entrypoint
    assert "dynsec=/mosquitto/config/dynamic-security.json" in entrypoint and 'init-dynsec.sh "$dynsec"' in entrypoint


def test_the_broker_image_provides_the_plugins_the_configuration_loads_in_their_order() -> None:
    plugins = [line.split()[1] for line in _lines(CONF.read_text()) if line.startswith("plugin ")]
    # The ingest gate first: it holds device connections before the dynamic-security plugin judges them.
    assert plugins == [GATE_DEPLOYED, "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"]
    dockerfile = (DEPLOY / "infra.Dockerfile").read_text()
    assert "COPY deploy/mosquitto/ingest_gate.c /src/ingest_gate.c" in dockerfile
    assert f"COPY --from=mosquitto-gate /src/pulse_ingest_gate.so {GATE_DEPLOYED}" in dockerfile
    options = dict(line.split(None, 1) for line in _lines(CONF.read_text()) if line.startswith("plugin_opt_"))
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    ingest_user = compose["services"]["mqtt-accounts"]["environment"]["INGEST_USERNAME"]
    assert options["plugin_opt_ingest"].split() == [ingest_user]
    simulator_user = compose["services"]["simulator-account"]["environment"]["SIM_USERNAME"]
    assert simulator_user in options["plugin_opt_hold"].split()  # it publishes for many devices


async def _simulator_account(port: int, tenant: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BROKER_PORT": str(port), "ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1],
           "SIM_USERNAME": "pulse-simulator", "SIM_PASSWORD": password, "SIM_TENANT": tenant}
    script = Path(DEPLOY / "mosquitto/create-simulator-account.sh")
    return await asyncio.to_thread(subprocess.run, [str(script)], env=env, capture_output=True, text=True,
                                   timeout=30, check=False)


async def test_the_simulator_account_publishes_as_its_tenants_devices_only(broker: int) -> None:  # noqa: F811
    first = await _simulator_account(broker, "demo", "simulator-password-1")
    again = await _simulator_account(broker, "demo", "simulator-password-2")
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    sim = await Peer("sim").connect(broker, "pulse-simulator", "simulator-password-2")
    try:
        own = await sim.publish("tenant/demo/device/sim-0001/telemetry", b'{"seq": 1}')
        other = await sim.publish("tenant/acme/device/sim-0001/telemetry", b'{"seq": 1}')
        command = await sim.publish("tenant/demo/device/sim-0001/command/reset", b"{}")
        subscribed = await sim.subscribe("tenant/demo/device/+/+")
    finally:
        await sim.close()
    assert own in (0, 0x10)  # success, or "no matching subscribers" (nothing consumes here)
    assert (other, command, subscribed) == (NOT_AUTHORISED, NOT_AUTHORISED, NOT_AUTHORISED)
