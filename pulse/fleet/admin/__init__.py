"""Tenant device administration: devices and their lifecycle, credentials, tags, sites, groups and CSV import.

Every function acts inside one tenant (the caller's transaction is scoped to it) and never commits. Ids in a
path that do not exist in the tenant raise NotFound; ids referenced from a body (a site, a group, devices of a
bulk change) that do not exist raise ValidationError naming the field. Any change to a device's status, site
or credentials is announced with `notify_device_changed`, so ingest drops its cached registry record at commit.

The package's modules hold the behaviour (`devices`, `sites`, `groups`, `csv_import`, and the `checks` they share);
what they return is defined here, so that their names in the OpenAPI document (e.g. `admin_Device`, told apart from
the read API's `Device`) do not depend on which module uses them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class Device(msgspec.Struct, kw_only=True):
    """A device as its tenant administers it; `credentials_issued_at` is when its live token was issued."""

    device_id: str
    name: str | None
    site_id: str | None
    device_type: str | None
    tags: list[str]
    attributes: dict[str, Any]
    heartbeat_interval_s: int | None
    status: str
    lat: float | None
    lng: float | None
    group_ids: list[str]
    credentials_issued_at: datetime | None
    created_at: datetime
    updated_at: datetime
    decommissioned_at: datetime | None


class TagChange(msgspec.Struct, kw_only=True):
    """The result of a bulk tag change: devices changed, and decommissioned ones left as they were."""

    updated: int
    skipped: list[str]


class Site(msgspec.Struct, kw_only=True):
    site_id: str
    name: str
    timezone: str
    address: str | None
    lat: float | None
    lng: float | None
    device_count: int
    created_at: datetime
    updated_at: datetime


class DeviceGroup(msgspec.Struct, kw_only=True):
    group_id: str
    name: str
    description: str | None
    device_ids: list[str]
    created_at: datetime


class RowError(msgspec.Struct, kw_only=True):
    field: str | None
    message: str


class ImportRow(msgspec.Struct, kw_only=True, omit_defaults=True):
    row: int
    device_id: str | None
    status: str  # "created" | "error"
    error: RowError | None = None


class ImportResult(msgspec.Struct, kw_only=True):
    created: int
    failed: int
    results: list[ImportRow]
