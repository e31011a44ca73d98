// Quarantine: rejected messages with their reasons, and totals by reason.
import { useQuery } from "@tanstack/react-query";
import * as React from "react";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { Badge } from "@/components/ui/badge";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { api } from "@/lib/api";
import { formatTime } from "@/lib/format";
import type { Page, QuarantineEvent } from "@/lib/types";
import { useDebounced } from "@/lib/useDebounced";
import { Pager } from "@/pages/operator/OperatorDevices";

export default function Quarantine() {
  const [tenant, setTenant] = React.useState("");
  const [reason, setReason] = React.useState("");
  const [offset, setOffset] = React.useState(0);
  const [open, setOpen] = React.useState<number | null>(null);
  const tenantId = useDebounced(tenant.trim());
  const since = React.useMemo(() => new Date(Date.now() - 86_400_000).toISOString(), []);
  const counters = useQuery({
    queryKey: ["quarantine", "counters", tenantId],
    queryFn: () => api<{ totals_by_reason: Record<string, number> }>("/operator/quarantine/counters", { query: { tenant_id: tenantId, since } }),
  });
  const events = useQuery({
    queryKey: ["quarantine", "events", tenantId, reason, offset],
    queryFn: () => api<Page<QuarantineEvent>>("/operator/quarantine/events", { query: { tenant_id: tenantId, reason, limit: 50, offset } }),
  });
  const totals = Object.entries(counters.data?.totals_by_reason ?? {}).sort((a, b) => b[1] - a[1]);
  return (
    <div className="grid gap-4" data-page="quarantine">
      <PageHeader title="Quarantine" description="Messages ingest refused, with the reason. Click a reason to filter." />
      <Card>
        <CardHeader>
          <CardTitle>Last 24 h by reason</CardTitle>
        </CardHeader>
        <CardContent className="flex flex-wrap gap-2">
          {counters.isPending ? (
            <Loading />
          ) : counters.isError ? (
            <ErrorState error={counters.error} />
          ) : totals.length === 0 ? (
            <p className="text-sm text-muted-foreground">Nothing quarantined.</p>
          ) : (
            totals.map(([r, n]) => (
              <button key={r} type="button" onClick={() => { setReason(reason === r ? "" : r); setOffset(0); }} aria-pressed={reason === r}>
                <Badge variant={reason === r ? "default" : "outline"}>
                  {r} · {n}
                </Badge>
              </button>
            ))
          )}
        </CardContent>
      </Card>
      <Card className="p-3">
        <Input aria-label="Tenant" placeholder="tenant id" className="max-w-xs" value={tenant} onChange={(e) => { setTenant(e.target.value); setOffset(0); }} />
      </Card>
      <Card>
        {events.isPending ? (
          <Loading />
        ) : events.isError ? (
          <ErrorState error={events.error} onRetry={() => void events.refetch()} />
        ) : events.data.items.length === 0 ? (
          <Empty title="No quarantined messages" />
        ) : (
          <>
            <Table>
              <THead>
                <TR>
                  <TH>Received</TH>
                  <TH>Reason</TH>
                  <TH>Tenant / device</TH>
                  <TH>Transport</TH>
                  <TH>Detail</TH>
                </TR>
              </THead>
              <TBody>
                {events.data.items.map((e) => (
                  <React.Fragment key={e.quarantine_id}>
                    <TR className="cursor-pointer" onClick={() => setOpen(open === e.quarantine_id ? null : e.quarantine_id)}>
                      <TD className="text-xs whitespace-nowrap">{formatTime(e.received_at)}</TD>
                      <TD>
                        <Badge variant="warn">{e.reason}</Badge>
                      </TD>
                      <TD className="font-mono text-xs">
                        {e.tenant_id ?? "?"} / {e.device_id ?? "?"}
                      </TD>
                      <TD className="text-xs">{e.transport}</TD>
                      <TD className="max-w-80 truncate text-xs">{e.detail}</TD>
                    </TR>
                    {open === e.quarantine_id && (
                      <TR>
                        <TD colSpan={5}>
                          <p className="text-xs text-muted-foreground">topic {e.topic ?? "—"} · {e.payload_size ?? "?"} bytes</p>
                          <pre className="mt-1 max-h-48 overflow-auto rounded bg-muted p-2 text-xs whitespace-pre-wrap">{e.raw_payload ?? "(no payload kept)"}</pre>
                        </TD>
                      </TR>
                    )}
                  </React.Fragment>
                ))}
              </TBody>
            </Table>
            <Pager offset={offset} limit={50} shown={events.data.items.length} total={events.data.total} onChange={setOffset} />
          </>
        )}
      </Card>
    </div>
  );
}
