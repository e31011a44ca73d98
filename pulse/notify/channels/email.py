"""Email over SMTP: STARTTLS, implicit TLS or (loopback only) plain; optional AUTH; text and HTML bodies with a
templated subject.

The standard library's smtplib runs in a worker thread, one connection per message. It connects to the address
the SSRF check approved (not to a second DNS answer), while TLS still verifies the certificate against the host
name the tenant configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import ipaddress
import re
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import httpx

from pulse.errors import ValidationError
from pulse.notify.channels.tls import check_tls_settings, client_context
from pulse.notify.schemas import SEVERITY_NAMES, AlertEventMessage, SendResult
from pulse.notify.ssrf import check_host
from pulse.notify.templates import DEFAULT_BODY, DEFAULT_TITLE, check_template, render

SECURITY = ("starttls", "tls", "none")
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
TIMEOUT_S = 10.0
MAX_RECIPIENTS = 50
_ADDRESS = re.compile(r"^[^@\s<>,;\"()\[\]\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _address(value: Any, field: str) -> str:
    if not isinstance(value, str) or len(value) > 320 or not _ADDRESS.match(value) or ".." in value.split("@")[1]:
        raise ValidationError("must be an email address like ops@example.com", field=field)
    return value


def _all_loopback(addresses: list[str]) -> bool:
    return all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses)


def validate_config(config: dict[str, Any], secrets: dict[str, str], allow: tuple[str, ...]) -> dict[str, Any]:
    """Check an email channel's settings; errors name the field."""
    host = config.get("host")
    if not isinstance(host, str) or not host or len(host) > 253:
        raise ValidationError("the SMTP server's host name is required", field="config.host")
    security = config.get("security", "starttls")
    if security not in SECURITY:
        raise ValidationError(f"must be one of {', '.join(SECURITY)}", field="config.security")
    port = config.get("port", DEFAULT_PORTS[security])
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValidationError("must be a port number 1-65535", field="config.port")
    addresses = check_host(host, allow, field="config.host", port=port)
    if security == "none" and not _all_loopback(addresses):
        raise ValidationError("plain SMTP (no TLS) is only allowed to a relay on this host (loopback); "
                              "use starttls or tls", field="config.security")
    recipients = config.get("to")
    if not isinstance(recipients, list) or not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise ValidationError(f"must be a list of 1-{MAX_RECIPIENTS} addresses", field="config.to")
    tls_settings = check_tls_settings(config, peer="server")
    clean: dict[str, Any] = {
        "host": host, "port": port, "security": security, "from": _address(config.get("from"), "config.from"),
        "to": list(dict.fromkeys(_address(r, f"config.to[{i}]") for i, r in enumerate(recipients))),
        **tls_settings,
    }
    username = config.get("username")
    if username is not None:
        if not isinstance(username, str) or not 1 <= len(username) <= 256:
            raise ValidationError("must be 1-256 characters", field="config.username")
        if not secrets.get("password"):
            raise ValidationError("a password is required with a username", field="secrets.password")
        clean["username"] = username
    for name, default in (("subject_template", DEFAULT_TITLE), ("body_template", DEFAULT_BODY)):
        clean[name] = check_template(config.get(name) or default, field=f"config.{name}")
    return clean


def message_id(delivery_id: str, sender: str) -> str:
    """The same for every attempt of one delivery, so a receiving system can drop a retried duplicate."""
    local = re.sub(r"[^A-Za-z0-9.-]", ".", delivery_id).strip(".") or "delivery"
    return f"<pulse.{local}@{sender.rsplit('@', 1)[1]}>"


def render_email(msg: AlertEventMessage, config: dict[str, Any], delivery_id: str) -> EmailMessage:
    """The message: subject from the template, a text part and an HTML part (values escaped)."""
    subject = " ".join(render(config["subject_template"], msg).split())[:250]
    text = render(config["body_template"], msg)
    mail = EmailMessage()
    mail["Subject"] = subject
    mail["From"] = config["from"]
    mail["To"] = ", ".join(config["to"])
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = message_id(delivery_id, config["from"])
    mail["X-Pulse-Delivery"] = delivery_id
    mail["X-Pulse-Event"] = msg.event_kind
    mail.set_content(text)
    link = msg.links.get("alert")
    facts = (("Severity", f"{SEVERITY_NAMES.get(msg.severity, msg.severity)} ({msg.severity})"),
             ("Status", msg.status), ("Device", msg.device_id), ("Site", msg.site_id),
             ("Metric", f"{msg.metric} = {msg.value}" if msg.metric else None), ("Opened", msg.opened_at.isoformat()))
    rows = "".join(f"<tr><th align=\"left\">{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in facts if v)
    anchor = f"<p><a href=\"{html.escape(link)}\">Open in Pulse</a></p>" if link else ""
    mail.add_alternative(f"<html><body><h2>{html.escape(subject)}</h2><pre>{html.escape(text)}</pre>"
                         f"<table>{rows}</table>{anchor}</body></html>", subtype="html")
    return mail


def _connect(addresses: list[str], port: int, timeout: float) -> socket.socket:
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            error = exc
    raise error or OSError("no address to connect to")


class _PinnedSMTP(smtplib.SMTP):
    """smtplib.SMTP that connects to the addresses the SSRF check approved, while the host name it was given stays
    the name for STARTTLS (server name indication and the certificate check)."""

    def __init__(self, host: str, port: int, *, pinned: list[str], **kwargs: Any) -> None:
        self.pinned = pinned
        super().__init__(host, port, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return _connect(self.pinned, port, timeout)


class _PinnedSMTPSSL(smtplib.SMTP_SSL):
    """Implicit TLS over a pinned connection; the certificate is checked against the configured host name."""

    def __init__(self, host: str, port: int, *, pinned: list[str], **kwargs: Any) -> None:
        self.pinned = pinned
        super().__init__(host, port, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return self.context.wrap_socket(_connect(self.pinned, port, timeout),
                                        server_hostname=host)


def _send_blocking(config: dict[str, Any], addresses: list[str], password: str | None, mail: EmailMessage) -> None:
    security = config["security"]
    smtp: smtplib.SMTP
    if security == "tls":
        smtp = _PinnedSMTPSSL(config["host"], config["port"], pinned=addresses, timeout=TIMEOUT_S,
                              context=client_context(config))
    else:
        smtp = _PinnedSMTP(config["host"], config["port"], pinned=addresses, timeout=TIMEOUT_S)
    try:
        smtp.ehlo()
        if security == "starttls":
            smtp.starttls(context=client_context(config))
            smtp.ehlo()
        if config.get("username"):
            smtp.login(config["username"], password or "")
        smtp.send_message(mail, from_addr=config["from"], to_addrs=config["to"])
        with contextlib.suppress(OSError, smtplib.SMTPException):  # accepted already: a failed QUIT is no failure
            smtp.quit()
    finally:
        smtp.close()


async def send(msg: AlertEventMessage, config: dict[str, Any], secrets: dict[str, str], *, delivery_id: str,
               http: httpx.AsyncClient, allow: tuple[str, ...]) -> SendResult:
    """One SMTP transaction. 4xx answers and network failures are retried; 5xx answers, a server without
    STARTTLS/AUTH and an untrusted certificate are not (retrying cannot fix them)."""
    # DNS may have changed since the channel was saved.
    addresses = check_host(config["host"], allow, field="config.host", port=config["port"])
    if config["security"] == "none" and not _all_loopback(addresses):
        return SendResult(delivered=False, retryable=False,
                          error=f"{config['host']} no longer resolves to loopback; plain SMTP refused")
    mail = render_email(msg, config, delivery_id)
    try:
        await asyncio.to_thread(_send_blocking, config, addresses, secrets.get("password"), mail)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _text in exc.recipients.values()]
        return SendResult(delivered=False, status_code=max(codes, default=None),
                          retryable=all(400 <= c < 500 for c in codes),
                          error=f"all recipients refused: {exc.recipients}"[:300])
    except smtplib.SMTPResponseException as exc:  # auth failed (535), sender refused, data refused, greeting 554 …
        detail = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return SendResult(delivered=False, status_code=exc.smtp_code, retryable=400 <= exc.smtp_code < 500,
                          error=f"SMTP {exc.smtp_code}: {detail[:200]}")
    except smtplib.SMTPNotSupportedError as exc:  # no STARTTLS or no AUTH offered: a configuration mismatch
        return SendResult(delivered=False, retryable=False, error=f"the SMTP server does not support it: {exc}"[:300])
    except ssl.SSLCertVerificationError as exc:
        return SendResult(delivered=False, retryable=False, error=f"TLS certificate not trusted: {exc}"[:300])
    except (OSError, smtplib.SMTPException) as exc:  # refused, timed out, dropped: the server may be back later
        return SendResult(delivered=False, retryable=True, error=f"{type(exc).__name__}: {exc}"[:300])
    return SendResult(delivered=True, status_code=250)
