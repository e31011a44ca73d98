"""The whole Pulse schema: roles, tenant tables with row-level security, partitioned telemetry.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from alembic import op
from sqlalchemy.util import await_only

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ROLES_SQL = """
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pulse_app') THEN
    CREATE ROLE pulse_app NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pulse_operator') THEN
    CREATE ROLE pulse_operator NOLOGIN BYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pulse_ingest') THEN
    CREATE ROLE pulse_ingest NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pulse_worker') THEN
    CREATE ROLE pulse_worker NOLOGIN BYPASSRLS;
  END IF;
END $$;
GRANT pulse_app, pulse_operator, pulse_ingest, pulse_worker TO CURRENT_USER;
"""

TABLES_SQL = """
CREATE TABLE tenants (
  tenant_id            text PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
  name                 text NOT NULL,
  status               text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'SUSPENDED', 'DELETED')),
  timezone             text NOT NULL DEFAULT 'UTC',
  heartbeat_interval_s integer NOT NULL DEFAULT 30 CHECK (heartbeat_interval_s > 0),
  stale_after_intervals   integer NOT NULL DEFAULT 1 CHECK (stale_after_intervals > 0),
  offline_after_intervals integer NOT NULL DEFAULT 5 CHECK (offline_after_intervals > 0),
  no_heartbeat_alert_on text NOT NULL DEFAULT 'OFFLINE' CHECK (no_heartbeat_alert_on IN ('STALE', 'OFFLINE', 'NEVER')),
  contact_email        text,
  settings             jsonb NOT NULL DEFAULT '{}',
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subscriptions (
  subscription_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id              text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  kind                   text NOT NULL CHECK (kind IN ('MAIN', 'ADDON', 'TRIAL', 'TEMPORARY')),
  parent_subscription_id uuid REFERENCES subscriptions ON DELETE RESTRICT,
  status                 text NOT NULL DEFAULT 'ACTIVE'
                         CHECK (status IN ('TRIAL', 'ACTIVE', 'GRACE', 'SUSPENDED', 'EXPIRED')),
  device_limit           integer NOT NULL CHECK (device_limit >= 0),
  term_start_at          timestamptz NOT NULL DEFAULT now(),
  term_end_at            timestamptz,
  grace_days             integer NOT NULL DEFAULT 14 CHECK (grace_days >= 0),
  status_changed_at      timestamptz NOT NULL DEFAULT now(),
  last_reminder_days     integer,
  description            text,
  created_at             timestamptz NOT NULL DEFAULT now(),
  updated_at             timestamptz NOT NULL DEFAULT now(),
  CHECK (kind <> 'ADDON' OR parent_subscription_id IS NOT NULL)
);
CREATE INDEX subscriptions_tenant ON subscriptions (tenant_id);

CREATE TABLE sites (
  tenant_id   text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  site_id     text NOT NULL CHECK (site_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
  name        text NOT NULL,
  timezone    text NOT NULL DEFAULT 'UTC',
  address     text,
  lat         double precision,
  lng         double precision,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, site_id)
);

CREATE TABLE devices (
  tenant_id            text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  device_id            text NOT NULL CHECK (device_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
  site_id              text,
  subscription_id      uuid REFERENCES subscriptions ON DELETE SET NULL,
  name                 text,
  device_type          text,
  tags                 text[] NOT NULL DEFAULT '{}',
  attributes           jsonb NOT NULL DEFAULT '{}',
  heartbeat_interval_s integer CHECK (heartbeat_interval_s > 0),
  status               text NOT NULL DEFAULT 'ACTIVE'
                       CHECK (status IN ('ACTIVE', 'DISABLED', 'REVOKED', 'DECOMMISSIONED')),
  lat                  double precision,
  lng                  double precision,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now(),
  decommissioned_at    timestamptz,
  PRIMARY KEY (tenant_id, device_id),
  FOREIGN KEY (tenant_id, site_id) REFERENCES sites (tenant_id, site_id) ON DELETE SET NULL (site_id)
);
CREATE INDEX devices_tags ON devices USING gin (tags);
CREATE INDEX devices_site ON devices (tenant_id, site_id);

CREATE TABLE device_groups (
  group_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  name        text NOT NULL,
  description text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, name)
);

CREATE TABLE device_group_members (
  tenant_id  text NOT NULL,
  group_id   uuid NOT NULL REFERENCES device_groups ON DELETE CASCADE,
  device_id  text NOT NULL,
  added_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, device_id),
  FOREIGN KEY (tenant_id, device_id) REFERENCES devices ON DELETE CASCADE
);
CREATE INDEX device_group_members_device ON device_group_members (tenant_id, device_id);

CREATE TABLE device_credentials (
  credential_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     text NOT NULL,
  device_id     text NOT NULL,
  kind          text NOT NULL CHECK (kind IN ('PROVISION_TOKEN', 'MQTT_PASSWORD')),
  secret_hash   text NOT NULL,
  hint          text NOT NULL,
  mqtt_username text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz,
  revoked_at    timestamptz,
  FOREIGN KEY (tenant_id, device_id) REFERENCES devices ON DELETE CASCADE
);
CREATE INDEX device_credentials_device ON device_credentials (tenant_id, device_id) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX device_credentials_mqtt_username ON device_credentials (mqtt_username)
  WHERE revoked_at IS NULL AND mqtt_username IS NOT NULL;

CREATE TABLE device_activation_codes (
  code_hash   text PRIMARY KEY,
  tenant_id   text NOT NULL,
  device_id   text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  used_at     timestamptz,
  FOREIGN KEY (tenant_id, device_id) REFERENCES devices ON DELETE CASCADE
);

CREATE TABLE device_state (
  tenant_id            text NOT NULL,
  device_id            text NOT NULL,
  status               text NOT NULL DEFAULT 'UNKNOWN' CHECK (status IN ('UNKNOWN', 'ONLINE', 'STALE', 'OFFLINE')),
  last_seen_at         timestamptz,
  last_telemetry_at    timestamptz,
  last_heartbeat_at    timestamptz,
  last_message_ts      timestamptz,
  last_seq             bigint,
  last_state_change_at timestamptz,
  latest_metrics       jsonb NOT NULL DEFAULT '{}',
  latest_metrics_at    jsonb NOT NULL DEFAULT '{}',
  lat                  double precision,
  lng                  double precision,
  updated_at           timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, device_id),
  FOREIGN KEY (tenant_id, device_id) REFERENCES devices ON DELETE CASCADE
);
CREATE INDEX device_state_status ON device_state (tenant_id, status);

CREATE TABLE device_state_history (
  history_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id       text NOT NULL,
  device_id       text NOT NULL,
  status          text NOT NULL,
  previous_status text,
  changed_at      timestamptz NOT NULL,
  FOREIGN KEY (tenant_id, device_id) REFERENCES devices ON DELETE CASCADE
);
CREATE INDEX device_state_history_device ON device_state_history (tenant_id, device_id, changed_at);

CREATE TABLE quarantine_events (
  quarantine_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id     text,
  device_id     text,
  received_at   timestamptz NOT NULL DEFAULT now(),
  transport     text NOT NULL CHECK (transport IN ('MQTT', 'HTTP')),
  reason        text NOT NULL,
  detail        text,
  topic         text,
  raw_payload   text,
  payload_size  integer
);
CREATE INDEX quarantine_events_tenant ON quarantine_events (tenant_id, received_at DESC);

CREATE TABLE quarantine_counters (
  tenant_id  text,
  minute     timestamptz NOT NULL,
  reason     text NOT NULL,
  count      bigint NOT NULL DEFAULT 0,
  CONSTRAINT quarantine_counters_key UNIQUE NULLS NOT DISTINCT (tenant_id, minute, reason)
);

CREATE TABLE users (
  user_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     text REFERENCES tenants ON DELETE CASCADE,
  email         text NOT NULL,
  display_name  text NOT NULL DEFAULT '',
  password_hash text,
  roles         text[] NOT NULL DEFAULT '{customer}',
  timezone      text NOT NULL DEFAULT 'UTC',
  is_active     boolean NOT NULL DEFAULT true,
  external_subject text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  last_login_at timestamptz,
  CHECK (roles <@ ARRAY['customer', 'tenant-admin', 'operator', 'operator-admin']::text[])
);
CREATE UNIQUE INDEX users_email ON users (lower(email));

CREATE TABLE user_contact_methods (
  contact_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id         text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  user_id           uuid NOT NULL REFERENCES users ON DELETE CASCADE,
  kind              text NOT NULL CHECK (kind IN ('EMAIL', 'WEBHOOK', 'SLACK', 'PAGERDUTY', 'TEAMS')),
  label             text,
  address           text NOT NULL,
  secrets_encrypted text,
  is_enabled        boolean NOT NULL DEFAULT true,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_notification_rules (
  notification_rule_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id      text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  user_id        uuid NOT NULL REFERENCES users ON DELETE CASCADE,
  contact_id     uuid NOT NULL REFERENCES user_contact_methods ON DELETE CASCADE,
  delay_minutes  integer NOT NULL DEFAULT 0 CHECK (delay_minutes >= 0),
  min_severity   smallint NOT NULL DEFAULT 1 CHECK (min_severity BETWEEN 1 AND 5),
  created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE refresh_tokens (
  token_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    text REFERENCES tenants ON DELETE CASCADE,
  user_id      uuid NOT NULL REFERENCES users ON DELETE CASCADE,
  token_hash   text NOT NULL UNIQUE,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  revoked_at   timestamptz,
  replaced_by  uuid
);

CREATE TABLE signing_keys (
  kid                   text PRIMARY KEY,
  algorithm             text NOT NULL,
  private_jwk_encrypted text NOT NULL,
  public_jwk            jsonb NOT NULL,
  created_at            timestamptz NOT NULL DEFAULT now(),
  retired_at            timestamptz
);

CREATE TABLE escalation_policies (
  policy_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  name         text NOT NULL,
  description  text,
  repeat_count integer NOT NULL DEFAULT 0 CHECK (repeat_count BETWEEN 0 AND 10),
  is_default   boolean NOT NULL DEFAULT false,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, name)
);
CREATE UNIQUE INDEX escalation_policies_default ON escalation_policies (tenant_id) WHERE is_default;

CREATE TABLE escalation_levels (
  level_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  policy_id     uuid NOT NULL REFERENCES escalation_policies ON DELETE CASCADE,
  position      integer NOT NULL CHECK (position BETWEEN 1 AND 10),
  delay_minutes integer NOT NULL DEFAULT 0 CHECK (delay_minutes >= 0),
  targets       jsonb NOT NULL DEFAULT '[]',
  UNIQUE (policy_id, position)
);

CREATE TABLE oncall_schedules (
  schedule_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id          text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  name               text NOT NULL,
  description        text,
  timezone           text NOT NULL,
  handoff_channel_id uuid,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, name)
);

CREATE TABLE oncall_layers (
  layer_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id      text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  schedule_id    uuid NOT NULL REFERENCES oncall_schedules ON DELETE CASCADE,
  position       integer NOT NULL,
  name           text NOT NULL,
  rotation_type  text NOT NULL CHECK (rotation_type IN ('DAILY', 'WEEKLY', 'CUSTOM')),
  rotation_hours integer CHECK (rotation_hours > 0),
  rotation_start date NOT NULL,
  handoff_time   time NOT NULL DEFAULT '09:00',
  participants   uuid[] NOT NULL,
  restrictions   jsonb NOT NULL DEFAULT '[]',
  starts_at      timestamptz,
  ends_at        timestamptz,
  created_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (schedule_id, position),
  CHECK (rotation_type <> 'CUSTOM' OR rotation_hours IS NOT NULL)
);

CREATE TABLE oncall_overrides (
  override_id  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  schedule_id  uuid NOT NULL REFERENCES oncall_schedules ON DELETE CASCADE,
  user_id      uuid NOT NULL REFERENCES users ON DELETE CASCADE,
  starts_at    timestamptz NOT NULL,
  ends_at      timestamptz NOT NULL,
  reason       text,
  created_by   text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  CHECK (ends_at > starts_at)
);
CREATE INDEX oncall_overrides_window ON oncall_overrides (schedule_id, starts_at, ends_at);

CREATE TABLE alert_rules (
  rule_id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id            text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  name                 text NOT NULL,
  description          text,
  rule_type            text NOT NULL CHECK (rule_type IN ('THRESHOLD', 'MULTI', 'RATE', 'ANOMALY', 'GAP')),
  severity             smallint NOT NULL CHECK (severity BETWEEN 1 AND 5),
  definition           jsonb NOT NULL,
  for_seconds          integer NOT NULL DEFAULT 0 CHECK (for_seconds >= 0),
  is_enabled           boolean NOT NULL DEFAULT true,
  site_ids             text[] NOT NULL DEFAULT '{}',
  group_ids            uuid[] NOT NULL DEFAULT '{}',
  tags                 text[] NOT NULL DEFAULT '{}',
  device_ids           text[] NOT NULL DEFAULT '{}',
  escalation_policy_id uuid REFERENCES escalation_policies ON DELETE SET NULL,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_rules_tenant ON alert_rules (tenant_id) WHERE is_enabled;

CREATE TABLE alerts (
  alert_id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id            text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  fingerprint          text NOT NULL,
  alert_type           text NOT NULL CHECK (alert_type IN ('THRESHOLD', 'NO_HEARTBEAT', 'NO_TELEMETRY', 'ANOMALY', 'RATE')),
  rule_id              uuid REFERENCES alert_rules ON DELETE SET NULL,
  device_id            text,
  site_id              text,
  severity             smallint NOT NULL CHECK (severity BETWEEN 1 AND 5),
  status               text NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'CLOSED')),
  title                text NOT NULL,
  summary              text,
  metric               text,
  trigger_value        jsonb,
  last_value           jsonb,
  occurrence_count     integer NOT NULL DEFAULT 1,
  opened_at            timestamptz NOT NULL,
  last_seen_at         timestamptz NOT NULL,
  triggered_at         timestamptz,
  detected_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
  acknowledged_at      timestamptz,
  acknowledged_by      text,
  closed_at            timestamptz,
  closed_by            text,
  close_reason         text,
  silenced_until       timestamptz,
  is_flapping          boolean NOT NULL DEFAULT false,
  clear_since          timestamptz,
  escalation_policy_id uuid REFERENCES escalation_policies ON DELETE SET NULL,
  escalation_level     integer NOT NULL DEFAULT 0,
  escalation_repeat    integer NOT NULL DEFAULT 0,
  escalation_generation bigint NOT NULL DEFAULT 0,
  next_escalation_at   timestamptz,
  updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX alerts_one_open_per_fingerprint ON alerts (tenant_id, fingerprint)
  WHERE status IN ('OPEN', 'ACKNOWLEDGED');
CREATE INDEX alerts_tenant_opened ON alerts (tenant_id, opened_at DESC);
CREATE INDEX alerts_tenant_status ON alerts (tenant_id, status);
CREATE INDEX alerts_next_escalation ON alerts (next_escalation_at) WHERE next_escalation_at IS NOT NULL;

CREATE TABLE alert_events (
  event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id   text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  alert_id    uuid NOT NULL REFERENCES alerts ON DELETE CASCADE,
  kind        text NOT NULL CHECK (kind IN ('OPENED', 'UPDATED', 'ACKNOWLEDGED', 'SILENCED', 'UNSILENCED',
                                            'ESCALATED', 'CLOSED', 'REOPENED', 'COMMENTED', 'FLAPPING', 'PAGED')),
  actor       text NOT NULL,
  reason      text,
  details     jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, event_id);
CREATE INDEX alert_events_tenant ON alert_events (tenant_id, created_at DESC);

CREATE TABLE maintenance_windows (
  window_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  name             text NOT NULL,
  recurrence       text NOT NULL DEFAULT 'ONCE' CHECK (recurrence IN ('ONCE', 'WEEKLY')),
  starts_at        timestamptz,
  ends_at          timestamptz,
  weekdays         smallint[] NOT NULL DEFAULT '{}',
  start_time       time,
  duration_minutes integer CHECK (duration_minutes > 0),
  timezone         text NOT NULL DEFAULT 'UTC',
  site_ids         text[] NOT NULL DEFAULT '{}',
  group_ids        uuid[] NOT NULL DEFAULT '{}',
  device_types     text[] NOT NULL DEFAULT '{}',
  device_ids       text[] NOT NULL DEFAULT '{}',
  is_enabled       boolean NOT NULL DEFAULT true,
  created_at       timestamptz NOT NULL DEFAULT now(),
  CHECK (recurrence <> 'ONCE' OR (starts_at IS NOT NULL AND ends_at > starts_at)),
  CHECK (recurrence <> 'WEEKLY' OR (start_time IS NOT NULL AND duration_minutes IS NOT NULL))
);

CREATE TABLE notification_channels (
  channel_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id         text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  name              text NOT NULL,
  channel_type      text NOT NULL
                    CHECK (channel_type IN ('SLACK', 'PAGERDUTY', 'TEAMS', 'WEBHOOK', 'EMAIL', 'SNMP', 'MQTT')),
  config            jsonb NOT NULL DEFAULT '{}',
  secrets_encrypted text,
  is_enabled        boolean NOT NULL DEFAULT true,
  rate_limit_per_min integer CHECK (rate_limit_per_min > 0),
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, name)
);

CREATE TABLE notification_routing_rules (
  route_id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id         text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  name              text NOT NULL,
  position          integer NOT NULL DEFAULT 0,
  channel_id        uuid NOT NULL REFERENCES notification_channels ON DELETE CASCADE,
  min_severity      smallint NOT NULL DEFAULT 1 CHECK (min_severity BETWEEN 1 AND 5),
  alert_types       text[] NOT NULL DEFAULT '{}',
  event_kinds       text[] NOT NULL DEFAULT '{OPENED,ACKNOWLEDGED,CLOSED}',
  site_ids          text[] NOT NULL DEFAULT '{}',
  group_ids         uuid[] NOT NULL DEFAULT '{}',
  tags              text[] NOT NULL DEFAULT '{}',
  device_id_prefix  text,
  repeat_interval_s integer NOT NULL DEFAULT 0 CHECK (repeat_interval_s >= 0),
  is_final          boolean NOT NULL DEFAULT false,
  is_enabled        boolean NOT NULL DEFAULT true,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notification_routing_rules_tenant ON notification_routing_rules (tenant_id, position);

CREATE TABLE notification_jobs (
  job_id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  channel_id       uuid REFERENCES notification_channels ON DELETE SET NULL,
  contact_id       uuid REFERENCES user_contact_methods ON DELETE SET NULL,
  route_id         uuid REFERENCES notification_routing_rules ON DELETE SET NULL,
  alert_id         uuid REFERENCES alerts ON DELETE CASCADE,
  event_id         bigint,
  event_kind       text NOT NULL,
  payload          jsonb NOT NULL,
  idempotency_key  text NOT NULL UNIQUE,
  status           text NOT NULL DEFAULT 'PENDING'
                   CHECK (status IN ('PENDING', 'IN_PROGRESS', 'DELIVERED', 'DEAD', 'CANCELLED')),
  attempt_count    integer NOT NULL DEFAULT 0,
  max_attempts     integer NOT NULL DEFAULT 5,
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  lease_owner      text,
  lease_expires_at timestamptz,
  lease_generation bigint NOT NULL DEFAULT 0,
  last_error       text,
  created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
  delivered_at     timestamptz,
  updated_at       timestamptz NOT NULL DEFAULT now(),
  CHECK (channel_id IS NOT NULL OR contact_id IS NOT NULL OR status IN ('DEAD', 'CANCELLED'))
);
CREATE INDEX notification_jobs_due ON notification_jobs (next_attempt_at) WHERE status = 'PENDING';
CREATE INDEX notification_jobs_lease ON notification_jobs (lease_expires_at) WHERE status = 'IN_PROGRESS';
CREATE INDEX notification_jobs_tenant ON notification_jobs (tenant_id, created_at DESC);

CREATE TABLE notification_attempts (
  attempt_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id    text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  job_id       uuid NOT NULL REFERENCES notification_jobs ON DELETE CASCADE,
  attempt_no   integer NOT NULL,
  started_at   timestamptz NOT NULL,
  finished_at  timestamptz NOT NULL,
  latency_ms   integer NOT NULL,
  outcome      text NOT NULL CHECK (outcome IN ('DELIVERED', 'RETRY', 'FAILED')),
  status_code  integer,
  error        text
);
CREATE INDEX notification_attempts_job ON notification_attempts (job_id, attempt_no);

CREATE TABLE notification_log (
  tenant_id    text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  route_id     uuid NOT NULL REFERENCES notification_routing_rules ON DELETE CASCADE,
  fingerprint  text NOT NULL,
  last_sent_at timestamptz NOT NULL,
  PRIMARY KEY (route_id, fingerprint)
);

CREATE TABLE report_runs (
  run_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  kind         text NOT NULL CHECK (kind IN ('SLA', 'EXPORT')),
  period_start timestamptz NOT NULL,
  period_end   timestamptz NOT NULL,
  status       text NOT NULL DEFAULT 'RUNNING' CHECK (status IN ('RUNNING', 'DONE', 'FAILED')),
  requested_by text,
  result       jsonb,
  error        text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  finished_at  timestamptz
);
CREATE INDEX report_runs_tenant ON report_runs (tenant_id, created_at DESC);

CREATE TABLE tenant_audit_log (
  audit_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id   text NOT NULL REFERENCES tenants ON DELETE CASCADE,
  at          timestamptz NOT NULL DEFAULT now(),
  actor       text NOT NULL,
  action      text NOT NULL,
  resource    text,
  details     jsonb NOT NULL DEFAULT '{}',
  ip          text,
  request_id  text
);
CREATE INDEX tenant_audit_log_tenant ON tenant_audit_log (tenant_id, at DESC);

CREATE TABLE operator_audit_log (
  audit_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at          timestamptz NOT NULL DEFAULT now(),
  actor       text NOT NULL,
  actor_roles text[] NOT NULL DEFAULT '{}',
  action      text NOT NULL,
  tenant_id   text,
  resource    text,
  ip          text,
  user_agent  text,
  request_id  text,
  details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX operator_audit_log_at ON operator_audit_log (at DESC);

CREATE TABLE system_metrics (
  time    timestamptz NOT NULL,
  metric  text NOT NULL,
  value   double precision NOT NULL,
  labels  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX system_metrics_metric_time ON system_metrics (metric, time DESC);

CREATE TABLE app_settings (
  key        text PRIMARY KEY,
  value      jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  updated_by text
);

CREATE TABLE scheduled_job_runs (
  job_name         text PRIMARY KEY,
  last_started_at  timestamptz,
  last_finished_at timestamptz,
  last_status      text,
  last_error       text,
  run_count        bigint NOT NULL DEFAULT 0
);
"""

# Telemetry on plain PostgreSQL: native range partitioning by day. Partitions are created ahead
# and dropped after the retention period by pulse_ensure/drop functions that the maintenance job
# calls (SECURITY DEFINER so the job's role need not own the table).
TELEMETRY_PARTITIONED_SQL = """
CREATE TABLE telemetry (
  time      timestamptz NOT NULL,
  tenant_id text NOT NULL,
  device_id text NOT NULL,
  site_id   text,
  msg_type  text NOT NULL,
  seq       bigint,
  metrics   jsonb NOT NULL DEFAULT '{}'
) PARTITION BY RANGE (time);
CREATE INDEX telemetry_device_time ON telemetry (tenant_id, device_id, time DESC);

CREATE FUNCTION pulse_ensure_telemetry_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  d date := first_day;
  created integer := 0;
  part text;
BEGIN
  IF last_day - first_day > 400 THEN
    RAISE EXCEPTION 'refusing to create more than 400 partitions at once';
  END IF;
  WHILE d <= last_day LOOP
    part := 'telemetry_p' || to_char(d, 'YYYYMMDD');
    IF to_regclass(part) IS NULL THEN
      EXECUTE format('CREATE TABLE %I PARTITION OF telemetry FOR VALUES FROM (%L) TO (%L)',
                     part, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
      created := created + 1;
    END IF;
    d := d + 1;
  END LOOP;
  RETURN created;
END $$;

CREATE FUNCTION pulse_drop_telemetry_partitions(retention_days integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  r record;
  dropped integer := 0;
  cutoff date := (now() AT TIME ZONE 'UTC')::date - retention_days;
BEGIN
  FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'telemetry'::regclass AND c.relname ~ '^telemetry_p[0-9]{8}$'
  LOOP
    IF to_date(substr(r.relname, 12), 'YYYYMMDD') < cutoff THEN
      EXECUTE format('DROP TABLE %I', r.relname);
      dropped := dropped + 1;
    END IF;
  END LOOP;
  RETURN dropped;
END $$;

SELECT pulse_ensure_telemetry_partitions((now() AT TIME ZONE 'UTC')::date - 2, (now() AT TIME ZONE 'UTC')::date + 7);
"""

# Telemetry on TimescaleDB: a hypertable with the same name and columns and a retention policy; the two
# maintenance functions keep their signatures so callers do not care which it is. No compression: TimescaleDB
# refuses compression on a table with row-level security, and tenant isolation of telemetry comes first.
TELEMETRY_TIMESCALE_SQL = """
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE TABLE telemetry (
  time      timestamptz NOT NULL,
  tenant_id text NOT NULL,
  device_id text NOT NULL,
  site_id   text,
  msg_type  text NOT NULL,
  seq       bigint,
  metrics   jsonb NOT NULL DEFAULT '{}'
);
SELECT create_hypertable('telemetry', 'time', chunk_time_interval => interval '1 day');
CREATE INDEX telemetry_device_time ON telemetry (tenant_id, device_id, time DESC);
SELECT add_retention_policy('telemetry', interval '90 days');

CREATE FUNCTION pulse_ensure_telemetry_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE sql AS $$ SELECT 0 $$;
CREATE FUNCTION pulse_drop_telemetry_partitions(retention_days integer) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT count(*)::integer FROM drop_chunks('telemetry', older_than => retention_days * interval '1 day')
$$;
"""

# Every table with a tenant_id column is tenant-scoped: RLS enabled and forced, one policy for
# pulse_app keyed on app.tenant_id. A transaction that never set app.tenant_id sees no rows.
TENANT_TABLES = [
    "tenants", "subscriptions", "sites", "devices", "device_groups", "device_group_members",
    "device_credentials", "device_activation_codes", "device_state", "device_state_history",
    "telemetry", "quarantine_events", "quarantine_counters", "users", "user_contact_methods",
    "user_notification_rules", "refresh_tokens", "escalation_policies", "escalation_levels",
    "oncall_schedules", "oncall_layers", "oncall_overrides", "alert_rules", "alerts", "alert_events",
    "maintenance_windows", "notification_channels", "notification_routing_rules", "notification_jobs",
    "notification_attempts", "notification_log", "report_runs", "tenant_audit_log",
]

# What pulse_app may do per table; tables not listed get full DML.
APP_READ_ONLY = {"tenants", "subscriptions", "quarantine_events", "quarantine_counters",
                 "device_state_history", "telemetry", "notification_attempts", "notification_log"}
APP_NO_DELETE = {"alert_events", "tenant_audit_log", "alerts", "device_state"}

# What the ingest role may touch (all tenants, through permissive policies rather than BYPASSRLS).
INGEST_GRANTS = {
    "tenants": "SELECT", "subscriptions": "SELECT", "sites": "SELECT", "devices": "SELECT",
    "device_credentials": "SELECT", "device_state": "SELECT, INSERT, UPDATE",
    "telemetry": "SELECT, INSERT", "quarantine_events": "INSERT", "quarantine_counters": "SELECT, INSERT, UPDATE",
}
SYSTEM_TABLES = ["signing_keys", "operator_audit_log", "system_metrics", "app_settings", "scheduled_job_runs"]


def _rls_sql() -> str:
    out = []
    cond = "tenant_id = current_setting('app.tenant_id', true)"
    for t in TENANT_TABLES:
        out.append(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY; ALTER TABLE {t} FORCE ROW LEVEL SECURITY;")
        out.append(f"CREATE POLICY tenant_isolation ON {t} TO pulse_app USING ({cond}) WITH CHECK ({cond});")
        if t in APP_READ_ONLY:
            privs = "SELECT"
        elif t in APP_NO_DELETE:
            privs = "SELECT, INSERT, UPDATE"
        else:
            privs = "SELECT, INSERT, UPDATE, DELETE"
        out.append(f"GRANT {privs} ON {t} TO pulse_app;")
        out.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO pulse_operator, pulse_worker;")
    for t, privs in INGEST_GRANTS.items():
        out.append(f"CREATE POLICY ingest_access ON {t} TO pulse_ingest USING (true) WITH CHECK (true);")
        out.append(f"GRANT {privs} ON {t} TO pulse_ingest;")
    for t in SYSTEM_TABLES:
        out.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO pulse_operator, pulse_worker;")
    out.append("GRANT SELECT ON app_settings TO pulse_app, pulse_ingest;")
    out.append("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO pulse_app, pulse_operator, pulse_worker, pulse_ingest;")
    out.append("GRANT EXECUTE ON FUNCTION pulse_ensure_telemetry_partitions(date, date) "
               "TO pulse_worker, pulse_ingest, pulse_operator;")
    out.append("GRANT EXECUTE ON FUNCTION pulse_drop_telemetry_partitions(integer) TO pulse_worker, pulse_operator;")
    out.append("REVOKE EXECUTE ON FUNCTION pulse_ensure_telemetry_partitions(date, date) FROM PUBLIC;")
    out.append("REVOKE EXECUTE ON FUNCTION pulse_drop_telemetry_partitions(integer) FROM PUBLIC;")
    return "\n".join(out)


def _run_script(sql: str) -> None:
    """Run a multi-statement script in the migration's transaction (asyncpg's simple-query path)."""
    driver = op.get_bind().connection.dbapi_connection.driver_connection  # type: ignore[union-attr]
    await_only(driver.execute(sql))


def upgrade() -> None:
    conn = op.get_bind()
    _run_script(ROLES_SQL)
    _run_script(TABLES_SQL)
    has_timescale = conn.exec_driver_sql(
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'").scalar()
    _run_script(TELEMETRY_TIMESCALE_SQL if has_timescale else TELEMETRY_PARTITIONED_SQL)
    _run_script(_rls_sql())


def downgrade() -> None:
    for t in ["telemetry", *reversed(TENANT_TABLES), *SYSTEM_TABLES]:
        op.execute(f"DROP TABLE IF EXISTS {t} CASCADE")
    op.execute("DROP FUNCTION IF EXISTS pulse_ensure_telemetry_partitions(date, date)")
    op.execute("DROP FUNCTION IF EXISTS pulse_drop_telemetry_partitions(integer)")
