"""Deployment test helpers: the deploy/ configuration files run by Debian's pgbouncer and caddy, and real
`pulse web` processes, all on free loopback ports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import free_port, start_pulse

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
START_TIMEOUT_S = 60.0

requires_pgbouncer = pytest.mark.skipif(shutil.which("pgbouncer") is None or shutil.which("psql") is None,
                                        reason="Debian's pgbouncer and psql are installed by `make test`")
requires_psql = pytest.mark.skipif(shutil.which("psql") is None, reason="psql is installed by `make test`")
requires_caddy = pytest.mark.skipif(shutil.which("caddy") is None,
                                    reason="Debian's caddy is installed by `make test` (apt-get install caddy)")


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until something listens on 127.0.0.1:`port`; fail with the process's output if it exits first."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{out[-4000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port} within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --- PgBouncer ----------------------------------------------------------------------------------------------------

def render_pgbouncer_ini(databases: dict[str, str], settings: dict[str, str]) -> str:
    """deploy/pgbouncer/pgbouncer.ini with its [databases] replaced and some [pgbouncer] keys overridden.

    Every overridden key must already be in the deployed file, so the test cannot drift from it unnoticed.
    """
    text = (DEPLOY / "pgbouncer/pgbouncer.ini").read_text()
    out: list[str] = []
    section = ""
    seen: set[str] = set()
    for line in text.splitlines():
        header = re.match(r"^\s*\[(\w+)\]\s*$", line)
        if header:
            section = header.group(1)
            out.append(line)
            if section == "databases":
                out.extend(f"{name} = {spec}" for name, spec in databases.items())
            continue
        entry = re.match(r"^\s*([a-z_]+)\s*=", line)
        if section == "databases" and entry:
            continue
        if section == "pgbouncer" and entry and entry.group(1) in settings:
            seen.add(entry.group(1))
            out.append(f"{entry.group(1)} = {settings[entry.group(1)]}")
            continue
        out.append(line)
    missing = set(settings) - seen
    assert not missing, f"deploy/pgbouncer/pgbouncer.ini has no {sorted(missing)}"
    return "\n".join(out) + "\n"


def pgbouncer_setting(key: str) -> str:
    """A [pgbouncer] value of the deployed file."""
    match = re.search(rf"^\s*{key}\s*=\s*(.*?)\s*$", (DEPLOY / "pgbouncer/pgbouncer.ini").read_text(), re.M)
    assert match, f"deploy/pgbouncer/pgbouncer.ini has no {key}"
    return match.group(1)


@pytest.fixture(scope="module")
def pgbouncer(database_url: str) -> Iterator[int]:
    """Debian's pgbouncer from the deployed pgbouncer.ini on a free loopback port, in front of the test database.

    The test database trusts loopback, so authentication is `trust` with the test's user in the auth file; the
    server pool is kept small so that concurrent clients share server connections.
    """
    parts = urlsplit(database_url)
    user = parts.username or "postgres"
    dbname = parts.path.lstrip("/")
    port = free_port()
    # pgbouncer refuses to run as root and then reads its files as `postgres`: a world-readable directory of its own
    tmp = Path(tempfile.mkdtemp(prefix="pulse-pgbouncer-"))
    tmp.chmod(0o755)
    (tmp / "userlist.txt").write_text(f'"{user}" ""\n')
    ini = render_pgbouncer_ini(
        {dbname: f"host={parts.hostname or '127.0.0.1'} port={parts.port or 5432} dbname={dbname}"},
        {"listen_addr": "127.0.0.1", "listen_port": str(port), "auth_type": "trust",
         "auth_file": str(tmp / "userlist.txt"), "default_pool_size": "4", "min_pool_size": "0",
         "reserve_pool_size": "0", "max_db_connections": "6", "admin_users": user, "stats_users": user})
    (tmp / "pgbouncer.ini").write_text(ini)
    for f in tmp.iterdir():
        f.chmod(0o644)
    cmd = ["pgbouncer", str(tmp / "pgbouncer.ini")]
    if os.geteuid() == 0:
        cmd[1:1] = ["-u", "postgres"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, "pgbouncer")
        yield port
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def pooled_url(database_url: str, pgbouncer_port: int) -> str:
    """The test database through PgBouncer, as an operator writes it: pgbouncer=true, direct= PostgreSQL."""
    parts = urlsplit(database_url)
    direct = f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
    netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{pgbouncer_port}"
    return parts._replace(netloc=netloc, query=f"pgbouncer=true&direct={direct}").geturl()


def pgbouncer_show(port: int, user: str, what: str) -> list[dict[str, str]]:
    """Rows of PgBouncer's admin console `SHOW <what>` (it speaks only the simple query protocol: psql)."""
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", "pgbouncer", "-A", "-F",
                          "\t", "-P", "footer=off", "-c", f"SHOW {what}"],
                         capture_output=True, text=True, timeout=15, check=True).stdout.splitlines()
    header = out[0].split("\t")
    return [dict(zip(header, row.split("\t"), strict=False)) for row in out[1:]]


# --- pulse web ----------------------------------------------------------------------------------------------------

def start_web(database_url: str, **settings: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real `pulse web` on a free loopback port, ready (GET /readyz answers 200); returns it and its base URL."""
    port = free_port()
    proc = start_pulse("web", database_url, PULSE_HTTP_HOST="127.0.0.1", PULSE_HTTP_PORT=str(port), **settings)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"pulse web exited with {proc.returncode}")
            try:
                if client.get(f"{base}/readyz").status_code == 200:
                    return proc, base
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    stop(proc)
    raise AssertionError("pulse web did not become ready")
