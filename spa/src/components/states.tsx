// Loading, empty and error states, used by every page so they look and read the same.
import type { UseQueryResult } from "@tanstack/react-query";
import { CircleAlert, Inbox, Loader2 } from "lucide-react";
import type * as React from "react";
import { Button } from "@/components/ui/button";
import { ApiError, errorMessage } from "@/lib/api";
import { cn } from "@/lib/utils";

export function Loading({ label = "Loading…", className }: { label?: string; className?: string }) {
  return (
    <div role="status" aria-live="polite" className={cn("flex items-center justify-center gap-2 p-8 text-sm text-muted-foreground", className)}>
      <Loader2 className="size-4 animate-spin" aria-hidden="true" />
      <span>{label}</span>
    </div>
  );
}

export function Empty({
  title,
  hint,
  action,
  className,
}: {
  title: string;
  hint?: React.ReactNode;
  action?: React.ReactNode;
  className?: string;
}) {
  return (
    <div data-state="empty" className={cn("flex flex-col items-center justify-center gap-2 p-8 text-center", className)}>
      <Inbox className="size-8 text-muted-foreground" aria-hidden="true" />
      <p className="text-sm font-medium">{title}</p>
      {hint && <p className="max-w-md text-xs text-muted-foreground">{hint}</p>}
      {action}
    </div>
  );
}

export function ErrorState({ error, onRetry, className }: { error: unknown; onRetry?: () => void; className?: string }) {
  const requestId = error instanceof ApiError ? (error.details.request_id as string | undefined) : undefined;
  return (
    <div role="alert" data-state="error" className={cn("flex flex-col items-center justify-center gap-2 p-8 text-center", className)}>
      <CircleAlert className="size-8 text-destructive" aria-hidden="true" />
      <p className="text-sm font-medium">Something went wrong</p>
      <p className="max-w-md text-xs text-muted-foreground">{errorMessage(error)}</p>
      {requestId && <p className="font-mono text-[11px] text-muted-foreground">request id {requestId}</p>}
      {onRetry && (
        <Button variant="outline" size="sm" onClick={onRetry}>
          Try again
        </Button>
      )}
    </div>
  );
}

/** Renders the loading, error or empty state of a query, else `children(data)`. */
export function QueryView<T>({
  query,
  children,
  isEmpty,
  empty,
  loadingLabel,
}: {
  query: UseQueryResult<T>;
  children: (data: T) => React.ReactNode;
  isEmpty?: (data: T) => boolean;
  empty?: React.ReactNode;
  loadingLabel?: string;
}) {
  if (query.isPending) return <Loading label={loadingLabel} />;
  if (query.isError) return <ErrorState error={query.error} onRetry={() => void query.refetch()} />;
  if (isEmpty?.(query.data)) return <>{empty ?? <Empty title="Nothing here yet" />}</>;
  return <>{children(query.data)}</>;
}
