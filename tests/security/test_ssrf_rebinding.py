"""DNS rebinding against the HTTP channel types: a name checked as harmless must not reach another address later.

Names under `.rebind.test` answer from a script, one answer per lookup, for whoever asks: the SSRF check and the
HTTP client's own resolver alike (this machine has no DNS server to script). Receivers are real local HTTP(S)
servers that record what reaches them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.errors import ValidationError
from pulse.notify.channels import webhook
from pulse.notify.pinned_http import PIN_EXTENSION, PinnedClient, pin_url
from pulse.notify.service import sample_message
from pulse.notify.ssrf import check_url
from pulse.notify.worker import Deliverer
from pulse.settings import Settings
from tests.notify.test_delivery import FAST, SECRET, _alert, _jobs, _setup

PUBLIC_V4 = "93.184.215.14"
LOOPBACK = ("loopback",)


class ScriptedDNS:
    """Answers lookups of scripted names in turn (the last answer repeats; None: the name does not resolve)."""

    def __init__(self) -> None:
        self.script: dict[str, list[list[str] | None]] = {}
        self.lookups: list[str] = []
        self.real = socket.getaddrinfo

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.script:
            return self.real(host, port, *args, **kwargs)
        answers = self.script[name]
        answer = answers[min(self.lookups.count(name), len(answers) - 1)]
        self.lookups.append(name)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, int(port or 0), 0, 0) if ":" in a else (a, int(port or 0))) for a in answer]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> ScriptedDNS:
    scripted = ScriptedDNS()
    monkeypatch.setattr(socket, "getaddrinfo", scripted.getaddrinfo)
    return scripted


class Server:
    """An HTTP(S) receiver on one address and port; records each request's headers, and the TLS server names
    clients asked for."""

    def __init__(self, address: str, port: int = 0, tls: ssl.SSLContext | None = None,
                 answer: tuple[int, dict[str, str]] = (200, {})) -> None:
        self.requests: list[dict[str, str]] = []
        self.server_names: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(answer[0])
                for k, v in answer[1].items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: outer.server_names.append(name)  # type: ignore[assignment]
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.close()


def _trap_and_receiver(servers: list[Server]) -> tuple[Server, Server]:
    """A trap on 127.0.0.1 and a receiver on 127.0.0.2, on the same port: a URL's port leads to either."""
    trap = Server("127.0.0.1")
    servers.append(trap)
    receiver = Server("127.0.0.2", trap.port)
    servers.append(receiver)
    return trap, receiver


async def _webhook(url: str, http: httpx.AsyncClient, allow: tuple[str, ...]) -> Any:
    config = {"url": url, "method": "POST", "headers": {}}
    return await webhook.send(sample_message("tenant-x", dt.datetime.now(dt.UTC)), config, {"secret": SECRET},
                              delivery_id="rebind-1", http=http, allow=allow)


async def _first_attempt(d: Deliverer, engine: AsyncEngine, tenant: Any) -> list[Any]:
    """Deliver rounds until the tenant's job has been tried once (jobs other tests left in the shared database may
    come first); its jobs then."""
    try:
        for _ in range(100):
            await d.deliver_once()
            jobs = await _jobs(engine, tenant)
            if any(j.attempt_count >= 1 or j.status == "DELIVERED" for j in jobs):
                return jobs
            await asyncio.sleep(0.05)
    finally:
        await d.aclose()
    raise AssertionError("the tenant's job was never attempted")


async def test_a_name_that_turns_internal_after_saving_is_refused_at_delivery(
        engine: AsyncEngine, settings: Settings, dns: ScriptedDNS, servers: list[Server]) -> None:
    """Saved while the name answered a public address; at delivery it answers 127.0.0.1, where a server listens."""
    strict = settings.replace(allow_private_urls=())
    trap = Server("127.0.0.1")
    servers.append(trap)
    dns.script["hook.rebind.test"] = [[PUBLIC_V4], ["127.0.0.1"]]
    tenant, device = await _setup(engine, strict, f"http://hook.rebind.test:{trap.port}/hook")
    await _alert(engine, tenant, device)
    [job] = await _first_attempt(Deliverer(engine, strict, retry=FAST), engine, tenant)
    assert job.status == "PENDING" and job.attempt_count == 1  # refused, retried later in case DNS is fixed
    assert "SSRF" in job.last_error and "127.0.0.1" in job.last_error and "loopback" in job.last_error, job
    assert trap.requests == []
    assert dns.lookups == ["hook.rebind.test"] * 2  # once when saved, once for the delivery


async def test_the_connection_goes_to_the_checked_address_never_a_later_answer(
        dns: ScriptedDNS, servers: list[Server]) -> None:
    """The check sees 127.0.0.2; every later lookup answers 127.0.0.1. Both are loopback (allowed here), so only
    where the request lands tells whether the client asked DNS again."""
    trap, receiver = _trap_and_receiver(servers)
    url = f"http://hook.rebind.test:{trap.port}/hook"

    dns.script["hook.rebind.test"] = [["127.0.0.2"], ["127.0.0.1"]]
    # The control: check, then send with a plain httpx client, which resolves again and lands on the trap.
    check_url(url, LOOPBACK)
    async with httpx.AsyncClient(trust_env=False) as plain:
        await plain.post(url, content=b"{}")
    assert len(trap.requests) == 1 and receiver.requests == []

    trap.requests.clear()
    dns.lookups.clear()
    async with PinnedClient() as http:
        result = await _webhook(url, http, LOOPBACK)
    assert result.delivered, result
    assert trap.requests == []
    assert len(receiver.requests) == 1 and receiver.requests[0]["host"] == f"hook.rebind.test:{trap.port}"
    assert dns.lookups == ["hook.rebind.test"]  # resolved once for the send


async def test_an_allowed_delivery_reaches_the_receiver_with_its_host_name(
        engine: AsyncEngine, settings: Settings, dns: ScriptedDNS, servers: list[Server]) -> None:
    """Through `pulse deliver` with the test allowance for loopback: delivered, Host is the configured name, and
    the name is not looked up again after the check (a third lookup would fail)."""
    receiver = Server("127.0.0.1")
    servers.append(receiver)
    dns.script["receiver.rebind.test"] = [["127.0.0.1"], ["127.0.0.1"], None]
    tenant, device = await _setup(engine, settings, f"http://receiver.rebind.test:{receiver.port}/hook")
    await _alert(engine, tenant, device)
    [job] = await _first_attempt(Deliverer(engine, settings, retry=FAST), engine, tenant)
    assert job.status == "DELIVERED", job
    assert [r["host"] for r in receiver.requests] == [f"receiver.rebind.test:{receiver.port}"]
    assert receiver.requests[0]["x-pulse-signature"].startswith("v1=")
    assert dns.lookups == ["receiver.rebind.test"] * 2


async def test_a_request_without_a_check_or_redirected_elsewhere_is_never_sent(
        dns: ScriptedDNS, servers: list[Server]) -> None:
    """The pinned client refuses what was not checked: a plain request, and a redirect to another host even when a
    caller asks to follow it."""
    other = Server("127.0.0.1")
    servers.append(other)
    redirecting = Server("127.0.0.1", answer=(307, {"Location": f"http://other.rebind.test:{other.port}/x"}))
    servers.append(redirecting)
    dns.script["other.rebind.test"] = [["127.0.0.1"]]
    dns.script["start.rebind.test"] = [["127.0.0.1"]]
    async with PinnedClient() as http:
        with pytest.raises(ValidationError, match="SSRF protection refused"):
            await http.post(f"http://other.rebind.test:{other.port}/x", content=b"{}")
        pin = await pin_url(f"http://start.rebind.test:{redirecting.port}/hook", LOOPBACK, field="config.url")
        with pytest.raises(ValidationError, match="was not checked"):
            await http.post(f"http://start.rebind.test:{redirecting.port}/hook", content=b"{}",
                            extensions={PIN_EXTENSION: pin}, follow_redirects=True)
        not_followed = await _webhook(f"http://start.rebind.test:{redirecting.port}/hook", http, LOOPBACK)
    assert len(redirecting.requests) == 2 and other.requests == []
    assert not not_followed.delivered and not_followed.status_code == 307


def _certificate(tmp: Path, dns_name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for `dns_name` only (no IP address): the server's context and a client context
    that trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp / "cert.pem"))
    return server, client


async def test_https_keeps_the_host_name_for_sni_and_the_certificate(
        tmp_path: Path, dns: ScriptedDNS, servers: list[Server]) -> None:
    """The connection goes to the checked 127.0.0.1, yet TLS asks for and verifies `secure.rebind.test` (the
    certificate names no IP address, so a check against the address would fail). A name the certificate does not
    carry is refused by verification, after the server saw that name as SNI."""
    server_tls, client_tls = _certificate(tmp_path, "secure.rebind.test")
    server = Server("127.0.0.1", tls=server_tls)
    servers.append(server)
    dns.script["secure.rebind.test"] = [["127.0.0.1"]]
    dns.script["wrong.rebind.test"] = [["127.0.0.1"]]
    async with PinnedClient(verify=client_tls) as http:
        result = await _webhook(f"https://secure.rebind.test:{server.port}/hook", http, LOOPBACK)
        assert result.delivered, result
        assert server.server_names == ["secure.rebind.test"]
        assert [r["host"] for r in server.requests] == [f"secure.rebind.test:{server.port}"]

        with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
            await _webhook(f"https://wrong.rebind.test:{server.port}/hook", http, LOOPBACK)
    assert server.server_names == ["secure.rebind.test", "wrong.rebind.test"]
    assert len(server.requests) == 1
    assert dns.lookups == ["secure.rebind.test", "wrong.rebind.test"]
