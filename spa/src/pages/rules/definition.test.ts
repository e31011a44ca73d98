import { describe, expect, test } from "vitest";
import { definitionToForm, EMPTY_DEFINITION, formToDefinition } from "@/pages/rules/definition";

describe("rule definitions", () => {
  test("each rule type's form becomes the definition the API documents", () => {
    const f = { ...EMPTY_DEFINITION, metric: " temp_c ", op: "GT", value: "30", clear_value: "28" };
    expect(formToDefinition("THRESHOLD", f)).toEqual({ metric: "temp_c", op: "GT", value: 30, clear_value: 28 });
    expect(formToDefinition("THRESHOLD", { ...f, op: "EQ", value: "true", clear_value: "" })).toEqual({ metric: "temp_c", op: "EQ", value: true });
    expect(formToDefinition("RATE", { ...f, window_seconds: "300" })).toEqual({ metric: "temp_c", op: "GT", value: 30, window_seconds: 300, clear_value: 28 });
    expect(formToDefinition("ANOMALY", { ...f, window_seconds: "3600", z_threshold: "3", min_samples: "", clear_z: "2" })).toEqual({
      metric: "temp_c",
      window_seconds: 3600,
      z_threshold: 3,
      clear_z: 2,
    });
    expect(formToDefinition("GAP", { ...f, gap_seconds: "600" })).toEqual({ metric: "temp_c", gap_seconds: 600 });
    expect(
      formToDefinition("MULTI", {
        ...f,
        match: "any",
        conditions: [
          { metric: "temp_c", op: "GT", value: "8", clear_value: "6" },
          { metric: "door_open", op: "EQ", value: "true", clear_value: "" },
        ],
      }),
    ).toEqual({
      match: "any",
      conditions: [
        { metric: "temp_c", op: "GT", value: 8, clear_value: 6 },
        { metric: "door_open", op: "EQ", value: true },
      ],
    });
  });

  test("a stored MULTI definition round-trips through the form", () => {
    const stored = { match: "all", conditions: [{ metric: "a", op: "LT", value: 1.5, clear_value: null }] };
    expect(formToDefinition("MULTI", definitionToForm("MULTI", stored))).toEqual({ match: "all", conditions: [{ metric: "a", op: "LT", value: 1.5 }] });
  });
});
