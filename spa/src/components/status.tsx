// Badges for device status, lifecycle, alert status and severity.
import { Badge } from "@/components/ui/badge";
import { severityName } from "@/lib/format";
import { cn } from "@/lib/utils";

const DEVICE_TONE = { ONLINE: "ok", STALE: "warn", OFFLINE: "bad", UNKNOWN: "muted" } as const;

export function DeviceStatusBadge({ status }: { status: string }) {
  const tone = DEVICE_TONE[status as keyof typeof DEVICE_TONE] ?? "muted";
  return (
    <Badge variant={tone} data-status={status}>
      <span className="size-1.5 rounded-full bg-current" aria-hidden="true" />
      {status}
    </Badge>
  );
}

export function LifecycleBadge({ lifecycle }: { lifecycle: string }) {
  return <Badge variant={lifecycle === "ACTIVE" ? "secondary" : "muted"}>{lifecycle}</Badge>;
}

const SEV_CLASS: Record<number, string> = {
  1: "bg-sev-1/20 text-sev-1",
  2: "bg-sev-2/20 text-sev-2",
  3: "bg-sev-3/25 text-sev-3",
  4: "bg-sev-4/20 text-sev-4",
  5: "bg-sev-5/20 text-sev-5",
};

export function SeverityBadge({ severity }: { severity: number }) {
  return (
    <Badge variant="outline" className={cn("border-transparent", SEV_CLASS[severity])} title={`severity ${severity}`}>
      {severityName(severity)}
    </Badge>
  );
}

export function AlertStatusBadge({ status, silenced }: { status: string; silenced?: boolean }) {
  const tone = status === "OPEN" ? "bad" : status === "ACKNOWLEDGED" ? "warn" : "muted";
  return (
    <Badge variant={tone} data-alert-status={status}>
      {status}
      {silenced ? " · silenced" : ""}
    </Badge>
  );
}

export const SEVERITY_COLORS = ["#8b9bb4", "#3ba7e0", "#e0b03b", "#ec7a2f", "#e5484d"];
export const STATE_COLORS: Record<string, string> = {
  ONLINE: "#30a46c",
  STALE: "#e0b03b",
  OFFLINE: "#e5484d",
  UNKNOWN: "#8b9bb4",
};
