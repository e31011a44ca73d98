"""SSRF guard: URLs and hosts given by tenants may reach only public addresses unless the operator allows more."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from pulse.errors import ValidationError

ADDRESS_CLASSES = ("loopback", "private", "link-local")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), which is where it may lead."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def classify(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """The restricted class an address belongs to, or None for a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and (ip.ipv4_mapped is not None or classify(embedded) is not None):
            return classify(embedded)
        if ip.is_site_local:
            return "private"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"  # includes 169.254.169.254, the cloud metadata service
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        return "private"  # not is_global: e.g. 100.64.0.0/10, where some clouds put their metadata service
    return None


def resolve(host: str, port: int, *, field: str = "url") -> list[str]:
    """Every address `host` resolves to (one DNS lookup), de-duplicated and sorted."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValidationError(f"host {host!r} does not resolve: {exc.strerror}", field=field) from None
    return sorted({str(info[4][0]) for info in infos})


def refuse_restricted(host: str, addresses: list[str], allow: tuple[str, ...], *, field: str = "url") -> None:
    """Refuse when any of `host`'s addresses is in a class not allowed (one bad answer is enough)."""
    for address in addresses:
        kind = classify(ipaddress.ip_address(address.split("%", 1)[0]))
        if kind is not None and kind not in allow:
            raise ValidationError(
                f"{host} resolves to {address}, a {kind} address; channels may only reach public addresses "
                f"unless PULSE_ALLOW_PRIVATE_URLS allows {kind}", field=field)


def check_host(host: str, allow: tuple[str, ...], *, field: str = "url", port: int = 443) -> list[str]:
    """Resolve `host` and refuse it if any address is in a class not allowed; returns the addresses."""
    addresses = resolve(host, port, field=field)
    refuse_restricted(host, addresses, allow, field=field)
    return addresses


def check_url_form(url: str, *, field: str = "url") -> tuple[str, int]:
    """Refuse what is not an http(s) URL with a host and without credentials; the host and port it names."""
    if not isinstance(url, str) or len(url) > 2048:
        raise ValidationError("must be an http(s) URL of at most 2048 characters", field=field)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("must be an http:// or https:// URL with a host", field=field)
    if parts.username or parts.password:
        raise ValidationError("must not carry credentials; use the channel's headers or secrets", field=field)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValidationError("has an invalid port", field=field) from None
    return parts.hostname, port


def check_url(url: str, allow: tuple[str, ...], *, field: str = "url") -> None:
    """Refuse non-http(s) URLs and URLs whose host resolves to a restricted address."""
    host, port = check_url_form(url, field=field)
    check_host(host, allow, field=field, port=port)
