"""Email channel against a real SMTP server (aiosmtpd) on loopback: plain relay, STARTTLS with AUTH, implicit TLS,
refusals and how each outcome is retried or not."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.errors import ValidationError
from pulse.notify.channels import email as email_channel
from pulse.notify.routing import create_route
from pulse.notify.schemas import AlertEventMessage, SendResult
from pulse.notify.service import create_channel
from pulse.settings import Settings
from tests.conftest import TenantRef, free_port, make_device, make_tenant
from tests.notify.test_delivery import _alert, _attempts, _settle_job

LOOPBACK = ("loopback",)


class Inbox:
    """An aiosmtpd handler that keeps what it accepts; `rcpt_reply` / `data_reply` script refusals."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []
        self.rcpt_reply: str | None = None
        self.data_reply: str | None = None

    async def handle_RCPT(self, _server: Any, _session: Any, envelope: Any, address: str, _options: Any) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


def _self_signed(tmp: Path) -> tuple[ssl.SSLContext, str]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and the certificate's PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pulse-test-smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    (tmp / "cert.pem").write_text(pem)
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return context, pem


def _authenticate(_server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"pulse", b"s3cret-pass")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 235 / 535 itself


@pytest.fixture
def plain_smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def tls_smtp(tmp_path: Path) -> Iterator[tuple[Inbox, int, str]]:
    """STARTTLS required, AUTH (user pulse, password s3cret-pass) required."""
    context, pem = _self_signed(tmp_path)
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            authenticator=_authenticate, auth_required=True)
    controller.start()
    yield inbox, port, pem
    controller.stop()


@pytest.fixture
def implicit_tls_smtp(tmp_path: Path) -> Iterator[tuple[Inbox, int, str]]:
    context, pem = _self_signed(tmp_path)
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    yield inbox, port, pem
    controller.stop()


def _message(title: str = "too warm") -> AlertEventMessage:
    now = dt.datetime.now(dt.UTC)
    return AlertEventMessage(tenant_id="acme", alert_id="a-1", event_id=7, event_kind="OPENED", fingerprint="f",
                             alert_type="THRESHOLD", severity=5, status="OPEN", title=title, device_id="freezer-7",
                             metric="temp_c", value=31, opened_at=now, occurred_at=now,
                             links={"alert": "https://pulse.example.com/app/alerts/a-1?x=1&y=2"})


async def _send(config: dict[str, Any], secrets: dict[str, str] | None = None, *, delivery_id: str = "7:route-1",
                title: str = "too warm") -> SendResult:
    clean = email_channel.validate_config(config, secrets or {}, LOOPBACK)
    async with httpx.AsyncClient() as http:
        return await email_channel.send(_message(title), clean, secrets or {}, delivery_id=delivery_id, http=http,
                                        allow=LOOPBACK)


def _parts(mail: Message) -> dict[str, str]:
    return {p.get_content_type(): p.get_payload(decode=True).decode()  # type: ignore[union-attr]
            for p in mail.walk() if not p.is_multipart()}


async def _setup(engine: AsyncEngine, settings: Settings, config: dict[str, Any],
                 secrets: dict[str, str]) -> tuple[TenantRef, str]:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        channel = await create_channel(conn, tenant.tenant_id, "mail", "EMAIL", config, secrets, settings=settings)
        await create_route(conn, tenant.tenant_id, name="all", channel_id=channel)
    return tenant, device


async def _settle(engine: AsyncEngine, settings: Settings, tenant: TenantRef) -> tuple[str, str | None, int]:
    """Run the deliverer until the tenant's one job is DELIVERED or DEAD; returns status, error, attempts made."""
    job = await _settle_job(engine, settings, tenant)
    return job.status, job.last_error, len(await _attempts(engine, job.job_id))


async def test_plain_local_relay_gets_subject_text_and_html(engine: AsyncEngine, settings: Settings,
                                                            plain_smtp: tuple[Inbox, int]) -> None:
    inbox, port = plain_smtp
    tenant, device = await _setup(engine, settings, {
        "host": "127.0.0.1", "port": port, "security": "none", "from": "pulse@example.com",
        "to": ["ops@example.com", "oncall@example.com"], "subject_template": "[{severity_name}] {device_id}: {title}"},
        {})
    await _alert(engine, tenant, device, severity=4)
    assert await _settle(engine, settings, tenant) == ("DELIVERED", None, 1)
    [(sender, recipients, mail)] = inbox.messages
    assert sender == "pulse@example.com" and recipients == ["ops@example.com", "oncall@example.com"]
    assert mail["Subject"] == f"[high] {device}: too warm"
    assert mail["From"] == "pulse@example.com" and mail["To"] == "ops@example.com, oncall@example.com"
    assert mail["X-Pulse-Event"] == "OPENED" and mail["X-Pulse-Delivery"]
    assert mail["Message-ID"].startswith("<pulse.") and mail["Message-ID"].endswith("@example.com>")
    assert mail.get_content_type() == "multipart/alternative"
    parts = _parts(mail)
    assert set(parts) == {"text/plain", "text/html"}
    assert f"Device: {device}" in parts["text/plain"] and "Metric: temp_c = 31" in parts["text/plain"]
    assert "<table>" in parts["text/html"] and "temp_c = 31" in parts["text/html"]


async def test_html_part_escapes_values_and_message_id_is_stable_per_delivery(
        plain_smtp: tuple[Inbox, int]) -> None:
    inbox, port = plain_smtp
    config = {"host": "127.0.0.1", "port": port, "security": "none", "from": "pulse@example.com",
              "to": ["ops@example.com"]}
    title = "<script>alert(1)</script> & co"
    for delivery_id in ("7:route-1", "7:route-1", "8:route-1"):
        assert (await _send(config, delivery_id=delivery_id, title=title)).delivered
    first, retried, other = (mail for _sender, _rcpt, mail in inbox.messages)
    assert first["Message-ID"] == retried["Message-ID"] != other["Message-ID"]
    assert first["X-Pulse-Delivery"] == "7:route-1"
    assert first["Subject"] == f"[critical] OPENED: {title}"
    html = _parts(first)["text/html"]
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert 'href="https://pulse.example.com/app/alerts/a-1?x=1&amp;y=2"' in html
    assert title in _parts(first)["text/plain"]


async def test_starttls_with_auth_delivers_and_a_wrong_password_is_dead_at_once(
        engine: AsyncEngine, settings: Settings, tls_smtp: tuple[Inbox, int, str]) -> None:
    inbox, port, pem = tls_smtp
    config = {"host": "127.0.0.1", "port": port, "security": "starttls", "from": "pulse@example.com",
              "to": ["ops@example.com"], "username": "pulse", "ca_pem": pem}
    tenant, device = await _setup(engine, settings, config, {"password": "s3cret-pass"})
    await _alert(engine, tenant, device)
    assert await _settle(engine, settings, tenant) == ("DELIVERED", None, 1)
    assert [rcpt for _sender, rcpt, _mail in inbox.messages] == [["ops@example.com"]]
    tenant, device = await _setup(engine, settings, config, {"password": "wrong"})
    await _alert(engine, tenant, device)
    status, error, attempts = await _settle(engine, settings, tenant)
    assert status == "DEAD" and attempts == 1  # not retried: a wrong password stays wrong
    assert error is not None and error.startswith("SMTP 535")
    assert len(inbox.messages) == 1


async def test_untrusted_certificate_is_refused_without_sending(engine: AsyncEngine, settings: Settings,
                                                                tls_smtp: tuple[Inbox, int, str]) -> None:
    inbox, port, _pem = tls_smtp
    tenant, device = await _setup(engine, settings, {
        "host": "127.0.0.1", "port": port, "security": "starttls", "from": "pulse@example.com",
        "to": ["ops@example.com"], "username": "pulse"}, {"password": "s3cret-pass"})
    await _alert(engine, tenant, device)
    status, error, attempts = await _settle(engine, settings, tenant)
    assert status == "DEAD" and attempts == 1 and error is not None and "certificate" in error
    assert inbox.messages == []


async def test_implicit_tls_trusts_the_configured_ca_or_explicitly_nothing(
        implicit_tls_smtp: tuple[Inbox, int, str]) -> None:
    inbox, port, pem = implicit_tls_smtp
    base = {"host": "127.0.0.1", "port": port, "security": "tls", "from": "pulse@example.com",
            "to": ["ops@example.com"]}
    refused = await _send(base)
    assert not refused.delivered and not refused.retryable and "certificate" in (refused.error or "")
    assert (await _send({**base, "ca_pem": pem})).delivered
    wrong_name = await _send({**base, "host": "localhost", "ca_pem": pem})  # the certificate names 127.0.0.1 only
    assert not wrong_name.delivered and not wrong_name.retryable and "certificate" in (wrong_name.error or "")
    assert (await _send({**base, "verify": False})).delivered
    assert len(inbox.messages) == 2


async def test_smtp_answers_decide_retry(plain_smtp: tuple[Inbox, int]) -> None:
    inbox, port = plain_smtp
    config = {"host": "127.0.0.1", "port": port, "security": "none", "from": "pulse@example.com",
              "to": ["ops@example.com"]}
    inbox.data_reply = "451 4.3.0 Try again later"
    busy = await _send(config)
    assert (busy.delivered, busy.retryable, busy.status_code) == (False, True, 451)
    inbox.data_reply, inbox.rcpt_reply = None, "550 5.1.1 No such user"
    unknown = await _send(config)
    assert (unknown.delivered, unknown.retryable, unknown.status_code) == (False, False, 550)
    closed = await _send({**config, "port": free_port()})
    assert not closed.delivered and closed.retryable
    assert inbox.messages == []


@pytest.mark.parametrize(("config", "secrets", "field"), [
    ({"host": "127.0.0.1", "security": "none", "from": "a@b.c"}, {}, "config.to"),
    ({"host": "127.0.0.1", "to": ["x"], "from": "a@b.c"}, {}, "config.to[0]"),
    ({"host": "127.0.0.1", "to": [f"u{i}@b.c" for i in range(51)], "from": "a@b.c"}, {}, "config.to"),
    ({"host": "127.0.0.1", "to": ["x@y.z"], "from": "Pulse <a@b.c>"}, {}, "config.from"),
    ({"host": "127.0.0.1", "to": ["x@y.z"], "from": "a@b.c", "username": "u"}, {}, "secrets.password"),
    ({"host": "127.0.0.1", "to": ["x@y.z"], "from": "a@b.c", "subject_template": "{nope}"}, {},
     "config.subject_template"),
    ({"host": "127.0.0.1", "to": ["x@y.z"], "from": "a@b.c", "body_template": "{title"}, {}, "config.body_template"),
    ({"host": "127.0.0.1", "to": ["x@y.z"], "from": "a@b.c", "security": "ssl"}, {}, "config.security"),
    ({"host": "127.0.0.1", "to": ["x@y.z"], "from": "a@b.c", "port": 0}, {}, "config.port"),
    ({"host": "127.0.0.1", "to": ["x@y.z"], "from": "a@b.c", "verify": "no"}, {}, "config.verify"),
    ({"host": "127.0.0.1", "to": ["x@y.z"], "from": "a@b.c", "ca_pem": "not a certificate"}, {}, "config.ca_pem"),
    ({"host": "10.0.0.1", "to": ["x@y.z"], "from": "a@b.c"}, {}, "config.host"),
    ({"host": "169.254.169.254", "to": ["x@y.z"], "from": "a@b.c"}, {}, "config.host"),
])
async def test_bad_email_settings_name_the_field(engine: AsyncEngine, settings: Settings, config: dict[str, Any],
                                                 secrets: dict[str, str], field: str) -> None:
    tenant = await make_tenant(engine)
    async with system_tx(engine) as conn:
        with pytest.raises(ValidationError) as caught:
            await create_channel(conn, tenant.tenant_id, "bad", "EMAIL", config, secrets, settings=settings)
    assert caught.value.field == field


def test_plain_smtp_is_refused_to_a_relay_off_this_host() -> None:
    config = {"host": "10.0.0.1", "security": "none", "to": ["x@y.z"], "from": "a@b.c"}
    with pytest.raises(ValidationError) as caught:
        email_channel.validate_config(config, {}, ("loopback", "private"))
    assert caught.value.field == "config.security"
    clean = email_channel.validate_config({**config, "security": "starttls"}, {}, ("loopback", "private"))
    assert clean["port"] == 587 and clean["subject_template"] and clean["body_template"]
