// The tenant's users and roles: add, change roles, deactivate and reactivate (tenant-admin).
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Plus } from "lucide-react";
import * as React from "react";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { Input, Select } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { useToast } from "@/components/ui/toast";
import { api, errorMessage } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import { relativeTime } from "@/lib/format";
import type { User } from "@/lib/types";

export default function Users() {
  const { isTenantAdmin } = useAuth();
  const queryClient = useQueryClient();
  const toast = useToast();
  const users = useQuery({ queryKey: ["users", "all"], queryFn: () => api<{ items: User[] }>("/customer/users") });
  const change = useMutation({
    mutationFn: ({ id, body }: { id: string; body: Record<string, unknown> }) => api(`/customer/users/${id}`, { method: "PATCH", body }),
    onSuccess: () => void queryClient.invalidateQueries({ queryKey: ["users"] }),
    onError: (e) => toast({ title: "Not changed", description: errorMessage(e), tone: "error" }),
  });
  return (
    <div className="grid gap-4" data-page="users">
      <PageHeader title="Users and roles" description="customer: read and act on alerts; tenant-admin: change everything in the tenant." />
      <Card>
        {users.isPending ? (
          <Loading />
        ) : users.isError ? (
          <ErrorState error={users.error} onRetry={() => void users.refetch()} />
        ) : users.data.items.length === 0 ? (
          <Empty title="No users" />
        ) : (
          <Table>
            <THead>
              <TR>
                <TH>User</TH>
                <TH>Role</TH>
                <TH>Time zone</TH>
                <TH>Last login</TH>
                <TH>Status</TH>
              </TR>
            </THead>
            <TBody>
              {users.data.items.map((u) => (
                <TR key={u.user_id}>
                  <TD>
                    <p className="font-medium">{u.display_name || u.email}</p>
                    <p className="text-xs text-muted-foreground">{u.email}</p>
                  </TD>
                  <TD>
                    <Select
                      aria-label={`Role of ${u.email}`}
                      className="h-8 w-36 text-xs"
                      value={u.roles.includes("tenant-admin") ? "tenant-admin" : "customer"}
                      disabled={!isTenantAdmin || !u.is_active}
                      onChange={(e) => change.mutate({ id: u.user_id, body: { roles: [e.target.value] } })}
                    >
                      <option value="customer">customer</option>
                      <option value="tenant-admin">tenant-admin</option>
                    </Select>
                  </TD>
                  <TD className="text-xs">{u.timezone}</TD>
                  <TD className="text-xs text-muted-foreground">{relativeTime(u.last_login_at)}</TD>
                  <TD>
                    <span className="flex items-center gap-2">
                      <Badge variant={u.is_active ? "ok" : "muted"}>{u.is_active ? "active" : "deactivated"}</Badge>
                      {isTenantAdmin && (
                        <Button size="sm" variant="ghost" onClick={() => change.mutate({ id: u.user_id, body: { is_active: !u.is_active } })}>
                          {u.is_active ? "Deactivate" : "Reactivate"}
                        </Button>
                      )}
                    </span>
                  </TD>
                </TR>
              ))}
            </TBody>
          </Table>
        )}
      </Card>
      {isTenantAdmin && <NewUser />}
    </div>
  );
}

function NewUser() {
  const queryClient = useQueryClient();
  const toast = useToast();
  const [email, setEmail] = React.useState("");
  const [name, setName] = React.useState("");
  const [role, setRole] = React.useState("customer");
  const [password, setPassword] = React.useState("");
  const create = useMutation({
    mutationFn: () =>
      api("/customer/users", {
        method: "POST",
        body: { email: email.trim(), display_name: name.trim(), roles: [role], ...(password ? { password } : {}) },
      }),
    onSuccess: () => {
      toast({ title: "User added", tone: "success" });
      setEmail("");
      setName("");
      setPassword("");
      void queryClient.invalidateQueries({ queryKey: ["users"] });
    },
    onError: (e) => toast({ title: "User not added", description: errorMessage(e), tone: "error" }),
  });
  return (
    <Card>
      <CardHeader>
        <CardTitle>Add a user</CardTitle>
      </CardHeader>
      <CardContent>
        <form
          className="grid gap-3 md:grid-cols-4"
          onSubmit={(e) => {
            e.preventDefault();
            create.mutate();
          }}
        >
          <Field label="Email" htmlFor="nu-email">
            <Input id="nu-email" type="email" required value={email} onChange={(e) => setEmail(e.target.value)} />
          </Field>
          <Field label="Name" htmlFor="nu-name">
            <Input id="nu-name" value={name} onChange={(e) => setName(e.target.value)} />
          </Field>
          <Field label="Role" htmlFor="nu-role">
            <Select id="nu-role" value={role} onChange={(e) => setRole(e.target.value)}>
              <option value="customer">customer</option>
              <option value="tenant-admin">tenant-admin</option>
            </Select>
          </Field>
          <Field label="Password" htmlFor="nu-pass" hint="8+ characters; empty: cannot log in with Pulse's own identity">
            <Input id="nu-pass" type="password" autoComplete="new-password" value={password} onChange={(e) => setPassword(e.target.value)} />
          </Field>
          <div className="md:col-span-4">
            <Button type="submit" disabled={!email.trim() || create.isPending}>
              <Plus /> Add user
            </Button>
          </div>
        </form>
      </CardContent>
    </Card>
  );
}
