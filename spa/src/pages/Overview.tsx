// Fleet overview: KPIs (live), open alerts by severity, alert trend, devices on a map, sites.
import { useQuery, useQueryClient } from "@tanstack/react-query";
import * as React from "react";
import { Link, useNavigate } from "react-router";
import { Chart, type EChartOption } from "@/components/charts";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { SEVERITY_COLORS, STATE_COLORS } from "@/components/status";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { api } from "@/lib/api";
import { formatNumber, percent, severityName } from "@/lib/format";
import { useLive } from "@/lib/live-react";
import type { Alert, Device, FleetSummary, Page } from "@/lib/types";
import { cn } from "@/lib/utils";

const TREND_DAYS = 14;

function Kpi({ label, value, hint, tone }: { label: string; value: string; hint?: string; tone?: "ok" | "warn" | "bad" }) {
  return (
    <Card data-kpi={label}>
      <CardContent className="p-4">
        <p className="text-xs font-medium text-muted-foreground">{label}</p>
        <p
          className={cn(
            "mt-1 text-2xl font-semibold tabular-nums",
            tone === "ok" && "text-ok",
            tone === "warn" && "text-warn",
            tone === "bad" && "text-bad",
          )}
        >
          {value}
        </p>
        {hint && <p className="text-xs text-muted-foreground">{hint}</p>}
      </CardContent>
    </Card>
  );
}

/** Alerts opened per day and severity over the last `days` days (from the newest 500 alerts). */
export function alertTrend(alerts: Alert[], days: number, now: Date = new Date()): { days: string[]; bySeverity: number[][] } {
  const start = new Date(now);
  start.setHours(0, 0, 0, 0);
  start.setDate(start.getDate() - (days - 1));
  const labels: string[] = [];
  for (let i = 0; i < days; i++) {
    const d = new Date(start);
    d.setDate(start.getDate() + i);
    labels.push(d.toLocaleDateString(undefined, { month: "short", day: "2-digit" }));
  }
  const counts = [1, 2, 3, 4, 5].map(() => new Array<number>(days).fill(0));
  for (const a of alerts) {
    const opened = new Date(a.opened_at);
    const day = Math.floor((opened.getTime() - start.getTime()) / 86_400_000);
    if (day < 0 || day >= days) continue;
    const sev = Math.min(5, Math.max(1, a.severity));
    counts[sev - 1][day] += 1;
  }
  return { days: labels, bySeverity: counts };
}

export default function Overview() {
  const queryClient = useQueryClient();
  const navigate = useNavigate();
  const summary = useQuery({ queryKey: ["fleet-summary"], queryFn: () => api<FleetSummary>("/api/v2/fleet/summary") });
  const alerts = useQuery({
    queryKey: ["alerts", "trend"],
    queryFn: () => api<Page<Alert>>("/api/v2/alerts", { query: { limit: 500 } }),
  });
  const devices = useQuery({
    queryKey: ["devices", "map"],
    queryFn: () => api<Page<Device>>("/api/v2/devices", { query: { limit: 500 } }),
  });

  // Live: fleet counts as they change; any alert event refreshes the severity breakdown and the trend.
  useLive("fleet", undefined, (frame) => {
    if (frame.type !== "fleet") return;
    queryClient.setQueryData<FleetSummary>(["fleet-summary"], (old) =>
      old
        ? {
            ...old,
            by_state: {
              ONLINE: frame.counts.online,
              STALE: frame.counts.stale,
              OFFLINE: frame.counts.offline,
              UNKNOWN: frame.counts.unknown,
            },
            open_alerts: { ...old.open_alerts, total: frame.counts.open_alerts + frame.counts.acknowledged_alerts, acknowledged: frame.counts.acknowledged_alerts },
          }
        : old,
    );
  });
  useLive("alerts", undefined, () => {
    void queryClient.invalidateQueries({ queryKey: ["fleet-summary"] });
    void queryClient.invalidateQueries({ queryKey: ["alerts", "trend"] });
  });

  React.useEffect(() => {
    if (summary.data) performance.mark("pulse:overview-data");
  }, [summary.data]);

  const trendOption = React.useMemo<EChartOption | null>(() => {
    if (!alerts.data) return null;
    const trend = alertTrend(alerts.data.items, TREND_DAYS);
    return {
      tooltip: { trigger: "axis" },
      legend: { bottom: 0, textStyle: { fontSize: 11 } },
      grid: { left: 32, right: 8, top: 12, bottom: 40 },
      xAxis: { type: "category", data: trend.days },
      yAxis: { type: "value", minInterval: 1 },
      series: trend.bySeverity.map((data, i) => ({
        name: severityName(i + 1),
        type: "bar",
        stack: "sev",
        data,
        itemStyle: { color: SEVERITY_COLORS[i] },
      })),
    };
  }, [alerts.data]);

  const located = React.useMemo(
    () => (devices.data?.items ?? []).filter((d) => d.lat !== null && d.lng !== null),
    [devices.data],
  );
  const mapOption = React.useMemo<EChartOption>(() => {
    const byState = ["ONLINE", "STALE", "OFFLINE", "UNKNOWN"];
    const lngs = located.map((d) => d.lng as number);
    const lats = located.map((d) => d.lat as number);
    const pad = 2;
    return {
      tooltip: { trigger: "item", formatter: (p: { data: [number, number, string, string] }) => `${p.data[2]} · ${p.data[3]}` },
      legend: { bottom: 0, textStyle: { fontSize: 11 } },
      grid: { left: 40, right: 12, top: 12, bottom: 40 },
      xAxis: { type: "value", name: "lng", min: Math.floor(Math.min(...lngs, 180) - pad), max: Math.ceil(Math.max(...lngs, -180) + pad), scale: true },
      yAxis: { type: "value", name: "lat", min: Math.floor(Math.min(...lats, 90) - pad), max: Math.ceil(Math.max(...lats, -90) + pad), scale: true },
      series: byState.map((state) => ({
        name: state,
        type: "scatter",
        symbolSize: 9,
        itemStyle: { color: STATE_COLORS[state] },
        data: located.filter((d) => d.state.status === state).map((d) => [d.lng, d.lat, d.device_id, state]),
      })),
    };
  }, [located]);

  if (summary.isPending) return <Loading label="Loading fleet…" />;
  if (summary.isError) return <ErrorState error={summary.error} onRetry={() => void summary.refetch()} />;
  const s = summary.data;
  const active = s.by_state.ONLINE + s.by_state.STALE + s.by_state.OFFLINE + s.by_state.UNKNOWN;
  const availability = percent(s.by_state.ONLINE, active);

  return (
    <div className="grid gap-4" data-page="overview">
      <PageHeader title="Fleet overview" description="Devices, their connectivity and open alerts, live." />
      <section aria-label="Key figures" className="grid grid-cols-2 gap-3 md:grid-cols-3 xl:grid-cols-6">
        <Kpi label="Devices" value={formatNumber(s.total)} hint={`${formatNumber(active)} active`} />
        <Kpi label="Online" value={formatNumber(s.by_state.ONLINE)} tone="ok" />
        <Kpi label="Stale" value={formatNumber(s.by_state.STALE)} tone={s.by_state.STALE ? "warn" : undefined} />
        <Kpi
          label="Offline"
          value={formatNumber(s.by_state.OFFLINE)}
          tone={s.by_state.OFFLINE ? "bad" : undefined}
          hint={`${formatNumber(s.by_state.UNKNOWN)} never heard from`}
        />
        <Kpi
          label="Open alerts"
          value={formatNumber(s.open_alerts.total)}
          tone={s.open_alerts.total ? "bad" : "ok"}
          hint={`${formatNumber(s.open_alerts.acknowledged)} acknowledged`}
        />
        <Kpi label="Availability" value={availability === null ? "—" : `${availability.toFixed(1)} %`} hint="online of active devices" />
      </section>

      <div className="grid gap-4 xl:grid-cols-3">
        <Card>
          <CardHeader>
            <CardTitle>Open alerts by severity</CardTitle>
          </CardHeader>
          <CardContent className="grid gap-2">
            {[5, 4, 3, 2, 1].map((sev) => {
              const n = s.open_alerts.by_severity[String(sev)] ?? 0;
              const max = Math.max(1, ...Object.values(s.open_alerts.by_severity));
              return (
                <Link key={sev} to={`/alerts?severity_min=${sev}`} className="flex items-center gap-2 text-sm hover:underline">
                  <span className="w-16 text-muted-foreground">{severityName(sev)}</span>
                  <span className="h-2 flex-1 overflow-hidden rounded bg-muted">
                    <span className="block h-full rounded" style={{ width: `${(100 * n) / max}%`, background: SEVERITY_COLORS[sev - 1] }} />
                  </span>
                  <span className="w-8 text-right tabular-nums">{n}</span>
                </Link>
              );
            })}
          </CardContent>
        </Card>
        <Card className="xl:col-span-2">
          <CardHeader>
            <CardTitle>Alert trend</CardTitle>
            <CardDescription>Alerts opened per day, last {TREND_DAYS} days</CardDescription>
          </CardHeader>
          <CardContent>
            {alerts.isError ? (
              <ErrorState error={alerts.error} />
            ) : trendOption ? (
              <Chart option={trendOption} label="Alerts opened per day by severity" className="h-56 w-full" />
            ) : (
              <Loading />
            )}
          </CardContent>
        </Card>
      </div>

      <div className="grid gap-4 xl:grid-cols-3">
        <Card className="xl:col-span-2">
          <CardHeader>
            <CardTitle>Device map</CardTitle>
            <CardDescription>Devices with coordinates, by longitude and latitude</CardDescription>
          </CardHeader>
          <CardContent>
            {devices.isPending ? (
              <Loading />
            ) : devices.isError ? (
              <ErrorState error={devices.error} />
            ) : located.length === 0 ? (
              <Empty title="No device has coordinates" hint="Give devices lat and lng to see them here." />
            ) : (
              <Chart
                option={mapOption}
                label={`Map of ${located.length} devices`}
                className="h-72 w-full"
                onClick={(p) => {
                  const id = Array.isArray(p.data) ? (p.data[2] as string) : undefined;
                  if (id) navigate(`/devices/${encodeURIComponent(id)}`);
                }}
              />
            )}
          </CardContent>
        </Card>
        <Card>
          <CardHeader>
            <CardTitle>Sites</CardTitle>
          </CardHeader>
          <CardContent className="p-0">
            {s.by_site.length === 0 ? (
              <Empty title="No sites" />
            ) : (
              <Table>
                <THead>
                  <TR>
                    <TH>Site</TH>
                    <TH className="text-right">Devices</TH>
                    <TH className="text-right">Online</TH>
                  </TR>
                </THead>
                <TBody>
                  {s.by_site.map((site) => (
                    <TR key={site.site_id ?? "none"}>
                      <TD>
                        {site.site_id ? (
                          <Link className="hover:underline" to={`/devices?site_id=${encodeURIComponent(site.site_id)}`}>
                            {site.name ?? site.site_id}
                          </Link>
                        ) : (
                          <span className="text-muted-foreground">no site</span>
                        )}
                      </TD>
                      <TD className="text-right tabular-nums">{site.total}</TD>
                      <TD className="text-right tabular-nums">{site.by_state.ONLINE}</TD>
                    </TR>
                  ))}
                </TBody>
              </Table>
            )}
          </CardContent>
        </Card>
      </div>
    </div>
  );
}
