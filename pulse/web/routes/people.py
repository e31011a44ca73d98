"""/customer: a tenant's users, their contact methods and personal notification rules, and the caller's own profile.

Any member of the tenant (`customer`, `tenant-admin`) may read. A tenant-admin manages everyone; a customer may
change only their own contact methods and notification rules. The tenant comes from the token only; another
tenant's users are simply not found. Secrets are always shown as the mask; password hashes never leave Pulse.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Router, delete, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, UnsetType
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.errors import Forbidden, NotFound
from pulse.oncall.people.contacts import (
    ContactMethod,
    create_contact_method,
    delete_contact_method,
    list_contact_methods,
    require_contact_method,
    update_contact_method,
)
from pulse.oncall.people.paging import (
    NotificationRule,
    PagingStep,
    UserDetail,
    create_notification_rule,
    delete_notification_rule,
    get_paging_plan,
    list_notification_rules,
    require_notification_rule,
    require_user_detail,
    update_notification_rule,
)
from pulse.oncall.people.users import (
    User,
    create_user_in_tenant,
    deactivate_user,
    get_user_for_subject,
    list_users,
    require_user,
    update_user,
)
from pulse.web.auth import Principal, require_roles
from pulse.web.deps import NowDep, PrincipalDep, SettingsDep, TenantConnDep, require_tenant
from pulse.web.errors import error_specs
from pulse.web.routes.common import ADMIN, BEARER, MEMBER_ROLES

UserIdPath = Annotated[str, PathParameter(description="the user's UUID")]
ContactIdPath = Annotated[str, PathParameter(description="the contact method's UUID")]
RuleIdPath = Annotated[str, PathParameter(description="the notification rule's UUID")]
SeverityQuery = Annotated[int, QueryParameter(ge=1, le=5, description="alert severity: 1 info … 5 critical")]
ActiveQuery = Annotated[bool | None, QueryParameter(description="true: only active users; false: only deactivated")]


class UserCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: str
    display_name: str = ""
    roles: list[str] = msgspec.field(default_factory=lambda: ["customer"])
    timezone: str = "UTC"
    password: str | None = None


class UserUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields sent change."""

    display_name: str | UnsetType = UNSET
    roles: list[str] | UnsetType = UNSET
    timezone: str | UnsetType = UNSET
    is_active: bool | UnsetType = UNSET


class ContactMethodCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    kind: str
    address: str | None = None
    label: str | None = None
    secrets: dict[str, str] = {}
    is_enabled: bool = True


class ContactMethodUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields sent change. A secret sent back as the mask keeps the stored value."""

    address: str | UnsetType | None = UNSET
    label: str | UnsetType | None = UNSET
    secrets: dict[str, str] | UnsetType = UNSET
    is_enabled: bool | UnsetType = UNSET


class NotificationRuleCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    contact_id: str
    delay_minutes: int = 0
    min_severity: int = 1


class NotificationRuleUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    contact_id: str | UnsetType = UNSET
    delay_minutes: int | UnsetType = UNSET
    min_severity: int | UnsetType = UNSET


class UserList(msgspec.Struct, kw_only=True):
    items: list[User]


class ContactMethodList(msgspec.Struct, kw_only=True):
    items: list[ContactMethod]


class NotificationRuleList(msgspec.Struct, kw_only=True):
    items: list[NotificationRule]


class PagingPlan(msgspec.Struct, kw_only=True):
    severity: int
    steps: list[PagingStep]


async def _may_change(conn: AsyncConnection, tenant_id: str, principal: Principal, user_id: str) -> None:
    """A tenant-admin may change anyone's contact methods and rules; a customer only their own (else 403)."""
    target = await require_user(conn, tenant_id, user_id)
    if principal.has_any_role(["tenant-admin"]):
        return
    caller = await get_user_for_subject(conn, tenant_id, principal.subject)
    if caller is None or caller.user_id != target.user_id:
        raise Forbidden("customers may change only their own contact methods and notification rules")


# --- users -----------------------------------------------------------------------------------------------------------

@get("/users", summary="List the tenant's users", responses=error_specs(400, 401, 403))
async def list_tenant_users(principal: PrincipalDep, tenant_conn: TenantConnDep,
                            active: ActiveQuery = None) -> UserList:
    return UserList(items=await list_users(tenant_conn, require_tenant(principal), is_active=active))


@post("/users", summary="Add a user", guards=ADMIN, responses=error_specs(400, 401, 403, 409))
async def create_tenant_user(data: JSONBody[UserCreate], principal: PrincipalDep, tenant_conn: TenantConnDep,
                             now: NowDep) -> User:
    """Roles are `customer` and/or `tenant-admin`; the email must be unused anywhere in Pulse (else 409). Without a
    password the person cannot log in with Pulse's own identity but can still be paged."""
    tenant_id = require_tenant(principal)
    user_id = await create_user_in_tenant(tenant_conn, tenant_id, email=data.email, roles=data.roles,
                                          display_name=data.display_name, timezone=data.timezone,
                                          password=data.password, now=now)
    return await require_user(tenant_conn, tenant_id, user_id)


@get("/users/{user_id:str}", summary="Get a user", responses=error_specs(400, 401, 403, 404))
async def get_tenant_user(user_id: UserIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> User:
    return await require_user(tenant_conn, require_tenant(principal), user_id)


@patch("/users/{user_id:str}", summary="Change a user", guards=ADMIN, responses=error_specs(400, 401, 403, 404, 409))
async def update_tenant_user(user_id: UserIdPath, data: JSONBody[UserUpdate], principal: PrincipalDep,
                             tenant_conn: TenantConnDep, now: NowDep) -> User:
    """The tenant's last active tenant-admin cannot lose the role or be deactivated (409)."""
    tenant_id = require_tenant(principal)
    await update_user(tenant_conn, tenant_id, user_id, now=now, display_name=data.display_name, roles=data.roles,
                      timezone=data.timezone, is_active=data.is_active)
    return await require_user(tenant_conn, tenant_id, user_id)


@delete("/users/{user_id:str}", summary="Deactivate a user", guards=ADMIN,
        responses=error_specs(400, 401, 403, 404, 409))
async def deactivate_tenant_user(user_id: UserIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep,
                                 now: NowDep) -> None:
    """The user can no longer log in or refresh a session and is no longer paged; schedules and history keep
    referring to them, and PATCH `is_active: true` brings them back."""
    await deactivate_user(tenant_conn, require_tenant(principal), user_id, now=now)


@get("/me", summary="The caller's own user, contact methods and notification rules",
     responses=error_specs(401, 403, 404))
async def get_me(principal: PrincipalDep, tenant_conn: TenantConnDep, settings: SettingsDep) -> UserDetail:
    tenant_id = require_tenant(principal)
    me = await get_user_for_subject(tenant_conn, tenant_id, principal.subject)
    if me is None:
        raise NotFound("this login has no Pulse user in the tenant")
    return await require_user_detail(tenant_conn, tenant_id, me.user_id, settings=settings)


@get("/users/{user_id:str}/paging-plan", summary="How a page would reach a user",
     responses=error_specs(400, 401, 403, 404))
async def get_user_paging_plan(user_id: UserIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep,
                               severity: SeverityQuery = 5) -> PagingPlan:
    """The contact methods a page for an alert of `severity` would use, and after how many minutes."""
    tenant_id = require_tenant(principal)
    user = await require_user(tenant_conn, tenant_id, user_id)
    return PagingPlan(severity=severity,
                      steps=await get_paging_plan(tenant_conn, tenant_id, user.user_id, severity))


# --- contact methods -------------------------------------------------------------------------------------------------

@get("/users/{user_id:str}/contact-methods", summary="List a user's contact methods",
     responses=error_specs(400, 401, 403, 404))
async def list_user_contacts(user_id: UserIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep,
                             settings: SettingsDep) -> ContactMethodList:
    return ContactMethodList(items=await list_contact_methods(tenant_conn, require_tenant(principal), user_id,
                                                              settings=settings))


@post("/users/{user_id:str}/contact-methods", summary="Add a contact method",
      responses=error_specs(400, 401, 403, 404))
async def create_user_contact(user_id: UserIdPath, data: JSONBody[ContactMethodCreate], principal: PrincipalDep,
                              tenant_conn: TenantConnDep, settings: SettingsDep, now: NowDep) -> ContactMethod:
    """Checked for its kind (URLs must pass the SSRF checks); secrets are stored encrypted and shown as the mask."""
    tenant_id = require_tenant(principal)
    await _may_change(tenant_conn, tenant_id, principal, user_id)
    contact_id = await create_contact_method(tenant_conn, tenant_id, user_id, kind=data.kind, address=data.address,
                                             secrets=data.secrets, label=data.label, is_enabled=data.is_enabled,
                                             settings=settings, now=now)
    return await require_contact_method(tenant_conn, tenant_id, user_id, contact_id, settings=settings)


@get("/users/{user_id:str}/contact-methods/{contact_id:str}", summary="Get a contact method",
     responses=error_specs(400, 401, 403, 404))
async def get_user_contact(user_id: UserIdPath, contact_id: ContactIdPath, principal: PrincipalDep,
                           tenant_conn: TenantConnDep, settings: SettingsDep) -> ContactMethod:
    return await require_contact_method(tenant_conn, require_tenant(principal), user_id, contact_id,
                                        settings=settings)


@patch("/users/{user_id:str}/contact-methods/{contact_id:str}", summary="Change a contact method",
       responses=error_specs(400, 401, 403, 404))
async def update_user_contact(user_id: UserIdPath, contact_id: ContactIdPath, data: JSONBody[ContactMethodUpdate],
                              principal: PrincipalDep, tenant_conn: TenantConnDep, settings: SettingsDep,
                              now: NowDep) -> ContactMethod:
    """`secrets`, when sent, is the full set: the mask keeps a stored secret, a new value replaces it, a name left
    out is removed. The whole contact method is checked again, including the SSRF checks."""
    tenant_id = require_tenant(principal)
    await _may_change(tenant_conn, tenant_id, principal, user_id)
    await update_contact_method(tenant_conn, tenant_id, user_id, contact_id, settings=settings, now=now,
                                address=data.address, secrets=data.secrets, label=data.label,
                                is_enabled=data.is_enabled)
    return await require_contact_method(tenant_conn, tenant_id, user_id, contact_id, settings=settings)


@delete("/users/{user_id:str}/contact-methods/{contact_id:str}", summary="Delete a contact method",
        responses=error_specs(400, 401, 403, 404))
async def delete_user_contact(user_id: UserIdPath, contact_id: ContactIdPath, principal: PrincipalDep,
                              tenant_conn: TenantConnDep, now: NowDep) -> None:
    """The notification rules using it go with it; pages to it not yet sent are cancelled."""
    tenant_id = require_tenant(principal)
    await _may_change(tenant_conn, tenant_id, principal, user_id)
    await delete_contact_method(tenant_conn, tenant_id, user_id, contact_id, now=now)


# --- notification rules ----------------------------------------------------------------------------------------------

@get("/users/{user_id:str}/notification-rules", summary="List a user's notification rules",
     responses=error_specs(400, 401, 403, 404))
async def list_user_rules(user_id: UserIdPath, principal: PrincipalDep,
                          tenant_conn: TenantConnDep) -> NotificationRuleList:
    return NotificationRuleList(items=await list_notification_rules(tenant_conn, require_tenant(principal), user_id))


@post("/users/{user_id:str}/notification-rules", summary="Add a notification rule",
      responses=error_specs(400, 401, 403, 404, 409))
async def create_user_rule(user_id: UserIdPath, data: JSONBody[NotificationRuleCreate], principal: PrincipalDep,
                           tenant_conn: TenantConnDep) -> NotificationRule:
    """"When I am paged for an alert of at least `min_severity`, use this contact method after `delay_minutes`."""
    tenant_id = require_tenant(principal)
    await _may_change(tenant_conn, tenant_id, principal, user_id)
    rule_id = await create_notification_rule(tenant_conn, tenant_id, user_id, contact_id=data.contact_id,
                                             delay_minutes=data.delay_minutes, min_severity=data.min_severity)
    return await require_notification_rule(tenant_conn, tenant_id, user_id, rule_id)


@get("/users/{user_id:str}/notification-rules/{rule_id:str}", summary="Get a notification rule",
     responses=error_specs(400, 401, 403, 404))
async def get_user_rule(user_id: UserIdPath, rule_id: RuleIdPath, principal: PrincipalDep,
                        tenant_conn: TenantConnDep) -> NotificationRule:
    return await require_notification_rule(tenant_conn, require_tenant(principal), user_id, rule_id)


@patch("/users/{user_id:str}/notification-rules/{rule_id:str}", summary="Change a notification rule",
       responses=error_specs(400, 401, 403, 404, 409))
async def update_user_rule(user_id: UserIdPath, rule_id: RuleIdPath, data: JSONBody[NotificationRuleUpdate],
                           principal: PrincipalDep, tenant_conn: TenantConnDep) -> NotificationRule:
    tenant_id = require_tenant(principal)
    await _may_change(tenant_conn, tenant_id, principal, user_id)
    await update_notification_rule(tenant_conn, tenant_id, user_id, rule_id, contact_id=data.contact_id,
                                   delay_minutes=data.delay_minutes, min_severity=data.min_severity)
    return await require_notification_rule(tenant_conn, tenant_id, user_id, rule_id)


@delete("/users/{user_id:str}/notification-rules/{rule_id:str}", summary="Delete a notification rule",
        responses=error_specs(400, 401, 403, 404))
async def delete_user_rule(user_id: UserIdPath, rule_id: RuleIdPath, principal: PrincipalDep,
                           tenant_conn: TenantConnDep) -> None:
    tenant_id = require_tenant(principal)
    await _may_change(tenant_conn, tenant_id, principal, user_id)
    await delete_notification_rule(tenant_conn, tenant_id, user_id, rule_id)


router = Router(path="/customer", route_handlers=[
    list_tenant_users, create_tenant_user, get_tenant_user, update_tenant_user, deactivate_tenant_user, get_me,
    get_user_paging_plan, list_user_contacts, create_user_contact, get_user_contact, update_user_contact,
    delete_user_contact, list_user_rules, create_user_rule, get_user_rule, update_user_rule, delete_user_rule,
], guards=[require_roles(*MEMBER_ROLES)], security=BEARER, tags=["people"])
