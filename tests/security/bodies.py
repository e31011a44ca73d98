"""Valid request bodies for tenant routes that act on an object named in the path.

The cross-tenant matrix sends them with the caller's own ids in the body and another tenant's ids in the path, so a
404 can only come from the path. A route with a body and a path id that is missing here fails test_inventory.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

Ids = dict[str, str]
HOOK = "http://127.0.0.1:9/pulse-hook"


def _later(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


SAMPLE_BODIES: dict[tuple[str, str], Callable[[Ids], Any]] = {
    ("POST", "/api/v2/alerts/{alert_id}/close"): lambda ids: {"reason": "done"},
    ("POST", "/api/v2/alerts/{alert_id}/silence"): lambda ids: {"until": _later(1), "reason": "quiet"},
    ("POST", "/customer/alerts/{alert_id}/close"): lambda ids: {"reason": "done"},
    ("POST", "/customer/alerts/{alert_id}/silence"): lambda ids: {"until": _later(1), "reason": "quiet"},
    ("POST", "/customer/alerts/{alert_id}/comments"): lambda ids: {"text": "looking"},
    ("PATCH", "/customer/alert-rules/{rule_id}"): lambda ids: {"description": "changed"},
    ("PUT", "/customer/alert-rules/{rule_id}/escalation-policy"): lambda ids: {"policy_id": ids["policy_id"]},
    ("POST", "/customer/alert-rule-templates/{template_id}/instantiate"): lambda ids: {},
    ("PATCH", "/customer/channels/{channel_id}"): lambda ids: {"name": "renamed channel"},
    ("PATCH", "/customer/device-groups/{group_id}"): lambda ids: {"description": "changed"},
    ("POST", "/customer/device-groups/{group_id}/members"): lambda ids: {"device_ids": [ids["device_id"]]},
    ("PUT", "/customer/device-groups/{group_id}/members"): lambda ids: {"device_ids": [ids["device_id"]]},
    ("PATCH", "/customer/devices/{device_id}"): lambda ids: {"name": "renamed device"},
    ("PUT", "/customer/devices/{device_id}/tags"): lambda ids: {"tags": ["moved"]},
    ("PUT", "/customer/escalation-policies/{policy_id}"): lambda ids: {
        "name": "replaced policy", "levels": [{"delay_minutes": 0, "targets": [{"type": "user", "id": ids["user_id"]}]}]},
    ("PATCH", "/customer/maintenance-windows/{window_id}"): lambda ids: {"name": "renamed window"},
    ("PATCH", "/customer/routing-rules/{route_id}"): lambda ids: {"name": "renamed route"},
    ("PATCH", "/customer/schedules/{schedule_id}"): lambda ids: {"description": "changed"},
    ("POST", "/customer/schedules/{schedule_id}/layers"): lambda ids: {
        "name": "extra layer", "rotation_type": "DAILY", "rotation_start": "2026-01-05",
        "participants": [ids["user_id"]]},
    ("PATCH", "/customer/schedules/{schedule_id}/layers/{layer_id}"): lambda ids: {"name": "renamed layer"},
    ("POST", "/customer/schedules/{schedule_id}/overrides"): lambda ids: {
        "user_id": ids["user_id"], "starts_at": _later(30), "ends_at": _later(31)},
    ("PATCH", "/customer/sites/{site_id}"): lambda ids: {"name": "renamed site"},
    ("PATCH", "/customer/users/{user_id}"): lambda ids: {"display_name": "renamed user"},
    ("POST", "/customer/users/{user_id}/contact-methods"): lambda ids: {
        "kind": "WEBHOOK", "address": HOOK, "secrets": {"secret": "sixteen-characters-at-least"}},
    ("PATCH", "/customer/users/{user_id}/contact-methods/{contact_id}"): lambda ids: {"label": "renamed"},
    ("POST", "/customer/users/{user_id}/notification-rules"): lambda ids: {
        "contact_id": ids["contact_id"], "delay_minutes": 7},
    ("PATCH", "/customer/users/{user_id}/notification-rules/{rule_id}"): lambda ids: {"delay_minutes": 9},
}

# Query parameters a route requires to get past validation to the object lookup.
SAMPLE_QUERIES: dict[tuple[str, str], dict[str, str]] = {
    ("GET", "/api/v2/devices/{device_id}/telemetry/history"): {"metric": "temp_c"},
}
