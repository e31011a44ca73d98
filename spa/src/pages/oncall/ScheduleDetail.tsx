// One schedule: visual timeline (layers, overrides, final), on call now, layers and overrides editors.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { ArrowLeft, Plus, Trash2 } from "lucide-react";
import * as React from "react";
import { Link, useNavigate, useParams } from "react-router";
import { ConfirmButton } from "@/components/confirm";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Input, Select } from "@/components/ui/input";
import { Field, Label } from "@/components/ui/label";
import { Checkbox } from "@/components/ui/misc";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { useToast } from "@/components/ui/toast";
import { api, errorMessage } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import { formatShortTime, isoToLocalInput, localInputToIso } from "@/lib/format";
import type { OnCall, Override, Schedule, Timeline, User } from "@/lib/types";
import { ScheduleTimeline } from "@/pages/oncall/ScheduleTimeline";

const WINDOWS = [7, 14, 28];

export default function ScheduleDetail() {
  const { scheduleId = "" } = useParams();
  const base = `/customer/schedules/${scheduleId}`;
  const { isTenantAdmin } = useAuth();
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const toast = useToast();
  const [days, setDays] = React.useState(14);
  const [start] = React.useState(() => {
    const d = new Date();
    d.setHours(0, 0, 0, 0);
    d.setDate(d.getDate() - 1);
    return d.toISOString();
  });
  const end = new Date(new Date(start).getTime() + days * 86_400_000).toISOString();
  const schedule = useQuery({ queryKey: ["schedule", scheduleId], queryFn: () => api<Schedule>(base) });
  const timeline = useQuery({ queryKey: ["timeline", scheduleId, start, days], queryFn: () => api<Timeline>(`${base}/timeline`, { query: { start, days } }) });
  const overrides = useQuery({ queryKey: ["overrides", scheduleId, start, days], queryFn: () => api<{ items: Override[] }>(`${base}/overrides`, { query: { from: start, to: end } }) });
  const onCall = useQuery({ queryKey: ["on-call", scheduleId], queryFn: () => api<OnCall>(`${base}/on-call`) });
  const users = useQuery({ queryKey: ["users", "active"], queryFn: () => api<{ items: User[] }>("/customer/users", { query: { active: true } }) });
  const refresh = () => {
    for (const key of ["schedule", "timeline", "overrides", "on-call"]) void queryClient.invalidateQueries({ queryKey: [key, scheduleId] });
  };
  const removeSchedule = useMutation({
    mutationFn: () => api(base, { method: "DELETE" }),
    onSuccess: () => {
      void queryClient.invalidateQueries({ queryKey: ["schedules"] });
      navigate("/oncall");
    },
    onError: (e) => toast({ title: "Not deleted", description: errorMessage(e), tone: "error" }),
  });
  const removeLayer = useMutation({
    mutationFn: (layerId: string) => api(`${base}/layers/${layerId}`, { method: "DELETE" }),
    onSuccess: refresh,
    onError: (e) => toast({ title: "Not deleted", description: errorMessage(e), tone: "error" }),
  });
  const removeOverride = useMutation({
    mutationFn: (id: string) => api(`${base}/overrides/${id}`, { method: "DELETE" }),
    onSuccess: refresh,
    onError: (e) => toast({ title: "Not deleted", description: errorMessage(e), tone: "error" }),
  });

  if (schedule.isPending) return <Loading />;
  if (schedule.isError) return <ErrorState error={schedule.error} onRetry={() => void schedule.refetch()} />;
  const s = schedule.data;
  const layers = [...(s.layers ?? [])].sort((a, b) => b.position - a.position);
  const userName = (id: string) => {
    const u = users.data?.items.find((x) => x.user_id === id);
    return u ? u.display_name || u.email : id.slice(0, 8);
  };
  const who = onCall.data?.on_call;

  return (
    <div className="grid gap-4" data-page="schedule">
      <Link to="/oncall" className="flex items-center gap-1 text-sm text-muted-foreground hover:underline">
        <ArrowLeft className="size-4" /> On-call
      </Link>
      <PageHeader
        title={s.name}
        description={`${s.timezone}${s.description ? ` · ${s.description}` : ""}`}
        actions={
          isTenantAdmin && (
            <ConfirmButton
              title="Delete this schedule?"
              description="Its layers and overrides go with it. Refused while an escalation policy pages it."
              confirmLabel="Delete"
              variant="destructive"
              onConfirm={() => removeSchedule.mutate()}
            >
              <Trash2 /> Delete
            </ConfirmButton>
          )
        }
      />
      <Card>
        <CardHeader className="flex-row flex-wrap items-center justify-between gap-2">
          <div>
            <CardTitle>On call now</CardTitle>
            <CardDescription>
              {who ? (
                <span data-testid="on-call-now">
                  <span className="font-medium text-foreground">{who.user_name || who.user_email}</span> ·{" "}
                  {who.source === "OVERRIDE" ? "override" : `layer ${who.layer_name}`} · until {formatShortTime(who.until, s.timezone)}
                </span>
              ) : onCall.isPending ? (
                "…"
              ) : (
                "Nobody is on call right now"
              )}
            </CardDescription>
          </div>
          <div className="flex gap-1" role="group" aria-label="Timeline length">
            {WINDOWS.map((d) => (
              <Button key={d} size="sm" variant={days === d ? "default" : "outline"} aria-pressed={days === d} onClick={() => setDays(d)}>
                {d} days
              </Button>
            ))}
          </div>
        </CardHeader>
        <CardContent>
          {timeline.isPending || overrides.isPending ? (
            <Loading />
          ) : timeline.isError ? (
            <ErrorState error={timeline.error} />
          ) : (
            <ScheduleTimeline
              start={timeline.data.start}
              end={timeline.data.end}
              shifts={timeline.data.shifts}
              overrides={overrides.data?.items ?? []}
              layerNames={layers.map((l) => l.name)}
              timezone={s.timezone}
            />
          )}
        </CardContent>
      </Card>

      <div className="grid gap-4 xl:grid-cols-2">
        <Card>
          <CardHeader>
            <CardTitle>Layers</CardTitle>
            <CardDescription>A higher layer wins wherever it has someone on call.</CardDescription>
          </CardHeader>
          <CardContent className="grid gap-3">
            {layers.length === 0 ? (
              <Empty title="No layers" hint="Add a rotation to put people on call." />
            ) : (
              <Table>
                <THead>
                  <TR>
                    <TH>#</TH>
                    <TH>Layer</TH>
                    <TH>Rotation</TH>
                    <TH>People</TH>
                    <TH />
                  </TR>
                </THead>
                <TBody>
                  {layers.map((l) => (
                    <TR key={l.layer_id}>
                      <TD>{l.position}</TD>
                      <TD className="font-medium">{l.name}</TD>
                      <TD className="text-xs">
                        {l.rotation_type === "CUSTOM" ? `every ${l.rotation_hours} h` : l.rotation_type.toLowerCase()} from {l.rotation_start} {l.handoff_time}
                        {l.restrictions.length > 0 && ` · ${l.restrictions.length} restriction(s)`}
                      </TD>
                      <TD className="text-xs">{l.participants.map(userName).join(" → ")}</TD>
                      <TD>
                        {isTenantAdmin && (
                          <Button variant="ghost" size="icon" aria-label={`Delete layer ${l.name}`} onClick={() => removeLayer.mutate(l.layer_id)}>
                            <Trash2 />
                          </Button>
                        )}
                      </TD>
                    </TR>
                  ))}
                </TBody>
              </Table>
            )}
            {isTenantAdmin && <AddLayer base={base} users={users.data?.items ?? []} onAdded={refresh} />}
          </CardContent>
        </Card>
        <Card>
          <CardHeader>
            <CardTitle>Overrides</CardTitle>
            <CardDescription>Someone on call instead of the layers, for a while.</CardDescription>
          </CardHeader>
          <CardContent className="grid gap-3">
            {(overrides.data?.items ?? []).length === 0 ? (
              <Empty title="No overrides in this window" />
            ) : (
              <ul className="grid gap-1 text-sm">
                {overrides.data!.items.map((o) => (
                  <li key={o.override_id} className="flex items-center gap-2">
                    <span className="font-medium">{o.user_name || o.user_email}</span>
                    <span className="text-xs text-muted-foreground">
                      {formatShortTime(o.starts_at, s.timezone)} – {formatShortTime(o.ends_at, s.timezone)} {o.reason && `· ${o.reason}`}
                    </span>
                    {isTenantAdmin && (
                      <Button className="ml-auto" variant="ghost" size="icon" aria-label="Delete override" onClick={() => removeOverride.mutate(o.override_id)}>
                        <Trash2 />
                      </Button>
                    )}
                  </li>
                ))}
              </ul>
            )}
            {isTenantAdmin && <AddOverride base={base} users={users.data?.items ?? []} onAdded={refresh} />}
          </CardContent>
        </Card>
      </div>
    </div>
  );
}

function AddLayer({ base, users, onAdded }: { base: string; users: User[]; onAdded: () => void }) {
  const toast = useToast();
  const [name, setName] = React.useState("Primary");
  const [type, setType] = React.useState("WEEKLY");
  const [hours, setHours] = React.useState("12");
  const [startDate, setStartDate] = React.useState(() => new Date().toISOString().slice(0, 10));
  const [handoff, setHandoff] = React.useState("09:00");
  const [people, setPeople] = React.useState<string[]>([]);
  const add = useMutation({
    mutationFn: () =>
      api(`${base}/layers`, {
        method: "POST",
        body: {
          name: name.trim(),
          rotation_type: type,
          ...(type === "CUSTOM" ? { rotation_hours: Number(hours) } : {}),
          rotation_start: startDate,
          handoff_time: handoff,
          participants: people,
        },
      }),
    onSuccess: () => {
      toast({ title: "Layer added", tone: "success" });
      setPeople([]);
      onAdded();
    },
    onError: (e) => toast({ title: "Layer not added", description: errorMessage(e), tone: "error" }),
  });
  return (
    <form
      className="grid gap-2 rounded-md border p-3"
      aria-label="Add layer"
      onSubmit={(e) => {
        e.preventDefault();
        add.mutate();
      }}
    >
      <p className="text-sm font-medium">Add a layer</p>
      <div className="grid gap-2 sm:grid-cols-2">
        <Field label="Name" htmlFor="layer-name">
          <Input id="layer-name" value={name} onChange={(e) => setName(e.target.value)} />
        </Field>
        <Field label="Rotation" htmlFor="layer-type">
          <Select id="layer-type" value={type} onChange={(e) => setType(e.target.value)}>
            <option value="DAILY">daily</option>
            <option value="WEEKLY">weekly</option>
            <option value="CUSTOM">custom (hours)</option>
          </Select>
        </Field>
        {type === "CUSTOM" && (
          <Field label="Hours per shift" htmlFor="layer-hours">
            <Input id="layer-hours" value={hours} onChange={(e) => setHours(e.target.value)} />
          </Field>
        )}
        <Field label="First handoff (date)" htmlFor="layer-start">
          <Input id="layer-start" type="date" value={startDate} onChange={(e) => setStartDate(e.target.value)} />
        </Field>
        <Field label="Handoff time" htmlFor="layer-handoff">
          <Input id="layer-handoff" type="time" value={handoff} onChange={(e) => setHandoff(e.target.value)} />
        </Field>
      </div>
      <fieldset className="grid gap-1">
        <legend className="mb-1 text-sm font-medium">People, in rotation order</legend>
        {users.length === 0 && <p className="text-xs text-muted-foreground">No active users.</p>}
        {users.map((u) => (
          <div key={u.user_id} className="flex items-center gap-2">
            <Checkbox
              id={`p-${u.user_id}`}
              checked={people.includes(u.user_id)}
              onCheckedChange={(v) => setPeople((p) => (v ? [...p, u.user_id] : p.filter((x) => x !== u.user_id)))}
            />
            <Label htmlFor={`p-${u.user_id}`} className="font-normal">
              {u.display_name || u.email}
              {people.includes(u.user_id) && <span className="ml-1 text-xs text-muted-foreground">#{people.indexOf(u.user_id) + 1}</span>}
            </Label>
          </div>
        ))}
      </fieldset>
      <div>
        <Button type="submit" size="sm" disabled={!people.length || !name.trim() || add.isPending}>
          <Plus /> Add layer
        </Button>
      </div>
    </form>
  );
}

function AddOverride({ base, users, onAdded }: { base: string; users: User[]; onAdded: () => void }) {
  const toast = useToast();
  const [user, setUser] = React.useState("");
  const [from, setFrom] = React.useState(() => isoToLocalInput(new Date()));
  const [to, setTo] = React.useState(() => isoToLocalInput(new Date(Date.now() + 8 * 3600_000)));
  const [reason, setReason] = React.useState("");
  const add = useMutation({
    mutationFn: () =>
      api(`${base}/overrides`, {
        method: "POST",
        body: { user_id: user, starts_at: localInputToIso(from), ends_at: localInputToIso(to), ...(reason.trim() ? { reason: reason.trim() } : {}) },
      }),
    onSuccess: () => {
      toast({ title: "Override added", tone: "success" });
      setReason("");
      onAdded();
    },
    onError: (e) => toast({ title: "Override not added", description: errorMessage(e), tone: "error" }),
  });
  return (
    <form
      className="grid gap-2 rounded-md border p-3 sm:grid-cols-2"
      aria-label="Add override"
      onSubmit={(e) => {
        e.preventDefault();
        add.mutate();
      }}
    >
      <p className="text-sm font-medium sm:col-span-2">Add an override</p>
      <Field label="Person" htmlFor="ov-user">
        <Select id="ov-user" value={user} onChange={(e) => setUser(e.target.value)}>
          <option value="">choose…</option>
          {users.map((u) => (
            <option key={u.user_id} value={u.user_id}>
              {u.display_name || u.email}
            </option>
          ))}
        </Select>
      </Field>
      <Field label="Reason" htmlFor="ov-reason">
        <Input id="ov-reason" value={reason} onChange={(e) => setReason(e.target.value)} />
      </Field>
      <Field label="From" htmlFor="ov-from">
        <Input id="ov-from" type="datetime-local" value={from} onChange={(e) => setFrom(e.target.value)} />
      </Field>
      <Field label="Until" htmlFor="ov-to">
        <Input id="ov-to" type="datetime-local" value={to} onChange={(e) => setTo(e.target.value)} />
      </Field>
      <div>
        <Button type="submit" size="sm" disabled={!user || add.isPending}>
          <Plus /> Add override
        </Button>
      </div>
    </form>
  );
}
