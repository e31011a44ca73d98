"""The device list's tag and text filters go through `pulse_device_ids_matching` (index-backed under row-level
security): the answers equal a plain reading of the filters, never include another tenant's devices (even ones
with the same ids), and devices without a state row are still listed, counted and sorted last."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import APP_ROLE, INGEST_ROLE, scoped_tx, system_tx, tenant_tx
from pulse.fleet.queries import list_devices
from tests.conftest import TenantRef, make_device, make_tenant

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


@dataclass(frozen=True)
class Spec:
    device_id: str
    name: str
    tags: tuple[str, ...]
    state: str = "UNKNOWN"
    seen_min_ago: int | None = None


# Device ids repeat across the two tenants on purpose, with other names and tags, so an id from the wrong
# tenant would show up as a wrong answer.
MINE = [
    Spec("pump-01", "Boiler Pump Hall A", ("pump", "boiler"), "ONLINE", 1),
    Spec("pump-02", "Feed 100% pump", ("pump",), "STALE", 5),
    Spec("sensor_1", "Temp sensor roof", ("temp", "roof"), "OFFLINE", 600),
    Spec("sensor01", "Spare", (), "UNKNOWN"),
    Spec("x-1", "Freezer Hamburg 1", ("cold", "pump"), "ONLINE", 2),
    Spec("x-2", "freezer hamburg 2", ("cold",), "OFFLINE", 90),
    Spec("gw-7", "Gateway 7", ("net", "roof"), "ONLINE", 3),
]
THEIRS = [
    Spec("x-1", "Pump Hamburg vip", ("vip", "pump", "boiler")),
    Spec("x-3", "Freezer Hamburg 3", ("cold", "vip")),
    Spec("pump-03", "Boiler Pump Hall B", ("pump", "boiler", "temp")),
]
QUERIES = [None, "p", "pu", "pump", "PUMP", "hamburg", "freezer ham", "100%", "_", "sensor_", "ROOF", "x-", "zzz",
           "Hall"]
TAGS = [(), ("pump",), ("pump", "boiler"), ("cold",), ("roof",), ("vip",), ("nothing",)]


async def _fleet(engine: AsyncEngine, specs: list[Spec]) -> TenantRef:
    tenant = await make_tenant(engine)
    for spec in specs:
        await make_device(engine, tenant, spec.device_id, name=spec.name, tags=list(spec.tags))
        seen = NOW - timedelta(minutes=spec.seen_min_ago) if spec.seen_min_ago is not None else None
        async with system_tx(engine) as conn:
            await conn.execute(text("UPDATE device_state SET status = :s, last_seen_at = :seen "
                                    "WHERE tenant_id = :t AND device_id = :d"),
                               {"s": spec.state, "seen": seen, "t": tenant.tenant_id, "d": spec.device_id})
    return tenant


def _expected(specs: list[Spec], query: str | None, tags: tuple[str, ...], states: tuple[str, ...] = ()) -> list[str]:
    def matches(s: Spec) -> bool:
        text_ok = query is None or query.lower() in s.device_id.lower() or query.lower() in s.name.lower()
        return text_ok and set(tags) <= set(s.tags) and (not states or s.state in states)
    return sorted(s.device_id for s in specs if matches(s))


async def _listed(engine: AsyncEngine, tenant_id: str, **filters: object) -> tuple[list[str], int]:
    async with tenant_tx(engine, tenant_id) as conn:
        page = await list_devices(conn, tenant_id, **filters)  # type: ignore[arg-type]
    return [d.device_id for d in page.items], page.total


async def test_tag_and_text_filters_give_the_plain_answer_and_only_the_tenants_devices(engine: AsyncEngine) -> None:
    mine = await _fleet(engine, MINE)
    await _fleet(engine, THEIRS)

    for query, tags in itertools.product(QUERIES, TAGS):
        expected = _expected(MINE, query, tags)
        listed, total = await _listed(engine, mine.tenant_id, query=query, tags=tags)
        assert (listed, total) == (expected, len(expected)), (query, tags)
    for states in (("ONLINE",), ("OFFLINE", "STALE")):
        expected = _expected(MINE, "pump", (), states)
        assert await _listed(engine, mine.tenant_id, query="pump", states=states) == (expected, len(expected))


async def test_sorted_pages_with_filters_join_up_to_the_whole_list(engine: AsyncEngine) -> None:
    mine = await _fleet(engine, MINE)
    filter_sets: list[dict[str, object]] = [{}, {"tags": ("pump",)}, {"query": "hamburg"},
                                            {"states": ("ONLINE", "OFFLINE")}]
    for sort, filters in itertools.product(
            ("name", "-name", "last_seen_at", "-last_seen_at", "status", "-status", "-device_id"), filter_sets):
        whole, total = await _listed(engine, mine.tenant_id, sort=sort, **filters)
        paged: list[str] = []
        for offset in range(0, total + 2, 2):
            page, page_total = await _listed(engine, mine.tenant_id, sort=sort, limit=2, offset=offset, **filters)
            assert page_total == total, (sort, filters, offset)
            paged += page
        assert paged == whole and len(whole) == total, (sort, filters)

    newest_first, _ = await _listed(engine, mine.tenant_id, sort="-last_seen_at", tags=("pump",))
    assert newest_first == ["pump-01", "x-1", "pump-02"]
    by_name, _ = await _listed(engine, mine.tenant_id, sort="name", query="hamburg")
    assert by_name == ["x-1", "x-2"]  # "Freezer Hamburg 1" < "freezer hamburg 2" in the database's collation


async def test_a_device_without_a_state_row_is_listed_counted_and_sorted_last(engine: AsyncEngine) -> None:
    mine = await _fleet(engine, MINE)
    async with system_tx(engine) as conn:
        await conn.execute(text("DELETE FROM device_state WHERE tenant_id = :t AND device_id = 'x-2'"),
                           {"t": mine.tenant_id})

    for sort in ("-last_seen_at", "last_seen_at", "status"):
        listed, total = await _listed(engine, mine.tenant_id, sort=sort, query="hamburg")
        assert listed[-1] == "x-2" and total == 2, sort
    everything, total = await _listed(engine, mine.tenant_id, sort="-last_seen_at")
    assert total == len(MINE) and everything[-2:] == ["x-2", "sensor01"]  # no time: by device_id, descending


async def test_the_narrowing_function_answers_for_the_transactions_tenant_only(engine: AsyncEngine) -> None:
    mine = await _fleet(engine, MINE)
    theirs = await _fleet(engine, THEIRS)
    call = text("SELECT * FROM pulse_device_ids_matching(CAST(:tags AS text[]), CAST(:pattern AS text)) ORDER BY 1")

    async with tenant_tx(engine, mine.tenant_id) as conn:
        assert (await conn.execute(call, {"tags": ["pump"], "pattern": None})).scalars().all() == [
            "pump-01", "pump-02", "x-1"]
        assert (await conn.execute(call, {"tags": ["vip"], "pattern": None})).scalars().all() == []
        assert (await conn.execute(call, {"tags": None, "pattern": "%hamburg%"})).scalars().all() == ["x-1", "x-2"]
        assert (await conn.execute(text("SELECT current_user"))).scalar_one() == APP_ROLE
    async with tenant_tx(engine, theirs.tenant_id) as conn:
        assert (await conn.execute(call, {"tags": ["vip"], "pattern": None})).scalars().all() == ["x-1", "x-3"]
    async with scoped_tx(engine, APP_ROLE) as conn:  # no tenant set: nothing, as with row-level security
        assert (await conn.execute(call, {"tags": ["pump"], "pattern": None})).scalars().all() == []

    with pytest.raises(DBAPIError, match="permission denied"):
        async with scoped_tx(engine, INGEST_ROLE) as conn:
            await conn.execute(call, {"tags": ["pump"], "pattern": None})
