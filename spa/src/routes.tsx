// Routes of the app under /app; pages load on demand, so chart libraries load only with the pages that draw.
import { lazy, Suspense } from "react";
import type * as React from "react";
import { createBrowserRouter, Navigate, Outlet, useLocation, useRouteError } from "react-router";
import { AppShell } from "@/components/layout/AppShell";
import { ErrorState, Loading } from "@/components/states";
import { useAuth } from "@/lib/auth";
import { type Claims, isOperator, isTenantUser } from "@/lib/session";

const Login = lazy(() => import("@/pages/Login"));
const AuthCallback = lazy(() => import("@/pages/AuthCallback"));
const Overview = lazy(() => import("@/pages/Overview"));
const DeviceList = lazy(() => import("@/pages/devices/DeviceList"));
const DeviceDetail = lazy(() => import("@/pages/devices/DeviceDetail"));
const DeviceImport = lazy(() => import("@/pages/devices/DeviceImport"));
const AlertInbox = lazy(() => import("@/pages/alerts/AlertInbox"));
const Rules = lazy(() => import("@/pages/rules/Rules"));
const RuleEditor = lazy(() => import("@/pages/rules/RuleEditor"));
const Schedules = lazy(() => import("@/pages/oncall/Schedules"));
const ScheduleDetail = lazy(() => import("@/pages/oncall/ScheduleDetail"));
const Policies = lazy(() => import("@/pages/oncall/Policies"));
const Maintenance = lazy(() => import("@/pages/admin/Maintenance"));
const Channels = lazy(() => import("@/pages/notify/Channels"));
const Deliveries = lazy(() => import("@/pages/notify/Deliveries"));
const Reports = lazy(() => import("@/pages/admin/Reports"));
const Sites = lazy(() => import("@/pages/admin/Sites"));
const UsersPage = lazy(() => import("@/pages/admin/Users"));
const AuditLog = lazy(() => import("@/pages/admin/AuditLog"));
const Noc = lazy(() => import("@/pages/operator/Noc"));
const Tenants = lazy(() => import("@/pages/operator/Tenants"));
const TenantPage = lazy(() => import("@/pages/operator/TenantPage"));
const OperatorDevices = lazy(() => import("@/pages/operator/OperatorDevices"));
const OperatorAlerts = lazy(() => import("@/pages/operator/OperatorAlerts"));
const Quarantine = lazy(() => import("@/pages/operator/Quarantine"));
const OperatorAudit = lazy(() => import("@/pages/operator/OperatorAudit"));
const SystemPage = lazy(() => import("@/pages/operator/SystemPage"));

export function homeFor(claims: Claims | undefined): string {
  if (isTenantUser(claims)) return "/";
  if (isOperator(claims)) return "/operator/noc";
  return "/";
}

function page(element: React.ReactNode) {
  return <Suspense fallback={<Loading />}>{element}</Suspense>;
}

function RequireAuth() {
  const { session } = useAuth();
  const location = useLocation();
  if (!session) return <Navigate to="/login" replace state={{ from: location.pathname + location.search }} />;
  return <AppShell />;
}

function TenantOnly() {
  const { isTenantUser, claims } = useAuth();
  if (!isTenantUser) return <Navigate to={homeFor(claims)} replace />;
  return <Outlet />;
}

function OperatorOnly() {
  const { isOperator, claims } = useAuth();
  if (!isOperator) return <Navigate to={homeFor(claims)} replace />;
  return <Outlet />;
}

function RouteError() {
  const error = useRouteError();
  return <ErrorState error={error} onRetry={() => location.reload()} />;
}

function NotFound() {
  return <ErrorState error={new Error("There is no page at this address.")} />;
}

export function createRouter() {
  return createBrowserRouter(
    [
      { path: "/login", element: page(<Login />) },
      { path: "/auth/callback", element: page(<AuthCallback />) },
      {
        element: <RequireAuth />,
        errorElement: <RouteError />,
        children: [
          {
            element: <TenantOnly />,
            children: [
              { index: true, element: page(<Overview />) },
              { path: "devices", element: page(<DeviceList />) },
              { path: "devices/import", element: page(<DeviceImport />) },
              { path: "devices/:deviceId", element: page(<DeviceDetail />) },
              { path: "alerts", element: page(<AlertInbox />) },
              { path: "alerts/:alertId", element: page(<AlertInbox />) },
              { path: "rules", element: page(<Rules />) },
              { path: "rules/new", element: page(<RuleEditor />) },
              { path: "rules/:ruleId", element: page(<RuleEditor />) },
              { path: "oncall", element: page(<Schedules />) },
              { path: "oncall/:scheduleId", element: page(<ScheduleDetail />) },
              { path: "escalation", element: page(<Policies />) },
              { path: "maintenance", element: page(<Maintenance />) },
              { path: "channels", element: page(<Channels />) },
              { path: "deliveries", element: page(<Deliveries />) },
              { path: "reports", element: page(<Reports />) },
              { path: "sites", element: page(<Sites />) },
              { path: "users", element: page(<UsersPage />) },
              { path: "audit", element: page(<AuditLog />) },
            ],
          },
          {
            path: "operator",
            element: <OperatorOnly />,
            children: [
              { index: true, element: <Navigate to="noc" replace /> },
              { path: "noc", element: page(<Noc />) },
              { path: "tenants", element: page(<Tenants />) },
              { path: "tenants/:tenantId", element: page(<TenantPage />) },
              { path: "devices", element: page(<OperatorDevices />) },
              { path: "alerts", element: page(<OperatorAlerts />) },
              { path: "quarantine", element: page(<Quarantine />) },
              { path: "audit", element: page(<OperatorAudit />) },
              { path: "system", element: page(<SystemPage />) },
            ],
          },
          { path: "*", element: <NotFound /> },
        ],
      },
    ],
    { basename: "/app" },
  );
}
