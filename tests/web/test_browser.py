"""The web app in a real browser: Debian's chromium, driven by playwright-core (spa/e2e/browser.mjs), against real
`pulse web`, `pulse ingest`, `pulse evaluate` and `pulse schedule` processes, PostgreSQL and Mosquitto.

A tenant admin signs in, registers a device and reads its credentials off the page; telemetry published over MQTT
with those credentials moves the device's chart live; a threshold rule made in the rule editor opens an alert that
appears live in the inbox and is acknowledged there; the on-call timeline renders. An operator then sees every NOC
widget with data and toggles TV mode. Screenshots of each main page are saved (PULSE_E2E_ARTIFACTS, else the test's
temporary directory) and the fleet overview's first paint is printed.

Needs the built app (spa/dist: scripts/spa.sh builds it, `make test` runs that first), spa/node_modules and
/usr/bin/chromium.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gmqtt
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.fleet.users import create_user
from tests.conftest import free_port, make_tenant
from tests.test_end_to_end import Processes, wait_for
from tests.web.browser_setup import CHROMIUM, SPA, require_browser_setup

pytestmark = pytest.mark.slow

PASSWORD = "browser-test-password"
SCRIPT_TIMEOUT_S = 420


async def _publish(mqtt_url: str, request: dict[str, Any]) -> None:
    parts = urlsplit(mqtt_url)
    client = gmqtt.Client(request["client_id"])  # the client id the page showed with the credentials
    client.set_auth_credentials(request["username"], request["password"])
    await client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    payload = {"version": "1", "seq": request["seq"], "metrics": request["metrics"]}
    client.publish(f"{request['topic_prefix']}telemetry", json.dumps(payload), qos=1)
    await asyncio.sleep(0.3)
    await client.disconnect()


def _seed_on_call(base: str, email: str, tenant_id: str) -> None:
    """A second person and a daily two-person schedule, made through the API as an admin would."""
    token = httpx.post(f"{base}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10).json()[
        "access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    me = httpx.get(f"{base}/customer/me", headers=auth, timeout=10).json()
    other = httpx.post(f"{base}/customer/users", headers=auth, timeout=10, json={
        "email": f"grace@{tenant_id}.example", "display_name": "Grace Hopper", "roles": ["customer"]})
    assert other.status_code == 201, other.text
    schedule = httpx.post(f"{base}/customer/schedules", headers=auth, timeout=10,
                          json={"name": "Cold chain", "timezone": "UTC"})
    assert schedule.status_code == 201, schedule.text
    start = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    layer = httpx.post(f"{base}/customer/schedules/{schedule.json()['schedule_id']}/layers", headers=auth,
                       timeout=10, json={"name": "Primary", "rotation_type": "DAILY", "rotation_start": start,
                                         "handoff_time": "09:00",
                                         "participants": [me["user_id"], other.json()["user_id"]]})
    assert layer.status_code == 201, layer.text


async def _drive(node: str, env: dict[str, str], mqtt_url: str) -> tuple[int, list[str], str]:
    """Runs the browser script, publishing over MQTT whenever it asks; returns its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        node, str(SPA / "e2e" / "browser.mjs"), cwd=str(SPA), env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out: list[str] = []
    stderr_task = asyncio.create_task(proc.stderr.read())
    try:
        async with asyncio.timeout(SCRIPT_TIMEOUT_S):
            while line_bytes := await proc.stdout.readline():
                line = line_bytes.decode().rstrip("\n")
                out.append(line)
                print(line)
                if line.startswith("PUBLISH "):
                    try:
                        await _publish(mqtt_url, json.loads(line.removeprefix("PUBLISH ")))
                        answer = "OK"
                    except Exception as exc:  # the script reports it and fails
                        answer = f"ERR {exc!r}"
                    proc.stdin.write(f"{answer}\n".encode())
                    await proc.stdin.drain()
            code = await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        code = -9
    return code, out, (await stderr_task).decode()


async def test_customer_and_operator_journeys_in_chromium(engine: AsyncEngine, database_url: str, mqtt_url: str,
                                                         tmp_path: Path) -> None:
    node = require_browser_setup("the browser test")
    tenant = await make_tenant(engine, prefix="web")
    admin_email = f"ada@{tenant.tenant_id}.example"
    operator_email = f"noc-{tenant.tenant_id}@operator.example"
    async with system_tx(engine) as conn:
        await create_user(conn, tenant_id=tenant.tenant_id, email=admin_email, password=PASSWORD,
                          roles=["tenant-admin"], display_name="Ada Lovelace")
        await create_user(conn, tenant_id=None, email=operator_email, password=PASSWORD, roles=["operator"],
                          display_name="NOC")

    artifacts = Path(os.environ.get("PULSE_E2E_ARTIFACTS") or tmp_path / "screenshots")
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_ENV": "test", "PULSE_DATABASE_URL": database_url, "PULSE_MQTT_URL": mqtt_url,
                "PULSE_HTTP_PORT": str(http_port), "PULSE_HEALTH_PORT": "0", "PULSE_LOG_LEVEL": "warning",
                "PULSE_INGEST_SHARED_GROUP": f"browser-{http_port}", "PULSE_INGEST_FLUSH_MS": "50"})
    procs = Processes(env)
    base = f"http://127.0.0.1:{http_port}"
    device_id = "e2e-fridge"
    try:
        for name in ("web", "ingest", "evaluate", "schedule"):
            procs.start(name, name)

        def web_up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        await asyncio.to_thread(wait_for, web_up, "pulse web to answer /healthz", 60)
        app = httpx.get(f"{base}/app/", timeout=10)
        assert app.status_code == 200 and '<div id="root">' in app.text, app.text[:500]
        await asyncio.to_thread(_seed_on_call, base, admin_email, tenant.tenant_id)
        await asyncio.sleep(2)  # ingest subscribes, evaluate listens

        script_env = {**{k: v for k, v in os.environ.items() if not k.startswith("PULSE_")},
                      "PULSE_E2E_BASE": base, "PULSE_E2E_EMAIL": admin_email, "PULSE_E2E_PASSWORD": PASSWORD,
                      "PULSE_E2E_OPERATOR_EMAIL": operator_email, "PULSE_E2E_OPERATOR_PASSWORD": PASSWORD,
                      "PULSE_E2E_DEVICE": device_id, "PULSE_E2E_ARTIFACTS": str(artifacts),
                      "PULSE_E2E_CHROMIUM": CHROMIUM}
        code, out, err = await _drive(node, script_env, mqtt_url)
    finally:
        codes = procs.stop_all()
    print(f"screenshots: {artifacts}")
    logs = {n: procs.output(n)[-3000:] for n in codes}
    assert code == 0, f"browser script failed ({code}):\n{err[-6000:]}\nlast steps: {out[-5:]}\nlogs: {logs}"
    result = json.loads(next(line for line in reversed(out) if line.startswith("RESULT ")).removeprefix("RESULT "))
    print(f"fleet overview first-contentful-paint, median of 5 loads: {result['paint']['fcp_median_ms']:.0f} ms; "
          f"KPIs shown: {result['paint']['kpis_median_ms']:.0f} ms")
    assert result["chart_points"]["after"] > result["chart_points"]["before"]
    assert result["timeline_shifts"] >= 1 and result["noc_widgets"] == 11 and result["noc_live_feed"] is True
    assert len(result["screenshots"]) >= 10 and all(Path(p).is_file() for p in result["screenshots"])

    # What the browser did is stored: the device it registered, the rule it made, the alert it acknowledged (and
    # that closed once the device reported a normal value, which the NOC's live feed showed).
    async with system_tx(engine) as conn:
        status = (await conn.execute(text(
            "SELECT a.status FROM alerts a JOIN alert_rules r ON r.rule_id = a.rule_id "
            "WHERE a.tenant_id = :t AND a.device_id = :d AND r.name = 'E2E fridge too warm'"),
            {"t": tenant.tenant_id, "d": device_id})).scalars().all()
        kinds = (await conn.execute(text(
            "SELECT e.kind FROM alert_events e JOIN alerts a USING (tenant_id, alert_id) "
            "WHERE a.tenant_id = :t AND a.device_id = :d ORDER BY e.event_id"),
            {"t": tenant.tenant_id, "d": device_id})).scalars().all()
    assert status == ["CLOSED"]
    assert [k for k in kinds if k != "UPDATED"] == ["OPENED", "ACKNOWLEDGED", "CLOSED"]
    assert codes == {"web": 0, "ingest": 0, "evaluate": 0, "schedule": 0}, logs
