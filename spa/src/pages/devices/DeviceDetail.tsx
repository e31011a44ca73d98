// One device: live charts of every numeric metric over a chosen range, latest values, liveness, alerts, credentials.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { ArrowLeft, Download, KeyRound, RefreshCw } from "lucide-react";
import * as React from "react";
import { Link, useNavigate, useParams } from "react-router";
import { ConfirmButton } from "@/components/confirm";
import { CredentialsView } from "@/components/Credentials";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { AlertStatusBadge, DeviceStatusBadge, LifecycleBadge, SeverityBadge } from "@/components/status";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Dialog, DialogContent } from "@/components/ui/dialog";
import { Input, Select } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { Tabs, TabsContent, TabsList, TabsTrigger } from "@/components/ui/tabs";
import { useToast } from "@/components/ui/toast";
import { api, download, errorMessage, isNotFound } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import { formatTime, formatValue, relativeTime } from "@/lib/format";
import { useLive } from "@/lib/live-react";
import type { Alert, Credentials, DeviceDetail as Detail, LatestValues, Page } from "@/lib/types";
import { MetricChart, RANGES, type RangeKey } from "@/pages/devices/MetricChart";

const LIVE_CAP = 3000;

export default function DeviceDetail() {
  const { deviceId = "" } = useParams();
  const path = `/api/v2/devices/${encodeURIComponent(deviceId)}`;
  const queryClient = useQueryClient();
  const [range, setRange] = React.useState<RangeKey>("1h");
  const [until, setUntil] = React.useState(() => Date.now());
  const [live, setLive] = React.useState<Record<string, [number, number][]>>({});

  const device = useQuery({ queryKey: ["device", deviceId], queryFn: () => api<Detail>(path) });
  const latest = useQuery({ queryKey: ["latest", deviceId], queryFn: () => api<LatestValues>(`${path}/telemetry/latest`) });

  useLive("device", deviceId, (frame) => {
    if (frame.type === "telemetry") {
      const t = new Date(frame.time).getTime() / 1000;
      setLive((old) => {
        const next = { ...old };
        for (const [metric, value] of Object.entries(frame.metrics)) {
          if (typeof value !== "number") continue;
          const series = next[metric] ?? [];
          if (series.length && series[series.length - 1][0] >= t) continue;
          next[metric] = [...series.slice(-LIVE_CAP), [t, value]];
        }
        return next;
      });
      queryClient.setQueryData<LatestValues>(["latest", deviceId], (old) => {
        const metrics = { ...(old?.metrics ?? {}) };
        for (const [metric, value] of Object.entries(frame.metrics)) {
          if (!metrics[metric] || metrics[metric].value !== value) metrics[metric] = { value, time: frame.time };
        }
        return { device_id: deviceId, last_telemetry_at: frame.time, metrics };
      });
      queryClient.setQueryData<Detail>(["device", deviceId], (old) =>
        old ? { ...old, state: { ...old.state, last_seen_at: frame.time, latest_metrics: frame.metrics } } : old,
      );
    } else if (frame.type === "device_state") {
      queryClient.setQueryData<Detail>(["device", deviceId], (old) =>
        old ? { ...old, state: { ...old.state, status: frame.status as Detail["state"]["status"] } } : old,
      );
      void queryClient.invalidateQueries({ queryKey: ["device", deviceId] });
    } else if (frame.type === "lagged") {
      void queryClient.invalidateQueries({ queryKey: ["latest", deviceId] });
    }
  });

  const metrics = React.useMemo(() => {
    const names = new Set<string>();
    for (const [name, m] of Object.entries(latest.data?.metrics ?? {})) if (typeof m.value === "number") names.add(name);
    for (const name of Object.keys(live)) names.add(name);
    return [...names].sort();
  }, [latest.data, live]);

  if (device.isPending) return <Loading label="Loading device…" />;
  if (device.isError)
    return isNotFound(device.error) ? (
      <Empty title={`No device ${deviceId}`} action={<Link to="/devices">Back to devices</Link>} />
    ) : (
      <ErrorState error={device.error} onRetry={() => void device.refetch()} />
    );
  const d = device.data;

  return (
    <div className="grid gap-4" data-page="device" data-device={deviceId}>
      <Link to="/devices" className="flex items-center gap-1 text-sm text-muted-foreground hover:underline">
        <ArrowLeft className="size-4" /> Devices
      </Link>
      <PageHeader
        title={d.name && d.name !== d.device_id ? `${d.name}` : d.device_id}
        description={
          <span className="flex flex-wrap items-center gap-2">
            <span className="font-mono">{d.device_id}</span>
            <DeviceStatusBadge status={d.state.status} />
            <LifecycleBadge lifecycle={d.lifecycle} />
            <span>last seen {relativeTime(d.state.last_seen_at)}</span>
            {d.site_name && <span>· {d.site_name}</span>}
            {d.open_alert_count > 0 && <Link to={`/alerts?device_id=${encodeURIComponent(d.device_id)}`} className="text-bad hover:underline">· {d.open_alert_count} open alerts</Link>}
          </span>
        }
      />
      <Tabs defaultValue="telemetry">
        <TabsList className="flex-wrap">
          <TabsTrigger value="telemetry">Telemetry</TabsTrigger>
          <TabsTrigger value="latest">Latest values</TabsTrigger>
          <TabsTrigger value="liveness">Liveness</TabsTrigger>
          <TabsTrigger value="alerts">Alerts</TabsTrigger>
          <TabsTrigger value="credentials">Credentials</TabsTrigger>
          <TabsTrigger value="settings">Settings</TabsTrigger>
        </TabsList>

        <TabsContent value="telemetry" className="grid gap-3">
          <div className="flex flex-wrap items-center gap-2" role="group" aria-label="Time range">
            {RANGES.map((r) => (
              <Button
                key={r.key}
                size="sm"
                variant={range === r.key ? "default" : "outline"}
                aria-pressed={range === r.key}
                onClick={() => {
                  setRange(r.key);
                  setUntil(Date.now());
                }}
              >
                {r.label}
              </Button>
            ))}
            <Button size="sm" variant="ghost" onClick={() => setUntil(Date.now())} aria-label="Reload history">
              <RefreshCw />
            </Button>
            <Button
              size="sm"
              variant="outline"
              className="ml-auto"
              onClick={() => {
                const seconds = Math.min(RANGES.find((r) => r.key === range)!.seconds, 31 * 86400);
                void download(
                  `${path}/telemetry/export.csv`,
                  { from: new Date(Date.now() - seconds * 1000).toISOString(), to: new Date().toISOString() },
                  `${deviceId.replace(/:/g, "_")}-telemetry.csv`,
                );
              }}
            >
              <Download /> CSV
            </Button>
          </div>
          {latest.isPending ? (
            <Loading />
          ) : metrics.length === 0 ? (
            <Empty title="No numeric telemetry yet" hint="Charts appear as soon as the device sends numeric metrics; they update live." />
          ) : (
            <div className="grid gap-3 xl:grid-cols-2">
              {metrics.map((m, i) => (
                <MetricChart key={m} deviceId={deviceId} metric={m} range={range} until={until} live={live[m] ?? []} index={i} />
              ))}
            </div>
          )}
        </TabsContent>

        <TabsContent value="latest">
          <Card>
            <CardContent className="p-0">
              {latest.isError ? (
                <ErrorState error={latest.error} />
              ) : Object.keys(latest.data?.metrics ?? {}).length === 0 ? (
                <Empty title="No telemetry yet" />
              ) : (
                <Table>
                  <THead>
                    <TR>
                      <TH>Metric</TH>
                      <TH>Value</TH>
                      <TH>Measured</TH>
                    </TR>
                  </THead>
                  <TBody>
                    {Object.entries(latest.data!.metrics)
                      .sort(([a], [b]) => a.localeCompare(b))
                      .map(([name, m]) => (
                        <TR key={name}>
                          <TD className="font-mono">{name}</TD>
                          <TD className="tabular-nums" data-testid={`latest-${name}`}>
                            {formatValue(m.value)}
                          </TD>
                          <TD className="text-muted-foreground">{formatTime(m.time)}</TD>
                        </TR>
                      ))}
                  </TBody>
                </Table>
              )}
            </CardContent>
          </Card>
        </TabsContent>

        <TabsContent value="liveness">
          <Liveness device={d} />
        </TabsContent>
        <TabsContent value="alerts">
          <DeviceAlerts deviceId={deviceId} />
        </TabsContent>
        <TabsContent value="credentials">
          <CredentialsPanel device={d} />
        </TabsContent>
        <TabsContent value="settings">
          <DeviceSettings device={d} />
        </TabsContent>
      </Tabs>
    </div>
  );
}

function Liveness({ device }: { device: Detail }) {
  const s = device.state;
  return (
    <div className="grid gap-3 lg:grid-cols-3">
      <Card>
        <CardHeader>
          <CardTitle>Now</CardTitle>
        </CardHeader>
        <CardContent className="grid gap-1 text-sm">
          <p>
            Status <DeviceStatusBadge status={s.status} /> since {formatTime(s.last_state_change_at)}
          </p>
          <p>Last telemetry: {formatTime(s.last_telemetry_at)}</p>
          <p>Last heartbeat: {formatTime(s.last_heartbeat_at)}</p>
          <p>Heartbeat interval: {device.heartbeat_interval_s ? `${device.heartbeat_interval_s} s` : "tenant default"}</p>
        </CardContent>
      </Card>
      <Card className="lg:col-span-2">
        <CardHeader>
          <CardTitle>Recent changes</CardTitle>
          <CardDescription>The last 20 connectivity changes</CardDescription>
        </CardHeader>
        <CardContent>
          {device.state_history.length === 0 ? (
            <Empty title="No changes recorded" />
          ) : (
            <ol className="grid gap-2 border-l pl-4">
              {device.state_history.map((h) => (
                <li key={h.changed_at + h.status} className="relative text-sm">
                  <span className="absolute top-1.5 -left-[21px] size-2 rounded-full bg-primary" aria-hidden="true" />
                  {h.previous_status ?? "—"} → <DeviceStatusBadge status={h.status} />{" "}
                  <span className="text-muted-foreground">{formatTime(h.changed_at)}</span>
                </li>
              ))}
            </ol>
          )}
        </CardContent>
      </Card>
    </div>
  );
}

function DeviceAlerts({ deviceId }: { deviceId: string }) {
  const alerts = useQuery({
    queryKey: ["alerts", "device", deviceId],
    queryFn: () => api<Page<Alert>>("/api/v2/alerts", { query: { device_id: deviceId, limit: 100 } }),
  });
  if (alerts.isPending) return <Loading />;
  if (alerts.isError) return <ErrorState error={alerts.error} onRetry={() => void alerts.refetch()} />;
  if (alerts.data.items.length === 0) return <Empty title="No alerts for this device" />;
  return (
    <Card>
      <Table>
        <THead>
          <TR>
            <TH>Alert</TH>
            <TH>Severity</TH>
            <TH>Status</TH>
            <TH>Opened</TH>
          </TR>
        </THead>
        <TBody>
          {alerts.data.items.map((a) => (
            <TR key={a.alert_id}>
              <TD>
                <Link className="hover:underline" to={`/alerts/${a.alert_id}`}>
                  {a.title}
                </Link>
              </TD>
              <TD>
                <SeverityBadge severity={a.severity} />
              </TD>
              <TD>
                <AlertStatusBadge status={a.status} />
              </TD>
              <TD className="text-muted-foreground">{formatTime(a.opened_at)}</TD>
            </TR>
          ))}
        </TBody>
      </Table>
    </Card>
  );
}

function CredentialsPanel({ device }: { device: Detail }) {
  const { isTenantAdmin } = useAuth();
  const toast = useToast();
  const [issued, setIssued] = React.useState<Credentials | null>(null);
  const path = `/customer/devices/${encodeURIComponent(device.device_id)}/credentials`;
  const rotate = useMutation({
    mutationFn: () => api<Credentials>(path, { method: "POST" }),
    onSuccess: setIssued,
    onError: (e) => toast({ title: "Credentials not issued", description: errorMessage(e), tone: "error" }),
  });
  const revoke = useMutation({
    mutationFn: () => api<void>(path, { method: "DELETE" }),
    onSuccess: () => toast({ title: "Credentials revoked", description: "The device can no longer send until new credentials are issued.", tone: "success" }),
    onError: (e) => toast({ title: "Not revoked", description: errorMessage(e), tone: "error" }),
  });
  return (
    <Card>
      <CardHeader>
        <CardTitle>Credentials</CardTitle>
        <CardDescription>
          A provision token for HTTP ingest and an MQTT account. Secrets are shown once, when issued. Issuing new ones revokes the
          old ones at once.
        </CardDescription>
      </CardHeader>
      <CardContent className="flex flex-wrap gap-2">
        {isTenantAdmin ? (
          <>
            <ConfirmButton
              title="Rotate credentials?"
              description="New secrets are issued and the current ones stop working immediately."
              confirmLabel="Rotate"
              onConfirm={() => rotate.mutate()}
              disabled={device.lifecycle !== "ACTIVE"}
            >
              <KeyRound /> Issue / rotate
            </ConfirmButton>
            <ConfirmButton
              title="Revoke credentials?"
              description="The device can no longer send until new credentials are issued."
              confirmLabel="Revoke"
              variant="destructive"
              onConfirm={() => revoke.mutate()}
            >
              Revoke
            </ConfirmButton>
          </>
        ) : (
          <p className="text-sm text-muted-foreground">Only tenant admins manage credentials.</p>
        )}
      </CardContent>
      <Dialog open={!!issued} onOpenChange={(v) => !v && setIssued(null)}>
        <DialogContent title="New credentials">
          {issued && <CredentialsView credentials={issued} />}
          <div className="flex justify-end">
            <Button onClick={() => setIssued(null)}>Done</Button>
          </div>
        </DialogContent>
      </Dialog>
    </Card>
  );
}

function DeviceSettings({ device }: { device: Detail }) {
  const { isTenantAdmin } = useAuth();
  const toast = useToast();
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const [name, setName] = React.useState(device.name ?? "");
  const [tags, setTags] = React.useState(device.tags.join(", "));
  const [status, setStatus] = React.useState(device.lifecycle === "DISABLED" ? "DISABLED" : "ACTIVE");
  const path = `/customer/devices/${encodeURIComponent(device.device_id)}`;
  const refresh = () => {
    void queryClient.invalidateQueries({ queryKey: ["device", device.device_id] });
    void queryClient.invalidateQueries({ queryKey: ["devices"] });
  };
  const save = useMutation({
    mutationFn: () =>
      api(path, {
        method: "PATCH",
        body: { name: name.trim() || device.device_id, tags: tags.split(",").map((t) => t.trim()).filter(Boolean), status },
      }),
    onSuccess: () => {
      toast({ title: "Device saved", tone: "success" });
      refresh();
    },
    onError: (e) => toast({ title: "Not saved", description: errorMessage(e), tone: "error" }),
  });
  const decommission = useMutation({
    mutationFn: () => api(`${path}/decommission`, { method: "POST" }),
    onSuccess: refresh,
    onError: (e) => toast({ title: "Not decommissioned", description: errorMessage(e), tone: "error" }),
  });
  const remove = useMutation({
    mutationFn: () => api(path, { method: "DELETE" }),
    onSuccess: () => {
      refresh();
      navigate("/devices");
    },
    onError: (e) => toast({ title: "Not deleted", description: errorMessage(e), tone: "error" }),
  });
  if (!isTenantAdmin) return <Empty title="Only tenant admins change devices" />;
  const decommissioned = device.lifecycle === "DECOMMISSIONED";
  return (
    <Card>
      <CardContent className="grid max-w-xl gap-3 pt-4">
        <Field label="Name" htmlFor="dev-name">
          <Input id="dev-name" value={name} onChange={(e) => setName(e.target.value)} disabled={decommissioned} />
        </Field>
        <Field label="Tags" htmlFor="dev-tags" hint="comma separated">
          <Input id="dev-tags" value={tags} onChange={(e) => setTags(e.target.value)} disabled={decommissioned} />
        </Field>
        <Field label="Status" htmlFor="dev-status" hint="A disabled device keeps its credentials but ingest refuses its messages.">
          <Select id="dev-status" value={status} onChange={(e) => setStatus(e.target.value)} disabled={decommissioned}>
            <option>ACTIVE</option>
            <option>DISABLED</option>
          </Select>
        </Field>
        <div className="flex flex-wrap gap-2">
          <Button onClick={() => save.mutate()} disabled={decommissioned || save.isPending}>
            Save
          </Button>
          {!decommissioned ? (
            <ConfirmButton
              title="Decommission device?"
              description="Its credentials are revoked for good and it stops counting against the device limit. This cannot be undone."
              confirmLabel="Decommission"
              variant="destructive"
              onConfirm={() => decommission.mutate()}
            >
              Decommission
            </ConfirmButton>
          ) : (
            <ConfirmButton
              title="Delete device?"
              description="Its state, credentials and memberships are removed; stored telemetry stays until retention removes it."
              confirmLabel="Delete"
              variant="destructive"
              onConfirm={() => remove.mutate()}
            >
              Delete
            </ConfirmButton>
          )}
        </div>
      </CardContent>
    </Card>
  );
}
