"""Fleet messages: device credentials handed to a device once, at activation or rotation."""

from __future__ import annotations

import msgspec


class DeviceCredentials(msgspec.Struct, kw_only=True):
    """Secrets a device needs; shown once and stored only as hashes."""

    tenant_id: str
    device_id: str
    provision_token: str
    mqtt_username: str
    mqtt_password: str
    mqtt_client_id: str
    """The only MQTT client id the broker accepts with these credentials (the username itself)."""
    topic_prefix: str
