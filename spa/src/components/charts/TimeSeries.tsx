// A uPlot time series: history plus live points appended as they arrive, redrawn without re-creating the plot.
import * as React from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { useTheme } from "@/lib/theme";

export interface SeriesData {
  /** Unix seconds, ascending. */
  times: number[];
  values: (number | null)[];
  /** Optional min/max band of downsampled history. */
  mins?: (number | null)[];
  maxs?: (number | null)[];
}

export interface TimeSeriesProps {
  data: SeriesData;
  label: string;
  height?: number;
  color?: string;
  /** Horizontal guide lines (e.g. a rule's threshold). */
  guides?: { value: number; color: string }[];
  /** Start of the x axis (unix seconds), so a chosen range shows whole even where data is missing. */
  xMin?: number;
  /** Shaded time spans (unix seconds), e.g. when a rule would have fired. */
  areas?: { from: number; to: number; color: string }[];
}

export default function TimeSeries({ data, label, height = 180, color = "#22d3ee", guides = [], xMin, areas = [] }: TimeSeriesProps) {
  const ref = React.useRef<HTMLDivElement>(null);
  const plot = React.useRef<uPlot | null>(null);
  const { theme } = useTheme();
  const hasBand = !!data.mins && !!data.maxs;
  const guideKey = JSON.stringify(guides);
  const areaKey = JSON.stringify(areas);

  React.useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const axisColor = theme === "dark" ? "#94a3b8" : "#475569";
    const gridColor = theme === "dark" ? "rgba(148,163,184,0.12)" : "rgba(71,85,105,0.12)";
    const axis = { stroke: axisColor, grid: { stroke: gridColor, width: 1 }, ticks: { stroke: gridColor, width: 1 } };
    const series: uPlot.Series[] = [{}, { label, stroke: color, width: 2, spanGaps: false, points: { show: false } }];
    if (hasBand) {
      series.push({ label: "min", stroke: "transparent", points: { show: false } });
      series.push({ label: "max", stroke: "transparent", points: { show: false } });
    }
    const opts: uPlot.Options = {
      width: el.clientWidth || 600,
      height,
      series,
      bands: hasBand ? [{ series: [3, 2], fill: `${color}22` }] : undefined,
      axes: [axis, { ...axis, size: 56 }],
      legend: { show: true, live: true },
      cursor: { drag: { x: true, y: false } },
      scales: {
        x: {
          time: true,
          range: (_u, min, max) => {
            const lo = xMin !== undefined ? Math.min(xMin, min ?? xMin) : min;
            const hi = Math.max(max ?? lo, Date.now() / 1000);
            return [lo, hi > lo ? hi : lo + 60];
          },
        },
      },
      hooks: {
        draw: [
          (u) => {
            for (const a of JSON.parse(areaKey) as { from: number; to: number; color: string }[]) {
              const left = Math.max(u.bbox.left, u.valToPos(a.from, "x", true));
              const right = Math.min(u.bbox.left + u.bbox.width, u.valToPos(a.to, "x", true));
              if (!Number.isFinite(left) || !Number.isFinite(right) || right <= left) continue;
              u.ctx.save();
              u.ctx.fillStyle = a.color;
              u.ctx.fillRect(left, u.bbox.top, Math.max(right - left, 1), u.bbox.height);
              u.ctx.restore();
            }
            for (const g of JSON.parse(guideKey) as { value: number; color: string }[]) {
              const y = u.valToPos(g.value, "y", true);
              if (!Number.isFinite(y)) continue;
              const ctx = u.ctx;
              ctx.save();
              ctx.strokeStyle = g.color;
              ctx.setLineDash([6, 4]);
              ctx.lineWidth = 1.5;
              ctx.beginPath();
              ctx.moveTo(u.bbox.left, y);
              ctx.lineTo(u.bbox.left + u.bbox.width, y);
              ctx.stroke();
              ctx.restore();
            }
          },
        ],
      },
    };
    const p = new uPlot(opts, toAligned(data, hasBand), el);
    plot.current = p;
    const observer = new ResizeObserver(() => p.setSize({ width: el.clientWidth, height }));
    observer.observe(el);
    return () => {
      observer.disconnect();
      p.destroy();
      plot.current = null;
    };
    // data is pushed by the effect below; the plot is rebuilt only when its shape changes
  }, [theme, height, color, label, hasBand, guideKey, areaKey, xMin]);

  React.useEffect(() => {
    plot.current?.setData(toAligned(data, hasBand));
  }, [data, hasBand]);

  return (
    <div
      ref={ref}
      role="img"
      aria-label={`${label} over time, ${data.times.length} points`}
      data-chart="uplot"
      data-points={data.times.length}
      data-last={data.values.length ? String(data.values[data.values.length - 1]) : ""}
      className="w-full"
    />
  );
}

function toAligned(data: SeriesData, band: boolean): uPlot.AlignedData {
  const base: (number | null)[][] = [data.times, data.values];
  if (band) base.push(data.mins ?? [], data.maxs ?? []);
  return base as uPlot.AlignedData;
}
