"""/customer/alert-rules: a tenant's alert rules (list, read, create, change, delete, preview).

Any member of the tenant (`customer`, `tenant-admin`) may read and preview; changes need `tenant-admin`. The tenant
comes from the token only; another tenant's rule ids (and devices) are simply not found. Every change reaches `pulse
evaluate` through `NOTIFY pulse_rules_changed`, sent in the request's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Router, delete, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, UnsetType

from pulse.alerting.preview import RulePreview, preview_rule
from pulse.alerting.rule_admin import (
    MAX_PAGE,
    AlertRule,
    AlertRulePage,
    create_rule,
    delete_rule,
    list_rules,
    require_rule,
    update_rule,
)
from pulse.web.auth import require_roles
from pulse.web.deps import NowDep, PrincipalDep, TenantConnDep, require_tenant
from pulse.web.errors import error_specs
from pulse.web.routes.common import ADMIN, BEARER, MEMBER_ROLES, sent_fields

RuleIdPath = Annotated[str, PathParameter(description="the rule's UUID")]


class AlertRuleCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new rule; `definition` has one shape per `rule_type` (docs/alert-rules.md)."""

    name: str
    rule_type: str
    severity: int
    definition: dict[str, Any]
    description: str | None = None
    for_seconds: int = 0
    is_enabled: bool = True
    site_ids: list[str] = []
    group_ids: list[str] = []
    tags: list[str] = []
    device_ids: list[str] = []
    escalation_policy_id: str | None = None


class AlertRuleUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields sent change; the resulting rule is validated as a whole."""

    name: str | UnsetType = UNSET
    description: str | UnsetType | None = UNSET
    rule_type: str | UnsetType = UNSET
    severity: int | UnsetType = UNSET
    definition: dict[str, Any] | UnsetType = UNSET
    for_seconds: int | UnsetType = UNSET
    is_enabled: bool | UnsetType = UNSET
    site_ids: list[str] | UnsetType = UNSET
    group_ids: list[str] | UnsetType = UNSET
    tags: list[str] | UnsetType = UNSET
    device_ids: list[str] | UnsetType = UNSET
    escalation_policy_id: str | UnsetType | None = UNSET


class AlertRulePreviewRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A rule as it would be saved (only what decides when it fires) and the device to replay it on."""

    rule_type: str
    definition: dict[str, Any]
    device_id: str
    for_seconds: int = 0
    range_from: datetime | None = msgspec.field(default=None, name="from")
    range_to: datetime | None = msgspec.field(default=None, name="to")


@get("/", summary="List alert rules", responses=error_specs(400, 401, 403))
async def list_tenant_rules(
    principal: PrincipalDep, tenant_conn: TenantConnDep,
    enabled: Annotated[bool | None, QueryParameter(description="only enabled (true) or disabled (false) rules")] = None,
    rule_type: Annotated[str | None, QueryParameter(
        max_length=32, description="THRESHOLD, MULTI, RATE, ANOMALY or GAP")] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description=f"1-{MAX_PAGE}")] = 50,
    cursor: Annotated[str | None, QueryParameter(
        max_length=600, description="next_cursor of the previous page")] = None,
) -> AlertRulePage:
    """The tenant's rules by name."""
    return await list_rules(tenant_conn, require_tenant(principal), enabled=enabled,
                            rule_type=rule_type.upper() if rule_type else None, limit=limit, cursor=cursor)


@post("/", summary="Create an alert rule", guards=ADMIN, responses=error_specs(400, 401, 403))
async def create_tenant_rule(data: JSONBody[AlertRuleCreate], principal: PrincipalDep, tenant_conn: TenantConnDep,
                             now: NowDep) -> AlertRule:
    """The definition is validated for the rule type; errors name the field (e.g. `definition.op`)."""
    tenant_id = require_tenant(principal)
    rule_id = await create_rule(tenant_conn, tenant_id, now=now, **msgspec.structs.asdict(data))
    return await require_rule(tenant_conn, tenant_id, rule_id)


@get("/{rule_id:str}", summary="Get an alert rule", responses=error_specs(400, 401, 403, 404))
async def get_tenant_rule(rule_id: RuleIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> AlertRule:
    return await require_rule(tenant_conn, require_tenant(principal), rule_id)


@patch("/{rule_id:str}", summary="Change an alert rule", guards=ADMIN, responses=error_specs(400, 401, 403, 404))
async def update_tenant_rule(rule_id: RuleIdPath, data: JSONBody[AlertRuleUpdate], principal: PrincipalDep,
                             tenant_conn: TenantConnDep, now: NowDep) -> AlertRule:
    """Send only what changes; changing `rule_type` needs a `definition` of the new type."""
    tenant_id = require_tenant(principal)
    changes = sent_fields(data)
    await update_rule(tenant_conn, tenant_id, rule_id, changes, now=now)
    return await require_rule(tenant_conn, tenant_id, rule_id)


@delete("/{rule_id:str}", summary="Delete an alert rule", guards=ADMIN, responses=error_specs(400, 401, 403, 404))
async def delete_tenant_rule(rule_id: RuleIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> None:
    """Its alerts are kept, with `rule_id` null; open ones stay open until someone closes them."""
    await delete_rule(tenant_conn, require_tenant(principal), rule_id)


@post("/preview", summary="Preview an alert rule on a device's telemetry", status_code=200,
      responses=error_specs(400, 401, 403, 404))
async def preview_tenant_rule(data: JSONBody[AlertRulePreviewRequest], principal: PrincipalDep,
                              tenant_conn: TenantConnDep, now: NowDep) -> RulePreview:
    """Replays the device's raw telemetry (default and at most the last 24 h) through the evaluator's verdicts and
    returns the episodes the rule would have opened; nothing is stored. Errors name the field (`definition.op`)."""
    return await preview_rule(tenant_conn, require_tenant(principal), data.device_id, data.rule_type,
                              data.definition, for_seconds=data.for_seconds, now=now, range_from=data.range_from,
                              range_to=data.range_to)


router = Router(path="/customer/alert-rules", route_handlers=[
    list_tenant_rules, create_tenant_rule, preview_tenant_rule, get_tenant_rule, update_tenant_rule, delete_tenant_rule,
], guards=[require_roles(*MEMBER_ROLES)], security=BEARER, tags=["alert rules"])
