"""/api/v2/alerts: a tenant's alerts and their history (customer and tenant-admin tokens)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Router, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from pulse.alerting.queries import ALERT_STATUSES, AlertPage, AlertWithEvents, get_alert_with_events, list_alerts
from pulse.alerting.service import acknowledge_alert, close_alert, silence_alert, unsilence_alert
from pulse.errors import NotFound, ValidationError
from pulse.web.auth import require_roles
from pulse.web.deps import NowDep, PrincipalDep, SettingsDep, TenantConnDep, require_tenant
from pulse.web.errors import error_specs
from pulse.web.routes.common import BEARER, MEMBER_ROLES, OffsetQuery, parse_choices

STATUS_HELP = "OPEN, ACKNOWLEDGED or CLOSED; repeat the parameter or comma-separate"
SEVERITY_HELP = "lowest severity to include (1 info ... 5 critical)"


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
    offset: OffsetQuery = 0,
) -> AlertPage:
    """The tenant's alerts, newest first, with the total count of matches."""
    return await list_alerts(tenant_conn, require_tenant(principal),
                             statuses=parse_choices(status, ALERT_STATUSES, "status"), severity_min=severity_min,
                             device_id=device_id, limit=limit, offset=offset)


@get("/{alert_id:str}", summary="Get an alert with its events", responses=error_specs(400, 401, 403, 404))
async def get_tenant_alert(principal: PrincipalDep, tenant_conn: TenantConnDep,
                           alert_id: Annotated[str, PathParameter(description="the alert's UUID")]) -> AlertWithEvents:
    """One alert and its event history (oldest first). Another tenant's alert id is simply not found."""
    return await alert_answer(tenant_conn, require_tenant(principal), alert_id)


AlertIdPath = Annotated[str, PathParameter(description="the alert's UUID")]


class CloseRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: str | None = msgspec.field(default=None)


class SilenceRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    until: datetime
    reason: str | None = None


async def alert_answer(tenant_conn: TenantConnDep, tenant_id: str, alert_id: str) -> AlertWithEvents:
    """The alert with its events, as an alert route answers; another tenant's alert id is not found."""
    alert = await get_alert_with_events(tenant_conn, tenant_id, parse_uuid(alert_id, "alert_id"))
    if alert is None:
        raise NotFound(f"alert {alert_id} not found", details={"field": "alert_id"})
    return alert


@post("/{alert_id:str}/acknowledge", status_code=200, summary="Acknowledge an alert (stops its escalation)",
      responses=error_specs(400, 401, 403, 404, 409))
async def acknowledge(alert_id: AlertIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep, now: NowDep,
                      settings: SettingsDep) -> AlertWithEvents:
    """The caller takes the alert: escalation stops, pages not yet sent are cancelled. Only an OPEN alert."""
    tenant_id = require_tenant(principal)
    await acknowledge_alert(tenant_conn, tenant_id, str(parse_uuid(alert_id, "alert_id")), actor=principal.actor,
                            now=now, base_url=settings.base_url)
    return await alert_answer(tenant_conn, tenant_id, alert_id)


@post("/{alert_id:str}/close", status_code=200, summary="Close an alert",
      responses=error_specs(400, 401, 403, 404, 409))
async def close(alert_id: AlertIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep, now: NowDep,
                settings: SettingsDep, data: JSONBody[CloseRequest | None] = None) -> AlertWithEvents:
    """Close an OPEN or ACKNOWLEDGED alert; a later breach opens a new one."""
    tenant_id = require_tenant(principal)
    reason = data.reason if data else None
    if reason is not None and len(reason) > 500:
        raise ValidationError("must be at most 500 characters", field="reason")
    await close_alert(tenant_conn, tenant_id, str(parse_uuid(alert_id, "alert_id")), actor=principal.actor,
                      reason=reason, now=now, base_url=settings.base_url)
    return await alert_answer(tenant_conn, tenant_id, alert_id)


@post("/{alert_id:str}/silence", status_code=200, summary="Silence an alert until a time (pauses escalation)",
      responses=error_specs(400, 401, 403, 404, 409))
async def silence(alert_id: AlertIdPath, data: JSONBody[SilenceRequest], principal: PrincipalDep,
                  tenant_conn: TenantConnDep, now: NowDep, settings: SettingsDep) -> AlertWithEvents:
    """Escalation pauses until `until` (at most 30 days ahead) and then goes on with the time that was left."""
    tenant_id = require_tenant(principal)
    if data.reason is not None and len(data.reason) > 500:
        raise ValidationError("must be at most 500 characters", field="reason")
    await silence_alert(tenant_conn, tenant_id, str(parse_uuid(alert_id, "alert_id")), until=data.until,
                        actor=principal.actor, now=now, reason=data.reason, base_url=settings.base_url)
    return await alert_answer(tenant_conn, tenant_id, alert_id)


@post("/{alert_id:str}/unsilence", status_code=200, summary="End an alert's silence (resumes escalation)",
      responses=error_specs(400, 401, 403, 404, 409))
async def unsilence(alert_id: AlertIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep, now: NowDep,
                    settings: SettingsDep) -> AlertWithEvents:
    tenant_id = require_tenant(principal)
    await unsilence_alert(tenant_conn, tenant_id, str(parse_uuid(alert_id, "alert_id")), actor=principal.actor,
                          now=now, base_url=settings.base_url)
    return await alert_answer(tenant_conn, tenant_id, alert_id)


router = Router(path="/api/v2/alerts", route_handlers=[list_tenant_alerts, get_tenant_alert, acknowledge, close,
                                                       silence, unsilence],
                guards=[require_roles(*MEMBER_ROLES)], security=BEARER, tags=["alerts"])
