"""Role matrix per route: each of customer, tenant-admin, operator and operator-admin gets exactly what the route's
guards allow, and the roles table of docs/api.md says the same."""

from __future__ import annotations

import fnmatch
import re
import uuid
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.settings import Settings
from tests.security.inventory import ENDPOINTS, ROLES, Endpoint, select
from tests.security.world import World
from tests.web.conftest import bearer, token_for

Client = AsyncTestClient[Litestar]
API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
GUARDED = select("tenant", "operator")


def unknown_ids(endpoint: Endpoint) -> dict[str, str]:
    """Path values naming nothing: an allowed caller gets past the guards to a 404 (or 400), never a change."""
    return {p: (str(uuid.uuid4()) if p.endswith("_id") and p not in ("device_id", "site_id", "tenant_id",
                                                                      "template_id") else f"no-such-{p[:-3]}")
            for p in endpoint.path_params}


def test_every_guarded_route_admits_someone() -> None:
    for endpoint in GUARDED:
        assert endpoint.roles, f"{endpoint.id}: its guards together admit no role"


@pytest.mark.parametrize("endpoint", GUARDED, ids=lambda e: e.id)
async def test_each_role_gets_what_the_guards_allow(api: Client, world: World, endpoint: Endpoint) -> None:
    assert endpoint.roles is not None
    url = endpoint.url(unknown_ids(endpoint))
    body = {} if endpoint.has_body else None
    anonymous = await api.request(endpoint.method, url, json=body)
    assert anonymous.status_code == 401, f"no token: {anonymous.status_code} {anonymous.text}"
    for role in ROLES:
        response = await api.request(endpoint.method, url, headers=bearer(world.token(role)), json=body)
        where = f"{role}: {endpoint.method} {url} -> {response.status_code} {response.text}"
        assert response.status_code < 500, where
        if role in endpoint.roles:
            assert response.status_code not in (401, 403), where
        else:
            assert response.status_code == 403, where
            assert response.json()["error"]["code"] == "forbidden", where


async def test_a_tenant_role_without_a_tenant_claim_is_refused(api: Client, engine: AsyncEngine,
                                                               settings: Settings) -> None:
    token = await token_for(engine, settings, tenant_id=None, roles=["tenant-admin", "customer"])
    for path in ("/api/v2/devices", "/customer/channels", "/customer/users"):
        response = await api.get(path, headers=bearer(token))
        assert response.status_code == 403, response.text


async def test_customers_change_only_their_own_contact_methods_and_rules(api: Client, world: World) -> None:
    a = world.a
    other = await api.post("/customer/users", headers=a.headers(), json={
        "email": f"other-{uuid.uuid4().hex[:8]}@example.test", "roles": ["customer"]})
    assert other.status_code == 201, other.text
    other_id = other.json()["user_id"]
    own = a.headers("own-customer")
    hook = {"kind": "WEBHOOK", "address": "http://127.0.0.1:9/own", "secrets": {"secret": "sixteen-characters-x"}}

    mine = await api.post(f"/customer/users/{a.customer_user_id}/contact-methods", headers=own, json=hook)
    theirs = await api.post(f"/customer/users/{other_id}/contact-methods", headers=own, json=hook)
    by_admin = await api.post(f"/customer/users/{other_id}/contact-methods", headers=a.headers(), json=hook)
    assert mine.status_code == 201, mine.text
    assert theirs.status_code == 403, theirs.text
    assert by_admin.status_code == 201, by_admin.text
    their_contact = by_admin.json()["contact_id"]
    for method, path, body in (
            ("PATCH", f"/customer/users/{other_id}/contact-methods/{their_contact}", {"label": "mine now"}),
            ("DELETE", f"/customer/users/{other_id}/contact-methods/{their_contact}", None),
            ("POST", f"/customer/users/{other_id}/notification-rules", {"contact_id": their_contact})):
        response = await api.request(method, path, headers=own, json=body)
        assert response.status_code == 403, f"{method} {path}: {response.text}"
    still = await api.get(f"/customer/users/{other_id}/contact-methods/{their_contact}", headers=own)
    assert still.status_code == 200 and still.json()["label"] is None


@pytest.mark.parametrize("endpoint", select("admin-key"), ids=lambda e: e.id)
async def test_admin_routes_need_the_admin_key(api: Client, world: World, settings: Settings,
                                               endpoint: Endpoint) -> None:
    url = endpoint.url(unknown_ids(endpoint))
    for headers in ({}, {"X-Admin-Key": ""}, {"X-Admin-Key": "wrong-key-wrong-key"},
                    {"X-Admin-Key": settings.admin_key + "x"}, {"X-Admin-Key": settings.admin_key[:-1]},
                    bearer(world.operator_admin), {"Authorization": f"Bearer {settings.admin_key}"}):
        response = await api.request(endpoint.method, url, headers=headers, json={})
        assert response.status_code == 401, f"{headers}: {response.status_code} {response.text}"
        assert response.json()["error"]["code"] == "unauthorized"
    right = await api.request(endpoint.method, url, headers={"X-Admin-Key": settings.admin_key}, json={})
    assert right.status_code not in (401, 403) and right.status_code < 500, right.text


# --- the roles table of docs/api.md ------------------------------------------------------------------------------

_ROW = re.compile(r"^\|(?P<cells>.+)\|\s*$")


def doc_table() -> list[tuple[list[tuple[str, str]], dict[str, str], str]]:
    """Rows of the roles table: (patterns (method, path glob), role cells, credentials)."""
    text = API_DOC.read_text()
    section = text.split("\n## Roles\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = _ROW.match(line)
        if not match or "`" not in line:
            continue
        cells = [c.strip() for c in match.group("cells").split("|")]
        patterns = [tuple(p.split(" ", 1)) for p in re.findall(r"`([^`]+)`", cells[0])]
        rows.append(([(m, p) for m, p in patterns], dict(zip(ROLES, cells[1:5], strict=True)), cells[5]))
    assert rows, "docs/api.md has no roles table"
    return rows


def documented(endpoint: Endpoint) -> tuple[frozenset[str], str]:
    for patterns, cells, credentials in doc_table():
        for method, glob in patterns:
            if method in ("*", endpoint.method) and fnmatch.fnmatchcase(endpoint.path, glob):
                if method == "*" and endpoint.method == "WS":
                    continue
                return frozenset(r for r, c in cells.items() if c in ("yes", "own")), credentials
    raise AssertionError(f"{endpoint.id} matches no row of the roles table in docs/api.md")


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.id)
def test_the_roles_table_in_the_docs_matches_the_guards(endpoint: Endpoint) -> None:
    roles, credentials = documented(endpoint)
    assert credentials == endpoint.credentials, f"{endpoint.id}: docs say {credentials}, route needs " \
                                                f"{endpoint.credentials}"
    assert roles == (endpoint.roles or frozenset()), f"{endpoint.id}: docs say {sorted(roles)}, guards allow " \
                                                     f"{sorted(endpoint.roles or ())}"
