"""`pulse deliver`: drains the notification outbox after commit, with retries and fenced leases."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import prometheus_client
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.clock import Clock, SystemClock
from pulse.db import connect_raw, system_tx
from pulse.errors import PulseError
from pulse.notify import channels
from pulse.notify.contacts import contact_channel
from pulse.notify.pinned_http import PinnedClient
from pulse.notify.routing import JOBS_CHANNEL
from pulse.notify.schemas import SendResult
from pulse.notify.service import ClaimedJob, RetryPolicy, claim_jobs, open_secrets, record_outcome
from pulse.runtime import TRANSIENT_DB_ERRORS, Backoff, wait_or_stop, worker_context
from pulse.settings import Settings

log = logging.getLogger("pulse.deliver")

QUEUE_SAMPLE_S = 5.0
ATTEMPTS = prometheus_client.Counter(
    "pulse_deliver_attempts", "Send attempts by channel type and outcome (delivered; retry and dead are failures; "
    "lease_lost: the result came after another deliverer took the job over)", ["channel_type", "outcome"])
SEND_SECONDS = prometheus_client.Histogram("pulse_deliver_send_seconds", "Time one send took, by channel type",
                                           ["channel_type"])
QUEUE_DUE = prometheus_client.Gauge("pulse_deliver_queue_depth", "Notification jobs due and waiting to be sent "
                                    "(all deliverers), sampled every 5 s")
QUEUE_LEASED = prometheus_client.Gauge("pulse_deliver_in_progress", "Notification jobs leased for sending "
                                       "(all deliverers), sampled every 5 s")
OLDEST_DUE = prometheus_client.Gauge("pulse_deliver_oldest_due_seconds", "How long the oldest due job has waited "
                                     "(0 when none is due), sampled every 5 s")
_QUEUE = text(
    "SELECT count(*) FILTER (WHERE status = 'PENDING' AND next_attempt_at <= :now) AS due, "
    "  count(*) FILTER (WHERE status = 'IN_PROGRESS') AS leased, "
    "  min(next_attempt_at) FILTER (WHERE status = 'PENDING' AND next_attempt_at <= :now) AS oldest "
    "FROM notification_jobs WHERE status IN ('PENDING', 'IN_PROGRESS')")


@dataclass(frozen=True)
class Outcome:
    """One finished send, waiting to be recorded."""

    job: ClaimedJob
    result: SendResult
    started_at: datetime
    finished_at: datetime


class Deliverer:
    """Claims due jobs, sends them concurrently outside any transaction, records each outcome."""

    def __init__(self, engine: AsyncEngine, settings: Settings, *, clock: Clock | None = None,
                 retry: RetryPolicy | None = None, batch: int = 100, concurrency: int = 50,
                 lease_s: float = 60.0, http: PinnedClient | None = None, owner: str | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock or SystemClock()
        self.retry = retry or RetryPolicy()
        self.batch = batch
        self.lease_s = lease_s
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.concurrency = concurrency
        self._sem = asyncio.Semaphore(concurrency)
        self._own_http = http is None
        self.http = http or PinnedClient(  # a kept-alive connection per concurrent send
            timeout=httpx.Timeout(10.0, connect=5.0),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))
        self.delivered = 0
        self.failed = 0

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    async def deliver_once(self) -> int:
        """One round: claim a batch, send it, record it. Returns how many jobs were handled."""
        async with system_tx(self.engine) as conn:
            jobs = await claim_jobs(conn, owner=self.owner, now=self.clock.now(), limit=self.batch,
                                    lease_s=self.lease_s)
        if jobs:
            await self._record(list(await asyncio.gather(*(self._deliver(job) for job in jobs))))
        return len(jobs)

    async def pump(self, stop: asyncio.Event, wake: asyncio.Event, poll_s: float,
                   backoff: Backoff | None = None) -> None:
        """Keep up to `concurrency` sends in flight; a slow receiver holds one slot, never the queue.

        On stop, no new jobs are claimed and the sends in hand finish and are recorded.
        """
        in_flight: set[asyncio.Task[Outcome]] = set()
        done: list[Outcome] = []

        def finished(task: asyncio.Task[Outcome]) -> None:
            in_flight.discard(task)
            if not task.cancelled() and task.exception() is None:
                done.append(task.result())

        while not stop.is_set():
            if done:  # every send finished since the last round: one transaction records them all
                batch, done[:] = done[:], []
                await self._record(batch)
            free = self.concurrency - len(in_flight)
            claimed = 0
            if free > 0:
                try:
                    async with system_tx(self.engine) as conn:
                        jobs = await claim_jobs(conn, owner=self.owner, now=self.clock.now(),
                                                limit=min(self.batch, free), lease_s=self.lease_s)
                except TRANSIENT_DB_ERRORS as exc:
                    if backoff is None:
                        raise
                    await backoff.failed(exc, stop)
                    continue
                if backoff is not None:
                    backoff.ok()
                claimed = len(jobs)
                for job in jobs:
                    task = asyncio.create_task(self._deliver(job))
                    in_flight.add(task)
                    task.add_done_callback(finished)
            if claimed and len(in_flight) < self.concurrency:
                continue  # more may be due right away
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait()), *in_flight]
            await asyncio.wait(waiters, timeout=poll_s, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters[:2]:
                w.cancel()
            wake.clear()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        if done:
            await self._record(done)

    async def _deliver(self, job: ClaimedJob) -> Outcome:
        async with self._sem:
            started = self.clock.now()
            t0 = time.monotonic()
            result = await self._send(job)
            return Outcome(job, result, started, started + timedelta(seconds=time.monotonic() - t0))

    async def _record(self, outcomes: list[Outcome]) -> None:
        """Record finished sends in one transaction (one commit for many sends, not one each)."""
        try:
            async with system_tx(self.engine) as conn:
                statuses = [await record_outcome(conn, o.job, o.result, started_at=o.started_at,
                                                 finished_at=o.finished_at, retry=self.retry) for o in outcomes]
        except TRANSIENT_DB_ERRORS as exc:
            # The jobs stay leased; once the leases expire they are claimed and sent again (at-least-once).
            log.warning("delivery outcomes not recorded", extra={"jobs": len(outcomes), "error": str(exc)[:200]})
            return
        for outcome, status in zip(outcomes, statuses, strict=True):
            kind = outcome.job.channel_type
            ATTEMPTS.labels(kind, "retry" if status == "PENDING" else status.lower()).inc()
            SEND_SECONDS.labels(kind).observe((outcome.finished_at - outcome.started_at).total_seconds())
            if status == "DELIVERED":
                self.delivered += 1
            elif status in ("DEAD", "LEASE_LOST"):
                self.failed += 1
                log.warning("notification not delivered", extra={"job_id": outcome.job.job_id, "status": status,
                                                                  "error": outcome.result.error})

    async def _send(self, job: ClaimedJob) -> SendResult:
        try:
            secrets = open_secrets(self.settings.secret_key_bytes, job.secrets_context, job.secrets_encrypted)
            if job.contact_id is not None:
                # building the target validates it, which resolves host names: not on the event loop
                target = await asyncio.to_thread(contact_channel, job.channel_type, job.address or "", secrets,
                                                 self.settings)
                return await channels.send(target.channel_type, job.message, target.config, target.secrets,
                                           delivery_id=job.idempotency_key, http=self.http, allow=target.allow)
            return await channels.send(job.channel_type, job.message, job.config, secrets,
                                       delivery_id=job.idempotency_key, http=self.http,
                                       allow=self.settings.allow_private_urls)
        except httpx.TransportError as exc:
            return SendResult(delivered=False, retryable=True, error=f"{type(exc).__name__}: {exc}")
        except PulseError as exc:  # e.g. an address that now resolves to a refused class; may be fixed, so retry
            return SendResult(delivered=False, retryable=True, error=exc.message)
        except Exception as exc:  # a channel bug or bad config: record it on the job, keep delivering others
            retryable = not isinstance(exc, ValueError | KeyError)
            return SendResult(delivered=False, retryable=retryable, error=f"{type(exc).__name__}: {exc}")


async def sample_queue(engine: AsyncEngine, clock: Clock, stop: asyncio.Event) -> None:
    """Keep the queue gauges current (every QUEUE_SAMPLE_S) until `stop`; a failed sample is retried next time."""
    while not stop.is_set():
        try:
            now = clock.now()
            async with system_tx(engine) as conn:
                row = (await conn.execute(_QUEUE, {"now": now})).one()
            QUEUE_DUE.set(row.due)
            QUEUE_LEASED.set(row.leased)
            OLDEST_DUE.set(0.0 if row.oldest is None else max((now - row.oldest).total_seconds(), 0.0))
        except TRANSIENT_DB_ERRORS as exc:
            log.debug("queue sample failed", extra={"error": str(exc)[:200]})
        await wait_or_stop(stop, None, QUEUE_SAMPLE_S)


async def run(settings: Settings, stop: asyncio.Event, *, clock: Clock | None = None) -> int:
    async with worker_context("deliver", settings, stop) as ctx:
        wake = asyncio.Event()
        listener = await connect_raw(settings.require_database_url(), "pulse-deliver-listen")
        await listener.add_listener(JOBS_CHANNEL, lambda *_: wake.set())
        retry = RetryPolicy(base_s=settings.deliver_retry_base_s, cap_s=settings.deliver_retry_cap_s,
                            max_attempts=settings.deliver_max_attempts)
        deliverer = Deliverer(ctx.engine, settings, clock=clock, retry=retry, lease_s=settings.deliver_lease_s)
        log.info("delivery loop started", extra={"owner": deliverer.owner})
        broker_sync = None
        if settings.mqtt_admin_url:
            from pulse.fleet.broker_sync import run_broker_sync

            broker_sync = asyncio.create_task(run_broker_sync(
                ctx.engine, settings.require_database_url(), settings.mqtt_admin_url, settings.secret_key_bytes,
                stop, clock=clock), name="broker-sync")
        sampler = asyncio.create_task(sample_queue(ctx.engine, clock or SystemClock(), stop), name="queue-gauges")
        try:
            await deliverer.pump(stop, wake, settings.deliver_poll_ms / 1000, Backoff(ctx.health))
            if broker_sync is not None:
                await broker_sync
        finally:
            await listener.close()
            await deliverer.aclose()
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
    return 0
