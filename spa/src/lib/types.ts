// Shapes of the Pulse API answers the app reads (see docs/api*.md).

export type DeviceStatus = "ONLINE" | "STALE" | "OFFLINE" | "UNKNOWN";
export type Lifecycle = "ACTIVE" | "DISABLED" | "REVOKED" | "DECOMMISSIONED";
export type AlertStatus = "OPEN" | "ACKNOWLEDGED" | "CLOSED";

export interface Page<T> {
  items: T[];
  total: number;
  limit: number;
  offset: number;
}

export interface CursorPage<T> {
  items: T[];
  limit: number;
  next_cursor: string | null;
}

export interface DeviceState {
  status: DeviceStatus;
  last_seen_at: string | null;
  last_state_change_at: string | null;
  latest_metrics: Record<string, unknown>;
  latest_metrics_at?: Record<string, string>;
  last_telemetry_at?: string | null;
  last_heartbeat_at?: string | null;
  last_seq?: number | null;
}

export interface Device {
  device_id: string;
  name: string | null;
  device_type: string | null;
  site_id: string | null;
  tags: string[];
  attributes: Record<string, unknown>;
  lifecycle: Lifecycle;
  heartbeat_interval_s: number | null;
  lat: number | null;
  lng: number | null;
  created_at: string;
  updated_at: string;
  decommissioned_at: string | null;
  state: DeviceState;
}

export interface DeviceDetail extends Device {
  site_name: string | null;
  groups: { group_id: string; name: string }[];
  open_alert_count: number;
  state_history: { status: DeviceStatus; previous_status: DeviceStatus | null; changed_at: string }[];
}

export interface Credentials {
  tenant_id: string;
  device_id: string;
  provision_token: string;
  mqtt: { username: string; password: string; client_id: string; topic_prefix: string; host?: string; port?: number };
}

export interface FleetSummary {
  total: number;
  by_state: Record<DeviceStatus, number>;
  by_lifecycle: Record<Lifecycle, number>;
  by_site: { site_id: string | null; name: string | null; total: number; by_state: Record<DeviceStatus, number> }[];
  open_alerts: { total: number; acknowledged: number; by_severity: Record<string, number> };
}

export interface Alert {
  alert_id: string;
  fingerprint: string;
  alert_type: string;
  rule_id: string | null;
  device_id: string | null;
  site_id: string | null;
  severity: number;
  status: AlertStatus;
  title: string;
  summary: string | null;
  metric: string | null;
  trigger_value: unknown;
  last_value: unknown;
  occurrence_count: number;
  opened_at: string;
  last_seen_at: string;
  acknowledged_at: string | null;
  acknowledged_by: string | null;
  closed_at: string | null;
  closed_by: string | null;
  close_reason: string | null;
  silenced_until: string | null;
  is_flapping: boolean;
}

export interface AlertEvent {
  event_id: number;
  kind: string;
  actor: string | null;
  reason: string | null;
  details: Record<string, unknown> | null;
  created_at: string;
}

export interface AlertDetail extends Alert {
  events: AlertEvent[];
}

export interface LatestValues {
  device_id: string;
  last_telemetry_at: string | null;
  metrics: Record<string, { value: unknown; time: string }>;
}

export interface History {
  device_id: string;
  metric: string;
  from: string;
  to: string;
  points: number;
  bucket_seconds: number;
  buckets: { time: string; avg: number; min: number; max: number; count: number }[];
}

export interface Rule {
  rule_id: string;
  name: string;
  description: string | null;
  rule_type: "THRESHOLD" | "MULTI" | "RATE" | "ANOMALY" | "GAP";
  severity: number;
  severity_name: string;
  definition: Record<string, unknown>;
  for_seconds: number;
  is_enabled: boolean;
  site_ids: string[];
  group_ids: string[];
  tags: string[];
  device_ids: string[];
  escalation_policy_id: string | null;
  created_at: string;
  updated_at: string;
}

export interface Site {
  site_id: string;
  name: string;
  timezone: string;
  address: string | null;
  lat: number | null;
  lng: number | null;
  device_count: number;
}

export interface DeviceGroup {
  group_id: string;
  name: string;
  description: string | null;
  device_ids: string[];
}

export interface User {
  user_id: string;
  email: string;
  display_name: string;
  roles: string[];
  timezone: string;
  is_active: boolean;
  has_password: boolean;
  created_at: string;
  last_login_at: string | null;
}

export interface Shift {
  user_id: string;
  user_email: string;
  user_name: string;
  source: "LAYER" | "OVERRIDE";
  layer_id: string | null;
  layer_name: string | null;
  override_id: string | null;
  reason: string | null;
  starts_at: string;
  ends_at: string;
}

export interface Layer {
  layer_id: string;
  position: number;
  name: string;
  rotation_type: "DAILY" | "WEEKLY" | "CUSTOM";
  rotation_hours: number | null;
  rotation_start: string;
  handoff_time: string;
  participants: string[];
  restrictions: { days: number[]; start: string; end: string }[];
  starts_at: string | null;
  ends_at: string | null;
}

export interface Schedule {
  schedule_id: string;
  name: string;
  description: string | null;
  timezone: string;
  handoff_channel_id: string | null;
  layers?: Layer[];
}

export interface Override {
  override_id: string;
  user_id: string;
  user_email: string;
  user_name: string;
  starts_at: string;
  ends_at: string;
  reason: string | null;
  created_by: string | null;
}

export interface OnCall {
  schedule_id: string;
  schedule_name: string;
  timezone: string;
  at: string;
  on_call: (Omit<Shift, "starts_at" | "ends_at"> & { since: string; until: string }) | null;
}

export interface Timeline {
  schedule_id: string;
  schedule_name: string;
  timezone: string;
  start: string;
  end: string;
  shifts: Shift[];
}

export interface Policy {
  policy_id: string;
  name: string;
  description: string | null;
  repeat_count: number;
  is_default: boolean;
  rule_count: number;
  levels: { position: number; delay_minutes: number; targets: { type: "user" | "schedule" | "channel"; id: string }[] }[];
}

export interface MaintenanceWindow {
  window_id: string;
  name: string;
  recurrence: "ONCE" | "WEEKLY";
  starts_at: string | null;
  ends_at: string | null;
  weekdays: number[] | null;
  start_time: string | null;
  duration_minutes: number | null;
  timezone: string;
  site_ids: string[];
  group_ids: string[];
  device_types: string[];
  device_ids: string[];
  is_enabled: boolean;
}

export interface Channel {
  channel_id: string;
  name: string;
  channel_type: string;
  config: Record<string, unknown>;
  secrets: Record<string, string>;
  is_enabled: boolean;
  rate_limit_per_min: number | null;
}

export interface RoutingRule {
  route_id: string;
  name: string;
  channel_id: string;
  position: number;
  min_severity: number;
  alert_types: string[];
  event_kinds: string[];
  is_final: boolean;
  is_enabled: boolean;
}

export interface Job {
  job_id: string;
  channel_id: string | null;
  route_id: string | null;
  alert_id: string | null;
  event_kind: string;
  title: string;
  severity: number;
  status: "PENDING" | "IN_PROGRESS" | "DELIVERED" | "DEAD" | "CANCELLED";
  attempt_count: number;
  max_attempts: number;
  next_attempt_at: string | null;
  last_error: string | null;
  created_at: string;
  delivered_at: string | null;
}

export interface JobDetail extends Job {
  attempts: {
    attempt_no: number;
    started_at: string;
    finished_at: string | null;
    latency_ms: number | null;
    outcome: string;
    status_code: number | null;
    error: string | null;
  }[];
}

export interface AuditRow {
  audit_id: number;
  at: string;
  actor: string;
  action: string;
  resource: string;
  details: Record<string, unknown>;
  ip: string | null;
  request_id: string | null;
  tenant_id?: string | null;
  actor_roles?: string[];
}

export interface TenantSummary {
  tenant_id: string;
  name: string;
  status: "ACTIVE" | "SUSPENDED" | "DELETED";
  timezone: string;
  contact_email: string | null;
  device_count: number;
  device_limit: number;
  open_alert_count: number;
  created_at: string;
}

export interface Subscription {
  subscription_id: string;
  tenant_id: string;
  kind: string;
  status: string;
  device_limit: number;
  device_count: number;
  parent_subscription_id: string | null;
  term_start_at: string;
  expires_at: string | null;
  grace_days: number;
  description: string | null;
}

export interface TenantDetail extends TenantSummary {
  heartbeat_interval_s: number;
  subscriptions: Subscription[];
}

export interface SystemHealth {
  checked_at: string;
  alive_within_s: number;
  processes: {
    process_type: string;
    alive: number;
    ready: number;
    instances: { instance: string; ready: boolean; beat_age_s: number; alive: boolean; detail: string }[];
  }[];
  notifications: {
    pending_due: number;
    pending_later: number;
    in_progress: number;
    in_progress_lease_expired: number;
    dead: number;
    oldest_due_age_s: number | null;
  };
  telemetry_rows_last_minute: number | null;
  quarantine_last_hour: { total: number; by_reason: Record<string, number> };
}

export interface OperatorAlert {
  alert_id: string;
  tenant_id: string;
  alert_type: string;
  device_id: string | null;
  severity: number;
  status: AlertStatus;
  title: string;
  opened_at: string;
  last_seen_at: string;
}

export interface OperatorDevice {
  tenant_id: string;
  device_id: string;
  name: string | null;
  device_type: string | null;
  site_id: string | null;
  status: Lifecycle;
  state: DeviceStatus;
  last_seen_at: string | null;
  tags: string[];
}

export interface QuarantineEvent {
  quarantine_id: number;
  tenant_id: string | null;
  device_id: string | null;
  received_at: string;
  transport: string;
  reason: string;
  detail: string | null;
  topic: string | null;
  raw_payload: string | null;
  payload_size: number | null;
}

export interface MetricHistory {
  metric: string;
  since: string;
  until: string;
  step_s: number;
  series: { labels: Record<string, string>; points: { time: string; value: number; max: number }[] }[];
}

export interface Capacity {
  checked_at: string;
  database_bytes: number;
  connections: { total: number; max_connections: number; by_state: Record<string, number>; by_application: Record<string, number> };
  largest_tables: { name: string; total_bytes: number; rows_estimate: number }[];
  telemetry_bytes: number;
  telemetry_partitions: { name: string; total_bytes: number; rows_estimate: number; day: string | null }[];
}

export interface JobRun {
  job_name: string;
  last_started_at: string | null;
  last_finished_at: string | null;
  last_status: string | null;
  last_error: string | null;
  run_count: number;
}

export interface ServiceHealth {
  checked_at: string;
  database_latency_ms: number;
  system: SystemHealth;
  jobs: JobRun[];
}

export interface TenantHealth {
  tenant_id: string;
  name: string;
  status: string;
  devices: number;
  devices_online: number;
  online_percent: number | null;
  open_alerts: number;
  max_open_severity: number | null;
  subscription_status: string | null;
  subscriptions: { subscription_id: string; kind: string; status: string; expires_at: string | null }[];
  activity: { hour: string; messages: number }[];
}

export interface SlaReport {
  tenant_id: string;
  period_start: string;
  period_end: string;
  generated_at: string;
  availability: { percent: number | null; online_s: number; observed_s: number; maintenance_s: number; devices: number };
  alerts: {
    opened: number;
    closed: number;
    by_severity: { severity: number; severity_name: string; opened: number; closed: number }[];
    acknowledged: number;
    mtta_s: number | null;
    resolved: number;
    mttr_s: number | null;
  };
  notifications: { total: number; sent: number; failed: number; pending: number; cancelled: number };
  top_alerting_devices: { device_id: string; name: string | null; alerts: number; max_severity: number }[];
  devices: { device_id: string; name: string | null; availability_percent: number | null }[];
}

export interface ReportRun {
  run_id: string;
  kind: string;
  status: string;
  period_start: string;
  period_end: string;
  requested_by: string | null;
  availability_percent: number | null;
  created_at: string;
  finished_at: string | null;
  error: string | null;
  report?: SlaReport | null;
}
