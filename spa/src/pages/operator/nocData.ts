// NOC figures: samples polled from the operator API, kept for the area charts, and the alert heatmap.
import type { LiveFrame } from "@/lib/live";
import type { OperatorAlert, SystemHealth } from "@/lib/types";

export interface Sample {
  /** Epoch milliseconds. */
  t: number;
  msgPerSec: number | null;
  alertsPerMin: number;
  devicesOnline: number;
  deliveryQueue: number;
}

export const MAX_SAMPLES = 720; // one hour at 5 s

export function deliveryQueue(health: SystemHealth): number {
  const n = health.notifications;
  return n.pending_due + n.pending_later + n.in_progress;
}

export function msgPerSec(health: SystemHealth): number | null {
  return health.telemetry_rows_last_minute === null ? null : health.telemetry_rows_last_minute / 60;
}

/** Alerts opened per minute over the last `minutes` minutes. */
export function alertRate(alerts: OperatorAlert[], now: number, minutes = 5): number {
  const since = now - minutes * 60_000;
  return alerts.filter((a) => new Date(a.opened_at).getTime() >= since).length / minutes;
}

/** Alerts opened per weekday row (oldest day first) and hour of day over the last 7 days, local time. */
export function heatmap(alerts: OperatorAlert[], now: Date = new Date()): { days: string[]; cells: [number, number, number][]; max: number } {
  const start = new Date(now);
  start.setHours(0, 0, 0, 0);
  start.setDate(start.getDate() - 6);
  const days: string[] = [];
  for (let i = 0; i < 7; i++) {
    const d = new Date(start);
    d.setDate(start.getDate() + i);
    days.push(d.toLocaleDateString(undefined, { weekday: "short", day: "2-digit" }));
  }
  const counts = new Map<string, number>();
  for (const a of alerts) {
    const t = new Date(a.opened_at);
    const day = Math.floor((new Date(t).setHours(0, 0, 0, 0) - start.getTime()) / 86_400_000);
    if (day < 0 || day > 6) continue;
    const key = `${t.getHours()}:${day}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const cells: [number, number, number][] = [];
  let max = 0;
  for (let h = 0; h < 24; h++)
    for (let d = 0; d < 7; d++) {
      const v = counts.get(`${h}:${d}`) ?? 0;
      max = Math.max(max, v);
      cells.push([h, d, v]);
    }
  return { days, cells, max };
}

export interface FeedItem {
  id: string;
  at: number;
  tone: "bad" | "warn" | "ok" | "info";
  text: string;
}

/** Feed entries for what changed between two polls of alerts and process health. */
export function diffFeed(
  prevAlerts: Map<string, string> | null,
  alerts: OperatorAlert[],
  prevProcs: Map<string, string> | null,
  health: SystemHealth | undefined,
  now: number,
): FeedItem[] {
  const items: FeedItem[] = [];
  if (prevAlerts) {
    for (const a of alerts) {
      const before = prevAlerts.get(a.alert_id);
      if (before === a.status) continue;
      const tone = a.status === "OPEN" ? "bad" : a.status === "ACKNOWLEDGED" ? "warn" : "ok";
      const verb = before === undefined ? (a.status === "OPEN" ? "opened" : a.status.toLowerCase()) : a.status.toLowerCase();
      items.push({ id: `${a.alert_id}:${a.status}`, at: now, tone, text: `${a.tenant_id} · ${a.title} ${verb}` });
    }
  }
  if (prevProcs && health) {
    for (const p of health.processes) {
      const state = `${p.ready}/${p.alive}`;
      const before = prevProcs.get(p.process_type);
      if (before !== undefined && before !== state)
        items.push({
          id: `${p.process_type}:${state}:${now}`,
          at: now,
          tone: p.ready === 0 ? "bad" : p.ready < p.alive ? "warn" : "ok",
          text: `${p.process_type}: ${p.ready} ready of ${p.alive} alive (was ${before.replace("/", " of ")})`,
        });
    }
  }
  return items;
}

const EVENT_TONES: Record<string, FeedItem["tone"]> = {
  OPENED: "bad",
  REOPENED: "bad",
  ESCALATED: "bad",
  FLAPPING: "warn",
  ACKNOWLEDGED: "warn",
  SILENCED: "info",
  CLOSED: "ok",
};
const STATE_TONES: Record<string, FeedItem["tone"]> = { OFFLINE: "bad", STALE: "warn", ONLINE: "ok" };

/** Feed lines for one frame of the operators' noc topic (repeat UPDATED events are left out: they are noise here). */
export function liveFeedItems(frame: LiveFrame, now: number): FeedItem[] {
  if (frame.type === "alert" && frame.tenant_id !== undefined) {
    if (frame.event_kind === "UPDATED") return [];
    return [
      {
        id: `${frame.alert_id}:${frame.event_kind}:${now}`,
        at: now,
        tone: EVENT_TONES[frame.event_kind] ?? "info",
        text: `${frame.tenant_id} · ${frame.title} ${frame.event_kind.toLowerCase()}`,
      },
    ];
  }
  if (frame.type === "device_states") {
    const byStatus = new Map<string, string[]>();
    for (const [tenant, device, status] of frame.devices) byStatus.set(status, [...(byStatus.get(status) ?? []), `${tenant}/${device}`]);
    return [...byStatus].map(([status, names]) => ({
      id: `states:${status}:${frame.changed_at ?? now}:${names[0]}`,
      at: now,
      tone: STATE_TONES[status] ?? "info",
      text:
        names.length === 1
          ? `${names[0]} is ${status.toLowerCase()}`
          : `${names.length} devices ${status.toLowerCase()}: ${names.slice(0, 3).join(", ")}${names.length > 3 ? ` and ${names.length - 3} more` : ""}`,
    }));
  }
  return [];
}

/** Alerts opened per minute in `bucketMin`-minute buckets over the last hour, as [time, rate] points. */
export function alertRateSeries(alerts: OperatorAlert[], now: number, bucketMin = 5): [number, number][] {
  const bucketMs = bucketMin * 60_000;
  const end = Math.floor(now / bucketMs) * bucketMs + bucketMs;
  const start = end - 12 * bucketMs;
  const counts = new Array<number>(12).fill(0);
  for (const a of alerts) {
    const t = new Date(a.opened_at).getTime();
    if (t < start || t >= end) continue;
    counts[Math.floor((t - start) / bucketMs)] += 1;
  }
  return counts.map((n, i) => [start + i * bucketMs, n / bucketMin]);
}
