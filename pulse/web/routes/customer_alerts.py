"""/customer alert operations: alert actions and comments, bulk acknowledge, maintenance windows, rule templates,
and the tenant audit log.

Any member of the tenant (`customer`, `tenant-admin`) may act on alerts and read windows and templates; changing
windows, instantiating templates and reading the audit log need `tenant-admin`. The tenant comes from the token
only; another tenant's ids are simply not found.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Router, delete, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, UnsetType

from pulse.alerting.maintenance import (
    DeviceMaintenance,
    MaintenanceWindow,
    MaintenanceWindowPage,
    create_window,
    delete_window,
    device_maintenance,
    list_windows,
    require_window,
    update_window,
)
from pulse.alerting.queries import AlertWithEvents
from pulse.alerting.rule_admin import AlertRule, require_rule
from pulse.alerting.rule_templates import RuleTemplate, instantiate_template, list_templates, require_template
from pulse.alerting.service import acknowledge_alert, comment_alert
from pulse.checks import parse_uuid
from pulse.errors import Conflict, NotFound, ValidationError
from pulse.web.audit import AuditPage, list_audit_entries
from pulse.web.auth import require_roles
from pulse.web.deps import NowDep, PrincipalDep, SettingsDep, TenantConnDep, require_tenant
from pulse.web.errors import error_specs
from pulse.web.routes import alerts as alert_routes
from pulse.web.routes.common import ADMIN, BEARER, MEMBER_ROLES, OffsetQuery, sent_fields

BULK_MAX = 500

AlertIdPath = Annotated[str, PathParameter(description="the alert's UUID")]
WindowIdPath = Annotated[str, PathParameter(description="the maintenance window's UUID")]
TemplateIdPath = Annotated[str, PathParameter(description="the template's id, e.g. high-temperature")]


# --- alerts: comments and bulk acknowledge ---------------------------------------------------------------------------

class CommentCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    text: str


class BulkAcknowledge(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    alert_ids: list[str]


class AcknowledgeResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`status` is the alert's status when it could not be acknowledged (conflict)."""

    alert_id: str
    result: Literal["acknowledged", "not_found", "conflict"]
    status: str | None = None
    message: str | None = None


class BulkAcknowledgeResult(msgspec.Struct, kw_only=True):
    results: list[AcknowledgeResult]
    acknowledged: int
    not_found: int
    conflict: int


@post("/alerts/{alert_id:str}/comments", summary="Comment on an alert", responses=error_specs(400, 401, 403, 404))
async def comment_on_alert(alert_id: AlertIdPath, data: JSONBody[CommentCreate], principal: PrincipalDep,
                           tenant_conn: TenantConnDep, now: NowDep) -> AlertWithEvents:
    """Adds a COMMENTED event (text as its `reason`, the caller as actor) to the alert's history; any status.
    Notifies no one. Answers the alert with its events."""
    tenant_id = require_tenant(principal)
    alert_id = parse_uuid(alert_id, "alert_id")
    await comment_alert(tenant_conn, tenant_id, alert_id, actor=principal.actor, comment=data.text, now=now)
    return await alert_routes.alert_answer(tenant_conn, tenant_id, alert_id)


@post("/alerts/acknowledge", status_code=200, summary="Acknowledge many alerts",
      responses=error_specs(400, 401, 403))
async def acknowledge_many(data: JSONBody[BulkAcknowledge], principal: PrincipalDep, tenant_conn: TenantConnDep,
                           now: NowDep, settings: SettingsDep) -> BulkAcknowledgeResult:
    """Acknowledge up to 500 alerts in one transaction; each id gets its own result (acknowledged, not_found, or
    conflict with the alert's status). One id's failure does not undo the others (a savepoint per id)."""
    tenant_id = require_tenant(principal)
    if not data.alert_ids:
        raise ValidationError("give at least one alert id", field="alert_ids")
    if len(data.alert_ids) > BULK_MAX:
        raise ValidationError(f"give at most {BULK_MAX} alert ids", field="alert_ids")
    ids: list[str] = []
    for i, raw in enumerate(data.alert_ids):
        alert_id = parse_uuid(raw, f"alert_ids[{i}]")
        if alert_id not in ids:
            ids.append(alert_id)
    results: list[AcknowledgeResult] = []
    for alert_id in ids:
        try:
            async with tenant_conn.begin_nested():
                await acknowledge_alert(tenant_conn, tenant_id, alert_id, actor=principal.actor, now=now,
                                        base_url=settings.base_url)
        except NotFound:
            results.append(AcknowledgeResult(alert_id=alert_id, result="not_found"))
        except Conflict as exc:
            results.append(AcknowledgeResult(alert_id=alert_id, result="conflict", status=exc.details.get("status"),
                                             message=exc.message))
        else:
            results.append(AcknowledgeResult(alert_id=alert_id, result="acknowledged"))
    return BulkAcknowledgeResult(results=results, acknowledged=sum(r.result == "acknowledged" for r in results),
                                 not_found=sum(r.result == "not_found" for r in results),
                                 conflict=sum(r.result == "conflict" for r in results))


alert_actions_router = Router(
    path="/customer/alerts",
    route_handlers=[alert_routes.acknowledge, alert_routes.close, alert_routes.silence, alert_routes.unsilence],
    guards=[require_roles(*MEMBER_ROLES)], security=BEARER, tags=["alerts"])
"""The alert actions of /api/v2/alerts, the very same handlers, under /customer/alerts."""


# --- maintenance windows -------------------------------------------------------------------------------------------

class WindowCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """ONCE: starts_at and ends_at. WEEKLY: weekdays, start_time (local HH:MM), duration_minutes, timezone."""

    name: str
    recurrence: str
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    weekdays: list[int] = []
    start_time: str | None = None
    duration_minutes: int | None = None
    timezone: str = "UTC"
    site_ids: list[str] = []
    group_ids: list[str] = []
    device_types: list[str] = []
    device_ids: list[str] = []
    is_enabled: bool = True


class WindowUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields sent change; the resulting window is validated as a whole."""

    name: str | UnsetType = UNSET
    recurrence: str | UnsetType = UNSET
    starts_at: datetime | UnsetType | None = UNSET
    ends_at: datetime | UnsetType | None = UNSET
    weekdays: list[int] | UnsetType = UNSET
    start_time: str | UnsetType | None = UNSET
    duration_minutes: int | UnsetType | None = UNSET
    timezone: str | UnsetType = UNSET
    site_ids: list[str] | UnsetType = UNSET
    group_ids: list[str] | UnsetType = UNSET
    device_types: list[str] | UnsetType = UNSET
    device_ids: list[str] | UnsetType = UNSET
    is_enabled: bool | UnsetType = UNSET


@get("/", summary="List maintenance windows", responses=error_specs(400, 401, 403))
async def list_tenant_windows(principal: PrincipalDep, tenant_conn: TenantConnDep,
                              limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
                              offset: OffsetQuery = 0) -> MaintenanceWindowPage:
    """The tenant's windows by name."""
    return await list_windows(tenant_conn, require_tenant(principal), limit=limit, offset=offset)


@post("/", summary="Create a maintenance window", guards=ADMIN, responses=error_specs(400, 401, 403))
async def create_tenant_window(data: JSONBody[WindowCreate], principal: PrincipalDep, tenant_conn: TenantConnDep,
                               now: NowDep) -> MaintenanceWindow:
    """While a device is in an enabled window in progress, no alert opens for it. Errors name the field."""
    tenant_id = require_tenant(principal)
    window_id = await create_window(tenant_conn, tenant_id, now=now, **msgspec.structs.asdict(data))
    return await require_window(tenant_conn, tenant_id, window_id)


@get("/active", summary="Is a device in maintenance now?", responses=error_specs(400, 401, 403, 404))
async def active_tenant_windows(principal: PrincipalDep, tenant_conn: TenantConnDep, now: NowDep,
                                device_id: Annotated[str | None, QueryParameter(
                                    max_length=128, description="the device; without it, every window in progress")]
                                = None) -> DeviceMaintenance:
    """Whether the device is in maintenance now and by which windows (with when each occurrence ends)."""
    return await device_maintenance(tenant_conn, require_tenant(principal), device_id, now)


@get("/{window_id:str}", summary="Get a maintenance window", responses=error_specs(400, 401, 403, 404))
async def get_tenant_window(window_id: WindowIdPath, principal: PrincipalDep,
                            tenant_conn: TenantConnDep) -> MaintenanceWindow:
    return await require_window(tenant_conn, require_tenant(principal), window_id)


@patch("/{window_id:str}", summary="Change a maintenance window", guards=ADMIN,
       responses=error_specs(400, 401, 403, 404))
async def update_tenant_window(window_id: WindowIdPath, data: JSONBody[WindowUpdate], principal: PrincipalDep,
                               tenant_conn: TenantConnDep) -> MaintenanceWindow:
    """Send only what changes; changing `recurrence` needs the fields of the new kind."""
    tenant_id = require_tenant(principal)
    changes = sent_fields(data)
    await update_window(tenant_conn, tenant_id, window_id, changes)
    return await require_window(tenant_conn, tenant_id, window_id)


@delete("/{window_id:str}", summary="Delete a maintenance window", guards=ADMIN,
        responses=error_specs(400, 401, 403, 404))
async def delete_tenant_window(window_id: WindowIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> None:
    await delete_window(tenant_conn, require_tenant(principal), window_id)


windows_router = Router(path="/customer/maintenance-windows", route_handlers=[
    list_tenant_windows, create_tenant_window, active_tenant_windows, get_tenant_window, update_tenant_window,
    delete_tenant_window,
], guards=[require_roles(*MEMBER_ROLES)], security=BEARER, tags=["maintenance windows"])


# --- rule templates ------------------------------------------------------------------------------------------------

class TemplateList(msgspec.Struct, kw_only=True):
    items: list[RuleTemplate]


class TemplateInstantiate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Name, severity and description default to the template's; scopes as for any rule."""

    name: str | None = None
    parameters: dict[str, Any] = {}
    severity: int | None = None
    description: str | None = None
    is_enabled: bool = True
    site_ids: list[str] = []
    group_ids: list[str] = []
    tags: list[str] = []
    device_ids: list[str] = []
    escalation_policy_id: str | None = None


@get("/", summary="List alert rule templates", responses=error_specs(401, 403))
async def list_rule_templates() -> TemplateList:
    """The built-in templates with their parameters and the definition their defaults make."""
    return TemplateList(items=list_templates())


@get("/{template_id:str}", summary="Get an alert rule template", responses=error_specs(401, 403, 404))
async def get_rule_template(template_id: TemplateIdPath) -> RuleTemplate:
    return require_template(template_id)


@post("/{template_id:str}/instantiate", summary="Create an alert rule from a template", guards=ADMIN,
      responses=error_specs(400, 401, 403, 404))
async def instantiate_rule_template(template_id: TemplateIdPath, data: JSONBody[TemplateInstantiate],
                                    principal: PrincipalDep, tenant_conn: TenantConnDep, now: NowDep) -> AlertRule:
    """Parameters left out take their defaults; errors name `parameters.<name>` or the rule field."""
    tenant_id = require_tenant(principal)
    rule_id = await instantiate_template(tenant_conn, tenant_id, template_id, now=now,
                                         **msgspec.structs.asdict(data))
    return await require_rule(tenant_conn, tenant_id, rule_id)


templates_router = Router(path="/customer/alert-rule-templates", route_handlers=[
    list_rule_templates, get_rule_template, instantiate_rule_template,
], guards=[require_roles(*MEMBER_ROLES)], security=BEARER, tags=["alert rules"])


# --- audit log -----------------------------------------------------------------------------------------------------

@get("/audit-log", summary="The tenant audit log", guards=ADMIN, responses=error_specs(400, 401, 403))
async def list_tenant_audit_log(
    principal: PrincipalDep, tenant_conn: TenantConnDep,
    actor: Annotated[str | None, QueryParameter(max_length=320, description="exactly this actor")] = None,
    action: Annotated[str | None, QueryParameter(
        max_length=400, description='exactly this action, e.g. "POST /customer/alert-rules"')] = None,
    since: Annotated[str | None, QueryParameter(name="from", max_length=64,
                                                description="at or after (ISO-8601 with offset)")] = None,
    until: Annotated[str | None, QueryParameter(name="to", max_length=64,
                                                description="before (ISO-8601 with offset)")] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    offset: OffsetQuery = 0,
) -> AuditPage:
    """Every successful change made under /customer, newest first, with the total count of matches."""
    return await list_audit_entries(tenant_conn, require_tenant(principal), actor=actor, action=action,
                                    since=_time(since, "from"), until=_time(until, "to"), limit=limit, offset=offset)


def _time(value: str | None, field: str) -> datetime | None:
    """A query time, parsed here so that an error names the parameter as sent (`from`, `to`)."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError("must be an ISO-8601 time with a UTC offset", field=field) from None


customer_router = Router(path="/customer", route_handlers=[comment_on_alert, acknowledge_many, list_tenant_audit_log],
                         guards=[require_roles(*MEMBER_ROLES)], security=BEARER, tags=["alert operations"])

ROUTERS = [customer_router, alert_actions_router, windows_router, templates_router]
