// NOC command center: gauges, four area charts, service topology, alert heatmap, live event feed; F toggles TV mode.
import { useQuery } from "@tanstack/react-query";
import { Maximize, Tv } from "lucide-react";
import * as React from "react";
import { Chart, type EChartOption } from "@/components/charts";
import { useChrome } from "@/components/layout/chrome";
import { Button } from "@/components/ui/button";
import { api } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import { formatNumber } from "@/lib/format";
import { useLive, useLiveStatus } from "@/lib/live-react";
import { optionalApi } from "@/lib/optional";
import type { Capacity, MetricHistory, OperatorAlert, Page, ServiceHealth, SystemHealth } from "@/lib/types";
import { cn } from "@/lib/utils";
import {
  alertRate,
  alertRateSeries,
  deliveryQueue,
  diffFeed,
  type FeedItem,
  liveFeedItems,
  heatmap,
  MAX_SAMPLES,
  msgPerSec,
  type Sample,
} from "@/pages/operator/nocData";

const POLL_MS = 5000;
const STORE = "pulse.noc.samples";
const TOPOLOGY = ["web", "ingest", "evaluate", "escalate", "deliver", "schedule"];

function loadSamples(): Sample[] {
  try {
    const s = JSON.parse(sessionStorage.getItem(STORE) ?? "[]") as Sample[];
    return s.filter((x) => Date.now() - x.t < 3600_000);
  } catch {
    return [];
  }
}

/** Total of a list endpoint (limit=1). */
async function total(path: string, query: Record<string, string | number>): Promise<number> {
  return (await api<Page<unknown>>(path, { query: { ...query, limit: 1 } })).total;
}

/** History of a platform metric recorded by `pulse schedule` (GET /operator/system/metrics/…), as [time, value]. */
async function metricHistory(metric: string): Promise<[number, number][] | null> {
  const h = await optionalApi<MetricHistory>(`/operator/system/metrics/${metric}`, {
    query: { from: new Date(Date.now() - 3600_000).toISOString(), step_s: 30 },
  });
  const points = h?.series[0]?.points ?? [];
  return points.length ? points.map((p) => [new Date(p.time).getTime(), p.value]) : null;
}

function gauge(name: string, value: number | null, max: number, unit: string, color: string): EChartOption {
  return {
    series: [
      {
        type: "gauge",
        min: 0,
        max,
        radius: "95%",
        center: ["50%", "58%"],
        startAngle: 210,
        endAngle: -30,
        progress: { show: true, width: 12, itemStyle: { color } },
        axisLine: { lineStyle: { width: 12, color: [[1, "rgba(148,163,184,0.18)"]] } },
        axisTick: { show: false },
        splitLine: { show: false },
        axisLabel: { show: false },
        pointer: { show: false },
        title: { offsetCenter: [0, "62%"], color: "#94a3b8", fontSize: 12 },
        detail: {
          offsetCenter: [0, "8%"],
          fontSize: 26,
          fontWeight: 600,
          color: "#e2e8f0",
          formatter: () => (value === null ? "—" : `${formatNumber(value, value < 10 ? 1 : 0)}${unit}`),
        },
        data: [{ value: value ?? 0, name }],
      },
    ],
  };
}

function area(data: [number, number | null][], color: string, now: number): EChartOption {
  return {
    grid: { left: 44, right: 10, top: 10, bottom: 22 },
    tooltip: { trigger: "axis" },
    xAxis: { type: "time", min: Math.min(now - 3600_000, data[0]?.[0] ?? now), max: now, axisLabel: { color: "#94a3b8", fontSize: 10 }, splitLine: { show: false } },
    yAxis: { type: "value", axisLabel: { color: "#94a3b8", fontSize: 10 }, splitLine: { lineStyle: { color: "rgba(148,163,184,0.12)" } } },
    series: [
      {
        type: "line",
        showSymbol: data.length < 3,
        smooth: false,
        lineStyle: { color, width: 2 },
        areaStyle: { color: { type: "linear", x: 0, y: 0, x2: 0, y2: 1, colorStops: [{ offset: 0, color: `${color}88` }, { offset: 1, color: `${color}05` }] } },
        data,
      },
    ],
  };
}

function Panel({ title, widget, hasData, children, className }: { title: string; widget: string; hasData: boolean; children: React.ReactNode; className?: string }) {
  return (
    <section
      aria-label={title}
      data-widget={widget}
      data-has-data={hasData ? "true" : "false"}
      className={cn("rounded-lg border border-slate-800 bg-slate-900/70 p-3", className)}
    >
      <h2 className="mb-1 text-xs font-semibold tracking-wider text-slate-400 uppercase">{title}</h2>
      {children}
    </section>
  );
}

export default function Noc() {
  const { chromeless, setChromeless } = useChrome();
  const [samples, setSamples] = React.useState<Sample[]>(loadSamples);
  const [feed, setFeed] = React.useState<FeedItem[]>([]);
  const prevAlerts = React.useRef<Map<string, string> | null>(null);
  const prevProcs = React.useRef<Map<string, string> | null>(null);

  const health = useQuery({ queryKey: ["noc", "health"], queryFn: () => api<SystemHealth>("/operator/health"), refetchInterval: POLL_MS });
  const recent = useQuery({
    queryKey: ["noc", "alerts"],
    queryFn: () => api<Page<OperatorAlert>>("/operator/alerts", { query: { limit: 500 } }),
    refetchInterval: POLL_MS,
  });
  const counts = useQuery({
    queryKey: ["noc", "counts"],
    queryFn: async () => {
      const [active, online, open] = await Promise.all([
        total("/operator/devices", { status: "ACTIVE" }),
        total("/operator/devices", { status: "ACTIVE", state: "ONLINE" }),
        total("/operator/alerts", { status: "OPEN,ACKNOWLEDGED" }),
      ]);
      return { active, online, open };
    },
    refetchInterval: POLL_MS,
  });
  const capacity = useQuery({ queryKey: ["noc", "capacity"], queryFn: () => optionalApi<Capacity>("/operator/system/capacity"), refetchInterval: POLL_MS * 2, retry: false });
  const service = useQuery({ queryKey: ["noc", "service"], queryFn: () => optionalApi<ServiceHealth>("/operator/system/health"), refetchInterval: POLL_MS, retry: false });
  const history = useQuery({
    queryKey: ["noc", "history"],
    queryFn: async () => {
      const [msgs, online, queue] = await Promise.all(["ingest.messages_per_s", "devices.online", "notifications.queue_due"].map(metricHistory));
      return { msgs, online, queue };
    },
    refetchInterval: POLL_MS * 3,
    retry: false,
  });
  const dbConnections = capacity.data?.connections.total ?? null;
  const dbMax = capacity.data?.connections.max_connections ?? null;

  // One sample per poll of health and counts, kept for the area charts (and across reloads of the tab).
  React.useEffect(() => {
    if (!health.data || !counts.data || !recent.data) return;
    const now = Date.now();
    const sample: Sample = {
      t: now,
      msgPerSec: msgPerSec(health.data),
      alertsPerMin: alertRate(recent.data.items, now),
      devicesOnline: counts.data.online,
      deliveryQueue: deliveryQueue(health.data),
    };
    setSamples((old) => {
      const next = [...old.filter((s) => now - s.t < 3600_000), sample].slice(-MAX_SAMPLES);
      try {
        sessionStorage.setItem(STORE, JSON.stringify(next));
      } catch {
        /* not kept */
      }
      return next;
    });
  }, [health.dataUpdatedAt, counts.dataUpdatedAt]);

  // Live feed over the WebSocket (the noc topic): every tenant's alert events and device transitions as they
  // happen. The alert list and counts are refetched at most every 2 s after an alert event.
  const { isOperator, isTenantUser } = useAuth();
  const liveStatus = useLiveStatus();
  const liveOn = liveStatus === "open" && isOperator && !isTenantUser;
  const refetchedAt = React.useRef(0);
  useLive(isOperator && !isTenantUser ? "noc" : null, undefined, (frame) => {
    const now = Date.now();
    const fresh = liveFeedItems(frame, now);
    if (fresh.length) setFeed((old) => [...fresh, ...old].slice(0, 60));
    if ((frame.type === "alert" || frame.type === "lagged") && now - refetchedAt.current > 2000) {
      refetchedAt.current = now;
      void recent.refetch();
      void counts.refetch();
    }
  });

  // Polled feed: what changed since the previous poll (alerts only while the live feed is down; process health
  // always); seeded with the newest alerts.
  React.useEffect(() => {
    if (!recent.data) return;
    const now = Date.now();
    const items = recent.data.items;
    if (prevAlerts.current === null) {
      setFeed(
        items.slice(0, 15).map((a) => ({
          id: `${a.alert_id}:${a.status}`,
          at: new Date(a.opened_at).getTime(),
          tone: a.status === "OPEN" ? "bad" : a.status === "ACKNOWLEDGED" ? "warn" : "ok",
          text: `${a.tenant_id} · ${a.title} (${a.status.toLowerCase()})`,
        })),
      );
    } else {
      const fresh = diffFeed(liveOn ? null : prevAlerts.current, items, prevProcs.current, health.data, now);
      if (fresh.length) setFeed((old) => [...fresh, ...old].slice(0, 60));
    }
    prevAlerts.current = new Map(items.map((a) => [a.alert_id, a.status]));
    if (health.data) prevProcs.current = new Map(health.data.processes.map((p) => [p.process_type, `${p.ready}/${p.alive}`]));
  }, [recent.dataUpdatedAt]);

  // TV mode: F toggles full screen without chrome; Escape leaves it.
  const toggleTv = React.useCallback(() => {
    const next = !chromeless;
    setChromeless(next);
    if (next) document.documentElement.requestFullscreen?.().catch(() => {});
    else if (document.fullscreenElement) document.exitFullscreen?.().catch(() => {});
  }, [chromeless, setChromeless]);
  React.useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement | null;
      if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable)) return;
      if (e.key === "f" || e.key === "F") {
        e.preventDefault();
        toggleTv();
      } else if (e.key === "Escape" && chromeless) {
        setChromeless(false);
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [toggleTv, chromeless, setChromeless]);
  React.useEffect(() => () => setChromeless(false), [setChromeless]);

  const h = health.data;
  const c = counts.data;
  const onlinePct = c && c.active > 0 ? (100 * c.online) / c.active : null;
  const mps = h ? msgPerSec(h) : null;
  const maxMps = Math.max(10, ...samples.map((s) => s.msgPerSec ?? 0)) * 1.25;
  const heat = React.useMemo(() => heatmap(recent.data?.items ?? []), [recent.data]);
  // Server-side history when `pulse schedule` records it, else what this page sampled since it opened.
  const series = {
    msgs: history.data?.msgs ?? samples.map((x): [number, number | null] => [x.t, x.msgPerSec]),
    alerts: recent.data ? alertRateSeries(recent.data.items, Date.now()) : [],
    online: history.data?.online ?? samples.map((x): [number, number | null] => [x.t, x.devicesOnline]),
    queue: history.data?.queue ?? samples.map((x): [number, number | null] => [x.t, x.deliveryQueue]),
  };
  const now = Date.now();
  const latest = (d: [number, number | null][]) => (d.length ? d[d.length - 1][1] : null);

  const heatOption: EChartOption = {
    tooltip: { position: "top" },
    grid: { left: 56, right: 10, top: 6, bottom: 40 },
    xAxis: { type: "category", data: Array.from({ length: 24 }, (_, i) => String(i).padStart(2, "0")), axisLabel: { color: "#94a3b8", fontSize: 10 }, splitArea: { show: true } },
    yAxis: { type: "category", data: heat.days, axisLabel: { color: "#94a3b8", fontSize: 10 } },
    visualMap: { min: 0, max: Math.max(1, heat.max), calculable: false, orient: "horizontal", left: "center", bottom: 0, itemHeight: 80, textStyle: { color: "#94a3b8" }, inRange: { color: ["#0f172a", "#7c3aed", "#f43f5e"] } },
    series: [{ type: "heatmap", data: heat.cells, label: { show: false } }],
  };

  return (
    <div className={cn("dark min-h-full bg-slate-950 text-slate-100", chromeless ? "p-4" : "-m-4 p-4 md:-m-6 md:p-6")} data-page="noc" data-tv={chromeless ? "on" : "off"}>
      <div className="mb-3 flex flex-wrap items-center gap-3">
        <h1 className="text-lg font-semibold tracking-tight">NOC</h1>
        <span className="text-xs text-slate-400">refreshes every {POLL_MS / 1000} s</span>
        {chromeless && (
          <span data-testid="tv-badge" className="rounded-full bg-rose-600 px-3 py-1 text-xs font-bold tracking-wider text-white">
            TV MODE · F or Esc to exit
          </span>
        )}
        <Button variant="outline" size="sm" className="ml-auto border-slate-700 bg-slate-900 text-slate-200 hover:bg-slate-800" onClick={toggleTv} aria-keyshortcuts="F">
          {chromeless ? <Maximize /> : <Tv />} {chromeless ? "Leave TV mode" : "TV mode (F)"}
        </Button>
      </div>
      {(health.isError || counts.isError || recent.isError) && (
        <p role="alert" className="mb-3 rounded-md border border-rose-800 bg-rose-950/60 p-2 text-sm text-rose-200">
          Some NOC data could not be read: {String((health.error ?? counts.error ?? recent.error) as Error)}
        </p>
      )}

      <div className="grid grid-cols-2 gap-3 xl:grid-cols-4">
        <Panel title="Fleet online" widget="gauge-online" hasData={onlinePct !== null}>
          <Chart dark option={gauge("of active devices", onlinePct, 100, " %", onlinePct !== null && onlinePct < 90 ? "#f59e0b" : "#10b981")} label="Fleet online percent" className="h-40 w-full" />
        </Panel>
        <Panel title="Ingest" widget="gauge-ingest" hasData={mps !== null}>
          <Chart dark option={gauge("messages / s", mps, Math.ceil(maxMps), "", "#22d3ee")} label="Ingest messages per second" className="h-40 w-full" />
        </Panel>
        <Panel title="Open alerts" widget="gauge-alerts" hasData={!!c}>
          <Chart dark option={gauge("open + acknowledged", c?.open ?? null, Math.max(10, (c?.open ?? 0) * 1.5), "", c && c.open > 0 ? "#f43f5e" : "#10b981")} label="Open alerts" className="h-40 w-full" />
        </Panel>
        <Panel title="DB connections" widget="gauge-db" hasData={dbConnections !== null}>
          {dbConnections !== null ? (
            <Chart
              dark
              option={gauge(dbMax ? `of ${dbMax} allowed` : "connections", dbConnections, dbMax ?? Math.max(20, dbConnections * 1.5), "", dbMax && dbConnections > 0.8 * dbMax ? "#f43f5e" : "#a78bfa")}
              label="Database connections"
              className="h-40 w-full"
            />
          ) : (
            <div className="flex h-40 items-center justify-center text-center text-xs text-slate-400">
              {capacity.isPending ? "…" : "Not reported by this Pulse version (GET /operator/system/capacity)"}
            </div>
          )}
        </Panel>
      </div>

      <div className="mt-3 grid gap-3 md:grid-cols-2 xl:grid-cols-4">
        <Panel title={`Messages / s · ${formatNumber(latest(series.msgs), 1)}`} widget="area-msgs" hasData={series.msgs.length > 0}>
          <Chart dark option={area(series.msgs, "#22d3ee", now)} label="Ingest messages per second over time" className="h-36 w-full" />
        </Panel>
        <Panel title={`Alert rate / min · ${formatNumber(latest(series.alerts), 1)}`} widget="area-alerts" hasData={series.alerts.length > 0}>
          <Chart dark option={area(series.alerts, "#f43f5e", now)} label="Alerts opened per minute over the last hour" className="h-36 w-full" />
        </Panel>
        <Panel title={`Devices online · ${formatNumber(latest(series.online))}`} widget="area-online" hasData={series.online.length > 0}>
          <Chart dark option={area(series.online, "#10b981", now)} label="Devices online over time" className="h-36 w-full" />
        </Panel>
        <Panel title={`Delivery queue · ${formatNumber(latest(series.queue))}`} widget="area-queue" hasData={series.queue.length > 0}>
          <Chart dark option={area(series.queue, "#a78bfa", now)} label="Notification jobs due over time" className="h-36 w-full" />
        </Panel>
      </div>

      <Panel title="Service topology" widget="topology" hasData={!!h} className="mt-3">
        <ol className="flex flex-wrap items-stretch gap-2" aria-label="Services">
          <TopologyNode
            name="database"
            state={h ? (service.data && service.data.database_latency_ms > 250 ? "warn" : "ok") : health.isError ? "bad" : "unknown"}
            detail={service.data ? `${formatNumber(service.data.database_latency_ms, 1)} ms round trip` : h ? "answering" : "—"}
          />
          {TOPOLOGY.map((name) => {
            const p = h?.processes.find((x) => x.process_type === name);
            const state = name === "web" && !p ? (h ? "ok" : "unknown") : !p ? "unknown" : p.ready === 0 ? "bad" : p.ready < p.alive ? "warn" : "ok";
            const detail = name === "web" && !p ? "serving this page" : p ? `${p.ready}/${p.alive} ready` : "no heartbeat";
            return <TopologyNode key={name} name={name} state={state} detail={detail} />;
          })}
          <TopologyNode
            name="notifications"
            state={!h ? "unknown" : h.notifications.in_progress_lease_expired > 0 || h.notifications.dead > 0 ? "warn" : "ok"}
            detail={h ? `${h.notifications.pending_due} due · ${h.notifications.dead} dead` : "—"}
          />
          <TopologyNode
            name="quarantine"
            state={!h ? "unknown" : h.quarantine_last_hour.total > 0 ? "warn" : "ok"}
            detail={h ? `${h.quarantine_last_hour.total} in the last hour` : "—"}
          />
        </ol>
      </Panel>

      <div className="mt-3 grid gap-3 xl:grid-cols-[minmax(0,1.6fr)_minmax(0,1fr)]">
        <Panel title="Alerts by day and hour (7 days)" widget="heatmap" hasData={!!recent.data}>
          <Chart dark option={heatOption} label="Heatmap of alerts opened by day and hour" className="h-64 w-full" />
        </Panel>
        <Panel title={liveOn ? "Live events · live" : "Live events · every 5 s"} widget="feed" hasData={feed.length > 0}>
          {feed.length === 0 ? (
            <p className="py-8 text-center text-xs text-slate-400">{recent.isPending ? "…" : "Quiet: no alert events yet."}</p>
          ) : (
            <ol className="grid max-h-64 gap-1 overflow-y-auto text-xs" aria-live="polite">
              {feed.map((f) => (
                <li key={f.id} className="flex gap-2">
                  <span className="text-slate-500 tabular-nums">{new Date(f.at).toLocaleTimeString()}</span>
                  <span className={cn("size-2 shrink-0 translate-y-1 rounded-full", f.tone === "bad" ? "bg-rose-500" : f.tone === "warn" ? "bg-amber-400" : f.tone === "ok" ? "bg-emerald-500" : "bg-sky-400")} aria-hidden="true" />
                  <span className="text-slate-200">{f.text}</span>
                </li>
              ))}
            </ol>
          )}
        </Panel>
      </div>
    </div>
  );
}

function TopologyNode({ name, state, detail }: { name: string; state: "ok" | "warn" | "bad" | "unknown"; detail: string }) {
  return (
    <li
      data-service={name}
      data-state={state}
      className={cn(
        "min-w-28 flex-1 rounded-md border px-3 py-2",
        state === "ok" && "border-emerald-700 bg-emerald-950/50",
        state === "warn" && "border-amber-700 bg-amber-950/50",
        state === "bad" && "border-rose-700 bg-rose-950/60",
        state === "unknown" && "border-slate-700 bg-slate-900",
      )}
    >
      <p className="flex items-center gap-1.5 text-sm font-medium">
        <span
          className={cn("size-2 rounded-full", state === "ok" ? "bg-emerald-400" : state === "warn" ? "bg-amber-400" : state === "bad" ? "bg-rose-500" : "bg-slate-500")}
          aria-hidden="true"
        />
        {name}
      </p>
      <p className="text-[11px] text-slate-400">{detail}</p>
    </li>
  );
}
