"""/api/v2/alerts: a tenant's alerts and their history (customer and tenant-admin tokens)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Router, get
from litestar.params import PathParameter, QueryParameter

from pulse.alerting.queries import ALERT_STATUSES, AlertPage, AlertWithEvents, get_alert_with_events, list_alerts
from pulse.errors import NotFound, ValidationError
from pulse.web.auth import require_roles
from pulse.web.deps import PrincipalDep, TenantConnDep, require_tenant
from pulse.web.errors import error_specs

CUSTOMER_ROLES = ("customer", "tenant-admin")
STATUS_HELP = "OPEN, ACKNOWLEDGED or CLOSED; repeat the parameter or comma-separate"
SEVERITY_HELP = "lowest severity to include (1 info ... 5 critical)"
BEARER: list[dict[str, list[str]]] = [{"BearerToken": []}]


def parse_statuses(values: list[str] | None) -> list[str]:
    """`?status=OPEN&status=ACKNOWLEDGED` or `?status=OPEN,ACKNOWLEDGED` (any case)."""
    out: list[str] = []
    for value in values or []:
        for part in value.split(","):
            status = part.strip().upper()
            if not status:
                continue
            if status not in ALERT_STATUSES:
                raise ValidationError(f"unknown status {part.strip()!r}; use {', '.join(ALERT_STATUSES)}",
                                      field="status")
            if status not in out:
                out.append(status)
    return out


def parse_uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValidationError(f"{field} must be a UUID", field=field) from None


@get("/", summary="List alerts", responses=error_specs(400, 401, 403))
async def list_tenant_alerts(
    principal: PrincipalDep,
    tenant_conn: TenantConnDep,
    status: Annotated[list[str] | None, QueryParameter(description=STATUS_HELP)] = None,
    severity_min: Annotated[int | None, QueryParameter(ge=1, le=5, description=SEVERITY_HELP)] = None,
    device_id: Annotated[str | None, QueryParameter(max_length=128)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    offset: Annotated[int, QueryParameter(ge=0)] = 0,
) -> AlertPage:
    """The tenant's alerts, newest first, with the total count of matches."""
    return await list_alerts(tenant_conn, require_tenant(principal), statuses=parse_statuses(status),
                             severity_min=severity_min, device_id=device_id, limit=limit, offset=offset)


@get("/{alert_id:str}", summary="Get an alert with its events", responses=error_specs(400, 401, 403, 404))
async def get_tenant_alert(principal: PrincipalDep, tenant_conn: TenantConnDep,
                           alert_id: Annotated[str, PathParameter(description="the alert's UUID")]) -> AlertWithEvents:
    """One alert and its event history (oldest first). Another tenant's alert id is simply not found."""
    alert = await get_alert_with_events(tenant_conn, require_tenant(principal), parse_uuid(alert_id, "alert_id"))
    if alert is None:
        raise NotFound(f"alert {alert_id} not found", details={"field": "alert_id"})
    return alert


router = Router(path="/api/v2/alerts", route_handlers=[list_tenant_alerts, get_tenant_alert],
                guards=[require_roles(*CUSTOMER_ROLES)], security=BEARER, tags=["alerts"])
