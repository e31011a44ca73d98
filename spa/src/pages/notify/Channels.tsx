// Notification channels (with a test send) and routing rules that decide which alert events reach which channel.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Plus, Send, Trash2 } from "lucide-react";
import * as React from "react";
import { ConfirmButton } from "@/components/confirm";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Dialog, DialogContent } from "@/components/ui/dialog";
import { Input, Select, Textarea } from "@/components/ui/input";
import { Field, Label } from "@/components/ui/label";
import { Switch } from "@/components/ui/misc";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { useToast } from "@/components/ui/toast";
import { api, errorMessage } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import { severityName } from "@/lib/format";
import type { Channel, RoutingRule } from "@/lib/types";

const TEMPLATES: Record<string, { config: object; secrets: object }> = {
  WEBHOOK: { config: { url: "https://ops.example.com/pulse" }, secrets: { secret: "at-least-16-characters" } },
  SLACK: { config: {}, secrets: { webhook_url: "https://hooks.slack.com/services/…" } },
  TEAMS: { config: {}, secrets: { webhook_url: "https://example.webhook.office.com/…" } },
  PAGERDUTY: { config: {}, secrets: { routing_key: "" } },
  EMAIL: { config: { host: "smtp.example.com", port: 587, security: "starttls", username: "pulse@example.com", from: "pulse@example.com", to: ["ops@example.com"] }, secrets: { password: "" } },
  MQTT: { config: { url: "mqtts://broker.example.com", topic_template: "alerts/{tenant_id}/{device_id}" }, secrets: {} },
  SNMP: { config: { host: "192.0.2.10", port: 162, version: "2c" }, secrets: { community: "" } },
};

interface TestResult {
  delivered: boolean;
  status_code: number | null;
  error: string | null;
}

export default function Channels() {
  const { isTenantAdmin } = useAuth();
  const queryClient = useQueryClient();
  const toast = useToast();
  const channels = useQuery({ queryKey: ["channels"], queryFn: () => api<{ items: Channel[] }>("/customer/channels") });
  const routes = useQuery({ queryKey: ["routes"], queryFn: () => api<{ items: RoutingRule[] }>("/customer/routing-rules") });
  const [creating, setCreating] = React.useState(false);
  const [routing, setRouting] = React.useState(false);
  const [results, setResults] = React.useState<Record<string, TestResult>>({});
  const test = useMutation({
    mutationFn: (id: string) => api<TestResult>(`/customer/channels/${id}/test`, { method: "POST" }),
    onSuccess: (r, id) => {
      setResults((all) => ({ ...all, [id]: r }));
      toast({ title: r.delivered ? "Test delivered" : "Test not delivered", description: r.error ?? (r.status_code ? `HTTP ${r.status_code}` : undefined), tone: r.delivered ? "success" : "error" });
    },
    onError: (e) => toast({ title: "Test failed", description: errorMessage(e), tone: "error" }),
  });
  const toggle = useMutation({
    mutationFn: (c: Channel) => api(`/customer/channels/${c.channel_id}`, { method: "PATCH", body: { is_enabled: !c.is_enabled } }),
    onSuccess: () => void queryClient.invalidateQueries({ queryKey: ["channels"] }),
    onError: (e) => toast({ title: "Not changed", description: errorMessage(e), tone: "error" }),
  });
  const remove = useMutation({
    mutationFn: (id: string) => api(`/customer/channels/${id}`, { method: "DELETE" }),
    onSuccess: () => {
      void queryClient.invalidateQueries({ queryKey: ["channels"] });
      void queryClient.invalidateQueries({ queryKey: ["routes"] });
    },
  });
  const removeRoute = useMutation({
    mutationFn: (id: string) => api(`/customer/routing-rules/${id}`, { method: "DELETE" }),
    onSuccess: () => void queryClient.invalidateQueries({ queryKey: ["routes"] }),
  });
  const channelName = (id: string) => channels.data?.items.find((c) => c.channel_id === id)?.name ?? "deleted channel";

  return (
    <div className="grid gap-4" data-page="channels">
      <PageHeader
        title="Channels and routing"
        description="Where alert events go: webhooks, chat, PagerDuty, email, MQTT, SNMP."
        actions={
          isTenantAdmin && (
            <>
              <Button size="sm" variant="outline" onClick={() => setRouting(true)} disabled={!channels.data?.items.length}>
                <Plus /> Routing rule
              </Button>
              <Button size="sm" onClick={() => setCreating(true)}>
                <Plus /> Channel
              </Button>
            </>
          )
        }
      />
      <Card>
        <CardHeader>
          <CardTitle>Channels</CardTitle>
        </CardHeader>
        {channels.isPending ? (
          <Loading />
        ) : channels.isError ? (
          <ErrorState error={channels.error} onRetry={() => void channels.refetch()} />
        ) : channels.data.items.length === 0 ? (
          <Empty title="No channels" hint="Add one to be notified of alerts." />
        ) : (
          <Table>
            <THead>
              <TR>
                <TH>Name</TH>
                <TH>Type</TH>
                <TH>Target</TH>
                <TH>Enabled</TH>
                <TH>Last test</TH>
                <TH />
              </TR>
            </THead>
            <TBody>
              {channels.data.items.map((c) => (
                <TR key={c.channel_id}>
                  <TD className="font-medium">{c.name}</TD>
                  <TD>
                    <Badge variant="outline">{c.channel_type}</Badge>
                  </TD>
                  <TD className="max-w-60 truncate font-mono text-xs">{String(c.config.url ?? c.config.host ?? "—")}</TD>
                  <TD>
                    <Switch aria-label={`Enable ${c.name}`} checked={c.is_enabled} disabled={!isTenantAdmin} onCheckedChange={() => toggle.mutate(c)} />
                  </TD>
                  <TD className="text-xs">
                    {results[c.channel_id] ? (
                      results[c.channel_id].delivered ? (
                        <Badge variant="ok">delivered</Badge>
                      ) : (
                        <span className="text-destructive">{results[c.channel_id].error ?? "failed"}</span>
                      )
                    ) : (
                      "—"
                    )}
                  </TD>
                  <TD className="text-right whitespace-nowrap">
                    {isTenantAdmin && (
                      <>
                        <Button size="sm" variant="outline" onClick={() => test.mutate(c.channel_id)} disabled={test.isPending}>
                          <Send /> Test
                        </Button>
                        <ConfirmButton
                          title={`Delete ${c.name}?`}
                          description="Its routing rules go too and its queued notifications are cancelled."
                          confirmLabel="Delete"
                          variant="ghost"
                          onConfirm={() => remove.mutate(c.channel_id)}
                        >
                          <Trash2 />
                        </ConfirmButton>
                      </>
                    )}
                  </TD>
                </TR>
              ))}
            </TBody>
          </Table>
        )}
      </Card>
      <Card>
        <CardHeader>
          <CardTitle>Routing rules</CardTitle>
          <CardDescription>Matched in order; a matching final rule stops the matching.</CardDescription>
        </CardHeader>
        {routes.isPending ? (
          <Loading />
        ) : routes.isError ? (
          <ErrorState error={routes.error} />
        ) : routes.data.items.length === 0 ? (
          <Empty title="No routing rules" hint="Without one, alert events reach channels only through escalation policies." />
        ) : (
          <Table>
            <THead>
              <TR>
                <TH>#</TH>
                <TH>Rule</TH>
                <TH>Channel</TH>
                <TH>Severity</TH>
                <TH>Events</TH>
                <TH />
              </TR>
            </THead>
            <TBody>
              {routes.data.items.map((r) => (
                <TR key={r.route_id}>
                  <TD>{r.position}</TD>
                  <TD className="font-medium">
                    {r.name} {r.is_final && <Badge variant="muted">final</Badge>} {!r.is_enabled && <Badge variant="muted">disabled</Badge>}
                  </TD>
                  <TD>{channelName(r.channel_id)}</TD>
                  <TD>{severityName(r.min_severity)} and up</TD>
                  <TD className="text-xs">{r.event_kinds.join(", ")}</TD>
                  <TD>
                    {isTenantAdmin && (
                      <Button variant="ghost" size="icon" aria-label={`Delete ${r.name}`} onClick={() => removeRoute.mutate(r.route_id)}>
                        <Trash2 />
                      </Button>
                    )}
                  </TD>
                </TR>
              ))}
            </TBody>
          </Table>
        )}
      </Card>
      {creating && <NewChannel onClose={() => setCreating(false)} />}
      {routing && <NewRoute channels={channels.data?.items ?? []} onClose={() => setRouting(false)} />}
    </div>
  );
}

function NewChannel({ onClose }: { onClose: () => void }) {
  const queryClient = useQueryClient();
  const [name, setName] = React.useState("");
  const [type, setType] = React.useState("WEBHOOK");
  const [config, setConfig] = React.useState(JSON.stringify(TEMPLATES.WEBHOOK.config, null, 2));
  const [secrets, setSecrets] = React.useState(JSON.stringify(TEMPLATES.WEBHOOK.secrets, null, 2));
  const [jsonError, setJsonError] = React.useState<string | null>(null);
  const create = useMutation({
    mutationFn: (body: unknown) => api("/customer/channels", { method: "POST", body }),
    onSuccess: () => {
      void queryClient.invalidateQueries({ queryKey: ["channels"] });
      onClose();
    },
  });
  return (
    <Dialog open onOpenChange={(v) => !v && onClose()}>
      <DialogContent title="New channel" className="max-w-xl">
        <form
          className="grid gap-3"
          onSubmit={(e) => {
            e.preventDefault();
            try {
              const body = { name: name.trim(), channel_type: type, config: JSON.parse(config || "{}"), secrets: JSON.parse(secrets || "{}") };
              setJsonError(null);
              create.mutate(body);
            } catch (err) {
              setJsonError(`config and secrets must be JSON objects: ${(err as Error).message}`);
            }
          }}
        >
          <div className="grid gap-3 sm:grid-cols-2">
            <Field label="Name" htmlFor="ch-name">
              <Input id="ch-name" required value={name} onChange={(e) => setName(e.target.value)} />
            </Field>
            <Field label="Type" htmlFor="ch-type">
              <Select
                id="ch-type"
                value={type}
                onChange={(e) => {
                  setType(e.target.value);
                  setConfig(JSON.stringify(TEMPLATES[e.target.value].config, null, 2));
                  setSecrets(JSON.stringify(TEMPLATES[e.target.value].secrets, null, 2));
                }}
              >
                {Object.keys(TEMPLATES).map((t) => (
                  <option key={t}>{t}</option>
                ))}
              </Select>
            </Field>
          </div>
          <Field label="Config (JSON)" htmlFor="ch-config" hint="see the channel documentation for every field">
            <Textarea id="ch-config" className="min-h-28 font-mono text-xs" value={config} onChange={(e) => setConfig(e.target.value)} />
          </Field>
          <Field label="Secrets (JSON)" htmlFor="ch-secrets" hint="stored encrypted, shown masked afterwards">
            <Textarea id="ch-secrets" className="min-h-20 font-mono text-xs" value={secrets} onChange={(e) => setSecrets(e.target.value)} />
          </Field>
          {(jsonError || create.isError) && (
            <p role="alert" className="text-sm text-destructive">
              {jsonError ?? errorMessage(create.error)}
            </p>
          )}
          <div className="flex justify-end gap-2">
            <Button variant="outline" onClick={onClose}>
              Cancel
            </Button>
            <Button type="submit" disabled={!name.trim() || create.isPending}>
              Create
            </Button>
          </div>
        </form>
      </DialogContent>
    </Dialog>
  );
}

function NewRoute({ channels, onClose }: { channels: Channel[]; onClose: () => void }) {
  const queryClient = useQueryClient();
  const [name, setName] = React.useState("");
  const [channelId, setChannelId] = React.useState(channels[0]?.channel_id ?? "");
  const [minSeverity, setMinSeverity] = React.useState("1");
  const [position, setPosition] = React.useState("0");
  const [isFinal, setIsFinal] = React.useState(false);
  const create = useMutation({
    mutationFn: () =>
      api("/customer/routing-rules", {
        method: "POST",
        body: { name: name.trim(), channel_id: channelId, min_severity: Number(minSeverity), position: Number(position), is_final: isFinal },
      }),
    onSuccess: () => {
      void queryClient.invalidateQueries({ queryKey: ["routes"] });
      onClose();
    },
  });
  return (
    <Dialog open onOpenChange={(v) => !v && onClose()}>
      <DialogContent title="New routing rule">
        <form
          className="grid gap-3"
          onSubmit={(e) => {
            e.preventDefault();
            create.mutate();
          }}
        >
          <Field label="Name" htmlFor="rt-name">
            <Input id="rt-name" required value={name} onChange={(e) => setName(e.target.value)} />
          </Field>
          <Field label="Channel" htmlFor="rt-channel">
            <Select id="rt-channel" value={channelId} onChange={(e) => setChannelId(e.target.value)}>
              {channels.map((c) => (
                <option key={c.channel_id} value={c.channel_id}>
                  {c.name}
                </option>
              ))}
            </Select>
          </Field>
          <div className="grid gap-3 sm:grid-cols-2">
            <Field label="Minimum severity" htmlFor="rt-sev">
              <Select id="rt-sev" value={minSeverity} onChange={(e) => setMinSeverity(e.target.value)}>
                {[1, 2, 3, 4, 5].map((s) => (
                  <option key={s} value={s}>
                    {severityName(s)}
                  </option>
                ))}
              </Select>
            </Field>
            <Field label="Position" htmlFor="rt-pos">
              <Input id="rt-pos" inputMode="numeric" value={position} onChange={(e) => setPosition(e.target.value)} />
            </Field>
          </div>
          <div className="flex items-center gap-2">
            <Switch id="rt-final" checked={isFinal} onCheckedChange={setIsFinal} />
            <Label htmlFor="rt-final">Final (stop matching when this rule matches)</Label>
          </div>
          {create.isError && (
            <p role="alert" className="text-sm text-destructive">
              {errorMessage(create.error)}
            </p>
          )}
          <div className="flex justify-end gap-2">
            <Button variant="outline" onClick={onClose}>
              Cancel
            </Button>
            <Button type="submit" disabled={!name.trim() || !channelId || create.isPending}>
              Create
            </Button>
          </div>
        </form>
      </DialogContent>
    </Dialog>
  );
}
