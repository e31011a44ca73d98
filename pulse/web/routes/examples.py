"""Examples of every request body of the API, by body type, shown in the OpenAPI document (pulse/web/openapi.py)."""

from __future__ import annotations

from typing import Any

USER = "5f0c2a4e-8d1b-4e36-9a51-2b7c1d9e0f11"
CHANNEL = "9a1e7c3b-2f4d-4b8a-8e6f-0c5d3a1b7e22"
SCHEDULE = "0b6f4d2a-7e1c-4a9b-b3d5-8f2e6c1a9d33"
POLICY = "3c8d1f5e-6a2b-4c7d-9e0f-1b4a7d2c5e44"
GROUP = "7d2e9b4c-1a5f-4e8d-a6c3-5f0b8e1d2a55"
CONTACT = "e4a1b7c9-3d2f-4a6e-8b5c-9d0e1f2a3b66"
ALERT = "6f1c8e2d-4b7a-4d9c-a1e3-7b5f0c2d8e77"
SUBSCRIPTION = "2a9d5c1e-8f3b-4e7a-b6d0-4c1e9f8a2b88"

_THRESHOLD = {"metric": "temp_c", "op": "GT", "value": -15.0, "clear_value": -17.0}


def request_examples() -> dict[type, dict[str, Any]]:
    """One example per request body type; imported lazily, like the routes themselves."""
    from pulse.oncall.policies import EscalationPolicySpec
    from pulse.web.routes import (
        admin,
        alerts,
        customer_alerts,
        customer_devices,
        devices,
        identity,
        notify,
        oncall,
        operator_tenants,
        people,
        reports,
        rules,
    )

    return {
        identity.LoginRequest: {"email": "ops@acme.example", "password": "correct horse battery staple"},
        identity.RefreshRequest: {"refresh_token": "rt_2bYtq0H1x8sQ3mVw"},
        identity.LogoutRequest: {"refresh_token": "rt_2bYtq0H1x8sQ3mVw"},
        admin.DeviceProvision: {"tenant_id": "acme", "device_id": "freezer-7", "name": "Freezer 7",
                                "device_type": "freezer", "site_id": "hq", "tags": ["cold-chain"],
                                "attributes": {"model": "FZ-200"}},
        devices.ActivationRequest: {"activation_code": "ACT-7KQ2-M4XD-9PLB"},
        alerts.CloseRequest: {"reason": "compressor replaced"},
        alerts.SilenceRequest: {"until": "2026-11-23T18:00:00Z", "reason": "door left open for cleaning"},
        customer_alerts.CommentCreate: {"text": "Technician on site, ETA 20 minutes"},
        customer_alerts.BulkAcknowledge: {"alert_ids": [ALERT]},
        customer_alerts.WindowCreate: {"name": "Sunday patching", "recurrence": "WEEKLY", "weekdays": [6],
                                       "start_time": "02:00", "duration_minutes": 120, "timezone": "Europe/Berlin",
                                       "site_ids": ["hq"]},
        customer_alerts.WindowUpdate: {"name": "Sunday patching (long)", "duration_minutes": 180},
        customer_alerts.TemplateInstantiate: {"name": "Freezers too warm", "parameters": {"threshold": -15},
                                              "severity": 4, "group_ids": [GROUP]},
        rules.AlertRuleCreate: {"name": "Freezer too warm", "rule_type": "THRESHOLD", "severity": 4,
                                "definition": _THRESHOLD, "for_seconds": 300, "tags": ["cold-chain"]},
        rules.AlertRulePreviewRequest: {"rule_type": "THRESHOLD", "definition": _THRESHOLD, "for_seconds": 300,
                                        "device_id": "freezer-7", "from": "2026-11-22T12:00:00Z",
                                        "to": "2026-11-23T12:00:00Z"},
        rules.AlertRuleUpdate: {"description": "escalated after the March outage", "severity": 5, "for_seconds": 120},
        customer_devices.DeviceCreate: {"device_id": "freezer-7", "name": "Freezer 7", "site_id": "hq",
                                        "device_type": "freezer", "tags": ["cold-chain"], "heartbeat_interval_s": 60,
                                        "lat": 52.52, "lng": 13.405},
        customer_devices.DeviceUpdate: {"name": "Freezer 7 (kitchen)", "tags": ["cold-chain", "kitchen"]},
        customer_devices.TagsBulk: {"device_ids": ["freezer-7", "freezer-8"], "add": ["kitchen"], "remove": ["spare"]},
        customer_devices.TagsReplace: {"tags": ["cold-chain", "kitchen"]},
        customer_devices.SiteCreate: {"site_id": "hq", "name": "Headquarters", "timezone": "Europe/Berlin",
                                      "address": "Alexanderplatz 1, Berlin", "lat": 52.5219, "lng": 13.4132},
        customer_devices.SiteUpdate: {"name": "Headquarters (Berlin)"},
        customer_devices.GroupCreate: {"name": "Kitchen freezers", "description": "all freezers in the kitchen",
                                       "device_ids": ["freezer-7", "freezer-8"]},
        customer_devices.GroupUpdate: {"description": "freezers of the main kitchen"},
        customer_devices.Members: {"device_ids": ["freezer-7", "freezer-8"]},
        notify.ChannelCreate: {"name": "ops hook", "channel_type": "WEBHOOK",
                               "config": {"url": "https://ops.example.com/pulse"},
                               "secrets": {"secret": "at-least-16-characters"}},
        notify.ChannelUpdate: {"name": "ops hook (EU)", "is_enabled": False},
        notify.RouteCreate: {"name": "critical to ops", "channel_id": CHANNEL, "min_severity": 4,
                             "tags": ["cold-chain"], "is_final": False},
        notify.RouteUpdate: {"name": "high and critical to ops", "min_severity": 3},
        EscalationPolicySpec: {"name": "Kitchen on-call", "repeat_count": 1, "levels": [
            {"delay_minutes": 0, "targets": [{"type": "schedule", "id": SCHEDULE}]},
            {"delay_minutes": 15, "targets": [{"type": "user", "id": USER}, {"type": "channel", "id": CHANNEL}]}]},
        oncall.RulePolicyChange: {"policy_id": POLICY},
        oncall.ScheduleCreate: {"name": "Kitchen", "timezone": "Europe/Berlin", "description": "kitchen technicians"},
        oncall.ScheduleUpdate: {"handoff_channel_id": CHANNEL},
        oncall.LayerCreate: {"name": "Primary", "rotation_type": "WEEKLY", "rotation_start": "2026-03-16",
                             "handoff_time": "09:00", "participants": [USER]},
        oncall.LayerUpdate: {"handoff_time": "08:00"},
        oncall.OverrideCreate: {"user_id": USER, "starts_at": "2026-11-23T18:00:00Z", "ends_at": "2026-11-24T08:00:00Z",
                                "reason": "swap with Sam"},
        people.UserCreate: {"email": "sam@acme.example", "display_name": "Sam", "roles": ["customer"],
                            "timezone": "Europe/Berlin"},
        people.UserUpdate: {"roles": ["customer", "tenant-admin"]},
        people.ContactMethodCreate: {"kind": "WEBHOOK", "address": "https://pager.example.com/sam", "label": "pager",
                                     "secrets": {"secret": "at-least-16-characters"}},
        people.ContactMethodUpdate: {"label": "work pager"},
        people.NotificationRuleCreate: {"contact_id": CONTACT, "delay_minutes": 5, "min_severity": 3},
        people.NotificationRuleUpdate: {"contact_id": CONTACT, "delay_minutes": 10},
        operator_tenants.TenantCreate: {"tenant_id": "acme", "name": "ACME Cold Storage", "device_limit": 500,
                                        "timezone": "Europe/Berlin", "contact_email": "it@acme.example"},
        operator_tenants.TenantUpdate: {"status": "SUSPENDED"},
        operator_tenants.SubscriptionCreate: {"kind": "ADDON", "device_limit": 100,
                                              "parent_subscription_id": SUBSCRIPTION},
        operator_tenants.SubscriptionUpdate: {"device_limit": 1000, "expires_at": "2027-12-31T23:59:59Z"},
        reports.ReportCreate: {"period_start": "2026-11-01T00:00:00Z", "period_end": "2026-12-01T00:00:00Z"},
    }
