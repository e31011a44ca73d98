// A schedule over a time window: one row per layer (where it has the final say), overrides, and the final schedule.
import { formatShortTime } from "@/lib/format";
import type { Override, Shift } from "@/lib/types";

const PALETTE = ["#22d3ee", "#a78bfa", "#34d399", "#fbbf24", "#f472b6", "#60a5fa", "#fb7185", "#4ade80", "#f97316", "#2dd4bf"];

export function colorFor(key: string): string {
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

interface Block {
  key: string;
  user: string;
  userKey: string;
  start: number;
  end: number;
  note?: string;
}

function Row({ label, blocks, start, end, testId }: { label: string; blocks: Block[]; start: number; end: number; testId: string }) {
  const span = end - start;
  return (
    <div className="grid grid-cols-[7rem_1fr] items-center gap-2 md:grid-cols-[9rem_1fr]" data-testid={testId}>
      <div className="truncate text-xs font-medium text-muted-foreground" title={label}>
        {label}
      </div>
      <div className="relative h-8 rounded bg-muted/60">
        {blocks.map((b) => {
          const left = Math.max(0, (b.start - start) / span);
          const right = Math.min(1, (b.end - start) / span);
          if (right <= left) return null;
          return (
            <div
              key={b.key}
              className="absolute inset-y-0.5 overflow-hidden rounded px-1 text-[11px] leading-7 font-medium text-slate-950"
              style={{ left: `${left * 100}%`, width: `${(right - left) * 100}%`, background: colorFor(b.userKey) }}
              title={`${b.user}: ${formatShortTime(new Date(b.start).toISOString())} – ${formatShortTime(new Date(b.end).toISOString())}${b.note ? ` (${b.note})` : ""}`}
              data-shift-user={b.user}
            >
              <span className="truncate">{b.user}</span>
            </div>
          );
        })}
      </div>
    </div>
  );
}

export function ScheduleTimeline({
  start,
  end,
  shifts,
  overrides,
  layerNames,
  timezone,
}: {
  start: string;
  end: string;
  shifts: Shift[];
  overrides: Override[];
  layerNames: string[];
  timezone: string;
}) {
  const s = new Date(start).getTime();
  const e = new Date(end).getTime();
  const days: number[] = [];
  for (let t = s; t <= e; t += 86_400_000) days.push(t);
  const now = Date.now();
  const toBlock = (sh: Shift, i: number): Block => ({
    key: `${i}-${sh.starts_at}`,
    user: sh.user_name || sh.user_email,
    userKey: sh.user_id,
    start: new Date(sh.starts_at).getTime(),
    end: new Date(sh.ends_at).getTime(),
    note: sh.source === "OVERRIDE" ? "override" : sh.layer_name ?? undefined,
  });
  return (
    <div className="grid gap-2" aria-label="Schedule timeline" data-testid="schedule-timeline">
      <div className="grid grid-cols-[7rem_1fr] gap-2 md:grid-cols-[9rem_1fr]">
        <div />
        <div className="relative h-5 text-[10px] text-muted-foreground">
          {days.map((t) => (
            <span key={t} className="absolute -translate-x-1/2" style={{ left: `${((t - s) / (e - s)) * 100}%` }}>
              {new Date(t).toLocaleDateString(undefined, { weekday: "short", day: "2-digit", timeZone: timezone })}
            </span>
          ))}
        </div>
      </div>
      <div className="relative grid gap-1.5">
        {layerNames.map((name) => (
          <Row
            key={name}
            label={`Layer · ${name}`}
            testId={`timeline-layer-${name}`}
            start={s}
            end={e}
            blocks={shifts.filter((sh) => sh.source === "LAYER" && sh.layer_name === name).map(toBlock)}
          />
        ))}
        <Row
          label="Overrides"
          testId="timeline-overrides"
          start={s}
          end={e}
          blocks={overrides.map((o) => ({
            key: o.override_id,
            user: o.user_name || o.user_email,
            userKey: o.user_id,
            start: new Date(o.starts_at).getTime(),
            end: new Date(o.ends_at).getTime(),
            note: o.reason ?? undefined,
          }))}
        />
        <Row label="Final schedule" testId="timeline-final" start={s} end={e} blocks={shifts.map(toBlock)} />
        {now > s && now < e && (
          <div className="pointer-events-none absolute inset-y-0 grid grid-cols-[7rem_1fr] gap-2 md:grid-cols-[9rem_1fr]" style={{ left: 0, right: 0 }}>
            <div />
            <div className="relative">
              <div className="absolute inset-y-0 w-0.5 bg-destructive" style={{ left: `${((now - s) / (e - s)) * 100}%` }} title="now" />
            </div>
          </div>
        )}
      </div>
      <p className="text-xs text-muted-foreground">
        Layer rows show where each layer has the final say (a higher layer or an override wins elsewhere). Times in {timezone}.
      </p>
    </div>
  );
}
