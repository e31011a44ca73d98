"""Every route the app mounts is classified for the security suite; an unclassified route fails here."""

from __future__ import annotations

from tests.security.bodies import SAMPLE_BODIES
from tests.security.inventory import ENDPOINTS, PUBLIC, SHARED_PARAMS, TENANT_PARAMS, select


def test_the_app_mounts_routes_of_every_kind() -> None:
    kinds = {e.kind for e in ENDPOINTS}
    assert {"tenant", "operator", "admin-key", "public", "docs"} <= kinds
    assert len(select("tenant")) > 50 and len(select("operator")) > 10


def test_every_route_is_classified() -> None:
    unclassified = [e.id for e in ENDPOINTS if e.kind == "mixed"]
    assert not unclassified, f"routes whose guards admit tenant and operator roles together: {unclassified}"
    unguarded = [e.id for e in ENDPOINTS if e.kind == "public" and (e.method, e.path) not in PUBLIC]
    assert not unguarded, f"routes without a role or admin-key guard; guard them or list them in PUBLIC: {unguarded}"
    mounted = {(e.method, e.path) for e in ENDPOINTS}
    assert not set(PUBLIC) - mounted, f"PUBLIC lists routes the app no longer has: {set(PUBLIC) - mounted}"


def test_tenant_routes_name_only_known_objects_and_have_sample_bodies() -> None:
    for endpoint in select("tenant"):
        unknown = set(endpoint.path_params) - TENANT_PARAMS - SHARED_PARAMS
        assert not unknown, f"{endpoint.id}: add {unknown} to TENANT_PARAMS (and the world) or SHARED_PARAMS"
        if endpoint.has_body and set(endpoint.path_params) & TENANT_PARAMS:
            assert (endpoint.method, endpoint.path) in SAMPLE_BODIES, f"add a sample body for {endpoint.id}"
    stale = set(SAMPLE_BODIES) - {(e.method, e.path) for e in ENDPOINTS}
    assert not stale, f"bodies.py has samples for routes the app no longer has: {stale}"
