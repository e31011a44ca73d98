// Tenants: health matrix (online %, open alerts, alert activity, device use, status) and onboarding.
import { useMutation, useQueries, useQuery, useQueryClient } from "@tanstack/react-query";
import { Plus } from "lucide-react";
import * as React from "react";
import { Link, useNavigate } from "react-router";
import { PageHeader } from "@/components/page";
import { HealthBar, Sparkline } from "@/components/Sparkline";
import { Empty, ErrorState, Loading } from "@/components/states";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Dialog, DialogContent } from "@/components/ui/dialog";
import { Input, Select } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { api, errorMessage } from "@/lib/api";
import { optionalApi } from "@/lib/optional";
import type { OperatorAlert, Page, TenantHealth, TenantSummary } from "@/lib/types";

/** Alerts opened per hour over the last 24 h, per tenant. */
export function hourlyByTenant(alerts: OperatorAlert[], now: number): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const a of alerts) {
    const age = now - new Date(a.opened_at).getTime();
    if (age < 0 || age >= 86_400_000) continue;
    const series = out.get(a.tenant_id) ?? new Array<number>(24).fill(0);
    series[23 - Math.floor(age / 3_600_000)] += 1;
    out.set(a.tenant_id, series);
  }
  return out;
}

export default function Tenants() {
  const [q, setQ] = React.useState("");
  const [status, setStatus] = React.useState("");
  const [creating, setCreating] = React.useState(false);
  const tenants = useQuery({ queryKey: ["op-tenants", q, status], queryFn: () => api<Page<TenantSummary>>("/operator/tenants", { query: { q, status, limit: 100 } }) });
  const alerts = useQuery({ queryKey: ["op-alerts", "matrix"], queryFn: () => api<Page<OperatorAlert>>("/operator/alerts", { query: { limit: 500 } }), refetchInterval: 30_000 });
  const [now] = React.useState(() => Date.now());
  const hourly = React.useMemo(() => hourlyByTenant(alerts.data?.items ?? [], now), [alerts.data, now]);
  const items = tenants.data?.items ?? [];
  // The health matrix endpoint when this Pulse has it; otherwise online shares are counted per tenant here.
  const matrix = useQuery({
    queryKey: ["op-tenant-health", status],
    queryFn: () => optionalApi<Page<TenantHealth>>("/operator/system/tenants", { query: { status, limit: 500 } }),
    refetchInterval: 30_000,
    retry: false,
  });
  const healthOf = new Map((matrix.data?.items ?? []).map((h) => [h.tenant_id, h]));
  const fallback = matrix.isSuccess && matrix.data === null;
  const online = useQueries({
    queries: (fallback ? items.slice(0, 100) : []).map((t) => ({
      queryKey: ["op-online", t.tenant_id],
      queryFn: async () => {
        const [active, on] = await Promise.all([
          api<Page<unknown>>("/operator/devices", { query: { tenant_id: t.tenant_id, status: "ACTIVE", limit: 1 } }),
          api<Page<unknown>>("/operator/devices", { query: { tenant_id: t.tenant_id, status: "ACTIVE", state: "ONLINE", limit: 1 } }),
        ]);
        return active.total ? (100 * on.total) / active.total : null;
      },
      staleTime: 30_000,
    })),
  });
  return (
    <div className="grid gap-4" data-page="tenants">
      <PageHeader
        title="Tenants"
        description="Health of every tenant at a glance; open one for its subscriptions."
        actions={
          <Button size="sm" onClick={() => setCreating(true)}>
            <Plus /> New tenant
          </Button>
        }
      />
      <Card className="flex flex-wrap gap-2 p-3" role="search">
        <Input aria-label="Search tenants" placeholder="id or name" className="max-w-xs" value={q} onChange={(e) => setQ(e.target.value)} />
        <Select aria-label="Status" className="w-40" value={status} onChange={(e) => setStatus(e.target.value)}>
          <option value="">any status</option>
          <option>ACTIVE</option>
          <option>SUSPENDED</option>
          <option>DELETED</option>
        </Select>
      </Card>
      <Card>
        {tenants.isPending ? (
          <Loading />
        ) : tenants.isError ? (
          <ErrorState error={tenants.error} onRetry={() => void tenants.refetch()} />
        ) : items.length === 0 ? (
          <Empty title="No tenants match" />
        ) : (
          <Table aria-label="Tenant health matrix" data-testid="tenant-matrix">
            <THead>
              <TR>
                <TH>Tenant</TH>
                <TH>Status</TH>
                <TH>Online</TH>
                <TH>Open alerts</TH>
                <TH>{fallback ? "Alerts / h (24 h)" : "Messages / h (24 h)"}</TH>
                <TH>Devices / limit</TH>
              </TR>
            </THead>
            <TBody>
              {items.map((t, i) => {
                const use = t.device_limit ? (100 * t.device_count) / t.device_limit : null;
                const health = healthOf.get(t.tenant_id);
                const onlinePct = health ? health.online_percent : (online[i]?.data ?? null);
                const activity = health
                  ? health.activity.map((a) => a.messages)
                  : (hourly.get(t.tenant_id) ?? new Array<number>(24).fill(0));
                return (
                  <TR key={t.tenant_id} data-tenant={t.tenant_id}>
                    <TD>
                      <Link className="font-medium hover:underline" to={`/operator/tenants/${t.tenant_id}`}>
                        {t.name}
                      </Link>
                      <p className="font-mono text-xs text-muted-foreground">{t.tenant_id}</p>
                    </TD>
                    <TD>
                      <Badge variant={t.status === "ACTIVE" ? "ok" : t.status === "SUSPENDED" ? "warn" : "muted"}>{t.status}</Badge>
                      {health?.subscription_status && health.subscription_status !== "ACTIVE" && (
                        <Badge variant="warn" className="ml-1">
                          {health.subscription_status}
                        </Badge>
                      )}
                    </TD>
                    <TD>
                      <HealthBar value={onlinePct} label={`${t.name} devices online`} />
                    </TD>
                    <TD className={t.open_alert_count ? "font-medium text-bad tabular-nums" : "tabular-nums"}>{t.open_alert_count}</TD>
                    <TD className={fallback ? "text-bad" : "text-primary"}>
                      <Sparkline values={activity} label={`${t.name} ${fallback ? "alerts" : "messages"} per hour, last 24 h`} />
                    </TD>
                    <TD>
                      <div className="flex items-center gap-2">
                        <div className="h-2 w-20 overflow-hidden rounded bg-muted">
                          <div className={`h-full ${use !== null && use > 90 ? "bg-bad" : "bg-primary"}`} style={{ width: `${Math.min(100, use ?? 0)}%` }} />
                        </div>
                        <span className="text-xs tabular-nums">
                          {t.device_count} / {t.device_limit}
                        </span>
                      </div>
                    </TD>
                  </TR>
                );
              })}
            </TBody>
          </Table>
        )}
      </Card>
      {creating && <NewTenant onClose={() => setCreating(false)} />}
    </div>
  );
}

function NewTenant({ onClose }: { onClose: () => void }) {
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const [form, setForm] = React.useState({ tenant_id: "", name: "", device_limit: "100", subscription_kind: "MAIN", term_days: "365", contact_email: "" });
  const create = useMutation({
    mutationFn: () =>
      api<TenantSummary>("/operator/tenants", {
        method: "POST",
        body: {
          tenant_id: form.tenant_id.trim(),
          name: form.name.trim(),
          device_limit: Number(form.device_limit),
          subscription_kind: form.subscription_kind,
          term_days: Number(form.term_days),
          ...(form.contact_email.trim() ? { contact_email: form.contact_email.trim() } : {}),
        },
      }),
    onSuccess: (t) => {
      void queryClient.invalidateQueries({ queryKey: ["op-tenants"] });
      navigate(`/operator/tenants/${t.tenant_id}`);
    },
  });
  const set = (k: keyof typeof form) => (e: React.ChangeEvent<HTMLInputElement | HTMLSelectElement>) => setForm((f) => ({ ...f, [k]: e.target.value }));
  return (
    <Dialog open onOpenChange={(v) => !v && onClose()}>
      <DialogContent title="New tenant" description="The tenant and its first subscription are created together.">
        <form
          className="grid gap-3 sm:grid-cols-2"
          onSubmit={(e) => {
            e.preventDefault();
            create.mutate();
          }}
        >
          <Field label="Tenant id" htmlFor="t-id" hint="lowercase letters, digits and -">
            <Input id="t-id" required value={form.tenant_id} onChange={set("tenant_id")} />
          </Field>
          <Field label="Name" htmlFor="t-name">
            <Input id="t-name" required value={form.name} onChange={set("name")} />
          </Field>
          <Field label="Device limit" htmlFor="t-limit">
            <Input id="t-limit" value={form.device_limit} onChange={set("device_limit")} />
          </Field>
          <Field label="Subscription" htmlFor="t-kind">
            <Select id="t-kind" value={form.subscription_kind} onChange={set("subscription_kind")}>
              <option value="MAIN">main</option>
              <option value="TRIAL">trial</option>
            </Select>
          </Field>
          <Field label="Term (days)" htmlFor="t-term">
            <Input id="t-term" value={form.term_days} onChange={set("term_days")} />
          </Field>
          <Field label="Contact email" htmlFor="t-mail">
            <Input id="t-mail" type="email" value={form.contact_email} onChange={set("contact_email")} />
          </Field>
          {create.isError && (
            <p role="alert" className="text-sm text-destructive sm:col-span-2">
              {errorMessage(create.error)}
            </p>
          )}
          <div className="flex justify-end gap-2 sm:col-span-2">
            <Button variant="outline" onClick={onClose}>
              Cancel
            </Button>
            <Button type="submit" disabled={!form.tenant_id || !form.name || create.isPending}>
              Create
            </Button>
          </div>
        </form>
      </DialogContent>
    </Dialog>
  );
}
