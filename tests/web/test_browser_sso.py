"""Single sign-on in a real browser: the web app signs in at a real OpenID Connect provider with authorization code
+ PKCE, shows its tenant's devices, renews its access token with the refresh token, and signs out at the provider.

The provider is panva's certified oidc-provider (spa/e2e/oidc-provider.mjs) standing in for the Keycloak realm of
deploy/keycloak: a public client `pulse-web` with PKCE, JWT access tokens for audience `pulse` carrying `tenant_id`
and `roles`. `pulse web` runs as a process configured for it as an operator would (PULSE_JWT_JWKS_URL,
PULSE_JWT_ISSUER, PULSE_OIDC_CLIENT_ID); Debian's chromium is driven by playwright-core (spa/e2e/sso.mjs).

Needs the built app (spa/dist), spa/node_modules (playwright-core, oidc-provider), node and /usr/bin/chromium.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.settings import DEV_ADMIN_KEY
from tests.conftest import free_port, make_tenant
from tests.test_end_to_end import Processes, wait_for
from tests.web.browser_setup import CHROMIUM, SPA, require_browser_setup

pytestmark = pytest.mark.slow

CLIENT_ID = "pulse-web"  # the client of deploy/keycloak/pulse-realm.json
ACCESS_TTL_S = 75  # renewal starts 60 s before expiry: the browser sees one within about 15 s
SCRIPT_TIMEOUT_S = 150


class Provider:
    """spa/e2e/oidc-provider.mjs as a child process: its issuer and the events it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.issuer = ""
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            while not self.issuer:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise AssertionError(f"the OIDC provider exited: {self.lines}")
                self.lines.append(line.rstrip("\n"))
                if line.startswith("READY "):
                    self.issuer = line.split(" ", 1)[1].strip()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode().rstrip("\n"))

    def events(self, name: str) -> list[str]:
        return [line for line in self.lines if line.startswith(f"EVENT {name}")]

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
        await self.proc.wait()
        if self._reader is not None:
            await self._reader


@pytest.fixture
async def provider_for() -> AsyncIterator[list[Provider]]:
    started: list[Provider] = []
    yield started
    for provider in started:
        await provider.stop()


async def _start_provider(node: str, web_origin: str, accounts: dict[str, object]) -> Provider:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "OIDC_"))},
           "OIDC_PORT": "0", "OIDC_CLIENT_ID": CLIENT_ID, "OIDC_WEB_ORIGIN": web_origin,
           "OIDC_AUDIENCE": "pulse", "OIDC_ACCESS_TTL_S": str(ACCESS_TTL_S), "OIDC_ACCOUNTS": json.dumps(accounts)}
    proc = await asyncio.create_subprocess_exec(
        node, str(SPA / "e2e" / "oidc-provider.mjs"), cwd=str(SPA), env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    provider = Provider(proc)
    await provider.wait_ready()
    return provider


async def _run_browser(node: str, env: dict[str, str]) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        node, str(SPA / "e2e" / "sso.mjs"), cwd=str(SPA), env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    out: list[str] = []
    try:
        async with asyncio.timeout(SCRIPT_TIMEOUT_S):
            while line_bytes := await proc.stdout.readline():
                line = line_bytes.decode().rstrip("\n")
                out.append(line)
                print(line)
            code = await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        code = -9
    return code, out


async def test_single_sign_on_with_pkce_shows_the_tenants_devices_and_signs_out(
        engine: AsyncEngine, database_url: str, provider_for: list[Provider], tmp_path: Path) -> None:
    node = require_browser_setup("the single sign-on browser test", ("oidc-provider",))
    tenant = await make_tenant(engine, prefix="sso")
    other = await make_tenant(engine, prefix="sso")
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    email = f"ada@{tenant.tenant_id}.example"
    provider = await _start_provider(node, base, {"ada": {
        "email": email, "name": "Ada Lovelace", "tenant_id": tenant.tenant_id, "roles": ["tenant-admin"]}})
    provider_for.append(provider)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_ENV": "test", "PULSE_DATABASE_URL": database_url, "PULSE_HTTP_PORT": str(http_port),
                "PULSE_HEALTH_PORT": "0", "PULSE_LOG_LEVEL": "warning",
                "PULSE_INGEST_SHARED_GROUP": f"sso-{http_port}",
                # as docs/operations.md says for Keycloak: tokens from the provider, the web app its client
                "PULSE_JWT_JWKS_URL": f"{provider.issuer}/jwks", "PULSE_JWT_ISSUER": provider.issuer,
                "PULSE_JWT_AUDIENCE": "pulse", "PULSE_OIDC_CLIENT_ID": CLIENT_ID})
    procs = Processes(env)
    artifacts = Path(os.environ.get("PULSE_E2E_ARTIFACTS") or tmp_path / "screenshots")
    devices = ["sso-freezer-1", "sso-freezer-2"]
    try:
        procs.start("web", "web")

        def web_up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        await asyncio.to_thread(wait_for, web_up, "pulse web to answer /healthz", 60)
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            config = (await http.get("/auth/config")).json()
            assert config == {"method": "oidc", "oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID,
                                                         "scopes": ["openid", "profile", "email"]}}
            assert (await http.post("/auth/login", json={"email": email, "password": "x" * 12})).status_code == 404
            # The tenant's devices, and one of another tenant the signed-in user must not see.
            for tenant_id, device_id in [*((tenant.tenant_id, d) for d in devices), (other.tenant_id, "sso-other")]:
                made = await http.post("/api/admin/devices", headers={"X-Admin-Key": DEV_ADMIN_KEY},
                                       json={"tenant_id": tenant_id, "device_id": device_id, "name": device_id})
                assert made.status_code == 201, made.text

        script_env = {**{k: v for k, v in os.environ.items() if not k.startswith("PULSE_")},
                      "PULSE_E2E_BASE": base, "PULSE_E2E_ISSUER": provider.issuer, "PULSE_E2E_CLIENT_ID": CLIENT_ID,
                      "PULSE_E2E_LOGIN": "ada", "PULSE_E2E_DEVICES": ",".join(devices), "PULSE_E2E_RENEW": "1",
                      "PULSE_E2E_ARTIFACTS": str(artifacts), "PULSE_E2E_CHROMIUM": CHROMIUM}
        code, out = await _run_browser(node, script_env)
    finally:
        codes = procs.stop_all()
    print(f"screenshots: {artifacts}")
    web_log = procs.output("web")[-3000:]
    assert code == 0, f"browser script failed ({code}):\n" + "\n".join(out[-30:]) + f"\nweb: {web_log}\n" \
                      f"provider: {provider.lines[-20:]}"
    result = json.loads(next(line for line in reversed(out) if line.startswith("RESULT ")).removeprefix("RESULT "))

    assert result["provider_url"] == provider.issuer and result["password_form_shown"] is False
    assert result["devices_shown"] == len(devices)  # the tenant's, not the other tenant's
    assert result["claims"]["tenant_id"] == tenant.tenant_id and result["claims"]["roles"] == ["tenant-admin"]
    assert result["account_label"] == email and result["has_refresh_token"]
    assert result["renewed"] and result["renewed_claims"]["tenant_id"] == tenant.tenant_id
    assert result["devices_after_renewal"] == len(devices)
    assert result["session_after_logout"] is False
    assert result["old_refresh"] == {"status": 400, "error": "invalid_grant"}
    assert result["page_errors"] == []
    assert provider.events("grant.success authorization_code") and provider.events("grant.success refresh_token")
    assert provider.events("revocation 200 refresh_token") and provider.events("end_session.success")
    assert all(Path(p).is_file() for p in result["screenshots"])
    assert codes == {"web": 0}, web_log
