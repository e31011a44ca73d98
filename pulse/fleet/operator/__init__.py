"""Platform operations across tenants: tenants, subscriptions, fleet-wide lists, system health, the audit log.

Every function takes an operator transaction (role `pulse_operator`, all tenants visible) and never commits.
A change that alters what ingest accepts from a device (a tenant or subscription status) announces every affected
device on `pulse_device_changed`, delivered at commit, so ingest instances drop their cached registry records at
once instead of after the cache TTL.

The package's modules hold the behaviour (`tenants`, `subscriptions`, `listings`, `health`, `audit`, and for the
NOC `noc` and `capacity`); the messages of the first five are defined here, so that their names in the OpenAPI
document (e.g. `operator_DevicePage`, told apart from the tenant API's `DevicePage`) do not depend on which module
uses them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class Subscription(msgspec.Struct, kw_only=True):
    """`expires_at` is the end of the current term (null: open-ended); `device_count` excludes decommissioned."""

    subscription_id: str
    tenant_id: str
    kind: str
    status: str
    device_limit: int
    device_count: int
    parent_subscription_id: str | None
    term_start_at: datetime
    expires_at: datetime | None
    grace_days: int
    description: str | None
    status_changed_at: datetime
    created_at: datetime
    updated_at: datetime


class TenantSummary(msgspec.Struct, kw_only=True):
    """`device_limit` sums the usable (TRIAL, ACTIVE, GRACE) subscriptions; open alerts are OPEN or ACKNOWLEDGED."""

    tenant_id: str
    name: str
    status: str
    timezone: str
    contact_email: str | None
    device_count: int
    device_limit: int
    open_alert_count: int
    created_at: datetime
    updated_at: datetime


class Tenant(TenantSummary, kw_only=True):
    heartbeat_interval_s: int
    subscriptions: list[Subscription]


class TenantPage(msgspec.Struct, kw_only=True):
    items: list[TenantSummary]
    total: int
    limit: int
    offset: int


class SubscriptionPage(msgspec.Struct, kw_only=True):
    items: list[Subscription]
    total: int
    limit: int
    offset: int


class FleetDevice(msgspec.Struct, kw_only=True):
    """A device of any tenant: registry `status` and liveness `state`."""

    tenant_id: str
    device_id: str
    name: str | None
    device_type: str | None
    site_id: str | None
    subscription_id: str | None
    status: str
    state: str
    last_seen_at: datetime | None
    tags: list[str]
    created_at: datetime


class DevicePage(msgspec.Struct, kw_only=True):
    items: list[FleetDevice]
    total: int
    limit: int
    offset: int


class FleetAlert(msgspec.Struct, kw_only=True):
    alert_id: str
    tenant_id: str
    alert_type: str
    device_id: str | None
    site_id: str | None
    severity: int
    status: str
    title: str
    opened_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    closed_at: datetime | None


class AlertPage(msgspec.Struct, kw_only=True):
    items: list[FleetAlert]
    total: int
    limit: int
    offset: int


class ProcessInstance(msgspec.Struct, kw_only=True):
    """One service_heartbeats row; `alive` when it beat within ALIVE_WITHIN_S seconds."""

    instance: str
    ready: bool
    ready_since: datetime | None
    beat_at: datetime
    beat_age_s: float
    alive: bool
    detail: str


class ProcessHealth(msgspec.Struct, kw_only=True):
    process_type: str
    alive: int
    ready: int
    instances: list[ProcessInstance]


class NotificationQueue(msgspec.Struct, kw_only=True):
    pending_due: int
    pending_later: int
    in_progress: int
    in_progress_lease_expired: int
    dead: int
    oldest_due_age_s: float | None


class QuarantineLastHour(msgspec.Struct, kw_only=True):
    total: int
    by_reason: dict[str, int]


class SystemHealth(msgspec.Struct, kw_only=True):
    """`telemetry_rows_last_minute` counts rows by message time; null when counting took too long."""

    checked_at: datetime
    alive_within_s: int
    processes: list[ProcessHealth]
    notifications: NotificationQueue
    telemetry_rows_last_minute: int | None
    quarantine_last_hour: QuarantineLastHour


class OperatorAuditEntry(msgspec.Struct, kw_only=True):
    audit_id: int
    at: datetime
    actor: str
    actor_roles: list[str]
    action: str
    tenant_id: str | None
    resource: str | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    details: dict[str, Any]


class OperatorAuditPage(msgspec.Struct, kw_only=True):
    """Newest first."""

    items: list[OperatorAuditEntry]
    total: int
    limit: int
    offset: int
