"""deploy/docker-compose.yml, the Dockerfile, the Procfile, deploy/env.example and the Keycloak realm, checked for
completeness without a Docker engine: every process type is a service, every variable is documented and every
setting reaches every Pulse process with a value Pulse accepts, every dependency and mounted file exists."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # PyYAML comes with Litestar

from pulse.db import database_target
from pulse.settings import Settings
from tests.conftest import free_port
from tests.deploy.conftest import DEPLOY, ROOT

COMPOSE_TEXT = (DEPLOY / "docker-compose.yml").read_text()
COMPOSE_CODE = "\n".join(line for line in COMPOSE_TEXT.splitlines() if not line.lstrip().startswith("#"))
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
PROCESS_TYPES = ("web", "ingest", "evaluate", "escalate", "deliver", "schedule")
SETTINGS = {f.metadata["env"] for f in dataclasses.fields(Settings)}
# Left to each process type's own default on purpose (a per-process health port), so not passed by compose.
NOT_PASSED = {"PULSE_HEALTH_PORT"}
ENV_EXAMPLE = (DEPLOY / "env.example").read_text()
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.splitlines():
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            values[m.group(1)] = m.group(2)
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and ${VAR?error}, nested defaults too."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if not value.startswith("${", i):
            out.append(value[i])
            i += 1
            continue
        depth, j = 1, i + 2
        while depth:
            depth += {"{": 1, "}": -1}.get(value[j], 0)
            j += 1
        body = value[i + 2:j - 1]
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?$", body, re.S)
        assert m, f"bad interpolation ${{{body}}}"
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":?", "?") and unset:
            raise AssertionError(f"compose needs {name}: {arg}")
        out.append(interpolate(arg, env) if op in (":-", "-") and unset else (current or ""))
        i = j
    return "".join(out)


def compose_env() -> dict[str, str]:
    """deploy/.env as an operator makes it from env.example: every change-me replaced, a secret key generated."""
    env = {k: v.replace("change-me", "s3cret") for k, v in _env_example().items()}
    env["PULSE_SECRET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    return env


def pulse_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in SERVICES.items() if s.get("image", "").startswith("${APP_IMAGE")}


def test_every_process_type_is_a_service_after_migrate() -> None:
    for process in PROCESS_TYPES:
        service = SERVICES[process]
        assert service["command"][:2] == ["pulse", process], process
        assert service["restart"] == "unless-stopped"
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully", process
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["pulse", "migrate"] and migrate["restart"] == "no"
    simulators = [s for s in SERVICES.values() if s.get("command", [None, None])[:2] == ["pulse", "simulate"]]
    assert len(simulators) == 1 and simulators[0]["profiles"] == ["simulator"]
    for name in ("postgres", "pgbouncer", "mqtt", "keycloak", "caddy"):
        assert name in SERVICES
    database = interpolate(SERVICES["postgres"]["image"], compose_env())
    assert database.startswith("timescale/timescaledb:") and database.endswith("-pg15")


def test_health_checks_ask_each_process_its_readiness() -> None:
    ports = {"web": 8080, **{p: Settings().health_port_for(p) for p in PROCESS_TYPES if p != "web"}}
    for process, port in ports.items():
        check = " ".join(SERVICES[process]["healthcheck"]["test"])
        assert "/readyz" in check, process
        assert f"127.0.0.1:{port}/readyz" in check or f"127.0.0.1:{{{port} + i}}/readyz" in check, process
    for name, service in SERVICES.items():
        if service.get("restart") != "no" and "profiles" not in service:
            assert "healthcheck" in service, name


def test_every_pulse_setting_reaches_every_pulse_process_and_is_accepted() -> None:
    env = compose_env()
    for name, service in pulse_services().items():
        given = service["environment"]
        assert SETTINGS - NOT_PASSED <= set(given), (name, sorted(SETTINGS - NOT_PASSED - set(given)))
        values = {k: interpolate(str(v), env) for k, v in given.items() if k.startswith("PULSE_")}
        settings = Settings.from_env(values)  # raises SettingsError naming a bad value
        assert settings.env == "production" and settings.public_url == "https://localhost", name
        target = database_target(settings.require_database_url())
        pooled = name not in ("evaluate", "deliver")  # session-level advisory locks need a session of their own
        assert target.pgbouncer is pooled, name
        assert target.direct_url.startswith("postgresql://pulse:") and "@postgres:5432/pulse" in target.direct_url
        assert settings.jwt_issuer == "https://localhost/realms/pulse", name
        assert settings.jwt_jwks_url == "http://keycloak:8080/realms/pulse/protocol/openid-connect/certs", name
    # an empty value in deploy/.env turns Keycloak off for Pulse's built-in identity
    web = SERVICES["web"]["environment"]
    builtin = {**env, "PULSE_JWT_ISSUER": "", "PULSE_JWT_JWKS_URL": ""}
    assert interpolate(web["PULSE_JWT_ISSUER"], builtin) == interpolate(web["PULSE_JWT_JWKS_URL"], builtin) == ""


def test_only_real_settings_are_named_and_every_variable_is_documented() -> None:
    named = set(re.findall(r"\bPULSE_[A-Z0-9_]+", COMPOSE_TEXT))  # comments included
    assert named <= SETTINGS, sorted(named - SETTINGS)
    documented = set(_env_example()) | set(re.findall(r"^#\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE, re.M))
    used = set(_VAR.findall(COMPOSE_CODE))
    assert used <= documented, sorted(used - documented)
    assert SETTINGS <= documented, sorted(SETTINGS - documented)
    # env.example is also a pulse --env-file: only known PULSE_* names, every value accepted
    Settings.from_env({"PULSE_ENV": "test"}, env_file=DEPLOY / "env.example")


def test_dependencies_ports_and_mounted_files_exist() -> None:
    env = compose_env()
    for name, service in SERVICES.items():
        for target in service.get("depends_on", {}):
            assert target in SERVICES, f"{name} depends on unknown {target}"
    published = [interpolate(p, env).split(":")[0] for s in SERVICES.values() for p in s.get("ports", [])]
    assert sorted(published) == sorted(set(published)) == ["1883", "443", "80"]
    named = set(COMPOSE["volumes"])
    for name, service in SERVICES.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in named, f"{name} mounts undeclared volume {source}"
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), name

    def cycle(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"dependency cycle {(*path, node)}"
        for nxt in SERVICES[node].get("depends_on", {}):
            cycle(nxt, (*path, node))

    for name in SERVICES:
        cycle(name, ())


def test_the_edge_pooler_and_realm_are_the_tested_files() -> None:
    def mounts(service: str) -> dict[str, Path]:
        return {m.split(":")[1]: (DEPLOY / m.split(":")[0]).resolve() for m in SERVICES[service]["volumes"]
                if m.startswith(".")}

    assert mounts("caddy")["/etc/caddy/Caddyfile"] == (DEPLOY / "caddy/Caddyfile").resolve()
    assert mounts("pgbouncer")["/etc/pgbouncer/pgbouncer.ini"] == (DEPLOY / "pgbouncer/pgbouncer.ini").resolve()
    realm_file = "/opt/keycloak/data/import/pulse-realm.json"
    assert mounts("keycloak")[realm_file] == (DEPLOY / "keycloak/pulse-realm.json").resolve()
    assert "--import-realm" in SERVICES["keycloak"]["command"]
    caddy = SERVICES["caddy"]["environment"]
    assert (caddy["WEB_UPSTREAM"], caddy["KEYCLOAK_UPSTREAM"]) == ("web:8080", "keycloak:8080")
    assert SERVICES["web"]["environment"]["PULSE_HTTP_PORT"] == "8080"


def test_keycloak_realm_gives_pulse_the_token_it_expects() -> None:
    realm = json.loads((DEPLOY / "keycloak/pulse-realm.json").read_text())
    assert realm["realm"] == "pulse" and realm["enabled"] and realm["registrationAllowed"] is False
    assert {r["name"] for r in realm["roles"]["realm"]} == {"customer", "tenant-admin", "operator", "operator-admin"}
    (client,) = realm["clients"]
    assert client["publicClient"] and client["standardFlowEnabled"]
    assert not client["implicitFlowEnabled"] and not client["directAccessGrantsEnabled"]
    assert client["attributes"]["pkce.code.challenge.method"] == "S256"
    assert client["redirectUris"] == ["${WEB_ORIGIN}/app/*"] and "WEB_ORIGIN" in SERVICES["keycloak"]["environment"]
    # the web app signs in as this client: its callback /app/auth/callback, back to /app/login after signing out
    web = Settings.from_env({k: interpolate(str(v), compose_env()) for k, v in SERVICES["web"]["environment"].items()
                             if k.startswith("PULSE_")})
    assert web.web_oidc_client_id == client["clientId"] and web.web_oidc_issuer == web.jwt_issuer
    assert client["attributes"]["post.logout.redirect.uris"] == "${WEB_ORIGIN}/app/*"
    assert {"roles", "basic", "email", "profile"} <= set(client["defaultClientScopes"])  # realm_access.roles, sub
    mappers = {m["protocolMapper"]: m["config"] for m in client["protocolMappers"]}
    tenant = mappers["oidc-usermodel-attribute-mapper"]
    assert (tenant["user.attribute"], tenant["claim.name"], tenant["access.token.claim"]) == (
        "tenant_id", "tenant_id", "true")
    audience = mappers["oidc-audience-mapper"]
    assert audience["included.custom.audience"] == Settings().jwt_audience and audience["access.token.claim"] == "true"
    # users can see their tenant but never change it themselves
    (profile_component,) = realm["components"]["org.keycloak.userprofile.UserProfileProvider"]
    profile = json.loads(profile_component["config"]["kc.user.profile.config"][0])
    (attribute,) = [a for a in profile["attributes"] if a["name"] == "tenant_id"]
    assert attribute["permissions"]["edit"] == ["admin"]


def test_the_image_builds_the_web_app_and_installs_pulse() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", dockerfile, re.M)
    assert len(stages) >= 3 and stages[0][0].startswith("node:") and stages[0][1] == "spa"
    assert "npm ci" in dockerfile and "npm run build" in dockerfile
    assert "COPY --from=spa /src/spa/dist /app/spa/dist" in dockerfile
    assert "pip install" in dockerfile and re.search(r"^USER pulse$", dockerfile, re.M)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for secret_or_bulk in ("**/.env", ".git", ".venv", "**/node_modules", "tests"):
        assert secret_or_bulk in ignored


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_procfile_has_every_process_type_and_the_release_step() -> None:
    procfile = _procfile()
    assert set(procfile) == {*PROCESS_TYPES, "release"}
    assert procfile["release"] == "pulse migrate"
    for process in PROCESS_TYPES:
        assert re.search(rf"(^|\s)pulse {process}\b", procfile[process]), process


def test_procfile_web_serves_on_the_platforms_port(database_url: str, tmp_path: Path) -> None:
    """The web line as a PaaS runs it (a shell, PORT set by the platform) serves on that port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PORT": str(port), "PULSE_DATABASE_URL": database_url, "PULSE_ENV": "test",
                "PULSE_LOG_LEVEL": "warning", "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"})
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["sh", "-c", _procfile()["web"]], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        answer = None
        deadline = time.monotonic() + 60
        while answer is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0)
            except httpx.TransportError:
                time.sleep(0.1)
        assert answer is not None and answer.status_code == 200, log.read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the shell and pulse web under it
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.mark.parametrize("value", ["${A}", "${A:-x}", "${B:-x}", "${B-x}", "${C:-${A}y}", "$${A}"])
def test_interpolation_follows_compose(value: str) -> None:
    env = {"A": "a", "B": ""}
    assert interpolate(value, env) == {"${A}": "a", "${A:-x}": "a", "${B:-x}": "x", "${B-x}": "",
                                       "${C:-${A}y}": "ay", "$${A}": "${A}"}[value]
