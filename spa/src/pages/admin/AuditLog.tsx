// The tenant's audit log: every change made under /customer, newest first (tenant-admin).
import { useQuery } from "@tanstack/react-query";
import * as React from "react";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { api } from "@/lib/api";
import { formatTime } from "@/lib/format";
import type { AuditRow, Page } from "@/lib/types";

export function AuditTable({ path, title, description, withTenant }: { path: string; title: string; description: string; withTenant?: boolean }) {
  const [actor, setActor] = React.useState("");
  const [offset, setOffset] = React.useState(0);
  const limit = 50;
  const rows = useQuery({
    queryKey: ["audit", path, actor, offset],
    queryFn: () => api<Page<AuditRow>>(path, { query: { actor, limit, offset } }),
  });
  return (
    <div className="grid gap-4" data-page="audit">
      <PageHeader title={title} description={description} />
      <Card className="p-3">
        <Input
          aria-label="Actor"
          placeholder="exact actor (email)"
          className="max-w-xs"
          onKeyDown={(e) => {
            if (e.key === "Enter") {
              setActor((e.target as HTMLInputElement).value.trim());
              setOffset(0);
            }
          }}
        />
      </Card>
      <Card>
        {rows.isPending ? (
          <Loading />
        ) : rows.isError ? (
          <ErrorState error={rows.error} onRetry={() => void rows.refetch()} />
        ) : rows.data.items.length === 0 ? (
          <Empty title="Nothing recorded" />
        ) : (
          <>
            <Table>
              <THead>
                <TR>
                  <TH>When</TH>
                  <TH>Who</TH>
                  {withTenant && <TH>Tenant</TH>}
                  <TH>Action</TH>
                  <TH>Resource</TH>
                  <TH>IP</TH>
                </TR>
              </THead>
              <TBody>
                {rows.data.items.map((r) => (
                  <TR key={r.audit_id}>
                    <TD className="text-xs whitespace-nowrap">{formatTime(r.at)}</TD>
                    <TD className="text-xs">{r.actor}</TD>
                    {withTenant && <TD className="text-xs">{r.tenant_id ?? "—"}</TD>}
                    <TD className="font-mono text-xs">{r.action}</TD>
                    <TD className="max-w-72 truncate font-mono text-xs" title={r.resource}>
                      {r.resource}
                    </TD>
                    <TD className="text-xs">{r.ip ?? "—"}</TD>
                  </TR>
                ))}
              </TBody>
            </Table>
            <div className="flex items-center justify-between border-t p-2 text-xs text-muted-foreground">
              <span>
                {offset + 1}–{offset + rows.data.items.length} of {rows.data.total}
              </span>
              <span className="flex gap-2">
                <Button size="sm" variant="outline" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - limit))}>
                  Newer
                </Button>
                <Button size="sm" variant="outline" disabled={offset + limit >= rows.data.total} onClick={() => setOffset(offset + limit)}>
                  Older
                </Button>
              </span>
            </div>
          </>
        )}
      </Card>
    </div>
  );
}

export default function AuditLog() {
  return <AuditTable path="/customer/audit-log" title="Audit log" description="Every change made in this tenant, who made it and from where." />;
}
