// Alert inbox: filters, live arrivals, bulk acknowledge, and the selected alert with its actions and timeline.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Check, RefreshCw } from "lucide-react";
import * as React from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { AlertStatusBadge, SeverityBadge } from "@/components/status";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { Input, Select, Textarea } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { Checkbox } from "@/components/ui/misc";
import { useToast } from "@/components/ui/toast";
import { api, errorMessage, isNotFound } from "@/lib/api";
import { formatTime, formatValue, isoToLocalInput, localInputToIso, relativeTime } from "@/lib/format";
import { useLive } from "@/lib/live-react";
import type { Alert, AlertDetail, Page } from "@/lib/types";
import { AlertTimeline } from "@/pages/alerts/AlertTimeline";
import { cn } from "@/lib/utils";

const STATUS_VIEWS = [
  { key: "active", label: "Open & acknowledged", status: ["OPEN", "ACKNOWLEDGED"] },
  { key: "open", label: "Open", status: ["OPEN"] },
  { key: "ack", label: "Acknowledged", status: ["ACKNOWLEDGED"] },
  { key: "closed", label: "Closed", status: ["CLOSED"] },
  { key: "all", label: "All", status: [] as string[] },
];

export default function AlertInbox() {
  const { alertId } = useParams();
  const [params, setParams] = useSearchParams();
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const toast = useToast();
  const view = params.get("view") ?? "active";
  const severityMin = params.get("severity_min") ?? "";
  const deviceId = params.get("device_id") ?? "";
  const [limit, setLimit] = React.useState(100);
  const [selected, setSelected] = React.useState<Set<string>>(new Set());
  const [fresh, setFresh] = React.useState<Set<string>>(new Set());
  const setParam = (k: string, v: string) => {
    const next = new URLSearchParams(params);
    if (v) next.set(k, v);
    else next.delete(k);
    setParams(next, { replace: true });
    setSelected(new Set());
  };
  const statuses = STATUS_VIEWS.find((v) => v.key === view)?.status ?? [];
  const list = useQuery({
    queryKey: ["alerts", "inbox", view, severityMin, deviceId, limit],
    queryFn: () =>
      api<Page<Alert>>("/api/v2/alerts", {
        query: { status: statuses.join(",") || undefined, severity_min: severityMin, device_id: deviceId, limit },
      }),
  });

  useLive("alerts", undefined, (frame) => {
    if (frame.type === "alert" && frame.event_kind === "OPENED") setFresh((s) => new Set(s).add(frame.alert_id));
    void queryClient.invalidateQueries({ queryKey: ["alerts"] });
    if (frame.type === "alert") void queryClient.invalidateQueries({ queryKey: ["alert", frame.alert_id] });
  });

  const bulk = useMutation({
    mutationFn: () =>
      api<{ acknowledged: number; conflict: number; not_found: number }>("/customer/alerts/acknowledge", {
        method: "POST",
        body: { alert_ids: [...selected] },
      }),
    onSuccess: (r) => {
      toast({ title: `${r.acknowledged} acknowledged`, description: r.conflict ? `${r.conflict} were not open` : undefined, tone: "success" });
      setSelected(new Set());
      void queryClient.invalidateQueries({ queryKey: ["alerts"] });
      void queryClient.invalidateQueries({ queryKey: ["alert"] });
    },
    onError: (e) => toast({ title: "Not acknowledged", description: errorMessage(e), tone: "error" }),
  });

  const items = list.data?.items ?? [];
  const openItems = items.filter((a) => a.status === "OPEN");
  const allSelected = openItems.length > 0 && openItems.every((a) => selected.has(a.alert_id));

  return (
    <div className="grid gap-4" data-page="alerts">
      <PageHeader
        title="Alerts"
        description={list.data ? `${list.data.total} alerts` : undefined}
        actions={
          <Button variant="outline" size="sm" onClick={() => void list.refetch()} aria-label="Refresh">
            <RefreshCw />
          </Button>
        }
      />
      <div className="grid gap-4 lg:grid-cols-[minmax(0,1fr)_minmax(0,1.1fr)]">
        <Card className="min-w-0">
          <div className="grid gap-2 border-b p-3 sm:grid-cols-3" role="search">
            <Select aria-label="Status" value={view} onChange={(e) => setParam("view", e.target.value)}>
              {STATUS_VIEWS.map((v) => (
                <option key={v.key} value={v.key}>
                  {v.label}
                </option>
              ))}
            </Select>
            <Select aria-label="Minimum severity" value={severityMin} onChange={(e) => setParam("severity_min", e.target.value)}>
              <option value="">any severity</option>
              <option value="2">low and up</option>
              <option value="3">medium and up</option>
              <option value="4">high and up</option>
              <option value="5">critical</option>
            </Select>
            <Input
              aria-label="Device id"
              placeholder="device id"
              defaultValue={deviceId}
              onKeyDown={(e) => e.key === "Enter" && setParam("device_id", (e.target as HTMLInputElement).value.trim())}
              onBlur={(e) => setParam("device_id", e.target.value.trim())}
            />
          </div>
          <div className="flex items-center gap-2 border-b px-3 py-2 text-sm">
            <Checkbox
              aria-label="Select all open alerts"
              checked={allSelected}
              disabled={openItems.length === 0}
              onCheckedChange={(v) => setSelected(v ? new Set(openItems.map((a) => a.alert_id)) : new Set())}
            />
            <span className="text-muted-foreground">{selected.size ? `${selected.size} selected` : "Select open alerts to acknowledge them together"}</span>
            <Button size="sm" className="ml-auto" disabled={!selected.size || bulk.isPending} onClick={() => bulk.mutate()}>
              <Check /> Acknowledge selected
            </Button>
          </div>
          {list.isPending ? (
            <Loading label="Loading alerts…" />
          ) : list.isError ? (
            <ErrorState error={list.error} onRetry={() => void list.refetch()} />
          ) : items.length === 0 ? (
            <Empty title="No alerts here" hint="New alerts appear as they open." />
          ) : (
            <ul className="divide-y" aria-label="Alerts">
              {items.map((a) => (
                <li
                  key={a.alert_id}
                  data-alert-id={a.alert_id}
                  data-alert-title={a.title}
                  className={cn("flex items-start gap-3 px-3 py-2.5 hover:bg-muted/50", a.alert_id === alertId && "bg-accent", fresh.has(a.alert_id) && "animate-[pulse_1s_ease-in-out_2]")}
                >
                  <Checkbox
                    className="mt-1"
                    aria-label={`Select ${a.title}`}
                    disabled={a.status !== "OPEN"}
                    checked={selected.has(a.alert_id)}
                    onCheckedChange={(v) =>
                      setSelected((s) => {
                        const next = new Set(s);
                        if (v) next.add(a.alert_id);
                        else next.delete(a.alert_id);
                        return next;
                      })
                    }
                  />
                  <Link to={`/alerts/${a.alert_id}?${params.toString()}`} className="grid min-w-0 flex-1 gap-1">
                    <span className="flex items-center gap-2">
                      <SeverityBadge severity={a.severity} />
                      <span className="truncate font-medium">{a.title}</span>
                    </span>
                    <span className="flex flex-wrap items-center gap-2 text-xs text-muted-foreground">
                      <AlertStatusBadge status={a.status} silenced={!!a.silenced_until && new Date(a.silenced_until) > new Date()} />
                      {a.device_id && <span className="font-mono">{a.device_id}</span>}
                      <span>opened {relativeTime(a.opened_at)}</span>
                      {a.occurrence_count > 1 && <span>×{a.occurrence_count}</span>}
                    </span>
                  </Link>
                </li>
              ))}
            </ul>
          )}
          {list.data && list.data.total > items.length && (
            <div className="border-t p-2 text-center">
              <Button variant="ghost" size="sm" onClick={() => setLimit((l) => Math.min(500, l + 100))} disabled={limit >= 500}>
                Show more
              </Button>
            </div>
          )}
        </Card>
        <div className="min-w-0">
          {alertId ? (
            <AlertPanel alertId={alertId} onClosed={() => navigate(`/alerts?${params.toString()}`)} />
          ) : (
            <Card>
              <Empty title="Select an alert" hint="Its details, actions and event timeline show here." />
            </Card>
          )}
        </div>
      </div>
    </div>
  );
}

function AlertPanel({ alertId, onClosed }: { alertId: string; onClosed: () => void }) {
  const queryClient = useQueryClient();
  const toast = useToast();
  const [comment, setComment] = React.useState("");
  const [reason, setReason] = React.useState("");
  const [silenceUntil, setSilenceUntil] = React.useState(() => isoToLocalInput(new Date(Date.now() + 3600_000)));
  const alert = useQuery({ queryKey: ["alert", alertId], queryFn: () => api<AlertDetail>(`/api/v2/alerts/${alertId}`) });
  const act = useMutation({
    mutationFn: ({ action, body }: { action: string; body?: unknown }) =>
      api<AlertDetail>(`/customer/alerts/${alertId}/${action}`, { method: "POST", body }),
    onSuccess: (a, { action }) => {
      queryClient.setQueryData(["alert", alertId], a);
      void queryClient.invalidateQueries({ queryKey: ["alerts"] });
      toast({ title: action === "comments" ? "Comment added" : `Alert ${a.status.toLowerCase()}`, tone: "success" });
      if (action === "comments") setComment("");
    },
    onError: (e) => toast({ title: "Action refused", description: errorMessage(e), tone: "error" }),
  });

  if (alert.isPending) return <Loading />;
  if (alert.isError)
    return isNotFound(alert.error) ? <Empty title="No such alert" action={<Button variant="outline" onClick={onClosed}>Back</Button>} /> : <ErrorState error={alert.error} />;
  const a = alert.data;
  const silenced = !!a.silenced_until && new Date(a.silenced_until) > new Date();
  return (
    <Card data-alert-panel={a.alert_id} data-status={a.status}>
      <CardHeader>
        <div className="flex flex-wrap items-center gap-2">
          <SeverityBadge severity={a.severity} />
          <AlertStatusBadge status={a.status} silenced={silenced} />
          {a.is_flapping && <span className="text-xs text-warn">flapping</span>}
        </div>
        <CardTitle className="text-base">{a.title}</CardTitle>
        {a.summary && <p className="text-sm text-muted-foreground">{a.summary}</p>}
      </CardHeader>
      <CardContent className="grid gap-4">
        <dl className="grid grid-cols-2 gap-x-4 gap-y-1 text-sm sm:grid-cols-3">
          <div>
            <dt className="text-xs text-muted-foreground">Device</dt>
            <dd>{a.device_id ? <Link className="font-mono hover:underline" to={`/devices/${encodeURIComponent(a.device_id)}`}>{a.device_id}</Link> : "—"}</dd>
          </div>
          <div>
            <dt className="text-xs text-muted-foreground">Type</dt>
            <dd>{a.alert_type}</dd>
          </div>
          <div>
            <dt className="text-xs text-muted-foreground">Value</dt>
            <dd className="tabular-nums">{a.metric ? `${a.metric} = ` : ""}{formatValue(a.last_value)}</dd>
          </div>
          <div>
            <dt className="text-xs text-muted-foreground">Opened</dt>
            <dd>{formatTime(a.opened_at)}</dd>
          </div>
          <div>
            <dt className="text-xs text-muted-foreground">Acknowledged</dt>
            <dd>{a.acknowledged_at ? `${formatTime(a.acknowledged_at)} by ${a.acknowledged_by ?? "?"}` : "—"}</dd>
          </div>
          <div>
            <dt className="text-xs text-muted-foreground">Closed</dt>
            <dd>{a.closed_at ? `${formatTime(a.closed_at)}${a.close_reason ? ` (${a.close_reason})` : ""}` : "—"}</dd>
          </div>
        </dl>

        <div className="flex flex-wrap gap-2" aria-label="Actions">
          <Button size="sm" disabled={a.status !== "OPEN" || act.isPending} onClick={() => act.mutate({ action: "acknowledge" })}>
            <Check /> Acknowledge
          </Button>
          <Button
            size="sm"
            variant="outline"
            disabled={a.status === "CLOSED" || act.isPending}
            onClick={() => act.mutate({ action: "close", body: reason.trim() ? { reason: reason.trim() } : {} })}
          >
            Close
          </Button>
          {silenced ? (
            <Button size="sm" variant="outline" disabled={act.isPending} onClick={() => act.mutate({ action: "unsilence" })}>
              Unsilence
            </Button>
          ) : (
            <span className="flex items-center gap-1">
              <Input
                type="datetime-local"
                aria-label="Silence until"
                className="h-8 w-auto text-xs"
                value={silenceUntil}
                onChange={(e) => setSilenceUntil(e.target.value)}
              />
              <Button
                size="sm"
                variant="outline"
                disabled={a.status === "CLOSED" || act.isPending || !silenceUntil}
                onClick={() => act.mutate({ action: "silence", body: { until: localInputToIso(silenceUntil) } })}
              >
                Silence
              </Button>
            </span>
          )}
        </div>
        {a.status !== "CLOSED" && (
          <Input aria-label="Close reason" placeholder="close reason (optional)" value={reason} onChange={(e) => setReason(e.target.value)} />
        )}

        <form
          className="grid gap-2"
          onSubmit={(e) => {
            e.preventDefault();
            if (comment.trim()) act.mutate({ action: "comments", body: { text: comment.trim() } });
          }}
        >
          <Field label="Comment" htmlFor="alert-comment">
            <Textarea id="alert-comment" value={comment} maxLength={2000} onChange={(e) => setComment(e.target.value)} className="min-h-14" />
          </Field>
          <div>
            <Button size="sm" variant="secondary" type="submit" disabled={!comment.trim() || act.isPending}>
              Add comment
            </Button>
          </div>
        </form>

        <div>
          <h3 className="mb-2 text-sm font-semibold">Timeline</h3>
          <AlertTimeline alertId={a.alert_id} events={a.events} />
        </div>
      </CardContent>
    </Card>
  );
}
