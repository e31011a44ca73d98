#!/usr/bin/env bash
# Start of the broker container (deploy/infra.Dockerfile, target mosquitto): on the first start the
# dynamic-security file is made with Pulse's admin account (init-dynsec.sh), then Mosquitto runs in the foreground
# with deploy/mosquitto/mosquitto.conf. MQTT_ADMIN_PASSWORD is PULSE_MQTT_ADMIN_URL's password.
set -euo pipefail
: "${MQTT_ADMIN_PASSWORD:?set MQTT_ADMIN_PASSWORD}"
dynsec=/mosquitto/config/dynamic-security.json
init-dynsec.sh "$dynsec" "${MQTT_ADMIN_USERNAME:-pulse-admin}" "$MQTT_ADMIN_PASSWORD"
# Mosquitto drops to its own user once started; the plugin then rewrites its file (through a new file in the same
# directory) on every change, and persistence writes to /mosquitto/data.
chown mosquitto:mosquitto /mosquitto/config "$dynsec" /mosquitto/data
exec mosquitto -c /mosquitto/config/mosquitto.conf
