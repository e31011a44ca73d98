// How a THRESHOLD rule would have fired on one device's last 24 h, from the downsampled history.
import { useQuery } from "@tanstack/react-query";
import * as React from "react";
import { TimeSeriesChart } from "@/components/charts";
import { Empty, ErrorState, Loading } from "@/components/states";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { api } from "@/lib/api";
import { formatShortTime } from "@/lib/format";
import type { History } from "@/lib/types";
import { breachingBuckets, type DefinitionForm, type RuleType } from "@/pages/rules/definition";
import { useDebounced } from "@/lib/useDebounced";

const POINTS = 288; // 5-minute buckets

export function RulePreview({ ruleType, def, deviceIds }: { ruleType: RuleType; def: DefinitionForm; deviceIds: string[] }) {
  const [device, setDevice] = React.useState(deviceIds[0] ?? "");
  const deviceId = useDebounced(device.trim(), 400);
  const metric = useDebounced(def.metric.trim(), 400);
  const value = Number(def.value);
  const comparable = ["GT", "GTE", "LT", "LTE"].includes(def.op) && def.value.trim() !== "" && Number.isFinite(value);
  const [until] = React.useState(() => Date.now());
  const history = useQuery({
    queryKey: ["preview", deviceId, metric, until],
    enabled: ruleType === "THRESHOLD" && !!deviceId && !!metric,
    queryFn: () =>
      api<History>(`/api/v2/devices/${encodeURIComponent(deviceId)}/telemetry/history`, {
        query: { metric, from: new Date(until - 86_400_000).toISOString(), to: new Date(until).toISOString(), points: POINTS },
      }),
  });
  const hits = React.useMemo(
    () => (history.data && comparable ? breachingBuckets(history.data.buckets, def.op, value) : []),
    [history.data, comparable, def.op, value],
  );
  const data = React.useMemo(() => {
    const b = history.data?.buckets ?? [];
    return {
      times: b.map((x) => new Date(x.time).getTime() / 1000),
      values: b.map((x) => x.avg),
      mins: b.map((x) => x.min),
      maxs: b.map((x) => x.max),
    };
  }, [history.data]);

  return (
    <Card className="content-start self-start">
      <CardHeader>
        <CardTitle>Preview: last 24 h</CardTitle>
        <CardDescription>
          {ruleType === "THRESHOLD"
            ? "How often the condition held on one device, in 5-minute buckets (bucket max for > and ≥, min for < and ≤). Hold time and hysteresis are not simulated."
            : "The preview covers THRESHOLD rules; other types are judged on raw telemetry windows by the evaluator."}
        </CardDescription>
      </CardHeader>
      {ruleType === "THRESHOLD" && (
        <CardContent className="grid gap-3">
          <Field label="Device" htmlFor="preview-device">
            <Input id="preview-device" placeholder="device id" value={device} onChange={(e) => setDevice(e.target.value)} />
          </Field>
          {!deviceId || !metric ? (
            <Empty title="Pick a device and a metric" />
          ) : history.isPending ? (
            <Loading />
          ) : history.isError ? (
            <ErrorState error={history.error} />
          ) : history.data.buckets.length === 0 ? (
            <Empty title="No numeric data in the last 24 h" />
          ) : (
            <>
              <TimeSeriesChart data={data} label={metric} guides={comparable ? [{ value, color: "#e5484d" }] : []} />
              <p className="text-sm" data-testid="preview-result">
                {comparable
                  ? hits.length
                    ? `Would have breached in ${hits.length} of ${history.data.buckets.length} buckets; first at ${formatShortTime(hits[0].time)}, last at ${formatShortTime(hits[hits.length - 1].time)}.`
                    : "Would not have fired in the last 24 h."
                  : "Give a numeric value with >, ≥, < or ≤ to see when it would have fired."}
              </p>
            </>
          )}
        </CardContent>
      )}
    </Card>
  );
}
