"""`pulse schedule`: partition and retention maintenance, and jobs that run once per period across instances."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse import scheduler
from pulse.clock import SystemClock
from pulse.db import system_tx
from pulse.fleet.maintenance import cleanup_quarantine, cleanup_system_metrics, maintain_telemetry_partitions
from pulse.scheduler import JOBS, Job, JobContext, Scheduler
from pulse.settings import Settings

LONG = timedelta(days=3650)  # a period the timer will not reach during a test


def _partition(day: date) -> str:
    return f"telemetry_p{day:%Y%m%d}"


async def _exists(engine: AsyncEngine, relname: str) -> bool:
    async with system_tx(engine) as conn:
        return (await conn.execute(text("SELECT to_regclass(:r) IS NOT NULL"), {"r": relname})).scalar_one()


async def _job_row(engine: AsyncEngine, name: str) -> Any:
    async with system_tx(engine) as conn:
        return (await conn.execute(text("SELECT * FROM scheduled_job_runs WHERE job_name = :n"),
                                   {"n": name})).first()


async def _until(condition: Callable[[], Awaitable[bool]], what: str, deadline_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not await condition():
        assert loop.time() < end, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


class Instances:
    """Scheduler processes run in-process, each with its own stop event, as `pulse schedule` would be run."""

    def __init__(self, settings: Settings, jobs: tuple[Job, ...], count: int = 1) -> None:
        self.schedulers: list[Scheduler] = []
        self.stops = [asyncio.Event() for _ in range(count)]
        self.tasks = [asyncio.create_task(scheduler.run(settings, stop, jobs=jobs,
                                                        on_started=self.schedulers.append))
                      for stop in self.stops]

    async def started(self) -> list[Scheduler]:
        async def all_up() -> bool:
            for task in self.tasks:
                if task.done():
                    task.result()  # surface a crash instead of waiting for the deadline
            return len(self.schedulers) == len(self.tasks)

        await _until(all_up, "the schedulers to start")
        for s in self.schedulers:
            await s.wait_idle()
        return self.schedulers

    async def stop(self) -> list[int]:
        for stop in self.stops:
            stop.set()
        return list(await asyncio.gather(*self.tasks))


async def test_partitions_are_created_a_week_ahead_and_dropped_after_retention(engine: AsyncEngine) -> None:
    today = datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)
    expired, last_kept = today - timedelta(days=95), today - timedelta(days=90)
    async with system_tx(engine) as conn:
        for day in (expired, last_kept):
            await conn.execute(text("SELECT pulse_ensure_telemetry_partitions(:d, :d)"), {"d": day})
    assert await _exists(engine, _partition(expired))
    assert not await _exists(engine, _partition(tomorrow + timedelta(days=7)))

    async with system_tx(engine) as conn:
        created, dropped = await maintain_telemetry_partitions(conn, today=tomorrow, retention_days=90)

    assert created >= 1 and dropped >= 1
    assert await _exists(engine, _partition(tomorrow + timedelta(days=7)))
    assert await _exists(engine, _partition(today))
    assert not await _exists(engine, _partition(expired))
    assert await _exists(engine, _partition(last_kept)), "the partition exactly 90 days old is still kept"

    async with system_tx(engine) as conn:  # idempotent: nothing left to do
        assert await maintain_telemetry_partitions(conn, today=tomorrow, retention_days=90) == (0, 0)


async def test_quarantine_and_system_metrics_cleanup_keep_recent_rows(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    tenant = f"q-{secrets.token_hex(4)}"
    metric = f"test.metric.{secrets.token_hex(4)}"
    async with system_tx(engine) as conn:
        for age, reason in ((31, "old"), (29, "recent")):
            await conn.execute(text("INSERT INTO quarantine_events (tenant_id, received_at, transport, reason) "
                                    "VALUES (:t, :at, 'MQTT', :r)"),
                               {"t": tenant, "at": now - timedelta(days=age), "r": reason})
        for age, reason in ((91, "old"), (89, "recent")):
            await conn.execute(text(
                "INSERT INTO quarantine_counters (tenant_id, minute, reason, count) VALUES (:t, :m, :r, 5)"),
                {"t": tenant, "m": now - timedelta(days=age), "r": reason})
        for age in (31, 1):
            await conn.execute(text("INSERT INTO system_metrics (time, metric, value) VALUES (:at, :m, :v)"),
                               {"at": now - timedelta(days=age), "m": metric, "v": age})

    async with system_tx(engine) as conn:
        events, counters = await cleanup_quarantine(conn, now=now)
        metrics = await cleanup_system_metrics(conn, now=now)
    assert events >= 1 and counters >= 1 and metrics >= 1

    async with system_tx(engine) as conn:
        left_events = (await conn.execute(text("SELECT reason FROM quarantine_events WHERE tenant_id = :t"),
                                          {"t": tenant})).scalars().all()
        left_counters = (await conn.execute(text("SELECT reason FROM quarantine_counters WHERE tenant_id = :t"),
                                            {"t": tenant})).scalars().all()
        left_metrics = (await conn.execute(text("SELECT value FROM system_metrics WHERE metric = :m"),
                                           {"m": metric})).scalars().all()
    assert left_events == ["recent"] and left_counters == ["recent"] and left_metrics == [1]


async def test_two_schedulers_run_a_forced_job_exactly_once(settings: Settings, engine: AsyncEngine) -> None:
    partitions = next(j for j in JOBS if j.name == "telemetry_partitions")
    # the real job, on a period the timer will not reach while the test runs
    instances = Instances(settings, (replace(partitions, every=LONG),), count=2)
    first, second = await instances.started()
    before = await _job_row(engine, "telemetry_partitions")
    assert before is not None and before.last_status == "ok", "the partition job runs when a scheduler starts"

    asked = datetime.now(UTC)
    statuses = await asyncio.gather(first.run_job_now("telemetry_partitions"),
                                    second.run_job_now("telemetry_partitions"))
    # a twin asked before that run started but comes late, after it committed: covered, not rerun
    late = await scheduler.run_job(engine, second.jobs["telemetry_partitions"], settings, covers=asked,
                                   clock=SystemClock())

    assert sorted(statuses) == ["ok", "skipped"] and late == "skipped"
    after = await _job_row(engine, "telemetry_partitions")
    assert after.run_count == before.run_count + 1
    assert after.last_status == "ok" and after.last_error is None
    assert after.last_started_at > before.last_started_at and after.last_finished_at >= after.last_started_at
    assert await instances.stop() == [0, 0]


async def test_a_failing_job_is_recorded_rolled_back_and_the_scheduler_goes_on(settings: Settings,
                                                                                engine: AsyncEngine) -> None:
    suffix = secrets.token_hex(4)
    metric = f"test.half-done.{suffix}"

    async def explode(ctx: JobContext) -> str:
        await ctx.conn.execute(text("INSERT INTO system_metrics (time, metric, value) VALUES (:at, :m, 1)"),
                               {"at": ctx.now, "m": metric})
        raise RuntimeError("disk on fire")

    async def fine(ctx: JobContext) -> str:
        return "nothing to do"

    jobs = (Job(f"explode-{suffix}", every=LONG, body=explode), Job(f"fine-{suffix}", every=LONG, body=fine))
    instances = Instances(settings, jobs)
    (sched,) = await instances.started()
    row = await _job_row(engine, f"explode-{suffix}")
    assert row.last_status == "failed" and "RuntimeError: disk on fire" in row.last_error and row.run_count == 1

    assert await sched.run_job_now(f"explode-{suffix}") == "failed"
    assert await sched.run_job_now(f"fine-{suffix}") == "ok"

    row = await _job_row(engine, f"explode-{suffix}")
    assert row.run_count == 2 and row.last_finished_at >= row.last_started_at
    assert (await _job_row(engine, f"fine-{suffix}")).last_status == "ok"
    async with system_tx(engine) as conn:
        leftovers = (await conn.execute(text("SELECT count(*) FROM system_metrics WHERE metric = :m"),
                                        {"m": metric})).scalar_one()
    assert leftovers == 0, "a failed job's writes are rolled back"
    assert await instances.stop() == [0]


async def test_the_timer_runs_jobs_every_period(settings: Settings, engine: AsyncEngine) -> None:
    name = f"tick-{secrets.token_hex(4)}"

    async def tick(ctx: JobContext) -> str:
        return "tick"

    instances = Instances(settings, (Job(name, every=timedelta(seconds=1), body=tick),))
    await instances.started()

    async def ran_three_times() -> bool:
        row = await _job_row(engine, name)
        return row is not None and row.run_count >= 3

    await _until(ran_three_times, "three timer-driven runs")
    assert await instances.stop() == [0]


async def test_start_catches_up_a_missed_slot_but_never_reruns_a_covered_one(settings: Settings,
                                                                             engine: AsyncEngine) -> None:
    suffix = secrets.token_hex(4)
    covered, missed = f"covered-{suffix}", f"missed-{suffix}"
    now = datetime.now(UTC)
    daily = timedelta(days=1)
    async with system_tx(engine) as conn:
        for name, last in ((covered, Job(covered, every=daily, body=None).slot_start(now)),  # type: ignore[arg-type]
                           (missed, now - timedelta(days=2))):
            await conn.execute(text(
                "INSERT INTO scheduled_job_runs (job_name, last_started_at, last_finished_at, last_status, run_count) "
                "VALUES (:n, :at, :at, 'ok', 7)"), {"n": name, "at": last})

    async def body(ctx: JobContext) -> str:
        return "done"

    instances = Instances(settings, (Job(covered, every=daily, body=body), Job(missed, every=daily, body=body)))
    await instances.started()

    assert (await _job_row(engine, covered)).run_count == 7
    assert (await _job_row(engine, missed)).run_count == 8
    assert await instances.stop() == [0]


async def test_stop_lets_the_job_in_hand_finish(settings: Settings, engine: AsyncEngine) -> None:
    name = f"slow-{secrets.token_hex(4)}"
    running, release = asyncio.Event(), asyncio.Event()

    async def slow(ctx: JobContext) -> str:
        running.set()
        await release.wait()
        return "finished"

    instances = Instances(settings, (Job(name, every=LONG, body=slow),))
    await asyncio.wait_for(running.wait(), 30)
    instances.stops[0].set()
    await asyncio.sleep(0.2)
    assert not instances.tasks[0].done(), "the scheduler waits for the job in hand"
    release.set()
    assert await asyncio.wait_for(instances.tasks[0], 30) == 0
    row = await _job_row(engine, name)
    assert row.last_status == "ok" and row.run_count == 1
