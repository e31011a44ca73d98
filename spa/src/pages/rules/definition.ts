// Rule definitions as form fields and back (one shape per rule type, docs/alert-rules.md).
import { optionalNumber, parseScalar } from "@/lib/lists";

export type RuleType = "THRESHOLD" | "MULTI" | "RATE" | "ANOMALY" | "GAP";
export const RULE_TYPES: RuleType[] = ["THRESHOLD", "MULTI", "RATE", "ANOMALY", "GAP"];
export const OPS = ["GT", "GTE", "LT", "LTE", "EQ", "NEQ"] as const;
export const RATE_OPS = ["GT", "GTE", "LT", "LTE"] as const;

export interface Condition {
  metric: string;
  op: string;
  value: string;
  clear_value: string;
}

export interface DefinitionForm {
  metric: string;
  op: string;
  value: string;
  clear_value: string;
  window_seconds: string;
  z_threshold: string;
  min_samples: string;
  clear_z: string;
  gap_seconds: string;
  match: "all" | "any";
  conditions: Condition[];
}

export const EMPTY_DEFINITION: DefinitionForm = {
  metric: "",
  op: "GT",
  value: "",
  clear_value: "",
  window_seconds: "300",
  z_threshold: "3",
  min_samples: "10",
  clear_z: "",
  gap_seconds: "600",
  match: "all",
  conditions: [{ metric: "", op: "GT", value: "", clear_value: "" }],
};

const str = (v: unknown): string => (v === null || v === undefined ? "" : String(v));

export function definitionToForm(type: RuleType, d: Record<string, unknown>): DefinitionForm {
  const form: DefinitionForm = { ...EMPTY_DEFINITION, conditions: [...EMPTY_DEFINITION.conditions] };
  form.metric = str(d.metric);
  form.op = str(d.op) || "GT";
  form.value = str(d.value);
  form.clear_value = str(d.clear_value);
  if (d.window_seconds !== undefined) form.window_seconds = str(d.window_seconds);
  if (d.z_threshold !== undefined) form.z_threshold = str(d.z_threshold);
  if (d.min_samples !== undefined) form.min_samples = str(d.min_samples);
  form.clear_z = str(d.clear_z);
  if (d.gap_seconds !== undefined) form.gap_seconds = str(d.gap_seconds);
  if (type === "MULTI") {
    form.match = d.match === "any" ? "any" : "all";
    form.conditions = ((d.conditions as Record<string, unknown>[]) ?? []).map((c) => ({
      metric: str(c.metric),
      op: str(c.op) || "GT",
      value: str(c.value),
      clear_value: str(c.clear_value),
    }));
  }
  return form;
}

function condition(c: Condition): Record<string, unknown> {
  const out: Record<string, unknown> = { metric: c.metric.trim(), op: c.op, value: parseScalar(c.value) };
  const clear = optionalNumber(c.clear_value);
  if (clear !== undefined) out.clear_value = clear;
  return out;
}

/** The definition the API stores for this type; the server validates it and names any bad field. */
export function formToDefinition(type: RuleType, f: DefinitionForm): Record<string, unknown> {
  switch (type) {
    case "THRESHOLD":
      return condition(f);
    case "MULTI":
      return { match: f.match, conditions: f.conditions.map(condition) };
    case "RATE": {
      const out: Record<string, unknown> = { metric: f.metric.trim(), op: f.op, value: Number(f.value), window_seconds: Number(f.window_seconds) };
      const clear = optionalNumber(f.clear_value);
      if (clear !== undefined) out.clear_value = clear;
      return out;
    }
    case "ANOMALY": {
      const out: Record<string, unknown> = { metric: f.metric.trim(), window_seconds: Number(f.window_seconds) };
      for (const key of ["z_threshold", "min_samples", "clear_z"] as const) {
        const v = optionalNumber(f[key]);
        if (v !== undefined) out[key] = v;
      }
      return out;
    }
    case "GAP":
      return { metric: f.metric.trim(), gap_seconds: Number(f.gap_seconds) };
  }
}
