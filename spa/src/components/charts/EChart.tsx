// An ECharts canvas that follows its option, its container's size and the colour theme (tree-shaken ECharts).
import { BarChart, GaugeChart, HeatmapChart, LineChart, ScatterChart } from "echarts/charts";
import {
  GridComponent,
  LegendComponent,
  MarkLineComponent,
  TooltipComponent,
  VisualMapComponent,
} from "echarts/components";
import * as echarts from "echarts/core";
import { CanvasRenderer } from "echarts/renderers";
import * as React from "react";
import { useTheme } from "@/lib/theme";

echarts.use([
  BarChart,
  GaugeChart,
  HeatmapChart,
  LineChart,
  ScatterChart,
  GridComponent,
  LegendComponent,
  MarkLineComponent,
  TooltipComponent,
  VisualMapComponent,
  CanvasRenderer,
]);

export type EChartOption = echarts.EChartsCoreOption;

export interface EChartProps {
  option: EChartOption;
  className?: string;
  /** Accessible description of what the chart shows. */
  label: string;
  onClick?: (params: { data?: unknown; name?: string; seriesName?: string }) => void;
  /** Always draw in the dark theme (the NOC). */
  dark?: boolean;
}

export default function EChart({ option, className, label, onClick, dark }: EChartProps) {
  const ref = React.useRef<HTMLDivElement>(null);
  const chart = React.useRef<echarts.ECharts | null>(null);
  const { theme: appTheme } = useTheme();
  const theme = dark ? "dark" : appTheme;

  React.useEffect(() => {
    if (!ref.current) return;
    const c = echarts.init(ref.current, theme === "dark" ? "dark" : undefined, { renderer: "canvas" });
    chart.current = c;
    const observer = new ResizeObserver(() => c.resize());
    observer.observe(ref.current);
    return () => {
      observer.disconnect();
      c.dispose();
      chart.current = null;
    };
  }, [theme]);

  React.useEffect(() => {
    chart.current?.setOption({ backgroundColor: "transparent", animation: false, ...option }, { notMerge: false, lazyUpdate: true });
  }, [option, theme]);

  React.useEffect(() => {
    const c = chart.current;
    if (!c || !onClick) return;
    c.on("click", onClick as (p: unknown) => void);
    return () => {
      c.off("click");
    };
  }, [onClick, theme]);

  return <div ref={ref} role="img" aria-label={label} className={className} data-chart="echarts" />;
}
