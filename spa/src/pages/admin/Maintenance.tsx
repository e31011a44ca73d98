// Maintenance windows: one-off or weekly periods in which devices in scope raise no new alerts.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Plus, Trash2 } from "lucide-react";
import * as React from "react";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { Input, Select } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { Checkbox, Switch } from "@/components/ui/misc";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { useToast } from "@/components/ui/toast";
import { api, errorMessage } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import { formatShortTime, isoToLocalInput, localInputToIso } from "@/lib/format";
import { splitList } from "@/lib/lists";
import type { MaintenanceWindow, Page } from "@/lib/types";

const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

function when(w: MaintenanceWindow): string {
  if (w.recurrence === "ONCE") return `${formatShortTime(w.starts_at)} – ${formatShortTime(w.ends_at)}`;
  return `${(w.weekdays ?? []).map((d) => DAYS[d - 1]).join(", ")} ${w.start_time} for ${w.duration_minutes} min (${w.timezone})`;
}

function scope(w: MaintenanceWindow): string {
  const parts = [
    w.device_ids.length && `devices ${w.device_ids.join(", ")}`,
    w.site_ids.length && `sites ${w.site_ids.join(", ")}`,
    w.device_types.length && `types ${w.device_types.join(", ")}`,
    w.group_ids.length && `${w.group_ids.length} group(s)`,
  ].filter(Boolean);
  return parts.length ? parts.join("; ") : "every device";
}

export default function Maintenance() {
  const { isTenantAdmin } = useAuth();
  const queryClient = useQueryClient();
  const toast = useToast();
  const windows = useQuery({ queryKey: ["maintenance"], queryFn: () => api<Page<MaintenanceWindow>>("/customer/maintenance-windows", { query: { limit: 500 } }) });
  const active = useQuery({
    queryKey: ["maintenance", "active"],
    queryFn: () => api<{ windows: { window_id: string; until: string }[] }>("/customer/maintenance-windows/active"),
    refetchInterval: 60_000,
  });
  const toggle = useMutation({
    mutationFn: (w: MaintenanceWindow) => api(`/customer/maintenance-windows/${w.window_id}`, { method: "PATCH", body: { is_enabled: !w.is_enabled } }),
    onSuccess: () => void queryClient.invalidateQueries({ queryKey: ["maintenance"] }),
    onError: (e) => toast({ title: "Not changed", description: errorMessage(e), tone: "error" }),
  });
  const remove = useMutation({
    mutationFn: (id: string) => api(`/customer/maintenance-windows/${id}`, { method: "DELETE" }),
    onSuccess: () => void queryClient.invalidateQueries({ queryKey: ["maintenance"] }),
  });
  const inProgress = new Map((active.data?.windows ?? []).map((w) => [w.window_id, w.until]));
  return (
    <div className="grid gap-4" data-page="maintenance">
      <PageHeader title="Maintenance windows" description="While a window is in progress, devices in its scope open no new alerts." />
      <Card>
        {windows.isPending ? (
          <Loading />
        ) : windows.isError ? (
          <ErrorState error={windows.error} onRetry={() => void windows.refetch()} />
        ) : windows.data.items.length === 0 ? (
          <Empty title="No maintenance windows" />
        ) : (
          <Table>
            <THead>
              <TR>
                <TH>Name</TH>
                <TH>When</TH>
                <TH>Scope</TH>
                <TH>Enabled</TH>
                <TH />
              </TR>
            </THead>
            <TBody>
              {windows.data.items.map((w) => (
                <TR key={w.window_id}>
                  <TD className="font-medium">
                    {w.name} {inProgress.has(w.window_id) && <Badge variant="warn">in progress until {formatShortTime(inProgress.get(w.window_id))}</Badge>}
                  </TD>
                  <TD className="text-xs">{when(w)}</TD>
                  <TD className="text-xs">{scope(w)}</TD>
                  <TD>
                    <Switch aria-label={`Enable ${w.name}`} checked={w.is_enabled} disabled={!isTenantAdmin} onCheckedChange={() => toggle.mutate(w)} />
                  </TD>
                  <TD>
                    {isTenantAdmin && (
                      <Button variant="ghost" size="icon" aria-label={`Delete ${w.name}`} onClick={() => remove.mutate(w.window_id)}>
                        <Trash2 />
                      </Button>
                    )}
                  </TD>
                </TR>
              ))}
            </TBody>
          </Table>
        )}
      </Card>
      {isTenantAdmin && <NewWindow />}
    </div>
  );
}

function NewWindow() {
  const queryClient = useQueryClient();
  const toast = useToast();
  const [name, setName] = React.useState("");
  const [recurrence, setRecurrence] = React.useState<"ONCE" | "WEEKLY">("ONCE");
  const [from, setFrom] = React.useState(() => isoToLocalInput(new Date(Date.now() + 3600_000)));
  const [to, setTo] = React.useState(() => isoToLocalInput(new Date(Date.now() + 3 * 3600_000)));
  const [weekdays, setWeekdays] = React.useState<number[]>([7]);
  const [startTime, setStartTime] = React.useState("02:00");
  const [duration, setDuration] = React.useState("120");
  const [timezone, setTimezone] = React.useState(() => Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");
  const [devices, setDevices] = React.useState("");
  const [sites, setSites] = React.useState("");
  const [types, setTypes] = React.useState("");
  const create = useMutation({
    mutationFn: () =>
      api("/customer/maintenance-windows", {
        method: "POST",
        body: {
          name: name.trim(),
          recurrence,
          timezone,
          ...(recurrence === "ONCE"
            ? { starts_at: localInputToIso(from), ends_at: localInputToIso(to) }
            : { weekdays, start_time: startTime, duration_minutes: Number(duration) }),
          device_ids: splitList(devices),
          site_ids: splitList(sites),
          device_types: splitList(types),
        },
      }),
    onSuccess: () => {
      toast({ title: "Window created", tone: "success" });
      setName("");
      void queryClient.invalidateQueries({ queryKey: ["maintenance"] });
    },
    onError: (e) => toast({ title: "Window not created", description: errorMessage(e), tone: "error" }),
  });
  return (
    <Card>
      <CardHeader>
        <CardTitle>New window</CardTitle>
      </CardHeader>
      <CardContent>
        <form
          className="grid gap-3 md:grid-cols-3"
          onSubmit={(e) => {
            e.preventDefault();
            create.mutate();
          }}
        >
          <Field label="Name" htmlFor="mw-name">
            <Input id="mw-name" required value={name} onChange={(e) => setName(e.target.value)} />
          </Field>
          <Field label="Recurrence" htmlFor="mw-rec">
            <Select id="mw-rec" value={recurrence} onChange={(e) => setRecurrence(e.target.value as "ONCE" | "WEEKLY")}>
              <option value="ONCE">once</option>
              <option value="WEEKLY">weekly</option>
            </Select>
          </Field>
          <Field label="Time zone" htmlFor="mw-tz">
            <Input id="mw-tz" value={timezone} onChange={(e) => setTimezone(e.target.value)} />
          </Field>
          {recurrence === "ONCE" ? (
            <>
              <Field label="Starts" htmlFor="mw-from">
                <Input id="mw-from" type="datetime-local" value={from} onChange={(e) => setFrom(e.target.value)} />
              </Field>
              <Field label="Ends" htmlFor="mw-to">
                <Input id="mw-to" type="datetime-local" value={to} onChange={(e) => setTo(e.target.value)} />
              </Field>
            </>
          ) : (
            <>
              <fieldset className="grid gap-1 md:col-span-1">
                <legend className="mb-1 text-sm font-medium">Days</legend>
                <div className="flex flex-wrap gap-2">
                  {DAYS.map((d, i) => (
                    <label key={d} className="flex items-center gap-1 text-xs">
                      <Checkbox checked={weekdays.includes(i + 1)} onCheckedChange={(v) => setWeekdays((w) => (v ? [...w, i + 1] : w.filter((x) => x !== i + 1)))} />
                      {d}
                    </label>
                  ))}
                </div>
              </fieldset>
              <Field label="Start time" htmlFor="mw-start">
                <Input id="mw-start" type="time" value={startTime} onChange={(e) => setStartTime(e.target.value)} />
              </Field>
              <Field label="Duration (minutes)" htmlFor="mw-dur">
                <Input id="mw-dur" value={duration} onChange={(e) => setDuration(e.target.value)} />
              </Field>
            </>
          )}
          <Field label="Devices" htmlFor="mw-dev" hint="comma separated; empty: any">
            <Input id="mw-dev" value={devices} onChange={(e) => setDevices(e.target.value)} />
          </Field>
          <Field label="Sites" htmlFor="mw-site" hint="comma separated; empty: any">
            <Input id="mw-site" value={sites} onChange={(e) => setSites(e.target.value)} />
          </Field>
          <Field label="Device types" htmlFor="mw-type" hint="comma separated; empty: any">
            <Input id="mw-type" value={types} onChange={(e) => setTypes(e.target.value)} />
          </Field>
          <div className="md:col-span-3">
            <Button type="submit" disabled={!name.trim() || create.isPending}>
              <Plus /> Create window
            </Button>
          </div>
        </form>
      </CardContent>
    </Card>
  );
}
