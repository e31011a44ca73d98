// Live updates over WS /api/v2/ws: one-time ticket, subscriptions kept across reconnects (docs/api-live.md).
import { api } from "@/lib/api";

export type LiveTopic = "device" | "alerts" | "fleet" | "noc";

export type LiveFrame =
  | { type: "telemetry"; device_id: string; metrics: Record<string, unknown>; time: string }
  | { type: "device_state"; device_id: string; status: string; changed_at: string | null }
  | {
      type: "alert";
      alert_id: string;
      event_kind: string;
      severity: number;
      status: string;
      title: string;
      device_id: string | null;
      /** Present on the operators' noc topic only. */
      tenant_id?: string;
    }
  | { type: "device_states"; changed_at: string | null; devices: [string, string, string][] }
  | {
      type: "fleet";
      counts: {
        devices: number;
        online: number;
        stale: number;
        offline: number;
        unknown: number;
        open_alerts: number;
        acknowledged_alerts: number;
      };
    }
  | { type: "lagged"; dropped: number }
  | { type: "error"; code: string; message: string; field?: string }
  | { type: "subscribed" | "unsubscribed"; topic: LiveTopic; device_id?: string }
  | { type: "pong" };

export type LiveStatus = "idle" | "connecting" | "open" | "reconnecting";
type Listener = (frame: LiveFrame) => void;

interface Subscription {
  message: { op: "subscribe"; topic: LiveTopic; device_id?: string };
  listeners: Set<Listener>;
}

export interface LiveOptions {
  /** Asks for a ticket (default POST /api/v2/ws/ticket; operators use operatorTicket). */
  ticket?: () => Promise<string>;
  /** Opens a socket (tests pass a fake). */
  socket?: (url: string) => WebSocket;
  url?: (ticket: string) => string;
}

function keyOf(topic: LiveTopic, deviceId?: string): string {
  return topic === "device" ? `device:${deviceId}` : topic;
}

function frameKey(frame: LiveFrame): string | null {
  switch (frame.type) {
    case "telemetry":
    case "device_state":
      return `device:${frame.device_id}`;
    case "alert":
      return frame.tenant_id === undefined ? "alerts" : "noc";
    case "device_states":
      return "noc";
    case "fleet":
      return "fleet";
    default:
      return null;
  }
}

export class LiveClient {
  private ws: WebSocket | null = null;
  private subs = new Map<string, Subscription>();
  private statusListeners = new Set<(s: LiveStatus) => void>();
  private retry = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private running = false;
  status: LiveStatus = "idle";

  constructor(private readonly options: LiveOptions = {}) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    void this.connect();
  }

  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, "signed out");
    this.setStatus("idle");
  }

  onStatus(listener: (s: LiveStatus) => void): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  /** Follows a topic until the returned function is called; the server is told when the last listener leaves. */
  subscribe(topic: LiveTopic, deviceId: string | undefined, listener: Listener): () => void {
    const key = keyOf(topic, deviceId);
    let sub = this.subs.get(key);
    if (!sub) {
      const message = topic === "device" ? { op: "subscribe" as const, topic, device_id: deviceId } : { op: "subscribe" as const, topic };
      sub = { message, listeners: new Set() };
      this.subs.set(key, sub);
      this.send(sub.message);
    }
    sub.listeners.add(listener);
    return () => {
      const current = this.subs.get(key);
      if (!current) return;
      current.listeners.delete(listener);
      if (current.listeners.size === 0) {
        this.subs.delete(key);
        this.send({ ...current.message, op: "unsubscribe" });
      }
    };
  }

  private setStatus(status: LiveStatus): void {
    this.status = status;
    for (const listener of this.statusListeners) listener(status);
  }

  private send(message: object): void {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  private async connect(): Promise<void> {
    if (!this.running) return;
    this.setStatus(this.retry === 0 ? "connecting" : "reconnecting");
    let ticket: string;
    try {
      ticket = this.options.ticket
        ? await this.options.ticket()
        : (await api<{ ticket: string }>("/api/v2/ws/ticket", { method: "POST" })).ticket;
    } catch {
      this.scheduleReconnect();
      return;
    }
    if (!this.running) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const url = this.options.url?.(ticket) ?? `${proto}//${location.host}/api/v2/ws?ticket=${encodeURIComponent(ticket)}`;
    const ws = this.options.socket ? this.options.socket(url) : new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.retry = 0;
      this.setStatus("open");
      for (const sub of this.subs.values()) this.send(sub.message);
    };
    ws.onmessage = (event: MessageEvent) => {
      if (this.ws !== ws || typeof event.data !== "string") return;
      let frame: LiveFrame;
      try {
        frame = JSON.parse(event.data) as LiveFrame;
      } catch {
        return;
      }
      this.dispatch(frame);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.scheduleReconnect();
    };
  }

  private dispatch(frame: LiveFrame): void {
    const key = frameKey(frame);
    if (key) {
      for (const listener of this.subs.get(key)?.listeners ?? []) listener(frame);
    } else if (frame.type === "lagged") {
      // Frames were dropped: every follower should refetch what it shows.
      for (const sub of this.subs.values()) for (const listener of sub.listeners) listener(frame);
    }
  }

  private scheduleReconnect(): void {
    if (!this.running) return;
    this.setStatus("reconnecting");
    const delay = Math.min(30_000, 500 * 2 ** this.retry);
    this.retry += 1;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.connect();
    }, delay);
  }
}

/** An operator's ticket (POST /operator/live/ticket): the socket may follow the noc topic only. */
export async function operatorTicket(): Promise<string> {
  return (await api<{ ticket: string }>("/operator/live/ticket", { method: "POST" })).ticket;
}
