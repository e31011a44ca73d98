"""MQTT publish: the versioned webhook body to a topic rendered from a template, at a chosen QoS and retain flag,
on a broker the tenant names (SSRF-checked like any URL). One connection per message: connect, publish, wait for
the broker's acknowledgement (QoS 1/2), disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets as token
import ssl
from typing import Any
from urllib.parse import urlsplit

import gmqtt
import httpx
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.storage import PersistentStorage

from pulse.errors import ValidationError
from pulse.notify.channels.tls import check_tls_settings, client_context
from pulse.notify.channels.webhook import render_body
from pulse.notify.schemas import AlertEventMessage, SendResult
from pulse.notify.ssrf import check_host
from pulse.notify.templates import check_template, render

TIMEOUT_S = 10.0
MAX_TOPIC_BYTES = 1024
DEFAULT_CLIENT_ID_PREFIX = "pulse-notify-"
_CLIENT_ID_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
# CONNACK refusals that can pass by themselves: 3.1.1 "server unavailable"; MQTT 5 unspecified, implementation
# specific, server unavailable, server busy, quota exceeded, connection rate exceeded. Everything else (bad
# credentials, not authorised, banned, client id rejected, …) needs someone to change the channel or the broker.
_TRANSIENT_CONNACK = frozenset({3, 128, 131, 136, 137, 151, 159})


def _broker(url: Any) -> tuple[str, int, bool]:
    parts = urlsplit(url) if isinstance(url, str) and len(url) <= 2048 else None
    if parts is None or parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValidationError("must be mqtt://host[:port] or mqtts://host[:port]", field="config.url")
    if parts.username or parts.password:
        raise ValidationError("must not carry credentials; use config.username and secrets.password",
                              field="config.url")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValidationError("must be only mqtt[s]://host[:port]; the topic goes in config.topic_template",
                              field="config.url")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise ValidationError("has an invalid port", field="config.url") from None
    return parts.hostname, port, parts.scheme == "mqtts"


def validate_config(config: dict[str, Any], secrets: dict[str, str], allow: tuple[str, ...]) -> dict[str, Any]:
    """Check an MQTT channel's settings; errors name the field."""
    host, port, tls = _broker(config.get("url"))
    check_host(host, allow, field="config.url", port=port)
    topic = config.get("topic_template")
    if not isinstance(topic, str) or not topic.strip():
        raise ValidationError("a topic template such as alerts/{tenant_id}/{device_id} is required",
                              field="config.topic_template")
    check_template(topic, field="config.topic_template")
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise ValidationError("a topic to publish to cannot contain the wildcards + or #",
                              field="config.topic_template")
    if topic.startswith("$"):
        raise ValidationError("topics starting with $ are reserved for the broker", field="config.topic_template")
    qos = config.get("qos", 1)
    if isinstance(qos, bool) or qos not in (0, 1, 2) or not isinstance(qos, int):
        raise ValidationError("must be 0, 1 or 2", field="config.qos")
    retain = config.get("retain", False)
    if not isinstance(retain, bool):
        raise ValidationError("must be true or false", field="config.retain")
    prefix = config.get("client_id_prefix", DEFAULT_CLIENT_ID_PREFIX)
    if not isinstance(prefix, str) or not _CLIENT_ID_PREFIX.match(prefix):
        raise ValidationError("must be 1-40 letters, digits, '-', '_' or '.'", field="config.client_id_prefix")
    clean: dict[str, Any] = {"url": config["url"], "topic_template": topic, "qos": qos, "retain": retain,
                             "client_id_prefix": prefix}
    username = config.get("username")
    if username is not None:
        if not isinstance(username, str) or not 1 <= len(username) <= 256:
            raise ValidationError("must be 1-256 characters", field="config.username")
        clean["username"] = username
    elif secrets.get("password"):
        raise ValidationError("a password needs a username", field="config.username")
    if tls or config.get("ca_pem") is not None or "verify" in config:
        _tls_settings(config, clean, tls)
    return clean


def _tls_settings(config: dict[str, Any], clean: dict[str, Any], tls: bool) -> None:
    if not tls:
        raise ValidationError("ca_pem and verify apply to mqtts:// only", field="config.url")
    clean.update(check_tls_settings(config, peer="broker"))


def render_topic(msg: AlertEventMessage, config: dict[str, Any]) -> str:
    """The topic for one message. A value carrying + or # (never valid in a published topic) gets `_` instead."""
    return render(config["topic_template"], msg).translate({ord("+"): "_", ord("#"): "_", 0: "_"})


async def _connect(client: gmqtt.Client, lost: asyncio.Event, host: str, port: int,
                   tls: ssl.SSLContext | bool) -> None:
    """Connect with MQTT 5; a broker that closes the connection instead of answering (a 3.1.1-only broker
    refusing version 5) gets one more try with MQTT 3.1.1. Raises what connecting raised, or TimeoutError."""
    for version in (MQTTv50, MQTTv311):
        lost.clear()
        attempt = asyncio.ensure_future(client.connect(host, port, ssl=tls, keepalive=30, version=version))
        dropped = asyncio.ensure_future(lost.wait())
        done, _pending = await asyncio.wait({attempt, dropped}, timeout=TIMEOUT_S,
                                            return_when=asyncio.FIRST_COMPLETED)
        lost_early = dropped in done
        dropped.cancel()
        if lost_early and attempt not in done:
            # A refusing broker sends CONNACK and closes at once; let connect() finish reporting the refusal.
            done, _pending = await asyncio.wait({attempt}, timeout=1.0)
        if attempt in done:
            attempt.result()
            return
        attempt.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await attempt
        if not lost_early:
            raise TimeoutError(f"no CONNACK within {TIMEOUT_S:.0f} s")
    raise ConnectionError("the broker closed the connection before accepting it")


async def send(msg: AlertEventMessage, config: dict[str, Any], secrets: dict[str, str], *, delivery_id: str,
               http: httpx.AsyncClient, allow: tuple[str, ...]) -> SendResult:
    """Publish one message. An unreachable broker or a missing acknowledgement is retried; a refused CONNACK
    (bad credentials, not authorised) or a topic that renders empty is not."""
    host, port, tls = _broker(config["url"])
    addresses = check_host(host, allow, field="config.url", port=port)  # DNS may have changed since saving
    topic = render_topic(msg, config)
    if not topic.strip("/ ") or len(topic.encode()) > MAX_TOPIC_BYTES:
        return SendResult(delivered=False, retryable=False,
                          error=f"the topic template rendered an empty or too long topic: {topic[:100]!r}")
    storage = PersistentStorage()  # holds QoS 1/2 messages until the broker acknowledges them
    client = gmqtt.Client(f"{config.get('client_id_prefix', DEFAULT_CLIENT_ID_PREFIX)}{token.token_hex(6)}",
                          clean_session=True, persistent_storage=storage)
    client.set_config({"reconnect_retries": 0})  # one connection per send: gmqtt must never reconnect behind us
    if config.get("username"):
        client.set_auth_credentials(config["username"], secrets.get("password"))
    lost = asyncio.Event()
    client.on_disconnect = lambda *_args: lost.set()
    qos = int(config.get("qos", 1))
    # Plain MQTT connects to the address the SSRF check approved. gmqtt takes the TLS server name from what it
    # connects to, so mqtts:// connects by name and the certificate is checked against `host`.
    target, tls_arg = (host, client_context(config)) if tls else (addresses[0], False)
    try:
        try:
            await _connect(client, lost, target, port, tls_arg)
        except gmqtt.MQTTConnectError as exc:
            code = getattr(exc, "_code", None)
            return SendResult(delivered=False, status_code=code, retryable=code in _TRANSIENT_CONNACK,
                              error=f"the broker refused the connection: {exc}")
        except ssl.SSLCertVerificationError as exc:
            return SendResult(delivered=False, retryable=False, error=f"TLS certificate not trusted: {exc}"[:300])
        except (OSError, TimeoutError) as exc:
            return SendResult(delivered=False, retryable=True,
                              error=f"cannot reach the broker: {type(exc).__name__}: {exc}"[:300])
        client.publish(topic, render_body(msg), qos=qos, retain=bool(config.get("retain")),
                       content_type="application/json", user_property=[("pulse-delivery", delivery_id)])
        if qos > 0:
            acked = asyncio.ensure_future(storage.wait_empty())
            dropped = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({acked, dropped}, timeout=TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
            finally:
                dropped.cancel()
            if not acked.done():
                acked.cancel()
                why = "closed the connection" if lost.is_set() else f"did not acknowledge within {TIMEOUT_S:.0f} s"
                return SendResult(delivered=False, retryable=True, error=f"the broker {why}")
        return SendResult(delivered=True)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), TIMEOUT_S)
