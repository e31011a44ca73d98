// Delivery log: every notification job with its attempts; dead letters can be replayed.
import { useInfiniteQuery, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import * as React from "react";
import { Link } from "react-router";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { SeverityBadge } from "@/components/status";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { Select } from "@/components/ui/input";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { useToast } from "@/components/ui/toast";
import { api, errorMessage } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import { formatTime } from "@/lib/format";
import type { Channel, CursorPage, Job, JobDetail } from "@/lib/types";
import { cn } from "@/lib/utils";

const STATUS_TONE = { DELIVERED: "ok", DEAD: "bad", PENDING: "warn", IN_PROGRESS: "warn", CANCELLED: "muted" } as const;

export default function Deliveries() {
  const [status, setStatus] = React.useState("");
  const [channelId, setChannelId] = React.useState("");
  const [open, setOpen] = React.useState<string | null>(null);
  const channels = useQuery({ queryKey: ["channels"], queryFn: () => api<{ items: Channel[] }>("/customer/channels") });
  const jobs = useInfiniteQuery({
    queryKey: ["jobs", status, channelId],
    initialPageParam: "",
    queryFn: ({ pageParam }) =>
      status === "DEAD"
        ? api<CursorPage<Job>>("/customer/notifications/dead-letters", { query: { channel_id: channelId, limit: 50, cursor: pageParam } })
        : api<CursorPage<Job>>("/customer/notifications/jobs", { query: { status, channel_id: channelId, limit: 50, cursor: pageParam } }),
    getNextPageParam: (last) => last.next_cursor ?? undefined,
  });
  const rows = jobs.data?.pages.flatMap((p) => p.items) ?? [];
  const channelName = (id: string | null) => (id ? channels.data?.items.find((c) => c.channel_id === id)?.name ?? id.slice(0, 8) : "person's contact / deleted");
  return (
    <div className="grid gap-4" data-page="deliveries">
      <PageHeader title="Delivery log" description="Every notification Pulse sent or tried to send, newest first." />
      <Card className="flex flex-wrap gap-2 p-3">
        <Select aria-label="Status" className="w-48" value={status} onChange={(e) => setStatus(e.target.value)}>
          <option value="">any status</option>
          {["PENDING", "IN_PROGRESS", "DELIVERED", "DEAD", "CANCELLED"].map((s) => (
            <option key={s}>{s}</option>
          ))}
        </Select>
        <Select aria-label="Channel" className="w-56" value={channelId} onChange={(e) => setChannelId(e.target.value)}>
          <option value="">any channel</option>
          {channels.data?.items.map((c) => (
            <option key={c.channel_id} value={c.channel_id}>
              {c.name}
            </option>
          ))}
        </Select>
      </Card>
      <div className="grid gap-4 xl:grid-cols-[minmax(0,1.4fr)_minmax(0,1fr)]">
        <Card className="min-w-0">
          {jobs.isPending ? (
            <Loading />
          ) : jobs.isError ? (
            <ErrorState error={jobs.error} onRetry={() => void jobs.refetch()} />
          ) : rows.length === 0 ? (
            <Empty title="Nothing delivered yet" />
          ) : (
            <>
              <Table>
                <THead>
                  <TR>
                    <TH>Status</TH>
                    <TH>Event</TH>
                    <TH>Channel</TH>
                    <TH>Attempts</TH>
                    <TH>Created</TH>
                  </TR>
                </THead>
                <TBody>
                  {rows.map((j) => (
                    <TR key={j.job_id} className={cn("cursor-pointer", open === j.job_id && "bg-accent")} onClick={() => setOpen(j.job_id)}>
                      <TD>
                        <Badge variant={STATUS_TONE[j.status]}>{j.status}</Badge>
                      </TD>
                      <TD>
                        <button type="button" className="text-left hover:underline" onClick={() => setOpen(j.job_id)}>
                          <SeverityBadge severity={j.severity} /> {j.event_kind}: {j.title}
                        </button>
                      </TD>
                      <TD className="text-xs">{channelName(j.channel_id)}</TD>
                      <TD className="tabular-nums">
                        {j.attempt_count}/{j.max_attempts}
                      </TD>
                      <TD className="text-xs text-muted-foreground">{formatTime(j.created_at)}</TD>
                    </TR>
                  ))}
                </TBody>
              </Table>
              {jobs.hasNextPage && (
                <div className="border-t p-2 text-center">
                  <Button variant="ghost" size="sm" onClick={() => void jobs.fetchNextPage()} disabled={jobs.isFetchingNextPage}>
                    Older
                  </Button>
                </div>
              )}
            </>
          )}
        </Card>
        <div className="min-w-0">{open ? <JobPanel jobId={open} /> : <Card><Empty title="Select a notification" hint="Its attempts show here." /></Card>}</div>
      </div>
    </div>
  );
}

function JobPanel({ jobId }: { jobId: string }) {
  const { isTenantAdmin } = useAuth();
  const toast = useToast();
  const queryClient = useQueryClient();
  const job = useQuery({ queryKey: ["job", jobId], queryFn: () => api<JobDetail>(`/customer/notifications/jobs/${jobId}`) });
  const replay = useMutation({
    mutationFn: () => api(`/customer/notifications/jobs/${jobId}/replay`, { method: "POST" }),
    onSuccess: () => {
      toast({ title: "Queued again", tone: "success" });
      void queryClient.invalidateQueries({ queryKey: ["job", jobId] });
      void queryClient.invalidateQueries({ queryKey: ["jobs"] });
    },
    onError: (e) => toast({ title: "Not replayed", description: errorMessage(e), tone: "error" }),
  });
  if (job.isPending) return <Loading />;
  if (job.isError) return <ErrorState error={job.error} />;
  const j = job.data;
  return (
    <Card>
      <CardHeader>
        <CardTitle>{j.title}</CardTitle>
        <p className="text-xs text-muted-foreground">
          {j.event_kind} · {j.status} {j.alert_id && <Link className="hover:underline" to={`/alerts/${j.alert_id}`}>· open alert</Link>}
        </p>
      </CardHeader>
      <CardContent className="grid gap-3">
        {j.last_error && <p className="text-sm text-destructive">{j.last_error}</p>}
        {j.attempts.length === 0 ? (
          <p className="text-sm text-muted-foreground">No attempt yet{j.next_attempt_at ? `; next at ${formatTime(j.next_attempt_at)}` : ""}.</p>
        ) : (
          <ol className="grid gap-2 text-sm">
            {j.attempts.map((a) => (
              <li key={a.attempt_no} className="rounded-md border p-2">
                <span className="font-medium">#{a.attempt_no}</span> {a.outcome} {a.status_code ? `· HTTP ${a.status_code}` : ""} {a.latency_ms !== null ? `· ${a.latency_ms} ms` : ""}
                <p className="text-xs text-muted-foreground">{formatTime(a.started_at)}</p>
                {a.error && <p className="text-xs text-destructive">{a.error}</p>}
              </li>
            ))}
          </ol>
        )}
        {isTenantAdmin && j.status === "DEAD" && (
          <div>
            <Button size="sm" onClick={() => replay.mutate()} disabled={replay.isPending}>
              Replay
            </Button>
          </div>
        )}
      </CardContent>
    </Card>
  );
}
