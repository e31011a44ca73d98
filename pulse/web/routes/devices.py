"""/api/device: what devices call themselves (activation: code in, credentials out, once)."""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec
from litestar import Response, Router, post
from litestar.params import JSONBody

from pulse.db import system_tx
from pulse.fleet.service import activate_device
from pulse.web.deps import EngineDep, NowDep, SettingsDep
from pulse.web.errors import error_specs
from pulse.web.query_params import ANY_QUERY_PARAMS
from pulse.web.routes.identity import NO_STORE


class ActivationRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    activation_code: str


class MqttAccess(msgspec.Struct, kw_only=True, omit_defaults=True):
    username: str
    password: str
    client_id: str
    """The only client id the broker accepts with these credentials (the username)."""
    topic_prefix: str
    host: str | None = None
    port: int | None = None


class ActivatedDevice(msgspec.Struct, kw_only=True):
    tenant_id: str
    device_id: str
    provision_token: str
    mqtt: MqttAccess


def broker_address(settings: SettingsDep) -> tuple[str | None, int | None]:
    """Host and port of the broker Pulse uses (never its credentials), as a hint for the device."""
    if not settings.mqtt_url:
        return None, None
    parts = urlsplit(settings.mqtt_url)
    return parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883)


@post("/activate", status_code=200, summary="Exchange an activation code for device credentials",
      responses=error_specs(400, 404))
async def activate(data: JSONBody[ActivationRequest], engine: EngineDep, settings: SettingsDep,
                   now: NowDep) -> Response[ActivatedDevice]:
    """Credentials are shown once: the code is spent and only hashes of the secrets are kept (the MQTT
    password also encrypted until `pulse deliver` has created the device's broker account)."""
    async with system_tx(engine) as conn:
        creds = await activate_device(conn, data.activation_code, now=now, secret_key=settings.secret_key_bytes)
    host, port = broker_address(settings)
    body = ActivatedDevice(
        tenant_id=creds.tenant_id, device_id=creds.device_id, provision_token=creds.provision_token,
        mqtt=MqttAccess(username=creds.mqtt_username, password=creds.mqtt_password,
                        client_id=creds.mqtt_client_id, topic_prefix=creds.topic_prefix, host=host, port=port))
    return Response(body, headers=NO_STORE)


# Called by device firmware, which cannot be corrected quickly: a stray query parameter is ignored, as on ingest.
router = Router(path="/api/device", route_handlers=[activate], tags=["device"], opt={ANY_QUERY_PARAMS: True})
