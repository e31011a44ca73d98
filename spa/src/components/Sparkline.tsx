// A tiny SVG line of a series (no chart library), for tables.
export function Sparkline({ values, color = "currentColor", label, width = 96, height = 24 }: { values: number[]; color?: string; label: string; width?: number; height?: number }) {
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`).join(" ");
  return (
    <svg width={width} height={height} role="img" aria-label={label} className="overflow-visible">
      <polyline points={points} fill="none" stroke={color} strokeWidth={1.5} strokeLinejoin="round" />
    </svg>
  );
}

export function HealthBar({ value, label }: { value: number | null; label: string }) {
  const pct = value === null ? 0 : Math.max(0, Math.min(100, value));
  const color = value === null ? "bg-muted" : pct >= 95 ? "bg-ok" : pct >= 80 ? "bg-warn" : "bg-bad";
  return (
    <div className="flex items-center gap-2" title={label}>
      <div className="h-2 w-20 overflow-hidden rounded bg-muted" role="meter" aria-label={label} aria-valuenow={value ?? undefined} aria-valuemin={0} aria-valuemax={100}>
        <div className={`h-full ${color}`} style={{ width: `${pct}%` }} />
      </div>
      <span className="w-12 text-right text-xs tabular-nums">{value === null ? "—" : `${pct.toFixed(0)} %`}</span>
    </div>
  );
}
