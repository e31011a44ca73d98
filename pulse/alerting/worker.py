"""`pulse evaluate`: wakes on ingest's per-batch NOTIFY, evaluates those devices, runs liveness each second.

Several instances share the devices by partition (pulse.alerting.partitions): each evaluates only the devices of
the partitions it holds, and catches up on a partition's recent devices when it gains one.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta
from itertools import islice

import asyncpg
import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.evaluator import NEXT_DUE_HORIZON, DeviceKey, Evaluator, LivenessResult
from pulse.alerting.guard import IngestState, guarded_liveness, ingest_state
from pulse.alerting.lag import WakeupLag
from pulse.alerting.partitions import PARTITIONS, PartitionOwner, partition_sql
from pulse.clock import Clock, SystemClock
from pulse.db import connect_raw, is_data_error, system_tx
from pulse.ingest.heartbeat import instance_name
from pulse.runtime import TRANSIENT_DB_ERRORS, Backoff, wait_or_stop, worker_context
from pulse.settings import Settings

log = logging.getLogger("pulse.evaluate")

TELEMETRY_CHANNEL = "pulse_telemetry"
RULES_CHANNEL = "pulse_rules_changed"
RULES_REFRESH = timedelta(seconds=30)
LIVENESS_EVERY = timedelta(seconds=1)
"""How often the ingest guard is read (a pass runs at once when ingest comes back), and the shortest time between
passes that a poke (a device back ONLINE, partitions moved) asks for."""
LIVENESS_IDLE = NEXT_DUE_HORIZON
"""The longest time between two passes. A pass runs at the moment the next device is due (it knows every due time
within this horizon), so this one only catches what no due time foretells: a shortened heartbeat interval, a device
made ACTIVE again, a maintenance window that ended with its device still silent."""
LIVENESS_MIN_GAP = timedelta(seconds=0.2)
"""Never two passes closer than this."""
CATCH_UP = timedelta(minutes=10)
RECONNECT_MARGIN = timedelta(seconds=5)
MAX_BATCH = 2000
"""Devices evaluated per loop turn at most; the rest wait for the next turn, so rounds and liveness stay on time."""


_PAIRS = msgspec.json.Decoder(list[tuple[str, str]])


def parse_wakeup(payload: str) -> list[DeviceKey]:
    """Ingest's NOTIFY payload: a JSON list of [tenant_id, device_id] pairs (or {"devices": [...]})."""
    try:
        return _PAIRS.decode(payload)  # what ingest sends, decoded and checked in one step
    except msgspec.DecodeError:
        pass  # anything else: taken apart leniently below
    try:
        data = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        log.warning("ignoring malformed wake-up payload", extra={"payload": payload[:200]})
        return []
    if isinstance(data, dict):
        data = data.get("devices", [])
    out: list[DeviceKey] = []
    for item in data if isinstance(data, list) else []:
        if isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(x, str) for x in item):
            out.append((item[0], item[1]))
    return out


class Wakeups:
    """The LISTEN connection (ingest's per-batch device lists, rule changes); reconnects after a lost connection."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.conn: asyncpg.Connection | None = None
        self.pending: set[DeviceKey] = set()
        self.wake = asyncio.Event()
        self.rules_dirty = asyncio.Event()
        self.lag = WakeupLag()

    def _on_telemetry(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.pending.update(parse_wakeup(payload))
        self.lag.woke()
        self.wake.set()

    def _on_rules(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        self.rules_dirty.set()
        self.wake.set()

    async def ensure(self) -> bool:
        """Connect if not connected; True when this call (re)connected, so notifications may have been missed."""
        if self.conn is not None and not self.conn.is_closed():
            return False
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None
        conn = await connect_raw(self.database_url, "pulse-evaluate-listen")
        await conn.add_listener(TELEMETRY_CHANNEL, self._on_telemetry)
        await conn.add_listener(RULES_CHANNEL, self._on_rules)
        self.conn = conn
        return True

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()


async def _changed_since(engine: AsyncEngine, since: datetime, partitions: AbstractSet[int]) -> set[DeviceKey]:
    """Devices of these partitions whose state changed after `since` (what a listener may have missed)."""
    if not partitions:
        return set()
    sql = "SELECT tenant_id, device_id FROM device_state WHERE updated_at > :since"
    params: dict[str, object] = {"since": since}
    if len(partitions) < PARTITIONS:
        sql += f" AND {partition_sql()} = ANY(CAST(:parts AS int[]))"
        params["parts"] = sorted(partitions)
    async with system_tx(engine) as conn:
        return {(r[0], r[1]) for r in await conn.execute(text(sql), params)}


GC_FULL_EVERY = 100
"""Collections of the younger generations between two full collections (Python's default is 10; see
settle_collector)."""


def settle_collector() -> None:
    """Tune Python's cyclic collector for a `pulse evaluate` process, once its modules are loaded.

    Every turn replaces what the evaluator keeps per device (its last judged readings, reused window verdicts) and
    holds a chunk's device states across several queries, so objects that die a moment later survive the young
    generations. With the default thresholds that made a full collection run every 1-2 s, each a pause of 60-120 ms
    over everything in the process, freeing next to nothing (bench/evaluate_pass.py: 47 full collections, 2.8 s, in
    40 passes). The start-up heap (the modules) is frozen out of the collector's view, and full collections run a
    tenth as often; what dies by reference count is freed at once as always.
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, GC_FULL_EVERY)


class LivenessPasses:
    """The liveness passes of this instance's partitions, in a task of their own beside the evaluation loop, so that
    a long evaluation turn does not make a silent device late.

    A pass runs at the moment the next device is due (see liveness_pass), at the latest LIVENESS_IDLE after the last
    one, and soon after a poke; in between, the ingest guard alone is read every LIVENESS_EVERY, and a change of it
    (ingest down, or back) runs a pass at once. A fleet that keeps talking thus costs a pass every few seconds, not
    every second. A failing database is retried each LIVENESS_EVERY (the evaluation loop reports it); any other
    error ends the task, and the loop with it."""

    def __init__(self, engine: AsyncEngine, owner: PartitionOwner, clock: Clock, *, base_url: str = "") -> None:
        self.engine, self.owner, self.clock, self.base_url = engine, owner, clock, base_url
        self.state: IngestState | None = None  # as the last pass or guard read found ingest (None before the first)
        self._wake = asyncio.Event()
        self._poked = False
        self._passed_at: datetime | None = None

    def poke(self) -> None:
        """A device's silence started anew from ONLINE, or this instance's partitions moved: a due time no pass has
        seen. The next pass runs LIVENESS_EVERY after the last one at the latest."""
        self._poked = True
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        next_at = self.clock.now()
        failing = False
        while not stop.is_set():
            now = self.clock.now()
            if self._poked:
                self._poked = False
                next_at = min(next_at, max(now, (self._passed_at or now) + LIVENESS_EVERY))
            if self.owner.owned:
                try:
                    async with system_tx(self.engine) as conn:
                        if now >= next_at:
                            state, result = await guarded_liveness(
                                conn, now, base_url=self.base_url,
                                partitions=None if self.owner.owns_all else self.owner.owned)
                            self._passed_at, next_at = now, self._next_pass(now, result)
                        else:
                            state = await ingest_state(conn, now)
                            if self.state is not None and (state.paused, state.ready_since) != (
                                    self.state.paused, self.state.ready_since):
                                next_at = now  # silence counts differently from now on
                except TRANSIENT_DB_ERRORS as exc:
                    if not failing:
                        log.warning("liveness pass failed; retrying", extra={"error": str(exc)[:500]})
                    failing = True
                    next_at = now + LIVENESS_EVERY
                else:
                    failing = False
                    self._note(state)
            wait = min(next_at - self.clock.now(), LIVENESS_EVERY) if self.owner.owned else LIVENESS_MIN_GAP
            await wait_or_stop(stop, self._wake, max(0.0, wait.total_seconds()))

    @staticmethod
    def _next_pass(now: datetime, result: LivenessResult | None) -> datetime:
        if result is None:  # paused: ingest is down
            return now + LIVENESS_EVERY
        if result.next_due is None:
            return now + LIVENESS_IDLE
        return max(now + LIVENESS_MIN_GAP, min(now + LIVENESS_IDLE, result.next_due))

    def _note(self, state: IngestState) -> None:
        if state.paused != (self.state.paused if self.state is not None else False):
            if state.paused:
                log.error("ingest is down: device liveness paused, no device is marked STALE or OFFLINE until it "
                          "is back", extra={"ingest": state.detail[:500]})
            else:
                log.warning("ingest is back: device liveness resumed, silence counted from %s", state.ready_since)
        self.state = state


def _take_batch(queue: dict[DeviceKey, None], owner: PartitionOwner) -> list[DeviceKey]:
    """This turn's devices: the first MAX_BATCH owned ones in arrival order; devices of other partitions met on the
    way are dropped (their owner evaluates them) and the rest stay queued, oldest first."""
    batch: list[DeviceKey] = []
    taken = 0
    for key in queue:
        taken += 1
        if owner.owns(*key):
            batch.append(key)
            if len(batch) == MAX_BATCH:
                break
    rest = list(islice(queue, taken, None))
    queue.clear()
    queue.update(dict.fromkeys(rest))
    return batch


async def run(settings: Settings, stop: asyncio.Event, *, clock: Clock | None = None) -> int:
    clock = clock or SystemClock()
    async with worker_context("evaluate", settings, stop) as ctx:
        evaluator = Evaluator(ctx.engine, base_url=settings.base_url, chunk=settings.evaluate_chunk)
        wakeups = Wakeups(settings.require_database_url())
        owner = PartitionOwner(settings.require_database_url(), instance_name("evaluate", "pulse-evaluate"),
                               round_s=settings.evaluate_rebalance_s)
        backoff = Backoff(ctx.health)

        async def partitions_check() -> tuple[bool, str]:
            return True, f"owns {len(owner.owned)} of {PARTITIONS} partitions, {owner.live} evaluator(s) live"

        ctx.health.ready_checks["partitions"] = partitions_check
        round_every = timedelta(seconds=settings.evaluate_rebalance_s)
        catch_up: set[int] = set()  # partitions gained whose recent devices are still to be evaluated
        queue: dict[DeviceKey, None] = {}  # devices to evaluate, in arrival order (an ordered set)
        heard_until = clock.now()
        rules_loaded_at = clock.now() - RULES_REFRESH
        rebalanced_at: datetime | None = None
        passes = LivenessPasses(ctx.engine, owner, clock, base_url=settings.base_url)
        liveness = asyncio.create_task(passes.run(stop))
        log.info("evaluator starting", extra={"instance": owner.instance})
        try:
            while not stop.is_set():
                batch: list[DeviceKey] = []
                try:
                    now = clock.now()
                    if await wakeups.ensure():
                        wakeups.pending |= await _changed_since(ctx.engine, heard_until - RECONNECT_MARGIN,
                                                                owner.owned)
                        wakeups.rules_dirty.set()
                    if wakeups.rules_dirty.is_set() or now - rules_loaded_at >= RULES_REFRESH:
                        wakeups.rules_dirty.clear()
                        await evaluator.load_rules()
                        evaluator.prune_window_verdicts(now)
                        rules_loaded_at = now
                    if rebalanced_at is None or now - rebalanced_at >= round_every:
                        rebalanced_at = now
                        before = owner.owned
                        try:
                            await owner.rebalance(ctx.engine, now)
                        finally:
                            catch_up = (catch_up | (owner.owned - before)) & owner.owned
                            if before - owner.owned:
                                evaluator.forget_devices(owner.owns)
                            if owner.owned - before:
                                evaluator.gaps_checked_at = None  # judge the gained devices' gaps soon
                            if owner.owned != before:
                                passes.poke()
                    if catch_up:  # a gained partition: its devices heard within CATCH_UP are evaluated first
                        wakeups.pending |= await _changed_since(ctx.engine, now - CATCH_UP, catch_up)
                        catch_up = set()
                    queue.update(dict.fromkeys([*wakeups.pending, *evaluator.due_pending(now)]))
                    wakeups.pending.clear()
                    taken = wakeups.lag.take()
                    batch = _take_batch(queue, owner)
                    marked = evaluator.marked_online
                    if batch:
                        try:
                            await evaluator.evaluate_devices(batch, now)
                        except TRANSIENT_DB_ERRORS as exc:
                            if not is_data_error(exc):
                                raise
                            await evaluator.evaluate_each(batch, now)  # one device's data must not stop the rest
                    wakeups.lag.done(taken if batch else None, len(queue))
                    if evaluator.marked_online != marked:
                        passes.poke()  # their silence starts now: the next pass sees when they are due
                    if liveness.done():
                        liveness.result()  # it stopped on an error that is not the database's: so does the loop
                    if owner.owned and (state := passes.state) is not None:
                        await evaluator.check_gaps(now, paused=state.paused,
                                                   grace_from=state.ready_since if state.known else None,
                                                   owns=None if owner.owns_all else owner.owns)
                    heard_until = now
                except TRANSIENT_DB_ERRORS as exc:
                    queue = {**dict.fromkeys(batch), **queue}  # evaluate these first once the database answers
                    await backoff.failed(exc, stop)
                    continue
                backoff.ok()
                if not wakeups.pending and not queue:
                    await wait_or_stop(stop, wakeups.wake, min(settings.evaluate_poll_ms / 1000, 1.0))
        finally:
            liveness.cancel()
            await asyncio.gather(liveness, return_exceptions=True)
            await owner.close(ctx.engine, clock.now())
            await wakeups.close()
    return 0
