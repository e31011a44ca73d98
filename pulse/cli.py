"""`pulse <process-type>`: builds Settings, logging and the engine, then runs one loop until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from pulse.errors import SettingsError
from pulse.settings import Settings, settings_help

log = logging.getLogger("pulse.cli")

COMMON = ("PULSE_ENV", "PULSE_ENV_FILE", "PULSE_LOG_FORMAT", "PULSE_LOG_LEVEL")
DB = ("PULSE_DATABASE_URL", "PULSE_DATABASE_POOL_SIZE")
HEALTH = ("PULSE_HEALTH_HOST", "PULSE_HEALTH_PORT")

COMMANDS: dict[str, dict[str, Any]] = {
    "web": {
        "help": "serve the HTTP API, WebSocket, HTTP ingest and the web app (Litestar); health at /healthz",
        "settings": (*DB, "PULSE_HTTP_HOST", "PULSE_HTTP_PORT", "PULSE_PUBLIC_URL", "PULSE_ADMIN_KEY",
                     "PULSE_SECRET_KEY", "PULSE_JWT_ISSUER", "PULSE_JWT_AUDIENCE", "PULSE_JWT_JWKS_URL",
                     "PULSE_OIDC_CLIENT_ID", "PULSE_OIDC_ISSUER", "PULSE_OIDC_SCOPES",
                     "PULSE_ACCESS_TOKEN_TTL_S", "PULSE_REFRESH_TOKEN_TTL_S", "PULSE_DEMO", "PULSE_INGEST_RATE_PER_S",
                     "PULSE_INGEST_BURST", "PULSE_INGEST_BATCH_SIZE", "PULSE_INGEST_FLUSH_MS", "PULSE_CORS_ORIGINS",
                     *HEALTH, "PULSE_SUBSCRIPTION_GRACE_DAYS", "PULSE_SUBSCRIPTION_EXPIRE_AFTER_DAYS"),
    },
    "ingest": {
        "help": "consume device telemetry and heartbeats from MQTT, validate, quarantine, batch-write with COPY",
        "settings": (*DB, *HEALTH, "PULSE_MQTT_URL", "PULSE_MQTT_INGEST_PASSWORD", "PULSE_INGEST_BATCH_SIZE",
                     "PULSE_INGEST_RATE_PER_S", "PULSE_INGEST_BURST",
                     "PULSE_INGEST_FLUSH_MS", "PULSE_INGEST_SHARED_GROUP"),
    },
    "evaluate": {
        "help": "track device liveness and evaluate alert rules; opens, updates and closes alerts",
        "settings": (*DB, *HEALTH, "PULSE_EVALUATE_POLL_MS", "PULSE_EVALUATE_CHUNK", "PULSE_EVALUATE_REBALANCE_S"),
    },
    "escalate": {
        "help": "fire due escalation steps of unacknowledged alerts and page whoever is on call",
        "settings": (*DB, *HEALTH),
    },
    "deliver": {
        "help": "send queued notifications (Slack, PagerDuty, Teams, webhook, email, SNMP, MQTT) with retries",
        "settings": (*DB, *HEALTH, "PULSE_SECRET_KEY", "PULSE_DELIVER_POLL_MS", "PULSE_ALLOW_PRIVATE_URLS",
                     "PULSE_MQTT_ADMIN_URL",
                     "PULSE_MQTT_URL"),
    },
    "schedule": {
        "help": "run periodic jobs (partition maintenance, subscription lifecycle, reports, metrics)",
        "settings": (*DB, *HEALTH, "PULSE_TELEMETRY_RETENTION_DAYS", "PULSE_SUBSCRIPTION_EXPIRE_AFTER_DAYS"),
    },
    "migrate": {
        "help": "apply database migrations up to the newest (safe to run again)",
        "settings": DB,
    },
    "dev": {
        "help": "run the whole platform on this machine: embedded PostgreSQL and MQTT broker (unless "
                "PULSE_DATABASE_URL / PULSE_MQTT_URL are set), migrations, a demo tenant and login, "
                "simulated devices and every process type",
        "settings": ("PULSE_DATABASE_URL", "PULSE_MQTT_URL", "PULSE_HTTP_PORT"),
    },
    "simulate": {
        "help": "simulate devices publishing telemetry and heartbeats over MQTT",
        "settings": (*DB, "PULSE_MQTT_URL"),
    },
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulse",
        description="Pulse: IoT fleet operations. Each subcommand runs one process type against one database.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Settings are read from PULSE_* environment variables (or --env-file):\n" + settings_help(),
    )
    parser.add_argument("--env-file", help="read PULSE_* settings from this file (environment wins)")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, spec in COMMANDS.items():
        p = sub.add_parser(
            name, help=spec["help"], description=spec["help"],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="Settings read:\n" + settings_help((*COMMON, *spec["settings"])),
        )
        p.add_argument("--env-file", help="read PULSE_* settings from this file (environment wins)")
        if name == "ingest":
            p.add_argument("--workers", type=int, default=1, help="worker processes sharing the MQTT stream")
        if name == "migrate":
            p.add_argument("--seed-demo", action="store_true",
                           help="also create the demo tenant, login and devices (idempotent)")
        if name == "simulate":
            p.add_argument("--devices", type=int, default=25, help="number of simulated devices")
            p.add_argument("--tenant", default="demo", help="tenant the devices belong to")
            p.add_argument("--rate", type=float, default=1.0, help="telemetry messages per device per second")
        if name == "dev":
            p.add_argument("--devices", type=int, default=25, help="number of simulated devices")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(env_file=args.env_file)


async def _run_loop(process_type: str, settings: Settings,
                    body: Callable[[Settings, asyncio.Event], Awaitable[int | None]]) -> int:
    from pulse.runtime import install_stop_signals

    stop = asyncio.Event()
    install_stop_signals(stop)
    code = await body(settings, stop)
    log.info("stopped", extra={"exit_code": code or 0})
    return code or 0


def _worker_body(process_type: str) -> Callable[[Settings, asyncio.Event], Awaitable[int | None]]:
    """Import the process type's worker lazily: `pulse ingest` never loads Litestar."""
    if process_type == "ingest":
        from pulse.ingest.worker import run as ingest_run
        return ingest_run
    if process_type == "evaluate":
        from pulse.alerting.worker import run as evaluate_run
        from pulse.alerting.worker import settle_collector

        settle_collector()  # this process only evaluates
        return evaluate_run
    if process_type == "escalate":
        from pulse.oncall.worker import run as escalate_run
        return escalate_run
    if process_type == "deliver":
        from pulse.notify.worker import run as deliver_run
        return deliver_run
    if process_type == "schedule":
        from pulse.scheduler import run as schedule_run
        return schedule_run
    raise AssertionError(process_type)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if args.env_file:  # child processes (pulse dev, ingest --workers) read the same file
        os.environ["PULSE_ENV_FILE"] = os.path.abspath(args.env_file)
    try:
        settings = _settings(args)
        from pulse.log import configure_logging

        configure_logging(args.command, settings.effective_log_format, settings.log_level)
        return _dispatch(args, settings)
    except SettingsError as exc:
        print(f"pulse {args.command}: configuration error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    cmd = args.command
    if cmd == "migrate":
        from pulse.migrate import upgrade

        url = settings.require_database_url()
        upgrade(url)
        log.info("migrations applied")
        if args.seed_demo:
            from pulse.fleet.demo import seed_demo

            asyncio.run(seed_demo(url, settings))
        return 0
    if cmd == "web":
        settings.require_database_url()
        from pulse.web.server import serve

        return asyncio.run(_run_loop("web", settings, serve))
    if cmd == "dev":
        from pulse.devstack import run as dev_run

        async def dev_body(s: Settings, stop: asyncio.Event) -> int:
            return await dev_run(s, stop, devices=args.devices)

        return asyncio.run(_run_loop("dev", settings, dev_body))
    if cmd == "simulate":
        from pulse.simulate import run as simulate_run

        async def sim_body(s: Settings, stop: asyncio.Event) -> int | None:
            return await simulate_run(s, stop, devices=args.devices, tenant_id=args.tenant, rate=args.rate)

        return asyncio.run(_run_loop("simulate", settings, sim_body))
    if cmd == "ingest" and args.workers > 1:
        from pulse.ingest.supervisor import run_workers

        settings.require_database_url()
        return run_workers(settings, args.workers)
    settings.require_database_url()
    return asyncio.run(_run_loop(cmd, settings, _worker_body(cmd)))


if __name__ == "__main__":
    sys.exit(main())
