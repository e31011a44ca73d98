"""The demo tenant `pulse dev` starts with: a tenant, a login, and a temperature rule (idempotent)."""

from __future__ import annotations

import logging

from sqlalchemy import text

from pulse.clock import utcnow
from pulse.db import create_engine, system_tx
from pulse.demo_defaults import DEMO_EMAIL, DEMO_PASSWORD, DEMO_TENANT_ID
from pulse.fleet.service import create_tenant
from pulse.settings import Settings

log = logging.getLogger("pulse.demo")


async def seed_demo(database_url: str, settings: Settings) -> None:
    """Create what is missing of the demo tenant; leaves existing data alone."""
    from pulse.fleet.users import create_user

    engine = create_engine(database_url, pool_size=1, application_name="pulse-seed")
    now = utcnow()
    try:
        async with system_tx(engine) as conn:
            exists = (await conn.execute(text("SELECT 1 FROM tenants WHERE tenant_id = :t"),
                                         {"t": DEMO_TENANT_ID})).first()
            if not exists:
                await create_tenant(conn, DEMO_TENANT_ID, "Demo Fleet", device_limit=500, now=now)
            user = (await conn.execute(text("SELECT 1 FROM users WHERE lower(email) = lower(:e)"),
                                       {"e": DEMO_EMAIL})).first()
            if not user:
                await create_user(conn, tenant_id=DEMO_TENANT_ID, email=DEMO_EMAIL, password=DEMO_PASSWORD,
                                  roles=["tenant-admin", "customer"], display_name="Demo Admin")
            rule = (await conn.execute(text("SELECT 1 FROM alert_rules WHERE tenant_id = :t"),
                                       {"t": DEMO_TENANT_ID})).first()
            if not rule:
                await conn.execute(text(
                    "INSERT INTO alert_rules (tenant_id, name, description, rule_type, severity, definition) "
                    "VALUES (:t, 'Temperature high', 'Any device reporting temp_c above 30', 'THRESHOLD', 4, "
                    "CAST(:d AS jsonb))"), {"t": DEMO_TENANT_ID,
                                           "d": '{"metric": "temp_c", "op": "GT", "value": 30, "clear_value": 28}'})
        log.info("demo tenant ready", extra={"tenant_id": DEMO_TENANT_ID, "login": DEMO_EMAIL})
    finally:
        await engine.dispose()
