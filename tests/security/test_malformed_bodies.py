"""Malformed and oversized input in every string of every request body: each documented example body is sent with
one string at a time replaced by text holding NUL (PostgreSQL text cannot store it), by 100,000 characters, and by
a wrong type. Answers are 4xx naming a field, or (for long text) a success; never a 5xx."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.settings import Settings
from pulse.web.routes.examples import request_examples
from tests.security.inventory import ENDPOINTS, Endpoint
from tests.security.world import TenantWorld, build_tenant
from tests.web.conftest import bearer, token_for

Client = AsyncTestClient[Litestar]
EXAMPLES = request_examples()


def _body_type(endpoint: Endpoint) -> type | None:
    field = endpoint.handler.parsed_fn_signature.parameters["data"]
    types = [a for a in getattr(field.annotation, "__args__", (field.annotation,)) if a is not type(None)]
    return types[0] if types else None


BODY_ROUTES = [e for e in ENDPOINTS if e.has_body and _body_type(e) in EXAMPLES]


def string_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Where the strings of a JSON value are (dict keys are not followed; list items are)."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from string_paths(item, (*path, i))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    out = copy.deepcopy(value)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return out


@pytest.fixture(scope="module")
async def victim(api: Client, engine: AsyncEngine, settings: Settings) -> AsyncIterator[tuple[TenantWorld, dict[str,
                                                                                                             str]]]:
    tenant = await build_tenant(api, engine, settings, "mal")
    headers = {"operator": bearer(await token_for(engine, settings, tenant_id=None, roles=["operator-admin"])),
               "admin-key": {"X-Admin-Key": settings.admin_key}}
    yield tenant, headers


def _request(endpoint: Endpoint, tenant: TenantWorld, extra: dict[str, dict[str, str]]) -> tuple[str, dict[str, str]]:
    ids = {**tenant.ids, "tenant_id": tenant.tenant_id, "template_id": "high-temperature",
           "subscription_id": "00000000-0000-4000-8000-000000000000"}
    if "/notification-rules/" in endpoint.path:
        ids["rule_id"] = tenant.ids["notification_rule_id"]
    headers = {"tenant": tenant.headers(), "operator": extra["operator"], "admin-key": extra["admin-key"]}
    return endpoint.url(ids), headers.get(endpoint.kind, {})


@pytest.mark.parametrize("endpoint", BODY_ROUTES, ids=lambda e: e.id)
async def test_every_string_of_every_body_survives_bad_text(api: Client, victim: Any, endpoint: Endpoint) -> None:
    tenant, extra = victim
    example = EXAMPLES[_body_type(endpoint)]  # type: ignore[index]
    url, headers = _request(endpoint, tenant, extra)
    paths = list(string_paths(example))
    assert paths, f"the example of {endpoint.id} has no string to spoil"
    for path in paths:
        for bad in ("bad\x00text", "\x00", "x" * 100_000, 12345, {"nested": ["x"]}):
            response = await api.request(endpoint.method, url, headers=headers, json=replaced(example, path, bad))
            where = f"{endpoint.method} {url} with {'.'.join(map(str, path))} = {str(bad)[:20]!r}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
            if isinstance(bad, str) and "\x00" in bad:
                assert 400 <= response.status_code < 500, f"{where} was stored: {response.text}"
            if response.status_code in (400, 422):
                assert response.json()["error"]["details"].get("field"), f"{where}: names no field: {response.text}"
