import { describe, expect, it } from "vitest";
import { alertsCsv, csvCell } from "./reportData";

describe("alerts CSV", () => {
  it("keeps spreadsheets from evaluating text as a formula", () => {
    expect(csvCell("=HYPERLINK(\"http://x\")")).toBe("\"'=HYPERLINK(\"\"http://x\"\")\"");
    expect(csvCell("-5")).toBe("'-5");
    expect(csvCell("@SUM(A1)")).toBe("'@SUM(A1)");
    expect(csvCell(-5)).toBe("-5");
    expect(csvCell("pump-01")).toBe("pump-01");
  });

  it("writes a device id that looks like a formula as text", () => {
    const csv = alertsCsv([{ alert_id: "a1", opened_at: "2026-11-23T00:00:00Z", acknowledged_at: null, closed_at: null,
      status: "OPEN", severity: 4, alert_type: "RULE", device_id: "+cmd", title: "hot, very" } as never]);
    expect(csv.split("\n")[1]).toBe("a1,2026-11-23T00:00:00Z,,,OPEN,4,RULE,'+cmd,\"hot, very\"");
  });
});
