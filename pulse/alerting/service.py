"""Alert lifecycle: open/update/close/acknowledge, one open alert per fingerprint, every change an event.

Every change writes an `alert_events` row and the notification jobs it routes to in the caller's
transaction, so an alert change and its notifications commit together (outbox).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.errors import Conflict, NotFound, ValidationError
from pulse.notify.routing import enqueue_for_event, settle_pages
from pulse.notify.schemas import AlertEventMessage

# A continuously breaching device updates its alert on every evaluation; an UPDATED event is
# recorded at most this often per alert so the history stays readable (occurrence_count counts all).
UPDATE_EVENT_INTERVAL = timedelta(seconds=60)
ESCALATIONS_CHANNEL = "pulse_escalations"
"""NOTIFY channel that wakes `pulse escalate` when an alert's next escalation step is (re)scheduled."""
LIVE_CHANNEL = "pulse_live"
"""NOTIFY channel the web processes LISTEN on to push alert events and device status changes to live clients
(docs/api-live.md); a notification is delivered only when its transaction commits."""
LIVE_PAYLOAD_LIMIT = 7900  # bytes per pg_notify payload (PostgreSQL refuses 8000 and more)

_ALERT_COLUMNS = (
    "alert_id, tenant_id, fingerprint, alert_type, rule_id, device_id, site_id, severity, status, title, summary, "
    "metric, trigger_value, last_value, occurrence_count, opened_at, last_seen_at, triggered_at, detected_at, "
    "acknowledged_at, closed_at, silenced_until"
)


@dataclass(frozen=True)
class AlertSignal:
    """What an evaluator observed that calls for an alert."""

    tenant_id: str
    fingerprint: str
    alert_type: str
    severity: int
    title: str
    summary: str
    device_id: str | None = None
    site_id: str | None = None
    rule_id: str | None = None
    metric: str | None = None
    value: Any = None
    triggered_at: datetime | None = None
    escalation_policy_id: str | None = None


@dataclass(frozen=True)
class AlertChange:
    alert_id: str
    kind: str  # OPENED | UPDATED


def _json(v: Any) -> str:
    return msgspec.json.encode(v).decode()


async def raise_alert(conn: AsyncConnection, signal: AlertSignal, *, now: datetime,
                      actor: str = "evaluator", base_url: str = "") -> AlertChange:
    """Open an alert for the signal's fingerprint, or update the one already open (OPEN or ACKNOWLEDGED).

    Safe under concurrency: the partial unique index on open fingerprints makes a racing second
    evaluator update the first one's alert instead of opening a duplicate.
    """
    row = (await conn.execute(text(
        f"INSERT INTO alerts (tenant_id, fingerprint, alert_type, rule_id, device_id, site_id, severity, title, "
        f"  summary, metric, trigger_value, last_value, opened_at, last_seen_at, triggered_at, "
        f"  escalation_policy_id, updated_at) "
        f"VALUES (:t, :fp, :type, :rule, :dev, :site, :sev, :title, :summary, :metric, CAST(:v AS jsonb), "
        f"  CAST(:v AS jsonb), :now, :now, :trig, :policy, :now) "
        f"ON CONFLICT (tenant_id, fingerprint) WHERE status IN ('OPEN', 'ACKNOWLEDGED') DO UPDATE SET "
        f"  occurrence_count = alerts.occurrence_count + 1, last_value = EXCLUDED.last_value, clear_since = NULL, "
        f"  last_seen_at = EXCLUDED.last_seen_at, updated_at = EXCLUDED.updated_at "
        f"RETURNING (xmax = 0) AS inserted, {_ALERT_COLUMNS}, "
        f"  (SELECT max(created_at) FROM alert_events e WHERE e.alert_id = alerts.alert_id "
        f"     AND e.kind IN ('OPENED', 'UPDATED')) AS last_event_at"),
        {"t": signal.tenant_id, "fp": signal.fingerprint, "type": signal.alert_type, "rule": signal.rule_id,
         "dev": signal.device_id, "site": signal.site_id, "sev": signal.severity, "title": signal.title,
         "summary": signal.summary, "metric": signal.metric, "v": _json(signal.value), "now": now,
         "trig": signal.triggered_at, "policy": signal.escalation_policy_id})).one()
    if row.inserted:
        await _start_escalation(conn, row.tenant_id, row.alert_id, signal.escalation_policy_id, now)
        await record_event(conn, row, "OPENED", actor=actor, reason=signal.summary,
                           details={"value": signal.value}, now=now, base_url=base_url)
        return AlertChange(str(row.alert_id), "OPENED")
    if row.last_event_at is None or now - row.last_event_at >= UPDATE_EVENT_INTERVAL:
        await record_event(conn, row, "UPDATED", actor=actor, reason=None,
                           details={"value": signal.value, "occurrence_count": row.occurrence_count},
                           now=now, base_url=base_url)
    return AlertChange(str(row.alert_id), "UPDATED")


async def _start_escalation(conn: AsyncConnection, tenant_id: str, alert_id: Any, policy_id: str | None,
                            now: datetime) -> None:
    """Give a new alert its escalation state (rule policy, else tenant default); level 1 due after its delay."""
    started = await conn.execute(text(
        "UPDATE alerts a SET escalation_policy_id = p.policy_id, escalation_level = 0, escalation_repeat = 0, "
        "  next_escalation_at = CAST(:now AS timestamptz) + make_interval(mins => l.delay_minutes) "
        "FROM escalation_policies p JOIN escalation_levels l ON l.policy_id = p.policy_id AND l.position = 1 "
        "WHERE a.alert_id = :a AND p.tenant_id = :t AND p.policy_id = coalesce(CAST(:policy AS uuid), "
        "  (SELECT policy_id FROM escalation_policies WHERE tenant_id = :t AND is_default))"),
        {"a": alert_id, "t": tenant_id, "policy": policy_id, "now": now})
    if started.rowcount:
        await conn.execute(text(f"NOTIFY {ESCALATIONS_CHANNEL}"))


MAX_SILENCE = timedelta(days=30)


async def silence_alert(conn: AsyncConnection, tenant_id: str, alert_id: str, *, until: datetime, actor: str,
                        now: datetime, reason: str | None = None, base_url: str = "") -> None:
    """Pause an alert's escalation until `until`: the time left to its next step is kept and runs on afterwards.

    Silencing again moves the end; the time left is the same as before.
    """
    if until.tzinfo is None:
        raise ValidationError("must be an ISO-8601 time with a UTC offset", field="until")
    if not now < until <= now + MAX_SILENCE:
        raise ValidationError("must be in the future and at most 30 days ahead", field="until")
    row = (await conn.execute(text(
        f"UPDATE alerts SET silenced_until = :until, updated_at = :now, "
        f"  next_escalation_at = CAST(:until AS timestamptz) + greatest(next_escalation_at - "
        f"    CASE WHEN silenced_until > :now THEN silenced_until ELSE CAST(:now AS timestamptz) END, "
        f"    interval '0') "
        f"WHERE tenant_id = :t AND alert_id = CAST(:a AS uuid) AND status IN ('OPEN', 'ACKNOWLEDGED') "
        f"RETURNING {_ALERT_COLUMNS}"),
        {"t": tenant_id, "a": alert_id, "until": until, "now": now})).first()
    if row is None:
        await _explain_missing(conn, tenant_id, alert_id, "silence")
        return
    await record_event(conn, row, "SILENCED", actor=actor, reason=reason, details={"until": until.isoformat()},
                       now=now, base_url=base_url)


async def unsilence_alert(conn: AsyncConnection, tenant_id: str, alert_id: str, *, actor: str, now: datetime,
                          base_url: str = "") -> None:
    """End a silence now; escalation resumes with the time that was left to its next step."""
    row = (await conn.execute(text(
        f"UPDATE alerts SET updated_at = :now, "
        f"  next_escalation_at = CAST(:now AS timestamptz) + greatest(next_escalation_at - silenced_until, "
        f"    interval '0'), silenced_until = NULL "
        f"WHERE tenant_id = :t AND alert_id = CAST(:a AS uuid) AND silenced_until > :now "
        f"RETURNING {_ALERT_COLUMNS}"), {"t": tenant_id, "a": alert_id, "now": now})).first()
    if row is None:
        status = (await conn.execute(text(
            "SELECT status FROM alerts WHERE tenant_id = :t AND alert_id = CAST(:a AS uuid)"),
            {"t": tenant_id, "a": alert_id})).scalar_one_or_none()
        if status is None:
            raise NotFound(f"alert {alert_id} not found")
        raise Conflict("the alert is not silenced", details={"status": status})
    await conn.execute(text(f"NOTIFY {ESCALATIONS_CHANNEL}"))
    await record_event(conn, row, "UNSILENCED", actor=actor, reason=None, details={}, now=now, base_url=base_url)


@dataclass(frozen=True)
class FlapPolicy:
    """An alert whose fingerprint closed `closes` times within `window_minutes` is flapping: it stays open until its
    condition has been clear for `hold_minutes`. Per tenant in `tenants.settings` under the same names (prefixed
    `flap_`)."""

    closes: int = 3
    window_minutes: int = 30
    hold_minutes: int = 10


def _flap_policy(settings: dict[str, Any] | None) -> FlapPolicy:
    """The tenant's flap policy from its `settings`: positive integers override the defaults."""
    raw = settings or {}
    values = {}
    for name in ("closes", "window_minutes", "hold_minutes"):
        value = raw.get(f"flap_{name}")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            values[name] = value
    return FlapPolicy(**values)


async def clear_alert(conn: AsyncConnection, tenant_id: str, fingerprint: str, *, reason: str, now: datetime,
                      actor: str = "evaluator", base_url: str = "") -> str | None:
    """Auto-close the open alert of a fingerprint because its condition is over; returns its id if it closed.

    A flapping alert (its fingerprint closed FlapPolicy.closes times within the window) is not closed: it is
    marked flapping (a FLAPPING event) and closes only once its condition has stayed clear for the hold time;
    a breach in between starts the hold again.
    """
    current = (await conn.execute(text(
        "SELECT a.alert_id, a.is_flapping, a.clear_since, t.settings FROM alerts a JOIN tenants t USING (tenant_id) "
        "WHERE a.tenant_id = :t AND a.fingerprint = :fp AND a.status IN ('OPEN', 'ACKNOWLEDGED') FOR UPDATE OF a"),
        {"t": tenant_id, "fp": fingerprint})).first()
    if current is None:
        return None
    flap = _flap_policy(current.settings)
    if not current.is_flapping:
        closes = (await conn.execute(text(
            "SELECT count(*) FROM alerts WHERE tenant_id = :t AND fingerprint = :fp AND status = 'CLOSED' "
            "AND closed_at > :since"),
            {"t": tenant_id, "fp": fingerprint, "since": now - timedelta(minutes=flap.window_minutes)})).scalar_one()
        if closes >= flap.closes:
            row = (await conn.execute(text(
                f"UPDATE alerts SET is_flapping = true, clear_since = :now, updated_at = :now "
                f"WHERE alert_id = :a RETURNING {_ALERT_COLUMNS}"), {"a": current.alert_id, "now": now})).one()
            await record_event(conn, row, "FLAPPING", actor=actor,
                               reason=f"closed {closes} times in {flap.window_minutes} min; stays open until the "
                                      f"condition has been clear for {flap.hold_minutes} min",
                               details={"closes": closes, "window_minutes": flap.window_minutes,
                                        "hold_minutes": flap.hold_minutes}, now=now, base_url=base_url)
            return None
    elif current.clear_since is None or now - current.clear_since < timedelta(minutes=flap.hold_minutes):
        if current.clear_since is None:
            await conn.execute(text("UPDATE alerts SET clear_since = :now WHERE alert_id = :a"),
                               {"a": current.alert_id, "now": now})
        return None
    else:
        reason = f"{reason}; clear for {flap.hold_minutes} min after flapping"
    row = (await conn.execute(text(
        f"UPDATE alerts SET status = 'CLOSED', closed_at = :now, closed_by = :actor, close_reason = :reason, "
        f"  next_escalation_at = NULL, updated_at = :now "
        f"WHERE alert_id = :a RETURNING {_ALERT_COLUMNS}"),
        {"a": current.alert_id, "now": now, "actor": actor, "reason": reason})).one()
    await record_event(conn, row, "CLOSED", actor=actor, reason=reason, details={}, now=now, base_url=base_url)
    return str(row.alert_id)


async def acknowledge_alert(conn: AsyncConnection, tenant_id: str, alert_id: str, *, actor: str, now: datetime,
                            base_url: str = "") -> None:
    """A person takes the alert: it stays open, further breaches keep it acknowledged, escalation stops."""
    row = (await conn.execute(text(
        f"UPDATE alerts SET status = 'ACKNOWLEDGED', acknowledged_at = :now, acknowledged_by = :actor, "
        f"  next_escalation_at = NULL, updated_at = :now "
        f"WHERE tenant_id = :t AND alert_id = CAST(:a AS uuid) AND status = 'OPEN' RETURNING {_ALERT_COLUMNS}"),
        {"t": tenant_id, "a": alert_id, "now": now, "actor": actor})).first()
    if row is None:
        await _explain_missing(conn, tenant_id, alert_id, "acknowledge")
        return
    await record_event(conn, row, "ACKNOWLEDGED", actor=actor, reason=None, details={}, now=now, base_url=base_url)


async def close_alert(conn: AsyncConnection, tenant_id: str, alert_id: str, *, actor: str, reason: str | None,
                      now: datetime, base_url: str = "") -> None:
    """A person closes the alert; a later breach opens a new one."""
    row = (await conn.execute(text(
        f"UPDATE alerts SET status = 'CLOSED', closed_at = :now, closed_by = :actor, close_reason = :reason, "
        f"  next_escalation_at = NULL, updated_at = :now "
        f"WHERE tenant_id = :t AND alert_id = CAST(:a AS uuid) AND status IN ('OPEN', 'ACKNOWLEDGED') "
        f"RETURNING {_ALERT_COLUMNS}"),
        {"t": tenant_id, "a": alert_id, "now": now, "actor": actor, "reason": reason or "closed manually"})).first()
    if row is None:
        await _explain_missing(conn, tenant_id, alert_id, "close")
        return
    await record_event(conn, row, "CLOSED", actor=actor, reason=reason or "closed manually", details={}, now=now,
                       base_url=base_url)


COMMENT_MAX = 2000


async def comment_alert(conn: AsyncConnection, tenant_id: str, alert_id: str, *, actor: str, comment: str,
                        now: datetime) -> int:
    """Add a person's note to an alert's history (any status): a COMMENTED event whose `reason` is the text.

    Notifies no one. Returns the event id.
    """
    if not comment.strip() or len(comment) > COMMENT_MAX:
        raise ValidationError(f"must be 1-{COMMENT_MAX} characters, not only spaces", field="text")
    row = (await conn.execute(text(
        f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE tenant_id = :t AND alert_id = CAST(:a AS uuid)"),
        {"t": tenant_id, "a": alert_id})).first()
    if row is None:
        raise NotFound(f"alert {alert_id} not found", details={"field": "alert_id"})
    return await record_event(conn, row, "COMMENTED", actor=actor, reason=comment, details={}, now=now)


async def _explain_missing(conn: AsyncConnection, tenant_id: str, alert_id: str, action: str) -> None:
    status = (await conn.execute(text("SELECT status FROM alerts WHERE tenant_id = :t AND alert_id = CAST(:a AS uuid)"),
                                 {"t": tenant_id, "a": alert_id})).scalar_one_or_none()
    if status is None:
        raise NotFound(f"alert {alert_id} not found")
    raise Conflict(f"cannot {action} an alert that is {status}", details={"status": status})


async def record_event(conn: AsyncConnection, alert: Row[Any], kind: str, *, actor: str, reason: str | None,
                       details: dict[str, Any], now: datetime, base_url: str = "") -> int:
    """Write one alert_events row and the notification jobs routed from it, in the caller's transaction."""
    event_id = (await conn.execute(text(  # the event, and live views told on commit: one round trip
        "WITH e AS (INSERT INTO alert_events (tenant_id, alert_id, kind, actor, reason, details, created_at) "
        "  VALUES (:t, :a, :k, :actor, :reason, CAST(:d AS jsonb), :now) RETURNING event_id) "
        "SELECT e.event_id, pg_notify(:c, :p) FROM e"),
        {"t": alert.tenant_id, "a": alert.alert_id, "k": kind, "actor": actor, "reason": reason,
         "d": _json(details), "now": now, "c": LIVE_CHANNEL, "p": _json({
             "kind": "alert", "tenant_id": alert.tenant_id, "alert_id": str(alert.alert_id), "event_kind": kind,
             "severity": alert.severity, "status": alert.status, "title": alert.title[:1000],
             "device_id": alert.device_id})})).one().event_id
    silenced = getattr(alert, "silenced_until", None) is not None and alert.silenced_until > now
    if kind in ("OPENED", "ACKNOWLEDGED", "ESCALATED", "CLOSED") or (kind in ("UPDATED", "FLAPPING") and not silenced):
        msg = await alert_message(conn, alert, kind, int(event_id), now=now, base_url=base_url)
        await enqueue_for_event(conn, msg, now=now)
        if kind in ("ACKNOWLEDGED", "CLOSED"):
            await settle_pages(conn, msg, now=now)
    return int(event_id)


async def notify_device_states(conn: AsyncConnection, transitions: list[tuple[str, str, str]], *,
                               changed_at: datetime) -> None:
    """Tell live clients of device status transitions, (tenant_id, device_id, new status) each, on commit.

    Payload: {"kind": "device_state", "changed_at": ..., "devices": [[tenant_id, device_id, status], ...]},
    split so that each stays under PostgreSQL's payload limit.
    """
    head = '{"kind":"device_state","changed_at":' + _json(changed_at) + ',"devices":['
    batches: list[list[str]] = [[]]
    size = len(head) + 2
    for transition in transitions:
        encoded = _json(list(transition))
        if batches[-1] and size + len(encoded.encode()) + 1 > LIVE_PAYLOAD_LIMIT:
            batches.append([])
            size = len(head) + 2
        batches[-1].append(encoded)
        size += len(encoded.encode()) + 1
    for batch in batches:
        if batch:
            await conn.execute(text("SELECT pg_notify(:c, :p)"),
                               {"c": LIVE_CHANNEL, "p": head + ",".join(batch) + "]}"})


async def alert_message(conn: AsyncConnection, alert: Row[Any], kind: str, event_id: int, *, now: datetime,
                        base_url: str = "") -> AlertEventMessage:
    """What notify is told of one alert change (`alert` is a row with the alert's columns)."""
    device = await _device_context(conn, alert.tenant_id, alert.device_id)
    return AlertEventMessage(
        tenant_id=alert.tenant_id, alert_id=str(alert.alert_id), event_id=event_id, event_kind=kind,
        fingerprint=alert.fingerprint, alert_type=alert.alert_type, severity=alert.severity,
        status=alert.status, title=alert.title, summary=alert.summary or "", device_id=alert.device_id,
        site_id=alert.site_id, rule_id=str(alert.rule_id) if alert.rule_id else None, metric=alert.metric,
        value=alert.last_value, opened_at=alert.opened_at, occurred_at=now, tags=device[0],
        group_ids=device[1], links={"alert": f"{base_url}/app/alerts/{alert.alert_id}"} if base_url else {})


async def _device_context(conn: AsyncConnection, tenant_id: str, device_id: str | None) -> tuple[list[str], list[str]]:
    if device_id is None:
        return [], []
    row = (await conn.execute(text(
        "SELECT d.tags, coalesce(array(SELECT m.group_id::text FROM device_group_members m "
        "  WHERE m.tenant_id = d.tenant_id AND m.device_id = d.device_id), '{}') AS groups "
        "FROM devices d WHERE d.tenant_id = :t AND d.device_id = :d"), {"t": tenant_id, "d": device_id})).first()
    if row is None:
        return [], []
    return list(row.tags or []), list(row.groups or [])
