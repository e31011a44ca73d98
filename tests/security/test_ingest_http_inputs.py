"""Oversized and malformed input on HTTP ingest, through a real `pulse web` (uvicorn, its request limits):

- every path form, header form and body form of POST /ingest/v1/tenant/{t}/device/{d}/{type} and of
  POST /ingest/v1/batch is answered with a 4xx carrying the error envelope (the quarantine reason as its code
  when the message reached validation), never a 5xx;
- nothing is stored for a refused message; what reached validation is in quarantine_events under the reason,
  filed under the tenant only when the path names a tenant that exists;
- generated envelopes (valid, or with one field made wrong) sent to the real server get exactly their answer:
  202 and the row stored, or the field's reason code with its HTTP status and a quarantine event; nothing else
  is stored.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.ingest.envelope import MAX_PAYLOAD_BYTES, MAX_SEQ, Reason
from pulse.ingest.service import MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, status_for
from tests.security.ingest_fixtures import Device, new_device, quarantine_of, telemetry_of, web_url
from tests.security.test_ingest_envelope_fuzz import MUTATIONS, apply, base_envelope

__all__ = ["web_url"]  # fixture

REASONS = {r.value for r in Reason}


def envelope(seq: int, **metrics: Any) -> bytes:
    return json.dumps({"version": "1", "seq": seq, "metrics": metrics or {"temp_c": 21.5}}).encode()


def error_code(r: httpx.Response) -> str:
    assert r.headers.get("content-type", "").startswith("application/json"), (r.status_code, r.text[:200])
    body = r.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
    assert body["error"]["message"]
    return str(body["error"]["code"])


async def eventually_rows(engine: AsyncEngine, where: str, count: int, **params: Any) -> list[Any]:
    """Quarantine events are written by the batch writer within its flush interval: wait for `count`."""
    rows: list[Any] = []
    for _ in range(100):
        rows = await quarantine_of(engine, where, **params)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.05)
    return rows


async def test_every_path_form_is_refused_with_a_4xx_and_stores_nothing(engine: AsyncEngine, web_url: str) -> None:
    d = await new_device(engine)
    m = secrets.token_hex(4)  # marks this test's quarantine rows
    ok = {"X-Provision-Token": d.token}
    base = f"/ingest/v1/tenant/{d.tenant_id}/device"
    cases: list[tuple[str, set[int], str | None, str | None]] = [  # path, statuses, code, filed under
        (f"/ingest/v1/tenant/{d.tenant_id.upper()}/device/{d.device_id}-{m}/telemetry", {400}, "BAD_TOPIC", None),
        (f"{base}/{m}{'x' * 129}/telemetry", {400}, "BAD_TOPIC", None),
        (f"{base}/dev%20{m}/telemetry", {400}, "BAD_TOPIC", None),
        (f"{base}/%00{m}/telemetry", {400}, None, None),  # refused by the framework (validation_error)
        (f"{base}/d%C3%A9v-{m}/telemetry", {400}, "BAD_TOPIC", None),
        (f"{base}/{m}%2Ftelemetry/telemetry", {400, 404}, None, None),
        (f"/ingest/v1/tenant/nosuch-{m}/device/{d.device_id}/telemetry", {403}, "UNREGISTERED_DEVICE", None),
        (f"{base}/ghost-{m}/telemetry", {403}, "UNREGISTERED_DEVICE", d.tenant_id),
        (f"{base}/{d.device_id}/status", {400}, "UNSUPPORTED_MSG_TYPE", d.tenant_id),
        (f"{base}/{d.device_id}/TELEMETRY", {400}, "UNSUPPORTED_MSG_TYPE", d.tenant_id),
        (f"{base}/{d.device_id}/telemetry/extra", {404}, "not_found", None),
        (f"{base}/{d.device_id}/", {404}, "not_found", None),
        (f"{base}/{m}{'x' * 20_000}/telemetry", {400, 404, 414, 431}, None, None),
    ]
    expected: list[tuple[str, str | None]] = []  # (reason, tenant) of each quarantine event
    async with httpx.AsyncClient(base_url=web_url, timeout=30) as http:
        for path, statuses, code, filed in cases:
            r = await http.post(path, content=envelope(1), headers=ok)
            assert r.status_code in statuses, (path[:120], r.status_code, r.text[:300])
            json_answer = r.headers.get("content-type", "").startswith("application/json")
            got = error_code(r) if code is not None or json_answer else None  # uvicorn's own 4xx are plain text
            assert code is None or got == code, (path[:120], got)
            if got in REASONS:
                expected.append((got, filed if code is not None else None))
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            r = await http.request(method, d.path(), content=envelope(1), headers=ok)
            assert r.status_code == 405 and error_code(r) == "method_not_allowed", method
        assert (await http.get("/healthz")).status_code == 200
    assert await telemetry_of(engine, d.tenant_id) == []
    rows = await eventually_rows(engine, "(topic LIKE :m OR tenant_id = :t)", len(expected), m=f"%{m}%",
                                 t=d.tenant_id)
    assert sorted((r["reason"], r["tenant_id"] or "") for r in rows) == sorted((c, t or "") for c, t in expected)


async def test_every_credential_form_is_checked_and_the_token_header_wins(engine: AsyncEngine,
                                                                          web_url: str) -> None:
    d = await new_device(engine)
    sibling = await new_device(engine, d.tenant)
    stranger = await new_device(engine)
    cases: list[tuple[dict[str, str], int, str | None]] = [
        ({}, 401, "TOKEN_MISSING"),
        ({"Authorization": "Basic " + "dXNlcjpwYXNz"}, 401, "TOKEN_MISSING"),
        ({"Authorization": "Bearer"}, 401, "TOKEN_MISSING"),
        ({"X-Provision-Token": ""}, 401, "TOKEN_MISSING"),
        ({"X-Provision-Token": sibling.token}, 401, "TOKEN_INVALID"),  # another device of the tenant
        ({"X-Provision-Token": stranger.token}, 403, "TENANT_MISMATCH"),  # a device of another tenant
        ({"X-Provision-Token": "pt_" + "x" * 10_000}, 401, "TOKEN_INVALID"),
        ({"X-Provision-Token": d.token[:-1]}, 401, "TOKEN_INVALID"),
        ({"X-Provision-Token": d.token + "x"}, 401, "TOKEN_INVALID"),
        ({"X-Provision-Token": "pt_wrong", "Authorization": f"Bearer {d.token}"}, 401, "TOKEN_INVALID"),
        ({"Authorization": f"bearer {d.token}"}, 202, None),
        ({"Authorization": f"Bearer {d.token}", "X-Provision-Token": ""}, 202, None),
    ]
    async with httpx.AsyncClient(base_url=web_url, timeout=30) as http:
        for seq, (headers, status, code) in enumerate(cases, 1):
            r = await http.post(d.path(), content=envelope(seq), headers=headers)
            assert r.status_code == status, (headers.keys(), r.text[:300])
            if code is not None:
                assert error_code(r) == code
        r = await http.post(d.path(), content=envelope(99), headers={b"X-Provision-Token": b"pt_\xe9t\xe9"})
        assert r.status_code == 401 and error_code(r) == "TOKEN_INVALID"
        try:  # uvicorn (h11) refuses a header block of a megabyte: 400, or the connection is reset
            r = await http.post(d.path(), content=envelope(100), headers={"X-Provision-Token": d.token,
                                                                          "X-Padding": "p" * 1_000_000})
            assert r.status_code == 400, r.status_code
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            pass
        assert (await http.get("/healthz")).status_code == 200
    accepted = [seq for seq, (_h, status, _c) in enumerate(cases, 1) if status == 202]
    assert [(r["device_id"], r["seq"]) for r in await telemetry_of(engine, d.tenant_id)] == \
        [(d.device_id, seq) for seq in accepted]
    refused = [c for c in cases if c[1] != 202]
    rows = await eventually_rows(engine, "tenant_id = :t", len(refused) + 1, t=d.tenant_id)
    assert sorted(r["reason"] for r in rows) == sorted([str(c[2]) for c in refused] + ["TOKEN_INVALID"])
    assert {r["device_id"] for r in rows} == {d.device_id}
    assert await telemetry_of(engine, stranger.tenant_id) == []


async def test_oversized_and_malformed_bodies_are_refused_and_stores_nothing_wrongly(engine: AsyncEngine,
                                                                                     web_url: str) -> None:
    d = await new_device(engine)
    ok = {"X-Provision-Token": d.token}
    fits = json.dumps({"version": "1", "seq": 1, "metrics": {f"m{i}": "v" * 1000 for i in range(60)}}).encode()
    fits += b" " * (MAX_PAYLOAD_BYTES - len(fits))
    assert len(fits) == MAX_PAYLOAD_BYTES
    zipped = gzip.compress(envelope(2))
    bomb = gzip.compress(b"[" * 20_000_000)  # 20 MB of nesting in ~20 KB

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(160):  # 8 MiB, no Content-Length
            yield b"x" * 65536

    async with httpx.AsyncClient(base_url=web_url, timeout=60) as http:
        r = await http.post(d.path(), content=fits, headers=ok)
        assert r.status_code == 202, r.text[:300]  # exactly 64 KiB is fine
        cases: list[tuple[bytes | Any, dict[str, str], int, str]] = [
            (fits + b" ", ok, 413, "PAYLOAD_TOO_LARGE"),
            (b"", ok, 400, "INVALID_JSON"),
            (b"\x00" * 100, ok, 400, "INVALID_JSON"),
            (b'{"seq": 3, "firmware": ' + b"[" * 60_000, ok, 400, "INVALID_JSON"),  # unknown field: skipped deep
            (zipped, {**ok, "Content-Encoding": "gzip"}, 400, "INVALID_JSON"),  # not decompressed
            (bomb, {**ok, "Content-Encoding": "gzip"}, 400, "INVALID_JSON"),
            (b"seq=4&temp_c=5", {**ok, "Content-Type": "application/x-www-form-urlencoded"}, 400, "INVALID_JSON"),
        ]
        for content, headers, status, code in cases:
            r = await http.post(d.path(), content=content, headers=headers)
            assert (r.status_code, error_code(r)) == (status, code), (content[:40], r.text[:300])
        r = await http.post(d.path(), content=b"x" * (1_048_576 + 1), headers=ok)
        assert r.status_code == 413 and error_code(r) == "payload_too_large"  # cut off unread
        r = await http.post(d.path(), content=chunks(), headers=ok)
        assert r.status_code == 413 and error_code(r) == "payload_too_large"
        assert (await http.get("/healthz")).status_code == 200
    assert [r["seq"] for r in await telemetry_of(engine, d.tenant_id)] == [1]
    rows = await eventually_rows(engine, "tenant_id = :t", len(cases), t=d.tenant_id)
    assert [r["reason"] for r in rows] == [c[3] for c in cases]  # the two cut off unread are not quarantined
    assert rows[0]["payload_size"] == MAX_PAYLOAD_BYTES + 1


async def test_batch_bodies_and_items_are_refused_one_by_one(engine: AsyncEngine, web_url: str) -> None:
    d = await new_device(engine)
    stranger = await new_device(engine)
    m = secrets.token_hex(4)
    item = {"tenant_id": d.tenant_id, "device_id": d.device_id, "token": d.token}
    items: list[tuple[Any, int, str | None]] = [
        (1, 400, "BAD_TOPIC"), (f"not an item {m}", 400, "BAD_TOPIC"), (None, 400, "BAD_TOPIC"),
        ([], 400, "BAD_TOPIC"),
        ({**item, "message": {"version": "1", "seq": 1, "metrics": {"temp_c": 4.5}}}, 202, None),
        ({**item, "message": "a string"}, 400, "INVALID_ENVELOPE"),
        ({**item, "message": {"seq": 2, "metrics": {"blob": "x" * 1000, **{f"k{i}": "y" * 1000 for i in range(70)}}}},
         413, "PAYLOAD_TOO_LARGE"),
        ({**item, "token": stranger.token, "message": {"seq": 3, "metrics": {"a": 1}}}, 403, "TENANT_MISMATCH"),
        ({**item, "device_id": f"{d.device_id}/telemetry", "msg_type": "", "message": {"seq": 4, "metrics": {"a": 1}}},
         400, "BAD_TOPIC"),
        ({**item, "msg_type": "../heartbeat", "message": {"seq": 5}}, 400, "BAD_TOPIC"),
        ({**item, "tenant_id": f"{d.tenant_id}/device/{d.device_id}", "device_id": "x",
          "message": {"seq": 6, "metrics": {"a": 1}}}, 400, "BAD_TOPIC"),
        ({**item, "token": None, "message": {"seq": 7, "metrics": {"a": 1}}}, 401, "TOKEN_MISSING"),
        ({"tenant_id": stranger.tenant_id, "device_id": stranger.device_id, "token": d.token,
          "message": {"seq": 8, "metrics": {"a": 1}}}, 403, "TENANT_MISMATCH"),
    ]
    async with httpx.AsyncClient(base_url=web_url, timeout=60) as http:
        r = await http.post("/ingest/v1/batch", json={"messages": [i for i, _s, _c in items]})
        assert r.status_code == 200, r.text[:500]
        answer = r.json()
        assert (answer["accepted"], answer["rejected"]) == (1, len(items) - 1)
        assert [(x["index"], x["status"], x["reason"]) for x in answer["results"]] == \
            [(i, status, code) for i, (_item, status, code) in enumerate(items)]

        whole: list[tuple[bytes, int, str]] = [
            (b"{not json " + m.encode(), 400, "INVALID_JSON"),
            (b'[1, 2, "' + m.encode() + b'"]', 400, "INVALID_ENVELOPE"),
            (json.dumps({"messages": f"x {m}"}).encode(), 400, "INVALID_ENVELOPE"),
            (json.dumps({"messages": [], "m": m}).encode(), 400, "INVALID_ENVELOPE"),
            (json.dumps({"m": m, "messages": [{"seq": i} for i in range(MAX_BATCH_MESSAGES + 1)]}).encode(), 400,
             "INVALID_ENVELOPE"),
            (b'{"m": "' + m.encode() + b'", "messages": ' + b"[" * 100_000, 400, "INVALID_JSON"),
            (b'{"m": "' + m.encode() + b'", "messages": [' + b" " * MAX_BATCH_BYTES + b"]}", 413,
             "PAYLOAD_TOO_LARGE"),
        ]
        for content, status, code in whole:
            r = await http.post("/ingest/v1/batch", content=content)
            assert (r.status_code, error_code(r)) == (status, code), (content[:40], r.text[:300])
        r = await http.post("/ingest/v1/batch", content=b"x" * (MAX_BATCH_BYTES + 4096))
        assert r.status_code == 413 and error_code(r) == "payload_too_large"  # cut off unread
        assert (await http.get("/healthz")).status_code == 200
    assert [(r["device_id"], r["seq"]) for r in await telemetry_of(engine, d.tenant_id)] == [(d.device_id, 1)]
    assert await telemetry_of(engine, stranger.tenant_id) == []
    bodies = await eventually_rows(engine, "topic = '/ingest/v1/batch' AND raw_payload LIKE :m", len(whole),
                                   m=f"%{m}%")
    assert [(r["reason"], r["tenant_id"]) for r in bodies] == [(code, None) for _c, _s, code in whole]


SERVER_MUTATIONS = [m for m in MUTATIONS if m[0] != "ts outside the window"]  # the fuzz module's fixed clock


@st.composite
def server_cases(draw: st.DrawFn) -> tuple[bytes, Reason | None]:
    """A valid envelope for the device (no site, the server's clock), or one with one field made wrong."""
    fields = base_envelope()
    del fields["site_id"], fields["ts"]
    fields["seq"] = draw(st.integers(0, MAX_SEQ))
    if draw(st.booleans()):
        return apply(("noop",), fields), None
    _name, strategy, reason = draw(st.sampled_from(SERVER_MUTATIONS))
    return apply(draw(strategy), fields), reason


async def test_generated_envelopes_sent_to_pulse_web_get_exactly_their_answer(engine: AsyncEngine,
                                                                              web_url: str) -> None:
    first = await new_device(engine)
    devices = [first] + [await new_device(engine, first.tenant) for _ in range(3)]  # within the per-device rate
    sent: list[tuple[Device, bytes, Reason | None]] = []
    with httpx.Client(base_url=web_url, timeout=30) as http:
        @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(server_cases())
        def send(case: tuple[bytes, Reason | None]) -> None:
            payload, reason = case
            d = devices[len(sent) % len(devices)]
            r = http.post(d.path(), content=payload, headers={"X-Provision-Token": d.token})
            sent.append((d, payload, reason))
            if reason is None:
                assert r.status_code == 202, r.text[:300]
            else:
                assert (r.status_code, error_code(r)) == (status_for(reason), reason), (payload[:200], r.text[:300])

        send()
    accepted = {(d.device_id, json.loads(p)["seq"]) for d, p, reason in sent if reason is None}
    assert accepted and len(accepted) < len(sent)
    stored = await telemetry_of(engine, first.tenant_id)
    assert {(r["device_id"], r["seq"]) for r in stored} == accepted
    refused = [reason for _d, _p, reason in sent if reason is not None]
    rows = await eventually_rows(engine, "tenant_id = :t", len(refused), t=first.tenant_id)
    assert sorted(r["reason"] for r in rows) == sorted(refused)
