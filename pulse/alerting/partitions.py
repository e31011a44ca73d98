"""Evaluator partitions: devices hashed into 64 partitions, each evaluated by the one `pulse evaluate` holding it.

A device's partition is md5("{tenant_id}/{device_id}") read as a big-endian 32-bit number, modulo 64.
`partition_of` (Python) and `partition_sql` (PostgreSQL) compute the same value; tests check they agree.

Each evaluator holds the session advisory locks (LOCK_CLASS, partition) of the partitions it owns on a connection
of their own (its lock session, named after the instance in `application_name`), so a dead instance's partitions
are free the moment PostgreSQL sees its connection gone. Every round (`PULSE_EVALUATE_REBALANCE_S`) an instance
beats in `service_heartbeats` (process type `evaluate`), counts the live evaluators (ready, beat within
GONE_AFTER_ROUNDS rounds, and lock session still open) and moves toward its fair share, ceil(64 / live): it gives
back the partitions above its share and takes free ones up to it (in random order, so that instances starting
together collide less). Nobody takes more than its share, so nothing is handed back and forth. An instance killed
without a goodbye stops counting the moment its lock session ends, so the others take its partitions next round.

The caller (the evaluator loop) rebuilds a partition's in-memory state when it gains it and drops it when it
loses it. The partial unique index on open alerts stays the last guard for the moment two instances might judge
the same device (a lock connection lost in the middle of a round).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import asyncpg
import prometheus_client
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import connect_raw, system_tx
from pulse.runtime import TRANSIENT_DB_ERRORS

log = logging.getLogger("pulse.evaluate.partitions")

PARTITIONS = 64
ALL_PARTITIONS = frozenset(range(PARTITIONS))
LOCK_CLASS = 0x70756C73
"""First key of the two-key advisory locks (ASCII "puls"); the second key is the partition number."""
GONE_AFTER_ROUNDS = 3
"""An evaluator whose beat is older than this many rounds no longer counts toward the fair share."""
LOCK_TIMEOUT_S = 5.0
PROCESS_TYPE = "evaluate"

# The server drops a vanished client's session (and its locks) after ~25 s of silence instead of the OS default
# of hours; a client that simply died is noticed at once (its socket is closed).
_KEEPALIVES = ("SELECT set_config('tcp_keepalives_idle', '10', false), "
               "set_config('tcp_keepalives_interval', '5', false), set_config('tcp_keepalives_count', '3', false)")
_LOCK_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
                                                 TimeoutError)

OWNED = prometheus_client.Gauge("pulse_evaluate_partitions_owned", "Device partitions this evaluator holds (of 64)")
LIVE = prometheus_client.Gauge("pulse_evaluate_instances_live", "Evaluators counted live in the last round")


@lru_cache(maxsize=262_144)
def partition_of(tenant_id: str, device_id: str) -> int:
    """The device's partition, 0-63 (the same as `partition_sql` computes in PostgreSQL)."""
    digest = hashlib.md5(f"{tenant_id}/{device_id}".encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big") % PARTITIONS


def partition_sql(tenant: str = "tenant_id", device: str = "device_id") -> str:
    """`partition_of` as a SQL expression over two text columns (names are trusted code, never input)."""
    return (f"(CAST(CAST('x' || substr(md5({tenant} || '/' || {device}), 1, 8) AS bit(32)) AS bigint) "
            f"% {PARTITIONS})")


def session_name(instance: str) -> str:
    """The `application_name` of an instance's lock session (PostgreSQL keeps 63 bytes of it)."""
    return SESSION_PREFIX + hashlib.md5(instance.encode(), usedforsecurity=False).hexdigest()[:12]


def fair_share(live: int) -> int:
    """How many partitions one of `live` evaluators aims to hold: ceil(64 / live), so that all are covered."""
    return math.ceil(PARTITIONS / max(1, live))


@dataclass(frozen=True)
class Plan:
    acquire: tuple[int, ...] = ()
    release: tuple[int, ...] = ()


def plan(owned: AbstractSet[int], free: AbstractSet[int], live: int, rng: random.Random | None = None) -> Plan:
    """One round's move toward the fair share: give back the highest partitions above it, or try free ones up to it."""
    share = fair_share(live)
    if len(owned) > share:
        return Plan(release=tuple(sorted(owned)[share:]))
    candidates = sorted(set(free) - set(owned))
    want = min(share - len(owned), len(candidates))
    if want <= 0:
        return Plan()
    return Plan(acquire=tuple(sorted((rng or random).sample(candidates, want))))


_BEAT = text("""
INSERT INTO service_heartbeats AS h (instance, process_type, ready, ready_since, beat_at, detail)
VALUES (:i, :p, :r, CASE WHEN :r THEN CAST(:now AS timestamptz) END, :now, :d)
ON CONFLICT (instance) DO UPDATE SET
  process_type = EXCLUDED.process_type,
  ready = EXCLUDED.ready,
  ready_since = CASE WHEN NOT EXCLUDED.ready THEN NULL WHEN h.ready THEN coalesce(h.ready_since, EXCLUDED.beat_at)
                     ELSE EXCLUDED.beat_at END,
  beat_at = EXCLUDED.beat_at,
  detail = EXCLUDED.detail
""")
SESSION_PREFIX = "pulse-evaluate-partitions "
# An instance opens its lock session before it first beats, so a live one always has both.
_LIVE_PEERS = text(f"""
SELECT count(*) FROM service_heartbeats h
WHERE h.process_type = :p AND h.ready AND h.beat_at > :gone AND h.instance <> :i
  AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = current_database()
              AND a.application_name = '{SESSION_PREFIX}' || substr(md5(h.instance), 1, 12))
""")
_FORGET = text("DELETE FROM service_heartbeats WHERE process_type = :p AND beat_at < :before")
_HELD = """
SELECT objid::int AS partition FROM pg_locks
WHERE locktype = 'advisory' AND granted AND classid = $1::int::oid AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_ACQUIRE = "SELECT p FROM unnest($2::int[]) AS p WHERE pg_try_advisory_lock($1, p)"
_RELEASE = "SELECT pg_advisory_unlock($1, p) FROM unnest($2::int[]) AS p"


class PartitionOwner:
    """This instance's share of the partitions: its lock connection, its heartbeat and its rebalance rounds.

    `owned` only changes inside `rebalance` and `close`; the caller compares it before and after.
    """

    def __init__(self, database_url: str, instance: str, *, round_s: float, rng: random.Random | None = None) -> None:
        self.database_url = database_url
        self.instance = instance
        self.round_s = round_s
        self.owned: frozenset[int] = frozenset()
        self.live = 1
        self._rng = rng or random.Random()
        self._conn: asyncpg.Connection | None = None

    def owns(self, tenant_id: str, device_id: str) -> bool:
        return partition_of(tenant_id, device_id) in self.owned

    @property
    def owns_all(self) -> bool:
        return self.owned == ALL_PARTITIONS

    async def rebalance(self, engine: AsyncEngine, now: datetime) -> None:
        """One round: check (or open) the lock connection, beat, count live evaluators, give back or take partitions.

        A failing lock connection is dropped with every partition it held first, so nothing is evaluated on the
        strength of locks the server may have let go. Raises on a database error the caller should back off from.
        """
        held = await self._held()
        if held is None:
            lock_conn = await asyncio.wait_for(connect_raw(self.database_url, session_name(self.instance)),
                                               timeout=2 * LOCK_TIMEOUT_S)
            self._conn = lock_conn
            await lock_conn.execute(_KEEPALIVES, timeout=LOCK_TIMEOUT_S)
            held = await self._held()
            if held is None:
                raise ConnectionError("the new partition lock connection failed at once")
        async with system_tx(engine) as conn:
            await conn.execute(_BEAT, {"i": self.instance, "p": PROCESS_TYPE, "r": True, "now": now,
                                       "d": f"owns {len(self.owned)} of {PARTITIONS} partitions"})
            peers = (await conn.execute(_LIVE_PEERS, {"p": PROCESS_TYPE, "i": self.instance,
                                                      "gone": now - self.gone_after})).scalar_one()
            await conn.execute(_FORGET, {"p": PROCESS_TYPE, "before": now - timedelta(days=1)})
        self.live = int(peers) + 1
        LIVE.set(self.live)
        step = plan(self.owned, ALL_PARTITIONS - held, self.live, self._rng)
        try:
            if step.release and self._conn is not None:
                await self._conn.fetch(_RELEASE, LOCK_CLASS, list(step.release), timeout=LOCK_TIMEOUT_S)
                self.owned = self.owned - set(step.release)
                log.info("gave back partitions", extra={"partitions": list(step.release), "live": self.live})
            if step.acquire and self._conn is not None:
                got = [r["p"] for r in await self._conn.fetch(_ACQUIRE, LOCK_CLASS, list(step.acquire),
                                                              timeout=LOCK_TIMEOUT_S)]
                self.owned = self.owned | set(got)
                if got:
                    log.info("took partitions", extra={"partitions": got, "live": self.live})
        except _LOCK_ERRORS as exc:
            self._drop(f"{type(exc).__name__}: {exc}")
        OWNED.set(len(self.owned))

    async def _held(self) -> set[int] | None:
        """Partitions held by anyone now, read on the lock connection (None: it is gone, and so are our locks)."""
        if self._conn is not None and not self._conn.is_closed():
            try:
                return {r["partition"] for r in await self._conn.fetch(_HELD, LOCK_CLASS, timeout=LOCK_TIMEOUT_S)}
            except _LOCK_ERRORS as exc:
                self._drop(f"{type(exc).__name__}: {exc}")
        else:
            self._drop("lock connection closed")
        return None

    @property
    def gone_after(self) -> timedelta:
        return timedelta(seconds=GONE_AFTER_ROUNDS * self.round_s)

    def _drop(self, why: str) -> None:
        """Forget the lock connection and everything it held (the server releases the locks with the session)."""
        if self.owned:
            log.warning("lost the partition locks; taking a share again next round",
                        extra={"error": why[:300], "partitions": len(self.owned)})
        if self._conn is not None:
            self._conn.terminate()
        self._conn = None
        self.owned = frozenset()
        OWNED.set(0)

    async def close(self, engine: AsyncEngine, now: datetime) -> None:
        """Give every partition back and record this instance as stopped, so the others take over at once."""
        if self._conn is not None:
            try:
                await self._conn.close(timeout=LOCK_TIMEOUT_S)
            except _LOCK_ERRORS:
                self._conn.terminate()
        self._conn = None
        self.owned = frozenset()
        OWNED.set(0)
        try:
            async with system_tx(engine) as conn:
                await conn.execute(_BEAT, {"i": self.instance, "p": PROCESS_TYPE, "r": False, "now": now,
                                           "d": "stopped"})
        except TRANSIENT_DB_ERRORS as exc:
            log.debug("stop not recorded: %s", exc)
