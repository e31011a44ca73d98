"""Escalation policies: their levels and targets as the escalation engine reads them, and which policy a rule uses.

A level's `targets` is stored as exactly `[{"type": "user" | "schedule" | "channel", "id": "<uuid>"}, ...]`;
`pulse escalate` resolves them when the level fires (a schedule to whoever is on call then). Services never
commit; the caller owns the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.alerting.rule_admin import notify_rules_changed
from pulse.checks import is_whole_number, parse_uuid
from pulse.errors import Conflict, NotFound, ValidationError
from pulse.sql import execute_unique

MAX_LEVELS = 10
MAX_TARGETS = 20
MAX_DELAY_MINUTES = 1440
MAX_REPEAT = 10
TARGET_TYPES = ("user", "schedule", "channel")
# What a target's id must name, per type: (table, id column).
_TARGET_TABLES = {"user": ("users", "user_id"), "schedule": ("oncall_schedules", "schedule_id"),
                  "channel": ("notification_channels", "channel_id")}


class EscalationTarget(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Whom a level pages: a user, whoever is on call in a schedule, or a notification channel."""

    type: str
    id: str


class EscalationLevelSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One level as written: minutes after the previous level (after the alert opened, for the first)."""

    delay_minutes: int
    targets: list[EscalationTarget]


class EscalationPolicySpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A whole policy: what creating it takes and what replacing it takes (its levels are replaced)."""

    name: str
    description: str | None = None
    repeat_count: int = 0
    is_default: bool = False
    levels: list[EscalationLevelSpec]


class EscalationLevel(msgspec.Struct, kw_only=True):
    position: int
    delay_minutes: int
    targets: list[EscalationTarget]


class EscalationPolicy(msgspec.Struct, kw_only=True):
    """A policy with its levels in order; `rule_count` is how many alert rules name it."""

    policy_id: str
    name: str
    description: str | None
    repeat_count: int
    is_default: bool
    levels: list[EscalationLevel]
    rule_count: int
    created_at: datetime
    updated_at: datetime


class RulePolicy(msgspec.Struct, kw_only=True):
    """Which policy an alert rule's alerts escalate with; null: the tenant's default policy, if any."""

    rule_id: str
    escalation_policy_id: str | None
    escalation_policy_name: str | None


def _int_in(value: Any, low: int, high: int, field: str) -> int:
    if not is_whole_number(value, low, high):
        raise ValidationError(f"must be an integer {low}-{high}", field=field)
    return value


# --- reading ---------------------------------------------------------------------------------------------------------

_POLICY_COLUMNS = ("p.policy_id::text, p.name, p.description, p.repeat_count, p.is_default, p.created_at, "
                   "p.updated_at, (SELECT count(*) FROM alert_rules r WHERE r.escalation_policy_id = p.policy_id) "
                   "AS rule_count")


def _target(raw: Any) -> EscalationTarget:
    if isinstance(raw, dict):
        return EscalationTarget(type=str(raw.get("type")), id=str(raw.get("id")))
    return EscalationTarget(type="unknown", id=str(raw))


async def _policies(conn: AsyncConnection, tenant_id: str, policy_id: str | None) -> list[EscalationPolicy]:
    where = "" if policy_id is None else "AND p.policy_id = CAST(:p AS uuid) "
    rows = (await conn.execute(text(
        f"SELECT {_POLICY_COLUMNS} FROM escalation_policies p WHERE p.tenant_id = :t {where}ORDER BY p.name"),
        {"t": tenant_id, "p": policy_id})).all()
    if not rows:
        return []
    levels: dict[str, list[EscalationLevel]] = {r.policy_id: [] for r in rows}
    for lv in (await conn.execute(text(
            "SELECT policy_id::text, position, delay_minutes, targets FROM escalation_levels "
            "WHERE tenant_id = :t AND policy_id = ANY(CAST(:ids AS uuid[])) ORDER BY policy_id, position"),
            {"t": tenant_id, "ids": list(levels)})).all():
        targets = lv.targets if isinstance(lv.targets, list) else []
        levels[lv.policy_id].append(EscalationLevel(position=lv.position, delay_minutes=lv.delay_minutes,
                                                    targets=[_target(t) for t in targets]))
    return [EscalationPolicy(policy_id=r.policy_id, name=r.name, description=r.description,
                             repeat_count=r.repeat_count, is_default=r.is_default, levels=levels[r.policy_id],
                             rule_count=r.rule_count, created_at=r.created_at, updated_at=r.updated_at)
            for r in rows]


async def list_policies(conn: AsyncConnection, tenant_id: str) -> list[EscalationPolicy]:
    """The tenant's escalation policies by name, each with its levels."""
    return await _policies(conn, tenant_id, None)


async def get_policy(conn: AsyncConnection, tenant_id: str, policy_id: str) -> EscalationPolicy | None:
    found = await _policies(conn, tenant_id, parse_uuid(policy_id, "policy_id"))
    return found[0] if found else None


async def require_policy(conn: AsyncConnection, tenant_id: str, policy_id: str) -> EscalationPolicy:
    found = await get_policy(conn, tenant_id, policy_id)
    if found is None:
        raise NotFound(f"escalation policy {policy_id} not found", details={"field": "policy_id"})
    return found


# --- checking --------------------------------------------------------------------------------------------------------

def _check_shape(spec: EscalationPolicySpec) -> None:
    if not isinstance(spec.name, str) or not spec.name.strip() or len(spec.name) > 200:
        raise ValidationError("must be 1-200 characters", field="name")
    if spec.description is not None and len(spec.description) > 2000:
        raise ValidationError("must be at most 2000 characters", field="description")
    _int_in(spec.repeat_count, 0, MAX_REPEAT, "repeat_count")
    if not 1 <= len(spec.levels) <= MAX_LEVELS:
        raise ValidationError(f"a policy has 1-{MAX_LEVELS} levels", field="levels")
    for i, level in enumerate(spec.levels):
        _int_in(level.delay_minutes, 0, MAX_DELAY_MINUTES, f"levels[{i}].delay_minutes")
        if not 1 <= len(level.targets) <= MAX_TARGETS:
            raise ValidationError(f"a level has 1-{MAX_TARGETS} targets", field=f"levels[{i}].targets")


async def _checked_levels(conn: AsyncConnection, tenant_id: str,
                          levels: Sequence[EscalationLevelSpec]) -> list[tuple[int, list[dict[str, str]]]]:
    """Each level's (delay, targets as stored), every target checked to exist in the tenant.

    Schedules are key-share locked so that a schedule cannot be deleted while this policy is being saved.
    """
    out: list[tuple[int, list[dict[str, str]]]] = []
    for i, level in enumerate(levels):
        targets: list[dict[str, str]] = []
        for j, target in enumerate(level.targets):
            where = f"levels[{i}].targets[{j}]"
            if target.type not in TARGET_TYPES:
                raise ValidationError(f"must be one of {', '.join(TARGET_TYPES)}", field=f"{where}.type")
            target_id = parse_uuid(target.id, f"{where}.id")
            stored = {"type": target.type, "id": target_id}
            if stored in targets:
                raise ValidationError("is listed twice in this level", field=f"{where}.id")
            table, column = _TARGET_TABLES[target.type]
            lock = " FOR KEY SHARE" if target.type == "schedule" else ""
            found = (await conn.execute(text(
                f"SELECT 1 FROM {table} WHERE tenant_id = :t AND {column} = CAST(:id AS uuid){lock}"),
                {"t": tenant_id, "id": target_id})).first()
            if found is None:
                raise ValidationError(f"no {target.type} {target_id} in this tenant", field=f"{where}.id")
            targets.append(stored)
        out.append((level.delay_minutes, targets))
    return out


# --- writing ---------------------------------------------------------------------------------------------------------

async def _claim_default(conn: AsyncConnection, tenant_id: str, policy_id: str, now: datetime) -> None:
    """Make `policy_id` the tenant's default, taking the mark from the previous default.

    A per-tenant advisory lock serializes two policies becoming the default at once (the unique index
    `escalation_policies_default` would otherwise reject the later one).
    """
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('pulse.escalation_default:' || :t, 0))"),
                       {"t": tenant_id})
    await conn.execute(text(
        "UPDATE escalation_policies SET is_default = false, updated_at = :now "
        "WHERE tenant_id = :t AND is_default AND policy_id <> CAST(:p AS uuid)"),
        {"t": tenant_id, "p": policy_id, "now": now})
    await conn.execute(text(
        "UPDATE escalation_policies SET is_default = true WHERE tenant_id = :t AND policy_id = CAST(:p AS uuid)"),
        {"t": tenant_id, "p": policy_id})


async def _write_levels(conn: AsyncConnection, tenant_id: str, policy_id: str,
                        levels: list[tuple[int, list[dict[str, str]]]]) -> None:
    await conn.execute(text("DELETE FROM escalation_levels WHERE tenant_id = :t AND policy_id = CAST(:p AS uuid)"),
                       {"t": tenant_id, "p": policy_id})
    for position, (delay, targets) in enumerate(levels, start=1):
        await conn.execute(text(
            "INSERT INTO escalation_levels (tenant_id, policy_id, position, delay_minutes, targets) "
            "VALUES (:t, CAST(:p AS uuid), :pos, :d, CAST(:targets AS jsonb))"),
            {"t": tenant_id, "p": policy_id, "pos": position, "d": delay, "targets": json.dumps(targets)})


def _name_taken(name: str) -> Conflict:
    return Conflict(f"an escalation policy named {name!r} exists", details={"field": "name"})


async def _check_name_free(conn: AsyncConnection, tenant_id: str, name: str, policy_id: str | None) -> None:
    taken = (await conn.execute(text(
        "SELECT 1 FROM escalation_policies WHERE tenant_id = :t AND name = :n "
        "AND (CAST(:p AS uuid) IS NULL OR policy_id <> CAST(:p AS uuid))"),
        {"t": tenant_id, "n": name, "p": policy_id})).first()
    if taken:
        raise _name_taken(name)


async def create_policy(conn: AsyncConnection, tenant_id: str, spec: EscalationPolicySpec, *, now: datetime) -> str:
    """A new policy with its levels (positions 1..N in the order given); `is_default` takes over the default."""
    _check_shape(spec)
    await _check_name_free(conn, tenant_id, spec.name, None)
    levels = await _checked_levels(conn, tenant_id, spec.levels)
    policy_id = str((await execute_unique(conn, (
        "INSERT INTO escalation_policies (tenant_id, name, description, repeat_count, created_at, updated_at) "
        "VALUES (:t, :n, :d, :r, :now, :now) RETURNING policy_id::text"),
        {"t": tenant_id, "n": spec.name, "d": spec.description, "r": spec.repeat_count, "now": now},
        _name_taken(spec.name))).scalar_one())
    await _write_levels(conn, tenant_id, policy_id, levels)
    if spec.is_default:
        await _claim_default(conn, tenant_id, policy_id, now)
    return policy_id


async def update_policy(conn: AsyncConnection, tenant_id: str, policy_id: str, spec: EscalationPolicySpec, *,
                        now: datetime) -> None:
    """Replace a policy: name, description, repeat count, default mark and all its levels.

    `is_default: false` on the current default leaves the tenant without a default. Alerts already escalating
    with this policy go on at their current level number with the new levels.
    """
    pid = parse_uuid(policy_id, "policy_id")
    found = (await conn.execute(text(
        "SELECT 1 FROM escalation_policies WHERE tenant_id = :t AND policy_id = CAST(:p AS uuid) FOR UPDATE"),
        {"t": tenant_id, "p": pid})).first()
    if found is None:
        raise NotFound(f"escalation policy {policy_id} not found", details={"field": "policy_id"})
    _check_shape(spec)
    await _check_name_free(conn, tenant_id, spec.name, pid)
    levels = await _checked_levels(conn, tenant_id, spec.levels)
    await execute_unique(conn, (
        "UPDATE escalation_policies SET name = :n, description = :d, repeat_count = :r, updated_at = :now, "
        "  is_default = is_default AND :keep WHERE tenant_id = :t AND policy_id = CAST(:p AS uuid)"),
        {"t": tenant_id, "p": pid, "n": spec.name, "d": spec.description, "r": spec.repeat_count, "now": now,
         "keep": spec.is_default}, _name_taken(spec.name))
    await _write_levels(conn, tenant_id, pid, levels)
    if spec.is_default:
        await _claim_default(conn, tenant_id, pid, now)


async def delete_policy(conn: AsyncConnection, tenant_id: str, policy_id: str) -> None:
    """Delete a policy and its levels. Rules naming it fall back to the tenant's default policy (their
    `escalation_policy_id` becomes null); alerts escalating with it stop escalating."""
    pid = parse_uuid(policy_id, "policy_id")
    gone = await conn.execute(text(
        "DELETE FROM escalation_policies WHERE tenant_id = :t AND policy_id = CAST(:p AS uuid)"),
        {"t": tenant_id, "p": pid})
    if gone.rowcount == 0:
        raise NotFound(f"escalation policy {policy_id} not found", details={"field": "policy_id"})


async def set_rule_policy(conn: AsyncConnection, tenant_id: str, rule_id: str, policy_id: str | None, *,
                          now: datetime) -> RulePolicy:
    """Choose the policy a rule's new alerts escalate with (None: the tenant default) and tell `pulse evaluate`."""
    rid = parse_uuid(rule_id, "rule_id")
    pid = None if policy_id is None else parse_uuid(policy_id, "policy_id")
    name = None
    if pid is not None:
        name = (await conn.execute(text(
            "SELECT name FROM escalation_policies WHERE tenant_id = :t AND policy_id = CAST(:p AS uuid) "
            "FOR KEY SHARE"), {"t": tenant_id, "p": pid})).scalar()
        if name is None:
            raise ValidationError(f"no escalation policy {policy_id} in this tenant", field="policy_id")
    updated = await conn.execute(text(
        "UPDATE alert_rules SET escalation_policy_id = CAST(:p AS uuid), updated_at = :now "
        "WHERE tenant_id = :t AND rule_id = CAST(:r AS uuid)"), {"t": tenant_id, "r": rid, "p": pid, "now": now})
    if updated.rowcount == 0:
        raise NotFound(f"alert rule {rule_id} not found", details={"field": "rule_id"})
    await notify_rules_changed(conn, tenant_id, rid, "updated")
    return RulePolicy(rule_id=rid, escalation_policy_id=pid, escalation_policy_name=name)
