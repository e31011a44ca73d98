// System: process instances and their heartbeats, the notification queue, ingest volume and capacity when reported.
import { useQuery } from "@tanstack/react-query";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { Badge } from "@/components/ui/badge";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { api } from "@/lib/api";
import { formatNumber, formatTime } from "@/lib/format";
import { optionalApi } from "@/lib/optional";
import type { Capacity, JobRun, SystemHealth } from "@/lib/types";

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(v < 10 && i ? 1 : 0)} ${units[i]}`;
}

export default function SystemPage() {
  const health = useQuery({ queryKey: ["noc", "health"], queryFn: () => api<SystemHealth>("/operator/health"), refetchInterval: 10_000 });
  const capacity = useQuery({ queryKey: ["system", "capacity"], queryFn: () => optionalApi<Capacity>("/operator/system/capacity"), retry: false });
  const jobs = useQuery({ queryKey: ["system", "jobs"], queryFn: () => optionalApi<JobRun[]>("/operator/system/jobs"), retry: false, refetchInterval: 30_000 });
  if (health.isPending) return <Loading />;
  if (health.isError) return <ErrorState error={health.error} onRetry={() => void health.refetch()} />;
  const h = health.data;
  return (
    <div className="grid gap-4" data-page="system">
      <PageHeader title="System" description={`Checked ${formatTime(h.checked_at)}; an instance is alive when it beat within ${h.alive_within_s} s.`} />
      <div className="grid grid-cols-2 gap-3 md:grid-cols-4">
        {[
          ["Telemetry rows, last minute", formatNumber(h.telemetry_rows_last_minute)],
          ["Notifications due", formatNumber(h.notifications.pending_due)],
          ["Dead letters", formatNumber(h.notifications.dead)],
          ["Quarantined, last hour", formatNumber(h.quarantine_last_hour.total)],
        ].map(([label, value]) => (
          <Card key={label}>
            <CardContent className="p-4">
              <p className="text-xs text-muted-foreground">{label}</p>
              <p className="mt-1 text-xl font-semibold tabular-nums">{value}</p>
            </CardContent>
          </Card>
        ))}
      </div>
      <Card>
        <CardHeader>
          <CardTitle>Processes</CardTitle>
        </CardHeader>
        {h.processes.length === 0 ? (
          <Empty title="No process has reported a heartbeat" />
        ) : (
          <Table>
            <THead>
              <TR>
                <TH>Process</TH>
                <TH>Instance</TH>
                <TH>State</TH>
                <TH>Last beat</TH>
                <TH>Detail</TH>
              </TR>
            </THead>
            <TBody>
              {h.processes.flatMap((p) =>
                p.instances.map((i) => (
                  <TR key={i.instance}>
                    <TD className="font-medium">{p.process_type}</TD>
                    <TD className="font-mono text-xs">{i.instance}</TD>
                    <TD>
                      <Badge variant={!i.alive ? "muted" : i.ready ? "ok" : "warn"}>{!i.alive ? "gone" : i.ready ? "ready" : "not ready"}</Badge>
                    </TD>
                    <TD className="text-xs tabular-nums">{i.beat_age_s.toFixed(1)} s ago</TD>
                    <TD className="text-xs">{i.detail}</TD>
                  </TR>
                )),
              )}
            </TBody>
          </Table>
        )}
      </Card>
      <Card>
        <CardHeader>
          <CardTitle>Capacity</CardTitle>
        </CardHeader>
        <CardContent>
          {capacity.isPending ? (
            <Loading />
          ) : capacity.isError ? (
            <ErrorState error={capacity.error} />
          ) : capacity.data === null ? (
            <Empty title="Capacity figures are not reported by this Pulse version" hint="GET /operator/system/capacity answers 404." />
          ) : (
            <div className="grid gap-4 md:grid-cols-2">
              <div className="grid content-start gap-1 text-sm">
                <p>
                  Database <span className="font-medium">{bytes(capacity.data.database_bytes)}</span>, telemetry {bytes(capacity.data.telemetry_bytes)}
                </p>
                <p>
                  Connections <span className="font-medium">{capacity.data.connections.total}</span> of {capacity.data.connections.max_connections}
                </p>
                <ul className="text-xs text-muted-foreground">
                  {Object.entries(capacity.data.connections.by_application).map(([app, n]) => (
                    <li key={app}>
                      {app || "(no name)"}: {n}
                    </li>
                  ))}
                </ul>
              </div>
              <Table>
                <THead>
                  <TR>
                    <TH>Largest tables</TH>
                    <TH className="text-right">Size</TH>
                    <TH className="text-right">Rows (est.)</TH>
                  </TR>
                </THead>
                <TBody>
                  {capacity.data.largest_tables.map((t) => (
                    <TR key={t.name}>
                      <TD className="font-mono text-xs">{t.name}</TD>
                      <TD className="text-right text-xs tabular-nums">{bytes(t.total_bytes)}</TD>
                      <TD className="text-right text-xs tabular-nums">{t.rows_estimate < 0 ? "—" : formatNumber(t.rows_estimate)}</TD>
                    </TR>
                  ))}
                </TBody>
              </Table>
            </div>
          )}
        </CardContent>
      </Card>
      {jobs.data && (
        <Card>
          <CardHeader>
            <CardTitle>Scheduled jobs</CardTitle>
          </CardHeader>
          {jobs.data.length === 0 ? (
            <Empty title="No job has run yet" hint="pulse schedule runs them." />
          ) : (
            <Table>
              <THead>
                <TR>
                  <TH>Job</TH>
                  <TH>Last status</TH>
                  <TH>Last finished</TH>
                  <TH className="text-right">Runs</TH>
                </TR>
              </THead>
              <TBody>
                {jobs.data.map((j) => (
                  <TR key={j.job_name}>
                    <TD className="font-mono text-xs">{j.job_name}</TD>
                    <TD>
                      <Badge variant={j.last_status === "ok" || j.last_status === "OK" || j.last_status === "SUCCEEDED" ? "ok" : j.last_error ? "bad" : "muted"}>{j.last_status ?? "—"}</Badge>
                      {j.last_error && <p className="text-xs text-destructive">{j.last_error}</p>}
                    </TD>
                    <TD className="text-xs">{formatTime(j.last_finished_at)}</TD>
                    <TD className="text-right tabular-nums">{j.run_count}</TD>
                  </TR>
                ))}
              </TBody>
            </Table>
          )}
        </Card>
      )}
    </div>
  );
}
