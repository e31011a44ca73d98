"""The notification pipeline against a real local HTTP receiver: routing, signing, retries, dead letters, twins."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import AlertSignal, raise_alert
from pulse.db import system_tx
from pulse.errors import ValidationError
from pulse.notify.channels.webhook import verify_signature
from pulse.notify.routing import create_route
from pulse.notify.service import RetryPolicy, claim_jobs, create_channel, get_channel_masked, replay_dead_job
from pulse.notify.ssrf import check_url
from pulse.notify.worker import Deliverer
from pulse.settings import Settings
from tests.conftest import TenantRef, make_device, make_tenant

SECRET = "receiver-shared-secret"
FAST = RetryPolicy(base_s=0.05, cap_s=1.0, jitter=0.0)


class Receiver:
    """A webhook endpoint that answers from a script of (status, headers[, body]), then 200 with `default_body`,
    each answer after `delay_s`."""

    def __init__(self, default_body: bytes = b"", delay_s: float = 0.0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.script: list[tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if delay_s:
                    time.sleep(delay_s)
                with outer.lock:
                    outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status, headers, *rest = outer.script.pop(0) if outer.script else (200, {})
                answer = rest[0] if rest else default_body
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # deliverers connect up to 50 at a time each

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


async def _setup(engine: AsyncEngine, settings: Settings, url: str, **route: Any) -> tuple[TenantRef, str]:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant, tags=["cold-chain"])
    async with system_tx(engine) as conn:
        channel = await create_channel(conn, tenant.tenant_id, "hook", "WEBHOOK", {"url": url}, {"secret": SECRET},
                                       settings=settings)
        await create_route(conn, tenant.tenant_id, name="route", channel_id=channel, **route)
    return tenant, device


async def _alert(engine: AsyncEngine, tenant: TenantRef, device: str, severity: int = 4) -> str:
    async with system_tx(engine) as conn:
        change = await raise_alert(conn, AlertSignal(
            tenant_id=tenant.tenant_id, fingerprint=f"RULE:r:{device}:{severity}", alert_type="THRESHOLD",
            severity=severity, title="too warm", summary="temp_c 31 > 30", device_id=device, metric="temp_c",
            value=31), now=datetime.now(UTC))
    return change.alert_id


async def _jobs(engine: AsyncEngine, tenant: TenantRef) -> list[Any]:
    async with system_tx(engine) as conn:
        return list((await conn.execute(text(
            "SELECT job_id::text, status, attempt_count, next_attempt_at, last_error FROM notification_jobs "
            "WHERE tenant_id = :t ORDER BY created_at"), {"t": tenant.tenant_id})).all())


async def _attempts(engine: AsyncEngine, job_id: str) -> list[Any]:
    async with system_tx(engine) as conn:
        return list((await conn.execute(text(
            "SELECT attempt_no, outcome, status_code FROM notification_attempts WHERE job_id = CAST(:j AS uuid) "
            "ORDER BY attempt_no"), {"j": job_id})).all())


async def _drain(d: Deliverer, until: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        await d.deliver_once()
        if await until():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not settled in time")


async def _settle_job(engine: AsyncEngine, settings: Settings, tenant: TenantRef) -> Any:
    """Run a deliverer until the tenant's one job is DELIVERED or DEAD; returns the job row (job_id, status,
    last_error, idempotency_key)."""
    job: Any = None

    async def settled() -> bool:
        nonlocal job
        async with system_tx(engine) as conn:
            job = (await conn.execute(text(
                "SELECT job_id::text, status, last_error, idempotency_key FROM notification_jobs "
                "WHERE tenant_id = :t"), {"t": tenant.tenant_id})).one()
        return bool(job.status in ("DELIVERED", "DEAD"))

    d = Deliverer(engine, settings, retry=FAST)
    try:
        await _drain(d, settled)
    finally:
        await d.aclose()
    return job


async def test_routing_filters_and_final_routes(engine: AsyncEngine, settings: Settings, receiver: Receiver) -> None:
    tenant, device = await _setup(engine, settings, receiver.url, min_severity=4, tags=["cold-chain"], is_final=True)
    async with system_tx(engine) as conn:
        second = await create_channel(conn, tenant.tenant_id, "second", "WEBHOOK", {"url": receiver.url},
                                      {"secret": SECRET}, settings=settings)
        await create_route(conn, tenant.tenant_id, name="after the final one", channel_id=second, position=5)
    await _alert(engine, tenant, device, severity=3)  # below min_severity: only the later route matches
    await _alert(engine, tenant, device, severity=5)  # the final route matches and stops matching
    async with system_tx(engine) as conn:
        rows = (await conn.execute(text(
            "SELECT c.name, (j.payload->>'severity')::int AS sev FROM notification_jobs j "
            "JOIN notification_channels c USING (channel_id) WHERE j.tenant_id = :t ORDER BY sev"),
            {"t": tenant.tenant_id})).all()
    assert [(r.name, r.sev) for r in rows] == [("second", 3), ("hook", 5)]


async def test_delivered_body_is_signed_and_masked_in_the_api(engine: AsyncEngine, settings: Settings,
                                                              receiver: Receiver) -> None:
    tenant, device = await _setup(engine, settings, receiver.url)
    alert_id = await _alert(engine, tenant, device)
    d = Deliverer(engine, settings, retry=FAST)
    try:
        await _drain(d, lambda: _settled(engine, tenant, "DELIVERED"))
    finally:
        await d.aclose()
    [(headers, body)] = receiver.requests
    now = datetime.now(UTC)
    assert verify_signature(SECRET, headers["x-pulse-timestamp"], body, headers["x-pulse-signature"], now=now)
    assert not verify_signature(SECRET, headers["x-pulse-timestamp"], body.replace(b"31", b"99"),
                                headers["x-pulse-signature"], now=now)
    assert not verify_signature(SECRET, headers["x-pulse-timestamp"], body, headers["x-pulse-signature"],
                                now=now + timedelta(minutes=10)), "a replayed old delivery must be refused"
    assert alert_id.encode() in body and headers["x-pulse-event"] == "OPENED"
    async with system_tx(engine) as conn:
        channel_id = (await conn.execute(text("SELECT channel_id::text FROM notification_channels WHERE tenant_id = :t"),
                                         {"t": tenant.tenant_id})).scalar_one()
        stored = (await conn.execute(text("SELECT secrets_encrypted FROM notification_channels WHERE tenant_id = :t"),
                                     {"t": tenant.tenant_id})).scalar_one()
        shown = await get_channel_masked(conn, tenant.tenant_id, channel_id, settings=settings)
    assert SECRET not in stored and shown["secrets"] == {"secret": "••••••"}


async def _settled(engine: AsyncEngine, tenant: TenantRef, status: str) -> bool:
    jobs = await _jobs(engine, tenant)
    return bool(jobs) and all(j.status == status for j in jobs)


async def test_three_500s_then_200_is_delivered_on_the_fourth_attempt(engine: AsyncEngine, settings: Settings,
                                                                      receiver: Receiver) -> None:
    receiver.script = [(500, {}), (500, {}), (500, {})]
    tenant, device = await _setup(engine, settings, receiver.url)
    await _alert(engine, tenant, device)
    d = Deliverer(engine, settings, retry=FAST)
    try:
        await _drain(d, lambda: _settled(engine, tenant, "DELIVERED"))
    finally:
        await d.aclose()
    [job] = await _jobs(engine, tenant)
    attempts = await _attempts(engine, job.job_id)
    assert [(a.outcome, a.status_code) for a in attempts] == [("RETRY", 500)] * 3 + [("DELIVERED", 200)]
    keys = {h["x-pulse-delivery"] for h, _ in receiver.requests}
    assert len(receiver.requests) == 4 and len(keys) == 1, "retries carry one stable delivery id"


async def test_429_retry_after_is_honoured(engine: AsyncEngine, settings: Settings, receiver: Receiver) -> None:
    receiver.script = [(429, {"Retry-After": "120"})]
    tenant, device = await _setup(engine, settings, receiver.url)
    await _alert(engine, tenant, device)
    d = Deliverer(engine, settings, retry=RetryPolicy(base_s=0.05, jitter=0.0))  # Retry-After is capped at 2 h
    try:
        before = datetime.now(UTC)
        await d.deliver_once()
    finally:
        await d.aclose()
    [job] = await _jobs(engine, tenant)
    assert job.status == "PENDING"
    assert timedelta(seconds=119) <= job.next_attempt_at - before <= timedelta(seconds=125)


async def test_client_error_goes_dead_and_replay_delivers(engine: AsyncEngine, settings: Settings,
                                                          receiver: Receiver) -> None:
    receiver.script = [(400, {})]
    tenant, device = await _setup(engine, settings, receiver.url)
    await _alert(engine, tenant, device)
    d = Deliverer(engine, settings, retry=FAST)
    try:
        await d.deliver_once()
        [job] = await _jobs(engine, tenant)
        assert job.status == "DEAD" and "400" in job.last_error
        async with system_tx(engine) as conn:
            await replay_dead_job(conn, tenant.tenant_id, job.job_id, now=datetime.now(UTC))
        await _drain(d, lambda: _settled(engine, tenant, "DELIVERED"))
    finally:
        await d.aclose()
    assert [a.outcome for a in await _attempts(engine, job.job_id)][-1] == "DELIVERED"


async def test_receiver_down_until_attempts_run_out_dead_letters(engine: AsyncEngine, settings: Settings,
                                                                  receiver: Receiver) -> None:
    receiver.script = [(503, {})] * 5
    tenant, device = await _setup(engine, settings, receiver.url)
    await _alert(engine, tenant, device)
    d = Deliverer(engine, settings, retry=FAST)
    try:
        await _drain(d, lambda: _settled(engine, tenant, "DEAD"))
    finally:
        await d.aclose()
    [job] = await _jobs(engine, tenant)
    assert job.attempt_count == 5 and len(await _attempts(engine, job.job_id)) == 5


async def test_two_deliverers_send_each_job_once(engine: AsyncEngine, settings: Settings, receiver: Receiver) -> None:
    tenant, _ = await _setup(engine, settings, receiver.url)
    devices = [await make_device(engine, tenant) for _ in range(50)]
    for dev in devices:
        await _alert(engine, tenant, dev)
    twins = [Deliverer(engine, settings, retry=FAST, batch=7) for _ in range(2)]
    try:
        async def drain(d: Deliverer) -> None:  # until every job of this tenant is delivered (retries included)
            for _ in range(400):
                await d.deliver_once()
                if await _settled(engine, tenant, "DELIVERED"):
                    return
                await asyncio.sleep(0.02)

        await asyncio.gather(*(drain(d) for d in twins))
    finally:
        for d in twins:
            await d.aclose()
    assert await _settled(engine, tenant, "DELIVERED")
    keys = [h["x-pulse-delivery"] for h, _ in receiver.requests]
    assert len(set(keys)) == 50
    async with system_tx(engine) as conn:  # a retried send (receiver hiccup) is allowed, a twin's double send is not
        attempts = (await conn.execute(text(
            "SELECT count(*) AS n, count(*) FILTER (WHERE outcome = 'DELIVERED') AS delivered "
            "FROM notification_attempts WHERE tenant_id = :t"), {"t": tenant.tenant_id})).one()
    assert len(keys) == attempts.n and attempts.delivered == 50, "each job is delivered by exactly one deliverer"
    assert all(d.delivered > 0 for d in twins), "both deliverers took part"


async def test_expired_lease_is_taken_over_and_the_old_owner_is_fenced(engine: AsyncEngine, settings: Settings,
                                                                       receiver: Receiver) -> None:
    tenant, device = await _setup(engine, settings, receiver.url)
    await _alert(engine, tenant, device)
    async with system_tx(engine) as conn:  # a deliverer claims, then dies without finishing
        claimed = await claim_jobs(conn, owner="crashed", now=datetime.now(UTC), lease_s=0.2)
    [stale] = [j for j in claimed if j.tenant_id == tenant.tenant_id]  # other tests' due jobs may come along
    await asyncio.sleep(0.3)
    d = Deliverer(engine, settings, retry=FAST)
    try:
        await _drain(d, lambda: _settled(engine, tenant, "DELIVERED"))
    finally:
        await d.aclose()
    from pulse.notify.schemas import SendResult
    from pulse.notify.service import record_outcome

    async with system_tx(engine) as conn:
        late = await record_outcome(conn, stale, SendResult(delivered=False, retryable=True, error="late"),
                                    started_at=datetime.now(UTC), finished_at=datetime.now(UTC), retry=FAST)
    assert late == "LEASE_LOST"
    [job] = await _jobs(engine, tenant)
    assert job.status == "DELIVERED" and len(receiver.requests) == 1


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://10.0.0.1/hook",
                                 "http://192.168.1.10/", "http://[::1]:8080/", "http://127.0.0.1:9/",
                                 "file:///etc/passwd", "http://user:pw@example.com/"])
def test_ssrf_refuses_internal_addresses(url: str) -> None:
    with pytest.raises(ValidationError) as exc:
        check_url(url, ())
    assert exc.value.field == "url"


def test_loopback_allowed_only_when_the_operator_says_so() -> None:
    check_url("http://127.0.0.1:8080/hook", ("loopback",))
    with pytest.raises(ValidationError):
        check_url("http://169.254.169.254/", ("loopback",))


async def test_channel_with_internal_url_is_refused_at_save(engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    with pytest.raises(ValidationError) as exc:
        async with system_tx(engine) as conn:
            await create_channel(conn, tenant.tenant_id, "meta", "WEBHOOK", {"url": "http://169.254.169.254/"},
                                 {"secret": SECRET}, settings=settings)
    assert exc.value.field == "config.url" and "link-local" in exc.value.message


async def test_a_receiver_that_never_answers_does_not_hold_back_others(engine: AsyncEngine, settings: Settings,
                                                                       receiver: Receiver) -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections, never reads or answers
    try:
        slow_tenant, slow_device = await _setup(engine, settings, f"http://127.0.0.1:{silent.getsockname()[1]}/")
        tenant, device = await _setup(engine, settings, receiver.url)
        await _alert(engine, slow_tenant, slow_device)
        await _alert(engine, tenant, device)
        d = Deliverer(engine, settings, retry=FAST)
        stop, wake = asyncio.Event(), asyncio.Event()
        pump = asyncio.create_task(d.pump(stop, wake, 0.05))
        try:
            for _ in range(100):
                if await _settled(engine, tenant, "DELIVERED"):
                    break
                await asyncio.sleep(0.05)
            assert await _settled(engine, tenant, "DELIVERED")
            [stuck] = await _jobs(engine, slow_tenant)
            assert stuck.status == "IN_PROGRESS", "the silent receiver's send is still in flight"
        finally:
            stop.set()
            await pump
            await d.aclose()
        [after] = await _jobs(engine, slow_tenant)
        assert after.status == "PENDING" and "Timeout" in after.last_error
    finally:
        silent.close()


async def test_an_unreadable_job_is_dead_lettered_and_does_not_block_the_queue(
        engine: AsyncEngine, settings: Settings, receiver: Receiver) -> None:
    tenant, device = await _setup(engine, settings, receiver.url)
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "INSERT INTO notification_jobs (tenant_id, channel_id, event_kind, payload, idempotency_key) "
            "SELECT :t, channel_id, 'OPENED', CAST(:p AS jsonb), 'poison-' || :t FROM notification_channels "
            "WHERE tenant_id = :t"), {"t": tenant.tenant_id, "p": '{"nonsense": true}'})
    await _alert(engine, tenant, device)
    d = Deliverer(engine, settings, retry=FAST)
    try:
        async def settled() -> bool:
            return sorted(j.status for j in await _jobs(engine, tenant)) == ["DEAD", "DELIVERED"]

        await _drain(d, settled)
    finally:
        await d.aclose()
    dead = [j for j in await _jobs(engine, tenant) if j.status == "DEAD"]
    assert "unreadable payload" in dead[0].last_error and len(receiver.requests) == 1
