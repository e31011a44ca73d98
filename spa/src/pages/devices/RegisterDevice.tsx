// Register one device: the answer carries its credentials, shown once.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import * as React from "react";
import { Link } from "react-router";
import { CredentialsView } from "@/components/Credentials";
import { Button } from "@/components/ui/button";
import { Dialog, DialogContent } from "@/components/ui/dialog";
import { Input, Select } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { ApiError, api, errorMessage } from "@/lib/api";
import type { Credentials, Site } from "@/lib/types";

export interface DeviceForm {
  device_id: string;
  name: string;
  site_id: string;
  device_type: string;
  tags: string;
  heartbeat_interval_s: string;
  lat: string;
  lng: string;
}

/** The POST body of a device form: empty fields left out, tags split on commas. */
export function deviceBody(form: DeviceForm): Record<string, unknown> {
  const body: Record<string, unknown> = { device_id: form.device_id.trim() };
  if (form.name.trim()) body.name = form.name.trim();
  if (form.site_id) body.site_id = form.site_id;
  if (form.device_type.trim()) body.device_type = form.device_type.trim();
  const tags = form.tags.split(",").map((t) => t.trim()).filter(Boolean);
  if (tags.length) body.tags = tags;
  if (form.heartbeat_interval_s.trim()) body.heartbeat_interval_s = Number(form.heartbeat_interval_s);
  if (form.lat.trim() || form.lng.trim()) {
    body.lat = Number(form.lat);
    body.lng = Number(form.lng);
  }
  return body;
}

const EMPTY: DeviceForm = { device_id: "", name: "", site_id: "", device_type: "", tags: "", heartbeat_interval_s: "", lat: "", lng: "" };

export function RegisterDevice({ open, onOpenChange }: { open: boolean; onOpenChange: (v: boolean) => void }) {
  const [form, setForm] = React.useState<DeviceForm>(EMPTY);
  const [created, setCreated] = React.useState<Credentials | null>(null);
  const queryClient = useQueryClient();
  const sites = useQuery({ queryKey: ["sites"], queryFn: () => api<{ items: Site[] }>("/customer/sites"), enabled: open });
  const create = useMutation({
    mutationFn: () =>
      api<{ credentials: Credentials }>("/customer/devices", { method: "POST", body: deviceBody(form) }),
    onSuccess: (r) => {
      setCreated(r.credentials);
      void queryClient.invalidateQueries({ queryKey: ["devices"] });
      void queryClient.invalidateQueries({ queryKey: ["fleet-summary"] });
    },
  });
  const fieldError = (name: string) =>
    create.error instanceof ApiError && create.error.field?.split(/[.[]/)[0] === name ? create.error.message : undefined;
  const set = (key: keyof DeviceForm) => (e: React.ChangeEvent<HTMLInputElement | HTMLSelectElement>) =>
    setForm((f) => ({ ...f, [key]: e.target.value }));

  function close(v: boolean) {
    onOpenChange(v);
    if (!v) {
      setForm(EMPTY);
      setCreated(null);
      create.reset();
    }
  }

  return (
    <Dialog open={open} onOpenChange={close}>
      <DialogContent title={created ? `Device ${created.device_id} registered` : "Register a device"}>
        {created ? (
          <div className="grid gap-4">
            <CredentialsView credentials={created} />
            <div className="flex justify-end gap-2">
              <Button variant="outline" asChild>
                <Link to={`/devices/${encodeURIComponent(created.device_id)}`} onClick={() => close(false)}>
                  Open device
                </Link>
              </Button>
              <Button onClick={() => close(false)}>Done</Button>
            </div>
          </div>
        ) : (
          <form
            className="grid gap-3"
            onSubmit={(e) => {
              e.preventDefault();
              create.mutate();
            }}
          >
            <Field label="Device id" htmlFor="device_id" hint="letters, digits, . _ : -" error={fieldError("device_id")}>
              <Input id="device_id" required value={form.device_id} onChange={set("device_id")} />
            </Field>
            <div className="grid gap-3 sm:grid-cols-2">
              <Field label="Name" htmlFor="name" error={fieldError("name")}>
                <Input id="name" value={form.name} onChange={set("name")} />
              </Field>
              <Field label="Type" htmlFor="device_type" error={fieldError("device_type")}>
                <Input id="device_type" value={form.device_type} onChange={set("device_type")} />
              </Field>
              <Field label="Site" htmlFor="site_id" error={fieldError("site_id")}>
                <Select id="site_id" value={form.site_id} onChange={set("site_id")}>
                  <option value="">none</option>
                  {sites.data?.items.map((s) => (
                    <option key={s.site_id} value={s.site_id}>
                      {s.name}
                    </option>
                  ))}
                </Select>
              </Field>
              <Field label="Heartbeat interval (s)" htmlFor="hb" error={fieldError("heartbeat_interval_s")}>
                <Input id="hb" inputMode="numeric" value={form.heartbeat_interval_s} onChange={set("heartbeat_interval_s")} placeholder="tenant default" />
              </Field>
              <Field label="Latitude" htmlFor="lat" error={fieldError("lat")}>
                <Input id="lat" inputMode="decimal" value={form.lat} onChange={set("lat")} />
              </Field>
              <Field label="Longitude" htmlFor="lng" error={fieldError("lng")}>
                <Input id="lng" inputMode="decimal" value={form.lng} onChange={set("lng")} />
              </Field>
            </div>
            <Field label="Tags" htmlFor="tags" hint="comma separated" error={fieldError("tags")}>
              <Input id="tags" value={form.tags} onChange={set("tags")} />
            </Field>
            {create.isError && (
              <p role="alert" className="text-sm text-destructive">
                {errorMessage(create.error)}
              </p>
            )}
            <div className="flex justify-end gap-2">
              <Button variant="outline" onClick={() => close(false)}>
                Cancel
              </Button>
              <Button type="submit" disabled={!form.device_id.trim() || create.isPending}>
                Register
              </Button>
            </div>
          </form>
        )}
      </DialogContent>
    </Dialog>
  );
}
