"""What the dev stack's parts share: its error, its data directory, free loopback ports."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from pulse.errors import PulseError

if TYPE_CHECKING:
    pass


log = logging.getLogger("pulse.dev")


class DevStackError(PulseError):
    """An embedded piece of the dev stack could not be started; the message says what to look at."""

    code = "dev_stack"


def default_data_dir() -> Path:
    """Where embedded data lives. As root, under /var/lib: the wheel runs PostgreSQL as a separate
    system user and widens permissions on every parent folder, which must not expose /root."""
    if os.geteuid() == 0:
        return Path("/var/lib/pulse/dev")
    return platformdirs.user_data_path("pulse") / "dev"


def port_is_free(host: str, port: int) -> bool:
    """True when a server could bind host:port now (with SO_REUSEADDR, as servers bind)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports the OS says are free (all held open together so none repeats)."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def _url_host(host: str) -> str:
    """The address to reach a server bound to `host` from this machine, as written in a URL."""
    if host in ("", "0.0.0.0", "::", "*"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
