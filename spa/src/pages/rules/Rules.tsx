// Alert rules: the tenant's rules with an enable switch, and built-in templates to start from.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Plus } from "lucide-react";
import * as React from "react";
import { Link, useNavigate } from "react-router";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { SeverityBadge } from "@/components/status";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Dialog, DialogContent } from "@/components/ui/dialog";
import { Input } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { Switch } from "@/components/ui/misc";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { useToast } from "@/components/ui/toast";
import { api, errorMessage } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import type { CursorPage, Rule } from "@/lib/types";

interface Template {
  template_id: string;
  name: string;
  description: string;
  rule_type: string;
  severity: number;
  parameters: { name: string; type: string; description: string; default: unknown; minimum: number | null; maximum: number | null }[];
}

/** One sentence saying what a rule watches. */
export function describeRule(rule: Pick<Rule, "rule_type" | "definition" | "for_seconds">): string {
  const d = rule.definition as Record<string, unknown>;
  const ops: Record<string, string> = { GT: ">", GTE: "≥", LT: "<", LTE: "≤", EQ: "=", NEQ: "≠" };
  const hold = rule.for_seconds ? ` for ${rule.for_seconds} s` : "";
  switch (rule.rule_type) {
    case "THRESHOLD":
      return `${d.metric} ${ops[d.op as string] ?? d.op} ${d.value}${hold}`;
    case "MULTI": {
      const conds = (d.conditions as Record<string, unknown>[]) ?? [];
      return conds.map((c) => `${c.metric} ${ops[c.op as string] ?? c.op} ${c.value}`).join(d.match === "any" ? " or " : " and ") + hold;
    }
    case "RATE":
      return `${d.metric} changes ${ops[d.op as string] ?? d.op} ${d.value}/min over ${d.window_seconds} s${hold}`;
    case "ANOMALY":
      return `${d.metric} |z| ≥ ${d.z_threshold ?? 3} over ${d.window_seconds} s`;
    case "GAP":
      return `no ${d.metric} for ${d.gap_seconds} s`;
    default:
      return rule.rule_type;
  }
}

export default function Rules() {
  const { isTenantAdmin } = useAuth();
  const queryClient = useQueryClient();
  const toast = useToast();
  const rules = useQuery({ queryKey: ["rules"], queryFn: () => api<CursorPage<Rule>>("/customer/alert-rules", { query: { limit: 200 } }) });
  const templates = useQuery({ queryKey: ["rule-templates"], queryFn: () => api<{ items: Template[] }>("/customer/alert-rule-templates") });
  const [template, setTemplate] = React.useState<Template | null>(null);
  const toggle = useMutation({
    mutationFn: (r: Rule) => api(`/customer/alert-rules/${r.rule_id}`, { method: "PATCH", body: { is_enabled: !r.is_enabled } }),
    onSuccess: () => void queryClient.invalidateQueries({ queryKey: ["rules"] }),
    onError: (e) => toast({ title: "Not changed", description: errorMessage(e), tone: "error" }),
  });
  return (
    <div className="grid gap-4" data-page="rules">
      <PageHeader
        title="Alert rules"
        description="What turns device data into alerts. Changes reach the evaluator at once."
        actions={
          isTenantAdmin && (
            <Button asChild size="sm">
              <Link to="/rules/new">
                <Plus /> New rule
              </Link>
            </Button>
          )
        }
      />
      <Card>
        {rules.isPending ? (
          <Loading />
        ) : rules.isError ? (
          <ErrorState error={rules.error} onRetry={() => void rules.refetch()} />
        ) : rules.data.items.length === 0 ? (
          <Empty title="No rules yet" hint="Create one, or start from a template below." />
        ) : (
          <Table>
            <THead>
              <TR>
                <TH>Rule</TH>
                <TH>Type</TH>
                <TH>Condition</TH>
                <TH>Severity</TH>
                <TH>Enabled</TH>
              </TR>
            </THead>
            <TBody>
              {rules.data.items.map((r) => (
                <TR key={r.rule_id} data-rule={r.name}>
                  <TD>
                    <Link className="font-medium hover:underline" to={`/rules/${r.rule_id}`}>
                      {r.name}
                    </Link>
                  </TD>
                  <TD className="text-xs">{r.rule_type}</TD>
                  <TD className="font-mono text-xs">{describeRule(r)}</TD>
                  <TD>
                    <SeverityBadge severity={r.severity} />
                  </TD>
                  <TD>
                    <Switch aria-label={`Enable ${r.name}`} checked={r.is_enabled} disabled={!isTenantAdmin} onCheckedChange={() => toggle.mutate(r)} />
                  </TD>
                </TR>
              ))}
            </TBody>
          </Table>
        )}
      </Card>
      <Card>
        <CardHeader>
          <CardTitle>Templates</CardTitle>
          <CardDescription>Common rules with sensible defaults.</CardDescription>
        </CardHeader>
        <CardContent className="grid gap-2 md:grid-cols-2 xl:grid-cols-3">
          {templates.isPending ? (
            <Loading />
          ) : templates.isError ? (
            <ErrorState error={templates.error} />
          ) : (
            templates.data.items.map((t) => (
              <div key={t.template_id} className="flex items-start justify-between gap-2 rounded-md border p-3">
                <div className="grid gap-1">
                  <p className="text-sm font-medium">{t.name}</p>
                  <p className="text-xs text-muted-foreground">{t.description}</p>
                </div>
                {isTenantAdmin && (
                  <Button size="sm" variant="outline" onClick={() => setTemplate(t)}>
                    Use
                  </Button>
                )}
              </div>
            ))
          )}
        </CardContent>
      </Card>
      {template && <InstantiateDialog template={template} onClose={() => setTemplate(null)} />}
    </div>
  );
}

function InstantiateDialog({ template, onClose }: { template: Template; onClose: () => void }) {
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const [name, setName] = React.useState(template.name);
  const [values, setValues] = React.useState<Record<string, string>>(
    Object.fromEntries(template.parameters.map((p) => [p.name, p.default === null || p.default === undefined ? "" : String(p.default)])),
  );
  const create = useMutation({
    mutationFn: () => {
      const parameters: Record<string, unknown> = {};
      for (const p of template.parameters) {
        const v = values[p.name]?.trim();
        if (v === "" || v === undefined) continue;
        parameters[p.name] = p.type === "string" ? v : Number(v);
      }
      return api<Rule>(`/customer/alert-rule-templates/${template.template_id}/instantiate`, { method: "POST", body: { name, parameters } });
    },
    onSuccess: (r) => {
      void queryClient.invalidateQueries({ queryKey: ["rules"] });
      navigate(`/rules/${r.rule_id}`);
    },
  });
  return (
    <Dialog open onOpenChange={(v) => !v && onClose()}>
      <DialogContent title={`New rule from “${template.name}”`} description={template.description}>
        <form
          className="grid gap-3"
          onSubmit={(e) => {
            e.preventDefault();
            create.mutate();
          }}
        >
          <Field label="Name" htmlFor="tpl-name">
            <Input id="tpl-name" value={name} onChange={(e) => setName(e.target.value)} />
          </Field>
          {template.parameters.map((p) => (
            <Field key={p.name} label={p.name} htmlFor={`tpl-${p.name}`} hint={p.description}>
              <Input id={`tpl-${p.name}`} value={values[p.name] ?? ""} onChange={(e) => setValues((v) => ({ ...v, [p.name]: e.target.value }))} />
            </Field>
          ))}
          {create.isError && (
            <p role="alert" className="text-sm text-destructive">
              {errorMessage(create.error)}
            </p>
          )}
          <div className="flex justify-end gap-2">
            <Button variant="outline" onClick={onClose}>
              Cancel
            </Button>
            <Button type="submit" disabled={create.isPending}>
              Create rule
            </Button>
          </div>
        </form>
      </DialogContent>
    </Dialog>
  );
}
