"""/customer: a tenant's escalation policies and on-call schedules (layers, overrides, who is on call, timelines).

Any member of the tenant (`customer`, `tenant-admin`) may read; changes need `tenant-admin`. The tenant comes
from the token only; another tenant's ids are simply not found. Times in answers are ISO-8601 UTC; a schedule's
answers also carry its IANA timezone for local display.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

import msgspec
from litestar import Router, delete, get, patch, post, put
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, UnsetType

from pulse.errors import ValidationError
from pulse.oncall.policies import (
    EscalationPolicy,
    EscalationPolicySpec,
    RulePolicy,
    create_policy,
    delete_policy,
    list_policies,
    require_policy,
    set_rule_policy,
    update_policy,
)
from pulse.oncall.schedules.layers import create_layer, delete_layer, update_layer
from pulse.oncall.schedules.on_call import MAX_DAYS, timeline, user_shifts, who_is_on_call
from pulse.oncall.schedules.overrides import create_override, delete_override, list_overrides, require_override
from pulse.oncall.schedules.schedule import (
    create_schedule,
    delete_schedule,
    list_schedules,
    require_schedule,
    update_schedule,
)
from pulse.oncall.schedules.schemas import (
    OnCallNow,
    Schedule,
    ScheduleDetail,
    ScheduleOverride,
    Timeline,
    UserShifts,
)
from pulse.web.auth import require_roles
from pulse.web.deps import NowDep, PrincipalDep, TenantConnDep, require_tenant
from pulse.web.errors import error_specs
from pulse.web.routes.common import ADMIN, BEARER, MEMBER_ROLES, sent_fields

PolicyIdPath = Annotated[str, PathParameter(description="the escalation policy's UUID")]
ScheduleIdPath = Annotated[str, PathParameter(description="the schedule's UUID")]
LayerIdPath = Annotated[str, PathParameter(description="the layer's UUID")]
OverrideIdPath = Annotated[str, PathParameter(description="the override's UUID")]
TimeQuery = Annotated[str | None, QueryParameter(max_length=64, description="ISO-8601 time with a UTC offset")]
DaysQuery = Annotated[int, QueryParameter(ge=1, le=MAX_DAYS, description=f"1-{MAX_DAYS}")]


# --- bodies ----------------------------------------------------------------------------------------------------------

class ScheduleCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    timezone: str
    description: str | None = None
    handoff_channel_id: str | None = None


class ScheduleUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str | UnsetType = UNSET
    timezone: str | UnsetType = UNSET
    description: str | UnsetType | None = UNSET
    handoff_channel_id: str | UnsetType | None = UNSET


class LayerCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A rotation: `participants` take turns in order from `rotation_start` at `handoff_time` (schedule's zone)."""

    name: str
    rotation_type: str
    rotation_start: date
    participants: list[str]
    handoff_time: str = "09:00"
    rotation_hours: int | None = None
    restrictions: list[Any] = []
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    position: int | None = None


class LayerUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str | UnsetType = UNSET
    rotation_type: str | UnsetType = UNSET
    rotation_start: date | UnsetType = UNSET
    participants: list[str] | UnsetType = UNSET
    handoff_time: str | UnsetType = UNSET
    rotation_hours: int | UnsetType | None = UNSET
    restrictions: list[Any] | UnsetType = UNSET
    starts_at: datetime | UnsetType | None = UNSET
    ends_at: datetime | UnsetType | None = UNSET
    position: int | UnsetType = UNSET


class OverrideCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    user_id: str
    starts_at: datetime
    ends_at: datetime
    reason: str | None = None


class RulePolicyChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`policy_id` null: the rule's alerts use the tenant's default policy."""

    policy_id: str | None


class PolicyList(msgspec.Struct, kw_only=True):
    items: list[EscalationPolicy]


class ScheduleList(msgspec.Struct, kw_only=True):
    items: list[Schedule]


class OverrideList(msgspec.Struct, kw_only=True):
    items: list[ScheduleOverride]


def parse_time(value: str, field: str) -> datetime:
    """An ISO-8601 query time with its UTC offset ("Z" or "+01:00"; a "+" decoded to a space is put back)."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        raise ValidationError("must be an ISO-8601 time such as 2026-03-29T00:00:00Z", field=field) from None
    if parsed.tzinfo is None:
        raise ValidationError("must carry a UTC offset (Z or +HH:MM)", field=field)
    return parsed.astimezone(UTC)


# --- escalation policies ---------------------------------------------------------------------------------------------

@get("/escalation-policies", summary="List escalation policies", responses=error_specs(401, 403))
async def list_tenant_policies(principal: PrincipalDep, tenant_conn: TenantConnDep) -> PolicyList:
    """Every policy of the tenant by name, with its levels and how many alert rules use it."""
    return PolicyList(items=await list_policies(tenant_conn, require_tenant(principal)))


@post("/escalation-policies", summary="Create an escalation policy", guards=ADMIN,
      responses=error_specs(400, 401, 403, 409))
async def create_tenant_policy(data: JSONBody[EscalationPolicySpec], principal: PrincipalDep,
                               tenant_conn: TenantConnDep, now: NowDep) -> EscalationPolicy:
    """1-10 levels of 1-20 targets each; every target must exist in the tenant. `is_default: true` takes the
    default mark from the previous default policy."""
    tenant_id = require_tenant(principal)
    policy_id = await create_policy(tenant_conn, tenant_id, data, now=now)
    return await require_policy(tenant_conn, tenant_id, policy_id)


@get("/escalation-policies/{policy_id:str}", summary="Get an escalation policy",
     responses=error_specs(400, 401, 403, 404))
async def get_tenant_policy(policy_id: PolicyIdPath, principal: PrincipalDep,
                            tenant_conn: TenantConnDep) -> EscalationPolicy:
    return await require_policy(tenant_conn, require_tenant(principal), policy_id)


@put("/escalation-policies/{policy_id:str}", summary="Replace an escalation policy", guards=ADMIN,
     responses=error_specs(400, 401, 403, 404, 409))
async def replace_tenant_policy(policy_id: PolicyIdPath, data: JSONBody[EscalationPolicySpec],
                                principal: PrincipalDep, tenant_conn: TenantConnDep, now: NowDep) -> EscalationPolicy:
    """The whole policy is replaced, its levels included."""
    tenant_id = require_tenant(principal)
    await update_policy(tenant_conn, tenant_id, policy_id, data, now=now)
    return await require_policy(tenant_conn, tenant_id, policy_id)


@delete("/escalation-policies/{policy_id:str}", summary="Delete an escalation policy", guards=ADMIN,
        responses=error_specs(400, 401, 403, 404))
async def delete_tenant_policy(policy_id: PolicyIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> None:
    """Rules that named it fall back to the tenant's default policy; alerts escalating with it stop escalating."""
    await delete_policy(tenant_conn, require_tenant(principal), policy_id)


@put("/alert-rules/{rule_id:str}/escalation-policy", summary="Choose an alert rule's escalation policy",
     guards=ADMIN, responses=error_specs(400, 401, 403, 404))
async def set_tenant_rule_policy(rule_id: Annotated[str, PathParameter(description="the alert rule's UUID")],
                                 data: JSONBody[RulePolicyChange], principal: PrincipalDep,
                                 tenant_conn: TenantConnDep, now: NowDep) -> RulePolicy:
    """New alerts of the rule escalate with this policy (null: the tenant's default policy, if any)."""
    return await set_rule_policy(tenant_conn, require_tenant(principal), rule_id, data.policy_id, now=now)


# --- schedules -------------------------------------------------------------------------------------------------------

@get("/schedules", summary="List on-call schedules", responses=error_specs(401, 403))
async def list_tenant_schedules(principal: PrincipalDep, tenant_conn: TenantConnDep) -> ScheduleList:
    return ScheduleList(items=await list_schedules(tenant_conn, require_tenant(principal)))


@post("/schedules", summary="Create an on-call schedule", guards=ADMIN, responses=error_specs(400, 401, 403, 409))
async def create_tenant_schedule(data: JSONBody[ScheduleCreate], principal: PrincipalDep,
                                 tenant_conn: TenantConnDep, now: NowDep) -> ScheduleDetail:
    """A schedule without layers yet; `timezone` is an IANA name such as Europe/Berlin."""
    tenant_id = require_tenant(principal)
    schedule_id = await create_schedule(tenant_conn, tenant_id, name=data.name, timezone=data.timezone, now=now,
                                        description=data.description, handoff_channel_id=data.handoff_channel_id)
    return await require_schedule(tenant_conn, tenant_id, schedule_id)


@get("/schedules/{schedule_id:str}", summary="Get an on-call schedule with its layers",
     responses=error_specs(400, 401, 403, 404))
async def get_tenant_schedule(schedule_id: ScheduleIdPath, principal: PrincipalDep,
                              tenant_conn: TenantConnDep) -> ScheduleDetail:
    return await require_schedule(tenant_conn, require_tenant(principal), schedule_id)


@patch("/schedules/{schedule_id:str}", summary="Change an on-call schedule", guards=ADMIN,
       responses=error_specs(400, 401, 403, 404, 409))
async def update_tenant_schedule(schedule_id: ScheduleIdPath, data: JSONBody[ScheduleUpdate],
                                 principal: PrincipalDep, tenant_conn: TenantConnDep, now: NowDep) -> ScheduleDetail:
    tenant_id = require_tenant(principal)
    await update_schedule(tenant_conn, tenant_id, schedule_id, now=now, name=data.name, timezone=data.timezone,
                          description=data.description, handoff_channel_id=data.handoff_channel_id)
    return await require_schedule(tenant_conn, tenant_id, schedule_id)


@delete("/schedules/{schedule_id:str}", summary="Delete an on-call schedule", guards=ADMIN,
        responses=error_specs(400, 401, 403, 404, 409))
async def delete_tenant_schedule(schedule_id: ScheduleIdPath, principal: PrincipalDep,
                                 tenant_conn: TenantConnDep) -> None:
    """Its layers and overrides go with it; refused (409, naming the policies) while an escalation policy pages it."""
    await delete_schedule(tenant_conn, require_tenant(principal), schedule_id)


@post("/schedules/{schedule_id:str}/layers", summary="Add a layer to a schedule", guards=ADMIN,
      responses=error_specs(400, 401, 403, 404))
async def create_schedule_layer(schedule_id: ScheduleIdPath, data: JSONBody[LayerCreate], principal: PrincipalDep,
                                tenant_conn: TenantConnDep, now: NowDep) -> ScheduleDetail:
    """Added last unless `position` is given; answers the whole schedule."""
    tenant_id = require_tenant(principal)
    fields = msgspec.structs.asdict(data)
    await create_layer(tenant_conn, tenant_id, schedule_id, now=now, **fields)
    return await require_schedule(tenant_conn, tenant_id, schedule_id)


@patch("/schedules/{schedule_id:str}/layers/{layer_id:str}", summary="Change or move a layer", guards=ADMIN,
       responses=error_specs(400, 401, 403, 404))
async def update_schedule_layer(schedule_id: ScheduleIdPath, layer_id: LayerIdPath, data: JSONBody[LayerUpdate],
                                principal: PrincipalDep, tenant_conn: TenantConnDep, now: NowDep) -> ScheduleDetail:
    """Only the fields sent change; `position` moves the layer, the others shifting. Answers the whole schedule."""
    tenant_id = require_tenant(principal)
    changes = sent_fields(data)
    await update_layer(tenant_conn, tenant_id, schedule_id, layer_id, changes, now=now)
    return await require_schedule(tenant_conn, tenant_id, schedule_id)


@delete("/schedules/{schedule_id:str}/layers/{layer_id:str}", summary="Remove a layer", guards=ADMIN,
        responses=error_specs(400, 401, 403, 404))
async def delete_schedule_layer(schedule_id: ScheduleIdPath, layer_id: LayerIdPath, principal: PrincipalDep,
                                tenant_conn: TenantConnDep, now: NowDep) -> None:
    await delete_layer(tenant_conn, require_tenant(principal), schedule_id, layer_id, now=now)


@get("/schedules/{schedule_id:str}/overrides", summary="List a schedule's overrides",
     responses=error_specs(400, 401, 403, 404))
async def list_schedule_overrides(
    schedule_id: ScheduleIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep,
    from_: Annotated[str | None, QueryParameter(name="from", max_length=64,
                                                description="only overrides ending after this time")] = None,
    to: Annotated[str | None, QueryParameter(max_length=64,
                                             description="only overrides starting before this time")] = None,
) -> OverrideList:
    start = None if from_ is None else parse_time(from_, "from")
    end = None if to is None else parse_time(to, "to")
    return OverrideList(items=await list_overrides(tenant_conn, require_tenant(principal), schedule_id,
                                                   start=start, end=end))


@post("/schedules/{schedule_id:str}/overrides", summary="Put someone on call for a while", guards=ADMIN,
      responses=error_specs(400, 401, 403, 404))
async def create_schedule_override(schedule_id: ScheduleIdPath, data: JSONBody[OverrideCreate],
                                   principal: PrincipalDep, tenant_conn: TenantConnDep,
                                   now: NowDep) -> ScheduleOverride:
    """For [starts_at, ends_at) (at most 90 days) `user_id` is on call instead of whoever the layers say."""
    tenant_id = require_tenant(principal)
    override_id = await create_override(tenant_conn, tenant_id, schedule_id, user_id=data.user_id,
                                        starts_at=data.starts_at, ends_at=data.ends_at, reason=data.reason,
                                        created_by=principal.actor, now=now)
    return await require_override(tenant_conn, tenant_id, schedule_id, override_id)


@delete("/schedules/{schedule_id:str}/overrides/{override_id:str}", summary="Remove an override", guards=ADMIN,
        responses=error_specs(400, 401, 403, 404))
async def delete_schedule_override(schedule_id: ScheduleIdPath, override_id: OverrideIdPath,
                                   principal: PrincipalDep, tenant_conn: TenantConnDep) -> None:
    await delete_override(tenant_conn, require_tenant(principal), schedule_id, override_id)


@get("/schedules/{schedule_id:str}/on-call", summary="Who is on call", responses=error_specs(400, 401, 403, 404))
async def get_schedule_on_call(schedule_id: ScheduleIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep,
                               now: NowDep, at: TimeQuery = None) -> OnCallNow:
    """Who the schedule pages now (or `at`), why, since when and until when; `on_call` is null in a gap."""
    moment = now if at is None else parse_time(at, "at")
    return await who_is_on_call(tenant_conn, require_tenant(principal), schedule_id, moment)


@get("/schedules/{schedule_id:str}/timeline", summary="A schedule's final shifts",
     responses=error_specs(400, 401, 403, 404))
async def get_schedule_timeline(schedule_id: ScheduleIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep,
                                now: NowDep, start: TimeQuery = None, days: DaysQuery = 7) -> Timeline:
    """Who is on call from `start` (default now) for `days` days, overrides applied; gaps are left out."""
    begin = now if start is None else parse_time(start, "start")
    return await timeline(tenant_conn, require_tenant(principal), schedule_id, begin, days)


@get("/users/{user_id:str}/shifts", summary="A person's upcoming on-call shifts",
     responses=error_specs(400, 401, 403, 404))
async def get_user_shifts(user_id: Annotated[str, PathParameter(description="the user's UUID")],
                          principal: PrincipalDep, tenant_conn: TenantConnDep, now: NowDep,
                          days: DaysQuery = 14) -> UserShifts:
    """The person's shifts in every schedule of the tenant from now for `days` days."""
    return await user_shifts(tenant_conn, require_tenant(principal), user_id, now, days)


router = Router(path="/customer", route_handlers=[
    list_tenant_policies, create_tenant_policy, get_tenant_policy, replace_tenant_policy, delete_tenant_policy,
    set_tenant_rule_policy, list_tenant_schedules, create_tenant_schedule, get_tenant_schedule,
    update_tenant_schedule, delete_tenant_schedule, create_schedule_layer, update_schedule_layer,
    delete_schedule_layer, list_schedule_overrides, create_schedule_override, delete_schedule_override,
    get_schedule_on_call, get_schedule_timeline, get_user_shifts,
], guards=[require_roles(*MEMBER_ROLES)], security=BEARER, tags=["on-call"])
