// One metric of a device: downsampled history of the chosen range plus the live points received since.
import { useQuery } from "@tanstack/react-query";
import * as React from "react";
import { type SeriesData, TimeSeriesChart } from "@/components/charts";
import { ErrorState } from "@/components/states";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { Skeleton } from "@/components/ui/misc";
import { api } from "@/lib/api";
import { formatValue } from "@/lib/format";
import type { History } from "@/lib/types";

export const RANGES = [
  { key: "15m", label: "15 min", seconds: 900 },
  { key: "1h", label: "1 h", seconds: 3600 },
  { key: "6h", label: "6 h", seconds: 6 * 3600 },
  { key: "24h", label: "24 h", seconds: 86400 },
  { key: "7d", label: "7 d", seconds: 7 * 86400 },
  { key: "30d", label: "30 d", seconds: 30 * 86400 },
] as const;
export type RangeKey = (typeof RANGES)[number]["key"];

const COLORS = ["#22d3ee", "#a78bfa", "#34d399", "#fbbf24", "#f472b6", "#60a5fa", "#fb7185", "#4ade80"];

/** History buckets then live points newer than the last bucket, as uPlot columns. */
export function mergeSeries(history: History | undefined, live: [number, number][], fromSec: number): SeriesData {
  const times: number[] = [];
  const values: (number | null)[] = [];
  const mins: (number | null)[] = [];
  const maxs: (number | null)[] = [];
  for (const b of history?.buckets ?? []) {
    times.push(new Date(b.time).getTime() / 1000);
    values.push(b.avg);
    mins.push(b.min);
    maxs.push(b.max);
  }
  for (const [t, v] of live) {
    if (t < fromSec || (times.length && t <= times[times.length - 1])) continue;
    times.push(t);
    values.push(v);
    mins.push(v);
    maxs.push(v);
  }
  return { times, values, mins, maxs };
}

export function MetricChart({
  deviceId,
  metric,
  range,
  live,
  index,
  until,
}: {
  deviceId: string;
  metric: string;
  range: RangeKey;
  live: [number, number][];
  index: number;
  until: number;
}) {
  const seconds = RANGES.find((r) => r.key === range)?.seconds ?? 3600;
  const from = new Date(until - seconds * 1000).toISOString();
  const to = new Date(until).toISOString();
  const history = useQuery({
    queryKey: ["history", deviceId, metric, range, until],
    queryFn: ({ signal }) =>
      api<History>(`/api/v2/devices/${encodeURIComponent(deviceId)}/telemetry/history`, {
        query: { metric, from, to, points: 300 },
        signal,
      }),
    staleTime: 60_000,
  });
  const data = React.useMemo(() => mergeSeries(history.data, live, (until - seconds * 1000) / 1000), [history.data, live, until, seconds]);
  const last = data.values.length ? data.values[data.values.length - 1] : null;
  return (
    <Card data-metric={metric}>
      <CardHeader className="flex-row items-baseline justify-between">
        <CardTitle className="font-mono">{metric}</CardTitle>
        <span className="text-sm tabular-nums text-muted-foreground" data-testid={`metric-last-${metric}`}>
          {formatValue(last)}
        </span>
      </CardHeader>
      <CardContent>
        {history.isPending ? (
          <Skeleton className="h-[180px] w-full" />
        ) : history.isError ? (
          <ErrorState error={history.error} onRetry={() => void history.refetch()} />
        ) : (
          <TimeSeriesChart data={data} label={metric} color={COLORS[index % COLORS.length]} xMin={(until - seconds * 1000) / 1000} />
        )}
      </CardContent>
    </Card>
  );
}
