#!/usr/bin/env bash
# Create (or update) the broker account `pulse simulate` publishes with, on a running broker, through the
# dynamic-security admin account. The simulator connects every simulated device with this one account (the user and
# password of its PULSE_MQTT_URL), so its role may publish as any device of one tenant, and nothing else:
# `tenant/<SIM_TENANT>/device/+/+`. For demos and staging; a real device gets an account of its own from Pulse.
#
# Usage: ADMIN_PASSWORD=… SIM_PASSWORD=… deploy/mosquitto/create-simulator-account.sh
#   BROKER_HOST (127.0.0.1)  BROKER_PORT (1883)  ADMIN_USERNAME (pulse-admin)  SIM_USERNAME (pulse-simulator)
#   SIM_TENANT (demo)
# Safe to run again: the role's ACL is kept, the password is set to SIM_PASSWORD.
# Run it on the broker host, on the broker's private network, or over TLS: mosquitto_ctrl sends passwords in clear.
set -euo pipefail
: "${ADMIN_PASSWORD:?set ADMIN_PASSWORD}" "${SIM_PASSWORD:?set SIM_PASSWORD}"
host="${BROKER_HOST:-127.0.0.1}"; port="${BROKER_PORT:-1883}"
admin="${ADMIN_USERNAME:-pulse-admin}"; sim="${SIM_USERNAME:-pulse-simulator}"; tenant="${SIM_TENANT:-demo}"
case "$tenant" in *[!a-z0-9-]*|"") echo "SIM_TENANT must be a tenant id (a-z, 0-9, -)" >&2; exit 2;; esac
role="pulse-simulator:$tenant"

# mosquitto_ctrl exits 0 even when the broker refuses a command, so read what it prints (as
# create-ingest-account.sh does): "already exists" is fine, anything else stops the script.
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
ctl addRoleACL "$role" publishClientSend "tenant/$tenant/device/+/+" allow >/dev/null
created="$(ctl createClient "$sim" -p "$SIM_PASSWORD")"
if [ "$created" = exists ]; then
  ctl setClientPassword "$sim" "$SIM_PASSWORD" >/dev/null
fi
if ! ctl getClient "$sim" | grep -Fq "$role (priority"; then
  ctl addClientRole "$sim" "$role" >/dev/null
fi
echo "broker account $sim has role $role"
