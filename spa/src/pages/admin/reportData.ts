// Alert report figures computed from alert rows: counts, MTTA, MTTR, top devices, and a CSV of the rows.
import type { Alert } from "@/lib/types";

export interface AlertReport {
  opened: number;
  closed: number;
  bySeverity: number[];
  mttaSeconds: number | null;
  mttrSeconds: number | null;
  topDevices: { device_id: string; count: number }[];
}

function mean(values: number[]): number | null {
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
}

export function alertReport(alerts: Alert[], from: Date, to: Date): AlertReport {
  const inRange = alerts.filter((a) => {
    const t = new Date(a.opened_at).getTime();
    return t >= from.getTime() && t < to.getTime();
  });
  const bySeverity = [0, 0, 0, 0, 0];
  const perDevice = new Map<string, number>();
  const tta: number[] = [];
  const ttr: number[] = [];
  for (const a of inRange) {
    bySeverity[Math.min(5, Math.max(1, a.severity)) - 1] += 1;
    if (a.device_id) perDevice.set(a.device_id, (perDevice.get(a.device_id) ?? 0) + 1);
    const opened = new Date(a.opened_at).getTime();
    if (a.acknowledged_at) tta.push((new Date(a.acknowledged_at).getTime() - opened) / 1000);
    if (a.closed_at) ttr.push((new Date(a.closed_at).getTime() - opened) / 1000);
  }
  return {
    opened: inRange.length,
    closed: inRange.filter((a) => a.status === "CLOSED").length,
    bySeverity,
    mttaSeconds: mean(tta),
    mttrSeconds: mean(ttr),
    topDevices: [...perDevice.entries()]
      .map(([device_id, count]) => ({ device_id, count }))
      .sort((a, b) => b.count - a.count || a.device_id.localeCompare(b.device_id))
      .slice(0, 10),
  };
}

/** A CSV cell that no spreadsheet evaluates (as the server's CSV downloads): text starting with =, +, -, @, a tab
 * or a carriage return gets a leading quote; numbers stay numbers. */
export function csvCell(value: unknown): string {
  let s = value === null || value === undefined ? "" : String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function alertsCsv(alerts: Alert[]): string {
  const cols = ["alert_id", "opened_at", "acknowledged_at", "closed_at", "status", "severity", "alert_type", "device_id", "title"] as const;
  return [cols.join(","), ...alerts.map((a) => cols.map((c) => csvCell(a[c])).join(","))].join("\n") + "\n";
}

export function formatDuration(seconds: number | null): string {
  if (seconds === null) return "—";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}
