// On-call schedules: who is on call now in each, and a new schedule.
import { useMutation, useQueries, useQuery, useQueryClient } from "@tanstack/react-query";
import { Plus } from "lucide-react";
import * as React from "react";
import { Link, useNavigate } from "react-router";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Dialog, DialogContent } from "@/components/ui/dialog";
import { Input } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { api, errorMessage } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import { formatShortTime } from "@/lib/format";
import type { OnCall, Schedule } from "@/lib/types";

export default function Schedules() {
  const { isTenantAdmin } = useAuth();
  const [creating, setCreating] = React.useState(false);
  const schedules = useQuery({ queryKey: ["schedules"], queryFn: () => api<{ items: Schedule[] }>("/customer/schedules") });
  const onCall = useQueries({
    queries: (schedules.data?.items ?? []).map((s) => ({
      queryKey: ["on-call", s.schedule_id],
      queryFn: () => api<OnCall>(`/customer/schedules/${s.schedule_id}/on-call`),
      refetchInterval: 60_000,
    })),
  });
  return (
    <div className="grid gap-4" data-page="oncall">
      <PageHeader
        title="On-call"
        description="Who is on call now, and each schedule's rotations."
        actions={
          isTenantAdmin && (
            <Button size="sm" onClick={() => setCreating(true)}>
              <Plus /> New schedule
            </Button>
          )
        }
      />
      {schedules.isPending ? (
        <Loading />
      ) : schedules.isError ? (
        <ErrorState error={schedules.error} onRetry={() => void schedules.refetch()} />
      ) : schedules.data.items.length === 0 ? (
        <Card>
          <Empty title="No schedules yet" hint="A schedule has layers of rotations and overrides; escalation policies page whoever is on call." />
        </Card>
      ) : (
        <div className="grid gap-3 md:grid-cols-2 xl:grid-cols-3" aria-label="On call now">
          {schedules.data.items.map((s, i) => {
            const q = onCall[i];
            const who = q?.data?.on_call;
            return (
              <Card key={s.schedule_id} data-schedule={s.name}>
                <CardHeader>
                  <CardTitle>
                    <Link className="hover:underline" to={`/oncall/${s.schedule_id}`}>
                      {s.name}
                    </Link>
                  </CardTitle>
                  <CardDescription>{s.timezone}</CardDescription>
                </CardHeader>
                <CardContent className="grid gap-1 text-sm">
                  <p className="text-xs text-muted-foreground">On call now</p>
                  {q?.isPending ? (
                    <p className="text-muted-foreground">…</p>
                  ) : q?.isError ? (
                    <p className="text-destructive">{errorMessage(q.error)}</p>
                  ) : who ? (
                    <>
                      <p className="font-medium" data-testid="on-call-now">
                        {who.user_name || who.user_email}
                      </p>
                      <p className="flex flex-wrap items-center gap-1 text-xs text-muted-foreground">
                        <Badge variant={who.source === "OVERRIDE" ? "warn" : "secondary"}>{who.source === "OVERRIDE" ? "override" : who.layer_name}</Badge>
                        until {formatShortTime(who.until, s.timezone)}
                      </p>
                    </>
                  ) : (
                    <p className="text-warn">Nobody is on call</p>
                  )}
                </CardContent>
              </Card>
            );
          })}
        </div>
      )}
      {creating && <NewSchedule onClose={() => setCreating(false)} />}
    </div>
  );
}

function NewSchedule({ onClose }: { onClose: () => void }) {
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const [name, setName] = React.useState("");
  const [timezone, setTimezone] = React.useState(() => Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");
  const create = useMutation({
    mutationFn: () => api<Schedule>("/customer/schedules", { method: "POST", body: { name: name.trim(), timezone } }),
    onSuccess: (s) => {
      void queryClient.invalidateQueries({ queryKey: ["schedules"] });
      navigate(`/oncall/${s.schedule_id}`);
    },
  });
  return (
    <Dialog open onOpenChange={(v) => !v && onClose()}>
      <DialogContent title="New schedule">
        <form
          className="grid gap-3"
          onSubmit={(e) => {
            e.preventDefault();
            create.mutate();
          }}
        >
          <Field label="Name" htmlFor="sched-name">
            <Input id="sched-name" required value={name} onChange={(e) => setName(e.target.value)} />
          </Field>
          <Field label="Time zone" htmlFor="sched-tz" hint="IANA name, e.g. Europe/Berlin">
            <Input id="sched-tz" required value={timezone} onChange={(e) => setTimezone(e.target.value)} />
          </Field>
          {create.isError && (
            <p role="alert" className="text-sm text-destructive">
              {errorMessage(create.error)}
            </p>
          )}
          <div className="flex justify-end gap-2">
            <Button variant="outline" onClick={onClose}>
              Cancel
            </Button>
            <Button type="submit" disabled={!name.trim() || create.isPending}>
              Create
            </Button>
          </div>
        </form>
      </DialogContent>
    </Dialog>
  );
}
