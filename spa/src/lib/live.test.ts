import { describe, expect, test } from "vitest";
import { LiveClient, type LiveFrame } from "@/lib/live";

class FakeSocket {
  static all: FakeSocket[] = [];
  sent: unknown[] = [];
  readyState = 0;
  onopen: (() => void) | null = null;
  onmessage: ((e: { data: string }) => void) | null = null;
  onclose: (() => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.readyState = 3;
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  push(frame: object) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
}

const flush = () => new Promise((r) => setTimeout(r, 0));

describe("live client", () => {
  test("subscribes with a ticket, routes frames by device, and subscribes again after a reconnect", async () => {
    FakeSocket.all = [];
    let tickets = 0;
    const client = new LiveClient({
      ticket: async () => `t${++tickets}`,
      socket: (url) => new FakeSocket(url) as unknown as WebSocket,
      url: (t) => `ws://test/api/v2/ws?ticket=${t}`,
    });
    const pump: LiveFrame[] = [];
    const other: LiveFrame[] = [];
    const stop = client.subscribe("device", "pump-7", (f) => pump.push(f));
    client.subscribe("device", "fan-1", (f) => other.push(f));
    client.start();
    await flush();
    const first = FakeSocket.all[0];
    expect(first.url).toBe("ws://test/api/v2/ws?ticket=t1");
    first.open();
    expect(first.sent).toEqual([
      { op: "subscribe", topic: "device", device_id: "pump-7" },
      { op: "subscribe", topic: "device", device_id: "fan-1" },
    ]);
    first.push({ type: "telemetry", device_id: "pump-7", metrics: { temp_c: 3 }, time: "2026-01-01T00:00:00Z" });
    expect(pump).toHaveLength(1);
    expect(other).toHaveLength(0);

    stop();
    expect(first.sent.at(-1)).toEqual({ op: "unsubscribe", topic: "device", device_id: "pump-7" });

    first.onclose?.(); // the server went away: a new ticket, a new socket, the remaining subscription again
    await new Promise((r) => setTimeout(r, 600));
    const second = FakeSocket.all[1];
    expect(second.url).toBe("ws://test/api/v2/ws?ticket=t2");
    second.open();
    expect(second.sent).toEqual([{ op: "subscribe", topic: "device", device_id: "fan-1" }]);
    client.stop();
  });

  test("an operator's socket routes every tenant's alert events and device transitions to the noc topic", async () => {
    FakeSocket.all = [];
    const client = new LiveClient({
      ticket: async () => "op",
      socket: (url) => new FakeSocket(url) as unknown as WebSocket,
      url: (t) => `ws://test/api/v2/ws?ticket=${t}`,
    });
    const noc: LiveFrame[] = [];
    const alerts: LiveFrame[] = [];
    client.subscribe("noc", undefined, (f) => noc.push(f));
    client.subscribe("alerts", undefined, (f) => alerts.push(f));
    client.start();
    await flush();
    const ws = FakeSocket.all[0];
    ws.open();
    expect(ws.sent[0]).toEqual({ op: "subscribe", topic: "noc" });
    ws.push({ type: "alert", alert_id: "a1", event_kind: "OPENED", severity: 5, status: "OPEN", title: "hot", device_id: "d1", tenant_id: "acme" });
    ws.push({ type: "device_states", changed_at: "2026-01-01T00:00:00Z", devices: [["acme", "d1", "OFFLINE"]] });
    ws.push({ type: "alert", alert_id: "a2", event_kind: "OPENED", severity: 3, status: "OPEN", title: "cold", device_id: "d2" });
    expect(noc.map((f) => f.type)).toEqual(["alert", "device_states"]);
    expect(alerts).toHaveLength(1); // a tenant socket's alert frame (no tenant_id) stays on the alerts topic
    client.stop();
  });
});
