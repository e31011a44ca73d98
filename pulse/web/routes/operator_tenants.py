"""/operator tenants and subscriptions: onboarding, changes, suspension; each request audited (operator_audit).

A handler that acts on a subscription names its tenant in the audit row before acting, so a refused change is
recorded under the right tenant too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, UnsetType

from pulse.fleet.operator import Subscription, SubscriptionPage, Tenant, TenantPage
from pulse.fleet.operator.common import MAX_OFFSET, MAX_PAGE
from pulse.fleet.operator.subscriptions import (
    create_subscription,
    list_subscriptions,
    require_subscription,
    resume_subscription,
    suspend_subscription,
    update_subscription,
)
from pulse.fleet.operator.tenants import list_tenants, provision_tenant, require_tenant, update_tenant
from pulse.web.deps import NowDep, PrincipalDep, SettingsDep
from pulse.web.errors import error_specs
from pulse.web.routes.common import sent_fields
from pulse.web.routes.operator_audit import AuditDep, AuditNote, OperatorConnDep, is_operator_admin

TenantIdPath = Annotated[str, PathParameter(description="the tenant's id", max_length=63)]
SubscriptionIdPath = Annotated[str, PathParameter(description="the subscription's UUID", max_length=64)]
LimitQuery = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description=f"1-{MAX_PAGE}")]
OffsetQuery = Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)]


class TenantCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    tenant_id: str
    name: str
    device_limit: int = 1000
    timezone: str = "UTC"
    contact_email: str | None = None
    subscription_kind: str = "MAIN"
    term_days: int = 365


class TenantUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields sent change."""

    name: str | UnsetType = UNSET
    contact_email: str | UnsetType | None = UNSET
    timezone: str | UnsetType = UNSET
    status: str | UnsetType = UNSET


class SubscriptionCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    kind: str
    device_limit: int
    expires_at: datetime | None = None
    parent_subscription_id: str | None = None
    grace_days: int | None = None
    description: str | None = None


class SubscriptionUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields sent change; `expires_at: null` makes the term open-ended; `kind: MAIN` converts a trial."""

    kind: str | UnsetType = UNSET
    status: str | UnsetType = UNSET
    device_limit: int | UnsetType = UNSET
    expires_at: datetime | UnsetType | None = UNSET
    grace_days: int | UnsetType = UNSET
    description: str | UnsetType | None = UNSET


def _note_changes(audit: AuditNote, changes: dict[str, Any]) -> None:
    audit.changes = msgspec.to_builtins(changes)


# --- tenants -----------------------------------------------------------------------------------------------------

@get("/tenants", summary="List tenants with device and open alert counts", responses=error_specs(400, 401, 403))
async def list_all_tenants(
    operator_conn: OperatorConnDep,
    q: Annotated[str | None, QueryParameter(max_length=200, description="part of the id or name")] = None,
    status: Annotated[str | None, QueryParameter(max_length=20, description="ACTIVE, SUSPENDED or DELETED")] = None,
    limit: LimitQuery = 50, offset: OffsetQuery = 0,
) -> TenantPage:
    return await list_tenants(operator_conn, q=q, status=status, limit=limit, offset=offset)


@post("/tenants", summary="Create a tenant with its first subscription",
      responses=error_specs(400, 401, 403, 409))
async def create_new_tenant(data: JSONBody[TenantCreate], operator_conn: OperatorConnDep, audit: AuditDep,
                            now: NowDep, settings: SettingsDep) -> Tenant:
    """The subscription is MAIN (or TRIAL, with `subscription_kind`) for `term_days` from now, with
    PULSE_SUBSCRIPTION_GRACE_DAYS of grace."""
    audit.tenant_id = data.tenant_id
    _note_changes(audit, msgspec.structs.asdict(data))
    return await provision_tenant(operator_conn, data.tenant_id, data.name, device_limit=data.device_limit,
                                  timezone=data.timezone, contact_email=data.contact_email,
                                  subscription_kind=data.subscription_kind, term_days=data.term_days,
                                  grace_days=settings.subscription_grace_days, now=now)


@get("/tenants/{tenant_id:str}", summary="A tenant with its subscriptions", responses=error_specs(400, 401, 403, 404))
async def get_one_tenant(tenant_id: TenantIdPath, operator_conn: OperatorConnDep) -> Tenant:
    return await require_tenant(operator_conn, tenant_id)


@patch("/tenants/{tenant_id:str}", summary="Change or suspend a tenant", responses=error_specs(400, 401, 403, 404))
async def update_one_tenant(tenant_id: TenantIdPath, data: JSONBody[TenantUpdate], operator_conn: OperatorConnDep,
                            principal: PrincipalDep, audit: AuditDep, now: NowDep) -> Tenant:
    """`status: SUSPENDED` makes ingest refuse every device of the tenant (SUBSCRIPTION_SUSPENDED) from the commit on;
    `ACTIVE` lets them back. Setting or leaving DELETED needs operator-admin."""
    changes = sent_fields(data)
    _note_changes(audit, changes)
    return await update_tenant(operator_conn, tenant_id, changes, now=now, may_delete=is_operator_admin(principal))


# --- subscriptions -----------------------------------------------------------------------------------------------

@get("/tenants/{tenant_id:str}/subscriptions", summary="A tenant's subscriptions",
     responses=error_specs(400, 401, 403, 404))
async def list_tenant_subscriptions(tenant_id: TenantIdPath, operator_conn: OperatorConnDep,
                                    limit: LimitQuery = 50, offset: OffsetQuery = 0) -> SubscriptionPage:
    return await list_subscriptions(operator_conn, tenant_id, limit=limit, offset=offset)


@post("/tenants/{tenant_id:str}/subscriptions", summary="Add a subscription to a tenant",
      responses=error_specs(400, 401, 403, 404, 409))
async def create_tenant_subscription(tenant_id: TenantIdPath, data: JSONBody[SubscriptionCreate],
                                     operator_conn: OperatorConnDep, audit: AuditDep, now: NowDep,
                                     settings: SettingsDep) -> Subscription:
    """`grace_days` defaults to PULSE_SUBSCRIPTION_GRACE_DAYS; an ADDON's parent is the tenant's MAIN."""
    _note_changes(audit, msgspec.structs.asdict(data))
    grace_days = settings.subscription_grace_days if data.grace_days is None else data.grace_days
    return await create_subscription(operator_conn, tenant_id, kind=data.kind, device_limit=data.device_limit,
                                     expires_at=data.expires_at, parent_subscription_id=data.parent_subscription_id,
                                     description=data.description, grace_days=grace_days, now=now)


@get("/subscriptions/{subscription_id:str}", summary="One subscription", responses=error_specs(400, 401, 403, 404))
async def get_one_subscription(subscription_id: SubscriptionIdPath, operator_conn: OperatorConnDep,
                               audit: AuditDep) -> Subscription:
    sub = await require_subscription(operator_conn, subscription_id)
    audit.tenant_id = sub.tenant_id
    return sub


@patch("/subscriptions/{subscription_id:str}", summary="Change a subscription",
       responses=error_specs(400, 401, 403, 404))
async def update_one_subscription(subscription_id: SubscriptionIdPath, data: JSONBody[SubscriptionUpdate],
                                  operator_conn: OperatorConnDep, audit: AuditDep, now: NowDep,
                                  principal: PrincipalDep, settings: SettingsDep) -> Subscription:
    """A status change reaches ingest at commit: devices of a SUSPENDED subscription are refused with
    SUBSCRIPTION_SUSPENDED, of an EXPIRED one with SUBSCRIPTION_EXPIRED. A new `expires_at` in the future renews
    a GRACE or SUSPENDED subscription (back to ACTIVE); `kind: MAIN` converts a TRIAL. Status changes are
    audited in the tenant's log and announced to its admins."""
    changes = sent_fields(data)
    _note_changes(audit, changes)
    audit.tenant_id = (await require_subscription(operator_conn, subscription_id)).tenant_id
    return await update_subscription(operator_conn, subscription_id, changes, now=now, actor=principal.actor,
                                     expire_after_days=settings.subscription_expire_after_days)


@post("/subscriptions/{subscription_id:str}/suspend", status_code=200, summary="Suspend a subscription",
      responses=error_specs(400, 401, 403, 404, 409))
async def suspend_one_subscription(subscription_id: SubscriptionIdPath, operator_conn: OperatorConnDep,
                                   audit: AuditDep, now: NowDep, principal: PrincipalDep) -> Subscription:
    """Ingest refuses its devices (403 SUBSCRIPTION_SUSPENDED) from the commit on; 409 unless TRIAL, ACTIVE or
    GRACE."""
    audit.tenant_id = (await require_subscription(operator_conn, subscription_id)).tenant_id
    return await suspend_subscription(operator_conn, subscription_id, now=now, actor=principal.actor)


@post("/subscriptions/{subscription_id:str}/resume", status_code=200, summary="Resume a suspended subscription",
      responses=error_specs(400, 401, 403, 404, 409))
async def resume_one_subscription(subscription_id: SubscriptionIdPath, operator_conn: OperatorConnDep,
                                  audit: AuditDep, now: NowDep, principal: PrincipalDep) -> Subscription:
    """Back to ACTIVE (TRIAL for a TRIAL subscription); 409 unless SUSPENDED."""
    audit.tenant_id = (await require_subscription(operator_conn, subscription_id)).tenant_id
    return await resume_subscription(operator_conn, subscription_id, now=now, actor=principal.actor)


ROUTES = [list_all_tenants, create_new_tenant, get_one_tenant, update_one_tenant, list_tenant_subscriptions,
          create_tenant_subscription, get_one_subscription, update_one_subscription, suspend_one_subscription,
          resume_one_subscription]
