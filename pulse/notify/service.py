"""Notification channels and the durable job queue: claim under a fenced lease, record attempts, retry, dead-letter."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import msgspec
from msgspec import UNSET, UnsetType
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.crypto import decrypt_secret, encrypt_secret
from pulse.errors import Conflict, NotFound, PulseError, ValidationError
from pulse.notify import channels
from pulse.notify.channels import get_channel_type
from pulse.notify.schemas import AlertEventMessage, SendResult
from pulse.settings import Settings

MASK = "••••••"
PAGERDUTY_RATE_PER_MIN = 120
"""PagerDuty accepts about 120 events a minute per routing key: PagerDuty channels default to this limit."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: base * 2^(attempt-1), capped, ±jitter; Retry-After wins when given."""

    base_s: float = 30.0
    cap_s: float = 7200.0
    jitter: float = 0.2
    max_attempts: int | None = None
    """Attempts before a job is dead-lettered; None: the job's own `max_attempts` (5 unless set otherwise)."""

    def delay(self, attempt: int, retry_after_s: float | None, rng: random.Random | None = None) -> float:
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.cap_s)
        raw = min(self.base_s * (2 ** max(attempt - 1, 0)), self.cap_s)
        spread = raw * self.jitter
        return max(0.0, raw + (rng or random).uniform(-spread, spread))


@dataclass(frozen=True)
class ClaimedJob:
    job_id: str
    tenant_id: str
    channel_id: str | None
    channel_type: str
    config: dict[str, Any]
    secrets_encrypted: str | None
    message: AlertEventMessage
    idempotency_key: str
    attempt_no: int
    max_attempts: int
    lease_generation: int
    contact_id: str | None = None
    """Set for a page to a person's contact method: `channel_type` is then the contact's kind, `address` its
    address, and its secrets are sealed with the contact id."""
    address: str | None = None

    @property
    def secrets_context(self) -> str:
        return self.contact_id or self.channel_id or ""


def _check_name(name: str) -> None:
    if not name or len(name) > 200:
        raise ValidationError("must be 1-200 characters", field="name")


async def _check_name_free(conn: AsyncConnection, tenant_id: str, name: str) -> None:
    taken = (await conn.execute(text("SELECT 1 FROM notification_channels WHERE tenant_id = :t AND name = :n"),
                                {"t": tenant_id, "n": name})).first()
    if taken:
        raise Conflict(f"a channel named {name!r} exists", details={"field": "name"})


def _rate_limit(channel_type: str, limit: int | None) -> int | None:
    """A channel's sends a minute: PagerDuty channels keep PagerDuty's own limit when none is set."""
    if limit is None and channel_type == "PAGERDUTY":
        limit = PAGERDUTY_RATE_PER_MIN
    if limit is not None and not 1 <= limit <= 100_000:
        raise ValidationError("must be 1-100000 sends a minute", field="rate_limit_per_min")
    return limit


async def create_channel(conn: AsyncConnection, tenant_id: str, name: str, channel_type: str, config: dict[str, Any],
                         secrets: dict[str, str], *, settings: Settings, rate_limit_per_min: int | None = None) -> str:
    """Validate (including SSRF checks), encrypt the secrets with the channel id bound in, and store."""
    kind = get_channel_type(channel_type)
    if kind is None:
        raise ValidationError(f"unsupported channel type {channel_type}", field="channel_type")
    _check_name(name)
    clean = kind.validate(config, secrets, settings.allow_private_urls)
    rate_limit_per_min = _rate_limit(channel_type, rate_limit_per_min)
    await _check_name_free(conn, tenant_id, name)
    channel_id = str((await conn.execute(text(
        "INSERT INTO notification_channels (tenant_id, name, channel_type, config, rate_limit_per_min) "
        "VALUES (:t, :n, :k, CAST(:c AS jsonb), :rl) RETURNING channel_id::text"),
        {"t": tenant_id, "n": name, "k": channel_type, "c": json.dumps(clean), "rl": rate_limit_per_min})).scalar_one())
    sealed = encrypt_secret(settings.secret_key_bytes, json.dumps(secrets), context=channel_id)
    await conn.execute(
        text("UPDATE notification_channels SET secrets_encrypted = :s WHERE channel_id = CAST(:c AS uuid)"),
        {"s": sealed, "c": channel_id})
    return channel_id


async def get_channel_masked(conn: AsyncConnection, tenant_id: str, channel_id: str, *,
                             settings: Settings) -> dict[str, Any]:
    """A channel as the API shows it: every secret replaced by a mask."""
    row = (await conn.execute(text(
        "SELECT channel_id::text, name, channel_type, config, secrets_encrypted, is_enabled, rate_limit_per_min "
        "FROM notification_channels WHERE tenant_id = :t AND channel_id = CAST(:c AS uuid)"),
        {"t": tenant_id, "c": channel_id})).first()
    if row is None:
        raise NotFound(f"channel {channel_id} not found")
    secrets = open_secrets(settings.secret_key_bytes, row.channel_id, row.secrets_encrypted)
    return {"channel_id": row.channel_id, "name": row.name, "channel_type": row.channel_type, "config": row.config,
            "secrets": {k: MASK for k in secrets}, "is_enabled": row.is_enabled,
            "rate_limit_per_min": row.rate_limit_per_min}


async def update_channel(conn: AsyncConnection, tenant_id: str, channel_id: str, *, settings: Settings, now: datetime,
                         name: str | UnsetType = UNSET, config: dict[str, Any] | UnsetType = UNSET,
                         secrets: dict[str, str] | UnsetType = UNSET, is_enabled: bool | UnsetType = UNSET,
                         rate_limit_per_min: int | UnsetType | None = UNSET) -> None:
    """Change what is given; the result is validated as a whole again (including SSRF checks).

    `secrets`, when given, is the channel's full set: a value equal to the mask keeps the stored secret of that
    name, any other value replaces it (re-encrypted), and a name left out is removed.
    """
    row = (await conn.execute(text(
        "SELECT channel_id::text, name, channel_type, config, secrets_encrypted, rate_limit_per_min "
        "FROM notification_channels WHERE tenant_id = :t AND channel_id = CAST(:c AS uuid) FOR NO KEY UPDATE"),
        {"t": tenant_id, "c": channel_id})).first()
    if row is None:
        raise NotFound(f"channel {channel_id} not found", details={"field": "channel_id"})
    kind = get_channel_type(row.channel_type)
    if kind is None:
        raise ValidationError(f"unsupported channel type {row.channel_type}", field="channel_type")
    new_name = row.name if isinstance(name, UnsetType) else name
    _check_name(new_name)
    if new_name != row.name:
        await _check_name_free(conn, tenant_id, new_name)
    stored = open_secrets(settings.secret_key_bytes, row.channel_id, row.secrets_encrypted)
    merged = stored
    if not isinstance(secrets, UnsetType):
        merged = keep_masked_secrets(stored, secrets, "channel")
    clean = kind.validate(dict(row.config) if isinstance(config, UnsetType) else config, merged,
                          settings.allow_private_urls)
    limit = _rate_limit(row.channel_type,
                        row.rate_limit_per_min if isinstance(rate_limit_per_min, UnsetType) else rate_limit_per_min)
    sealed = row.secrets_encrypted
    if merged != stored:
        sealed = encrypt_secret(settings.secret_key_bytes, json.dumps(merged), context=row.channel_id)
    await conn.execute(text(
        "UPDATE notification_channels SET name = :n, config = CAST(:cfg AS jsonb), secrets_encrypted = :s, "
        "  is_enabled = COALESCE(:on, is_enabled), rate_limit_per_min = :rl, updated_at = :now "
        "WHERE channel_id = CAST(:c AS uuid)"),
        {"n": new_name, "cfg": json.dumps(clean), "s": sealed, "rl": limit, "now": now, "c": row.channel_id,
         "on": None if isinstance(is_enabled, UnsetType) else is_enabled})


async def delete_channel(conn: AsyncConnection, tenant_id: str, channel_id: str, *, now: datetime) -> None:
    """Delete a channel and its routing rules; its queued jobs are cancelled, its delivery log is kept."""
    exists = (await conn.execute(text(
        "SELECT 1 FROM notification_channels WHERE tenant_id = :t AND channel_id = CAST(:c AS uuid) "
        "FOR UPDATE"), {"t": tenant_id, "c": channel_id})).first()
    if not exists:
        raise NotFound(f"channel {channel_id} not found", details={"field": "channel_id"})
    await conn.execute(text(
        "UPDATE notification_jobs SET status = 'CANCELLED', lease_owner = NULL, lease_expires_at = NULL, "
        "  last_error = 'channel deleted', updated_at = :now "
        "WHERE tenant_id = :t AND channel_id = CAST(:c AS uuid) AND status IN ('PENDING', 'IN_PROGRESS')"),
        {"t": tenant_id, "c": channel_id, "now": now})
    await conn.execute(text("DELETE FROM notification_channels WHERE tenant_id = :t AND channel_id = CAST(:c AS uuid)"),
                       {"t": tenant_id, "c": channel_id})


@dataclass(frozen=True)
class ChannelTarget:
    """What sending to a channel needs, secrets opened."""

    channel_id: str
    channel_type: str
    config: dict[str, Any]
    secrets: dict[str, str]


async def require_channel_target(conn: AsyncConnection, tenant_id: str, channel_id: str, *,
                                 settings: Settings) -> ChannelTarget:
    row = (await conn.execute(text(
        "SELECT channel_id::text, channel_type, config, secrets_encrypted FROM notification_channels "
        "WHERE tenant_id = :t AND channel_id = CAST(:c AS uuid)"), {"t": tenant_id, "c": channel_id})).first()
    if row is None:
        raise NotFound(f"channel {channel_id} not found", details={"field": "channel_id"})
    return ChannelTarget(channel_id=row.channel_id, channel_type=row.channel_type, config=dict(row.config),
                         secrets=open_secrets(settings.secret_key_bytes, row.channel_id, row.secrets_encrypted))


def sample_message(tenant_id: str, now: datetime) -> AlertEventMessage:
    """The message a test send carries: plainly a test, tied to no alert."""
    return AlertEventMessage(
        tenant_id=tenant_id, alert_id=str(uuid.UUID(int=0)), event_id=0, event_kind="OPENED",
        fingerprint="pulse-test-notification", alert_type="TEST", severity=1, status="OPEN",
        title="Pulse test notification", summary="Sent from Pulse to check this channel's settings; no alert is open.",
        opened_at=now, occurred_at=now)


async def send_test(target: ChannelTarget, tenant_id: str, *, now: datetime, http: httpx.AsyncClient,
                    allow: tuple[str, ...]) -> SendResult:
    """Send the sample message to one channel now. Writes nothing: no job, no attempt, no alert.

    Call it outside any transaction. What goes wrong on the way (refused address, network, receiver) is the result.
    """
    try:
        return await channels.send(target.channel_type, sample_message(tenant_id, now), target.config,
                                   target.secrets, delivery_id=f"test-{uuid.uuid4()}", http=http, allow=allow)
    except PulseError as exc:
        return SendResult(delivered=False, error=exc.message)
    except (httpx.HTTPError, OSError) as exc:
        return SendResult(delivered=False, retryable=True, error=f"{type(exc).__name__}: {exc}")


def open_secrets(key: bytes, channel_id: str, sealed: str | None) -> dict[str, str]:
    if not sealed:
        return {}
    return dict(json.loads(decrypt_secret(key, sealed, context=channel_id)))


def keep_masked_secrets(stored: dict[str, str], given: dict[str, str], owner: str) -> dict[str, str]:
    """The secrets to store when `given` is sent as the full set: a value equal to the mask keeps the stored secret
    of that name (which must exist on the `owner`, e.g. "channel"), any other value replaces it, a name left out is
    removed."""
    merged: dict[str, str] = {}
    for name, value in given.items():
        if value == MASK:
            if name not in stored:
                raise ValidationError(f"is the mask, but the {owner} has no such secret to keep",
                                      field=f"secrets.{name}")
            merged[name] = stored[name]
        else:
            merged[name] = value
    return merged


# Due, and not behind an unfinished earlier event of the same alert on the same channel: a receiver hears an
# alert's changes in order (PagerDuty must see the trigger before the resolve), even across retries.
_DUE = ("((j.status = 'PENDING' AND j.next_attempt_at <= :now) "
        " OR (j.status = 'IN_PROGRESS' AND j.lease_expires_at < :now)) "
        "AND NOT EXISTS (SELECT 1 FROM notification_jobs e WHERE e.alert_id = j.alert_id "
        "  AND (e.channel_id = j.channel_id OR e.contact_id = j.contact_id) AND e.event_id < j.event_id "
        "  AND e.status IN ('PENDING', 'IN_PROGRESS'))")
_LEASE = (
    "UPDATE notification_jobs j SET status = 'IN_PROGRESS', lease_owner = :owner, "
    "  lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => :lease), "
    "  lease_generation = j.lease_generation + 1, "
    "  attempt_count = j.attempt_count + 1, updated_at = :now "
    "FROM due WHERE j.job_id = due.job_id "
    "RETURNING j.job_id::text, j.tenant_id, j.channel_id::text, j.contact_id::text, due.channel_type, due.config, "
    "  due.secrets_encrypted, due.address, j.payload, j.idempotency_key, j.attempt_count, j.max_attempts, "
    "  j.lease_generation")
# What a due job is sent through: its channel, or the person's contact method a page goes to.
_TARGET = ("coalesce(c.channel_type, m.kind) AS channel_type, coalesce(c.config, '{}'::jsonb) AS config, "
           "coalesce(c.secrets_encrypted, m.secrets_encrypted) AS secrets_encrypted, m.address")
_TARGET_JOINS = ("LEFT JOIN notification_channels c ON c.channel_id = j.channel_id "
                 "LEFT JOIN user_contact_methods m ON m.contact_id = j.contact_id ")
# A channel's limit: its own, else PagerDuty's default; NULL means unlimited.
_LIMIT = ("COALESCE(c.rate_limit_per_min, CASE WHEN c.channel_type = 'PAGERDUTY' "
          f"THEN {PAGERDUTY_RATE_PER_MIN} END)")
_CLAIM = text(
    "WITH due AS ("
    f"  SELECT j.job_id, {_TARGET} FROM notification_jobs j {_TARGET_JOINS}"
    f"  WHERE {_DUE} AND {_LIMIT} IS NULL AND (c.channel_id IS NOT NULL OR m.contact_id IS NOT NULL) "
    "  ORDER BY j.next_attempt_at LIMIT :limit FOR UPDATE OF j SKIP LOCKED) " + _LEASE)
# Rate-limited channels with due jobs, locked so that deliverers claiming at the same time take turns on each
# channel's budget. NO KEY UPDATE does not block the key-share locks of jobs being inserted for the channel.
_LOCK_LIMITED = text(
    "SELECT c.channel_id::text FROM notification_channels c "
    f"WHERE {_LIMIT} IS NOT NULL AND ("
    "  EXISTS (SELECT 1 FROM notification_jobs j WHERE j.channel_id = c.channel_id AND j.status = 'PENDING' "
    "          AND j.next_attempt_at <= :now) "
    "  OR EXISTS (SELECT 1 FROM notification_jobs j WHERE j.channel_id = c.channel_id "
    "             AND j.status = 'IN_PROGRESS' AND j.lease_expires_at < :now)) "
    "ORDER BY c.channel_id FOR NO KEY UPDATE OF c SKIP LOCKED")
# What is left of each locked channel's budget: its limit minus the sends of the last 60 s, which are the attempts
# started since then plus the jobs leased and not yet recorded (a job's attempt row and its leaving IN_PROGRESS are
# one commit, so nothing is counted twice or missed). A job with an attempt since :since was updated since then.
# Run as a statement of its own after the locks are held: its snapshot then sees every earlier holder's claims.
_BUDGETS = text(
    f"SELECT c.channel_id::text, {_LIMIT} "
    "  - (SELECT count(*) FROM notification_jobs s JOIN notification_attempts a ON a.job_id = s.job_id "
    "     WHERE s.channel_id = c.channel_id AND s.updated_at > :since AND a.started_at > :since) "
    "  - (SELECT count(*) FROM notification_jobs s WHERE s.channel_id = c.channel_id "
    "     AND s.status = 'IN_PROGRESS' AND s.lease_expires_at >= :now) AS budget "
    "FROM notification_channels c WHERE c.channel_id = ANY(CAST(:ids AS uuid[]))")
_CLAIM_CHANNEL = text(
    "WITH due AS ("
    f"  SELECT j.job_id, {_TARGET} FROM notification_jobs j {_TARGET_JOINS}"
    f"  WHERE j.channel_id = CAST(:channel AS uuid) AND {_DUE} "
    "  ORDER BY j.next_attempt_at LIMIT :limit FOR UPDATE OF j SKIP LOCKED) " + _LEASE)
RATE_WINDOW = timedelta(seconds=60)


async def claim_jobs(conn: AsyncConnection, *, owner: str, now: datetime, limit: int = 100,
                     lease_s: float = 60.0) -> list[ClaimedJob]:
    """Lease due jobs (and jobs whose lease expired: a crashed deliverer's). Commit before sending.

    A rate-limited channel gets at most what is left of its budget for the last 60 s; the rest of its jobs stay
    PENDING (queued, never dropped or failed) until the window moves. The budget is computed and spent under the
    channel's row lock in this transaction, so several deliverers together keep to the limit.
    A job whose payload cannot be read goes straight to the dead letters instead of failing every claim.
    """
    params = {"now": now, "limit": limit, "owner": owner, "lease": lease_s}
    rows: list[Any] = []
    locked = [r[0] for r in (await conn.execute(_LOCK_LIMITED, {"now": now})).all()]
    if locked:
        budgets = (await conn.execute(_BUDGETS, {"ids": locked, "now": now, "since": now - RATE_WINDOW})).all()
        for channel_id, budget in budgets:
            room = min(int(budget), limit - len(rows))
            if room > 0:
                rows += (await conn.execute(_CLAIM_CHANNEL, {**params, "channel": channel_id, "limit": room})).all()
    if len(rows) < limit:
        rows += (await conn.execute(_CLAIM, {**params, "limit": limit - len(rows)})).all()
    jobs: list[ClaimedJob] = []
    unreadable: dict[str, str] = {}
    for r in rows:
        try:
            message = msgspec.convert(r.payload, AlertEventMessage)
        except msgspec.ValidationError as exc:
            unreadable[r.job_id] = f"unreadable payload: {exc}"[:500]
            continue
        jobs.append(ClaimedJob(job_id=r.job_id, tenant_id=r.tenant_id, channel_id=r.channel_id,
                               channel_type=r.channel_type, config=dict(r.config),
                               secrets_encrypted=r.secrets_encrypted, message=message,
                               idempotency_key=r.idempotency_key, attempt_no=r.attempt_count,
                               max_attempts=r.max_attempts, lease_generation=r.lease_generation,
                               contact_id=r.contact_id, address=r.address))
    for job_id, error in unreadable.items():
        await conn.execute(text(
            "UPDATE notification_jobs SET status = 'DEAD', last_error = :e, lease_owner = NULL, "
            "  lease_expires_at = NULL, updated_at = :now WHERE job_id = CAST(:j AS uuid)"),
            {"e": error, "now": now, "j": job_id})
    return jobs


async def record_outcome(conn: AsyncConnection, job: ClaimedJob, result: SendResult, *, started_at: datetime,
                         finished_at: datetime, retry: RetryPolicy) -> str:
    """Record the attempt and settle the job, unless our lease was taken over meanwhile. Returns the new status."""
    if result.delivered:
        outcome, status, next_at = "DELIVERED", "DELIVERED", finished_at
    elif result.retryable and job.attempt_no < (retry.max_attempts or job.max_attempts):
        outcome, status = "RETRY", "PENDING"
        next_at = finished_at + timedelta(seconds=retry.delay(job.attempt_no, result.retry_after_s))
    else:
        outcome, status, next_at = "FAILED", "DEAD", finished_at
    await conn.execute(text(
        "INSERT INTO notification_attempts (tenant_id, job_id, attempt_no, started_at, finished_at, latency_ms, "
        "  outcome, status_code, error) VALUES (:t, CAST(:j AS uuid), :n, :s, :f, :ms, :o, :code, :err)"),
        {"t": job.tenant_id, "j": job.job_id, "n": job.attempt_no, "s": started_at, "f": finished_at,
         "ms": int((finished_at - started_at).total_seconds() * 1000), "o": outcome, "code": result.status_code,
         "err": result.error})
    updated = await conn.execute(text(
        "UPDATE notification_jobs SET status = :st, next_attempt_at = :next, lease_owner = NULL, "
        "  lease_expires_at = NULL, last_error = :err, updated_at = :f, "
        "  delivered_at = CASE WHEN :st = 'DELIVERED' THEN CAST(:f AS timestamptz) END "
        "WHERE job_id = CAST(:j AS uuid) AND lease_generation = :g AND status = 'IN_PROGRESS'"),
        {"st": status, "next": next_at, "err": result.error, "f": finished_at, "j": job.job_id,
         "g": job.lease_generation})
    return status if updated.rowcount else "LEASE_LOST"


async def replay_dead_job(conn: AsyncConnection, tenant_id: str, job_id: str, *, now: datetime) -> None:
    """Put a dead-lettered job back in the queue with a fresh attempt budget."""
    result = await conn.execute(text(
        "UPDATE notification_jobs SET status = 'PENDING', next_attempt_at = :now, attempt_count = 0, "
        "  last_error = NULL, updated_at = :now "
        "WHERE tenant_id = :t AND job_id = CAST(:j AS uuid) AND status = 'DEAD' "
        "  AND (channel_id IS NOT NULL OR contact_id IS NOT NULL)"),
        {"t": tenant_id, "j": job_id, "now": now})
    if result.rowcount == 0:
        row = (await conn.execute(text(
            "SELECT status, channel_id IS NULL AND contact_id IS NULL AS orphaned FROM notification_jobs "
            "WHERE tenant_id = :t AND job_id = CAST(:j AS uuid)"), {"t": tenant_id, "j": job_id})).first()
        if row is None:
            raise NotFound(f"job {job_id} not found", details={"field": "job_id"})
        status = row.status
        if row.orphaned:
            raise Conflict("this job's channel was deleted; it cannot be sent again", details={"status": status})
        raise Conflict(f"only dead jobs can be replayed; this one is {status}", details={"status": status})
    await conn.execute(text("SELECT pg_notify('pulse_jobs', '')"))
