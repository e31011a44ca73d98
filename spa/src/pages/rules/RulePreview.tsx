// How a rule of any type would have fired on one device's last 24 h: the server replays the device's raw telemetry
// through the evaluator's own verdicts (POST /customer/alert-rules/preview); the chart adds the downsampled history.
import { useQuery } from "@tanstack/react-query";
import * as React from "react";
import { TimeSeriesChart } from "@/components/charts";
import { Empty, ErrorState, Loading } from "@/components/states";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { api } from "@/lib/api";
import { formatTime, formatValue } from "@/lib/format";
import type { History } from "@/lib/types";
import { useDebounced } from "@/lib/useDebounced";
import type { DefinitionForm, RuleType } from "@/pages/rules/definition";
import { chartMetric, episodeAreas, previewRequest, previewSummary, type RulePreviewResult } from "@/pages/rules/preview";

const POINTS = 288; // 5-minute buckets for the chart
const DEBOUNCE_MS = 500;
const EPISODE_COLOR = "rgba(229,72,77,0.18)";

export function RulePreview({
  ruleType,
  def,
  forSeconds,
  deviceIds,
}: {
  ruleType: RuleType;
  def: DefinitionForm;
  forSeconds: string;
  deviceIds: string[];
}) {
  const [device, setDevice] = React.useState(deviceIds[0] ?? "");
  const request = previewRequest(ruleType, def, forSeconds, device);
  const typed = request ? JSON.stringify(request) : "";
  const key = useDebounced(typed, DEBOUNCE_MS);
  const preview = useQuery({
    queryKey: ["rule-preview", key],
    enabled: key !== "",
    retry: false,
    queryFn: ({ signal }) =>
      api<RulePreviewResult>("/customer/alert-rules/preview", { method: "POST", body: JSON.parse(key) as unknown, signal }),
  });
  const result = preview.data;
  const metric = useDebounced(chartMetric(ruleType, def), DEBOUNCE_MS);
  const history = useQuery({
    queryKey: ["rule-preview-history", result?.device_id, metric, result?.from, result?.to],
    enabled: !!result && !!metric,
    retry: false,
    queryFn: () =>
      api<History>(`/api/v2/devices/${encodeURIComponent(result!.device_id)}/telemetry/history`, {
        query: { metric, from: result!.from, to: result!.to, points: POINTS },
      }),
  });
  const chart = React.useMemo(() => {
    const b = history.data?.buckets ?? [];
    return {
      times: b.map((x) => new Date(x.time).getTime() / 1000),
      values: b.map((x) => x.avg),
      mins: b.map((x) => x.min),
      maxs: b.map((x) => x.max),
    };
  }, [history.data]);
  const areas = React.useMemo(() => (result ? episodeAreas(result).map((a) => ({ ...a, color: EPISODE_COLOR })) : []), [result]);

  return (
    <Card className="content-start self-start">
      <CardHeader>
        <CardTitle>Preview: last 24 h</CardTitle>
        <CardDescription>
          When this rule would have opened alerts on one device: its raw telemetry replayed through the evaluator's own checks, hold time and
          hysteresis included.
        </CardDescription>
      </CardHeader>
      <CardContent className="grid gap-3">
        <Field label="Device" htmlFor="preview-device">
          <Input id="preview-device" placeholder="device id" value={device} onChange={(e) => setDevice(e.target.value)} />
        </Field>
        {!request ? (
          <Empty title="Pick a device and a metric" />
        ) : key !== typed || preview.isPending ? (
          <Loading label="Replaying telemetry…" />
        ) : preview.isError ? (
          <ErrorState error={preview.error} onRetry={() => void preview.refetch()} />
        ) : (
          <PreviewResult result={preview.data} metric={metric} chart={history.data?.buckets.length ? chart : null} areas={areas} />
        )}
      </CardContent>
    </Card>
  );
}

function PreviewResult({
  result,
  metric,
  chart,
  areas,
}: {
  result: RulePreviewResult;
  metric: string;
  chart: React.ComponentProps<typeof TimeSeriesChart>["data"] | null;
  areas: { from: number; to: number; color: string }[];
}) {
  if (result.samples_read === 0 && result.episodes.length === 0) {
    return <Empty title="No telemetry with this metric in the range" hint={`${formatTime(result.from)} – ${formatTime(result.to)}`} />;
  }
  return (
    <div className="grid gap-3">
      <p className="text-sm" data-testid="preview-result" aria-live="polite">
        {previewSummary(result)}
      </p>
      {chart && <TimeSeriesChart data={chart} label={metric} areas={areas} xMin={Date.parse(result.from) / 1000} />}
      {result.episodes.length > 0 && (
        <ol aria-label="Episodes the rule would have opened" className="grid gap-2 text-sm" data-testid="preview-episodes">
          {result.episodes.map((e) => (
            <li key={e.opened_at} className="rounded-md border p-2">
              <p className="font-medium">
                <time dateTime={e.opened_at}>{formatTime(e.opened_at)}</time>
                {" – "}
                {e.closed_at ? <time dateTime={e.closed_at}>{formatTime(e.closed_at)}</time> : "still open"}
              </p>
              <p className="text-xs text-muted-foreground">{e.observation || formatValue(e.value)}</p>
            </li>
          ))}
        </ol>
      )}
      {result.notes.length > 0 && (
        <details className="text-xs text-muted-foreground">
          <summary className="cursor-pointer">What the preview leaves out</summary>
          <ul className="mt-1 list-disc pl-4">
            {result.notes.map((n) => (
              <li key={n}>{n}</li>
            ))}
          </ul>
        </details>
      )}
    </div>
  );
}
