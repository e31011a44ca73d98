"""/api/admin: platform provisioning with the X-Admin-Key (device registration + activation code)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Router, post
from litestar.params import JSONBody

from pulse.db import system_tx
from pulse.fleet.service import issue_activation_code, register_device
from pulse.web.auth import require_admin_key
from pulse.web.deps import EngineDep, NowDep
from pulse.web.errors import error_specs

ADMIN_KEY: list[dict[str, list[str]]] = [{"AdminKey": []}]


class DeviceProvision(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    tenant_id: str
    device_id: str
    name: str | None = None
    device_type: str | None = None
    site_id: str | None = None
    tags: list[str] = []
    attributes: dict[str, Any] | None = None


class DeviceProvisioned(msgspec.Struct, kw_only=True):
    tenant_id: str
    device_id: str
    activation_code: str
    activation_expires_at: datetime


@post("/devices", status_code=201, summary="Register a device and issue its activation code",
      responses=error_specs(400, 401, 403, 404, 409))
async def provision_device(data: JSONBody[DeviceProvision], engine: EngineDep, now: NowDep) -> DeviceProvisioned:
    """Register the device under a subscription with room and return a one-time activation code."""
    async with system_tx(engine) as conn:
        await register_device(conn, data.tenant_id, data.device_id, name=data.name, device_type=data.device_type,
                              site_id=data.site_id, tags=data.tags, attributes=data.attributes, now=now)
        code, expires_at = await issue_activation_code(conn, data.tenant_id, data.device_id, now=now)
    return DeviceProvisioned(tenant_id=data.tenant_id, device_id=data.device_id, activation_code=code,
                             activation_expires_at=expires_at)


router = Router(path="/api/admin", route_handlers=[provision_device], guards=[require_admin_key],
                security=ADMIN_KEY, tags=["admin"])
