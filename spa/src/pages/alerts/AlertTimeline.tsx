// An alert's events, oldest first: who acted, who was paged through which schedule layer, and what was delivered.
import { useQuery } from "@tanstack/react-query";
import { Badge } from "@/components/ui/badge";
import { api } from "@/lib/api";
import { formatTime } from "@/lib/format";
import type { AlertEvent, CursorPage, Job } from "@/lib/types";
import { cn } from "@/lib/utils";

const KIND_TONE: Record<string, string> = {
  OPENED: "bg-bad",
  UPDATED: "bg-warn",
  ACKNOWLEDGED: "bg-primary",
  CLOSED: "bg-ok",
  PAGED: "bg-sev-4",
  ESCALATED: "bg-sev-4",
  COMMENTED: "bg-muted-foreground",
};

/** A line explaining a PAGED event: the person and how they were reached. */
export function pagedSummary(details: Record<string, unknown> | null): string | null {
  if (!details) return null;
  const who = (details.user_name as string) || (details.user_email as string) || (details.user_id as string);
  const via = details.via as Record<string, unknown> | undefined;
  const contacts = (details.contacts as { kind: string; delay_minutes: number }[] | undefined) ?? [];
  let how = "";
  if (via?.type === "schedule") {
    how = ` via schedule ${via.schedule_name}` + (via.layer_name ? `, layer ${via.layer_name}` : via.source === "OVERRIDE" ? ", override" : "");
  } else if (via?.type === "user") how = " (named in the policy)";
  const reach = contacts.length
    ? `; ${contacts.map((c) => `${c.kind}${c.delay_minutes ? ` after ${c.delay_minutes} min` : ""}`).join(", ")}`
    : "";
  return `Paged ${who ?? "someone"}${how}${details.level ? ` (level ${details.level})` : ""}${reach}`;
}

export function AlertTimeline({ alertId, events }: { alertId: string; events: AlertEvent[] }) {
  const jobs = useQuery({
    queryKey: ["jobs", "alert", alertId],
    queryFn: () => api<CursorPage<Job>>("/customer/notifications/jobs", { query: { alert_id: alertId, limit: 50 } }),
  });
  return (
    <div className="grid gap-4">
      <ol className="grid gap-3 border-l pl-4" aria-label="Alert events" data-testid="alert-timeline">
        {events.map((e) => (
          <li key={e.event_id} className="relative text-sm" data-event-kind={e.kind}>
            <span className={cn("absolute top-1.5 -left-[21px] size-2.5 rounded-full", KIND_TONE[e.kind] ?? "bg-primary")} aria-hidden="true" />
            <div className="flex flex-wrap items-baseline gap-2">
              <span className="font-medium">{e.kind}</span>
              <span className="text-xs text-muted-foreground">{formatTime(e.created_at)}</span>
              {e.actor && <span className="text-xs text-muted-foreground">by {e.actor}</span>}
            </div>
            {e.kind === "PAGED" ? (
              <p className="text-muted-foreground">{pagedSummary(e.details)}</p>
            ) : (
              e.reason && <p className="text-muted-foreground">{e.reason}</p>
            )}
          </li>
        ))}
      </ol>
      <div>
        <h3 className="mb-2 text-sm font-semibold">Notifications</h3>
        {jobs.isPending ? (
          <p className="text-xs text-muted-foreground">Loading…</p>
        ) : jobs.isError ? (
          <p className="text-xs text-muted-foreground">Delivery log not available to you.</p>
        ) : jobs.data.items.length === 0 ? (
          <p className="text-xs text-muted-foreground">Nothing was sent for this alert.</p>
        ) : (
          <ul className="grid gap-1 text-sm">
            {jobs.data.items.map((j) => (
              <li key={j.job_id} className="flex flex-wrap items-center gap-2">
                <Badge variant={j.status === "DELIVERED" ? "ok" : j.status === "DEAD" ? "bad" : "muted"}>{j.status}</Badge>
                <span>{j.event_kind}</span>
                <span className="text-xs text-muted-foreground">
                  {j.attempt_count} attempt{j.attempt_count === 1 ? "" : "s"} · {formatTime(j.delivered_at ?? j.created_at)}
                </span>
                {j.last_error && <span className="text-xs text-destructive">{j.last_error}</span>}
              </li>
            ))}
          </ul>
        )}
      </div>
    </div>
  );
}
