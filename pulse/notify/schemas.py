"""Notification messages: what notify knows of an alert change (it never sees rules)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

SEVERITY_NAMES = {1: "info", 2: "low", 3: "medium", 4: "high", 5: "critical"}


class AlertEventMessage(msgspec.Struct, kw_only=True):
    """One alert change to route and deliver; stored as the job payload."""

    tenant_id: str
    alert_id: str
    event_id: int
    event_kind: str  # OPENED | UPDATED | ACKNOWLEDGED | ESCALATED | CLOSED | FLAPPING
    fingerprint: str
    alert_type: str
    severity: int
    status: str
    title: str
    summary: str = ""
    device_id: str | None = None
    site_id: str | None = None
    rule_id: str | None = None
    metric: str | None = None
    value: Any = None
    opened_at: datetime
    occurred_at: datetime
    tags: list[str] = msgspec.field(default_factory=list)
    group_ids: list[str] = msgspec.field(default_factory=list)
    links: dict[str, str] = msgspec.field(default_factory=dict)


class SendResult(msgspec.Struct, kw_only=True):
    """What a channel reports after one attempt."""

    delivered: bool
    status_code: int | None = None
    retryable: bool = False
    retry_after_s: float | None = None
    error: str | None = None
