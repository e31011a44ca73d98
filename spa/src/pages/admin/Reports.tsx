// Reports: alerts of a period (by severity, MTTA, MTTR, top devices) with a chart and CSV download.
import { useQuery } from "@tanstack/react-query";
import { Download } from "lucide-react";
import * as React from "react";
import { Link } from "react-router";
import { Chart, type EChartOption } from "@/components/charts";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { SEVERITY_COLORS } from "@/components/status";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { api } from "@/lib/api";
import { severityName } from "@/lib/format";
import { optionalApi } from "@/lib/optional";
import type { Alert, FleetSummary, Page, ReportRun } from "@/lib/types";
import { alertReport, alertsCsv, formatDuration } from "@/pages/admin/reportData";
import { SlaReports } from "@/pages/admin/SlaReports";

const PERIODS = [
  { days: 1, label: "24 h" },
  { days: 7, label: "7 days" },
  { days: 30, label: "30 days" },
];

export default function Reports() {
  const [days, setDays] = React.useState(7);
  const runs = useQuery({ queryKey: ["reports"], queryFn: () => optionalApi<Page<ReportRun>>("/customer/reports", { query: { limit: 30 } }), retry: false });
  const [now] = React.useState(() => new Date());
  const from = new Date(now.getTime() - days * 86_400_000);
  const alerts = useQuery({ queryKey: ["alerts", "report"], queryFn: () => api<Page<Alert>>("/api/v2/alerts", { query: { limit: 500 } }) });
  const summary = useQuery({ queryKey: ["fleet-summary"], queryFn: () => api<FleetSummary>("/api/v2/fleet/summary") });
  const report = React.useMemo(() => (alerts.data ? alertReport(alerts.data.items, from, now) : null), [alerts.data, days]);
  const option = React.useMemo<EChartOption | null>(
    () =>
      report && {
        tooltip: {},
        grid: { left: 32, right: 8, top: 12, bottom: 28 },
        xAxis: { type: "category", data: [1, 2, 3, 4, 5].map(severityName) },
        yAxis: { type: "value", minInterval: 1 },
        series: [{ type: "bar", data: report.bySeverity.map((v, i) => ({ value: v, itemStyle: { color: SEVERITY_COLORS[i] } })) }],
      },
    [report],
  );
  const truncated = alerts.data && alerts.data.total > alerts.data.items.length;
  const downloadCsv = () => {
    const rows = (alerts.data?.items ?? []).filter((a) => new Date(a.opened_at) >= from);
    const url = URL.createObjectURL(new Blob([alertsCsv(rows)], { type: "text/csv" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = `alerts-${from.toISOString().slice(0, 10)}-${now.toISOString().slice(0, 10)}.csv`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  };
  return (
    <div className="grid gap-4" data-page="reports">
      <PageHeader
        title="Reports"
        description="SLA reports (availability, alerts, MTTA, MTTR, notifications) and the alert activity of a period."
        actions={
          <>
            {PERIODS.map((p) => (
              <Button key={p.days} size="sm" variant={days === p.days ? "default" : "outline"} aria-pressed={days === p.days} onClick={() => setDays(p.days)}>
                {p.label}
              </Button>
            ))}
            <Button size="sm" variant="outline" onClick={downloadCsv} disabled={!alerts.data}>
              <Download /> Alerts CSV
            </Button>
          </>
        }
      />
      {runs.isPending ? (
        <Loading />
      ) : runs.isError ? (
        <ErrorState error={runs.error} onRetry={() => void runs.refetch()} />
      ) : runs.data ? (
        <SlaReports runs={runs.data} days={days} />
      ) : null}
      <h2 className="mt-2 text-base font-semibold">Alert activity</h2>
      {alerts.isPending ? (
        <Loading />
      ) : alerts.isError ? (
        <ErrorState error={alerts.error} onRetry={() => void alerts.refetch()} />
      ) : !report ? null : (
        <>
          {truncated && (
            <p className="text-xs text-warn">Only the newest {alerts.data.items.length} of {alerts.data.total} alerts are included.</p>
          )}
          <div className="grid grid-cols-2 gap-3 md:grid-cols-5">
            {[
              ["Alerts opened", String(report.opened)],
              ["Closed", String(report.closed)],
              ["Mean time to acknowledge", formatDuration(report.mttaSeconds)],
              ["Mean time to resolve", formatDuration(report.mttrSeconds)],
              [
                "Devices online now",
                summary.data ? `${summary.data.by_state.ONLINE} of ${Object.values(summary.data.by_state).reduce((a, b) => a + b, 0)}` : "—",
              ],
            ].map(([label, value]) => (
              <Card key={label}>
                <CardContent className="p-4">
                  <p className="text-xs text-muted-foreground">{label}</p>
                  <p className="mt-1 text-xl font-semibold tabular-nums">{value}</p>
                </CardContent>
              </Card>
            ))}
          </div>
          <div className="grid gap-4 lg:grid-cols-2">
            <Card>
              <CardHeader>
                <CardTitle>Alerts by severity</CardTitle>
              </CardHeader>
              <CardContent>{option && <Chart option={option} label="Alerts by severity" className="h-56 w-full" />}</CardContent>
            </Card>
            <Card>
              <CardHeader>
                <CardTitle>Top alerting devices</CardTitle>
                <CardDescription>Most alerts opened in the period</CardDescription>
              </CardHeader>
              {report.topDevices.length === 0 ? (
                <Empty title="No device alerts in this period" />
              ) : (
                <Table>
                  <THead>
                    <TR>
                      <TH>Device</TH>
                      <TH className="text-right">Alerts</TH>
                    </TR>
                  </THead>
                  <TBody>
                    {report.topDevices.map((d) => (
                      <TR key={d.device_id}>
                        <TD>
                          <Link className="font-mono hover:underline" to={`/devices/${encodeURIComponent(d.device_id)}`}>
                            {d.device_id}
                          </Link>
                        </TD>
                        <TD className="text-right tabular-nums">{d.count}</TD>
                      </TR>
                    ))}
                  </TBody>
                </Table>
              )}
            </Card>
          </div>
        </>
      )}
    </div>
  );
}
