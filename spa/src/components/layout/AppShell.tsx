// The frame of every signed-in page: navigation by role, top bar (live status, theme, account), content.
import {
  Activity,
  BellOff,
  Building2,
  Calendar,
  Cpu,
  FileText,
  Gauge,
  Inbox,
  LayoutDashboard,
  LogOut,
  Map,
  Menu,
  Moon,
  Radio,
  ScrollText,
  Send,
  Server,
  ShieldAlert,
  Siren,
  Sun,
  Users,
  Workflow,
  Wrench,
  X,
} from "lucide-react";
import * as React from "react";
import { NavLink, Outlet, useLocation } from "react-router";
import { useChrome } from "@/components/layout/chrome";
import { Button } from "@/components/ui/button";
import {
  DropdownMenu,
  DropdownMenuContent,
  DropdownMenuItem,
  DropdownMenuLabel,
  DropdownMenuSeparator,
  DropdownMenuTrigger,
} from "@/components/ui/dropdown";
import { useAuth } from "@/lib/auth";
import { useLiveStatus } from "@/lib/live-react";
import { useTheme } from "@/lib/theme";
import { cn } from "@/lib/utils";

interface NavItem {
  to: string;
  label: string;
  icon: React.ComponentType<{ className?: string }>;
  end?: boolean;
}

const CUSTOMER_NAV: NavItem[] = [
  { to: "/", label: "Overview", icon: LayoutDashboard, end: true },
  { to: "/devices", label: "Devices", icon: Cpu },
  { to: "/alerts", label: "Alerts", icon: Inbox },
  { to: "/rules", label: "Alert rules", icon: Siren },
  { to: "/oncall", label: "On-call", icon: Calendar },
  { to: "/escalation", label: "Escalation", icon: Workflow },
  { to: "/maintenance", label: "Maintenance", icon: Wrench },
  { to: "/channels", label: "Channels", icon: Send },
  { to: "/deliveries", label: "Delivery log", icon: Radio },
  { to: "/reports", label: "Reports", icon: FileText },
  { to: "/sites", label: "Sites & groups", icon: Map },
];
const TENANT_ADMIN_NAV: NavItem[] = [
  { to: "/users", label: "Users", icon: Users },
  { to: "/audit", label: "Audit log", icon: ScrollText },
];
const OPERATOR_NAV: NavItem[] = [
  { to: "/operator/noc", label: "NOC", icon: Gauge },
  { to: "/operator/tenants", label: "Tenants", icon: Building2 },
  { to: "/operator/devices", label: "All devices", icon: Cpu },
  { to: "/operator/alerts", label: "All alerts", icon: Siren },
  { to: "/operator/quarantine", label: "Quarantine", icon: BellOff },
  { to: "/operator/system", label: "System", icon: Server },
];
const OPERATOR_ADMIN_NAV: NavItem[] = [{ to: "/operator/audit", label: "Operator audit", icon: ShieldAlert }];

function NavSection({ title, items, onNavigate }: { title: string; items: NavItem[]; onNavigate: () => void }) {
  return (
    <div className="grid gap-0.5">
      <p className="px-3 pt-3 pb-1 text-[11px] font-semibold tracking-wider text-muted-foreground uppercase">{title}</p>
      {items.map((item) => (
        <NavLink
          key={item.to}
          to={item.to}
          end={item.end}
          onClick={onNavigate}
          className={({ isActive }) =>
            cn(
              "flex items-center gap-2.5 rounded-md px-3 py-1.5 text-sm text-muted-foreground hover:bg-accent hover:text-accent-foreground",
              isActive && "bg-accent font-medium text-accent-foreground",
            )
          }
        >
          <item.icon className="size-4" />
          {item.label}
        </NavLink>
      ))}
    </div>
  );
}

function LiveIndicator() {
  const status = useLiveStatus();
  if (status === "idle") return null;
  const label = status === "open" ? "Live" : status === "connecting" ? "Connecting" : "Reconnecting";
  return (
    <span
      className="flex items-center gap-1.5 text-xs text-muted-foreground"
      data-live-status={status}
      title="Live updates over WebSocket"
    >
      <span className={cn("size-2 rounded-full", status === "open" ? "bg-ok" : "animate-pulse bg-warn")} aria-hidden="true" />
      {label}
    </span>
  );
}

export function AppShell() {
  const { claims, isOperator, isTenantUser, isTenantAdmin, logout } = useAuth();
  const { theme, setTheme } = useTheme();
  const { chromeless } = useChrome();
  const [open, setOpen] = React.useState(false);
  const location = useLocation();
  React.useEffect(() => setOpen(false), [location.pathname]);
  const close = () => setOpen(false);

  const nav = (
    <nav aria-label="Main" className="grid gap-1 p-2">
      {isTenantUser && <NavSection title="Fleet" items={CUSTOMER_NAV} onNavigate={close} />}
      {isTenantAdmin && <NavSection title="Tenant" items={TENANT_ADMIN_NAV} onNavigate={close} />}
      {isOperator && (
        <NavSection
          title="Operator"
          items={claims?.roles.includes("operator-admin") ? [...OPERATOR_NAV, ...OPERATOR_ADMIN_NAV] : OPERATOR_NAV}
          onNavigate={close}
        />
      )}
    </nav>
  );

  return (
    // The tree keeps its shape in TV mode (chrome hidden, not replaced), so the page inside is not mounted again.
    <div className="flex h-full">
      <a href="#main" className="sr-only focus:not-sr-only focus:absolute focus:z-50 focus:m-2 focus:rounded focus:bg-card focus:p-2">
        Skip to content
      </a>
      <aside className={cn("hidden w-56 shrink-0 overflow-y-auto border-r bg-card", !chromeless && "lg:block")} hidden={chromeless}>
        <div className="flex h-14 items-center gap-2 border-b px-4 font-semibold">
          <Activity className="size-5 text-primary" aria-hidden="true" /> Pulse
        </div>
        {nav}
      </aside>
      {open && !chromeless && (
        <div className="fixed inset-0 z-40 lg:hidden">
          <div className="absolute inset-0 bg-black/50" onClick={close} aria-hidden="true" />
          <aside className="absolute inset-y-0 left-0 w-64 overflow-y-auto border-r bg-card" aria-label="Navigation">
            <div className="flex h-14 items-center justify-between border-b px-4 font-semibold">
              <span className="flex items-center gap-2">
                <Activity className="size-5 text-primary" aria-hidden="true" /> Pulse
              </span>
              <Button variant="ghost" size="icon" onClick={close} aria-label="Close navigation">
                <X />
              </Button>
            </div>
            {nav}
          </aside>
        </div>
      )}
      <div className="flex min-w-0 flex-1 flex-col">
        <header className={cn("flex h-14 shrink-0 items-center gap-3 border-b bg-card px-4", chromeless && "hidden")}>
          <Button variant="ghost" size="icon" className="lg:hidden" onClick={() => setOpen(true)} aria-label="Open navigation">
            <Menu />
          </Button>
          <span className="text-sm text-muted-foreground">
            {claims?.tenant_id ? (
              <>
                Tenant <span className="font-medium text-foreground">{claims.tenant_id}</span>
              </>
            ) : (
              "Operator console"
            )}
          </span>
          <div className="ml-auto flex items-center gap-2">
            <LiveIndicator />
            <Button
              variant="ghost"
              size="icon"
              onClick={() => setTheme(theme === "dark" ? "light" : "dark")}
              aria-label={theme === "dark" ? "Switch to light theme" : "Switch to dark theme"}
            >
              {theme === "dark" ? <Sun /> : <Moon />}
            </Button>
            <DropdownMenu>
              <DropdownMenuTrigger asChild>
                <Button variant="outline" size="sm" aria-label="Account">
                  <span className="max-w-40 truncate">{claims?.email ?? "account"}</span>
                </Button>
              </DropdownMenuTrigger>
              <DropdownMenuContent>
                <DropdownMenuLabel>{claims?.roles.join(", ")}</DropdownMenuLabel>
                <DropdownMenuSeparator />
                <DropdownMenuItem onSelect={logout}>
                  <LogOut /> Sign out
                </DropdownMenuItem>
              </DropdownMenuContent>
            </DropdownMenu>
          </div>
        </header>
        <main id="main" className={cn("min-h-0 flex-1 overflow-y-auto", !chromeless && "p-4 md:p-6")}>
          <Outlet />
        </main>
      </div>
    </div>
  );
}
