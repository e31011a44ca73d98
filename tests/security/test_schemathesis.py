"""Schemathesis against the OpenAPI document, in-process over ASGI against the real app and database.

Every operation of /schema/openapi.json gets its documented examples, valid (positive) and invalid (negative)
generated requests, with a token of a role its guards let in (tenant routes: customer or tenant-admin of a tenant
with one of every object; operator routes: operator or operator-admin; /api/admin: the admin key; HTTP ingest: a
device's provision token). Path ids are either generated or those of the tenant's real objects, so handlers are
reached past the lookup. Checked: no 5xx, answers match their documented schema and content type, invalid input is
refused with a 4xx, and routes that need credentials refuse requests without them.

Bounded: PULSE_SCHEMATHESIS_EXAMPLES (default 10) examples per operation and mode, derandomized (the same run each
time); raise it for a deeper run.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
)
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.settings import Settings
from pulse.web.app import create_app
from tests.security.inventory import ENDPOINTS, Endpoint, inventory_app
from tests.security.world import TenantWorld, build_tenant
from tests.web.conftest import bearer, token_for

MAX_EXAMPLES = int(os.environ.get("PULSE_SCHEMATHESIS_EXAMPLES", "10"))
DOCUMENT: dict[str, Any] = json.loads(msgspec.json.encode(inventory_app().openapi_schema.to_schema()))
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
BY_ROUTE: dict[tuple[str, str], Endpoint] = {(e.method, e.path): e for e in ENDPOINTS}
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@schemathesis.check
def invalid_bodies_are_refused(ctx: Any, response: Any, case: Any) -> bool | None:
    """negative_data_rejection, for request bodies: a body that breaks its schema must get a 4xx.

    Query strings and headers are left out: every query value is text (so "a number where a string was expected"
    is still a valid string; unknown query parameters are checked in tests/web/test_unknown_params.py), and the
    test sets the auth header."""
    meta = case.meta
    if meta is None or ParameterLocation.BODY not in meta.components \
            or not meta.components[ParameterLocation.BODY].mode.is_negative:
        return None
    return negative_data_rejection(ctx, response, case)  # type: ignore[no-any-return]


def has_input(operation: Any) -> bool:
    """Whether there is anything to make invalid (else negative generation has nothing to do)."""
    return bool(len(operation.path_parameters) or len(operation.query) or len(operation.body))


class Target:
    """What the run needs from the database: a tenant with one of every object and tokens for each role."""

    def __init__(self, tenant: TenantWorld, tokens: dict[str, str], admin_key: str, app: Litestar) -> None:
        self.tenant = tenant
        self.tokens = tokens
        self.admin_key = admin_key
        self.app = app

    def headers(self, endpoint: Endpoint, role: str) -> dict[str, str]:
        if endpoint.kind == "admin-key":
            return {"X-Admin-Key": self.admin_key}
        if endpoint.credentials == "provision token":
            return {"X-Provision-Token": self.tenant.provision_token}
        if endpoint.kind in ("tenant", "operator"):
            return bearer(self.tokens[role])
        return {}

    def real_ids(self, endpoint: Endpoint) -> dict[str, str]:
        ids = {**self.tenant.ids, "tenant_id": self.tenant.tenant_id, "template_id": "high-temperature",
               "msg_type": "telemetry"}
        if "/notification-rules/" in endpoint.path:
            ids["rule_id"] = self.tenant.ids["notification_rule_id"]
        return {p: ids[p] for p in endpoint.path_params if p in ids}


@pytest.fixture(scope="module")
async def target(api: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> AsyncIterator[Target]:
    """A tenant of its own (the run creates and deletes things in it) and the app schemathesis calls in-process."""
    tenant = await build_tenant(api, engine, settings, "fuzz")
    tokens = {**tenant.tokens,
              "operator": await token_for(engine, settings, tenant_id=None, roles=["operator"]),
              "operator-admin": await token_for(engine, settings, tenant_id=None, roles=["operator-admin"])}
    app = create_app(settings)
    SCHEMA.app = app  # schemathesis sends every request (and its auth probes) to this app in-process
    yield Target(tenant, tokens, settings.admin_key, app)
    asgi.shutdown_lifespans()  # the app's shutdown: ingest flushed, live hub and engine closed


def _roles(endpoint: Endpoint) -> list[str]:
    return sorted(endpoint.roles) if endpoint.roles else ["none"]


RUNS = [pytest.param(op, mode, id=f"{op.label}-{mode.value}") for op in OPERATIONS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if mode is GenerationMode.POSITIVE or has_input(op)]


@pytest.mark.parametrize(("operation", "mode"), RUNS)
def test_the_api_keeps_its_documented_promises(target: Target, operation: Any, mode: GenerationMode) -> None:
    endpoint = BY_ROUTE[(operation.method.upper(), operation.path)]
    operation.app = target.app
    strategies = [operation.as_strategy(generation_mode=mode)]
    if endpoint.path_params:
        strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=target.real_ids(endpoint)))
    if mode is GenerationMode.POSITIVE:
        strategies += SCHEMA.get_strategies_from_examples(operation)
    checks = [*CHECKS, invalid_bodies_are_refused] if mode is GenerationMode.NEGATIVE else CHECKS
    if endpoint.kind in ("tenant", "operator", "admin-key"):
        checks = [*checks, ignored_auth]

    @given(case=st.one_of(strategies), role=st.sampled_from(_roles(endpoint)))
    @hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def call(case: Any, role: str) -> None:
        case.call_and_validate(headers=target.headers(endpoint, role), checks=checks)

    call()
