// Sites and device groups: where devices are and how they are grouped for rules, routing and maintenance.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Plus, Trash2 } from "lucide-react";
import * as React from "react";
import { Link } from "react-router";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { useToast } from "@/components/ui/toast";
import { api, errorMessage } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import { splitList } from "@/lib/lists";
import type { DeviceGroup, Site } from "@/lib/types";

export default function Sites() {
  const { isTenantAdmin } = useAuth();
  const queryClient = useQueryClient();
  const toast = useToast();
  const sites = useQuery({ queryKey: ["sites"], queryFn: () => api<{ items: Site[] }>("/customer/sites") });
  const groups = useQuery({ queryKey: ["groups"], queryFn: () => api<{ items: DeviceGroup[] }>("/customer/device-groups") });
  const [site, setSite] = React.useState({ site_id: "", name: "", timezone: "UTC" });
  const [group, setGroup] = React.useState({ name: "", device_ids: "" });
  const onError = (e: unknown) => toast({ title: "Not saved", description: errorMessage(e), tone: "error" });
  const addSite = useMutation({
    mutationFn: () => api("/customer/sites", { method: "POST", body: site }),
    onSuccess: () => {
      setSite({ site_id: "", name: "", timezone: "UTC" });
      void queryClient.invalidateQueries({ queryKey: ["sites"] });
    },
    onError,
  });
  const addGroup = useMutation({
    mutationFn: () => api("/customer/device-groups", { method: "POST", body: { name: group.name.trim(), device_ids: splitList(group.device_ids) } }),
    onSuccess: () => {
      setGroup({ name: "", device_ids: "" });
      void queryClient.invalidateQueries({ queryKey: ["groups"] });
    },
    onError,
  });
  const removeSite = useMutation({ mutationFn: (id: string) => api(`/customer/sites/${encodeURIComponent(id)}`, { method: "DELETE" }), onSuccess: () => void queryClient.invalidateQueries({ queryKey: ["sites"] }), onError });
  const removeGroup = useMutation({ mutationFn: (id: string) => api(`/customer/device-groups/${id}`, { method: "DELETE" }), onSuccess: () => void queryClient.invalidateQueries({ queryKey: ["groups"] }), onError });
  return (
    <div className="grid gap-4 xl:grid-cols-2" data-page="sites">
      <PageHeader title="Sites and groups" className="xl:col-span-2" />
      <Card>
        <CardHeader>
          <CardTitle>Sites</CardTitle>
        </CardHeader>
        {sites.isPending ? (
          <Loading />
        ) : sites.isError ? (
          <ErrorState error={sites.error} />
        ) : sites.data.items.length === 0 ? (
          <Empty title="No sites" />
        ) : (
          <Table>
            <THead>
              <TR>
                <TH>Site</TH>
                <TH>Time zone</TH>
                <TH className="text-right">Devices</TH>
                <TH />
              </TR>
            </THead>
            <TBody>
              {sites.data.items.map((s) => (
                <TR key={s.site_id}>
                  <TD>
                    <Link className="font-medium hover:underline" to={`/devices?site_id=${encodeURIComponent(s.site_id)}`}>
                      {s.name}
                    </Link>
                    <span className="ml-2 font-mono text-xs text-muted-foreground">{s.site_id}</span>
                  </TD>
                  <TD className="text-xs">{s.timezone}</TD>
                  <TD className="text-right tabular-nums">{s.device_count}</TD>
                  <TD>
                    {isTenantAdmin && (
                      <Button variant="ghost" size="icon" aria-label={`Delete site ${s.name}`} onClick={() => removeSite.mutate(s.site_id)}>
                        <Trash2 />
                      </Button>
                    )}
                  </TD>
                </TR>
              ))}
            </TBody>
          </Table>
        )}
        {isTenantAdmin && (
          <CardContent>
            <form
              className="grid gap-2 border-t pt-3 sm:grid-cols-4"
              onSubmit={(e) => {
                e.preventDefault();
                addSite.mutate();
              }}
            >
              <Field label="Site id" htmlFor="site-id">
                <Input id="site-id" required value={site.site_id} onChange={(e) => setSite({ ...site, site_id: e.target.value })} />
              </Field>
              <Field label="Name" htmlFor="site-name">
                <Input id="site-name" required value={site.name} onChange={(e) => setSite({ ...site, name: e.target.value })} />
              </Field>
              <Field label="Time zone" htmlFor="site-tz">
                <Input id="site-tz" value={site.timezone} onChange={(e) => setSite({ ...site, timezone: e.target.value })} />
              </Field>
              <Button type="submit" className="self-end" disabled={!site.site_id || !site.name || addSite.isPending}>
                <Plus /> Add site
              </Button>
            </form>
          </CardContent>
        )}
      </Card>
      <Card>
        <CardHeader>
          <CardTitle>Device groups</CardTitle>
        </CardHeader>
        {groups.isPending ? (
          <Loading />
        ) : groups.isError ? (
          <ErrorState error={groups.error} />
        ) : groups.data.items.length === 0 ? (
          <Empty title="No device groups" />
        ) : (
          <Table>
            <THead>
              <TR>
                <TH>Group</TH>
                <TH className="text-right">Devices</TH>
                <TH />
              </TR>
            </THead>
            <TBody>
              {groups.data.items.map((g) => (
                <TR key={g.group_id}>
                  <TD>
                    <Link className="font-medium hover:underline" to={`/devices?group_id=${g.group_id}`}>
                      {g.name}
                    </Link>
                    {g.description && <p className="text-xs text-muted-foreground">{g.description}</p>}
                  </TD>
                  <TD className="text-right tabular-nums">{g.device_ids.length}</TD>
                  <TD>
                    {isTenantAdmin && (
                      <Button variant="ghost" size="icon" aria-label={`Delete group ${g.name}`} onClick={() => removeGroup.mutate(g.group_id)}>
                        <Trash2 />
                      </Button>
                    )}
                  </TD>
                </TR>
              ))}
            </TBody>
          </Table>
        )}
        {isTenantAdmin && (
          <CardContent>
            <form
              className="grid gap-2 border-t pt-3 sm:grid-cols-3"
              onSubmit={(e) => {
                e.preventDefault();
                addGroup.mutate();
              }}
            >
              <Field label="Name" htmlFor="group-name">
                <Input id="group-name" required value={group.name} onChange={(e) => setGroup({ ...group, name: e.target.value })} />
              </Field>
              <Field label="Devices" htmlFor="group-devices" hint="comma separated ids">
                <Input id="group-devices" value={group.device_ids} onChange={(e) => setGroup({ ...group, device_ids: e.target.value })} />
              </Field>
              <Button type="submit" className="self-end" disabled={!group.name.trim() || addGroup.isPending}>
                <Plus /> Add group
              </Button>
            </form>
          </CardContent>
        )}
      </Card>
    </div>
  );
}
