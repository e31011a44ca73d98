// Alerts of every tenant, for operators.
import { useQuery } from "@tanstack/react-query";
import * as React from "react";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { AlertStatusBadge, SeverityBadge } from "@/components/status";
import { Card } from "@/components/ui/card";
import { Input, Select } from "@/components/ui/input";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { api } from "@/lib/api";
import { formatTime } from "@/lib/format";
import type { OperatorAlert, Page } from "@/lib/types";
import { useDebounced } from "@/lib/useDebounced";
import { Pager } from "@/pages/operator/OperatorDevices";

export default function OperatorAlerts() {
  const [tenant, setTenant] = React.useState("");
  const [status, setStatus] = React.useState("OPEN,ACKNOWLEDGED");
  const [severity, setSeverity] = React.useState("");
  const [offset, setOffset] = React.useState(0);
  const query = { tenant_id: useDebounced(tenant.trim()), status, severity_min: severity, limit: 100, offset };
  const alerts = useQuery({ queryKey: ["op-alerts", query], queryFn: () => api<Page<OperatorAlert>>("/operator/alerts", { query }), refetchInterval: 15_000 });
  return (
    <div className="grid gap-4" data-page="operator-alerts">
      <PageHeader title="All alerts" description={alerts.data ? `${alerts.data.total} alerts` : undefined} />
      <Card className="flex flex-wrap gap-2 p-3" role="search">
        <Input aria-label="Tenant" placeholder="tenant id" className="w-40" value={tenant} onChange={(e) => { setTenant(e.target.value); setOffset(0); }} />
        <Select aria-label="Status" className="w-56" value={status} onChange={(e) => { setStatus(e.target.value); setOffset(0); }}>
          <option value="OPEN,ACKNOWLEDGED">open and acknowledged</option>
          <option value="OPEN">open</option>
          <option value="ACKNOWLEDGED">acknowledged</option>
          <option value="CLOSED">closed</option>
          <option value="">any</option>
        </Select>
        <Select aria-label="Minimum severity" className="w-40" value={severity} onChange={(e) => { setSeverity(e.target.value); setOffset(0); }}>
          <option value="">any severity</option>
          <option value="3">medium and up</option>
          <option value="4">high and up</option>
          <option value="5">critical</option>
        </Select>
      </Card>
      <Card>
        {alerts.isPending ? (
          <Loading />
        ) : alerts.isError ? (
          <ErrorState error={alerts.error} onRetry={() => void alerts.refetch()} />
        ) : alerts.data.items.length === 0 ? (
          <Empty title="No alerts match" />
        ) : (
          <>
            <Table>
              <THead>
                <TR>
                  <TH>Tenant</TH>
                  <TH>Alert</TH>
                  <TH>Severity</TH>
                  <TH>Status</TH>
                  <TH>Opened</TH>
                </TR>
              </THead>
              <TBody>
                {alerts.data.items.map((a) => (
                  <TR key={a.alert_id}>
                    <TD className="font-mono text-xs">{a.tenant_id}</TD>
                    <TD>
                      {a.title} {a.device_id && <span className="ml-1 font-mono text-xs text-muted-foreground">{a.device_id}</span>}
                    </TD>
                    <TD>
                      <SeverityBadge severity={a.severity} />
                    </TD>
                    <TD>
                      <AlertStatusBadge status={a.status} />
                    </TD>
                    <TD className="text-xs text-muted-foreground">{formatTime(a.opened_at)}</TD>
                  </TR>
                ))}
              </TBody>
            </Table>
            <Pager offset={offset} limit={100} shown={alerts.data.items.length} total={alerts.data.total} onChange={setOffset} />
          </>
        )}
      </Card>
    </div>
  );
}
