"""Row-level security: through pulse_app a tenant sees and changes only its own rows, in every tenant table."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import APP_ROLE, scoped_tx, system_tx, tenant_tx
from tests.conftest import TenantRef, make_device, make_tenant

# Tables that name a tenant but hold operator data: pulse_app has no privilege on them at all.
OPERATOR_ONLY = {"operator_audit_log"}

# One row in every tenant table, for the tenant bound as :t. Order follows foreign keys.
SEED = """
INSERT INTO sites (tenant_id, site_id, name) VALUES (:t, 'plant-1', 'Plant 1');
INSERT INTO device_groups (tenant_id, name) VALUES (:t, 'freezers');
INSERT INTO device_group_members (tenant_id, group_id, device_id)
  SELECT :t, group_id, :d FROM device_groups WHERE tenant_id = :t;
INSERT INTO device_credentials (tenant_id, device_id, kind, secret_hash, hint) VALUES (:t, :d, 'PROVISION_TOKEN', 'h', 'pt_x');
INSERT INTO device_activation_codes (code_hash, tenant_id, device_id, expires_at)
  VALUES (:t || '-code', :t, :d, now() + interval '1 day');
INSERT INTO device_state_history (tenant_id, device_id, status, changed_at) VALUES (:t, :d, 'ONLINE', now());
INSERT INTO telemetry (time, tenant_id, device_id, msg_type, seq, metrics) VALUES (now(), :t, :d, 'telemetry', 1, '{"temp_c": 20}');
INSERT INTO quarantine_events (tenant_id, device_id, transport, reason) VALUES (:t, :d, 'MQTT', 'INVALID_JSON');
INSERT INTO quarantine_counters (tenant_id, minute, reason, count) VALUES (:t, date_trunc('minute', now()), 'INVALID_JSON', 1);
INSERT INTO users (tenant_id, email, roles) VALUES (:t, :t || '@example.com', '{customer}');
INSERT INTO user_contact_methods (tenant_id, user_id, kind, address)
  SELECT :t, user_id, 'EMAIL', email FROM users WHERE tenant_id = :t;
INSERT INTO user_notification_rules (tenant_id, user_id, contact_id)
  SELECT :t, user_id, contact_id FROM user_contact_methods WHERE tenant_id = :t;
INSERT INTO refresh_tokens (tenant_id, user_id, token_hash, expires_at)
  SELECT :t, user_id, :t || '-rt', now() + interval '1 day' FROM users WHERE tenant_id = :t;
INSERT INTO escalation_policies (tenant_id, name) VALUES (:t, 'default');
INSERT INTO escalation_levels (tenant_id, policy_id, position) SELECT :t, policy_id, 1 FROM escalation_policies WHERE tenant_id = :t;
INSERT INTO oncall_schedules (tenant_id, name, timezone) VALUES (:t, 'primary', 'Europe/Berlin');
INSERT INTO oncall_layers (tenant_id, schedule_id, position, name, rotation_type, rotation_start, participants)
  SELECT :t, s.schedule_id, 1, 'l1', 'WEEKLY', current_date, ARRAY[u.user_id]
  FROM oncall_schedules s, users u WHERE s.tenant_id = :t AND u.tenant_id = :t;
INSERT INTO oncall_overrides (tenant_id, schedule_id, user_id, starts_at, ends_at)
  SELECT :t, s.schedule_id, u.user_id, now(), now() + interval '1 hour'
  FROM oncall_schedules s, users u WHERE s.tenant_id = :t AND u.tenant_id = :t;
INSERT INTO alert_rules (tenant_id, name, rule_type, severity, definition)
  VALUES (:t, 'hot', 'THRESHOLD', 4, '{"metric": "temp_c", "op": "GT", "value": 30}');
INSERT INTO alerts (tenant_id, fingerprint, alert_type, device_id, severity, title, opened_at, last_seen_at)
  VALUES (:t, 'RULE:x:' || :d, 'THRESHOLD', :d, 4, 'hot', now(), now());
INSERT INTO alert_events (tenant_id, alert_id, kind, actor) SELECT :t, alert_id, 'OPENED', 'system' FROM alerts WHERE tenant_id = :t;
INSERT INTO maintenance_windows (tenant_id, name, starts_at, ends_at) VALUES (:t, 'mw', now(), now() + interval '1 hour');
INSERT INTO notification_channels (tenant_id, name, channel_type) VALUES (:t, 'hook', 'WEBHOOK');
INSERT INTO notification_routing_rules (tenant_id, name, channel_id)
  SELECT :t, 'all', channel_id FROM notification_channels WHERE tenant_id = :t;
INSERT INTO notification_jobs (tenant_id, channel_id, event_kind, payload, idempotency_key)
  SELECT :t, channel_id, 'OPENED', '{}', :t || '-job' FROM notification_channels WHERE tenant_id = :t;
INSERT INTO notification_attempts (tenant_id, job_id, attempt_no, started_at, finished_at, latency_ms, outcome)
  SELECT :t, job_id, 1, now(), now(), 5, 'DELIVERED' FROM notification_jobs WHERE tenant_id = :t;
INSERT INTO notification_log (tenant_id, route_id, fingerprint, last_sent_at)
  SELECT :t, route_id, 'fp', now() FROM notification_routing_rules WHERE tenant_id = :t;
INSERT INTO report_runs (tenant_id, kind, period_start, period_end) VALUES (:t, 'SLA', now() - interval '1 day', now());
INSERT INTO tenant_audit_log (tenant_id, actor, action) VALUES (:t, 'someone', 'device.create');
"""


async def _tenant_tables(engine: AsyncEngine) -> list[str]:
    async with system_tx(engine) as conn:
        rows = await conn.execute(text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"))
        return [r[0] for r in rows if r[0] not in OPERATOR_ONLY]


async def _seed(engine: AsyncEngine, tenant: TenantRef) -> None:
    device = await make_device(engine, tenant, "dev-1")
    async with system_tx(engine) as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        sql = SEED.replace(":t", f"'{tenant.tenant_id}'").replace(":d", f"'{device}'")
        await driver.execute(sql)


@pytest.fixture(scope="module")
async def two_tenants(engine: AsyncEngine) -> tuple[TenantRef, TenantRef]:
    a, b = await make_tenant(engine, prefix="rls-a"), await make_tenant(engine, prefix="rls-b")
    await _seed(engine, a)
    await _seed(engine, b)
    return a, b


async def test_every_tenant_table_has_forced_rls(engine: AsyncEngine) -> None:
    tables = await _tenant_tables(engine)
    assert len(tables) >= 30
    async with system_tx(engine) as conn:
        rows = (await conn.execute(text(
            "SELECT relname FROM pg_class WHERE relname = ANY(:t) AND relrowsecurity AND relforcerowsecurity"),
            {"t": tables})).all()
    assert sorted(r[0] for r in rows) == tables


async def test_seed_covers_every_tenant_table(engine: AsyncEngine, two_tenants: tuple[TenantRef, TenantRef]) -> None:
    _, b = two_tenants
    async with system_tx(engine) as conn:
        for table in await _tenant_tables(engine):
            n = (await conn.execute(text(f"SELECT count(*) FROM {table} WHERE tenant_id = :t"),
                                    {"t": b.tenant_id})).scalar_one()
            assert n >= 1, f"seed has no row in {table}"


async def test_tenant_cannot_read_or_change_another_tenants_rows(
        engine: AsyncEngine, two_tenants: tuple[TenantRef, TenantRef]) -> None:
    a, b = two_tenants
    for table in await _tenant_tables(engine):
        async with system_tx(engine) as conn:
            b_row = (await conn.execute(text(f"SELECT row_to_json(x)::text FROM {table} x WHERE tenant_id = :t LIMIT 1"),
                                        {"t": b.tenant_id})).scalar_one()
        async with tenant_tx(engine, a.tenant_id) as conn:
            # No application WHERE clause at all: only A's rows come back.
            owners = {r[0] for r in await conn.execute(text(f"SELECT DISTINCT tenant_id FROM {table}"))}
            assert owners == {a.tenant_id}, f"{table}: tenant A saw rows of {owners - {a.tenant_id}}"
            n = (await conn.execute(text(f"SELECT count(*) FROM {table} WHERE tenant_id = :t"),
                                    {"t": b.tenant_id})).scalar_one()
            assert n == 0, f"{table}: tenant A read tenant B's rows"
        for stmt in (f"UPDATE {table} SET tenant_id = tenant_id WHERE tenant_id = :t",
                     f"DELETE FROM {table} WHERE tenant_id = :t"):
            try:
                async with tenant_tx(engine, a.tenant_id) as conn:
                    result = await conn.execute(text(stmt), {"t": b.tenant_id})
                    assert result.rowcount == 0, f"{table}: tenant A changed tenant B's rows with {stmt.split()[0]}"
            except DBAPIError as exc:
                assert "permission denied" in str(exc), f"{table}: unexpected error {exc}"
        await _assert_insert_refused(engine, a.tenant_id, table, b_row, f"{table}: tenant A wrote a row for tenant B")
        async with system_tx(engine) as conn:
            n = (await conn.execute(text(f"SELECT count(*) FROM {table} WHERE tenant_id = :t"),
                                    {"t": b.tenant_id})).scalar_one()
            assert n >= 1, f"{table}: tenant B's rows were removed"


async def _assert_insert_refused(engine: AsyncEngine, tenant_id: str | None, table: str, row_json: str, msg: str) -> None:
    # PostgreSQL checks RLS WITH CHECK before constraints and unique indexes, so the copied row's own
    # keys cannot make it fail for another reason first.
    row = json.loads(row_json)
    try:
        async with scoped_tx(engine, APP_ROLE, tenant_id) as conn:
            await conn.execute(text(
                f"INSERT INTO {table} OVERRIDING SYSTEM VALUE SELECT * FROM json_populate_record(NULL::{table}, :r)"),
                {"r": json.dumps(row)})
    except DBAPIError as exc:
        text_ = str(exc)
        assert "row-level security" in text_ or "permission denied" in text_, f"{table}: refused for another reason: {exc}"
    else:
        raise AssertionError(msg)


async def test_no_tenant_set_sees_nothing_and_cannot_insert(
        engine: AsyncEngine, two_tenants: tuple[TenantRef, TenantRef]) -> None:
    a, _ = two_tenants
    for table in await _tenant_tables(engine):
        async with scoped_tx(engine, APP_ROLE, None) as conn:
            n = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            assert n == 0, f"{table}: {n} rows visible with no tenant set"
        async with system_tx(engine) as conn:
            a_row = (await conn.execute(text(f"SELECT row_to_json(x)::text FROM {table} x WHERE tenant_id = :t LIMIT 1"),
                                        {"t": a.tenant_id})).scalar_one()
        await _assert_insert_refused(engine, None, table, a_row, f"{table}: insert allowed with no tenant set")


async def test_operator_role_sees_all_tenants(engine: AsyncEngine, two_tenants: tuple[TenantRef, TenantRef]) -> None:
    a, b = two_tenants
    async with scoped_tx(engine, "pulse_operator") as conn:
        owners = {r[0] for r in await conn.execute(text("SELECT tenant_id FROM devices"))}
    assert {a.tenant_id, b.tenant_id} <= owners


async def test_app_role_has_no_access_to_operator_tables(engine: AsyncEngine) -> None:
    async with system_tx(engine) as conn:
        for table in OPERATOR_ONLY | {"signing_keys", "system_metrics", "scheduled_job_runs"}:
            for priv in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                allowed = (await conn.execute(text("SELECT has_table_privilege('pulse_app', :t, :p)"),
                                              {"t": table, "p": priv})).scalar_one()
                assert not allowed, f"pulse_app has {priv} on {table}"
