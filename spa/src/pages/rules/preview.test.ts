import { describe, expect, test } from "vitest";
import { EMPTY_DEFINITION } from "@/pages/rules/definition";
import { chartMetric, episodeAreas, previewRequest, previewSummary, type RulePreviewResult } from "@/pages/rules/preview";

const result = (episodes: RulePreviewResult["episodes"], samples = 120): RulePreviewResult => ({
  device_id: "freezer-7",
  rule_type: "THRESHOLD",
  from: "2026-11-22T12:00:00Z",
  to: "2026-11-23T12:00:00Z",
  samples_read: samples,
  episode_count: episodes.length,
  episodes,
  notes: [],
});

describe("rule preview", () => {
  test("the request carries the definition the API stores, the hold time and the device", () => {
    const f = { ...EMPTY_DEFINITION, metric: "temp_c", op: "GT", value: "30", clear_value: "28" };
    expect(previewRequest("THRESHOLD", f, "120", " freezer-7 ")).toEqual({
      rule_type: "THRESHOLD",
      definition: { metric: "temp_c", op: "GT", value: 30, clear_value: 28 },
      for_seconds: 120,
      device_id: "freezer-7",
    });
    expect(previewRequest("GAP", { ...f, gap_seconds: "600" }, "", "freezer-7")?.definition).toEqual({ metric: "temp_c", gap_seconds: 600 });
    expect(previewRequest("GAP", { ...f, gap_seconds: "600" }, "", "freezer-7")?.for_seconds).toBe(0);
  });

  test("nothing is previewed without a device or a metric", () => {
    const f = { ...EMPTY_DEFINITION, metric: "temp_c" };
    expect(previewRequest("THRESHOLD", f, "0", "  ")).toBeNull();
    expect(previewRequest("RATE", { ...f, metric: " " }, "0", "freezer-7")).toBeNull();
    const multi = { ...f, conditions: [{ metric: "", op: "GT", value: "1", clear_value: "" }, { metric: "door_open", op: "EQ", value: "true", clear_value: "" }] };
    expect(chartMetric("MULTI", multi)).toBe("door_open");
    expect(previewRequest("MULTI", multi, "0", "freezer-7")?.definition).toMatchObject({ match: "all" });
  });

  test("episodes shade the chart up to their close, or to the end of the range while open", () => {
    const r = result([
      { opened_at: "2026-11-23T01:00:00Z", closed_at: "2026-11-23T01:30:00Z", value: 31, observation: "temp_c is 31" },
      { opened_at: "2026-11-23T11:00:00Z", closed_at: null, value: 35, observation: "temp_c is 35" },
    ]);
    const at = (iso: string) => Date.parse(iso) / 1000;
    expect(episodeAreas(r)).toEqual([
      { from: at("2026-11-23T01:00:00Z"), to: at("2026-11-23T01:30:00Z") },
      { from: at("2026-11-23T11:00:00Z"), to: at("2026-11-23T12:00:00Z") },
    ]);
    expect(previewSummary(r)).toBe("Would have fired 2 times, still open at the end (120 samples read).");
    expect(previewSummary(result([], 1))).toBe("Would not have fired (1 sample read).");
  });
});
