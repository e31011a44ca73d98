import { describe, expect, test } from "vitest";
import { liveFeedItems } from "@/pages/operator/nocData";

describe("NOC live feed", () => {
  const now = Date.parse("2026-11-23T03:00:00Z");

  test("an alert event is a line naming the tenant, the alert and what happened; repeats are left out", () => {
    const opened = liveFeedItems(
      { type: "alert", alert_id: "a1", event_kind: "OPENED", severity: 5, status: "OPEN", title: "Pressure high", device_id: "p1", tenant_id: "acme" },
      now,
    );
    expect(opened).toEqual([{ id: `a1:OPENED:${now}`, at: now, tone: "bad", text: "acme · Pressure high opened" }]);
    const closed = liveFeedItems({ type: "alert", alert_id: "a1", event_kind: "CLOSED", severity: 5, status: "CLOSED", title: "Pressure high", device_id: "p1", tenant_id: "acme" }, now);
    expect(closed[0].tone).toBe("ok");
    expect(liveFeedItems({ type: "alert", alert_id: "a1", event_kind: "UPDATED", severity: 5, status: "OPEN", title: "x", device_id: null, tenant_id: "acme" }, now)).toEqual([]);
  });

  test("device transitions are summed up per status", () => {
    const devices: [string, string, string][] = [
      ["acme", "d1", "OFFLINE"], ["acme", "d2", "OFFLINE"], ["beta", "d3", "OFFLINE"], ["beta", "d4", "OFFLINE"], ["acme", "d5", "ONLINE"],
    ];
    const lines = liveFeedItems({ type: "device_states", changed_at: "2026-11-23T03:00:00Z", devices }, now);
    expect(lines.map((l) => [l.tone, l.text])).toEqual([
      ["bad", "4 devices offline: acme/d1, acme/d2, beta/d3 and 1 more"],
      ["ok", "acme/d5 is online"],
    ]);
  });
});
