"""`kill -9` of the only `pulse evaluate`, then of the only `pulse escalate`, then of the only `pulse deliver`, each in
the middle of its work, each restarted: one alert per breaching device, one page per escalation level, every
notification delivered to a real webhook receiver.

Real processes end to end: a gateway publishes one breaching reading per device over MQTT to `pulse ingest`; the
rule's alerts, the escalation policy's pages and the route's notifications are made by the processes under test.
What "no duplicate" means at each step:
- evaluate and escalate write in transactions: a kill rolls back the work in hand, the restarted process does it
  again, and the partial unique index on open fingerprints / the step's `FOR UPDATE` claim keep it single;
- deliver sends outside transactions, so a send in flight at the kill may reach the receiver twice — with the same
  `X-Pulse-Delivery` key, by which receivers de-duplicate. No job is sent under two keys and none is lost.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.notify.routing import create_route
from pulse.notify.service import create_channel
from pulse.settings import Settings
from tests.conftest import make_tenant
from tests.faults.data import add_devices, fetch, fetchval, stored_keys
from tests.faults.mqtt_tools import AckedPublisher, envelope
from tests.faults.private_broker import PrivateBroker, private_broker, publisher_acls
from tests.faults.processes import PulseProcesses, eventually, processes
from tests.notify.test_delivery import Receiver
from tests.oncall.test_escalate_processes import _writing
from tests.oncall.test_escalation import SECRET, _contact, _policy, _user

__all__ = ["private_broker", "processes"]  # fixtures

DEVICES = 600  # the evaluator's transactions take 500 devices: the kill lands in the second
LEVELS = 2


async def _kill_mid_work(processes: PulseProcesses, name: str, database_url: str,
                         done_some: Callable[[], Awaitable[bool]]) -> None:
    """Once `done_some` (part of the work committed), SIGKILL `name` while it holds an open transaction that has
    written (the next part in hand, not committed)."""
    pid = processes.procs[name].pid
    await eventually(done_some, timeout=60, every=0.01, what=f"{name} to commit part of its work",
                     details=lambda: processes.output(name))

    async def writing() -> bool:
        return await _writing(database_url, pid)
    await eventually(writing, timeout=60, every=0.01, what=f"{name} to start writing",
                     details=lambda: processes.output(name))
    processes.kill9(name)


async def test_kill_9_of_evaluate_escalate_and_deliver_mid_work_loses_and_doubles_nothing(
        engine: AsyncEngine, settings: Settings, database_url: str, private_broker: PrivateBroker,
        processes: PulseProcesses) -> None:
    tenant = await make_tenant(engine, heartbeat_interval_s=3600)
    t = tenant.tenant_id
    device_ids = [f"boiler-{i:03d}-{secrets.token_hex(2)}" for i in range(DEVICES)]
    await add_devices(engine, tenant, device_ids)
    receiver = Receiver(delay_s=0.05)  # a deliverer always has sends in flight
    try:
        async with system_tx(engine) as conn:
            await conn.execute(text(
                "INSERT INTO alert_rules (tenant_id, name, rule_type, severity, definition) VALUES (:t, 'Too hot', "
                "'THRESHOLD', 4, CAST(:d AS jsonb))"),
                {"t": t, "d": json.dumps({"metric": "fault_temp", "op": "GT", "value": 90})})
            channel = await create_channel(conn, t, "ops hook", "WEBHOOK", {"url": receiver.url},
                                           {"secret": SECRET}, settings=settings)
            await create_route(conn, t, name="opened", channel_id=channel, event_kinds=["OPENED"])
        oncall = await _user(engine, tenant, "oncall")
        await _contact(engine, settings, tenant, oncall, "WEBHOOK", receiver.url, {"secret": SECRET})
        await _policy(engine, tenant, [(0, [{"type": "user", "id": oncall}])] * LEVELS)  # due as the alert opens

        ingest = await private_broker.ingest_account()
        gateway = await private_broker.account(f"gateway-{t}", publisher_acls(t))
        processes.env["PULSE_DATABASE_URL"] = database_url
        processes.start("ingest", "ingest", PULSE_MQTT_URL=private_broker.url(*ingest),
                        PULSE_INGEST_SHARED_GROUP=f"faults-{t}")
        await processes.ready("ingest", "mqtt")
        publisher = AckedPublisher("127.0.0.1", private_broker.port, *gateway)
        await publisher.publish_all([((d, 1), f"tenant/{t}/device/{d}/telemetry", envelope(1, {"fault_temp": 95}))
                                     for d in device_ids])

        async def all_stored() -> bool:
            return len(await stored_keys(database_url, t)) == DEVICES
        await eventually(all_stored, timeout=60, what="the readings", details=lambda: processes.output("ingest"))

        # evaluate: killed while opening the alerts, restarted; it catches up on the last 10 minutes at start.
        # 50 devices per transaction, so the alerts commit in steps and the kill lands between two of them.
        alerts = "SELECT count(*) FROM alerts WHERE tenant_id = $1"
        processes.start("evaluate", "evaluate", PULSE_EVALUATE_CHUNK="50")

        async def some_open() -> bool:
            return bool(await fetchval(database_url, alerts, t))
        await _kill_mid_work(processes, "evaluate", database_url, some_open)
        assert 0 < await fetchval(database_url, alerts, t) < DEVICES, "the kill missed the evaluator's work"
        processes.start("evaluate", "evaluate", PULSE_EVALUATE_CHUNK="50")

        async def all_open() -> bool:
            return await fetchval(database_url, alerts, t) == DEVICES
        await eventually(all_open, timeout=90, what="every alert", details=lambda: processes.output("evaluate"))
        await asyncio.sleep(2.0)  # a duplicate would show up now
        per_alert = await fetch(database_url, (
            "SELECT a.device_id, a.status, "
            "  (SELECT count(*) FROM alert_events e WHERE e.alert_id = a.alert_id AND e.kind = 'OPENED') AS opened, "
            "  (SELECT count(*) FROM notification_jobs j WHERE j.alert_id = a.alert_id AND j.channel_id IS NOT NULL)"
            "  AS routed FROM alerts a WHERE a.tenant_id = $1"), t)
        assert sorted(r["device_id"] for r in per_alert) == sorted(device_ids)
        assert [dict(r) for r in per_alert if (r["status"], r["opened"], r["routed"]) != ("OPEN", 1, 1)] == []

        # escalate: killed in the middle of a step, restarted
        escalated = "SELECT count(*) FROM alert_events WHERE tenant_id = $1 AND kind = 'ESCALATED'"
        processes.start("escalate", "escalate")

        async def some_escalated() -> bool:
            return await fetchval(database_url, escalated, t) >= DEVICES * LEVELS // 4
        await _kill_mid_work(processes, "escalate", database_url, some_escalated)
        assert await fetchval(database_url, escalated, t) < DEVICES * LEVELS, "the kill missed the escalator's work"
        processes.start("escalate", "escalate")

        async def all_escalated() -> bool:
            return await fetchval(database_url, escalated, t) == DEVICES * LEVELS
        await eventually(all_escalated, timeout=90, what="every escalation step",
                         details=lambda: processes.output("escalate"))
        await asyncio.sleep(2.0)
        pages = await fetch(database_url, (
            "SELECT a.alert_id, array(SELECT (e.details->>'level')::int FROM alert_events e "
            "  WHERE e.alert_id = a.alert_id AND e.kind = 'PAGED' ORDER BY e.event_id) AS levels, "
            "  (SELECT count(*) FROM notification_jobs j WHERE j.alert_id = a.alert_id AND j.contact_id IS NOT NULL)"
            "  AS paged FROM alerts a WHERE a.tenant_id = $1"), t)
        assert [dict(r) for r in pages if (list(r["levels"]), r["paged"]) != (list(range(1, LEVELS + 1)), LEVELS)] \
            == []

        # deliver: killed with sends in flight, restarted; the dead one's leases run out after 5 s
        jobs_sql = "SELECT status, count(*) AS n FROM notification_jobs WHERE tenant_id = $1 GROUP BY status"
        total = DEVICES * (1 + LEVELS)
        deliver_env = {"PULSE_ALLOW_PRIVATE_URLS": "loopback", "PULSE_DELIVER_LEASE_S": "5",
                       "PULSE_DELIVER_RETRY_BASE_S": "1"}
        processes.start("deliver", "deliver", **deliver_env)

        async def statuses() -> Counter[str]:
            return Counter({r["status"]: r["n"] for r in await fetch(database_url, jobs_sql, t)})

        async def sends_in_flight() -> bool:
            now = await statuses()
            return now["DELIVERED"] >= total // 4 and now["IN_PROGRESS"] >= 10
        await eventually(sends_in_flight, timeout=60, every=0.01, what="sends in flight",
                         details=lambda: processes.output("deliver"))
        processes.kill9("deliver")
        in_flight = (await statuses())["IN_PROGRESS"]
        assert (await statuses())["DELIVERED"] < total, "every notification was sent before the kill"
        processes.start("deliver", "deliver", **deliver_env)

        async def all_delivered() -> bool:
            return (await statuses())["DELIVERED"] == total
        await eventually(all_delivered, timeout=120, what="every notification",
                         details=lambda: processes.output("deliver"))
        await asyncio.sleep(1.0)
        codes = processes.stop_all()
        assert codes == {"ingest": 0, "evaluate": 0, "escalate": 0, "deliver": 0}, processes.outputs()

        jobs = await fetch(database_url, "SELECT idempotency_key, contact_id IS NOT NULL AS is_page "
                           "FROM notification_jobs WHERE tenant_id = $1", t)
        keys = {j["idempotency_key"] for j in jobs}
        assert len(keys) == len(jobs) == total
        received = Counter(headers["x-pulse-delivery"] for headers, _body in receiver.requests)
        assert set(received) == keys  # nothing lost
        repeats = sum(n - 1 for n in received.values())
        assert repeats <= in_flight  # only sends the killed deliverer had in hand came twice
        bodies: dict[str, Any] = {headers["x-pulse-delivery"]: json.loads(body) for headers, body in receiver.requests}
        pages_per_alert = Counter(b["alert"]["alert_id"] for b in bodies.values() if b["event"] == "PAGED")
        opened_per_alert = Counter(b["alert"]["alert_id"] for b in bodies.values() if b["event"] == "OPENED")
        assert len(pages_per_alert) == len(opened_per_alert) == DEVICES
        assert set(pages_per_alert.values()) == {LEVELS} and set(opened_per_alert.values()) == {1}
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
