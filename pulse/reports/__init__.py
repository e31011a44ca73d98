"""Reports: what a tenant can prove about its fleet over a period (SLA reports), stored in `report_runs`.

`spans` holds the interval arithmetic and maintenance-window occurrences, `sla` computes a report from the
liveness history, alerts and notification jobs, `service` stores and lists report runs (and runs the daily job),
`export` renders a stored report as CSV or JSON.
"""
