// Devices of every tenant, for operators: filter by tenant, liveness, registry status and text.
import { useQuery } from "@tanstack/react-query";
import * as React from "react";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { DeviceStatusBadge, LifecycleBadge } from "@/components/status";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Input, Select } from "@/components/ui/input";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { api } from "@/lib/api";
import { relativeTime } from "@/lib/format";
import type { OperatorDevice, Page } from "@/lib/types";
import { useDebounced } from "@/lib/useDebounced";

export default function OperatorDevices() {
  const [tenant, setTenant] = React.useState("");
  const [state, setState] = React.useState("");
  const [q, setQ] = React.useState("");
  const [offset, setOffset] = React.useState(0);
  const query = { tenant_id: useDebounced(tenant.trim()), state, q: useDebounced(q.trim()), limit: 100, offset };
  const devices = useQuery({ queryKey: ["op-devices", query], queryFn: () => api<Page<OperatorDevice>>("/operator/devices", { query }) });
  return (
    <div className="grid gap-4" data-page="operator-devices">
      <PageHeader title="All devices" description={devices.data ? `${devices.data.total} devices` : undefined} />
      <Card className="flex flex-wrap gap-2 p-3" role="search">
        <Input aria-label="Tenant" placeholder="tenant id" className="w-40" value={tenant} onChange={(e) => { setTenant(e.target.value); setOffset(0); }} />
        <Input aria-label="Search" placeholder="device id or name" className="w-56" value={q} onChange={(e) => { setQ(e.target.value); setOffset(0); }} />
        <Select aria-label="State" className="w-40" value={state} onChange={(e) => { setState(e.target.value); setOffset(0); }}>
          <option value="">any state</option>
          {["ONLINE", "STALE", "OFFLINE", "UNKNOWN"].map((s) => (
            <option key={s}>{s}</option>
          ))}
        </Select>
      </Card>
      <Card>
        {devices.isPending ? (
          <Loading />
        ) : devices.isError ? (
          <ErrorState error={devices.error} onRetry={() => void devices.refetch()} />
        ) : devices.data.items.length === 0 ? (
          <Empty title="No devices match" />
        ) : (
          <>
            <Table>
              <THead>
                <TR>
                  <TH>Tenant</TH>
                  <TH>Device</TH>
                  <TH>State</TH>
                  <TH>Registry</TH>
                  <TH>Last seen</TH>
                </TR>
              </THead>
              <TBody>
                {devices.data.items.map((d) => (
                  <TR key={`${d.tenant_id}/${d.device_id}`}>
                    <TD className="font-mono text-xs">{d.tenant_id}</TD>
                    <TD>
                      <span className="font-medium">{d.device_id}</span>
                      {d.name && d.name !== d.device_id && <span className="ml-2 text-xs text-muted-foreground">{d.name}</span>}
                    </TD>
                    <TD>
                      <DeviceStatusBadge status={d.state} />
                    </TD>
                    <TD>
                      <LifecycleBadge lifecycle={d.status} />
                    </TD>
                    <TD className="text-xs text-muted-foreground">{relativeTime(d.last_seen_at)}</TD>
                  </TR>
                ))}
              </TBody>
            </Table>
            <Pager offset={offset} limit={100} shown={devices.data.items.length} total={devices.data.total} onChange={setOffset} />
          </>
        )}
      </Card>
    </div>
  );
}

export function Pager({ offset, limit, shown, total, onChange }: { offset: number; limit: number; shown: number; total: number; onChange: (o: number) => void }) {
  return (
    <div className="flex items-center justify-between border-t p-2 text-xs text-muted-foreground">
      <span>
        {offset + 1}–{offset + shown} of {total}
      </span>
      <span className="flex gap-2">
        <Button size="sm" variant="outline" disabled={offset === 0} onClick={() => onChange(Math.max(0, offset - limit))}>
          Previous
        </Button>
        <Button size="sm" variant="outline" disabled={offset + limit >= total} onClick={() => onChange(offset + limit)}>
          Next
        </Button>
      </span>
    </div>
  );
}
