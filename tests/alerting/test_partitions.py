"""Evaluator partitions: the hash agrees between Python and PostgreSQL, shares converge to a disjoint cover of all
64 partitions, and real advisory locks move to the survivors when an evaluator stops or dies."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.evaluator import Evaluator, liveness_pass
from pulse.alerting.partitions import (
    ALL_PARTITIONS,
    LOCK_CLASS,
    PARTITIONS,
    PartitionOwner,
    fair_share,
    partition_of,
    partition_sql,
    plan,
)
from pulse.db import system_tx
from pulse.settings import Settings
from tests.conftest import make_device, make_tenant

TENANT_IDS = st.from_regex(r"[a-z0-9][a-z0-9-]{1,62}", fullmatch=True)
DEVICE_IDS = st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True)


async def _sql_partitions(engine: AsyncEngine, keys: list[tuple[str, str]]) -> list[int]:
    async with system_tx(engine) as conn:
        return [int(r[0]) for r in await conn.execute(text(
            f"SELECT {partition_sql('u.t', 'u.d')} FROM unnest(CAST(:t AS text[]), CAST(:d AS text[])) "
            f"WITH ORDINALITY AS u(t, d, n) ORDER BY n"), {"t": [k[0] for k in keys], "d": [k[1] for k in keys]})]


async def test_python_and_postgresql_compute_the_same_partition(engine: AsyncEngine) -> None:
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-"
    keys = [("acme", "fridge-1"), ("t-0", "a"), ("z9", "Z" * 128), ("demo", "sensor.12:ab-C")]
    keys += [(f"tenant-{rng.randrange(10**6)}", "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 128))))
             for _ in range(5000)]
    assert await _sql_partitions(engine, keys) == [partition_of(t, d) for t, d in keys]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(TENANT_IDS, DEVICE_IDS), min_size=1, max_size=20))
async def test_partitions_agree_for_any_valid_ids(engine: AsyncEngine, keys: list[tuple[str, str]]) -> None:
    assert await _sql_partitions(engine, keys) == [partition_of(t, d) for t, d in keys]


def test_devices_spread_over_every_partition() -> None:
    counts = [0] * PARTITIONS
    for i in range(64_000):
        counts[partition_of(f"tenant-{i % 10}", f"device-{i}")] += 1
    assert min(counts) > 800 and max(counts) < 1200  # 1,000 each on average


def test_fair_share_covers_every_partition() -> None:
    assert [fair_share(n) for n in (0, 1, 2, 3, 5, 64, 100)] == [64, 64, 32, 22, 13, 1, 1]
    for live in range(1, 130):
        assert fair_share(live) * live >= PARTITIONS


def test_plan_gives_back_the_highest_above_the_share_and_takes_free_ones_up_to_it() -> None:
    assert plan(set(range(40)), set(range(40, 64)), live=2).release == tuple(range(32, 40))
    take = plan(set(range(10)), set(range(30, 64)), live=2, rng=random.Random(1))
    assert len(take.acquire) == 22 and set(take.acquire) <= set(range(30, 64)) and not take.release
    assert plan(set(range(10)), {50, 51}, live=2).acquire == (50, 51)  # fewer free than wanted: all of them
    assert plan(set(range(32)), set(range(32, 64)), live=2) == plan(set(), set(), live=1)  # at the share: nothing


def _round(owned: list[set[int]], live: int, order: list[int], rng: random.Random) -> bool:
    """Every instance plays one round in `order` (as if serialized by the locks); True when anything moved."""
    moved = False
    for i in order:
        free = ALL_PARTITIONS - set().union(*owned)
        step = plan(owned[i], free, live, rng)
        owned[i] -= set(step.release)
        owned[i] |= set(step.acquire)
        moved = moved or bool(step.release or step.acquire)
    return moved


@given(st.integers(1, 9), st.integers(0, 2**32), st.integers(0, 8))
def test_shares_converge_to_a_disjoint_cover_and_survive_a_death(instances: int, seed: int, dead: int) -> None:
    rng = random.Random(seed)
    owned: list[set[int]] = [set() for _ in range(instances)]
    for p in ALL_PARTITIONS:  # any starting point: uneven shares (a newcomer has none), some partitions free
        holder = rng.randrange(instances + 1)
        if holder < instances:
            owned[holder].add(p)
    for _ in range(4):  # those above the share give back in one round, the others take in the next
        _round(owned, instances, rng.sample(range(instances), instances), rng)
    assert not _round(owned, instances, list(range(instances)), rng), "settled shares stay put"
    assert set().union(*owned) == ALL_PARTITIONS
    assert sum(len(o) for o in owned) == PARTITIONS  # disjoint
    assert max(len(o) for o in owned) <= fair_share(instances)
    if instances > 1:  # one dies: its locks vanish; once it no longer counts as live the others cover everything
        owned.pop(dead % instances)
        for _ in range(3):
            _round(owned, instances - 1, rng.sample(range(instances - 1), instances - 1), rng)
        assert set().union(*owned) == ALL_PARTITIONS
        assert sum(len(o) for o in owned) == PARTITIONS


async def _clear_evaluator_beats(engine: AsyncEngine) -> None:
    async with system_tx(engine) as conn:  # this test owns the evaluator instances
        await conn.execute(text("DELETE FROM service_heartbeats WHERE process_type = 'evaluate'"))


async def test_two_owners_split_the_partitions_and_the_survivor_takes_a_dead_ones_share(
        engine: AsyncEngine, settings: Settings) -> None:
    await _clear_evaluator_beats(engine)
    url = settings.require_database_url()
    a = PartitionOwner(url, "evaluate:test-a", round_s=2, rng=random.Random(1))
    b = PartitionOwner(url, "evaluate:test-b", round_s=2, rng=random.Random(2))
    now = datetime.now(UTC)
    try:
        await a.rebalance(engine, now)
        assert a.owned == ALL_PARTITIONS  # alone: everything
        await b.rebalance(engine, now)
        assert b.owned == frozenset()  # nothing free yet
        await a.rebalance(engine, now + timedelta(seconds=2))  # sees b (beat and lock session): gives half back
        assert a.live == 2
        await b.rebalance(engine, now + timedelta(seconds=2))
        assert len(a.owned) == len(b.owned) == 32 and not a.owned & b.owned
        assert {partition_of("acme", f"d{i}") for i in range(200) if a.owns("acme", f"d{i}")} <= a.owned

        assert b._conn is not None
        b._conn.terminate()  # b dies without a goodbye: its locks and its lock session end, its beat stays
        lost = set(ALL_PARTITIONS - a.owned)
        for i in range(20):  # within its beat's 3 rounds: b no longer counts once the server ended its session
            await a.rebalance(engine, now + timedelta(seconds=4, milliseconds=10 * i))
            if a.owned == ALL_PARTITIONS:
                break
            await asyncio.sleep(0.2)
        assert a.owned == ALL_PARTITIONS and lost <= a.owned and a.live == 1
    finally:
        await a.close(engine, now)
        await b.close(engine, now)


async def test_a_stopping_owner_hands_over_at_once(engine: AsyncEngine, settings: Settings) -> None:
    await _clear_evaluator_beats(engine)
    url = settings.require_database_url()
    a = PartitionOwner(url, "evaluate:test-a", round_s=2)
    b = PartitionOwner(url, "evaluate:test-b", round_s=2)
    now = datetime.now(UTC)
    try:
        await b.rebalance(engine, now)
        await a.rebalance(engine, now)
        await b.rebalance(engine, now)
        await a.rebalance(engine, now)
        assert len(a.owned) == len(b.owned) == 32
        await b.close(engine, now)  # SIGTERM: locks released, beat says stopped
        await a.rebalance(engine, now + timedelta(seconds=2))
        assert a.owned == ALL_PARTITIONS
    finally:
        await a.close(engine, now)
        await b.close(engine, now)


async def test_an_owner_that_lost_its_lock_connection_claims_only_the_locks_it_holds_again(
        engine: AsyncEngine, settings: Settings) -> None:
    await _clear_evaluator_beats(engine)
    a = PartitionOwner(settings.require_database_url(), "evaluate:test-a", round_s=2)
    now = datetime.now(UTC)
    try:
        await a.rebalance(engine, now)
        assert a.owned == ALL_PARTITIONS
        assert a._conn is not None
        a._conn.terminate()  # the link broke: the server lets the locks go with the session
        assert a.owns("acme", "d1")  # (until the next round notices)
        for i in range(1, 20):
            await a.rebalance(engine, now + timedelta(seconds=2 * i))
            assert a._conn is not None
            async with system_tx(engine) as conn:  # it claims exactly the locks its new session holds
                held = {r[0] for r in await conn.execute(text(
                    "SELECT objid::int FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
                    "AND classid = CAST(CAST(:c AS int) AS oid) AND pid = :pid"),
                    {"c": LOCK_CLASS, "pid": a._conn.get_server_pid()})}
            assert a.owned == held
            if a.owned == ALL_PARTITIONS:
                break
            await asyncio.sleep(0.2)  # the server may take a moment to end the old session
        assert a.owned == ALL_PARTITIONS
        assert a._conn is not None and not a._conn.is_closed()
    finally:
        await a.close(engine, now)


async def test_liveness_pass_changes_only_the_devices_of_the_given_partitions(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine, heartbeat_interval_s=30)
    devices = [await make_device(engine, tenant) for _ in range(12)]
    t0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    async with system_tx(engine) as conn:
        await conn.execute(text("UPDATE device_state SET status = 'ONLINE', last_seen_at = :at, "
                                "last_state_change_at = :at WHERE tenant_id = :t"), {"t": tenant.tenant_id, "at": t0})
    mine = {partition_of(tenant.tenant_id, d) for d in devices[:6]}
    async with system_tx(engine) as conn:
        assert (await liveness_pass(conn, t0 + timedelta(seconds=31), partitions=frozenset())).transitions == []
        changed = (await liveness_pass(conn, t0 + timedelta(seconds=31), partitions=mine)).transitions
    assert {d for t, d, s in changed if t == tenant.tenant_id} == {
        d for d in devices if partition_of(tenant.tenant_id, d) in mine}
    async with system_tx(engine) as conn:
        status = dict((await conn.execute(text("SELECT device_id, status FROM device_state WHERE tenant_id = :t"),
                                          {"t": tenant.tenant_id})).all())
    assert {d: status[d] for d in devices} == {
        d: "STALE" if partition_of(tenant.tenant_id, d) in mine else "ONLINE" for d in devices}


async def test_forgetting_a_partition_drops_its_devices_windows(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    async with system_tx(engine) as conn:
        rule_id = str((await conn.execute(text(
            "INSERT INTO alert_rules (tenant_id, name, rule_type, severity, definition, for_seconds) VALUES "
            "(:t, 'hot', 'THRESHOLD', 3, '{\"metric\": \"temp_c\", \"op\": \"GT\", \"value\": 30}', 60) "
            "RETURNING rule_id"), {"t": tenant.tenant_id})).scalar_one())
    ev = Evaluator(engine)
    await ev.load_rules()
    now = datetime.now(UTC)
    ev.pending_since = {(rule_id, f"d{i}"): now for i in range(40)}
    keep = {partition_of(tenant.tenant_id, f"d{i}") for i in range(0, 40, 2)}
    ev.forget_devices(lambda t, d: partition_of(t, d) in keep)
    assert set(ev.pending_since) == {(rule_id, f"d{i}") for i in range(40)
                                     if partition_of(tenant.tenant_id, f"d{i}") in keep}


async def test_liveness_pass_says_when_its_next_own_device_is_due(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine, heartbeat_interval_s=30)
    device = await make_device(engine, tenant)
    mine = frozenset({partition_of(tenant.tenant_id, device)})
    other = next(d for d in (f"other-{i}" for i in range(1000)) if partition_of(tenant.tenant_id, d) not in mine)
    await make_device(engine, tenant, other)
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # after every other test's devices: in `mine` only ours is due
    async with system_tx(engine) as conn:
        await conn.execute(text("UPDATE device_state SET status = 'ONLINE', last_seen_at = :at, "
                                "last_state_change_at = :at WHERE tenant_id = :t AND device_id = :d"),
                           {"t": tenant.tenant_id, "d": device, "at": t0})
        await conn.execute(text("UPDATE device_state SET status = 'ONLINE', last_seen_at = :at, "
                                "last_state_change_at = :at WHERE tenant_id = :t AND device_id = :d"),
                           {"t": tenant.tenant_id, "d": other, "at": t0 - timedelta(seconds=0.5)})
        far = await liveness_pass(conn, t0 + timedelta(seconds=10), partitions=mine)
        near = await liveness_pass(conn, t0 + timedelta(seconds=29), partitions=mine)
        stale = await liveness_pass(conn, t0 + timedelta(seconds=30), partitions=mine)
        status = dict((await conn.execute(text("SELECT device_id, status FROM device_state WHERE tenant_id = :t"),
                                          {"t": tenant.tenant_id})).all())
    assert far.next_due is None  # beyond the horizon: the regular cadence covers it
    assert near.next_due == t0 + timedelta(seconds=30)  # STALE after one interval; `other` (due sooner) is not ours
    assert stale.transitions == [(tenant.tenant_id, device, "STALE")]
    assert status == {device: "STALE", other: "ONLINE"}
