import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen, waitFor } from "@testing-library/react";
import { createMemoryRouter, RouterProvider } from "react-router";
import { afterEach, expect, test, vi } from "vitest";
import { AuthProvider } from "@/lib/auth";
import DeviceList from "@/pages/devices/DeviceList";

afterEach(() => {
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});

const TOTAL = 10_000;

function device(i: number) {
  const id = `dev-${String(i).padStart(5, "0")}`;
  return {
    device_id: id, name: id, device_type: "sensor", site_id: null, tags: [], attributes: {}, lifecycle: "ACTIVE",
    heartbeat_interval_s: null, lat: null, lng: null, created_at: "", updated_at: "", decommissioned_at: null,
    state: { status: "ONLINE", last_seen_at: null, last_state_change_at: null, latest_metrics: {} },
  };
}

test("10,000 devices: the list knows them all but puts only a window of rows in the page", async () => {
  // jsdom has no layout: give every element a 600 px tall viewport so the list has a viewport to fill.
  vi.spyOn(HTMLElement.prototype, "clientHeight", "get").mockReturnValue(600);
  vi.spyOn(HTMLElement.prototype, "clientWidth", "get").mockReturnValue(800);
  const requests: string[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn<typeof fetch>(async (input) => {
      const url = new URL(String(input), "http://pulse.test");
      requests.push(url.pathname + url.search);
      if (url.pathname === "/api/v2/devices") {
        const offset = Number(url.searchParams.get("offset"));
        const limit = Number(url.searchParams.get("limit"));
        const items = Array.from({ length: Math.min(limit, TOTAL - offset) }, (_, k) => device(offset + k));
        return new Response(JSON.stringify({ items, total: TOTAL, limit, offset }), { status: 200 });
      }
      return new Response(JSON.stringify({ items: [] }), { status: 200 });
    }),
  );
  const router = createMemoryRouter([{ path: "/devices", element: <DeviceList /> }], { initialEntries: ["/devices?state=ONLINE"] });
  render(
    <QueryClientProvider client={new QueryClient()}>
      <AuthProvider signIn={{ method: "password" }}>
        <RouterProvider router={router} />
      </AuthProvider>
    </QueryClientProvider>,
  );
  expect(await screen.findByText("10,000 devices match")).toBeInTheDocument();
  await waitFor(() => expect(document.querySelectorAll("[data-device-row]").length).toBeGreaterThan(0));
  expect(screen.getByRole("table", { name: "Devices" })).toHaveAttribute("aria-rowcount", String(TOTAL));
  expect(document.querySelectorAll("[data-device-row]").length).toBeLessThan(60);
  const scroller = screen.getByTestId("device-scroller").firstElementChild as HTMLElement;
  expect(scroller.style.height).toBe(`${250 * 44}px`); // the first page is loaded, more as the list is scrolled
  const listCall = requests.find((r) => r.startsWith("/api/v2/devices"))!;
  expect(listCall).toContain("state=ONLINE");
  expect(listCall).toContain("limit=250");
});
