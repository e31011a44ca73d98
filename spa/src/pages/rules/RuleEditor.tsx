// Create or change an alert rule: every rule type as a form, scopes, escalation policy, and a 24 h preview.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { ArrowLeft, Plus, Trash2 } from "lucide-react";
import * as React from "react";
import { Link, useNavigate, useParams } from "react-router";
import { ConfirmButton } from "@/components/confirm";
import { PageHeader } from "@/components/page";
import { ErrorState, Loading } from "@/components/states";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Input, Select, Textarea } from "@/components/ui/input";
import { Field, Label } from "@/components/ui/label";
import { Switch } from "@/components/ui/misc";
import { useToast } from "@/components/ui/toast";
import { ApiError, api, errorMessage } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import { severityName } from "@/lib/format";
import { splitList } from "@/lib/lists";
import type { Policy, Rule } from "@/lib/types";
import {
  type DefinitionForm,
  definitionToForm,
  EMPTY_DEFINITION,
  formToDefinition,
  OPS,
  RATE_OPS,
  RULE_TYPES,
  type RuleType,
} from "@/pages/rules/definition";
import { RulePreview } from "@/pages/rules/RulePreview";

interface RuleForm {
  name: string;
  description: string;
  rule_type: RuleType;
  severity: string;
  for_seconds: string;
  is_enabled: boolean;
  device_ids: string;
  site_ids: string;
  tags: string;
  escalation_policy_id: string;
}

const NEW_RULE: RuleForm = {
  name: "",
  description: "",
  rule_type: "THRESHOLD",
  severity: "3",
  for_seconds: "0",
  is_enabled: true,
  device_ids: "",
  site_ids: "",
  tags: "",
  escalation_policy_id: "",
};

export default function RuleEditor() {
  const { ruleId } = useParams();
  const existing = useQuery({
    queryKey: ["rule", ruleId],
    queryFn: () => api<Rule>(`/customer/alert-rules/${ruleId}`),
    enabled: !!ruleId,
  });
  if (ruleId && existing.isPending) return <Loading />;
  if (ruleId && existing.isError) return <ErrorState error={existing.error} onRetry={() => void existing.refetch()} />;
  return <Editor key={ruleId ?? "new"} rule={existing.data} />;
}

function Editor({ rule }: { rule?: Rule }) {
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const toast = useToast();
  const { isTenantAdmin } = useAuth();
  const [form, setForm] = React.useState<RuleForm>(() =>
    rule
      ? {
          name: rule.name,
          description: rule.description ?? "",
          rule_type: rule.rule_type,
          severity: String(rule.severity),
          for_seconds: String(rule.for_seconds),
          is_enabled: rule.is_enabled,
          device_ids: rule.device_ids.join(", "),
          site_ids: rule.site_ids.join(", "),
          tags: rule.tags.join(", "),
          escalation_policy_id: rule.escalation_policy_id ?? "",
        }
      : NEW_RULE,
  );
  const [def, setDef] = React.useState<DefinitionForm>(() => (rule ? definitionToForm(rule.rule_type, rule.definition) : EMPTY_DEFINITION));
  const policies = useQuery({ queryKey: ["policies"], queryFn: () => api<{ items: Policy[] }>("/customer/escalation-policies") });

  const body = () => ({
    name: form.name.trim(),
    description: form.description.trim() || null,
    rule_type: form.rule_type,
    severity: Number(form.severity),
    for_seconds: Number(form.for_seconds || 0),
    is_enabled: form.is_enabled,
    definition: formToDefinition(form.rule_type, def),
    device_ids: splitList(form.device_ids),
    site_ids: splitList(form.site_ids),
    tags: splitList(form.tags),
    escalation_policy_id: form.escalation_policy_id || null,
  });
  const save = useMutation({
    mutationFn: () =>
      rule
        ? api<Rule>(`/customer/alert-rules/${rule.rule_id}`, { method: "PATCH", body: body() })
        : api<Rule>("/customer/alert-rules", { method: "POST", body: body() }),
    onSuccess: (saved) => {
      void queryClient.invalidateQueries({ queryKey: ["rules"] });
      queryClient.setQueryData(["rule", saved.rule_id], saved);
      toast({ title: rule ? "Rule saved" : "Rule created", tone: "success" });
      if (!rule) navigate(`/rules/${saved.rule_id}`, { replace: true });
    },
  });
  const remove = useMutation({
    mutationFn: () => api(`/customer/alert-rules/${rule!.rule_id}`, { method: "DELETE" }),
    onSuccess: () => {
      void queryClient.invalidateQueries({ queryKey: ["rules"] });
      navigate("/rules");
    },
    onError: (e) => toast({ title: "Not deleted", description: errorMessage(e), tone: "error" }),
  });
  const err = save.error instanceof ApiError ? save.error : null;
  const fieldError = (name: string) => (err?.field === name || err?.field?.startsWith(`${name}.`) || err?.field?.startsWith(`${name}[`) ? err.message : undefined);
  const set = <K extends keyof RuleForm>(key: K, value: RuleForm[K]) => setForm((f) => ({ ...f, [key]: value }));
  const setD = <K extends keyof DefinitionForm>(key: K, value: DefinitionForm[K]) => setDef((d) => ({ ...d, [key]: value }));
  const t = form.rule_type;

  return (
    <div className="grid gap-4" data-page="rule-editor">
      <Link to="/rules" className="flex items-center gap-1 text-sm text-muted-foreground hover:underline">
        <ArrowLeft className="size-4" /> Alert rules
      </Link>
      <PageHeader title={rule ? rule.name : "New alert rule"} />
      <form
        className="grid gap-4 xl:grid-cols-[minmax(0,1.2fr)_minmax(0,1fr)]"
        onSubmit={(e) => {
          e.preventDefault();
          save.mutate();
        }}
      >
        <div className="grid content-start gap-4">
          <Card>
            <CardContent className="grid gap-3 pt-4 sm:grid-cols-2">
              <Field label="Name" htmlFor="rule-name" error={fieldError("name")} className="sm:col-span-2">
                <Input id="rule-name" required value={form.name} onChange={(e) => set("name", e.target.value)} />
              </Field>
              <Field label="Type" htmlFor="rule-type" error={fieldError("rule_type")}>
                <Select id="rule-type" value={t} onChange={(e) => set("rule_type", e.target.value as RuleType)} disabled={!!rule && false}>
                  {RULE_TYPES.map((rt) => (
                    <option key={rt}>{rt}</option>
                  ))}
                </Select>
              </Field>
              <Field label="Severity" htmlFor="rule-severity" error={fieldError("severity")}>
                <Select id="rule-severity" value={form.severity} onChange={(e) => set("severity", e.target.value)}>
                  {[1, 2, 3, 4, 5].map((s) => (
                    <option key={s} value={s}>
                      {s} · {severityName(s)}
                    </option>
                  ))}
                </Select>
              </Field>
              <Field label="Hold for (seconds)" htmlFor="rule-for" hint="how long the condition must hold before an alert opens" error={fieldError("for_seconds")}>
                <Input id="rule-for" inputMode="numeric" value={form.for_seconds} onChange={(e) => set("for_seconds", e.target.value)} />
              </Field>
              <div className="flex items-center gap-2 self-end pb-2">
                <Switch id="rule-enabled" checked={form.is_enabled} onCheckedChange={(v) => set("is_enabled", v)} />
                <Label htmlFor="rule-enabled">Enabled</Label>
              </div>
              <Field label="Description" htmlFor="rule-desc" error={fieldError("description")} className="sm:col-span-2">
                <Textarea id="rule-desc" className="min-h-14" value={form.description} onChange={(e) => set("description", e.target.value)} />
              </Field>
            </CardContent>
          </Card>

          <Card>
            <CardHeader>
              <CardTitle>Condition</CardTitle>
              <CardDescription>
                {t === "THRESHOLD" && "The latest value of one metric."}
                {t === "MULTI" && "Several threshold conditions combined."}
                {t === "RATE" && "Change per minute over a window of telemetry."}
                {t === "ANOMALY" && "z-score of the latest value against the window."}
                {t === "GAP" && "A metric missing from telemetry for a while."}
              </CardDescription>
            </CardHeader>
            <CardContent className="grid gap-3 sm:grid-cols-2">
              {t !== "MULTI" && (
                <Field label="Metric" htmlFor="def-metric" error={fieldError("definition.metric")}>
                  <Input id="def-metric" required value={def.metric} onChange={(e) => setD("metric", e.target.value)} placeholder="temp_c" />
                </Field>
              )}
              {(t === "THRESHOLD" || t === "RATE") && (
                <>
                  <Field label="Operator" htmlFor="def-op" error={fieldError("definition.op")}>
                    <Select id="def-op" value={def.op} onChange={(e) => setD("op", e.target.value)}>
                      {(t === "RATE" ? RATE_OPS : OPS).map((o) => (
                        <option key={o}>{o}</option>
                      ))}
                    </Select>
                  </Field>
                  <Field label={t === "RATE" ? "Change per minute" : "Value"} htmlFor="def-value" error={fieldError("definition.value")}>
                    <Input id="def-value" required value={def.value} onChange={(e) => setD("value", e.target.value)} />
                  </Field>
                  <Field label="Clear value (hysteresis)" htmlFor="def-clear" hint="optional" error={fieldError("definition.clear_value")}>
                    <Input id="def-clear" value={def.clear_value} onChange={(e) => setD("clear_value", e.target.value)} />
                  </Field>
                </>
              )}
              {(t === "RATE" || t === "ANOMALY") && (
                <Field label="Window (seconds)" htmlFor="def-window" hint="60–86400" error={fieldError("definition.window_seconds")}>
                  <Input id="def-window" value={def.window_seconds} onChange={(e) => setD("window_seconds", e.target.value)} />
                </Field>
              )}
              {t === "ANOMALY" && (
                <>
                  <Field label="z threshold" htmlFor="def-z" error={fieldError("definition.z_threshold")}>
                    <Input id="def-z" value={def.z_threshold} onChange={(e) => setD("z_threshold", e.target.value)} />
                  </Field>
                  <Field label="Minimum samples" htmlFor="def-min" error={fieldError("definition.min_samples")}>
                    <Input id="def-min" value={def.min_samples} onChange={(e) => setD("min_samples", e.target.value)} />
                  </Field>
                  <Field label="Clear z" htmlFor="def-clearz" hint="default: the z threshold" error={fieldError("definition.clear_z")}>
                    <Input id="def-clearz" value={def.clear_z} onChange={(e) => setD("clear_z", e.target.value)} />
                  </Field>
                </>
              )}
              {t === "GAP" && (
                <Field label="Gap (seconds)" htmlFor="def-gap" hint="60–86400" error={fieldError("definition.gap_seconds")}>
                  <Input id="def-gap" value={def.gap_seconds} onChange={(e) => setD("gap_seconds", e.target.value)} />
                </Field>
              )}
              {t === "MULTI" && (
                <div className="grid gap-3 sm:col-span-2">
                  <Field label="Match" htmlFor="def-match">
                    <Select id="def-match" value={def.match} onChange={(e) => setD("match", e.target.value as "all" | "any")}>
                      <option value="all">all conditions (AND)</option>
                      <option value="any">any condition (OR)</option>
                    </Select>
                  </Field>
                  {def.conditions.map((c, i) => (
                    <fieldset key={i} className="grid gap-2 rounded-md border p-2 sm:grid-cols-[1fr_6rem_1fr_1fr_auto]">
                      <legend className="px-1 text-xs text-muted-foreground">Condition {i + 1}</legend>
                      {(["metric", "op", "value", "clear_value"] as const).map((k) =>
                        k === "op" ? (
                          <Select key={k} aria-label={`Condition ${i + 1} operator`} value={c.op} onChange={(e) => setD("conditions", def.conditions.map((x, j) => (j === i ? { ...x, op: e.target.value } : x)))}>
                            {OPS.map((o) => (
                              <option key={o}>{o}</option>
                            ))}
                          </Select>
                        ) : (
                          <Input
                            key={k}
                            aria-label={`Condition ${i + 1} ${k.replace("_", " ")}`}
                            placeholder={k.replace("_", " ")}
                            value={c[k]}
                            onChange={(e) => setD("conditions", def.conditions.map((x, j) => (j === i ? { ...x, [k]: e.target.value } : x)))}
                          />
                        ),
                      )}
                      <Button variant="ghost" size="icon" aria-label={`Remove condition ${i + 1}`} disabled={def.conditions.length === 1} onClick={() => setD("conditions", def.conditions.filter((_, j) => j !== i))}>
                        <Trash2 />
                      </Button>
                    </fieldset>
                  ))}
                  {fieldError("definition") && <p className="text-xs text-destructive">{fieldError("definition")}</p>}
                  <div>
                    <Button variant="outline" size="sm" disabled={def.conditions.length >= 10} onClick={() => setD("conditions", [...def.conditions, { metric: "", op: "GT", value: "", clear_value: "" }])}>
                      <Plus /> Condition
                    </Button>
                  </div>
                </div>
              )}
            </CardContent>
          </Card>

          <Card>
            <CardHeader>
              <CardTitle>Scope and escalation</CardTitle>
              <CardDescription>Empty lists mean any device; every list given must match.</CardDescription>
            </CardHeader>
            <CardContent className="grid gap-3 sm:grid-cols-2">
              <Field label="Devices" htmlFor="scope-devices" hint="comma separated ids" error={fieldError("device_ids")}>
                <Input id="scope-devices" value={form.device_ids} onChange={(e) => set("device_ids", e.target.value)} />
              </Field>
              <Field label="Sites" htmlFor="scope-sites" hint="comma separated ids" error={fieldError("site_ids")}>
                <Input id="scope-sites" value={form.site_ids} onChange={(e) => set("site_ids", e.target.value)} />
              </Field>
              <Field label="Tags" htmlFor="scope-tags" hint="comma separated" error={fieldError("tags")}>
                <Input id="scope-tags" value={form.tags} onChange={(e) => set("tags", e.target.value)} />
              </Field>
              <Field label="Escalation policy" htmlFor="rule-policy" error={fieldError("escalation_policy_id")}>
                <Select id="rule-policy" value={form.escalation_policy_id} onChange={(e) => set("escalation_policy_id", e.target.value)}>
                  <option value="">tenant default</option>
                  {policies.data?.items.map((p) => (
                    <option key={p.policy_id} value={p.policy_id}>
                      {p.name}
                    </option>
                  ))}
                </Select>
              </Field>
            </CardContent>
          </Card>

          {save.isError && (
            <p role="alert" className="rounded-md border border-destructive/50 bg-destructive/10 p-2 text-sm text-destructive">
              {errorMessage(save.error)}
            </p>
          )}
          {isTenantAdmin ? (
            <div className="flex gap-2">
              <Button type="submit" disabled={save.isPending || !form.name.trim()}>
                {rule ? "Save rule" : "Create rule"}
              </Button>
              {rule && (
                <ConfirmButton
                  title="Delete this rule?"
                  description="Its alerts are kept; open ones stay open until closed by hand."
                  confirmLabel="Delete"
                  variant="destructive"
                  size="default"
                  onConfirm={() => remove.mutate()}
                >
                  Delete
                </ConfirmButton>
              )}
            </div>
          ) : (
            <p className="text-sm text-muted-foreground">Only tenant admins change rules.</p>
          )}
        </div>
        <RulePreview ruleType={t} def={def} forSeconds={form.for_seconds} deviceIds={splitList(form.device_ids)} />
      </form>
    </div>
  );
}
