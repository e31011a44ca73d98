import { render, screen, within } from "@testing-library/react";
import { expect, test } from "vitest";
import type { Override, Shift } from "@/lib/types";
import { pagedSummary } from "@/pages/alerts/AlertTimeline";
import { ScheduleTimeline } from "@/pages/oncall/ScheduleTimeline";

const shift = (user: string, layer: string | null, start: string, end: string, source: "LAYER" | "OVERRIDE" = "LAYER"): Shift => ({
  user_id: user,
  user_email: `${user}@example.com`,
  user_name: user,
  source,
  layer_id: layer,
  layer_name: layer,
  override_id: source === "OVERRIDE" ? "o1" : null,
  reason: null,
  starts_at: start,
  ends_at: end,
});

test("layers, overrides and the final schedule each get a row with their shifts", () => {
  const shifts = [
    shift("Ada", "Primary", "2026-03-16T00:00:00Z", "2026-03-17T00:00:00Z"),
    shift("Bob", null, "2026-03-17T00:00:00Z", "2026-03-17T12:00:00Z", "OVERRIDE"),
    shift("Cy", "Secondary", "2026-03-17T12:00:00Z", "2026-03-18T00:00:00Z"),
  ];
  const overrides: Override[] = [
    { override_id: "o1", user_id: "Bob", user_email: "bob@example.com", user_name: "Bob", starts_at: "2026-03-17T00:00:00Z", ends_at: "2026-03-17T12:00:00Z", reason: "swap", created_by: null },
  ];
  render(<ScheduleTimeline start="2026-03-16T00:00:00Z" end="2026-03-18T00:00:00Z" shifts={shifts} overrides={overrides} layerNames={["Secondary", "Primary"]} timezone="UTC" />);
  const names = (id: string) => within(screen.getByTestId(id)).queryAllByText(/.+/).map((e) => e.getAttribute("data-shift-user") ?? e.parentElement?.getAttribute("data-shift-user")).filter(Boolean);
  expect(names("timeline-layer-Primary")).toEqual(["Ada"]);
  expect(names("timeline-layer-Secondary")).toEqual(["Cy"]);
  expect(names("timeline-overrides")).toEqual(["Bob"]);
  expect(names("timeline-final")).toEqual(["Ada", "Bob", "Cy"]);
  const ada = screen.getByTestId("timeline-final").querySelector('[data-shift-user="Ada"]') as HTMLElement;
  expect(ada.style.left).toBe("0%");
  expect(ada.style.width).toBe("50%");
});

test("a PAGED event says who was paged, through which schedule layer and how", () => {
  expect(
    pagedSummary({
      level: 1,
      user_name: "Ada",
      via: { type: "schedule", schedule_name: "Ops EU", layer_name: "Primary", source: "LAYER" },
      contacts: [
        { kind: "EMAIL", delay_minutes: 0 },
        { kind: "SLACK", delay_minutes: 5 },
      ],
    }),
  ).toBe("Paged Ada via schedule Ops EU, layer Primary (level 1); EMAIL, SLACK after 5 min");
});
