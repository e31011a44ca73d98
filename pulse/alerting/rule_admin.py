"""Alert rules as a tenant manages them: list, read, create, change and delete, each change announced to the evaluator.

Every write validates the whole rule (definition through `parse_definition`, severity, scopes, references to
device groups and escalation policies of the same tenant) and sends `NOTIFY pulse_rules_changed` in the
caller's transaction, so `pulse evaluate` reloads its rules once the change is committed (and never for a
change that was rolled back). Plain SQL over a tenant-scoped connection; every query also names the tenant.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.alerting.rules import RULE_TYPES, SEVERITY_NAMES, parse_definition
from pulse.alerting.worker import RULES_CHANNEL
from pulse.checks import check_name, is_whole_number, parse_uuid
from pulse.errors import NotFound, ValidationError
from pulse.fleet.scopes import SCOPE_ID, check_group_ids, check_strings, require_scope
from pulse.sql import check_page

MAX_PAGE = 200
NAME_MAX = 200
DESCRIPTION_MAX = 2000
FOR_SECONDS_MAX = 86_400
TAG_MAX = 64

RuleChange = Literal["created", "updated", "deleted"]


class AlertRule(msgspec.Struct, kw_only=True):
    """A rule as the API shows it: the stored (normalised) definition, and severity as number and name."""

    rule_id: str
    name: str
    description: str | None
    rule_type: str
    severity: int
    severity_name: str
    definition: dict[str, Any]
    for_seconds: int
    is_enabled: bool
    site_ids: list[str]
    group_ids: list[str]
    tags: list[str]
    device_ids: list[str]
    escalation_policy_id: str | None
    created_at: datetime
    updated_at: datetime


class AlertRulePage(msgspec.Struct, kw_only=True):
    """By name; pass `next_cursor` back as `cursor` for the next page (null: no more)."""

    items: list[AlertRule]
    limit: int
    next_cursor: str | None


_COLUMNS = ("rule_id::text, name, description, rule_type, severity, definition, for_seconds, is_enabled, site_ids, "
            "group_ids::text[] AS group_ids, tags, device_ids, escalation_policy_id::text, created_at, updated_at")
_FIELDS = ("name", "description", "rule_type", "severity", "definition", "for_seconds", "is_enabled", "site_ids",
           "group_ids", "tags", "device_ids", "escalation_policy_id")


def _rule(row: Any) -> AlertRule:
    data = dict(row._mapping)
    data["severity_name"] = SEVERITY_NAMES.get(data["severity"], str(data["severity"]))
    for key in ("site_ids", "group_ids", "tags", "device_ids"):
        data[key] = list(data[key] or [])
    return msgspec.convert(data, AlertRule)


def _encode_cursor(name: str, rule_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([name, rule_id]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        name, rule_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
        if not isinstance(name, str):
            raise ValueError(name)
        return name, str(uuid.UUID(rule_id))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError, AttributeError):
        raise ValidationError("is not a cursor this API gave out", field="cursor") from None


# --- reading ---------------------------------------------------------------------------------------------------

async def list_rules(conn: AsyncConnection, tenant_id: str, *, enabled: bool | None = None,
                     rule_type: str | None = None, limit: int = 50, cursor: str | None = None) -> AlertRulePage:
    """The tenant's rules by name (then id), optionally only enabled/disabled ones or one type; cursor-paged."""
    check_page(limit, max_limit=MAX_PAGE)
    where = ["tenant_id = :t"]
    params: dict[str, Any] = {"t": tenant_id, "limit": limit + 1}
    if enabled is not None:
        where.append("is_enabled = :enabled")
        params["enabled"] = enabled
    if rule_type is not None:
        if rule_type not in RULE_TYPES:
            raise ValidationError(f"unknown rule type {rule_type!r}; use {', '.join(RULE_TYPES)}", field="rule_type")
        where.append("rule_type = :rule_type")
        params["rule_type"] = rule_type
    if cursor:
        params["cursor_name"], params["cursor_id"] = _decode_cursor(cursor)
        where.append("(name, rule_id) > (CAST(:cursor_name AS text), CAST(:cursor_id AS uuid))")
    rows = (await conn.execute(text(
        f"SELECT {_COLUMNS} FROM alert_rules WHERE {' AND '.join(where)} ORDER BY name, rule_id LIMIT :limit"),
        params)).all()
    items = [_rule(r) for r in rows[:limit]]
    more = len(rows) > limit
    return AlertRulePage(items=items, limit=limit,
                         next_cursor=_encode_cursor(items[-1].name, items[-1].rule_id) if more else None)


async def get_rule(conn: AsyncConnection, tenant_id: str, rule_id: str) -> AlertRule | None:
    row = (await conn.execute(text(
        f"SELECT {_COLUMNS} FROM alert_rules WHERE tenant_id = :t AND rule_id = CAST(:r AS uuid)"),
        {"t": tenant_id, "r": parse_uuid(rule_id, "rule_id")})).first()
    return None if row is None else _rule(row)


async def require_rule(conn: AsyncConnection, tenant_id: str, rule_id: str) -> AlertRule:
    """The rule, or NotFound (also for another tenant's rule id)."""
    rule = await get_rule(conn, tenant_id, rule_id)
    if rule is None:
        raise NotFound(f"alert rule {rule_id} not found", details={"field": "rule_id"})
    return rule


# --- validation ------------------------------------------------------------------------------------------------

def _check_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """The rule's own fields checked and normalised (no database look-ups); errors name the field."""
    name = check_name(rule["name"], "name", NAME_MAX)
    description = rule["description"]
    if description is not None and (not isinstance(description, str) or len(description) > DESCRIPTION_MAX):
        raise ValidationError(f"must be at most {DESCRIPTION_MAX} characters", field="description")
    if rule["rule_type"] not in RULE_TYPES:
        raise ValidationError(f"must be one of {', '.join(RULE_TYPES)}", field="rule_type")
    severity = rule["severity"]
    if not is_whole_number(severity, 1, 5):
        raise ValidationError("must be 1 (info), 2 (low), 3 (medium), 4 (high) or 5 (critical)", field="severity")
    definition = rule["definition"]
    if not isinstance(definition, dict):
        raise ValidationError("must be an object", field="definition")
    parsed = parse_definition(rule["rule_type"], definition)
    for_seconds = rule["for_seconds"]
    if not is_whole_number(for_seconds, 0, FOR_SECONDS_MAX):
        raise ValidationError(f"must be 0-{FOR_SECONDS_MAX} seconds", field="for_seconds")
    if not isinstance(rule["is_enabled"], bool):
        raise ValidationError("must be true or false", field="is_enabled")
    group_ids = check_group_ids(rule["group_ids"])
    policy = rule["escalation_policy_id"]
    return {
        **rule,
        "name": name,
        "definition": msgspec.to_builtins(parsed),
        "site_ids": check_strings(rule["site_ids"], "site_ids", pattern=SCOPE_ID, max_len=128),
        "device_ids": check_strings(rule["device_ids"], "device_ids", pattern=SCOPE_ID, max_len=128),
        "tags": check_strings(rule["tags"], "tags", pattern=None, max_len=TAG_MAX),
        "group_ids": group_ids,
        "escalation_policy_id": None if policy is None else parse_uuid(policy, "escalation_policy_id"),
    }


async def _check_references(conn: AsyncConnection, tenant_id: str, rule: dict[str, Any],
                            scope_fields: tuple[str, ...] = ("site_ids", "group_ids", "device_ids")) -> None:
    """The scope's sites, device groups and devices (of `scope_fields`) and the escalation policy must be this
    tenant's. The policy row is key-share locked so that it cannot be deleted between this check and the commit."""
    await require_scope(conn, tenant_id, rule, scope_fields)
    if rule["escalation_policy_id"] is not None:
        exists = (await conn.execute(text(
            "SELECT 1 FROM escalation_policies WHERE tenant_id = :t AND policy_id = CAST(:p AS uuid) FOR KEY SHARE"),
            {"t": tenant_id, "p": rule["escalation_policy_id"]})).first()
        if not exists:
            raise ValidationError(f"no escalation policy {rule['escalation_policy_id']} in this tenant",
                                  field="escalation_policy_id")


async def notify_rules_changed(conn: AsyncConnection, tenant_id: str, rule_id: str, change: RuleChange) -> None:
    """Tell `pulse evaluate` to reload its rules once the caller's transaction commits.

    The payload is `{"tenant_id", "rule_id", "change"}` as JSON; the evaluator reloads every rule on any payload.
    """
    payload = json.dumps({"tenant_id": tenant_id, "rule_id": rule_id, "change": change}, separators=(",", ":"))
    await conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": RULES_CHANNEL, "payload": payload})


# --- writing ---------------------------------------------------------------------------------------------------

def _params(rule: dict[str, Any]) -> dict[str, Any]:
    return {**{k: rule[k] for k in _FIELDS}, "definition": json.dumps(rule["definition"])}


async def create_rule(conn: AsyncConnection, tenant_id: str, *, name: str, rule_type: str, severity: int,
                      definition: dict[str, Any], now: datetime, description: str | None = None,
                      for_seconds: int = 0, is_enabled: bool = True, site_ids: list[str] | None = None,
                      group_ids: list[str] | None = None, tags: list[str] | None = None,
                      device_ids: list[str] | None = None, escalation_policy_id: str | None = None) -> str:
    """Add a rule; errors name the field (`definition.…` for the definition). Returns the new rule id."""
    rule = _check_rule({
        "name": name, "description": description, "rule_type": rule_type, "severity": severity,
        "definition": definition, "for_seconds": for_seconds, "is_enabled": is_enabled, "site_ids": site_ids or [],
        "group_ids": group_ids or [], "tags": tags or [], "device_ids": device_ids or [],
        "escalation_policy_id": escalation_policy_id})
    await _check_references(conn, tenant_id, rule)
    rule_id = str((await conn.execute(text(
        "INSERT INTO alert_rules (tenant_id, name, description, rule_type, severity, definition, for_seconds, "
        "  is_enabled, site_ids, group_ids, tags, device_ids, escalation_policy_id, created_at, updated_at) "
        "VALUES (:t, :name, :description, :rule_type, :severity, CAST(:definition AS jsonb), :for_seconds, "
        "  :is_enabled, :site_ids, CAST(:group_ids AS uuid[]), :tags, :device_ids, "
        "  CAST(:escalation_policy_id AS uuid), :now, :now) RETURNING rule_id::text"),
        {**_params(rule), "t": tenant_id, "now": now})).scalar_one())
    await notify_rules_changed(conn, tenant_id, rule_id, "created")
    return rule_id


async def update_rule(conn: AsyncConnection, tenant_id: str, rule_id: str, changes: dict[str, Any], *,
                      now: datetime) -> None:
    """Change the given fields (names as in create_rule); the resulting rule is validated as a whole again.

    Changing `rule_type` therefore usually needs a matching `definition` in the same change.
    """
    unknown = [k for k in changes if k not in _FIELDS]
    if unknown:
        raise ValidationError("is not a field of an alert rule", field=unknown[0])
    rule_id = parse_uuid(rule_id, "rule_id")
    row = (await conn.execute(text(
        "SELECT name, description, rule_type, severity, definition, for_seconds, is_enabled, site_ids, "
        "  group_ids::text[] AS group_ids, tags, device_ids, escalation_policy_id::text "
        "FROM alert_rules WHERE tenant_id = :t AND rule_id = CAST(:r AS uuid) FOR NO KEY UPDATE"),
        {"t": tenant_id, "r": rule_id})).first()
    if row is None:
        raise NotFound(f"alert rule {rule_id} not found", details={"field": "rule_id"})
    stored = {k: (list(v or []) if k in ("site_ids", "group_ids", "tags", "device_ids") else v)
              for k, v in row._mapping.items()}
    rule = _check_rule({**stored, **changes})
    # Scope lists are checked when sent: a site deleted since does not block editing the rule's other fields.
    await _check_references(conn, tenant_id, rule, tuple(k for k in ("site_ids", "group_ids", "device_ids")
                                                         if k in changes))
    await conn.execute(text(
        "UPDATE alert_rules SET name = :name, description = :description, rule_type = :rule_type, "
        "  severity = :severity, definition = CAST(:definition AS jsonb), for_seconds = :for_seconds, "
        "  is_enabled = :is_enabled, site_ids = :site_ids, group_ids = CAST(:group_ids AS uuid[]), tags = :tags, "
        "  device_ids = :device_ids, escalation_policy_id = CAST(:escalation_policy_id AS uuid), updated_at = :now "
        "WHERE tenant_id = :t AND rule_id = CAST(:r AS uuid)"),
        {**_params(rule), "t": tenant_id, "r": rule_id, "now": now})
    await notify_rules_changed(conn, tenant_id, rule_id, "updated")


async def delete_rule(conn: AsyncConnection, tenant_id: str, rule_id: str) -> None:
    """Delete a rule. Its alerts are kept (open ones stay open until closed by a person); their rule_id becomes
    NULL through the foreign key."""
    deleted = (await conn.execute(text(
        "DELETE FROM alert_rules WHERE tenant_id = :t AND rule_id = CAST(:r AS uuid) RETURNING rule_id::text"),
        {"t": tenant_id, "r": parse_uuid(rule_id, "rule_id")})).scalar()
    if deleted is None:
        raise NotFound(f"alert rule {rule_id} not found", details={"field": "rule_id"})
    await notify_rules_changed(conn, tenant_id, str(deleted), "deleted")
