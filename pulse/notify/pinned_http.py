"""Outbound HTTP to tenant-supplied URLs that connects only to the addresses the SSRF check approved.

A URL's host is resolved once per send and every answer is checked (`pulse.notify.ssrf`); the request then
carries those addresses as a pin, and the connection pool connects to them instead of asking DNS again. So a
name that answers a public address to the check and 127.0.0.1 or 169.254.169.254 a moment later (DNS
rebinding) cannot move the connection. The name stays the name everywhere else: the `Host` header, and for
https the TLS server name (SNI) and the host name the certificate is verified against.

A kept-alive connection is reused only for the same scheme, host name and port under the same address policy:
it goes to an address that was checked when it was opened. A request without a pin for its own host and port
(a redirect elsewhere, a caller that skipped the check) is refused, never sent.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from pulse.errors import ValidationError
from pulse.notify import ssrf

PIN_EXTENSION = "pulse.pin"
"""The request extension that carries a `Pin`."""


@dataclass(frozen=True)
class Pin:
    """Where one request may connect: `host`:`port` at `addresses`, all checked under the `allow` policy."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    allow: tuple[str, ...]


_CURRENT: ContextVar[Pin | None] = ContextVar("pulse_pinned_request", default=None)


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _refused(message: str) -> ValidationError:
    return ValidationError(f"SSRF protection refused the request: {message}")


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the pinned addresses of the request in hand; never resolves a name."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        pin = _CURRENT.get()
        if pin is None or (pin.host, pin.port) != (host, port):
            raise _refused(f"no checked address for {host}:{port}")
        deadline = None if timeout is None else time.monotonic() + timeout
        failures: list[str] = []
        for address in pin.addresses:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise httpcore.ConnectTimeout(f"cannot connect to {host}:{port} within {timeout} s (tried "
                                              f"{', '.join(failures) or 'nothing'})")
            try:
                return await self._inner.connect_tcp(address, port, timeout=remaining, local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failures.append(f"{address}: {exc}")
        raise httpcore.ConnectError(f"cannot connect to {host}:{port} ({'; '.join(failures)})")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise _refused("Unix sockets are not a channel destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PolicyPool(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose connections go to pinned addresses only.

    httpx 0.28 takes no network backend, so the pool it builds is replaced by one that has ours; the request and
    response mapping and the error translation stay httpx's own.
    """

    def __init__(self, ssl_context: ssl.SSLContext, limits: httpx.Limits) -> None:
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PinnedBackend())


class PinnedTransport(httpx.AsyncBaseTransport):
    """Sends a request only with a `Pin` for its own scheme, host and port, over a pool of that pin's policy.

    One pool per address policy, so a connection opened under a looser policy (the operator's own PagerDuty
    endpoint) never carries a request checked under a stricter one. There are only a few policies: the
    deployment's PULSE_ALLOW_PRIVATE_URLS and the all-classes policy of operator-configured endpoints.
    """

    def __init__(self, *, verify: ssl.SSLContext | bool = True, limits: httpx.Limits = httpx.Limits()) -> None:
        self._ssl_context = httpx.create_ssl_context(verify=verify)
        self._limits = limits
        self._pools: dict[tuple[str, ...], _PolicyPool] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pin = request.extensions.get(PIN_EXTENSION)
        port = _port(request.url)
        if not isinstance(pin, Pin) or (pin.scheme, pin.host, pin.port) != (
                request.url.scheme, request.url.raw_host.decode("ascii"), port):
            raise _refused(f"{request.url.scheme}://{request.url.host}:{port} was not checked before sending")
        pool = self._pools.get(pin.allow)
        if pool is None:  # no await in between: two sends cannot both create one
            pool = self._pools[pin.allow] = _PolicyPool(self._ssl_context, self._limits)
        token = _CURRENT.set(pin)
        try:
            return await pool.handle_async_request(request)
        finally:
            _CURRENT.reset(token)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


class PinnedClient(httpx.AsyncClient):
    """The HTTP client channel sends go through: pinned connections, no redirects, no proxy from the environment.

    `verify` is the trust for https receivers (default: httpx's CA bundle, or SSL_CERT_FILE/SSL_CERT_DIR).
    """

    def __init__(self, *, timeout: httpx.Timeout | float = httpx.Timeout(10.0, connect=5.0),
                 limits: httpx.Limits = httpx.Limits(), verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(timeout=timeout, follow_redirects=False,
                         transport=PinnedTransport(verify=verify, limits=limits))


async def pin_url(url: str, allow: tuple[str, ...], *, field: str) -> Pin:
    """Check `url` as it is about to be sent: its form, then one DNS lookup whose every answer must be allowed.

    The host is the one httpx will connect to (httpx's parse of the URL, not another parser's). Raises
    ValidationError naming `field`; the message says the SSRF protection refused it when an address is not allowed.
    """
    ssrf.check_url_form(url, field=field)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValidationError(f"is not a valid URL: {exc}", field=field) from None
    host = parsed.raw_host.decode("ascii")
    port = _port(parsed)
    addresses = await asyncio.to_thread(ssrf.resolve, host, port, field=field)
    try:
        ssrf.refuse_restricted(host, addresses, allow, field=field)
    except ValidationError as exc:
        raise ValidationError(f"SSRF protection refused the request at send time: {exc.message}",
                              field=field) from None
    return Pin(parsed.scheme, host, port, tuple(addresses), allow)


async def send_pinned(http: httpx.AsyncClient, method: str, url: str, allow: tuple[str, ...], *, field: str,
                      content: bytes, headers: dict[str, str]) -> httpx.Response:
    """Resolve and check `url` once, then send to exactly the checked addresses (see the module's docstring)."""
    if not isinstance(http, PinnedClient):
        raise TypeError("channel HTTP must go through a PinnedClient, which connects to the checked address")
    pin = await pin_url(url, allow, field=field)
    extensions: dict[str, Any] = {PIN_EXTENSION: pin}
    return await http.request(method, url, content=content, headers=headers, extensions=extensions)
