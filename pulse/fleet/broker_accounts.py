"""Broker accounts: one Mosquitto dynamic-security client and role per device, managed over $CONTROL.

A device's client may publish only under `tenant/{t}/device/{d}/` and subscribe only to
`tenant/{t}/device/{d}/command/#`; the ingest account may subscribe to every device topic (also
through `$share/…`) and publish nowhere. Disabling a client cuts off its live connection at once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
from typing import Any
from urllib.parse import unquote, urlsplit

import gmqtt
from gmqtt.mqtt.constants import MQTTv311

from pulse.errors import PulseError

log = logging.getLogger("pulse.broker")

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
INGEST_ROLE = "pulse-ingest"
_ALREADY = ("already exists",)


class BrokerAccountError(PulseError):
    """The broker refused or did not answer an account change."""

    code = "broker_account"
    status = 502


def device_role(tenant_id: str, device_id: str) -> str:
    return f"device:{tenant_id}/{device_id}"


def device_acls(tenant_id: str, device_id: str) -> list[dict[str, Any]]:
    prefix = f"tenant/{tenant_id}/device/{device_id}/"
    return [{"acltype": "publishClientSend", "topic": prefix + "#", "allow": True},
            {"acltype": "subscribePattern", "topic": prefix + "command/#", "allow": True}]


INGEST_ACLS = [{"acltype": "subscribePattern", "topic": "tenant/+/device/+/+", "allow": True},
               {"acltype": "subscribePattern", "topic": "$share/+/tenant/+/device/+/+", "allow": True}]


class BrokerAdmin:
    """An admin connection to the broker's dynamic-security API. Use as `async with BrokerAdmin(url) as admin`."""

    def __init__(self, admin_url: str, *, timeout_s: float = 5.0, client_id: str | None = None) -> None:
        parts = urlsplit(admin_url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or not parts.username:
            raise ValueError("the admin URL must be mqtt[s]://user:password@host[:port]")
        self._host, self._port = parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self._ssl = parts.scheme == "mqtts"
        self._user, self._password = unquote(parts.username), unquote(parts.password or "")
        self._timeout_s = timeout_s
        # A unique id per connection: two processes sharing one id would keep taking each other's session over.
        self._client = gmqtt.Client(client_id or f"pulse-broker-admin-{secrets.token_hex(4)}")
        self._waiting: dict[str, asyncio.Future[list[dict[str, Any]]]] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> BrokerAdmin:
        self._client.set_auth_credentials(self._user, self._password)
        self._client.on_message = self._on_message
        subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_subscribe(*_: object) -> None:
            if not subscribed.done():
                subscribed.set_result(None)

        self._client.on_subscribe = on_subscribe
        try:
            await asyncio.wait_for(self._client.connect(self._host, self._port, ssl=self._ssl, version=MQTTv311),
                                   self._timeout_s)
            self._client.subscribe(RESPONSE_TOPIC, qos=1)
            await asyncio.wait_for(subscribed, self._timeout_s)
        except (OSError, TimeoutError, gmqtt.mqtt.handler.MQTTConnectError) as exc:
            raise BrokerAccountError(f"cannot reach the broker's admin API at {self._host}:{self._port}: {exc}") \
                from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.disconnect()

    def _on_message(self, _client: Any, topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        try:
            responses = json.loads(payload).get("responses", [])
        except ValueError:
            return 0
        key = str(responses[0].get("correlationData")) if responses else ""
        future = self._waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(responses)
        return 0

    async def execute(self, commands: list[dict[str, Any]], *, tolerate: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Send commands as one request; raise on an error whose text contains none of `tolerate`."""
        async with self._lock:
            key = str(next(self._ids))
            for c in commands:
                c["correlationData"] = key
            future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
            self._waiting[key] = future
            self._client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
            try:
                responses = await asyncio.wait_for(future, self._timeout_s)
            except TimeoutError:
                self._waiting.pop(key, None)
                raise BrokerAccountError("the broker did not answer the account change in time") from None
        for r in responses:
            error = r.get("error")
            if error and not any(t in error for t in tolerate):
                raise BrokerAccountError(f"broker refused {r.get('command')}: {error}")
        return responses

    async def ensure_device(self, tenant_id: str, device_id: str, username: str, password: str) -> None:
        """Create or update the device's client with this password; other sessions of it are cut off.

        The account may connect only with its username as the MQTT client id: a client id is the key of a
        persistent session at the broker, and an account free to present any client id could resume another
        client's session (ingest's, with every tenant's queued telemetry) or push it off the broker.
        """
        role = device_role(tenant_id, device_id)
        await self.execute([{"command": "createRole", "rolename": role, "acls": device_acls(tenant_id, device_id)}],
                           tolerate=_ALREADY)
        client = {"command": "createClient", "username": username, "password": password, "clientid": username,
                  "roles": [{"rolename": role}]}
        created = await self.execute([client], tolerate=_ALREADY)
        if created[0].get("error"):
            # Rotation: recreate the client in one request; deleting it also closes sessions on the old password.
            await self.execute([{"command": "deleteClient", "username": username}, client])

    async def revoke_device(self, username: str) -> None:
        """The device can no longer connect, and a live connection is closed now."""
        await self.execute([{"command": "disableClient", "username": username}], tolerate=("not found",))

    async def delete_device(self, tenant_id: str, device_id: str, username: str) -> None:
        await self.execute([{"command": "deleteClient", "username": username},
                            {"command": "deleteRole", "rolename": device_role(tenant_id, device_id)}],
                           tolerate=("not found",))

    async def ensure_ingest_account(self, username: str, password: str) -> None:
        """The account `pulse ingest` connects with: subscribe to every device topic, publish nowhere."""
        await self.execute([{"command": "createRole", "rolename": INGEST_ROLE, "acls": INGEST_ACLS}],
                           tolerate=_ALREADY)
        created = await self.execute([{"command": "createClient", "username": username, "password": password,
                                       "roles": [{"rolename": INGEST_ROLE}]}], tolerate=_ALREADY)
        if created[0].get("error"):
            await self.execute([{"command": "setClientPassword", "username": username, "password": password}])
