"""Notification channels and the durable job queue: claim under a fenced lease, record attempts, retry, dead-letter."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.crypto import decrypt_secret, encrypt_secret
from pulse.errors import Conflict, NotFound, ValidationError
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
    channel_id: str
    channel_type: str
    config: dict[str, Any]
    secrets_encrypted: str | None
    message: AlertEventMessage
    idempotency_key: str
    attempt_no: int
    max_attempts: int
    lease_generation: int


async def create_channel(conn: AsyncConnection, tenant_id: str, name: str, channel_type: str, config: dict[str, Any],
                         secrets: dict[str, str], *, settings: Settings, rate_limit_per_min: int | None = None) -> str:
    """Validate (including SSRF checks), encrypt the secrets with the channel id bound in, and store."""
    kind = get_channel_type(channel_type)
    if kind is None:
        raise ValidationError(f"unsupported channel type {channel_type}", field="channel_type")
    if not name or len(name) > 200:
        raise ValidationError("must be 1-200 characters", field="name")
    clean = kind.validate(config, secrets, settings.allow_private_urls)
    if rate_limit_per_min is None and channel_type == "PAGERDUTY":
        rate_limit_per_min = PAGERDUTY_RATE_PER_MIN
    if rate_limit_per_min is not None and not 1 <= rate_limit_per_min <= 100_000:
        raise ValidationError("must be 1-100000 sends a minute", field="rate_limit_per_min")
    duplicate = (await conn.execute(text("SELECT 1 FROM notification_channels WHERE tenant_id = :t AND name = :n"),
                                    {"t": tenant_id, "n": name})).first()
    if duplicate:
        raise Conflict(f"a channel named {name!r} exists", details={"field": "name"})
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


def open_secrets(key: bytes, channel_id: str, sealed: str | None) -> dict[str, str]:
    if not sealed:
        return {}
    return dict(json.loads(decrypt_secret(key, sealed, context=channel_id)))


# Due, and not behind an unfinished earlier event of the same alert on the same channel: a receiver hears an
# alert's changes in order (PagerDuty must see the trigger before the resolve), even across retries.
_DUE = ("((j.status = 'PENDING' AND j.next_attempt_at <= :now) "
        " OR (j.status = 'IN_PROGRESS' AND j.lease_expires_at < :now)) "
        "AND NOT EXISTS (SELECT 1 FROM notification_jobs e WHERE e.alert_id = j.alert_id "
        "  AND e.channel_id = j.channel_id AND e.event_id < j.event_id AND e.status IN ('PENDING', 'IN_PROGRESS'))")
_LEASE = (
    "UPDATE notification_jobs j SET status = 'IN_PROGRESS', lease_owner = :owner, "
    "  lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => :lease), "
    "  lease_generation = j.lease_generation + 1, "
    "  attempt_count = j.attempt_count + 1, updated_at = :now "
    "FROM due, notification_channels c WHERE j.job_id = due.job_id AND c.channel_id = j.channel_id "
    "RETURNING j.job_id::text, j.tenant_id, j.channel_id::text, c.channel_type, c.config, c.secrets_encrypted, "
    "  c.is_enabled, j.payload, j.idempotency_key, j.attempt_count, j.max_attempts, j.lease_generation")
_CLAIM = text(
    "WITH due AS ("
    "  SELECT j.job_id FROM notification_jobs j JOIN notification_channels c ON c.channel_id = j.channel_id "
    f"  WHERE {_DUE} AND c.rate_limit_per_min IS NULL "
    "  ORDER BY j.next_attempt_at LIMIT :limit FOR UPDATE OF j SKIP LOCKED) " + _LEASE)
# Rate-limited channels: the channel row is locked while its budget is computed and spent, so deliverers
# claiming at the same time take turns; sends in the last 60 s are the attempts started then plus the jobs
# leased now (their attempt is not written yet).
_LIMITED = text(
    "SELECT c.channel_id::text, c.rate_limit_per_min - ("
    "    (SELECT count(*) FROM notification_attempts a JOIN notification_jobs s ON s.job_id = a.job_id "
    "     WHERE s.channel_id = c.channel_id AND a.started_at > CAST(:now AS timestamptz) - interval '60 seconds') "
    "  + (SELECT count(*) FROM notification_jobs s WHERE s.channel_id = c.channel_id "
    "     AND s.status = 'IN_PROGRESS' AND s.lease_expires_at >= :now)) AS budget "
    "FROM notification_channels c "
    "WHERE c.rate_limit_per_min IS NOT NULL "
    f"  AND EXISTS (SELECT 1 FROM notification_jobs j WHERE j.channel_id = c.channel_id AND {_DUE}) "
    "FOR UPDATE OF c SKIP LOCKED")
_CLAIM_CHANNEL = text(
    "WITH due AS ("
    "  SELECT j.job_id FROM notification_jobs j "
    f"  WHERE j.channel_id = CAST(:channel AS uuid) AND {_DUE} "
    "  ORDER BY j.next_attempt_at LIMIT :limit FOR UPDATE OF j SKIP LOCKED) " + _LEASE)


async def claim_jobs(conn: AsyncConnection, *, owner: str, now: datetime, limit: int = 100,
                     lease_s: float = 60.0) -> list[ClaimedJob]:
    """Lease due jobs (and jobs whose lease expired: a crashed deliverer's). Commit before sending.

    A job whose payload cannot be read goes straight to the dead letters instead of failing every claim.
    """
    params = {"now": now, "limit": limit, "owner": owner, "lease": lease_s}
    rows = list((await conn.execute(_CLAIM, params)).all())
    for channel_id, budget in (await conn.execute(_LIMITED, {"now": now})).all():
        room = min(int(budget), limit - len(rows))
        if room > 0:  # over budget: its jobs stay PENDING (queued, never dropped) until the window moves
            rows += (await conn.execute(_CLAIM_CHANNEL, {**params, "channel": channel_id, "limit": room})).all()
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
                               max_attempts=r.max_attempts, lease_generation=r.lease_generation))
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
    elif result.retryable and job.attempt_no < job.max_attempts:
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
        "WHERE tenant_id = :t AND job_id = CAST(:j AS uuid) AND status = 'DEAD'"),
        {"t": tenant_id, "j": job_id, "now": now})
    if result.rowcount == 0:
        status = (await conn.execute(text(
            "SELECT status FROM notification_jobs WHERE tenant_id = :t AND job_id = CAST(:j AS uuid)"),
            {"t": tenant_id, "j": job_id})).scalar()
        if status is None:
            raise NotFound(f"job {job_id} not found")
        raise Conflict(f"only dead jobs can be replayed; this one is {status}", details={"status": status})
    await conn.execute(text("SELECT pg_notify('pulse_jobs', '')"))
