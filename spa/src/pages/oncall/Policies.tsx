// Escalation policies: levels of targets (people, schedules, channels) fired in order until someone acknowledges.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Plus, Trash2 } from "lucide-react";
import * as React from "react";
import { ConfirmButton } from "@/components/confirm";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { Dialog, DialogContent } from "@/components/ui/dialog";
import { Input, Select } from "@/components/ui/input";
import { Field, Label } from "@/components/ui/label";
import { Switch } from "@/components/ui/misc";
import { useToast } from "@/components/ui/toast";
import { api, errorMessage } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import type { Channel, Policy, Schedule, User } from "@/lib/types";

type Target = { type: "user" | "schedule" | "channel"; id: string };
type Level = { delay_minutes: number; targets: Target[] };

function useTargets() {
  const users = useQuery({ queryKey: ["users", "all"], queryFn: () => api<{ items: User[] }>("/customer/users") });
  const schedules = useQuery({ queryKey: ["schedules"], queryFn: () => api<{ items: Schedule[] }>("/customer/schedules") });
  const channels = useQuery({ queryKey: ["channels"], queryFn: () => api<{ items: Channel[] }>("/customer/channels") });
  const name = (t: Target): string => {
    if (t.type === "user") {
      const u = users.data?.items.find((x) => x.user_id === t.id);
      return u ? u.display_name || u.email : "unknown user";
    }
    if (t.type === "schedule") return schedules.data?.items.find((x) => x.schedule_id === t.id)?.name ?? "unknown schedule";
    return channels.data?.items.find((x) => x.channel_id === t.id)?.name ?? "unknown channel";
  };
  const options = {
    user: (users.data?.items ?? []).map((u) => ({ id: u.user_id, label: u.display_name || u.email })),
    schedule: (schedules.data?.items ?? []).map((s) => ({ id: s.schedule_id, label: s.name })),
    channel: (channels.data?.items ?? []).map((c) => ({ id: c.channel_id, label: c.name })),
  };
  return { name, options };
}

export default function Policies() {
  const { isTenantAdmin } = useAuth();
  const queryClient = useQueryClient();
  const toast = useToast();
  const policies = useQuery({ queryKey: ["policies"], queryFn: () => api<{ items: Policy[] }>("/customer/escalation-policies") });
  const targets = useTargets();
  const [editing, setEditing] = React.useState<Policy | "new" | null>(null);
  const remove = useMutation({
    mutationFn: (id: string) => api(`/customer/escalation-policies/${id}`, { method: "DELETE" }),
    onSuccess: () => void queryClient.invalidateQueries({ queryKey: ["policies"] }),
    onError: (e) => toast({ title: "Not deleted", description: errorMessage(e), tone: "error" }),
  });
  return (
    <div className="grid gap-4" data-page="escalation">
      <PageHeader
        title="Escalation policies"
        description="Who is paged, in which order, until the alert is acknowledged."
        actions={
          isTenantAdmin && (
            <Button size="sm" onClick={() => setEditing("new")}>
              <Plus /> New policy
            </Button>
          )
        }
      />
      {policies.isPending ? (
        <Loading />
      ) : policies.isError ? (
        <ErrorState error={policies.error} onRetry={() => void policies.refetch()} />
      ) : policies.data.items.length === 0 ? (
        <Card>
          <Empty title="No escalation policies" hint="Without one, alerts notify through routing rules only." />
        </Card>
      ) : (
        <div className="grid gap-3 lg:grid-cols-2">
          {policies.data.items.map((p) => (
            <Card key={p.policy_id}>
              <CardHeader className="flex-row items-start justify-between gap-2">
                <div>
                  <CardTitle className="flex items-center gap-2">
                    {p.name} {p.is_default && <Badge variant="secondary">default</Badge>}
                  </CardTitle>
                  <p className="text-xs text-muted-foreground">
                    {p.rule_count} rule(s) · repeats {p.repeat_count}×
                  </p>
                </div>
                {isTenantAdmin && (
                  <div className="flex gap-1">
                    <Button size="sm" variant="outline" onClick={() => setEditing(p)}>
                      Edit
                    </Button>
                    <ConfirmButton
                      title={`Delete ${p.name}?`}
                      description="Rules that named it fall back to the tenant default; alerts escalating with it stop escalating."
                      confirmLabel="Delete"
                      variant="ghost"
                      onConfirm={() => remove.mutate(p.policy_id)}
                    >
                      <Trash2 />
                    </ConfirmButton>
                  </div>
                )}
              </CardHeader>
              <CardContent>
                <ol className="grid gap-2 border-l pl-4">
                  {p.levels.map((l) => (
                    <li key={l.position} className="text-sm">
                      <span className="font-medium">Level {l.position}</span>{" "}
                      <span className="text-muted-foreground">after {l.delay_minutes} min:</span>{" "}
                      {l.targets.map((t) => `${t.type} ${targets.name(t)}`).join(", ")}
                    </li>
                  ))}
                </ol>
              </CardContent>
            </Card>
          ))}
        </div>
      )}
      {editing && <PolicyEditor policy={editing === "new" ? null : editing} onClose={() => setEditing(null)} />}
    </div>
  );
}

function PolicyEditor({ policy, onClose }: { policy: Policy | null; onClose: () => void }) {
  const queryClient = useQueryClient();
  const { options } = useTargets();
  const [name, setName] = React.useState(policy?.name ?? "");
  const [repeat, setRepeat] = React.useState(String(policy?.repeat_count ?? 0));
  const [isDefault, setIsDefault] = React.useState(policy?.is_default ?? false);
  const [levels, setLevels] = React.useState<Level[]>(
    policy?.levels.map((l) => ({ delay_minutes: l.delay_minutes, targets: l.targets })) ?? [{ delay_minutes: 0, targets: [] }],
  );
  const save = useMutation({
    mutationFn: () => {
      const body = { name: name.trim(), repeat_count: Number(repeat), is_default: isDefault, levels };
      return policy
        ? api(`/customer/escalation-policies/${policy.policy_id}`, { method: "PUT", body })
        : api("/customer/escalation-policies", { method: "POST", body });
    },
    onSuccess: () => {
      void queryClient.invalidateQueries({ queryKey: ["policies"] });
      onClose();
    },
  });
  const setLevel = (i: number, l: Level) => setLevels((all) => all.map((x, j) => (j === i ? l : x)));
  return (
    <Dialog open onOpenChange={(v) => !v && onClose()}>
      <DialogContent title={policy ? `Edit ${policy.name}` : "New escalation policy"} className="max-w-2xl">
        <form
          className="grid gap-3"
          onSubmit={(e) => {
            e.preventDefault();
            save.mutate();
          }}
        >
          <div className="grid gap-3 sm:grid-cols-[1fr_8rem]">
            <Field label="Name" htmlFor="pol-name">
              <Input id="pol-name" required value={name} onChange={(e) => setName(e.target.value)} />
            </Field>
            <Field label="Repeat (times)" htmlFor="pol-repeat">
              <Input id="pol-repeat" inputMode="numeric" value={repeat} onChange={(e) => setRepeat(e.target.value)} />
            </Field>
          </div>
          <div className="flex items-center gap-2">
            <Switch id="pol-default" checked={isDefault} onCheckedChange={setIsDefault} />
            <Label htmlFor="pol-default">Tenant default policy</Label>
          </div>
          {levels.map((l, i) => (
            <fieldset key={i} className="grid gap-2 rounded-md border p-3">
              <legend className="px-1 text-sm font-medium">Level {i + 1}</legend>
              <div className="flex items-end gap-2">
                <Field label="Delay (minutes)" htmlFor={`lvl-${i}-delay`}>
                  <Input id={`lvl-${i}-delay`} className="w-28" inputMode="numeric" value={l.delay_minutes} onChange={(e) => setLevel(i, { ...l, delay_minutes: Number(e.target.value) || 0 })} />
                </Field>
                <Button variant="ghost" size="sm" className="ml-auto" disabled={levels.length === 1} onClick={() => setLevels((all) => all.filter((_, j) => j !== i))}>
                  <Trash2 /> Remove level
                </Button>
              </div>
              {l.targets.map((t, k) => (
                <div key={k} className="flex gap-2">
                  <Select aria-label="Target type" className="w-32" value={t.type} onChange={(e) => setLevel(i, { ...l, targets: l.targets.map((x, m) => (m === k ? { type: e.target.value as Target["type"], id: "" } : x)) })}>
                    <option value="user">user</option>
                    <option value="schedule">schedule</option>
                    <option value="channel">channel</option>
                  </Select>
                  <Select aria-label="Target" value={t.id} onChange={(e) => setLevel(i, { ...l, targets: l.targets.map((x, m) => (m === k ? { ...x, id: e.target.value } : x)) })}>
                    <option value="">choose…</option>
                    {options[t.type].map((o) => (
                      <option key={o.id} value={o.id}>
                        {o.label}
                      </option>
                    ))}
                  </Select>
                  <Button variant="ghost" size="icon" aria-label="Remove target" onClick={() => setLevel(i, { ...l, targets: l.targets.filter((_, m) => m !== k) })}>
                    <Trash2 />
                  </Button>
                </div>
              ))}
              <div>
                <Button variant="outline" size="sm" onClick={() => setLevel(i, { ...l, targets: [...l.targets, { type: "schedule", id: "" }] })}>
                  <Plus /> Target
                </Button>
              </div>
            </fieldset>
          ))}
          <div>
            <Button variant="outline" size="sm" disabled={levels.length >= 10} onClick={() => setLevels((all) => [...all, { delay_minutes: 15, targets: [] }])}>
              <Plus /> Level
            </Button>
          </div>
          {save.isError && (
            <p role="alert" className="text-sm text-destructive">
              {errorMessage(save.error)}
            </p>
          )}
          <div className="flex justify-end gap-2">
            <Button variant="outline" onClick={onClose}>
              Cancel
            </Button>
            <Button type="submit" disabled={save.isPending || !name.trim()}>
              Save
            </Button>
          </div>
        </form>
      </DialogContent>
    </Dialog>
  );
}
