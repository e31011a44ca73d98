"""`pulse schedule`: the periodic job table and a runner that makes each job run once per period across instances.

How one run of a job is claimed, so that any number of `pulse schedule` processes can run side by side:

1. Triggers are aligned to the UTC epoch (plus a per-job offset), so every instance computes the
   same fire times: "hourly" means at hh:00 on every instance, not an hour after each one started.
2. A run opens one `system_tx` and takes `pg_try_advisory_xact_lock(hashtext('pulse-job:' || name))`.
   An instance that does not get the lock skips: a twin is running the job right now.
3. Holding the lock it reads `scheduled_job_runs.last_started_at`. If a run started at or after the
   moment this run is for (the slot's fire time, the process start, or a `run_job_now` request),
   that run already covers it and this one skips. This closes the gap the lock alone leaves: a twin
   whose timer fires a little later, after the first run committed and released the lock.
4. The job body runs in a savepoint of the same transaction; its outcome (ok, or failed with the
   error) is written to `scheduled_job_runs` in that transaction, so the record and the lock are
   released together and a failure never leaves the row claiming success.

Skipped attempts are not written to the table: the row describes the last execution, and a twin's
skip would overwrite the result of the run it deferred to. They are counted on /metrics.

APScheduler's AsyncIOScheduler cancels running coroutine jobs on shutdown, so each fire starts a
task of our own behind `asyncio.shield`; shutdown stops the timers and then waits for those tasks:
the job in hand finishes and records its result.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import prometheus_client
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pulse.clock import Clock, SystemClock
from pulse.db import system_tx
from pulse.fleet.lifecycle import run_lifecycle
from pulse.fleet.maintenance import (
    cleanup_quarantine,
    cleanup_system_metrics,
    maintain_telemetry_partitions,
    rollup_quarantine_counters,
)
from pulse.fleet.system_metrics import record_tenant_activity, sample_system_metrics
from pulse.reports.service import run_daily_reports
from pulse.runtime import worker_context
from pulse.settings import Settings

log = logging.getLogger("pulse.schedule")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OK, FAILED, SKIPPED = "ok", "failed", "skipped"
SHUTDOWN_GRACE_S = 30.0
QUIET_BELOW = timedelta(minutes=1)
_ERROR_MAX = 2000

JOB_RUNS = prometheus_client.Counter("pulse_schedule_job_runs", "Scheduled job attempts by outcome",
                                     ["job", "status"])
JOB_SECONDS = prometheus_client.Histogram("pulse_schedule_job_seconds", "Duration of executed scheduled jobs",
                                          ["job"])
LAST_SUCCESS = prometheus_client.Gauge("pulse_schedule_last_success_timestamp_seconds",
                                       "When this process last ran the job successfully (Unix time)", ["job"])


@dataclass(frozen=True)
class JobContext:
    """What a job body gets: the transaction holding the job's lock (a savepoint), and the run's time."""

    conn: AsyncConnection
    engine: AsyncEngine
    settings: Settings
    now: datetime


JobBody = Callable[[JobContext], Awaitable[str]]


@dataclass(frozen=True)
class Job:
    """One periodic job: fires every `every`, at epoch-aligned times shifted by `offset` (UTC).

    The body runs inside the job's transaction and returns a one-line summary for the log. A body
    that needs transactions of its own (one per tenant, say) opens them with `ctx.engine`; the lock
    stays held by `ctx.conn` until the body returns.
    """

    name: str
    every: timedelta
    body: JobBody
    offset: timedelta = timedelta(0)
    run_at_start: bool = False  # run once when the process starts even if this slot already ran

    def slot_start(self, now: datetime) -> datetime:
        """The fire time of the slot `now` falls in (the latest aligned fire time <= now)."""
        anchor = EPOCH + self.offset
        slots = (now - anchor) // self.every
        return anchor + slots * self.every


async def _telemetry_partitions(ctx: JobContext) -> str:
    created, dropped = await maintain_telemetry_partitions(
        ctx.conn, today=ctx.now.astimezone(UTC).date(), retention_days=ctx.settings.telemetry_retention_days)
    return f"created {created} partition(s), dropped {dropped}"


async def _quarantine_cleanup(ctx: JobContext) -> str:
    events, counters = await cleanup_quarantine(ctx.conn, now=ctx.now)
    return f"deleted {events} quarantine event(s) and {counters} counter row(s)"


async def _system_metrics_cleanup(ctx: JobContext) -> str:
    return f"deleted {await cleanup_system_metrics(ctx.conn, now=ctx.now)} system metric row(s)"


async def _system_metrics(ctx: JobContext) -> str:
    return f"{len(await sample_system_metrics(ctx.conn, now=ctx.now))} metric(s) sampled"


async def _tenant_activity(ctx: JobContext) -> str:
    hour = ctx.now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    return f"{await record_tenant_activity(ctx.conn, hour_start=hour)} tenant(s) active in the hour from {hour:%H:%M}"


async def _quarantine_rollup(ctx: JobContext) -> str:
    return f"folded {await rollup_quarantine_counters(ctx.conn, now=ctx.now)} per-minute counter row(s) into hours"


async def _sla_reports_daily(ctx: JobContext) -> str:
    made, failed = await run_daily_reports(ctx.engine, now=ctx.now)
    return f"{made} daily SLA report(s) made, {failed} failed"


async def _subscription_lifecycle(ctx: JobContext) -> str:
    run = await run_lifecycle(ctx.conn, now=ctx.now, expire_after_days=ctx.settings.subscription_expire_after_days)
    return run.summary()


# The job table. A new periodic job is one entry here (a body taking JobContext, and its period).
JOBS: tuple[Job, ...] = (
    Job("telemetry_partitions", every=timedelta(hours=1), offset=timedelta(minutes=2), run_at_start=True,
        body=_telemetry_partitions),
    Job("quarantine_cleanup", every=timedelta(days=1), offset=timedelta(hours=3, minutes=10),
        body=_quarantine_cleanup),
    Job("system_metrics_cleanup", every=timedelta(days=1), offset=timedelta(hours=3, minutes=20),
        body=_system_metrics_cleanup),
    Job("subscription_lifecycle", every=timedelta(minutes=10), offset=timedelta(minutes=1),
        body=_subscription_lifecycle),
    Job("sla_reports_daily", every=timedelta(hours=1), offset=timedelta(minutes=20), body=_sla_reports_daily),
    Job("system_metrics", every=timedelta(seconds=5), body=_system_metrics),
    Job("tenant_activity", every=timedelta(hours=1), offset=timedelta(minutes=2), body=_tenant_activity),
    Job("quarantine_rollup", every=timedelta(hours=1), offset=timedelta(minutes=40), body=_quarantine_rollup),
)

_RECORD = text(
    "INSERT INTO scheduled_job_runs (job_name, last_started_at, last_finished_at, last_status, last_error, run_count) "
    "VALUES (:name, :started, :finished, :status, :error, 1) "
    "ON CONFLICT (job_name) DO UPDATE SET last_started_at = EXCLUDED.last_started_at, "
    "  last_finished_at = EXCLUDED.last_finished_at, last_status = EXCLUDED.last_status, "
    "  last_error = EXCLUDED.last_error, run_count = scheduled_job_runs.run_count + 1")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_ERROR_MAX]


async def run_job(engine: AsyncEngine, job: Job, settings: Settings, *, covers: datetime,
                  clock: Clock) -> str:
    """Run `job` unless a twin holds it or a run that started at/after `covers` exists; returns its status."""
    try:
        async with system_tx(engine) as conn:
            got = (await conn.execute(text("SELECT pg_try_advisory_xact_lock(hashtext(:key))"),
                                      {"key": f"pulse-job:{job.name}"})).scalar_one()
            if not got:
                log.debug("job held by another instance", extra={"job": job.name})
                return _count(job, SKIPPED)
            last = (await conn.execute(text("SELECT last_started_at FROM scheduled_job_runs WHERE job_name = :n"),
                                       {"n": job.name})).scalar_one_or_none()
            if last is not None and last >= covers:
                log.debug("job already ran for this slot", extra={"job": job.name, "last_started_at": str(last)})
                return _count(job, SKIPPED)
            started = clock.now()
            mono = clock.monotonic()
            error: str | None = None
            try:
                async with conn.begin_nested():
                    summary = await job.body(JobContext(conn=conn, engine=engine, settings=settings, now=started))
            except Exception as exc:  # a failing job is recorded and logged; the scheduler goes on
                error = _describe(exc)
                log.exception("job failed", extra={"job": job.name})
            else:  # jobs that run every few seconds report at debug level, or they would flood the log
                log.log(logging.DEBUG if job.every < QUIET_BELOW else logging.INFO, "job done: %s", summary,
                        extra={"job": job.name})
            JOB_SECONDS.labels(job.name).observe(clock.monotonic() - mono)
            status = FAILED if error else OK
            await conn.execute(_RECORD, {"name": job.name, "started": started, "finished": clock.now(),
                                         "status": status, "error": error})
        if status == OK:  # committed with its record
            LAST_SUCCESS.labels(job.name).set(started.timestamp())
        return _count(job, status)
    except Exception as exc:  # the transaction itself broke (database gone): record it if we still can
        log.exception("job transaction failed", extra={"job": job.name})
        now = clock.now()
        try:
            async with system_tx(engine) as conn:
                await conn.execute(_RECORD, {"name": job.name, "started": now, "finished": now,
                                             "status": FAILED, "error": _describe(exc)})
        except Exception:  # nothing more to do than the log line above; the next period retries
            log.warning("could not record the failure", extra={"job": job.name})
        return _count(job, FAILED)


def _count(job: Job, status: str) -> str:
    JOB_RUNS.labels(job.name, status).inc()
    return status


class Scheduler:
    """The job table on an APScheduler timer, with the once-per-period claim described in the module doc."""

    def __init__(self, engine: AsyncEngine, settings: Settings, *, jobs: Iterable[Job] = JOBS,
                 clock: Clock | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock or SystemClock()
        self.jobs = {job.name: job for job in jobs}
        self._running: set[asyncio.Task[str]] = set()
        self._aps = AsyncIOScheduler(timezone=UTC)

    @property
    def running(self) -> bool:
        return bool(self._aps.running)

    def start(self) -> None:
        """Start the timers and, in the background, catch up: each job whose current slot has not run yet
        runs now (a daily job whose hour passed while no scheduler ran), and `run_at_start` jobs run once."""
        started = self.clock.now()
        for job in self.jobs.values():
            self._aps.add_job(self._fire, IntervalTrigger(seconds=job.every.total_seconds(),
                                                          start_date=EPOCH + job.offset, timezone=UTC),
                              args=(job.name,), id=job.name, name=job.name, coalesce=True, max_instances=1,
                              misfire_grace_time=max(1, int(job.every.total_seconds() // 2)))
            self._spawn(job, covers=started if job.run_at_start else job.slot_start(started))
        self._aps.start()
        log.info("scheduler started", extra={"jobs": ", ".join(self.jobs)})

    async def run_job_now(self, name: str) -> str:
        """Run a job now unless a run that started after this request covers it (a twin asked at the same time)."""
        job = self.jobs[name]
        return await asyncio.shield(self._spawn(job, covers=self.clock.now()))

    async def wait_idle(self) -> None:
        """Wait until no job run started by this scheduler is in progress."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    async def shutdown(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stop the timers, let runs in progress finish (up to `grace_s`), then cancel what is left."""
        if self._aps.running:
            self._aps.shutdown(wait=True)
            await asyncio.sleep(0)  # AsyncIOScheduler.shutdown is deferred to the next loop iteration
        if self._running:
            _, pending = await asyncio.wait(list(self._running), timeout=grace_s)
            for task in pending:
                log.warning("job still running at shutdown; cancelled", extra={"job": task.get_name()})
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _fire(self, name: str) -> None:
        job = self.jobs[name]
        await asyncio.shield(self._spawn(job, covers=job.slot_start(self.clock.now())))

    def _spawn(self, job: Job, *, covers: datetime) -> asyncio.Task[str]:
        task = asyncio.create_task(run_job(self.engine, job, self.settings, covers=covers, clock=self.clock),
                                   name=job.name)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task


async def run(settings: Settings, stop: asyncio.Event, *, jobs: Iterable[Job] = JOBS, clock: Clock | None = None,
              on_started: Callable[[Scheduler], Any] | None = None) -> int:
    """The `pulse schedule` process: run the job table until `stop`, then finish the jobs in hand and return 0."""
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it logs every execution at INFO
    async with worker_context("schedule", settings, stop) as ctx:
        scheduler = Scheduler(ctx.engine, settings, jobs=jobs, clock=clock)

        async def scheduler_ready() -> tuple[bool, str]:
            return scheduler.running, ("" if scheduler.running else "timers stopped")

        ctx.health.ready_checks["scheduler"] = scheduler_ready
        scheduler.start()
        if on_started is not None:
            on_started(scheduler)
        try:
            await stop.wait()
        finally:
            log.info("stopping: finishing jobs in progress")
            await scheduler.shutdown()
    return 0
