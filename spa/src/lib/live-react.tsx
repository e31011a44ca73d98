// One live connection per signed-in user, shared by every page that follows something: a tenant user's follows
// devices, alerts and fleet counts; an operator's (no tenant) follows the noc topic.
import * as React from "react";
import { useAuth } from "@/lib/auth";
import { type LiveFrame, LiveClient, type LiveStatus, type LiveTopic, operatorTicket } from "@/lib/live";

const LiveContext = React.createContext<LiveClient | null>(null);

export function LiveProvider({ children, client }: { children: React.ReactNode; client?: LiveClient }) {
  const { isTenantUser, isOperator, session } = useAuth();
  const [live, setLive] = React.useState<LiveClient | null>(client ?? null);
  const tenant = session?.claims.tenant_id;
  React.useEffect(() => {
    if (client) return;
    if (!isTenantUser && !isOperator) {
      setLive(null);
      return;
    }
    const c = isTenantUser ? new LiveClient() : new LiveClient({ ticket: operatorTicket });
    c.start();
    setLive(c);
    return () => c.stop();
  }, [client, isTenantUser, isOperator, tenant]);
  return <LiveContext.Provider value={live}>{children}</LiveContext.Provider>;
}

/** Calls `onFrame` for every frame of the topic while mounted (no-op without a live connection). */
export function useLive(topic: LiveTopic | null, deviceId: string | undefined, onFrame: (frame: LiveFrame) => void) {
  const live = React.useContext(LiveContext);
  const handler = React.useRef(onFrame);
  handler.current = onFrame;
  React.useEffect(() => {
    if (!live || !topic || (topic === "device" && !deviceId)) return;
    return live.subscribe(topic, deviceId, (f) => handler.current(f));
  }, [live, topic, deviceId]);
}

export function useLiveStatus(): LiveStatus {
  const live = React.useContext(LiveContext);
  const [status, setStatus] = React.useState<LiveStatus>(live?.status ?? "idle");
  React.useEffect(() => {
    if (!live) {
      setStatus("idle");
      return;
    }
    setStatus(live.status);
    return live.onStatus(setStatus);
  }, [live]);
  return status;
}
