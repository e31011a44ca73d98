// Device credentials as returned once by create/rotate: shown with copy buttons and a warning they will not show again.
import { Check, Copy } from "lucide-react";
import * as React from "react";
import { Button } from "@/components/ui/button";
import type { Credentials } from "@/lib/types";

export function CopyButton({ value, label }: { value: string; label: string }) {
  const [copied, setCopied] = React.useState(false);
  return (
    <Button
      variant="outline"
      size="sm"
      aria-label={`Copy ${label}`}
      onClick={async () => {
        try {
          await navigator.clipboard.writeText(value);
        } catch {
          const area = document.createElement("textarea");
          area.value = value;
          document.body.appendChild(area);
          area.select();
          document.execCommand("copy");
          area.remove();
        }
        setCopied(true);
        setTimeout(() => setCopied(false), 1500);
      }}
    >
      {copied ? <Check /> : <Copy />}
      {copied ? "Copied" : "Copy"}
    </Button>
  );
}

function Secret({ label, value, testId }: { label: string; value: string; testId: string }) {
  return (
    <div className="grid gap-1">
      <p className="text-xs font-medium text-muted-foreground">{label}</p>
      <div className="flex items-center gap-2">
        <code data-testid={testId} className="min-w-0 flex-1 truncate rounded bg-muted px-2 py-1.5 font-mono text-xs">
          {value}
        </code>
        <CopyButton value={value} label={label} />
      </div>
    </div>
  );
}

export function CredentialsView({ credentials }: { credentials: Credentials }) {
  const m = credentials.mqtt;
  return (
    <div className="grid gap-3" data-credentials={credentials.device_id}>
      <p role="alert" className="rounded-md border border-warn/50 bg-warn/10 p-2 text-sm">
        Copy these now: Pulse keeps only their hashes and will not show them again. Rotate the credentials if they are lost.
      </p>
      <Secret label="Provision token (HTTP ingest)" value={credentials.provision_token} testId="provision-token" />
      <Secret label="MQTT username" value={m.username} testId="mqtt-username" />
      <Secret label="MQTT password" value={m.password} testId="mqtt-password" />
      <Secret label="MQTT client id" value={m.client_id} testId="mqtt-client-id" />
      <Secret label="Topic prefix" value={m.topic_prefix} testId="mqtt-topic-prefix" />
      {m.host && (
        <p className="text-xs text-muted-foreground">
          Broker {m.host}:{m.port}
        </p>
      )}
    </div>
  );
}
