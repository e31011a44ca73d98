"""/customer people API through the real app: users, contact methods of every kind with masked and encrypted
secrets, personal notification rules, who may change what, tenant isolation, field-named errors, and the paging
plan the escalation engine follows."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx, tenant_tx
from pulse.notify.channels.webhook import verify_signature
from pulse.notify.routing import enqueue_direct
from pulse.notify.service import MASK, RetryPolicy, open_secrets, sample_message
from pulse.notify.worker import Deliverer
from pulse.oncall.people.paging import PagingStep, get_paging_plan
from pulse.settings import Settings
from pulse.web.app import create_app
from tests.conftest import TenantRef, make_tenant
from tests.notify.test_delivery import Receiver
from tests.web.conftest import PASSWORD, bearer, insert_alert, login, make_user, token_for

USERS = "/customer/users"
WEBHOOK_SECRET = "webhook-signing-secret-0123456789"
ROUTING_KEY = "R0UT1NGKEYabcdef0123456789wxyz"


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def people_settings(settings: Settings, receiver: Receiver) -> Settings:
    """The deployment has an SMTP relay for email contact methods; PagerDuty events go to a local receiver."""
    return dataclasses.replace(settings, smtp_url="smtp://127.0.0.1:2525", pagerduty_events_url=receiver.url)


@pytest.fixture
async def client(people_settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(people_settings)) as c:
        yield c


async def _admin(engine: AsyncEngine, settings: Settings, tenant: TenantRef) -> dict[str, str]:
    return bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["tenant-admin"]))


async def _person(engine: AsyncEngine, settings: Settings, tenant: TenantRef,
                  roles: tuple[str, ...] = ("customer",)) -> tuple[str, dict[str, str]]:
    """A user of the tenant and a token that is theirs."""
    _, user_id = await make_user(engine, tenant.tenant_id, roles)
    token = await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=list(roles), sub=str(user_id))
    return str(user_id), bearer(token)


async def _contact(client: AsyncTestClient[Litestar], headers: dict[str, str], user_id: str,
                   **body: Any) -> dict[str, Any]:
    response = await client.post(f"{USERS}/{user_id}/contact-methods", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _rule(client: AsyncTestClient[Litestar], headers: dict[str, str], user_id: str,
                **body: Any) -> dict[str, Any]:
    response = await client.post(f"{USERS}/{user_id}/notification-rules", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _every_kind(receiver: Receiver) -> list[dict[str, Any]]:
    return [
        {"kind": "EMAIL", "address": "oncall@example.com", "label": "work mail"},
        {"kind": "WEBHOOK", "address": receiver.url, "secrets": {"secret": WEBHOOK_SECRET}},
        {"kind": "SLACK", "secrets": {"webhook_url": receiver.url + "/slack/T000/B000/XXXX"}},
        {"kind": "TEAMS", "secrets": {"webhook_url": receiver.url + "/teams/incoming"}},
        {"kind": "PAGERDUTY", "secrets": {"routing_key": ROUTING_KEY}},
    ]


# --- users -----------------------------------------------------------------------------------------------------------

async def test_an_admin_adds_and_changes_users_without_ever_seeing_a_hash(client: AsyncTestClient[Litestar],
                                                                          engine: AsyncEngine,
                                                                          settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    email = f"Ada-{uuid.uuid4().hex[:6]}@Example.test"
    created = await client.post(USERS, headers=admin, json={
        "email": email, "display_name": "Ada Lovelace", "roles": ["customer"], "timezone": "Europe/London",
        "password": PASSWORD})
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["email"] == email and user["roles"] == ["customer"] and user["timezone"] == "Europe/London"
    assert user["is_active"] is True and user["has_password"] is True
    assert "password_hash" not in user and PASSWORD not in created.text and "argon2" not in created.text

    assert (await login(client, email))["access_token"]  # the new person can log in

    reader = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["customer"]))
    listed = await client.get(USERS, headers=reader)
    assert listed.status_code == 200 and [u["email"] for u in listed.json()["items"]] == [email]
    assert "argon2" not in listed.text
    one = await client.get(f"{USERS}/{user['user_id']}", headers=reader)
    assert one.status_code == 200 and one.json()["display_name"] == "Ada Lovelace"

    patched = await client.patch(f"{USERS}/{user['user_id']}", headers=admin, json={
        "display_name": "Ada K.", "timezone": "America/New_York", "roles": ["customer", "tenant-admin"]})
    assert patched.status_code == 200, patched.text
    assert patched.json()["display_name"] == "Ada K." and patched.json()["timezone"] == "America/New_York"
    assert patched.json()["roles"] == ["customer", "tenant-admin"]

    again = await client.post(USERS, headers=admin, json={"email": email.upper(), "roles": ["customer"]})
    assert again.status_code == 409 and again.json()["error"]["details"]["field"] == "email"

    elsewhere = await make_tenant(engine)
    taken_elsewhere = await client.post(USERS, headers=await _admin(engine, settings, elsewhere),
                                        json={"email": email.lower()})
    assert taken_elsewhere.status_code == 409 and taken_elsewhere.json()["error"]["details"]["field"] == "email"

    no_password = await client.post(USERS, headers=admin, json={"email": f"pager-{uuid.uuid4().hex[:6]}@ex.test"})
    assert no_password.status_code == 201 and no_password.json()["has_password"] is False
    assert no_password.json()["roles"] == ["customer"] and no_password.json()["timezone"] == "UTC"


@pytest.mark.parametrize(("body", "field"), [
    ({"email": "x@ex.test", "roles": ["operator"]}, "roles"),
    ({"email": "x@ex.test", "roles": ["customer", "operator-admin"]}, "roles"),
    ({"email": "x@ex.test", "roles": ["wizard"]}, "roles"),
    ({"email": "x@ex.test", "roles": []}, "roles"),
    ({"email": "x@ex.test", "timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"email": "x@ex.test", "timezone": "localtime"}, "timezone"),
    ({"email": "not-an-email"}, "email"),
    ({"email": "x@ex.test", "password": "short"}, "password"),
    ({"email": "x@ex.test", "display_name": "two\nlines"}, "display_name"),
    ({"email": "x@ex.test", "is_admin": True}, "is_admin"),
    ({"roles": ["customer"]}, "email"),
])
async def test_bad_users_are_400_naming_the_field(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                  settings: Settings, body: dict[str, Any], field: str) -> None:
    tenant = await make_tenant(engine)
    response = await client.post(USERS, headers=await _admin(engine, settings, tenant), json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["field"] == field
    async with tenant_tx(engine, tenant.tenant_id) as conn:
        assert (await conn.execute(text("SELECT count(*) FROM users"))).scalar_one() == 0


async def test_only_a_tenant_admin_manages_users(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                 settings: Settings) -> None:
    tenant = await make_tenant(engine)
    me, mine = await _person(engine, settings, tenant)
    assert (await client.post(USERS, headers=mine, json={"email": "new@ex.test"})).status_code == 403
    assert (await client.patch(f"{USERS}/{me}", headers=mine, json={"roles": ["tenant-admin"]})).status_code == 403
    assert (await client.delete(f"{USERS}/{me}", headers=mine)).status_code == 403
    assert (await client.get(f"{USERS}/{me}", headers=mine)).json()["roles"] == ["customer"]
    anonymous = await client.get(USERS)
    assert anonymous.status_code == 401


async def test_deactivating_ends_sessions_and_paging_but_keeps_the_person(client: AsyncTestClient[Litestar],
                                                                         engine: AsyncEngine,
                                                                         settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    email, user_id = await make_user(engine, tenant.tenant_id)
    tokens = await login(client, email)
    await _contact(client, admin, str(user_id), kind="EMAIL", address="ops@example.com")
    async with system_tx(engine) as conn:
        schedule_id = (await conn.execute(text(
            "INSERT INTO oncall_schedules (tenant_id, name, timezone) VALUES (:t, 'primary', 'UTC') "
            "RETURNING schedule_id"), {"t": tenant.tenant_id})).scalar_one()
        await conn.execute(text(
            "INSERT INTO oncall_layers (tenant_id, schedule_id, position, name, rotation_type, rotation_start, "
            "  participants) VALUES (:t, :s, 1, 'weekly', 'WEEKLY', '2026-01-05', ARRAY[CAST(:u AS uuid)])"),
            {"t": tenant.tenant_id, "s": schedule_id, "u": str(user_id)})

    gone = await client.delete(f"{USERS}/{user_id}", headers=admin)
    assert gone.status_code == 204, gone.text

    user = (await client.get(f"{USERS}/{user_id}", headers=admin)).json()
    assert user["is_active"] is False
    refreshed = await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 401
    refused = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert refused.status_code == 401
    async with tenant_tx(engine, tenant.tenant_id) as conn:
        assert await get_paging_plan(conn, tenant.tenant_id, str(user_id), 5) == []
        participants = (await conn.execute(text("SELECT participants FROM oncall_layers WHERE schedule_id = :s"),
                                           {"s": schedule_id})).scalar_one()
    assert [str(p) for p in participants] == [str(user_id)]
    assert [u["user_id"] for u in (await client.get(f"{USERS}?active=false", headers=admin)).json()["items"]] \
        == [str(user_id)]
    assert (await client.get(f"{USERS}?active=true", headers=admin)).json()["items"] == []

    back = await client.patch(f"{USERS}/{user_id}", headers=admin, json={"is_active": True})
    assert back.status_code == 200 and back.json()["is_active"] is True
    assert (await login(client, email))["access_token"]


async def test_the_last_tenant_admin_stays(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                          settings: Settings) -> None:
    tenant = await make_tenant(engine)
    boss, boss_headers = await _person(engine, settings, tenant, ("tenant-admin",))
    demote = await client.patch(f"{USERS}/{boss}", headers=boss_headers, json={"roles": ["customer"]})
    assert demote.status_code == 409 and demote.json()["error"]["details"]["field"] == "roles"
    leave = await client.delete(f"{USERS}/{boss}", headers=boss_headers)
    assert leave.status_code == 409 and leave.json()["error"]["details"]["field"] == "is_active"

    deputy, _ = await _person(engine, settings, tenant, ("tenant-admin",))
    assert (await client.patch(f"{USERS}/{boss}", headers=boss_headers, json={"roles": ["customer"]})).status_code \
        == 200
    last = await client.delete(f"{USERS}/{deputy}", headers=boss_headers)
    assert last.status_code == 409  # the deputy is now the only active tenant-admin


# --- contact methods -------------------------------------------------------------------------------------------------

async def test_contact_methods_of_every_kind_are_masked_and_encrypted(client: AsyncTestClient[Litestar],
                                                                      engine: AsyncEngine, settings: Settings,
                                                                      people_settings: Settings,
                                                                      receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    user_id, mine = await _person(engine, settings, tenant)
    bodies = _every_kind(receiver)
    secret_values = [v for b in bodies for v in b.get("secrets", {}).values()]
    created = [await _contact(client, mine, user_id, **body) for body in bodies]

    assert [c["kind"] for c in created] == ["EMAIL", "WEBHOOK", "SLACK", "TEAMS", "PAGERDUTY"]
    assert [c["secrets"] for c in created] == [{}, {"secret": MASK}, {"webhook_url": MASK}, {"webhook_url": MASK},
                                               {"routing_key": MASK}]
    assert created[0]["address"] == "oncall@example.com" and created[0]["label"] == "work mail"
    assert created[1]["address"] == receiver.url
    assert created[2]["address"] == "Slack webhook on 127.0.0.1"
    assert created[3]["address"] == "Teams webhook on 127.0.0.1"
    assert created[4]["address"].startswith("PagerDuty routing key")

    reader = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["customer"]))
    answers = [await client.get(f"{USERS}/{user_id}/contact-methods", headers=reader),
               await client.get(f"{USERS}/{user_id}/contact-methods/{created[2]['contact_id']}", headers=reader),
               await client.get("/customer/me", headers=mine)]
    assert all(a.status_code == 200 for a in answers)
    assert [c["contact_id"] for c in answers[0].json()["items"]] == [c["contact_id"] for c in created]
    assert answers[2].json()["contact_methods"] == answers[0].json()["items"]
    for answer in answers:
        for value in secret_values:
            assert value not in answer.text

    async with system_tx(engine) as conn:
        rows = (await conn.execute(text(
            "SELECT contact_id::text, kind, secrets_encrypted FROM user_contact_methods WHERE user_id = :u"),
            {"u": user_id})).all()
    assert len(rows) == 5
    stored = {r.kind: r for r in rows}
    for body in bodies:
        row = stored[body["kind"]]
        for value in body.get("secrets", {}).values():
            assert value not in row.secrets_encrypted
        assert open_secrets(people_settings.secret_key_bytes, row.contact_id, row.secrets_encrypted) \
            == body.get("secrets", {})


async def _deliver_all(engine: AsyncEngine, settings: Settings) -> None:
    d = Deliverer(engine, settings, retry=RetryPolicy(base_s=0.05, cap_s=1.0, jitter=0.0))
    try:
        for _ in range(50):
            if not await d.deliver_once():
                async with system_tx(engine) as conn:
                    busy = (await conn.execute(text(
                        "SELECT count(*) FROM notification_jobs WHERE status IN ('PENDING', 'IN_PROGRESS') "
                        "AND next_attempt_at <= now() + interval '2 seconds' AND contact_id IS NOT NULL"))).scalar_one()
                if not busy:
                    return
                await asyncio.sleep(0.05)
    finally:
        await d.aclose()


async def _page(engine: AsyncEngine, tenant: TenantRef, contact_id: str) -> None:
    """Page one contact method as the escalation engine does."""
    alert_id = await insert_alert(engine, tenant.tenant_id, severity=4)
    now = datetime.now(UTC)
    msg = msgspec.structs.replace(sample_message(tenant.tenant_id, now), alert_id=alert_id, event_kind="PAGED",
                                  title="Freezer 3 too warm")
    async with system_tx(engine) as conn:
        await enqueue_direct(conn, msg, key=f"page:{alert_id}:{contact_id}", contact_id=contact_id, now=now)


async def test_a_masked_secret_is_kept_and_pages_are_signed_with_it(client: AsyncTestClient[Litestar],
                                                                    engine: AsyncEngine, settings: Settings,
                                                                    people_settings: Settings,
                                                                    receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    user_id, mine = await _person(engine, settings, tenant)
    contact = await _contact(client, mine, user_id, kind="WEBHOOK", address=receiver.url,
                             secrets={"secret": WEBHOOK_SECRET})
    path = f"{USERS}/{user_id}/contact-methods/{contact['contact_id']}"

    patched = await client.patch(path, headers=mine, json={"label": "phone bridge", "secrets": {"secret": MASK},
                                                           "address": receiver.url + "?team=ops"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["label"] == "phone bridge" and patched.json()["secrets"] == {"secret": MASK}
    assert patched.json()["address"] == receiver.url + "?team=ops" and WEBHOOK_SECRET not in patched.text

    await _page(engine, tenant, contact["contact_id"])
    await _deliver_all(engine, people_settings)
    [(headers, body)] = receiver.requests
    assert verify_signature(WEBHOOK_SECRET, headers["x-pulse-timestamp"], body, headers["x-pulse-signature"],
                            now=datetime.now(UTC)), "the masked PATCH must have kept the original secret"
    assert json.loads(body)["alert"]["title"] == "Freezer 3 too warm"

    rotated = await client.patch(path, headers=mine, json={"secrets": {"secret": "a-brand-new-signing-secret"}})
    assert rotated.status_code == 200 and rotated.json()["secrets"] == {"secret": MASK}
    await _page(engine, tenant, contact["contact_id"])
    await _deliver_all(engine, people_settings)
    headers, body = receiver.requests[1]
    assert verify_signature("a-brand-new-signing-secret", headers["x-pulse-timestamp"], body,
                            headers["x-pulse-signature"], now=datetime.now(UTC))

    not_stored = await client.patch(path, headers=mine, json={"secrets": {"secret": MASK, "token": MASK}})
    assert not_stored.status_code == 400 and not_stored.json()["error"]["details"]["field"] == "secrets.token"


@pytest.mark.parametrize(("body", "field"), [
    ({"kind": "WEBHOOK", "address": "http://169.254.169.254/latest/meta-data/", "secrets": {"secret": WEBHOOK_SECRET}},
     "address"),
    ({"kind": "WEBHOOK", "address": "http://10.1.2.3/hook", "secrets": {"secret": WEBHOOK_SECRET}}, "address"),
    ({"kind": "WEBHOOK", "address": "file:///etc/passwd", "secrets": {"secret": WEBHOOK_SECRET}}, "address"),
    ({"kind": "SLACK", "secrets": {"webhook_url": "http://169.254.169.254/"}}, "secrets.webhook_url"),
    ({"kind": "TEAMS", "secrets": {"webhook_url": "http://192.168.1.10/hook"}}, "secrets.webhook_url"),
    ({"kind": "WEBHOOK", "address": "RECEIVER", "secrets": {"secret": "short"}}, "secrets.secret"),
    ({"kind": "WEBHOOK", "address": "RECEIVER", "secrets": {"secret": WEBHOOK_SECRET, "token": "x"}},
     "secrets.token"),
    ({"kind": "WEBHOOK", "secrets": {"secret": WEBHOOK_SECRET}}, "address"),
    ({"kind": "EMAIL", "address": "not an email"}, "address"),
    ({"kind": "EMAIL"}, "address"),
    ({"kind": "PAGERDUTY", "secrets": {"routing_key": "has spaces in it"}}, "secrets.routing_key"),
    ({"kind": "PAGERDUTY", "secrets": {}}, "secrets.routing_key"),
    ({"kind": "SLACK", "address": "#ops", "secrets": {"webhook_url": "RECEIVER"}}, "address"),
    ({"kind": "SMS", "address": "+15550100"}, "kind"),
    ({"kind": "EMAIL", "address": "a@example.com", "label": "x" * 101}, "label"),
    ({"kind": "EMAIL", "address": "a@example.com", "colour": "red"}, "colour"),
])
async def test_bad_contact_methods_are_400_naming_the_field(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                            settings: Settings, receiver: Receiver,
                                                            body: dict[str, Any], field: str) -> None:
    tenant = await make_tenant(engine)
    user_id, mine = await _person(engine, settings, tenant)
    body = json.loads(json.dumps(body).replace("RECEIVER", receiver.url))
    response = await client.post(f"{USERS}/{user_id}/contact-methods", headers=mine, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["field"] == field
    assert (await client.get(f"{USERS}/{user_id}/contact-methods", headers=mine)).json()["items"] == []


async def test_email_needs_the_deployments_smtp_relay(engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    user_id, mine = await _person(engine, settings, tenant)
    async with AsyncTestClient(app=create_app(dataclasses.replace(settings, smtp_url=None))) as bare:
        response = await bare.post(f"{USERS}/{user_id}/contact-methods", headers=mine,
                                   json={"kind": "EMAIL", "address": "oncall@example.com"})
    assert response.status_code == 400 and response.json()["error"]["details"]["field"] == "kind"
    assert "PULSE_SMTP_URL" in response.json()["error"]["message"]


async def test_an_ssrf_address_is_refused_on_update_too(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                        settings: Settings, receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    user_id, mine = await _person(engine, settings, tenant)
    contact = await _contact(client, mine, user_id, kind="WEBHOOK", address=receiver.url,
                             secrets={"secret": WEBHOOK_SECRET})
    path = f"{USERS}/{user_id}/contact-methods/{contact['contact_id']}"
    refused = await client.patch(path, headers=mine, json={"address": "http://169.254.169.254/"})
    assert refused.status_code == 400 and refused.json()["error"]["details"]["field"] == "address"
    kind = await client.patch(path, headers=mine, json={"kind": "SLACK"})
    assert kind.status_code == 400 and kind.json()["error"]["details"]["field"] == "kind"
    assert (await client.get(path, headers=mine)).json()["address"] == receiver.url


async def test_a_customer_changes_only_their_own_contacts_and_rules(client: AsyncTestClient[Litestar],
                                                                    engine: AsyncEngine, settings: Settings,
                                                                    receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    me, mine = await _person(engine, settings, tenant)
    other, theirs = await _person(engine, settings, tenant)
    admin = await _admin(engine, settings, tenant)
    their_contact = await _contact(client, theirs, other, kind="EMAIL", address="them@example.com")
    their_rule = await _rule(client, theirs, other, contact_id=their_contact["contact_id"])
    contact_path = f"{USERS}/{other}/contact-methods/{their_contact['contact_id']}"
    rule_path = f"{USERS}/{other}/notification-rules/{their_rule['notification_rule_id']}"

    forbidden = [
        await client.post(f"{USERS}/{other}/contact-methods", headers=mine,
                          json={"kind": "EMAIL", "address": "me@example.com"}),
        await client.patch(contact_path, headers=mine, json={"is_enabled": False}),
        await client.delete(contact_path, headers=mine),
        await client.post(f"{USERS}/{other}/notification-rules", headers=mine,
                          json={"contact_id": their_contact["contact_id"]}),
        await client.patch(rule_path, headers=mine, json={"delay_minutes": 30}),
        await client.delete(rule_path, headers=mine),
    ]
    assert [r.status_code for r in forbidden] == [403] * 6
    assert (await client.get(contact_path, headers=mine)).json()["is_enabled"] is True  # readable, unchanged
    assert (await client.get(rule_path, headers=mine)).json()["delay_minutes"] == 0

    mine_contact = await _contact(client, mine, me, kind="WEBHOOK", address=receiver.url,
                                  secrets={"secret": WEBHOOK_SECRET})
    my_path = f"{USERS}/{me}/contact-methods/{mine_contact['contact_id']}"
    assert (await client.patch(my_path, headers=mine, json={"label": "home"})).json()["label"] == "home"
    my_rule = await _rule(client, mine, me, contact_id=mine_contact["contact_id"], delay_minutes=5, min_severity=3)
    my_rule_path = f"{USERS}/{me}/notification-rules/{my_rule['notification_rule_id']}"
    changed = await client.patch(my_rule_path, headers=mine, json={"delay_minutes": 10})
    assert changed.status_code == 200 and changed.json()["delay_minutes"] == 10
    assert (await client.delete(my_rule_path, headers=mine)).status_code == 204
    assert (await client.delete(my_path, headers=mine)).status_code == 204
    assert (await client.get(f"{USERS}/{me}/contact-methods", headers=mine)).json()["items"] == []

    by_admin = await client.patch(contact_path, headers=admin, json={"label": "set by admin"})
    assert by_admin.status_code == 200 and by_admin.json()["label"] == "set by admin"


async def test_another_tenants_people_are_not_found(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                    settings: Settings) -> None:
    tenant = await make_tenant(engine)
    user_id, mine = await _person(engine, settings, tenant)
    contact = await _contact(client, mine, user_id, kind="EMAIL", address="me@example.com")
    rule = await _rule(client, mine, user_id, contact_id=contact["contact_id"])
    outsider = await _admin(engine, settings, await make_tenant(engine))
    contact_path = f"{USERS}/{user_id}/contact-methods/{contact['contact_id']}"
    rule_path = f"{USERS}/{user_id}/notification-rules/{rule['notification_rule_id']}"

    answers = [
        await client.get(f"{USERS}/{user_id}", headers=outsider),
        await client.patch(f"{USERS}/{user_id}", headers=outsider, json={"display_name": "pwned"}),
        await client.delete(f"{USERS}/{user_id}", headers=outsider),
        await client.get(f"{USERS}/{user_id}/contact-methods", headers=outsider),
        await client.post(f"{USERS}/{user_id}/contact-methods", headers=outsider,
                          json={"kind": "EMAIL", "address": "x@example.com"}),
        await client.patch(contact_path, headers=outsider, json={"label": "pwned"}),
        await client.delete(contact_path, headers=outsider),
        await client.get(f"{USERS}/{user_id}/notification-rules", headers=outsider),
        await client.patch(rule_path, headers=outsider, json={"delay_minutes": 3}),
        await client.delete(rule_path, headers=outsider),
        await client.get(f"{USERS}/{user_id}/paging-plan", headers=outsider),
    ]
    assert [a.status_code for a in answers] == [404] * len(answers)
    assert (await client.get(USERS, headers=outsider)).json()["items"] == []
    still = await client.get("/customer/me", headers=mine)
    assert still.json()["display_name"] == "" and still.json()["is_active"] is True
    assert [c["label"] for c in still.json()["contact_methods"]] == [None]
    assert len(still.json()["notification_rules"]) == 1

    bad_id = await client.get(f"{USERS}/not-a-uuid", headers=outsider)
    assert bad_id.status_code == 400 and bad_id.json()["error"]["details"]["field"] == "user_id"


async def test_me_is_the_callers_own_profile(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                             settings: Settings) -> None:
    tenant = await make_tenant(engine)
    user_id, mine = await _person(engine, settings, tenant)
    contact = await _contact(client, mine, user_id, kind="EMAIL", address="me@example.com")
    rule = await _rule(client, mine, user_id, contact_id=contact["contact_id"], delay_minutes=2, min_severity=4)
    me = await client.get("/customer/me", headers=mine)
    assert me.status_code == 200
    body = me.json()
    assert body["user_id"] == user_id and body["roles"] == ["customer"]
    assert [c["contact_id"] for c in body["contact_methods"]] == [contact["contact_id"]]
    assert body["notification_rules"] == [rule] and rule["kind"] == "EMAIL"
    assert "password_hash" not in body and "argon2" not in me.text

    stranger = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["customer"]))
    assert (await client.get("/customer/me", headers=stranger)).status_code == 404


# --- notification rules and the paging plan --------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "status", "field"), [
    ({"delay_minutes": 1441}, 400, "delay_minutes"),
    ({"delay_minutes": -1}, 400, "delay_minutes"),
    ({"min_severity": 0}, 400, "min_severity"),
    ({"min_severity": 6}, 400, "min_severity"),
    ({"contact_id": "OTHER"}, 400, "contact_id"),
    ({"contact_id": "not-a-uuid"}, 400, "contact_id"),
    ({"contact_id": str(uuid.uuid4())}, 400, "contact_id"),
    ({"delay_minutes": 0}, 409, "delay_minutes"),
    ({"channel_id": "x"}, 400, "channel_id"),
])
async def test_bad_notification_rules_are_refused_naming_the_field(client: AsyncTestClient[Litestar],
                                                                   engine: AsyncEngine, settings: Settings,
                                                                   body: dict[str, Any], status: int,
                                                                   field: str) -> None:
    tenant = await make_tenant(engine)
    user_id, mine = await _person(engine, settings, tenant)
    other, theirs = await _person(engine, settings, tenant)
    contact = await _contact(client, mine, user_id, kind="EMAIL", address="me@example.com")
    other_contact = await _contact(client, theirs, other, kind="EMAIL", address="them@example.com")
    await _rule(client, mine, user_id, contact_id=contact["contact_id"], delay_minutes=0)
    if body.get("contact_id") == "OTHER":
        body = {**body, "contact_id": other_contact["contact_id"]}
    response = await client.post(f"{USERS}/{user_id}/notification-rules", headers=mine,
                                 json={"contact_id": contact["contact_id"], **body})
    assert response.status_code == status, response.text
    assert response.json()["error"]["details"]["field"] == field
    assert len((await client.get(f"{USERS}/{user_id}/notification-rules", headers=mine)).json()["items"]) == 1


async def _plan(engine: AsyncEngine, tenant: TenantRef, user_id: str, severity: int) -> list[tuple[str, int]]:
    async with tenant_tx(engine, tenant.tenant_id) as conn:
        steps = await get_paging_plan(conn, tenant.tenant_id, user_id, severity)
    assert all(isinstance(s, PagingStep) for s in steps)
    return [(s.contact_id, s.delay_minutes) for s in steps]


async def test_the_paging_plan_follows_the_persons_rules(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                         settings: Settings, receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    user_id, mine = await _person(engine, settings, tenant)
    admin = await _admin(engine, settings, tenant)
    assert await _plan(engine, tenant, user_id, 5) == []  # nothing to reach them with

    email = (await _contact(client, mine, user_id, kind="EMAIL", address="me@example.com"))["contact_id"]
    slack = (await _contact(client, mine, user_id, kind="SLACK",
                            secrets={"webhook_url": receiver.url + "/slack"}))["contact_id"]
    pager = (await _contact(client, mine, user_id, kind="PAGERDUTY", is_enabled=False,
                            secrets={"routing_key": ROUTING_KEY}))["contact_id"]

    # No rules: every enabled contact method at once.
    assert await _plan(engine, tenant, user_id, 1) == [(email, 0), (slack, 0)]
    async with tenant_tx(engine, tenant.tenant_id) as conn:
        [first, _] = await get_paging_plan(conn, tenant.tenant_id, user_id, 1)
    assert first.kind == "EMAIL" and first.notification_rule_id is None

    # Email at once for everything, Slack after 5 minutes from severity 3, PagerDuty (disabled) for critical.
    await _rule(client, mine, user_id, contact_id=email, delay_minutes=0, min_severity=1)
    slack_rule = await _rule(client, mine, user_id, contact_id=slack, delay_minutes=5, min_severity=3)
    await _rule(client, mine, user_id, contact_id=pager, delay_minutes=1, min_severity=5)
    assert await _plan(engine, tenant, user_id, 2) == [(email, 0)]
    assert await _plan(engine, tenant, user_id, 3) == [(email, 0), (slack, 5)]
    assert await _plan(engine, tenant, user_id, 5) == [(email, 0), (slack, 5)]

    enabled = await client.patch(f"{USERS}/{user_id}/contact-methods/{pager}", headers=mine,
                                 json={"is_enabled": True})
    assert enabled.status_code == 200
    assert await _plan(engine, tenant, user_id, 5) == [(email, 0), (pager, 1), (slack, 5)]
    async with tenant_tx(engine, tenant.tenant_id) as conn:
        steps = await get_paging_plan(conn, tenant.tenant_id, user_id, 5)
    assert steps[2].notification_rule_id == slack_rule["notification_rule_id"] and steps[2].kind == "SLACK"

    shown = await client.get(f"{USERS}/{user_id}/paging-plan?severity=4", headers=mine)
    assert shown.status_code == 200
    assert [(s["contact_id"], s["delay_minutes"]) for s in shown.json()["steps"]] == [(email, 0), (slack, 5)]
    assert (await client.get(f"{USERS}/{user_id}/paging-plan?severity=9", headers=mine)).status_code == 400

    # Rules on disabled contact methods only: nobody is reached (the rules, not the fallback, decide).
    for contact in (email, slack, pager):
        await client.patch(f"{USERS}/{user_id}/contact-methods/{contact}", headers=mine, json={"is_enabled": False})
    assert await _plan(engine, tenant, user_id, 5) == []

    # Deleting a contact method takes its rules with it; with no rules left the fallback applies again.
    await client.patch(f"{USERS}/{user_id}/contact-methods/{email}", headers=mine, json={"is_enabled": True})
    for contact in (slack, pager):
        assert (await client.delete(f"{USERS}/{user_id}/contact-methods/{contact}", headers=mine)).status_code == 204
    rules = (await client.get(f"{USERS}/{user_id}/notification-rules", headers=mine)).json()["items"]
    assert [r["contact_id"] for r in rules] == [email]
    await client.delete(f"{USERS}/{user_id}/notification-rules/{rules[0]['notification_rule_id']}", headers=mine)
    assert await _plan(engine, tenant, user_id, 1) == [(email, 0)]

    assert (await client.delete(f"{USERS}/{user_id}", headers=admin)).status_code == 204
    assert await _plan(engine, tenant, user_id, 5) == []
    assert await _plan(engine, tenant, str(uuid.uuid4()), 5) == []
    async with tenant_tx(engine, (await make_tenant(engine)).tenant_id) as conn:
        assert await get_paging_plan(conn, tenant.tenant_id, user_id, 5) == []  # RLS: another tenant sees nobody


async def test_deleting_a_contact_method_cancels_its_unsent_pages(client: AsyncTestClient[Litestar],
                                                                  engine: AsyncEngine, settings: Settings,
                                                                  receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    user_id, mine = await _person(engine, settings, tenant)
    contact = await _contact(client, mine, user_id, kind="WEBHOOK", address=receiver.url,
                             secrets={"secret": WEBHOOK_SECRET})
    await _page(engine, tenant, contact["contact_id"])
    gone = await client.delete(f"{USERS}/{user_id}/contact-methods/{contact['contact_id']}", headers=mine)
    assert gone.status_code == 204, gone.text
    async with tenant_tx(engine, tenant.tenant_id) as conn:
        jobs = (await conn.execute(text("SELECT status, last_error FROM notification_jobs"))).all()
    assert [(j.status, j.last_error) for j in jobs] == [("CANCELLED", "the contact method was deleted")]
