"""SNMP notifications: one SNMPv2c or SNMPv3 trap or inform per alert change, carrying the varbinds of
docs/snmp.md (objects of docs/PULSE-MIB.txt) under the channel's enterprise prefix.

Each send builds its own pysnmp engine, resolves the receiver through the SSRF check and sends to the address that
check approved (never to a second DNS answer). A trap is fire-and-forget UDP: it is delivered once the datagram
has left this host. An inform waits for the receiver's acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets as token
import time
from typing import Any

import httpx
from pysnmp.carrier.error import CarrierError
from pysnmp.entity import config as lcd
from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    Udp6TransportTarget,
    UdpTransportTarget,
    UsmUserData,
    send_notification,
)
from pysnmp.proto import errind
from pysnmp.proto.rfc1902 import Integer32, ObjectIdentifier, OctetString, TimeTicks

from pulse.errors import ValidationError
from pulse.notify.schemas import AlertEventMessage, SendResult
from pulse.notify.ssrf import check_host
from pulse.notify.templates import variables

DEFAULT_ENTERPRISE_OID = "1.3.6.1.4.1.99999.1"  # placeholder: 99999 is no one's enterprise number; set your own
DEFAULT_PORT = 162
DEFAULT_TIMEOUT_S = 3.0
DEFAULT_RETRIES = 2
MAX_TEXT_BYTES = 1024  # PulseText in PULSE-MIB: OCTET STRING (SIZE (0..1024)), UTF-8

SYS_UPTIME_OID = "1.3.6.1.2.1.1.3.0"
SNMP_TRAP_OID_OID = "1.3.6.1.6.3.1.1.4.1.0"

# Notification types: {prefix}.0.{n}, one per event kind (PULSE-MIB pulseAlertOpened … pulseAlertFlapping).
NOTIFICATIONS: dict[str, int] = {"OPENED": 1, "UPDATED": 2, "ACKNOWLEDGED": 3, "ESCALATED": 4, "CLOSED": 5,
                                 "FLAPPING": 6}
OTHER_EVENT_NOTIFICATION = 7  # pulseAlertChanged: an event kind newer than this list
# Objects: {prefix}.1.{arc}, sent as scalar instances {prefix}.1.{arc}.0, in this order after sysUpTime.0 and
# snmpTrapOID.0. (arc, PULSE-MIB name, template variable); severity is an Integer32, every other value text.
OBJECTS: tuple[tuple[int, str, str], ...] = (
    (1, "pulseAlertId", "alert_id"),
    (2, "pulseEventKind", "event"),
    (3, "pulseSeverity", "severity"),
    (4, "pulseSeverityName", "severity_name"),
    (5, "pulseAlertType", "alert_type"),
    (6, "pulseAlertStatus", "status"),
    (7, "pulseAlertTitle", "title"),
    (8, "pulseDeviceId", "device_id"),
    (9, "pulseSiteId", "site_id"),
    (10, "pulseRuleId", "rule_id"),
    (11, "pulseMetric", "metric"),
    (12, "pulseValue", "value"),
    (13, "pulseTenantId", "tenant_id"),
    (14, "pulseOccurredAt", "occurred_at"),
    (15, "pulseAlertLink", "link"),
    (16, "pulseAlertSummary", "summary"),
)

# Protocol names follow net-snmp's: AES192/AES256 are the Blumenthal draft (net-snmp's AES-192/AES-256),
# AES192C/AES256C the Reeder key extension many Cisco devices use (net-snmp's AES-192-C/AES-256-C).
AUTH_PROTOCOLS: dict[str, Any] = {
    "none": lcd.USM_AUTH_NONE, "MD5": lcd.USM_AUTH_HMAC96_MD5, "SHA": lcd.USM_AUTH_HMAC96_SHA,
    "SHA224": lcd.USM_AUTH_HMAC128_SHA224, "SHA256": lcd.USM_AUTH_HMAC192_SHA256,
    "SHA384": lcd.USM_AUTH_HMAC256_SHA384, "SHA512": lcd.USM_AUTH_HMAC384_SHA512,
}
PRIV_PROTOCOLS: dict[str, Any] = {
    "none": lcd.USM_PRIV_NONE, "DES": lcd.USM_PRIV_CBC56_DES, "3DES": lcd.USM_PRIV_CBC168_3DES,
    "AES128": lcd.USM_PRIV_CFB128_AES, "AES192": lcd.USM_PRIV_CFB192_AES_BLUMENTHAL,
    "AES256": lcd.USM_PRIV_CFB256_AES_BLUMENTHAL, "AES192C": lcd.USM_PRIV_CFB192_AES,
    "AES256C": lcd.USM_PRIV_CFB256_AES,
}
DEFAULT_AUTH_PROTOCOL = "SHA256"
DEFAULT_PRIV_PROTOCOL = "AES128"
MIN_KEY_CHARS = 8  # RFC 3414: a USM pass phrase is at least 8 characters

# Answers to an inform that no retry can fix: the receiver does not know this user or these keys.
_CONFIG_ERRORS = (errind.UnknownUserName, errind.WrongDigest, errind.AuthenticationFailure,
                  errind.AuthenticationError, errind.DecryptionError, errind.UnsupportedSecurityLevel,
                  errind.UnsupportedAuthProtocol, errind.UnsupportedPrivProtocol, errind.UnknownSecurityName)
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]{0,9})){1,63}$")
_HEX = re.compile(r"^(?:[0-9a-f]{2})+$")
_USERNAME = re.compile(r"^[\x21-\x7e]{1,32}$")
_STARTED = time.monotonic()


def _choice(config: dict[str, Any], key: str, options: dict[str, Any], default: str) -> str:
    value = config.get(key, default)
    names = {name.lower(): name for name in options}
    if not isinstance(value, str) or value.lower() not in names:
        raise ValidationError(f"must be one of {', '.join(options)}", field=f"config.{key}")
    return names[value.lower()]


def _enterprise_oid(value: Any) -> str:
    oid = value.strip().lstrip(".") if isinstance(value, str) else ""
    if not _OID.match(oid) or any(int(arc) > 2**32 - 1 for arc in oid.split(".")):
        raise ValidationError("must be a dotted OID such as 1.3.6.1.4.1.<your enterprise number>.1",
                              field="config.enterprise_oid")
    return oid


def _engine_id(value: Any, enterprise_oid: str) -> str:
    """A configured engine id (hex, 5-32 octets per RFC 3411), or a new random one in the RFC 3411 format."""
    if value is None:
        arcs = enterprise_oid.split(".")
        number = int(arcs[6]) if arcs[:6] == ["1", "3", "6", "1", "4", "1"] and len(arcs) > 6 else 99999
        return f"{0x80000000 | (number & 0x7FFFFFFF):08x}05{token.token_hex(8)}"
    text = value.lower().removeprefix("0x").replace(":", "") if isinstance(value, str) else ""
    if not _HEX.match(text) or not 5 <= len(text) // 2 <= 32:
        raise ValidationError("must be 5-32 octets in hex, e.g. 80001f8880c71100000a0b0c0d",
                              field="config.engine_id")
    return text


def _number(config: dict[str, Any], key: str, default: float, low: float, high: float, *,
            integer: bool = False) -> Any:
    value = config.get(key, default)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        raise ValidationError(f"must be {'an integer' if integer else 'a number'} from {low:g} to {high:g}",
                              field=f"config.{key}")
    return value


def validate_config(config: dict[str, Any], secrets: dict[str, str], allow: tuple[str, ...]) -> dict[str, Any]:
    """Check an SNMP channel's settings and secrets; errors name the field. An SNMPv3 channel saved without an
    engine_id gets a generated one, stored in its config so the receiver can be told it."""
    host = config.get("host")
    if not isinstance(host, str) or not host.strip("[] ") or len(host) > 253:
        raise ValidationError("the trap receiver's host name or IP address is required", field="config.host")
    host = host.strip().strip("[]")
    port = _number(config, "port", DEFAULT_PORT, 1, 65535, integer=True)
    check_host(host, allow, field="config.host", port=port)
    version = config.get("version", "2c")
    if version not in ("2c", "3"):
        raise ValidationError('must be "2c" or "3"', field="config.version")
    mode = config.get("mode", "trap")
    if mode not in ("trap", "inform"):
        raise ValidationError('must be "trap" or "inform"', field="config.mode")
    enterprise_oid = _enterprise_oid(config.get("enterprise_oid", DEFAULT_ENTERPRISE_OID))
    clean: dict[str, Any] = {
        "host": host, "port": port, "version": version, "mode": mode, "enterprise_oid": enterprise_oid,
        "timeout_s": float(_number(config, "timeout_s", DEFAULT_TIMEOUT_S, 0.5, 30)),
        "retries": _number(config, "retries", DEFAULT_RETRIES, 0, 5, integer=True),
    }
    if version == "2c":
        for key in ("username", "auth_protocol", "priv_protocol", "engine_id"):
            if key in config:
                raise ValidationError("applies to SNMP version 3 only", field=f"config.{key}")
        community = secrets.get("community")
        if not isinstance(community, str) or not 1 <= len(community) <= 255:
            raise ValidationError("a community string (1-255 characters) is required", field="secrets.community")
        return clean
    username = config.get("username")
    if not isinstance(username, str) or not _USERNAME.match(username):
        raise ValidationError("an SNMPv3 user name of 1-32 printable characters without spaces is required",
                              field="config.username")
    auth = _choice(config, "auth_protocol", AUTH_PROTOCOLS, DEFAULT_AUTH_PROTOCOL)
    priv = _choice(config, "priv_protocol", PRIV_PROTOCOLS, DEFAULT_PRIV_PROTOCOL if auth != "none" else "none")
    if auth == "none" and priv != "none":
        raise ValidationError("privacy needs authentication: set auth_protocol too", field="config.priv_protocol")
    if "community" in secrets:
        raise ValidationError("SNMP version 3 uses a user and keys, not a community", field="secrets.community")
    for protocol, key in ((auth, "auth_key"), (priv, "priv_key")):
        value = secrets.get(key)
        if protocol == "none" and value is not None:
            raise ValidationError(f"not used while {key[:4]}_protocol is none", field=f"secrets.{key}")
        if protocol != "none" and (not isinstance(value, str) or len(value) < MIN_KEY_CHARS):
            raise ValidationError(f"a {protocol} pass phrase of at least {MIN_KEY_CHARS} characters is required",
                                  field=f"secrets.{key}")
    clean.update(username=username, auth_protocol=auth, priv_protocol=priv,
                 engine_id=_engine_id(config.get("engine_id"), enterprise_oid))
    return clean


def notification_oid(msg: AlertEventMessage, enterprise_oid: str) -> str:
    """The snmpTrapOID.0 value: {prefix}.0.{n} for the event kind (docs/snmp.md)."""
    return f"{enterprise_oid}.0.{NOTIFICATIONS.get(msg.event_kind, OTHER_EVENT_NOTIFICATION)}"


def _text(value: str) -> bytes:
    """UTF-8, cut to MAX_TEXT_BYTES on a character boundary."""
    return value.encode()[:MAX_TEXT_BYTES].decode(errors="ignore").encode()


def varbinds(msg: AlertEventMessage, enterprise_oid: str) -> list[tuple[str, Any]]:
    """The notification's varbinds in the documented order: sysUpTime.0, snmpTrapOID.0, then OBJECTS."""
    uptime = int((time.monotonic() - _STARTED) * 100) % 2**32
    values = variables(msg)
    binds: list[tuple[str, Any]] = [(SYS_UPTIME_OID, TimeTicks(uptime)),
                                    (SNMP_TRAP_OID_OID, ObjectIdentifier(notification_oid(msg, enterprise_oid)))]
    for arc, _name, variable in OBJECTS:
        value = Integer32(msg.severity) if variable == "severity" else OctetString(_text(values[variable]))
        binds.append((f"{enterprise_oid}.1.{arc}.0", value))
    return binds


def _auth(config: dict[str, Any], secrets: dict[str, str]) -> CommunityData | UsmUserData:
    if config.get("version", "2c") == "2c":
        return CommunityData(secrets["community"], mpModel=1)  # noqa: S508 - v2c is the operator's choice (docs/snmp.md)
    auth, priv = config.get("auth_protocol", "none"), config.get("priv_protocol", "none")
    return UsmUserData(config["username"],
                       authKey=secrets.get("auth_key") if auth != "none" else None,
                       privKey=secrets.get("priv_key") if priv != "none" else None,
                       authProtocol=AUTH_PROTOCOLS[auth], privProtocol=PRIV_PROTOCOLS[priv])


def _engine(config: dict[str, Any]) -> SnmpEngine:
    engine_id = config.get("engine_id")
    return SnmpEngine(OctetString(hexValue=engine_id)) if engine_id else SnmpEngine()


async def send(msg: AlertEventMessage, config: dict[str, Any], secrets: dict[str, str], *, delivery_id: str,
               http: httpx.AsyncClient, allow: tuple[str, ...]) -> SendResult:
    """Send one trap or inform. A datagram that cannot leave this host, or an inform nobody acknowledges, is
    retried; an inform the receiver answers with an authentication error (unknown user, wrong keys) is not."""
    host, port = config["host"], int(config.get("port", DEFAULT_PORT))
    # DNS may have changed since the channel was saved; send to the address this check approves.
    addresses = await asyncio.to_thread(check_host, host, allow, field="config.host", port=port)
    address = next((a for a in addresses if ":" not in a), addresses[0])
    mode = config.get("mode", "trap")
    timeout_s, retries = float(config.get("timeout_s", DEFAULT_TIMEOUT_S)), int(config.get("retries", DEFAULT_RETRIES))
    where = f"{host}:{port}" if address == host else f"{host} ({address}) port {port}"
    engine = await asyncio.to_thread(_engine, config)  # builds its MIB tables: ~0.1 s of CPU off the event loop
    send_errors: list[Exception] = []
    try:
        target_type = Udp6TransportTarget if ":" in address else UdpTransportTarget
        target = await target_type.create((address, port), timeout=timeout_s, retries=retries)
        # Open the UDP socket ourselves so errors the kernel reports on sending reach this send (asyncio hands
        # them to error_received, which pysnmp otherwise ignores).
        transport = target.open_client_mode()
        transport.error_received = send_errors.append
        lcd.add_transport(engine, target.TRANSPORT_DOMAIN, transport)
        error_indication, error_status, error_index, _ = await send_notification(
            engine, _auth(config, secrets), target, ContextData(), mode,
            *(ObjectType(ObjectIdentity(oid), value) for oid, value in varbinds(msg, config["enterprise_oid"])),
            lookupMib=False)
        # A trap's future resolves at once; the datagram leaves when the socket is open (pysnmp queues it).
        opening = getattr(transport, "_lport", None)
        if isinstance(opening, asyncio.Future):
            await asyncio.wait_for(asyncio.shield(opening), timeout_s)
        await asyncio.sleep(0)  # let asyncio report a failed sendto to error_received
    except (OSError, TimeoutError, CarrierError) as exc:
        return SendResult(delivered=False, retryable=True,
                          error=f"cannot send the SNMP {mode} to {where}: {type(exc).__name__}: {exc}"[:300])
    except PySnmpError as exc:
        return SendResult(delivered=False, retryable=False, error=f"SNMP {mode} not sent: {exc}"[:300])
    finally:
        with contextlib.suppress(Exception):
            engine.close_dispatcher()
    if send_errors:
        refused = send_errors[0]
        return SendResult(delivered=False, retryable=True,
                          error=f"cannot send the SNMP {mode} to {where}: {type(refused).__name__}: {refused}"[:300])
    if error_indication:
        if isinstance(error_indication, errind.RequestTimedOut):
            return SendResult(delivered=False, retryable=True, error=(
                f"no acknowledgement of the inform from {where} after {retries + 1} tries of {timeout_s:g} s "
                f"(receiver down, or it does not accept this community or user)"))
        return SendResult(delivered=False, retryable=not isinstance(error_indication, _CONFIG_ERRORS),
                          error=f"SNMP {mode} to {where} failed: {error_indication}"[:300])
    if error_status:
        return SendResult(delivered=False, retryable=False, error=(
            f"the receiver at {where} answered the inform with {error_status.prettyPrint()} "
            f"at varbind {error_index}")[:300])
    return SendResult(delivered=True)
