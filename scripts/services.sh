#!/usr/bin/env bash
# Make sure the services the test suite talks to are up: PostgreSQL on 127.0.0.1:5432 and
# Mosquitto on 127.0.0.1:1883, and the snmptrapd binary the SNMP channel tests start themselves.
# Installs them from Debian's packages when missing (as root).
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { [ "$(id -u)" = 0 ]; }
apt_install() {
  if as_root && command -v apt-get >/dev/null; then
    [ -n "${_APT_UPDATED:-}" ] || { apt-get update -qq; _APT_UPDATED=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "missing: $* (install them, or run as root to let this script do it)" >&2; exit 1
  fi
}

if ! port_open 5432; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
  for _ in $(seq 30); do port_open 5432 && break; sleep 1; done
fi
port_open 5432 || { echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2; exit 1; }

command -v mosquitto >/dev/null || apt_install mosquitto mosquitto-clients
command -v mosquitto_pub >/dev/null || apt_install mosquitto-clients
if ! port_open 1883; then
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
  for _ in $(seq 20); do port_open 1883 && break; sleep 0.5; done
fi
port_open 1883 || { echo "Mosquitto is not answering on 127.0.0.1:1883" >&2; exit 1; }
# The brokers tests start from deploy/mosquitto load Pulse's ingest gate plugin, built here from its C source.
command -v cc >/dev/null || apt_install gcc libc6-dev
[ -f /usr/include/mosquitto_plugin.h ] || apt_install mosquitto-dev
[ -f /usr/include/mosquitto.h ] || apt_install libmosquitto-dev
make -s -C "$(dirname "$0")/.." build/pulse_ingest_gate.so

command -v snmptrapd >/dev/null || [ -x /usr/sbin/snmptrapd ] || apt_install snmptrapd
# Deployment tests run requests through Debian's caddy and pgbouncer; browser tests drive Debian's chromium.
command -v caddy >/dev/null || apt_install caddy
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || apt_install pgbouncer
command -v chromium >/dev/null || apt_install chromium
