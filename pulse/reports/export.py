"""A stored report as a download: JSON (the report as stored) or CSV in labelled sections.

CSV cells are safe to open in a spreadsheet (`pulse.csv_cells.safe_cell`): a text cell that starts with `=`, `+`,
`-`, `@`, a tab or a carriage return (which a spreadsheet would run as a formula) is prefixed with a single quote.
Numbers are written as numbers.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import msgspec

from pulse.csv_cells import safe_cell
from pulse.reports.schemas import ReportRun

__all__ = ["report_csv", "report_json", "safe_cell"]


def _rows(run: ReportRun) -> list[list[Any]]:
    report = run.report
    rows: list[list[Any]] = [["section", "name", "value"],
                             ["report", "run_id", run.run_id], ["report", "status", run.status],
                             ["report", "period_start", run.period_start.isoformat()],
                             ["report", "period_end", run.period_end.isoformat()],
                             ["report", "requested_by", run.requested_by]]
    if report is None:
        rows.append(["report", "error", run.error])
        return rows
    rows += [["report", "tenant_id", report.tenant_id], ["report", "generated_at", report.generated_at.isoformat()]]
    a = report.availability
    rows += [["availability", k, v] for k, v in (("percent", a.percent), ("online_s", a.online_s),
                                                 ("observed_s", a.observed_s), ("maintenance_s", a.maintenance_s),
                                                 ("devices", a.devices))]
    al = report.alerts
    rows += [["alerts", k, v] for k, v in (("opened", al.opened), ("closed", al.closed),
                                           ("acknowledged", al.acknowledged), ("mtta_s", al.mtta_s),
                                           ("resolved", al.resolved), ("mttr_s", al.mttr_s),
                                           ("time_to_alert_p50_s", al.time_to_alert_p50_s),
                                           ("time_to_alert_p99_s", al.time_to_alert_p99_s))]
    rows += [["notifications", k, v] for k, v in msgspec.structs.asdict(report.notifications).items()]
    rows += [[], ["severity", "severity_name", "opened", "closed"]]
    rows += [[s.severity, s.severity_name, s.opened, s.closed] for s in al.by_severity]
    rows += [[], ["top_alerting_device", "name", "alerts", "max_severity"]]
    rows += [[d.device_id, d.name, d.alerts, d.max_severity] for d in report.top_alerting_devices]
    rows += [[], ["device_id", "name", "online_s", "observed_s", "maintenance_s", "availability_percent"]]
    rows += [[d.device_id, d.name, d.online_s, d.observed_s, d.maintenance_s, d.availability_percent]
             for d in report.devices]
    return rows


def report_csv(run: ReportRun) -> str:
    """The run as CSV: a `section,name,value` block (report, availability, alerts, notifications), then tables of
    alerts by severity, top alerting devices and per-device availability, separated by empty lines."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in _rows(run):
        writer.writerow([safe_cell(cell) for cell in row])
    return out.getvalue()


def report_json(run: ReportRun) -> bytes:
    """The run with its report, as the API returns it."""
    return msgspec.json.encode(run)
