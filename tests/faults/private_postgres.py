"""A PostgreSQL cluster of the test's own (Debian's PostgreSQL 15 binaries, trust auth, loopback, a free port) that
the test may restart at will — the shared cluster on 5432 is never touched."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import free_port, run_pulse

BIN = Path(os.environ.get("PULSE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PrivatePostgres:
    """initdb, start, restart and stop one cluster in a temporary directory.

    As root, the server runs as the `postgres` user (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pulse-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._owner: str | None = "postgres" if os.geteuid() == 0 else None
        if self._owner is not None:
            entry = pwd.getpwnam(self._owner)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str = "pulse") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        command = [*args] if self._owner is None else ["runuser", "-u", self._owner, "--", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
                                 f"{self.log_tail()}")

    def init(self) -> None:
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-instructions")
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c max_connections=100",
                  "start")

    def restart(self, mode: str = "fast") -> None:
        """`pg_ctl restart -m fast` (every session terminated, clean shutdown) or `-m immediate` (no shutdown
        checkpoint: crash recovery from the WAL at start); the server is down for a moment, then back."""
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-m", mode, "-w", "-t", "60",
                  "restart")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh cluster with a `pulse` database migrated by `pulse migrate`; stopped and removed afterwards."""
    if not (BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {BIN}")
    cluster = PrivatePostgres()
    try:
        cluster.init()
        asyncio.run(_create_database(cluster.admin_url, "pulse"))
        done = run_pulse("migrate", env={"PULSE_DATABASE_URL": cluster.url(), "PULSE_ENV": "test"}, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        yield cluster
    finally:
        cluster.destroy()
