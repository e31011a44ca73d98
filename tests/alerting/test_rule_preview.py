"""Rule previews against a real database: each rule type replayed over telemetry written by the real ingest writer,
with the exact episodes it would have opened; limits and errors; and POST /customer/alert-rules/preview."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.preview import RulePreview, _anomaly_verdicts, _rate_verdicts, preview_rule
from pulse.alerting.rules import anomaly_verdict, parse_anomaly, parse_rate, rate_verdict
from pulse.alerting.windows import anomaly_samples, rate_samples
from pulse.db import system_tx, tenant_tx
from pulse.errors import NotFound, ValidationError
from pulse.settings import Settings
from tests.alerting.test_rule_types import _send
from tests.conftest import TenantRef, make_device, make_tenant
from tests.web.conftest import bearer, client, token_for

__all__ = ["client"]  # the app fixture of tests/web, for the HTTP test

# Recent enough for the telemetry partitions that exist; whole minutes so the series read plainly.
T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
NOW = T0 + timedelta(hours=2)


def _min(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def _series(metric: str, values: list[float], step_min: float = 1) -> list[tuple[datetime, dict[str, Any]]]:
    return [(_min(i * step_min), {metric: v}) for i, v in enumerate(values)]


async def _device(engine: AsyncEngine) -> tuple[TenantRef, str]:
    tenant = await make_tenant(engine)
    return tenant, await make_device(engine, tenant)


async def _preview(engine: AsyncEngine, tenant: TenantRef, device: str, rule_type: str, definition: dict[str, Any],
                   **kw: Any) -> RulePreview:
    kw.setdefault("now", NOW)
    async with tenant_tx(engine, tenant.tenant_id) as conn:
        return await preview_rule(conn, tenant.tenant_id, device, rule_type, definition,
                                  for_seconds=kw.pop("for_seconds", 0), **kw)


def _spans(preview: RulePreview) -> list[tuple[datetime, datetime | None, Any]]:
    return [(e.opened_at, e.closed_at, e.value) for e in preview.episodes]


THRESHOLD = {"metric": "temp_c", "op": "GT", "value": 30, "clear_value": 28}
#                    0   1   2   3   4   5     6   7     8   9  10
THRESHOLD_SERIES: list[float | None] = [25, 31, 25, 31, 32, None, 29, 29.5, 27, 26, 35]


async def _threshold_device(engine: AsyncEngine) -> tuple[TenantRef, str]:
    tenant, device = await _device(engine)
    await _send(engine, tenant, device, [(_min(i), {"temp_c": v}) for i, v in enumerate(THRESHOLD_SERIES)
                                         if v is not None])
    await _send(engine, tenant, device, [(_min(4.5), {"humidity": 40})])  # carries no temp_c: not read
    await _send(engine, tenant, device, [(_min(2.5), {"temp_c": 99})], msg_type="heartbeat")  # never replayed
    return tenant, device


async def test_threshold_for_seconds_holds_back_a_short_breach_and_hysteresis_keeps_it_open(
        engine: AsyncEngine) -> None:
    tenant, device = await _threshold_device(engine)
    preview = await _preview(engine, tenant, device, "THRESHOLD", THRESHOLD, for_seconds=120)
    # Minute 1 breaches for one minute only: held back. From minute 3 it holds; the wait runs out at minute 5 (no
    # sample then: it opens with the latest value, 32). 29 and 29.5 are below 30 but above clear_value 28: still
    # open; 27 closes it. 35 at minute 10 opens two minutes later, and is still open at the end.
    assert _spans(preview) == [(_min(5), _min(8), 32), (_min(12), None, 35)]
    assert preview.episodes[0].observation == "temp_c is 32"
    assert preview.samples_read == 10 and preview.episode_count == 2
    assert (preview.range_from, preview.range_to) == (NOW - timedelta(hours=24), NOW)
    assert any("Maintenance windows are ignored" in n for n in preview.notes)
    assert any("Flapping is ignored" in n for n in preview.notes)


async def test_threshold_without_for_seconds_opens_at_each_breach(engine: AsyncEngine) -> None:
    tenant, device = await _threshold_device(engine)
    preview = await _preview(engine, tenant, device, "THRESHOLD", THRESHOLD)
    assert _spans(preview) == [(_min(1), _min(2), 31), (_min(3), _min(8), 31), (_min(10), None, 35)]


async def test_threshold_breaching_before_the_range_opens_at_its_start(engine: AsyncEngine) -> None:
    tenant, device = await _threshold_device(engine)
    preview = await _preview(engine, tenant, device, "THRESHOLD", THRESHOLD, range_from=_min(3.5),
                             range_to=_min(9))
    # At 3.5 the device's last value is 31 (minute 3): the episode is under way when the range starts.
    assert _spans(preview) == [(_min(3.5), _min(8), 31)]
    assert preview.samples_read == 1 + 5  # the value before `from`, then minutes 4, 6, 7, 8 and 9


async def test_multi_all_with_per_condition_hysteresis_and_values_from_before_the_range(engine: AsyncEngine) -> None:
    tenant, device = await _device(engine)
    await _send(engine, tenant, device, [
        (_min(0), {"temp_c": 5, "door_open": False}),  # before `from`: the state the replay starts from
        (_min(1), {"temp_c": 9}),                      # too warm, door closed: no
        (_min(2), {"door_open": True}),                # both: opens
        (_min(3), {"temp_c": 7}),                      # below 8 but not at clear_value 6, door still open: stays open
        (_min(4), {"temp_c": 5.5}),                    # temp_c cleared: `all` closes
        (_min(5), {"door_open": False}),
    ])
    definition = {"match": "all", "conditions": [{"metric": "temp_c", "op": "GT", "value": 8, "clear_value": 6},
                                                 {"metric": "door_open", "op": "EQ", "value": True}]}
    preview = await _preview(engine, tenant, device, "MULTI", definition, range_from=_min(0.5), range_to=_min(10))
    assert _spans(preview) == [(_min(2), _min(4), {"temp_c": 9, "door_open": True})]
    assert preview.episodes[0].observation == "temp_c is 9, door_open is True"
    assert preview.samples_read == 6


async def test_rate_window_ends_at_the_latest_sample_and_reads_before_the_range(engine: AsyncEngine) -> None:
    tenant, device = await _device(engine)
    #                                          0    1    2    3   4   5   6   7   8
    await _send(engine, tenant, device, _series("pressure", [100, 100, 100, 80, 78, 78, 79, 71, 71]))
    await _send(engine, tenant, device, [(_min(3.5), {"pressure": "high"})])  # not a number: not a sample
    definition = {"metric": "pressure", "op": "LT", "value": -5, "window_seconds": 300, "clear_value": -2}
    preview = await _preview(engine, tenant, device, "RATE", definition, range_from=_min(2.5), range_to=_min(20))
    # Minute 3: 100 -> 80 over 3 min (the window reaches back before `from`): -6.67/min opens. Minute 5 no longer
    # sees minute 0 (exactly 300 s earlier): 100 -> 78 over 4 min, still open. Minute 7: 80 -> 71 over 4 min is
    # -2.25/min, not past clear_value -2: held. Minute 8: 78 -> 71 is -1.75/min: closed.
    assert _spans(preview) == [(_min(3), _min(8), -6.666667)]
    assert preview.episodes[0].observation == "pressure went from 100 to 80 in 180 s (-6.66667/min)"
    assert preview.samples_read == 9


async def test_anomaly_baseline_leaves_out_the_latest_sample(engine: AsyncEngine) -> None:
    tenant, device = await _device(engine)
    #                                           0   1   2   3   4   5   6   7   8
    await _send(engine, tenant, device, _series("vibration", [10, 11, 10, 11, 10, 11, 20, 14, 12]))
    definition = {"metric": "vibration", "window_seconds": 600, "z_threshold": 3, "min_samples": 5, "clear_z": 0.5}
    preview = await _preview(engine, tenant, device, "ANOMALY", definition)
    # 20 against 10, 11, 10, 11, 10, 11 is z = +17.3 (with itself in the baseline it would be +2.3: no alert).
    # 14 against the seven before it is z = +0.59: not past clear_z 0.5, still open; 12 is z = -0.03: closed.
    assert _spans(preview) == [(_min(6), _min(8), 20.0)]
    assert preview.episodes[0].observation.startswith("vibration is 20, z = +17.34 against 6 samples")


async def test_window_verdicts_match_the_evaluators_window_queries(engine: AsyncEngine) -> None:
    """At the newest sample, the preview's RATE and ANOMALY windows judge exactly as windows.py's SQL does."""
    tenant, device = await _device(engine)
    rng = random.Random(7)
    times = sorted({T0 + timedelta(seconds=rng.randrange(0, 3600)) for _ in range(80)})
    values = [round(rng.gauss(20, 3), 3) for _ in times]
    await _send(engine, tenant, device, [(at, {"m": v}) for at, v in zip(times, values, strict=True)])
    rate = parse_rate({"metric": "m", "op": "GT", "value": 0.1, "window_seconds": 900})
    anomaly = parse_anomaly({"metric": "m", "window_seconds": 1200, "z_threshold": 1.5, "min_samples": 5})
    async with system_tx(engine) as conn:
        rate_sample = (await rate_samples(conn, tenant.tenant_id, [device], "m", 900))[device]
        anomaly_sample = (await anomaly_samples(conn, tenant.tenant_id, [device], "m", 1200))[device]
    assert list(_rate_verdicts(rate, times, values))[-1] == rate_verdict(rate, rate_sample)
    assert list(_anomaly_verdicts(anomaly, times, values))[-1] == anomaly_verdict(anomaly, anomaly_sample)


async def test_gap_opens_after_gap_and_for_seconds_and_closes_when_the_metric_is_back(engine: AsyncEngine) -> None:
    tenant, device = await _device(engine)
    await _send(engine, tenant, device, [(_min(m), {"temp_c": 4}) for m in (0, 5, 20, 25)])
    await _send(engine, tenant, device, [(_min(40), {"humidity": 40})])  # telemetry without temp_c
    await _send(engine, tenant, device, [(_min(45), {"temp_c": 4})], msg_type="heartbeat")  # not telemetry
    preview = await _preview(engine, tenant, device, "GAP", {"metric": "temp_c", "gap_seconds": 600},
                             for_seconds=60, range_to=_min(60))
    # Silent from minute 5 to 20 (over 600 + 60 s): open at 16, closed at 20. Silent again after 25: open at 36.
    assert [(e.opened_at, e.closed_at) for e in preview.episodes] == [(_min(16), _min(20)), (_min(36), None)]
    assert preview.episodes[0].value == {"metric": "temp_c", "gap_seconds": 600,
                                         "last_reading_at": _min(5).isoformat()}
    assert preview.samples_read == 4


async def test_a_device_without_data_has_no_episodes(engine: AsyncEngine) -> None:
    tenant, device = await _device(engine)
    for rule_type, definition in (("THRESHOLD", THRESHOLD), ("GAP", {"metric": "temp_c", "gap_seconds": 600}),
                                  ("RATE", {"metric": "t", "op": "GT", "value": 1, "window_seconds": 60})):
        preview = await _preview(engine, tenant, device, rule_type, definition)
        assert (preview.episodes, preview.samples_read, preview.episode_count) == ([], 0, 0)


async def test_too_many_samples_are_refused_naming_the_device_and_range(engine: AsyncEngine) -> None:
    tenant, device = await _threshold_device(engine)
    with pytest.raises(ValidationError) as caught:
        await _preview(engine, tenant, device, "THRESHOLD", THRESHOLD, max_samples=5)
    assert caught.value.field == "from" and device in caught.value.message
    assert caught.value.details["device_id"] == device and caught.value.details["max_samples"] == 5


@pytest.mark.parametrize(("kw", "field"), [
    ({"definition": {**THRESHOLD, "op": "ABOVE"}}, "definition.op"),
    ({"definition": {"op": "GT", "value": 1}}, "definition.metric"),
    ({"rule_type": "SPIKE"}, "rule_type"),
    ({"for_seconds": -1}, "for_seconds"),
    ({"range_from": NOW - timedelta(hours=25)}, "from"),
    ({"range_from": NOW, "range_to": NOW - timedelta(hours=1)}, "from"),
    ({"range_to": NOW.replace(tzinfo=None)}, "to"),
])
async def test_bad_input_names_the_field(engine: AsyncEngine, kw: dict[str, Any], field: str) -> None:
    tenant, device = await _device(engine)
    rule_type, definition = kw.pop("rule_type", "THRESHOLD"), kw.pop("definition", THRESHOLD)
    with pytest.raises(ValidationError) as caught:
        await _preview(engine, tenant, device, rule_type, definition, **kw)
    assert caught.value.field == field


async def test_unknown_and_other_tenants_devices_are_not_found(engine: AsyncEngine) -> None:
    tenant, _ = await _device(engine)
    _, theirs = await _threshold_device(engine)
    for device in ("no-such-device", theirs):
        with pytest.raises(NotFound) as caught:
            await _preview(engine, tenant, device, "THRESHOLD", THRESHOLD)
        assert caught.value.details == {"field": "device_id"}


# --- HTTP ---------------------------------------------------------------------------------------------------------

PREVIEW = "/customer/alert-rules/preview"


async def test_preview_over_http(client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    tenant, device = await _device(engine)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    await _send(engine, tenant, device, [(start + timedelta(minutes=i), {"temp_c": v})
                                         for i, v in enumerate([20, 35, 36, 20])])
    reader = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["customer"]))
    body = {"rule_type": "THRESHOLD", "definition": THRESHOLD, "device_id": device, "for_seconds": 0}

    response = await client.post(PREVIEW, headers=reader, json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["device_id"] == device and result["rule_type"] == "THRESHOLD"
    assert result["samples_read"] == 4 and result["episode_count"] == 1
    [episode] = result["episodes"]
    assert datetime.fromisoformat(episode["opened_at"]) == start + timedelta(minutes=1)
    assert datetime.fromisoformat(episode["closed_at"]) == start + timedelta(minutes=3)
    assert episode["value"] == 35 and episode["observation"] == "temp_c is 35"
    assert datetime.fromisoformat(result["to"]) - datetime.fromisoformat(result["from"]) == timedelta(hours=24)
    assert result["notes"]

    ranged = await client.post(PREVIEW, headers=reader, json={
        **body, "from": (start + timedelta(minutes=2)).isoformat(), "to": (start + timedelta(minutes=10)).isoformat()})
    assert ranged.status_code == 200, ranged.text
    assert [datetime.fromisoformat(e["opened_at"]) for e in ranged.json()["episodes"]] == [
        start + timedelta(minutes=2)]

    bad = await client.post(PREVIEW, headers=reader, json={**body, "definition": {**THRESHOLD, "op": "ABOVE"}})
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "definition.op"
    too_long = await client.post(PREVIEW, headers=reader, json={
        **body, "from": (start - timedelta(hours=30)).isoformat()})
    assert too_long.status_code == 400 and too_long.json()["error"]["details"]["field"] == "from"

    other, theirs = await _device(engine)
    await _send(engine, other, theirs, [(start, {"temp_c": 50})])
    hidden = await client.post(PREVIEW, headers=reader, json={**body, "device_id": theirs})
    assert hidden.status_code == 404, hidden.text
    assert hidden.json()["error"]["details"]["field"] == "device_id"
    assert (await client.post(PREVIEW, json=body)).status_code == 401
