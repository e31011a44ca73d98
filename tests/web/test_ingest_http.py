"""HTTP ingest through `pulse web`: committed on 202, the same reason codes as MQTT as the error code."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.fleet.service import issue_credentials
from tests.conftest import make_device, make_tenant


async def _device_with_token(engine: AsyncEngine) -> tuple[str, str, str]:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        creds = await issue_credentials(conn, tenant.tenant_id, device, now=datetime.now(UTC))
    return tenant.tenant_id, device, creds.provision_token


async def test_accepted_message_is_committed_when_the_answer_arrives(engine: AsyncEngine,
                                                                    client: AsyncTestClient[Litestar]) -> None:
    tenant_id, device, token = await _device_with_token(engine)
    r = await client.post(f"/ingest/v1/tenant/{tenant_id}/device/{device}/telemetry",
                          content=json.dumps({"seq": 7, "metrics": {"temp_c": 21.5}}),
                          headers={"X-Provision-Token": token, "Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    async with system_tx(engine) as conn:
        seq = (await conn.execute(text("SELECT seq FROM telemetry WHERE tenant_id = :t AND device_id = :d"),
                                  {"t": tenant_id, "d": device})).scalar()
    assert seq == 7


async def test_rejections_answer_with_status_and_reason(engine: AsyncEngine,
                                                        client: AsyncTestClient[Litestar]) -> None:
    tenant_id, device, token = await _device_with_token(engine)
    url = f"/ingest/v1/tenant/{tenant_id}/device/{device}"
    good = json.dumps({"seq": 1, "metrics": {"temp_c": 1}})
    cases = [
        (f"{url}/telemetry", good, {}, 401, "TOKEN_MISSING"),
        (f"{url}/telemetry", good, {"X-Provision-Token": "pt_wrong"}, 401, "TOKEN_INVALID"),
        (f"{url}/telemetry", "{not json", {"X-Provision-Token": token}, 400, "INVALID_JSON"),
        (f"{url}/firmware", good, {"X-Provision-Token": token}, 400, "UNSUPPORTED_MSG_TYPE"),
        (f"/ingest/v1/tenant/{tenant_id}/device/nobody/telemetry", good, {"X-Provision-Token": token}, 403,
         "UNREGISTERED_DEVICE"),
        (f"{url}/telemetry", json.dumps({"seq": 1, "metrics": {"x": "y" * 70000}}), {"X-Provision-Token": token},
         413, "PAYLOAD_TOO_LARGE"),
    ]
    for path, body, headers, status, reason in cases:
        r = await client.post(path, content=body, headers=headers)
        assert r.status_code == status, (reason, r.text)
        assert r.json()["error"]["code"] == reason
    reasons: set[str] = set()
    for _ in range(50):  # quarantine rows are written by the batch writer, within its flush interval
        async with system_tx(engine) as conn:
            reasons = {row[0] for row in await conn.execute(text(
                "SELECT reason FROM quarantine_events WHERE tenant_id = :t AND transport = 'HTTP'"),
                {"t": tenant_id})}
        if len(reasons) >= 4:
            break
        await asyncio.sleep(0.1)
    assert {"TOKEN_MISSING", "TOKEN_INVALID", "INVALID_JSON", "UNSUPPORTED_MSG_TYPE"} <= reasons


async def test_batch_answers_per_message(engine: AsyncEngine, client: AsyncTestClient[Litestar]) -> None:
    tenant_id, device, token = await _device_with_token(engine)
    other_tenant, other_device, other_token = await _device_with_token(engine)
    messages = [
        {"tenant_id": tenant_id, "device_id": device, "token": token, "message": {"seq": 1, "metrics": {"a": 1}}},
        {"tenant_id": other_tenant, "device_id": other_device, "token": other_token, "msg_type": "heartbeat",
         "message": {"seq": 2}},
        {"tenant_id": tenant_id, "device_id": device, "token": "pt_forged", "message": {"seq": 3, "metrics": {"a": 3}}},
    ]
    r = await client.post("/ingest/v1/batch", json={"messages": messages})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert [(x["status"], x["reason"]) for x in body["results"]] == [(202, None), (202, None), (401, "TOKEN_INVALID")]
    r = await client.post("/ingest/v1/batch", content=b"[1, 2]")
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ENVELOPE"
