"""Pulse settings: one validated object built from PULSE_* environment variables (and an env file)."""

from __future__ import annotations

import base64
import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pulse.errors import SettingsError

# Development-only defaults. Production mode refuses to start while any of these is in use.
DEV_ADMIN_KEY = "dev-admin-key-change-me"
DEV_SECRET_KEY = base64.urlsafe_b64encode(b"pulse-development-secret-key-32b").decode()
DEV_MQTT_INGEST_PASSWORD = "dev-ingest-password"  # noqa: S105 - refused in production

_PROCESS_HEALTH_PORTS = {"web": 9100, "ingest": 9101, "evaluate": 9102, "escalate": 9103, "deliver": 9104,
                         "schedule": 9105}


def _parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true/false")


def _parse_int(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        n = int(value.strip())
        if minimum is not None and n < minimum:
            raise ValueError(f"must be >= {minimum}")
        if maximum is not None and n > maximum:
            raise ValueError(f"must be <= {maximum}")
        return n

    return parse


def _parse_float(minimum: float = 0.0, maximum: float | None = None) -> Callable[[str], float]:
    def parse(value: str) -> float:
        n = float(value.strip())
        if n < minimum:
            raise ValueError(f"must be >= {minimum}")
        if maximum is not None and n > maximum:
            raise ValueError(f"must be <= {maximum}")
        return n

    return parse


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        v = value.strip().lower()
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return v

    return parse


def _parse_database_url(value: str) -> str:
    v = value.strip()
    parts = urlsplit(v)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+asyncpg"):
        raise ValueError("must be a postgresql:// URL")
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError("must name a host")
    url = "postgresql://" + v.split("://", 1)[1]
    from pulse.db import database_target  # Pulse's own URL parameters (pgbouncer=, direct=)

    database_target(url)
    return url


def _parse_service_url(schemes: tuple[str, ...], expected: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        v = value.strip()
        parts = urlsplit(v)
        if parts.scheme not in schemes:
            raise ValueError(f"must be {expected}")
        if not parts.hostname:
            raise ValueError("must name a host")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        return v

    return parse


_parse_mqtt_url = _parse_service_url(("mqtt", "mqtts"), "an mqtt:// or mqtts:// URL")
_parse_smtp_url = _parse_service_url(("smtp", "smtp+starttls", "smtps"),
                                     "an smtp:// (loopback relay only), smtp+starttls:// or smtps:// URL")


def _parse_secret_key(value: str) -> str:
    v = value.strip()
    try:
        raw = base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
    except (ValueError, TypeError):
        raise ValueError("must be url-safe base64 of 32 random bytes (python -c 'import secrets,base64;"
                         "print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())')") from None
    if len(raw) != 32:
        raise ValueError(f"must decode to 32 bytes, got {len(raw)}")
    return v


def _parse_list(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


def _parse_origins(value: str) -> tuple[str, ...]:
    """Browser origins (scheme://host[:port], no path) allowed to call the API cross-origin."""
    origins = _parse_list(value)
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query \
                or parts.fragment or parts.username or origin.endswith("/"):
            raise ValueError(f"{origin!r} is not an origin like https://app.example.com[:port]")
    return origins


def _parse_http_url(value: str) -> str:
    v = value.strip()
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("must be an http:// or https:// URL without query or fragment")
    return v


def _parse_scopes(value: str) -> tuple[str, ...]:
    """OAuth scopes, space- or comma-separated; `openid` is required (the web app signs in with OIDC)."""
    scopes = tuple(dict.fromkeys(x for x in re.split(r"[\s,]+", value) if x))
    if "openid" not in scopes:
        raise ValueError("must include openid")
    bad = [x for x in scopes if not re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", x)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a valid scope")
    return scopes


def _parse_nonempty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _parse_admin_key(value: str) -> str:
    v = value.strip()
    if len(v) < 16:
        raise ValueError("must be at least 16 characters")
    return v


def _setting(env: str, default: Any, parse: Callable[[str], Any], doc: str, secret: bool = False) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "doc": doc, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """Everything a Pulse process reads from its environment. Build with `Settings.from_env()`."""

    env: str = _setting("PULSE_ENV", "development", _parse_choice("development", "production", "test"),
                        "development, test or production; production refuses default secrets")
    database_url: str | None = _setting("PULSE_DATABASE_URL", None, _parse_database_url,
                                        "PostgreSQL URL, e.g. postgresql://pulse@127.0.0.1:5432/pulse; via PgBouncer "
                                        "(transaction pooling) append ?pgbouncer=true&direct=<postgres-host>:<port>")
    database_pool_size: int = _setting("PULSE_DATABASE_POOL_SIZE", 10, _parse_int(1, 500),
                                       "connections per process")
    mqtt_url: str | None = _setting("PULSE_MQTT_URL", None, _parse_mqtt_url,
                                    "broker URL for ingest and MQTT notifications, mqtt://user:pass@host:1883")
    mqtt_admin_url: str | None = _setting("PULSE_MQTT_ADMIN_URL", None, _parse_mqtt_url,
                                          "broker admin account (mqtt://pulse-admin:secret@host:1883); set it and "
                                          "pulse deliver keeps per-device broker accounts in line", secret=True)
    mqtt_ingest_password: str = _setting("PULSE_MQTT_INGEST_PASSWORD", DEV_MQTT_INGEST_PASSWORD,
                                         _parse_nonempty, "password of the broker account ingest uses",
                                         secret=True)
    admin_key: str = _setting("PULSE_ADMIN_KEY", DEV_ADMIN_KEY, _parse_admin_key,
                              "X-Admin-Key for /api/admin provisioning", secret=True)
    secret_key: str = _setting("PULSE_SECRET_KEY", DEV_SECRET_KEY, _parse_secret_key,
                               "url-safe base64 of 32 bytes; encrypts secrets at rest and JWT signing keys",
                               secret=True)
    http_host: str = _setting("PULSE_HTTP_HOST", "127.0.0.1", _parse_nonempty, "address pulse web binds")
    http_port: int = _setting("PULSE_HTTP_PORT", 8080, _parse_int(0, 65535), "port pulse web binds")
    public_url: str | None = _setting("PULSE_PUBLIC_URL", None, _parse_nonempty,
                                      "external base URL used in links and as the token issuer")
    health_host: str = _setting("PULSE_HEALTH_HOST", "127.0.0.1", _parse_nonempty,
                                "address worker health endpoints bind")
    health_port: int | None = _setting("PULSE_HEALTH_PORT", None, _parse_int(0, 65535),
                                       "health/metrics port of a worker process (default per type, 0=any)")
    log_format: str | None = _setting("PULSE_LOG_FORMAT", None, _parse_choice("json", "text"),
                                      "json or text (default: json in production, text otherwise)")
    log_level: str = _setting("PULSE_LOG_LEVEL", "info", _parse_choice("debug", "info", "warning", "error"),
                              "log level")
    jwt_issuer: str | None = _setting("PULSE_JWT_ISSUER", None, _parse_nonempty,
                                      "expected iss of access tokens (default: the built-in identity)")
    jwt_audience: str = _setting("PULSE_JWT_AUDIENCE", "pulse", _parse_nonempty, "expected aud of access tokens")
    jwt_jwks_url: str | None = _setting("PULSE_JWT_JWKS_URL", None, _parse_nonempty,
                                        "JWKS of an external OIDC provider (unset: built-in identity)")
    oidc_client_id: str | None = _setting(
        "PULSE_OIDC_CLIENT_ID", None, _parse_nonempty,
        "client id of the web app at the external OIDC provider: a public client with authorization code + PKCE "
        "(Keycloak: pulse-web); used only with PULSE_JWT_JWKS_URL, unset there the web app cannot sign in")
    oidc_issuer: str | None = _setting(
        "PULSE_OIDC_ISSUER", None, _parse_http_url,
        "issuer URL of the OIDC provider as browsers reach it; the web app reads <issuer>/.well-known/"
        "openid-configuration (unset: PULSE_JWT_ISSUER)")
    oidc_scopes: tuple[str, ...] = _setting(
        "PULSE_OIDC_SCOPES", ("openid", "profile", "email"), _parse_scopes,
        "scopes the web app asks the OIDC provider for, space- or comma-separated (must include openid)")
    access_token_ttl_s: int = _setting("PULSE_ACCESS_TOKEN_TTL_S", 900, _parse_int(60, 86400),
                                       "lifetime of built-in access tokens")
    refresh_token_ttl_s: int = _setting("PULSE_REFRESH_TOKEN_TTL_S", 7 * 86400, _parse_int(300, 90 * 86400),
                                        "lifetime of built-in refresh tokens")
    telemetry_retention_days: int = _setting("PULSE_TELEMETRY_RETENTION_DAYS", 90, _parse_int(1, 3650),
                                             "days of telemetry kept")
    subscription_grace_days: int = _setting("PULSE_SUBSCRIPTION_GRACE_DAYS", 14, _parse_int(0, 365),
                                            "grace days of new subscriptions: after the term ends, days in GRACE "
                                            "before SUSPENDED")
    subscription_expire_after_days: int = _setting("PULSE_SUBSCRIPTION_EXPIRE_AFTER_DAYS", 30, _parse_int(0, 3650),
                                                   "days a subscription stays SUSPENDED after its grace period "
                                                   "before it is EXPIRED")
    ingest_batch_size: int = _setting("PULSE_INGEST_BATCH_SIZE", 2000, _parse_int(1, 100000),
                                      "rows per COPY batch")
    ingest_flush_ms: int = _setting("PULSE_INGEST_FLUSH_MS", 100, _parse_int(1, 60000),
                                    "longest a row waits before its batch is written")
    ingest_rate_per_s: float = _setting("PULSE_INGEST_RATE_PER_S", 50.0, _parse_float(0.001),
                                        "sustained messages per second one device may send (token bucket)")
    ingest_burst: float = _setting("PULSE_INGEST_BURST", 100.0, _parse_float(1.0),
                                   "messages one device may send at once above its rate")
    ingest_shared_group: str = _setting("PULSE_INGEST_SHARED_GROUP", "pulse-ingest", _parse_nonempty,
                                        "MQTT 5 shared subscription group of ingest workers")
    evaluate_poll_ms: int = _setting("PULSE_EVALUATE_POLL_MS", 1000, _parse_int(10, 60000),
                                     "longest the evaluator sleeps without a wake-up")
    evaluate_chunk: int = _setting("PULSE_EVALUATE_CHUNK", 1000, _parse_int(1, 10000),
                                   "devices judged per evaluation transaction (smaller: each commit comes sooner; "
                                   "larger: fewer database round trips)")
    evaluate_rebalance_s: float = _setting("PULSE_EVALUATE_REBALANCE_S", 2.0, _parse_float(0.5, 5.0),
                                           "how often each evaluator beats and rebalances its device partitions; "
                                           "use the same value on every evaluator")
    deliver_poll_ms: int = _setting("PULSE_DELIVER_POLL_MS", 1000, _parse_int(10, 60000),
                                    "longest the deliverer sleeps without a wake-up")
    deliver_retry_base_s: float = _setting("PULSE_DELIVER_RETRY_BASE_S", 30.0, _parse_float(0.01),
                                           "first retry delay of a failed notification; doubles each attempt")
    deliver_retry_cap_s: float = _setting("PULSE_DELIVER_RETRY_CAP_S", 7200.0, _parse_float(0.01),
                                          "longest delay between two attempts of a notification")
    deliver_lease_s: int = _setting("PULSE_DELIVER_LEASE_S", 60, _parse_int(5, 3600),
                                    "how long a claimed notification is leased; a crashed deliverer's jobs are "
                                    "sent again after it")
    deliver_max_attempts: int = _setting("PULSE_DELIVER_MAX_ATTEMPTS", 8, _parse_int(1, 100),
                                         "attempts before a notification is dead-lettered (8 at the default "
                                         "backoff span about an hour)")
    allow_private_urls: tuple[str, ...] = _setting(
        "PULSE_ALLOW_PRIVATE_URLS", (), _parse_list,
        "comma list of address classes channel URLs may reach: loopback, private, link-local")
    cors_origins: tuple[str, ...] = _setting(
        "PULSE_CORS_ORIGINS", (), _parse_origins,
        "comma list of browser origins (https://app.example.com) allowed to call the API cross-origin; "
        "empty: no CORS headers (same-origin only)")
    smtp_url: str | None = _setting(
        "PULSE_SMTP_URL", None, _parse_smtp_url,
        "SMTP relay for pages to users' email contact methods: smtp+starttls://user:pass@host:587, "
        "smtps://user:pass@host:465 or smtp://127.0.0.1:25 (plain, loopback only)", secret=True)
    smtp_from: str = _setting("PULSE_SMTP_FROM", "pulse@localhost", _parse_nonempty,
                              "From address of pages sent to users' email contact methods")
    pagerduty_events_url: str = _setting("PULSE_PAGERDUTY_EVENTS_URL", "https://events.pagerduty.com/v2/enqueue",
                                         _parse_nonempty,
                                         "PagerDuty Events API v2 endpoint for users' PagerDuty contact methods")
    demo: bool = _setting("PULSE_DEMO", False, _parse_bool, "seed a demo tenant, login and devices at start")
    spa_dist: str | None = _setting("PULSE_SPA_DIST", None, _parse_nonempty,
                                    "built web app that pulse web serves at /app (default: spa/dist of the source "
                                    "tree)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = None) -> Settings:
        """Build and validate settings; raise SettingsError naming the variable on a bad value."""
        values: dict[str, str] = {}
        file_path = env_file or (environ or os.environ).get("PULSE_ENV_FILE")
        if file_path:
            values.update(_read_env_file(Path(file_path)))
        values.update({k: v for k, v in (environ if environ is not None else os.environ).items()
                       if k.startswith("PULSE_")})
        kwargs: dict[str, Any] = {}
        known = set()
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            known.add(name)
            if name in values and values[name] != "":
                try:
                    kwargs[f.name] = f.metadata["parse"](values[name])
                except ValueError as exc:
                    shown = "<hidden>" if f.metadata["secret"] else repr(values[name])
                    raise SettingsError(f"{name}={shown} is invalid: {exc}") from None
        known |= {"PULSE_ENV_FILE"}
        unknown = sorted(k for k in values if k.startswith("PULSE_") and k not in known)
        if unknown:
            raise SettingsError(f"unknown setting {unknown[0]} (see `pulse --help` for the list)")
        settings = cls(**kwargs)
        settings._check_production()
        settings._check_oidc()
        return settings

    def _check_oidc(self) -> None:
        if self.web_oidc_client_id and not self.web_oidc_issuer:
            raise SettingsError("PULSE_OIDC_CLIENT_ID needs the provider's issuer: set PULSE_OIDC_ISSUER or "
                                "PULSE_JWT_ISSUER (e.g. https://sso.example.com/realms/pulse)")

    def _check_production(self) -> None:
        if self.env != "production":
            return
        defaults = {"PULSE_ADMIN_KEY": (self.admin_key, DEV_ADMIN_KEY),
                    "PULSE_SECRET_KEY": (self.secret_key, DEV_SECRET_KEY),
                    "PULSE_MQTT_INGEST_PASSWORD": (self.mqtt_ingest_password, DEV_MQTT_INGEST_PASSWORD)}
        for name, (value, default) in defaults.items():
            if value == default:
                raise SettingsError(f"{name} must be set to a secret of your own in production "
                                    "(PULSE_ENV=production refuses the development default)")

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SettingsError("PULSE_DATABASE_URL is not set (e.g. postgresql://pulse@127.0.0.1:5432/pulse)")
        return self.database_url

    def require_mqtt_url(self) -> str:
        if not self.mqtt_url:
            raise SettingsError("PULSE_MQTT_URL is not set (e.g. mqtt://pulse-ingest@127.0.0.1:1883)")
        return self.mqtt_url

    def health_port_for(self, process_type: str) -> int:
        if self.health_port is not None:
            return self.health_port
        return _PROCESS_HEALTH_PORTS.get(process_type, 0)

    @property
    def effective_log_format(self) -> str:
        return self.log_format or ("json" if self.env == "production" else "text")

    @property
    def secret_key_bytes(self) -> bytes:
        v = self.secret_key
        return base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

    @property
    def issuer(self) -> str:
        return self.jwt_issuer or self.base_url

    @property
    def web_oidc_client_id(self) -> str | None:
        """The web app's OIDC client id, when the web app signs in through an external provider."""
        return self.oidc_client_id if self.jwt_jwks_url else None

    @property
    def web_oidc_issuer(self) -> str | None:
        """Where the web app's browser finds the provider (its discovery document), with an external provider."""
        if not self.jwt_jwks_url:
            return None
        issuer = self.oidc_issuer or self.jwt_issuer
        return issuer.rstrip("/") if issuer else None

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def _read_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise SettingsError(f"PULSE_ENV_FILE={str(path)!r} is not a readable file")
    out: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ENV_LINE.match(line)
        if not m:
            raise SettingsError(f"{path}:{lineno}: expected NAME=value")
        value = m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[m.group(1)] = value
    return out


def settings_help(names: tuple[str, ...] | None = None) -> str:
    """A table of settings (name, default, meaning) for --help texts."""
    lines = []
    for f in dataclasses.fields(Settings):
        name = f.metadata["env"]
        if names is not None and name not in names:
            continue
        default = "<dev default>" if f.metadata["secret"] else f.default
        if default in (None, ()):
            default = "-"
        elif isinstance(default, tuple):
            default = ",".join(default)
        lines.append(f"  {name:<32} {f.metadata['doc']} (default: {default})")
    return "\n".join(lines)
