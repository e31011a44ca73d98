"""The JWT attacks of tests/web/test_tokens.py (alg none, HS256 signed with the public key, expired, not yet valid,
wrong issuer, wrong audience, unknown kid, tampered payload, …) against a route of every guarded kind, with the
claims that route would need: each forged token is a 401 and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.settings import Settings
from tests.security.world import World
from tests.web.conftest import active_key, bearer, claims_for
from tests.web.test_tokens import (
    Forge,
    _alg_none,
    _alg_none_with_signature,
    _expired,
    _hs256_with_public_jwk,
    _hs256_with_public_pem,
    _issued_in_the_future,
    _known_kid_other_key,
    _no_exp,
    _no_kid,
    _not_a_jwt,
    _not_yet_valid,
    _rs256_header_on_ec_key,
    _tampered_payload,
    _unknown_kid,
    _wrong_audience,
    _wrong_issuer,
)

Client = AsyncTestClient[Litestar]
FORGERS = [_alg_none, _alg_none_with_signature, _hs256_with_public_pem, _hs256_with_public_jwk, _rs256_header_on_ec_key,
           _expired, _not_yet_valid, _issued_in_the_future, _no_exp, _wrong_issuer, _wrong_audience, _unknown_kid,
           _known_kid_other_key, _no_kid, _tampered_payload, _not_a_jwt]
# (method, path, roles the claims carry, tenant: "a" or None, body)
TARGETS: list[tuple[str, str, list[str], str | None, Any]] = [
    ("GET", "/api/v2/devices", ["customer"], "a", None),
    ("POST", "/customer/sites", ["tenant-admin"], "a", {"site_id": "forged-site", "name": "forged"}),
    ("POST", "/api/v2/ws/ticket", ["customer"], "a", None),
    ("GET", "/operator/audit-log", ["operator-admin"], None, None),
    ("POST", "/operator/tenants", ["operator-admin"], None, {"tenant_id": "forged-tenant", "name": "forged"}),
]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t[0]} {t[1]}")
@pytest.mark.parametrize("forge", FORGERS, ids=lambda f: f.__name__.strip("_"))
async def test_forged_tokens_are_refused_everywhere(api: Client, world: World, engine: AsyncEngine,
                                                    settings: Settings, forge: Forge,
                                                    target: tuple[str, str, list[str], str | None, Any]) -> None:
    method, path, roles, tenant, body = target
    kid, key = await active_key(engine, settings)
    claims = claims_for(settings, tenant_id=world.a.tenant_id if tenant else None, roles=roles)
    token = forge(kid, key, claims, settings)

    response = await api.request(method, path, headers=bearer(token), json=body)

    assert response.status_code == 401, f"{forge.__name__} on {method} {path}: {response.text}"
    assert response.json()["error"]["code"] == "invalid_token"
    if body is not None:
        check = await api.get("/customer/sites/forged-site", headers=world.a.headers())
        assert check.status_code == 404
        tenants = await api.get("/operator/tenants/forged-tenant", headers=bearer(world.operator_admin))
        assert tenants.status_code == 404
