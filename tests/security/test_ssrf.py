"""SSRF on every URL- or host-bearing field a tenant can set: channels of every type and users' contact methods,
on create and on change. Internal targets are answered 400 naming the field; a public address is the control that
the same body is otherwise accepted. The app runs with PULSE_ALLOW_PRIVATE_URLS empty (the production default).

DNS names that resolve to internal addresses: `localhost` and this host's name resolve for real; names under
`.ssrf.test` resolve through a stand-in resolver (this machine has no DNS server to point at private addresses).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from pulse.settings import Settings
from pulse.web.app import create_app
from tests.security.world import World

Client = AsyncTestClient[Litestar]

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2001:4860:4860::8888"
FAKE_DNS = {
    "intranet.ssrf.test": ["10.20.30.40"],
    "metadata.ssrf.test": ["169.254.169.254"],
    "loop6.ssrf.test": ["::1"],
    "mixed.ssrf.test": [PUBLIC_V4, "192.168.7.7"],  # one bad address is enough to refuse
    "cgnat.ssrf.test": ["100.100.100.200"],
}

# Hosts (for host fields and URLs alike) that must never be reachable from a tenant's settings.
INTERNAL_HOSTS = [
    "127.0.0.1", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "localhost", socket.gethostname(),
    "0.0.0.0", "169.254.169.254", "10.0.0.5", "172.16.0.1", "192.168.1.1", "100.64.0.1",
    "[::1]", "[::]", "[::ffff:127.0.0.1]", "[::ffff:169.254.169.254]", "[fe80::1]", "[fd00::1]",
    "[2002:7f00:1::]", "[64:ff9b::a9fe:a9fe]", *FAKE_DNS,
]
# Strings that are not http(s) URLs to a host, or hide credentials.
BAD_URLS = [
    "file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO", "ftp://93.184.215.14/x", "dict://127.0.0.1:11211/stat",
    "javascript:alert(1)", f"//{PUBLIC_V4}/x", "http:///x", "http://", f"http://user:pw@{PUBLIC_V4}/",
    f"http://{PUBLIC_V4}@127.0.0.1/", "http://127.0.0.1#@93.184.215.14/", "x" * 3000, "",
]


@dataclass(frozen=True)
class Field:
    """One URL- or host-bearing field: how to put a value in a body, and the field an error must name."""

    name: str
    path: str
    method: str
    error_field: str
    body: Callable[[str], dict[str, Any]]
    takes: str  # "url" (http[s]), "mqtt" (mqtt://host) or "host"

    def value(self, host: str) -> str:
        if self.takes == "url":
            return f"http://{host}/pulse"
        if self.takes == "mqtt":
            return f"mqtt://{host}:1883"
        return host.strip("[]")


def _channel(kind: str, config: dict[str, Any], secrets: dict[str, str]) -> dict[str, Any]:
    return {"name": f"ssrf {kind} {id(config)}", "channel_type": kind, "config": config, "secrets": secrets}


SECRET = {"secret": "sixteen-characters-or-more"}
CHANNEL_FIELDS = [
    Field("webhook config.url", "/customer/channels", "POST", "config.url",
          lambda v: _channel("WEBHOOK", {"url": v}, SECRET), "url"),
    Field("slack secrets.webhook_url", "/customer/channels", "POST", "secrets.webhook_url",
          lambda v: _channel("SLACK", {}, {"webhook_url": v}), "url"),
    Field("teams secrets.webhook_url", "/customer/channels", "POST", "secrets.webhook_url",
          lambda v: _channel("TEAMS", {}, {"webhook_url": v}), "url"),
    Field("pagerduty config.url", "/customer/channels", "POST", "config.url",
          lambda v: _channel("PAGERDUTY", {"url": v}, {"routing_key": "R0UT1NGKEY"}), "url"),
    Field("mqtt config.url", "/customer/channels", "POST", "config.url",
          lambda v: _channel("MQTT", {"url": v, "topic_template": "alerts/{tenant_id}"}, {}), "mqtt"),
    Field("email config.host", "/customer/channels", "POST", "config.host",
          lambda v: _channel("EMAIL", {"host": v, "port": 587, "security": "starttls", "from": "pulse@example.com",
                                       "to": ["ops@example.com"]}, {}), "host"),
    Field("snmp config.host", "/customer/channels", "POST", "config.host",
          lambda v: _channel("SNMP", {"host": v, "version": "2c"}, {"community": "public"}), "host"),
]
CONTACT = "/customer/users/{user_id}/contact-methods"
CONTACT_FIELDS = [
    Field("contact webhook address", CONTACT, "POST", "address",
          lambda v: {"kind": "WEBHOOK", "address": v, "secrets": SECRET}, "url"),
    Field("contact slack secrets.webhook_url", CONTACT, "POST", "secrets.webhook_url",
          lambda v: {"kind": "SLACK", "secrets": {"webhook_url": v}}, "url"),
    Field("contact teams secrets.webhook_url", CONTACT, "POST", "secrets.webhook_url",
          lambda v: {"kind": "TEAMS", "secrets": {"webhook_url": v}}, "url"),
]
FIELDS = CHANNEL_FIELDS + CONTACT_FIELDS


@pytest.fixture(scope="module")
def fake_dns() -> Iterator[None]:
    """Resolve the `.ssrf.test` names to internal addresses; everything else resolves as usual."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host in FAKE_DNS:
            out = []
            for address in FAKE_DNS[host]:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr = (address, int(port or 0), 0, 0) if family == socket.AF_INET6 else (address, int(port or 0))
                out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
            return out
        return real(host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    yield
    socket.getaddrinfo = real  # type: ignore[assignment]


@pytest.fixture(scope="module")
async def strict(settings: Settings, fake_dns: None) -> AsyncIterator[Client]:
    """The app with no private address class allowed, as in production."""
    async with AsyncTestClient(app=create_app(settings.replace(allow_private_urls=())), timeout=30) as client:
        yield client


def _path(field: Field, world: World) -> str:
    return field.path.format(user_id=world.a.ids["user_id"])


async def _send(client: Client, world: World, field: Field, value: str) -> Any:
    return await client.request(field.method, _path(field, world), headers=world.a.headers(), json=field.body(value))


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
async def test_a_public_address_is_accepted(strict: Client, world: World, field: Field) -> None:
    """The control: the bodies below are refused for their address, nothing else."""
    for host in (PUBLIC_V4, f"[{PUBLIC_V6}]"):
        response = await _send(strict, world, field, field.value(host))
        assert response.status_code == 201, f"{field.name} with {host}: {response.text}"


@pytest.mark.parametrize("host", INTERNAL_HOSTS)
@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
async def test_internal_addresses_are_refused_naming_the_field(strict: Client, world: World, field: Field,
                                                               host: str) -> None:
    response = await _send(strict, world, field, field.value(host))
    assert response.status_code == 400, f"{field.name} = {field.value(host)}: {response.status_code} {response.text}"
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["details"]["field"] == field.error_field, error
    assert "resolves to" in error["message"], f"refused for another reason than the address: {error}"


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("field", [f for f in FIELDS if f.takes == "url"], ids=lambda f: f.name)
async def test_other_schemes_and_tricks_are_refused(strict: Client, world: World, field: Field, url: str) -> None:
    response = await _send(strict, world, field, url)
    assert response.status_code == 400, f"{field.name} = {url!r}: {response.status_code} {response.text}"
    assert response.json()["error"]["details"]["field"] == field.error_field


async def test_changes_are_checked_too(strict: Client, world: World) -> None:
    """PATCH of a channel's config or secrets and of a contact method's address or secrets."""
    h = world.a.headers()
    hook = await strict.post("/customer/channels", headers=h, json=_channel("WEBHOOK", {"url": f"http://{PUBLIC_V4}/"},
                                                                           SECRET))
    slack = await strict.post("/customer/channels", headers=h, json=_channel(
        "SLACK", {}, {"webhook_url": f"https://{PUBLIC_V4}/services/x"}))
    contact = await strict.post(_path(CONTACT_FIELDS[0], world), headers=h, json={
        "kind": "WEBHOOK", "address": f"https://{PUBLIC_V4}/page", "secrets": SECRET})
    assert hook.status_code == slack.status_code == contact.status_code == 201
    changes = [
        (f"/customer/channels/{hook.json()['channel_id']}", {"config": {"url": "http://169.254.169.254/"}}, "config.url"),
        (f"/customer/channels/{slack.json()['channel_id']}", {"secrets": {"webhook_url": "http://[::1]/x"}},
         "secrets.webhook_url"),
        (f"{_path(CONTACT_FIELDS[0], world)}/{contact.json()['contact_id']}", {"address": "http://10.1.1.1/"},
         "address"),
    ]
    for path, body, field in changes:
        response = await strict.patch(path, headers=h, json=body)
        assert response.status_code == 400, f"{path} {body}: {response.text}"
        assert response.json()["error"]["details"]["field"] == field
    still = await strict.get(f"/customer/channels/{hook.json()['channel_id']}", headers=h)
    assert still.json()["config"]["url"] == f"http://{PUBLIC_V4}/"


async def test_a_test_send_checks_the_address_again(api: Client, strict: Client, world: World, receiver: Any) -> None:
    """A channel saved while loopback was allowed (or whose name now resolves elsewhere) is refused at send time,
    and a receiver's redirect is never followed."""
    h = world.a.headers()
    saved = await api.post("/customer/channels", headers=h, json=_channel("WEBHOOK", {"url": receiver.url}, SECRET))
    assert saved.status_code == 201, saved.text
    channel = saved.json()["channel_id"]

    refused = await strict.post(f"/customer/channels/{channel}/test", headers=h)
    assert refused.status_code == 200, refused.text
    assert refused.json()["delivered"] is False and "loopback" in refused.json()["error"]
    assert receiver.requests == []

    receiver.script = [(302, {"Location": "http://169.254.169.254/latest/meta-data/"})]
    redirected = await api.post(f"/customer/channels/{channel}/test", headers=h)
    assert redirected.json()["delivered"] is False and redirected.json()["status_code"] == 302
    assert len(receiver.requests) == 1
