#!/usr/bin/env bash
# Create (or update) the broker account `pulse ingest` connects with, on a running broker, through the
# dynamic-security admin account. Safe to run again: existing role and ACLs are kept, the password is set
# to INGEST_PASSWORD (which closes ingest's current connections; they reconnect with the new password).
#
# Usage: ADMIN_PASSWORD=… INGEST_PASSWORD=… deploy/mosquitto/create-ingest-account.sh
#   BROKER_HOST (127.0.0.1)  BROKER_PORT (1883)  ADMIN_USERNAME (pulse-admin)  INGEST_USERNAME (pulse-ingest)
# INGEST_USERNAME/INGEST_PASSWORD must match PULSE_MQTT_URL's user and PULSE_MQTT_INGEST_PASSWORD.
# Run it on the broker host (loopback) or over TLS: mosquitto_ctrl sends the passwords in the clear.
#
# The role's ACLs are pulse.fleet.broker_accounts.INGEST_ACLS (tests/broker checks that they agree):
# subscribe to every device topic, also as a shared subscription; publish nothing.
set -euo pipefail
: "${ADMIN_PASSWORD:?set ADMIN_PASSWORD}" "${INGEST_PASSWORD:?set INGEST_PASSWORD}"
host="${BROKER_HOST:-127.0.0.1}"; port="${BROKER_PORT:-1883}"
admin="${ADMIN_USERNAME:-pulse-admin}"; ingest="${INGEST_USERNAME:-pulse-ingest}"
role="pulse-ingest"

# mosquitto_ctrl exits 0 even when the broker refuses a command, so read what it prints; "already
# exists" is fine (prints "exists"), anything else stops the script.
ctl() {
  local out
  out="$(mosquitto_ctrl -h "$host" -p "$port" -u "$admin" -P "$ADMIN_PASSWORD" dynsec "$@" 2>&1 \
         | grep -v -e '^Warning: You are running mosquitto_ctrl without encryption' \
                   -e '^This means all of the configuration changes' -e '^$' || true)"
  case "$1:$out" in
    *:) ;;
    getClient:Username:*) echo "$out" ;;
    *"already exists"*) echo exists ;;
    *) echo "mosquitto_ctrl dynsec $1 failed: $out" >&2; return 1 ;;
  esac
}

ctl createRole "$role" >/dev/null
ctl addRoleACL "$role" subscribePattern 'tenant/+/device/+/+' allow >/dev/null
ctl addRoleACL "$role" subscribePattern '$share/+/tenant/+/device/+/+' allow >/dev/null
created="$(ctl createClient "$ingest" -p "$INGEST_PASSWORD")"
if [ "$created" = exists ]; then
  ctl setClientPassword "$ingest" "$INGEST_PASSWORD" >/dev/null
fi
# Adding a role the client already has is answered "Internal error", so look first.
if ! ctl getClient "$ingest" | grep -Eq "^(Roles:)?[[:space:]]+$role \(priority"; then
  ctl addClientRole "$ingest" "$role" >/dev/null
fi
echo "broker account $ingest has role $role"
