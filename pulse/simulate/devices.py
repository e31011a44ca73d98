"""The simulated fleet in the database: reuse a tenant's `sim-` devices, register the missing ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.errors import NotFound
from pulse.simulate.profiles import (
    PROFILES,
    profile_for,
)

log = logging.getLogger("pulse.simulate")


@dataclass(frozen=True)
class SimDeviceSpec:
    device_id: str
    profile: str
    last_seq: int


async def prepare_devices(conn: AsyncConnection, tenant_id: str, count: int, *, now: datetime) -> list[SimDeviceSpec]:
    """The tenant's ACTIVE `sim-*` devices, registering sim-0001… until there are `count` (or the plan is full).

    Raises NotFound when the tenant does not exist.
    """
    from pulse.errors import Conflict, LimitExceeded
    from pulse.fleet.service import register_device

    if (await conn.execute(text("SELECT 1 FROM tenants WHERE tenant_id = :t"), {"t": tenant_id})).first() is None:
        raise NotFound(f"tenant {tenant_id!r} does not exist")
    rows = (await conn.execute(text(
        "SELECT d.device_id, d.device_type, d.status, s.last_seq FROM devices d "
        "LEFT JOIN device_state s ON s.tenant_id = d.tenant_id AND s.device_id = d.device_id "
        "WHERE d.tenant_id = :t AND d.device_id LIKE 'sim-%' ORDER BY d.device_id"), {"t": tenant_id})).all()
    taken = {r.device_id for r in rows}
    chosen: list[tuple[str, str | None, int]] = [(r.device_id, r.device_type, r.last_seq or 0)
                                                 for r in rows if r.status == "ACTIVE"][:count]
    number = 0
    while len(chosen) < count:
        number += 1
        device_id = f"sim-{number:04d}"
        if device_id in taken:
            continue
        profile = PROFILES[(number - 1) % len(PROFILES)]
        name = f"Simulated {profile.replace('_', ' ')} {number:04d}"
        try:
            await register_device(conn, tenant_id, device_id, name=name, device_type=profile, tags=("simulated",),
                                  now=now)
        except LimitExceeded as exc:
            log.warning("simulating %d of %d devices: %s", len(chosen), count, exc.message)
            break
        except Conflict:  # registered by someone else meanwhile
            continue
        chosen.append((device_id, profile, 0))
    return [SimDeviceSpec(device_id, profile_for(i, device_type), last_seq)
            for i, (device_id, device_type, last_seq) in enumerate(chosen)]
