// One tenant for operators: status (suspend, resume), subscriptions (add, suspend, resume, change limit).
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { ArrowLeft, Plus } from "lucide-react";
import * as React from "react";
import { Link, useParams } from "react-router";
import { ConfirmButton } from "@/components/confirm";
import { PageHeader } from "@/components/page";
import { ErrorState, Loading } from "@/components/states";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { Input, Select } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { useToast } from "@/components/ui/toast";
import { api, errorMessage } from "@/lib/api";
import { formatShortTime } from "@/lib/format";
import type { TenantDetail } from "@/lib/types";

export default function TenantPage() {
  const { tenantId = "" } = useParams();
  const queryClient = useQueryClient();
  const toast = useToast();
  const tenant = useQuery({ queryKey: ["op-tenant", tenantId], queryFn: () => api<TenantDetail>(`/operator/tenants/${tenantId}`) });
  const refresh = () => {
    void queryClient.invalidateQueries({ queryKey: ["op-tenant", tenantId] });
    void queryClient.invalidateQueries({ queryKey: ["op-tenants"] });
  };
  const onError = (e: unknown) => toast({ title: "Refused", description: errorMessage(e), tone: "error" });
  const patchTenant = useMutation({ mutationFn: (body: object) => api(`/operator/tenants/${tenantId}`, { method: "PATCH", body }), onSuccess: refresh, onError });
  const subAction = useMutation({
    mutationFn: ({ id, action, body }: { id: string; action?: string; body?: object }) =>
      api(`/operator/subscriptions/${id}${action ? `/${action}` : ""}`, { method: action ? "POST" : "PATCH", body }),
    onSuccess: refresh,
    onError,
  });
  const [kind, setKind] = React.useState("ADDON");
  const [limit, setLimit] = React.useState("50");
  const addSub = useMutation({
    mutationFn: () => {
      const main = tenant.data?.subscriptions.find((s) => s.kind === "MAIN" && s.status !== "EXPIRED");
      const body: Record<string, unknown> = { kind, device_limit: Number(limit) };
      if (kind === "ADDON") body.parent_subscription_id = main?.subscription_id;
      if (kind === "TEMPORARY") body.expires_at = new Date(Date.now() + 30 * 86_400_000).toISOString();
      return api(`/operator/tenants/${tenantId}/subscriptions`, { method: "POST", body });
    },
    onSuccess: refresh,
    onError,
  });

  if (tenant.isPending) return <Loading />;
  if (tenant.isError) return <ErrorState error={tenant.error} onRetry={() => void tenant.refetch()} />;
  const t = tenant.data;
  return (
    <div className="grid gap-4" data-page="tenant">
      <Link to="/operator/tenants" className="flex items-center gap-1 text-sm text-muted-foreground hover:underline">
        <ArrowLeft className="size-4" /> Tenants
      </Link>
      <PageHeader
        title={t.name}
        description={
          <span className="flex flex-wrap items-center gap-2">
            <span className="font-mono">{t.tenant_id}</span>
            <Badge variant={t.status === "ACTIVE" ? "ok" : "warn"}>{t.status}</Badge>
            <span>
              {t.device_count} / {t.device_limit} devices · {t.open_alert_count} open alerts · {t.timezone}
            </span>
          </span>
        }
        actions={
          t.status === "ACTIVE" ? (
            <ConfirmButton
              title={`Suspend ${t.name}?`}
              description="Ingest refuses every device of the tenant until it is resumed."
              confirmLabel="Suspend"
              variant="destructive"
              onConfirm={() => patchTenant.mutate({ status: "SUSPENDED" })}
            >
              Suspend tenant
            </ConfirmButton>
          ) : t.status === "SUSPENDED" ? (
            <Button size="sm" onClick={() => patchTenant.mutate({ status: "ACTIVE" })}>
              Resume tenant
            </Button>
          ) : null
        }
      />
      <Card>
        <CardHeader>
          <CardTitle>Subscriptions</CardTitle>
        </CardHeader>
        <Table>
          <THead>
            <TR>
              <TH>Kind</TH>
              <TH>Status</TH>
              <TH>Devices / limit</TH>
              <TH>Term</TH>
              <TH />
            </TR>
          </THead>
          <TBody>
            {t.subscriptions.map((s) => (
              <TR key={s.subscription_id}>
                <TD>{s.kind}</TD>
                <TD>
                  <Badge variant={["ACTIVE", "TRIAL"].includes(s.status) ? "ok" : s.status === "GRACE" ? "warn" : "muted"}>{s.status}</Badge>
                </TD>
                <TD className="tabular-nums">
                  {s.device_count} /{" "}
                  <Input
                    aria-label={`Device limit of ${s.kind} subscription`}
                    className="inline-flex h-7 w-24"
                    defaultValue={s.device_limit}
                    onBlur={(e) => Number(e.target.value) !== s.device_limit && subAction.mutate({ id: s.subscription_id, body: { device_limit: Number(e.target.value) } })}
                  />
                </TD>
                <TD className="text-xs">
                  {formatShortTime(s.term_start_at)} – {s.expires_at ? formatShortTime(s.expires_at) : "open-ended"}
                </TD>
                <TD className="text-right">
                  {["TRIAL", "ACTIVE", "GRACE"].includes(s.status) && (
                    <Button size="sm" variant="outline" onClick={() => subAction.mutate({ id: s.subscription_id, action: "suspend" })}>
                      Suspend
                    </Button>
                  )}
                  {s.status === "SUSPENDED" && (
                    <Button size="sm" variant="outline" onClick={() => subAction.mutate({ id: s.subscription_id, action: "resume" })}>
                      Resume
                    </Button>
                  )}
                </TD>
              </TR>
            ))}
          </TBody>
        </Table>
        <CardContent>
          <form
            className="flex flex-wrap items-end gap-2 border-t pt-3"
            onSubmit={(e) => {
              e.preventDefault();
              addSub.mutate();
            }}
          >
            <Field label="Kind" htmlFor="sub-kind">
              <Select id="sub-kind" value={kind} onChange={(e) => setKind(e.target.value)}>
                <option value="ADDON">add-on</option>
                <option value="TEMPORARY">temporary (30 days)</option>
                <option value="TRIAL">trial</option>
                <option value="MAIN">main</option>
              </Select>
            </Field>
            <Field label="Device limit" htmlFor="sub-limit">
              <Input id="sub-limit" className="w-28" value={limit} onChange={(e) => setLimit(e.target.value)} />
            </Field>
            <Button type="submit" disabled={addSub.isPending}>
              <Plus /> Add subscription
            </Button>
          </form>
        </CardContent>
      </Card>
    </div>
  );
}
