// Chart components loaded on demand, with a placeholder of the same size while their library loads.
import { lazy, Suspense } from "react";
import type { EChartProps } from "@/components/charts/EChart";
import type { TimeSeriesProps } from "@/components/charts/TimeSeries";
import { Skeleton } from "@/components/ui/misc";

const EChartLazy = lazy(() => import("@/components/charts/EChart"));
const TimeSeriesLazy = lazy(() => import("@/components/charts/TimeSeries"));

export function Chart(props: EChartProps) {
  return (
    <Suspense fallback={<Skeleton className={props.className} />}>
      <EChartLazy {...props} />
    </Suspense>
  );
}

export function TimeSeriesChart(props: TimeSeriesProps) {
  return (
    <Suspense fallback={<Skeleton className="w-full" />}>
      <TimeSeriesLazy {...props} />
    </Suspense>
  );
}

export type { EChartOption } from "@/components/charts/EChart";
export type { SeriesData } from "@/components/charts/TimeSeries";
