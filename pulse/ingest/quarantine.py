"""Quarantine: rejected messages as `quarantine_events` rows plus per-minute `quarantine_counters`, batched."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from pulse.checks import replace_nul

RAW_PAYLOAD_LIMIT = 2048
"""Bytes of a rejected payload kept in quarantine_events.raw_payload."""
DETAIL_LIMIT = 1000

_INSERT_EVENTS = """
INSERT INTO quarantine_events (tenant_id, device_id, received_at, transport, reason, detail, topic, raw_payload,
                               payload_size)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::int[])
"""

_UPSERT_COUNTERS = """
INSERT INTO quarantine_counters AS q (tenant_id, minute, reason, count)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bigint[])
ON CONFLICT ON CONSTRAINT quarantine_counters_key DO UPDATE SET count = q.count + EXCLUDED.count
"""


@dataclass(frozen=True, slots=True)
class QuarantineEvent:
    """One rejected message, already trimmed to what is stored."""

    tenant_id: str | None
    device_id: str | None
    received_at: datetime
    transport: str
    reason: str
    detail: str
    topic: str | None
    raw_payload: str
    payload_size: int


def quarantine_event(*, tenant_id: str | None, device_id: str | None, received_at: datetime, transport: str,
                     reason: str, detail: str, topic: str | bytes | None, payload: bytes) -> QuarantineEvent:
    """Build the stored form: payload cut to RAW_PAYLOAD_LIMIT bytes, text made safe for PostgreSQL."""
    if isinstance(topic, bytes):
        topic = topic.decode("utf-8", errors="replace")
    return QuarantineEvent(
        tenant_id=tenant_id, device_id=replace_nul(device_id), received_at=received_at, transport=transport,
        reason=reason, detail=replace_nul(detail[:DETAIL_LIMIT]) or "",
        topic=replace_nul(topic[:512] if topic else topic),
        raw_payload=replace_nul(payload[:RAW_PAYLOAD_LIMIT].decode("utf-8", errors="replace")) or "",
        payload_size=len(payload),
    )


async def write_quarantine(conn: asyncpg.Connection, events: list[QuarantineEvent]) -> None:
    """Insert the events and add them to their (tenant, minute, reason) counters; caller owns the transaction."""
    if not events:
        return
    await conn.execute(
        _INSERT_EVENTS,
        [e.tenant_id for e in events], [e.device_id for e in events], [e.received_at for e in events],
        [e.transport for e in events], [e.reason for e in events], [e.detail for e in events],
        [e.topic for e in events], [e.raw_payload for e in events], [e.payload_size for e in events],
    )
    counts = Counter((e.tenant_id, e.received_at.replace(second=0, microsecond=0), e.reason) for e in events)
    keys = sorted(counts, key=lambda k: (k[0] or "", k[1], k[2]))  # one lock order for concurrent writers
    await conn.execute(_UPSERT_COUNTERS, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
                       [counts[k] for k in keys])
