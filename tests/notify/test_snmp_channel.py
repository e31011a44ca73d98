"""SNMP channel against a real snmptrapd on loopback: v2c and v3 (authPriv) traps arrive with the documented
varbinds, informs are acknowledged or refused, a wrong community never reaches the receiver's log, validation
names the field, docs/PULSE-MIB.txt matches what is sent, and the delivery pipeline sends a trap end to end."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.errors import ValidationError
from pulse.notify.channels import snmp
from pulse.notify.routing import create_route
from pulse.notify.schemas import AlertEventMessage, SendResult
from pulse.notify.service import create_channel
from pulse.notify.worker import Deliverer
from pulse.settings import Settings
from tests.conftest import make_device, make_tenant
from tests.notify.test_delivery import FAST, _alert, _attempts, _settle_job

LOOPBACK = ("loopback",)
COMMUNITY = "pulse-traps-42"
USER, AUTH_KEY, PRIV_KEY = "pulse-v3", "auth-pass-phrase-1", "priv-pass-phrase-2"
ENGINE_ID = "80001f8880a1b2c3d4e5f60708"  # the engine id Pulse's v3 traps carry; the receiver's user is keyed to it
PREFIX = "1.3.6.1.4.1.99999.1"  # the documented default enterprise_oid
SNMPTRAPD = shutil.which("snmptrapd") or shutil.which("snmptrapd", path="/usr/sbin:/usr/local/sbin")
MIB = Path(__file__).resolve().parents[2] / "docs" / "PULSE-MIB.txt"

# Documented varbinds (docs/snmp.md): name -> OID under the default prefix.
OIDS = {
    "sysUpTime": "1.3.6.1.2.1.1.3.0", "snmpTrapOID": "1.3.6.1.6.3.1.1.4.1.0",
    "alert_id": f"{PREFIX}.1.1.0", "event": f"{PREFIX}.1.2.0", "severity": f"{PREFIX}.1.3.0",
    "severity_name": f"{PREFIX}.1.4.0", "alert_type": f"{PREFIX}.1.5.0", "status": f"{PREFIX}.1.6.0",
    "title": f"{PREFIX}.1.7.0", "device_id": f"{PREFIX}.1.8.0", "site_id": f"{PREFIX}.1.9.0",
    "rule_id": f"{PREFIX}.1.10.0", "metric": f"{PREFIX}.1.11.0", "value": f"{PREFIX}.1.12.0",
    "tenant_id": f"{PREFIX}.1.13.0", "occurred_at": f"{PREFIX}.1.14.0", "link": f"{PREFIX}.1.15.0",
    "summary": f"{PREFIX}.1.16.0",
}


@dataclass
class Notification:
    """One notification as snmptrapd logged it: SNMP version (1 = v2c, 3 = v3), community or user, varbinds."""

    version: str
    security: str
    varbinds: list[tuple[str, Any]]

    def named(self) -> dict[str, Any]:
        by_oid = dict(self.varbinds)
        return {name: by_oid.get(oid) for name, oid in OIDS.items()}


_VARBIND = re.compile(r"^\.([0-9.]+) = (?:([A-Za-z][A-Za-z-]*): )?(.*)$")


def _value(kind: str | None, raw: str) -> Any:
    if kind is None:
        return "" if raw == '""' else raw
    if kind == "STRING":
        return re.sub(r'\\(["\\])', r"\1", raw[1:-1])
    if kind == "Hex-STRING":  # net-snmp shows non-ASCII (UTF-8) text in hex when no MIB gives a display hint
        return bytes.fromhex(raw.replace(" ", "")).decode()
    if kind == "INTEGER":
        return int(raw)
    if kind == "OID":
        return raw.lstrip(".")
    if kind == "Timeticks":
        return int(raw[1:raw.index(")")])
    return raw


class Trapd:
    """A private snmptrapd on a free loopback UDP port, logging every accepted notification to a file."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_udp_port()
        self.log = tmp / "snmptrapd.log"
        conf = tmp / "snmptrapd.conf"
        conf.write_text(
            f"authCommunity log,execute,net {COMMUNITY}\n"
            f"createUser -e 0x{ENGINE_ID} {USER} SHA {AUTH_KEY} AES {PRIV_KEY}\n"  # for traps from Pulse's engine
            f"createUser {USER} SHA {AUTH_KEY} AES {PRIV_KEY}\n"  # for informs: snmptrapd's own engine
            f"authUser log {USER} priv\n"
            "format2 NOTIFICATION %s %u\\n%V\\n%v\\nEND\\n\n")
        env = {**os.environ, "SNMP_PERSISTENT_DIR": str(tmp / "persist"), "MIBS": "", "HOME": str(tmp)}
        self.out = self.log.open("wb")
        assert SNMPTRAPD is not None
        self.proc = subprocess.Popen(
            [SNMPTRAPD, "-f", "-Lo", "-n", "-On", "-C", "-c", str(conf), "-M", str(tmp),
             f"udp:127.0.0.1:{self.port}"], stdout=self.out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 10
        while "NET-SNMP version" not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"snmptrapd did not start: {self.text()}")
            time.sleep(0.05)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def notifications(self) -> list[Notification]:
        found = []
        for block in re.findall(r"^NOTIFICATION (.*?)\nEND$", self.text(), re.MULTILINE | re.DOTALL):
            head, *lines = block.split("\n")
            version, _, security = head.partition(" ")
            raw: list[list[Any]] = []
            for line in lines:
                match = _VARBIND.match(line)
                if match:
                    raw.append([match[1], match[2], match[3]])
                elif raw:  # net-snmp wraps a long Hex-STRING (or a string with a line break) onto more lines
                    raw[-1][2] += ("" if raw[-1][1] == "Hex-STRING" else "\n") + line
            found.append(Notification(version, security, [(oid, _value(kind, value)) for oid, kind, value in raw]))
        return found

    async def wait(self, count: int = 1, timeout: float = 10.0) -> list[Notification]:
        deadline = time.monotonic() + timeout
        while len(self.notifications()) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.notifications()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.out.close()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def trapd(tmp_path: Path) -> Iterator[Trapd]:
    if SNMPTRAPD is None:
        pytest.skip("snmptrapd is not installed: apt-get install snmptrapd (scripts/services.sh installs it)")
    receiver = Trapd(tmp_path)
    try:
        yield receiver
    finally:
        receiver.stop()


def _message(**fields: Any) -> AlertEventMessage:
    occurred = datetime(2026, 11, 23, 3, 58, 13, 120000, tzinfo=UTC)
    values: dict[str, Any] = dict(
        tenant_id="acme", alert_id="0b6f7c1e-2a41-4d3e-9f0a-5c8e2d1b7a90", event_id=7, event_kind="OPENED",
        fingerprint="f", alert_type="THRESHOLD", severity=4, status="OPEN", title="Kühlraum zu warm",
        summary='temp_c 31.5 > 30 "door open?"', device_id="freezer-7", site_id="store-12", rule_id="rule-9",
        metric="temp_c", value=31.5, opened_at=occurred, occurred_at=occurred,
        links={"alert": "https://pulse.example.com/alerts/0b6f7c1e"})
    return AlertEventMessage(**{**values, **fields})


async def _send(config: dict[str, Any], secrets_: dict[str, str], msg: AlertEventMessage | None = None, *,
                allow: tuple[str, ...] = LOOPBACK) -> SendResult:
    clean = snmp.validate_config(config, secrets_, LOOPBACK) if allow == LOOPBACK else config
    async with httpx.AsyncClient() as http:
        return await snmp.send(msg or _message(), clean, secrets_, delivery_id="7:route-1", http=http, allow=allow)


def _v3(port: int, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "version": "3", "username": USER, "auth_protocol": "SHA",
            "priv_protocol": "AES128", "engine_id": ENGINE_ID, **extra}


V3_KEYS = {"auth_key": AUTH_KEY, "priv_key": PRIV_KEY}
EXPECTED = {
    "snmpTrapOID": f"{PREFIX}.0.1", "alert_id": "0b6f7c1e-2a41-4d3e-9f0a-5c8e2d1b7a90", "event": "OPENED",
    "severity": 4, "severity_name": "high", "alert_type": "THRESHOLD", "status": "OPEN",
    "title": "Kühlraum zu warm", "device_id": "freezer-7", "site_id": "store-12", "rule_id": "rule-9",
    "metric": "temp_c", "value": "31.5", "tenant_id": "acme", "occurred_at": "2026-11-23T03:58:13.120000+00:00",
    "link": "https://pulse.example.com/alerts/0b6f7c1e", "summary": 'temp_c 31.5 > 30 "door open?"',
}


async def test_v2c_trap_arrives_with_the_documented_varbinds(trapd: Trapd) -> None:
    result = await _send({"host": "127.0.0.1", "port": trapd.port, "version": "2c"}, {"community": COMMUNITY})
    assert result.delivered and result.error is None
    [got] = await trapd.wait()
    assert (got.version, got.security) == ("1", COMMUNITY)
    assert [oid for oid, _ in got.varbinds] == list(OIDS.values()), "documented OIDs, in the documented order"
    named = got.named()
    assert isinstance(named.pop("sysUpTime"), int)
    assert named == EXPECTED


async def test_v3_authpriv_trap_arrives_from_the_configured_engine(trapd: Trapd) -> None:
    msg = _message(event_kind="CLOSED", status="CLOSED", severity=5, device_id=None, value=None)
    result = await _send(_v3(trapd.port), V3_KEYS, msg)
    assert result.delivered
    [got] = await trapd.wait()
    assert (got.version, got.security) == ("3", USER)
    named = got.named()
    assert named["snmpTrapOID"] == f"{PREFIX}.0.5" and named["event"] == "CLOSED" and named["status"] == "CLOSED"
    assert named["severity"] == 5 and named["severity_name"] == "critical"
    assert named["device_id"] == "" and named["value"] == "", "absent values are empty strings"
    assert named["title"] == "Kühlraum zu warm" and named["alert_id"] == EXPECTED["alert_id"]


async def test_v3_trap_with_a_wrong_privacy_key_is_not_logged(trapd: Trapd) -> None:
    assert (await _send(_v3(trapd.port), {**V3_KEYS, "priv_key": "not-the-priv-key"})).delivered  # fire and forget
    assert (await _send(_v3(trapd.port), V3_KEYS, _message(alert_id="the-right-one"))).delivered
    await trapd.wait()
    await asyncio.sleep(0.3)  # give a wrongly accepted first trap every chance to show up
    assert [n.named()["alert_id"] for n in trapd.notifications()] == ["the-right-one"]


async def test_custom_enterprise_prefix_moves_every_pulse_oid(trapd: Trapd) -> None:
    config = {"host": "127.0.0.1", "port": trapd.port, "enterprise_oid": "1.3.6.1.4.1.424242.7"}
    assert (await _send(config, {"community": COMMUNITY}, _message(event_kind="ACKNOWLEDGED"))).delivered
    [got] = await trapd.wait()
    oids = dict(got.varbinds)
    assert oids[OIDS["snmpTrapOID"]] == "1.3.6.1.4.1.424242.7.0.3"
    assert oids["1.3.6.1.4.1.424242.7.1.1.0"] == EXPECTED["alert_id"]
    assert not any(oid.startswith(PREFIX) for oid in oids)


async def test_v2c_inform_is_acknowledged(trapd: Trapd) -> None:
    result = await _send({"host": "127.0.0.1", "port": trapd.port, "mode": "inform", "timeout_s": 2, "retries": 1},
                         {"community": COMMUNITY})
    assert result.delivered and result.error is None
    [got] = await trapd.wait()
    assert got.named()["alert_id"] == EXPECTED["alert_id"]


async def test_v3_inform_is_acknowledged_and_a_wrong_key_is_not_retried(trapd: Trapd) -> None:
    config = _v3(trapd.port, mode="inform", timeout_s=2, retries=1)
    assert (await _send(config, V3_KEYS)).delivered
    wrong = await _send(config, {**V3_KEYS, "auth_key": "not-the-auth-key"})
    assert not wrong.delivered and not wrong.retryable and "digest" in (wrong.error or "").lower()
    unknown = await _send({**config, "username": "someone-else"}, V3_KEYS)
    assert not unknown.delivered and not unknown.retryable and "user" in (unknown.error or "").lower()
    assert len(await trapd.wait()) == 1


async def test_wrong_community_is_dropped_by_the_receiver(trapd: Trapd) -> None:
    config = {"host": "127.0.0.1", "port": trapd.port}
    assert (await _send(config, {"community": "guessed"}, _message(alert_id="wrong-community"))).delivered
    inform = await _send({**config, "mode": "inform", "timeout_s": 1, "retries": 0}, {"community": "guessed"})
    assert not inform.delivered and inform.retryable and "no acknowledgement" in (inform.error or "")
    assert (await _send(config, {"community": COMMUNITY}, _message(alert_id="right-community"))).delivered
    await trapd.wait()
    await asyncio.sleep(0.3)
    assert [n.named()["alert_id"] for n in trapd.notifications()] == ["right-community"]
    assert "guessed" not in trapd.text()


async def test_inform_nobody_answers_is_retryable() -> None:
    result = await _send({"host": "127.0.0.1", "port": _free_udp_port(), "mode": "inform", "timeout_s": 0.5,
                          "retries": 0}, {"community": COMMUNITY})
    assert not result.delivered and result.retryable and "no acknowledgement" in (result.error or "")


async def test_trap_the_kernel_refuses_to_send_is_retryable() -> None:
    # The limited broadcast address without SO_BROADCAST: sendto fails locally (EACCES, or ENETUNREACH).
    config = snmp.validate_config({"host": "127.0.0.1"}, {"community": COMMUNITY}, LOOPBACK)
    result = await _send({**config, "host": "255.255.255.255", "port": 162}, {"community": COMMUNITY},
                         allow=("reserved",))
    assert not result.delivered and result.retryable and "cannot send the SNMP trap" in (result.error or "")


@pytest.mark.parametrize(("config", "secrets_", "field"), [
    ({}, {"community": COMMUNITY}, "config.host"),
    ({"host": "10.1.2.3"}, {"community": COMMUNITY}, "config.host"),
    ({"host": "169.254.169.254"}, {"community": COMMUNITY}, "config.host"),
    ({"host": "127.0.0.1", "port": 0}, {"community": COMMUNITY}, "config.port"),
    ({"host": "127.0.0.1", "port": "162"}, {"community": COMMUNITY}, "config.port"),
    ({"host": "127.0.0.1", "version": "1"}, {"community": COMMUNITY}, "config.version"),
    ({"host": "127.0.0.1", "mode": "notify"}, {"community": COMMUNITY}, "config.mode"),
    ({"host": "127.0.0.1", "enterprise_oid": "1.3.6.1.4.1.x"}, {"community": COMMUNITY}, "config.enterprise_oid"),
    ({"host": "127.0.0.1", "enterprise_oid": "enterprises.99999"}, {"community": COMMUNITY}, "config.enterprise_oid"),
    ({"host": "127.0.0.1", "enterprise_oid": "1.3.6.1.4.1.4294967296"}, {"community": COMMUNITY},
     "config.enterprise_oid"),
    ({"host": "127.0.0.1", "timeout_s": 0}, {"community": COMMUNITY}, "config.timeout_s"),
    ({"host": "127.0.0.1", "retries": 9}, {"community": COMMUNITY}, "config.retries"),
    ({"host": "127.0.0.1"}, {}, "secrets.community"),
    ({"host": "127.0.0.1", "username": USER}, {"community": COMMUNITY}, "config.username"),
    ({"host": "127.0.0.1", "version": "3"}, V3_KEYS, "config.username"),
    ({"host": "127.0.0.1", "version": "3", "username": USER, "auth_protocol": "SHA1024"}, V3_KEYS,
     "config.auth_protocol"),
    ({"host": "127.0.0.1", "version": "3", "username": USER, "priv_protocol": "ROT13"}, V3_KEYS,
     "config.priv_protocol"),
    ({"host": "127.0.0.1", "version": "3", "username": USER, "auth_protocol": "none", "priv_protocol": "AES128"},
     {"priv_key": PRIV_KEY}, "config.priv_protocol"),
    ({"host": "127.0.0.1", "version": "3", "username": USER}, {"auth_key": "short", "priv_key": PRIV_KEY},
     "secrets.auth_key"),
    ({"host": "127.0.0.1", "version": "3", "username": USER}, {"auth_key": AUTH_KEY}, "secrets.priv_key"),
    ({"host": "127.0.0.1", "version": "3", "username": USER, "engine_id": "0x1234"}, V3_KEYS, "config.engine_id"),
    ({"host": "127.0.0.1", "version": "3", "username": USER, "engine_id": "zz" * 8}, V3_KEYS, "config.engine_id"),
])
def test_validation_errors_name_the_field(config: dict[str, Any], secrets_: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        snmp.validate_config(config, secrets_, LOOPBACK)
    assert exc.value.field == field


def test_v3_defaults_and_a_generated_engine_id_kept_in_the_config() -> None:
    clean = snmp.validate_config({"host": "127.0.0.1", "version": "3", "username": USER}, V3_KEYS, LOOPBACK)
    assert (clean["auth_protocol"], clean["priv_protocol"], clean["mode"], clean["port"]) == \
        ("SHA256", "AES128", "trap", 162)
    assert re.fullmatch(r"8001869f05[0-9a-f]{16}", clean["engine_id"]), "RFC 3411 format under the prefix's PEN"
    again = snmp.validate_config(clean, V3_KEYS, LOOPBACK)
    assert again["engine_id"] == clean["engine_id"], "saving the channel again keeps its engine id"
    given = snmp.validate_config({**clean, "engine_id": "0x" + ENGINE_ID.upper()}, V3_KEYS, LOOPBACK)
    assert given["engine_id"] == ENGINE_ID
    no_auth = snmp.validate_config({"host": "127.0.0.1", "version": "3", "username": USER, "auth_protocol": "none"},
                                   {}, LOOPBACK)
    assert (no_auth["auth_protocol"], no_auth["priv_protocol"]) == ("none", "none")


def test_the_mib_defines_exactly_what_is_sent() -> None:
    mib = MIB.read_text()
    assert "::= { enterprises 99999 1 }" in mib and snmp.DEFAULT_ENTERPRISE_OID == "1.3.6.1.4.1.99999.1"
    objects = {name: int(arc) for name, arc in re.findall(
        r"^(\w+) OBJECT-TYPE\n.*?::= \{ pulseObjects (\d+) \}", mib, re.MULTILINE | re.DOTALL)}
    assert objects == {name: arc for arc, name, _variable in snmp.OBJECTS}
    notifications = re.findall(r"^(\w+) NOTIFICATION-TYPE\n\s+OBJECTS \{([^}]*)\}.*?::= \{ pulseNotifications (\d+) \}",
                               mib, re.MULTILINE | re.DOTALL)
    by_arc = {int(arc): name for name, _objects, arc in notifications}
    assert by_arc == {1: "pulseAlertOpened", 2: "pulseAlertUpdated", 3: "pulseAlertAcknowledged",
                      4: "pulseAlertEscalated", 5: "pulseAlertClosed", 6: "pulseAlertFlapping", 7: "pulseAlertChanged"}
    assert {kind: by_arc[n] for kind, n in snmp.NOTIFICATIONS.items()} == {
        kind: f"pulseAlert{kind.title()}" for kind in snmp.NOTIFICATIONS}
    sent_order = [name for _arc, name, _variable in snmp.OBJECTS]
    for name, listed, _arc in notifications:
        assert re.findall(r"\w+", listed) == sent_order, f"{name} lists the objects in the order they are sent"


async def test_alert_reaches_snmptrapd_through_the_deliverer(engine: AsyncEngine, settings: Settings,
                                                             trapd: Trapd) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        channel = await create_channel(conn, tenant.tenant_id, "noc", "SNMP", {
            "host": "127.0.0.1", "port": trapd.port, "version": "3", "username": USER, "auth_protocol": "SHA",
            "priv_protocol": "AES128", "engine_id": ENGINE_ID}, V3_KEYS, settings=settings)
        await create_route(conn, tenant.tenant_id, name="all", channel_id=channel)
    alert_id = await _alert(engine, tenant, device, severity=4)
    job = await _settle_job(engine, settings, tenant)
    assert job.status == "DELIVERED", job.last_error
    assert [a.outcome for a in await _attempts(engine, job.job_id)] == ["DELIVERED"]
    [got] = await trapd.wait()
    named = got.named()
    assert (got.version, got.security) == ("3", USER)
    assert named["snmpTrapOID"] == f"{PREFIX}.0.1" and named["event"] == "OPENED"
    assert (named["alert_id"], named["tenant_id"], named["device_id"]) == (alert_id, tenant.tenant_id, device)
    assert (named["severity"], named["severity_name"], named["title"]) == (4, "high", "too warm")
    assert (named["metric"], named["value"], named["alert_type"]) == ("temp_c", "31", "THRESHOLD")


async def test_unacknowledged_inform_keeps_the_job_pending_with_the_reason(engine: AsyncEngine,
                                                                            settings: Settings) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        channel = await create_channel(conn, tenant.tenant_id, "noc", "SNMP", {
            "host": "127.0.0.1", "port": _free_udp_port(), "mode": "inform", "timeout_s": 0.5, "retries": 0},
            {"community": COMMUNITY}, settings=settings)
        await create_route(conn, tenant.tenant_id, name="all", channel_id=channel)
    await _alert(engine, tenant, device)
    d = Deliverer(engine, settings, retry=FAST)
    try:
        await d.deliver_once()
    finally:
        await d.aclose()
    async with system_tx(engine) as conn:
        job = (await conn.execute(text("SELECT status, last_error FROM notification_jobs WHERE tenant_id = :t"),
                                  {"t": tenant.tenant_id})).one()
    assert job.status == "PENDING" and "no acknowledgement" in job.last_error
