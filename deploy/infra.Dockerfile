# syntax=docker/dockerfile:1
# The infrastructure images of deploy/docker-compose.yml that Pulse's tests run too: Debian bookworm's own
# mosquitto, pgbouncer and caddy packages, the same builds tests/broker, tests/deploy and tests/fleet start,
# configured by the same files (mounted read-only by the compose file). Build context: the repository root.
#   docker build -f deploy/infra.Dockerfile --target mosquitto .     (or: pgbouncer, caddy)

FROM debian:bookworm-slim AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# --- Pulse's ingest gate for Mosquitto (deploy/mosquitto/ingest_gate.c), built against Debian's broker headers -----
FROM base AS mosquitto-gate
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev mosquitto-dev libmosquitto-dev \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/mosquitto/ingest_gate.c /src/ingest_gate.c
RUN cc -shared -fPIC -O2 -Wall -Wextra -Werror -o /src/pulse_ingest_gate.so /src/ingest_gate.c

# --- MQTT broker: Mosquitto 2 with Pulse's ingest gate and the dynamic-security plugin (deploy/mosquitto) ----------
FROM base AS mosquitto
# mosquitto.conf names the plugin by its amd64 path; on other architectures a link is made there.
RUN apt-get update \
 && apt-get install -y --no-install-recommends mosquitto mosquitto-clients \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /mosquitto/config /mosquitto/data \
 && plugin="$(dpkg -L mosquitto | grep '/mosquitto_dynamic_security.so$')" \
 && mkdir -p /usr/lib/x86_64-linux-gnu \
 && { [ -e /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so ] \
      || ln -s "$plugin" /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so; }
COPY --from=mosquitto-gate /src/pulse_ingest_gate.so /usr/local/lib/mosquitto/pulse_ingest_gate.so
COPY deploy/mosquitto/init-dynsec.sh deploy/mosquitto/create-ingest-account.sh \
     deploy/mosquitto/create-simulator-account.sh deploy/mosquitto/entrypoint.sh /usr/local/bin/
EXPOSE 1883
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]

# --- Connection pooler: PgBouncer in transaction mode (deploy/pgbouncer/pgbouncer.ini) ----------------------------
FROM base AS pgbouncer
RUN apt-get update \
 && apt-get install -y --no-install-recommends pgbouncer postgresql-client \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/pgbouncer/entrypoint.sh /usr/local/bin/entrypoint.sh
EXPOSE 6432
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]

# --- Edge: Caddy with TLS and routing by path (deploy/caddy/Caddyfile) --------------------------------------------
FROM base AS caddy
RUN apt-get update \
 && apt-get install -y --no-install-recommends caddy \
 && rm -rf /var/lib/apt/lists/*
# Certificates, the internal CA and ACME accounts live in /data (a volume); Caddy's autosaved config in /config.
ENV XDG_DATA_HOME=/data XDG_CONFIG_HOME=/config
EXPOSE 80 443
ENTRYPOINT ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
