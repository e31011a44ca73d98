// Devices: search, filters (state, lifecycle, site, tag, group), sort, a virtualized list and bulk tag changes.
import { useInfiniteQuery, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useVirtualizer } from "@tanstack/react-virtual";
import { Plus, RefreshCw, Search, Upload } from "lucide-react";
import * as React from "react";
import { Link, useSearchParams } from "react-router";
import { PageHeader } from "@/components/page";
import { Empty, ErrorState, Loading } from "@/components/states";
import { DeviceStatusBadge, LifecycleBadge } from "@/components/status";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Input, Select } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { Checkbox } from "@/components/ui/misc";
import { useToast } from "@/components/ui/toast";
import { api, errorMessage } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import { formatNumber, relativeTime } from "@/lib/format";
import type { Device, DeviceGroup, Page, Site } from "@/lib/types";
import { useDebounced } from "@/lib/useDebounced";
import { RegisterDevice } from "@/pages/devices/RegisterDevice";

const PAGE = 250;
const ROW = 44;
const FILTERS = ["q", "state", "lifecycle", "site_id", "tag", "group_id", "sort"] as const;
const GRID = "grid grid-cols-[2rem_minmax(10rem,2fr)_7rem_minmax(6rem,1fr)_7.5rem] xl:grid-cols-[2rem_minmax(10rem,2fr)_7rem_minmax(6rem,1fr)_minmax(6rem,1fr)_minmax(8rem,1.4fr)_7.5rem] items-center gap-2 px-3";

export default function DeviceList() {
  const [params, setParams] = useSearchParams();
  const { isTenantAdmin } = useAuth();
  const toast = useToast();
  const queryClient = useQueryClient();
  const [text, setText] = React.useState(params.get("q") ?? "");
  const q = useDebounced(text);
  const [selected, setSelected] = React.useState<Set<string>>(new Set());
  const [registering, setRegistering] = React.useState(false);
  const [bulkTag, setBulkTag] = React.useState("");

  const filters = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) ?? ""])) as Record<(typeof FILTERS)[number], string>;
  filters.q = q;
  const setFilter = (key: string, value: string) => {
    const next = new URLSearchParams(params);
    if (value) next.set(key, value);
    else next.delete(key);
    setParams(next, { replace: true });
    setSelected(new Set());
  };
  React.useEffect(() => {
    if ((params.get("q") ?? "") !== q) setFilter("q", q);
  }, [q]);

  const sites = useQuery({ queryKey: ["sites"], queryFn: () => api<{ items: Site[] }>("/customer/sites") });
  const groups = useQuery({ queryKey: ["groups"], queryFn: () => api<{ items: DeviceGroup[] }>("/customer/device-groups") });

  const list = useInfiniteQuery({
    queryKey: ["devices", "list", filters],
    initialPageParam: 0,
    queryFn: ({ pageParam, signal }) =>
      api<Page<Device>>("/api/v2/devices", {
        query: { ...filters, sort: filters.sort || "device_id", limit: PAGE, offset: pageParam },
        signal,
      }),
    getNextPageParam: (last) => (last.offset + last.items.length < last.total ? last.offset + last.items.length : undefined),
  });
  const rows = React.useMemo(() => list.data?.pages.flatMap((p) => p.items) ?? [], [list.data]);
  const total = list.data?.pages[0]?.total ?? 0;

  const scrollRef = React.useRef<HTMLDivElement>(null);
  const virtualizer = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scrollRef.current,
    estimateSize: () => ROW,
    overscan: 12,
  });
  const items = virtualizer.getVirtualItems();
  const lastIndex = items.length ? items[items.length - 1].index : 0;
  React.useEffect(() => {
    if (lastIndex >= rows.length - 40 && list.hasNextPage && !list.isFetchingNextPage) void list.fetchNextPage();
  }, [lastIndex, rows.length, list]);

  const retag = useMutation({
    mutationFn: (change: { add?: string[]; remove?: string[] }) =>
      api<{ updated: number; skipped: string[] }>("/customer/devices/tags", {
        method: "POST",
        body: { device_ids: [...selected], add: change.add ?? [], remove: change.remove ?? [] },
      }),
    onSuccess: (r) => {
      toast({ title: `Tags changed on ${r.updated} devices`, description: r.skipped.length ? `skipped ${r.skipped.join(", ")}` : undefined, tone: "success" });
      setBulkTag("");
      void queryClient.invalidateQueries({ queryKey: ["devices"] });
    },
    onError: (e) => toast({ title: "Tags not changed", description: errorMessage(e), tone: "error" }),
  });

  const allSelected = rows.length > 0 && rows.every((r) => selected.has(r.device_id));
  const toggle = React.useCallback(
    (id: string) =>
      setSelected((s) => {
        const next = new Set(s);
        if (next.has(id)) next.delete(id);
        else next.add(id);
        return next;
      }),
    [],
  );

  return (
    <div className="flex h-full flex-col gap-3" data-page="devices">
      <PageHeader
        title="Devices"
        description={list.data ? `${formatNumber(total)} devices match` : undefined}
        className="mb-0"
        actions={
          <>
            <Button variant="outline" size="sm" onClick={() => void list.refetch()} aria-label="Refresh">
              <RefreshCw />
            </Button>
            {isTenantAdmin && (
              <>
                <Button variant="outline" size="sm" asChild>
                  <Link to="/devices/import">
                    <Upload /> Import CSV
                  </Link>
                </Button>
                <Button size="sm" onClick={() => setRegistering(true)}>
                  <Plus /> Register device
                </Button>
              </>
            )}
          </>
        }
      />
      <RegisterDevice open={registering} onOpenChange={setRegistering} />

      <Card className="grid gap-3 p-3 sm:grid-cols-2 lg:grid-cols-4 xl:grid-cols-7" role="search">
        <div className="relative sm:col-span-2">
          <Label htmlFor="device-search" className="sr-only">
            Search devices
          </Label>
          <Search className="pointer-events-none absolute top-2.5 left-2.5 size-4 text-muted-foreground" aria-hidden="true" />
          <Input id="device-search" placeholder="Search id or name" className="pl-8" value={text} onChange={(e) => setText(e.target.value)} />
        </div>
        <Select aria-label="State" value={filters.state} onChange={(e) => setFilter("state", e.target.value)}>
          <option value="">any state</option>
          {["ONLINE", "STALE", "OFFLINE", "UNKNOWN"].map((s) => (
            <option key={s}>{s}</option>
          ))}
        </Select>
        <Select aria-label="Lifecycle" value={filters.lifecycle} onChange={(e) => setFilter("lifecycle", e.target.value)}>
          <option value="">any lifecycle</option>
          {["ACTIVE", "DISABLED", "REVOKED", "DECOMMISSIONED"].map((s) => (
            <option key={s}>{s}</option>
          ))}
        </Select>
        <Select aria-label="Site" value={filters.site_id} onChange={(e) => setFilter("site_id", e.target.value)}>
          <option value="">any site</option>
          {sites.data?.items.map((s) => (
            <option key={s.site_id} value={s.site_id}>
              {s.name}
            </option>
          ))}
        </Select>
        <Select aria-label="Group" value={filters.group_id} onChange={(e) => setFilter("group_id", e.target.value)}>
          <option value="">any group</option>
          {groups.data?.items.map((g) => (
            <option key={g.group_id} value={g.group_id}>
              {g.name}
            </option>
          ))}
        </Select>
        <Input aria-label="Tag" placeholder="tag" defaultValue={filters.tag} onBlur={(e) => setFilter("tag", e.target.value.trim())} onKeyDown={(e) => e.key === "Enter" && setFilter("tag", (e.target as HTMLInputElement).value.trim())} />
        <Select aria-label="Sort" value={filters.sort} onChange={(e) => setFilter("sort", e.target.value)} className="sm:col-span-2 lg:col-span-1">
          <option value="">sort by id</option>
          <option value="name">name</option>
          <option value="-last_seen_at">last seen (newest)</option>
          <option value="status">status</option>
        </Select>
      </Card>

      {isTenantAdmin && selected.size > 0 && (
        <Card className="flex flex-wrap items-center gap-2 p-2 text-sm" aria-label="Bulk actions">
          <span className="px-1 font-medium">{selected.size} selected</span>
          <Input aria-label="Tag for selected devices" placeholder="tag" className="w-40" value={bulkTag} onChange={(e) => setBulkTag(e.target.value)} />
          <Button size="sm" variant="outline" disabled={!bulkTag.trim() || retag.isPending} onClick={() => retag.mutate({ add: [bulkTag.trim()] })}>
            Add tag
          </Button>
          <Button size="sm" variant="outline" disabled={!bulkTag.trim() || retag.isPending} onClick={() => retag.mutate({ remove: [bulkTag.trim()] })}>
            Remove tag
          </Button>
          <Button size="sm" variant="ghost" onClick={() => setSelected(new Set())}>
            Clear selection
          </Button>
        </Card>
      )}

      <Card className="flex min-h-[24rem] flex-1 flex-col overflow-hidden" role="table" aria-label="Devices" aria-rowcount={total}>
        <div role="row" className={`${GRID} h-9 border-b text-xs font-medium text-muted-foreground`}>
          <span role="columnheader">
            <Checkbox
              aria-label="Select all loaded devices"
              checked={allSelected}
              onCheckedChange={(v) => setSelected(v ? new Set(rows.map((r) => r.device_id)) : new Set())}
            />
          </span>
          <span role="columnheader">Device</span>
          <span role="columnheader">State</span>
          <span role="columnheader">Site</span>
          <span role="columnheader" className="hidden xl:block">
            Type
          </span>
          <span role="columnheader" className="hidden xl:block">
            Tags
          </span>
          <span role="columnheader">Last seen</span>
        </div>
        {list.isPending ? (
          <Loading label="Loading devices…" />
        ) : list.isError ? (
          <ErrorState error={list.error} onRetry={() => void list.refetch()} />
        ) : rows.length === 0 ? (
          <Empty title="No devices match" hint="Change the filters, or register a device." />
        ) : (
          <div ref={scrollRef} className="min-h-0 flex-1 overflow-y-auto" data-testid="device-scroller">
            <div style={{ height: virtualizer.getTotalSize(), position: "relative" }}>
              {items.map((v) => {
                const d = rows[v.index];
                return <DeviceRow key={d.device_id} device={d} index={v.index} start={v.start} selected={selected.has(d.device_id)} onToggle={toggle} />;
              })}
            </div>
            {list.isFetchingNextPage && <Loading label="Loading more…" className="p-2" />}
          </div>
        )}
      </Card>
    </div>
  );
}

/** One row of the virtualized list; memoized so scrolling renders only the rows that come into view. */
const DeviceRow = React.memo(function DeviceRow({
  device: d,
  index,
  start,
  selected,
  onToggle,
}: {
  device: Device;
  index: number;
  start: number;
  selected: boolean;
  onToggle: (id: string) => void;
}) {
  return (
    <div
      role="row"
      aria-rowindex={index + 2}
      data-device-row={d.device_id}
      className={`${GRID} absolute inset-x-0 border-b text-sm hover:bg-muted/50`}
      style={{ height: ROW, transform: `translateY(${start}px)` }}
    >
      <span role="cell">
        <input type="checkbox" className="size-4 accent-primary" aria-label={`Select ${d.device_id}`} checked={selected} onChange={() => onToggle(d.device_id)} />
      </span>
      <span role="cell" className="min-w-0 truncate">
        <Link className="font-medium hover:underline" to={`/devices/${encodeURIComponent(d.device_id)}`}>
          {d.device_id}
        </Link>
        {d.name && d.name !== d.device_id && <span className="ml-2 text-xs text-muted-foreground">{d.name}</span>}
        {d.lifecycle !== "ACTIVE" && (
          <span className="ml-2">
            <LifecycleBadge lifecycle={d.lifecycle} />
          </span>
        )}
      </span>
      <span role="cell">
        <DeviceStatusBadge status={d.state.status} />
      </span>
      <span role="cell" className="truncate text-muted-foreground">
        {d.site_id ?? "—"}
      </span>
      <span role="cell" className="hidden truncate text-muted-foreground xl:block">
        {d.device_type ?? "—"}
      </span>
      <span role="cell" className="hidden truncate text-xs text-muted-foreground xl:block">
        {d.tags.join(", ")}
      </span>
      <span role="cell" className="text-xs text-muted-foreground" title={d.state.last_seen_at ?? undefined}>
        {relativeTime(d.state.last_seen_at)}
      </span>
    </div>
  );
});
