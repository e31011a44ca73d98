// The server-side rule preview (POST /customer/alert-rules/preview): its request from the editor's form, its answer.
import { type DefinitionForm, formToDefinition, type RuleType } from "@/pages/rules/definition";

export interface PreviewEpisode {
  opened_at: string;
  /** null: still open at the end of the range. */
  closed_at: string | null;
  value: unknown;
  observation: string;
}

export interface RulePreviewResult {
  device_id: string;
  rule_type: RuleType;
  from: string;
  to: string;
  samples_read: number;
  episode_count: number;
  episodes: PreviewEpisode[];
  notes: string[];
}

export interface PreviewRequest {
  rule_type: RuleType;
  definition: Record<string, unknown>;
  for_seconds: number;
  device_id: string;
}

/** The metric the preview chart shows: the rule's metric, or a MULTI rule's first named one. */
export function chartMetric(type: RuleType, f: DefinitionForm): string {
  if (type === "MULTI") return f.conditions.map((c) => c.metric.trim()).find((m) => m) ?? "";
  return f.metric.trim();
}

/** The preview request for the form as it stands, or null while there is nothing to preview (no device, no metric).
 * Everything else is sent as typed: the server validates it and names a bad field. */
export function previewRequest(type: RuleType, f: DefinitionForm, forSeconds: string, deviceId: string): PreviewRequest | null {
  const device = deviceId.trim();
  if (!device || !chartMetric(type, f)) return null;
  const hold = forSeconds.trim() === "" ? 0 : Number(forSeconds);
  return { rule_type: type, definition: formToDefinition(type, f), for_seconds: hold, device_id: device };
}

/** Episodes as [start, end] unix seconds for shading the chart; an open episode runs to the end of the range. */
export function episodeAreas(result: RulePreviewResult): { from: number; to: number }[] {
  const end = Date.parse(result.to) / 1000;
  return result.episodes.map((e) => ({
    from: Date.parse(e.opened_at) / 1000,
    to: e.closed_at ? Date.parse(e.closed_at) / 1000 : end,
  }));
}

/** One line about the outcome, with the counts. */
export function previewSummary(result: RulePreviewResult): string {
  const samples = `${result.samples_read} ${result.samples_read === 1 ? "sample" : "samples"} read`;
  if (result.episode_count === 0) return `Would not have fired (${samples}).`;
  const open = result.episodes.filter((e) => e.closed_at === null).length;
  const times = result.episode_count === 1 ? "once" : `${result.episode_count} times`;
  return `Would have fired ${times}${open ? `, still open at the end` : ""} (${samples}).`;
}
