// SLA reports made by Pulse (/customer/reports): make one for a period, read it with charts, download CSV or JSON.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Download, Plus } from "lucide-react";
import * as React from "react";
import { Link } from "react-router";
import { Chart, type EChartOption } from "@/components/charts";
import { Empty, ErrorState, Loading } from "@/components/states";
import { SEVERITY_COLORS } from "@/components/status";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { useToast } from "@/components/ui/toast";
import { api, download, errorMessage } from "@/lib/api";
import { formatNumber, formatShortTime } from "@/lib/format";
import type { Page, ReportRun } from "@/lib/types";
import { cn } from "@/lib/utils";
import { formatDuration } from "@/pages/admin/reportData";

export function SlaReports({ runs, days }: { runs: Page<ReportRun>; days: number }) {
  const queryClient = useQueryClient();
  const toast = useToast();
  const [selected, setSelected] = React.useState<string | null>(runs.items[0]?.run_id ?? null);
  const create = useMutation({
    mutationFn: () => {
      const end = new Date();
      return api<ReportRun>("/customer/reports", {
        method: "POST",
        body: { period_start: new Date(end.getTime() - days * 86_400_000).toISOString(), period_end: end.toISOString() },
      });
    },
    onSuccess: (run) => {
      queryClient.setQueryData(["report", run.run_id], run);
      void queryClient.invalidateQueries({ queryKey: ["reports"] });
      setSelected(run.run_id);
    },
    onError: (e) => toast({ title: "Report not made", description: errorMessage(e), tone: "error" }),
  });
  return (
    <div className="grid gap-4 xl:grid-cols-[minmax(0,20rem)_minmax(0,1fr)]">
      <Card className="self-start">
        <CardHeader className="flex-row items-center justify-between">
          <CardTitle>SLA reports</CardTitle>
          <Button size="sm" onClick={() => create.mutate()} disabled={create.isPending}>
            <Plus /> Last {days === 1 ? "24 h" : `${days} days`}
          </Button>
        </CardHeader>
        {runs.items.length === 0 ? (
          <Empty title="No reports yet" hint="Make one for the chosen period; a daily report is also made by Pulse." />
        ) : (
          <ul className="divide-y">
            {runs.items.map((r) => (
              <li key={r.run_id}>
                <button
                  type="button"
                  onClick={() => setSelected(r.run_id)}
                  className={cn("grid w-full gap-0.5 px-4 py-2 text-left text-sm hover:bg-muted/50", selected === r.run_id && "bg-accent")}
                >
                  <span className="font-medium">
                    {formatShortTime(r.period_start)} – {formatShortTime(r.period_end)}
                  </span>
                  <span className="flex items-center gap-2 text-xs text-muted-foreground">
                    <Badge variant={r.status === "DONE" || r.status === "SUCCEEDED" ? "ok" : r.status === "FAILED" ? "bad" : "muted"}>{r.status}</Badge>
                    {r.kind} · availability {r.availability_percent === null ? "—" : `${r.availability_percent.toFixed(2)} %`}
                  </span>
                </button>
              </li>
            ))}
          </ul>
        )}
      </Card>
      {selected ? <ReportView runId={selected} /> : <Card><Empty title="Select a report" /></Card>}
    </div>
  );
}

function ReportView({ runId }: { runId: string }) {
  const run = useQuery({ queryKey: ["report", runId], queryFn: () => api<ReportRun>(`/customer/reports/${runId}`) });
  const option = React.useMemo<EChartOption | null>(() => {
    const by = run.data?.report?.alerts.by_severity;
    if (!by) return null;
    return {
      tooltip: { trigger: "axis" },
      legend: { bottom: 0 },
      grid: { left: 32, right: 8, top: 12, bottom: 40 },
      xAxis: { type: "category", data: by.map((s) => s.severity_name) },
      yAxis: { type: "value", minInterval: 1 },
      series: [
        { name: "opened", type: "bar", data: by.map((s) => ({ value: s.opened, itemStyle: { color: SEVERITY_COLORS[s.severity - 1] } })) },
        { name: "closed", type: "bar", data: by.map((s) => s.closed), itemStyle: { color: "#64748b" } },
      ],
    };
  }, [run.data]);
  if (run.isPending) return <Loading />;
  if (run.isError) return <ErrorState error={run.error} onRetry={() => void run.refetch()} />;
  const r = run.data.report;
  if (!r) return <Card><Empty title={`Report ${run.data.status.toLowerCase()}`} hint={run.data.error ?? undefined} /></Card>;
  const figures: [string, string][] = [
    ["Availability", r.availability.percent === null ? "—" : `${r.availability.percent.toFixed(2)} %`],
    ["Alerts opened", String(r.alerts.opened)],
    ["Mean time to acknowledge", formatDuration(r.alerts.mtta_s)],
    ["Mean time to resolve", formatDuration(r.alerts.mttr_s)],
    ["Notifications sent / failed", `${r.notifications.sent} / ${r.notifications.failed}`],
  ];
  return (
    <div className="grid gap-4" data-testid="sla-report">
      <div className="flex flex-wrap items-center gap-2">
        <p className="text-sm text-muted-foreground">
          {formatShortTime(r.period_start)} – {formatShortTime(r.period_end)} · {r.availability.devices} devices
        </p>
        <Button size="sm" variant="outline" className="ml-auto" onClick={() => void download(`/customer/reports/${runId}/csv`, {}, `sla-report-${runId}.csv`)}>
          <Download /> CSV
        </Button>
        <Button size="sm" variant="outline" onClick={() => void download(`/customer/reports/${runId}/json`, {}, `sla-report-${runId}.json`)}>
          <Download /> JSON
        </Button>
      </div>
      <div className="grid grid-cols-2 gap-3 md:grid-cols-5">
        {figures.map(([label, value]) => (
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
          <CardContent>{option && <Chart option={option} label="Alerts opened and closed by severity" className="h-56 w-full" />}</CardContent>
        </Card>
        <Card>
          <CardHeader>
            <CardTitle>Top alerting devices</CardTitle>
            <CardDescription>Most alerts opened in the period</CardDescription>
          </CardHeader>
          {r.top_alerting_devices.length === 0 ? (
            <Empty title="No device alerts in this period" />
          ) : (
            <Table>
              <THead>
                <TR>
                  <TH>Device</TH>
                  <TH className="text-right">Alerts</TH>
                  <TH className="text-right">Availability</TH>
                </TR>
              </THead>
              <TBody>
                {r.top_alerting_devices.map((d) => {
                  const avail = r.devices.find((x) => x.device_id === d.device_id)?.availability_percent ?? null;
                  return (
                    <TR key={d.device_id}>
                      <TD>
                        <Link className="font-mono hover:underline" to={`/devices/${encodeURIComponent(d.device_id)}`}>
                          {d.device_id}
                        </Link>
                      </TD>
                      <TD className="text-right tabular-nums">{d.alerts}</TD>
                      <TD className="text-right tabular-nums">{avail === null ? "—" : `${formatNumber(avail, 2)} %`}</TD>
                    </TR>
                  );
                })}
              </TBody>
            </Table>
          )}
        </Card>
      </div>
    </div>
  );
}
