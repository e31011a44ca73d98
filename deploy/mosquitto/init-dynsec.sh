#!/usr/bin/env bash
# Create the dynamic-security file with Pulse's admin account, once, before the broker first starts.
# Usage: init-dynsec.sh <file> <admin-username> <admin-password>
# Pulse then creates the ingest account and one client per device through the admin account
# (PULSE_MQTT_ADMIN_URL), on the $CONTROL/dynamic-security/v1 topic.
set -euo pipefail
file="$1"; user="$2"; pass="$3"
if [ -s "$file" ]; then echo "$file exists; leaving it alone"; exit 0; fi
mosquitto_ctrl dynsec init "$file" "$user" "$pass" >/dev/null
chmod 600 "$file"
echo "created $file with admin account $user"
