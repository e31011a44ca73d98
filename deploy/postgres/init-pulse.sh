#!/usr/bin/env bash
# First start of the database container (/docker-entrypoint-initdb.d, run once on an empty data directory, as the
# superuser POSTGRES_USER, connected to POSTGRES_DB, which is Pulse's database):
#   - the group roles Pulse switches to per transaction (creating BYPASSRLS roles takes a superuser, so they are made
#     here; `pulse migrate` finds them and leaves them alone),
#   - Pulse's login DB_USER (no superuser, no CREATEROLE): a member of those roles WITH ADMIN OPTION, owner of the
#     database, so it runs the migrations and every process,
#   - the extensions the migrations use, made by the superuser (timescaledb is not a trusted extension),
#   - Keycloak's own database and login.
# Environment: DB_USER (pulse), DB_PASSWORD, KEYCLOAK_DB_USER (keycloak), KEYCLOAK_DB_NAME (keycloak),
# KEYCLOAK_DB_PASSWORD. tests/deploy/test_postgres_init.py runs this script against a scratch database.
set -euo pipefail
: "${DB_PASSWORD:?set DB_PASSWORD}" "${KEYCLOAK_DB_PASSWORD:?set KEYCLOAK_DB_PASSWORD}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-pulse}" \
  -v db_name="${POSTGRES_DB:-pulse}" -v db_user="${DB_USER:-pulse}" -v db_password="$DB_PASSWORD" \
  -v kc_user="${KEYCLOAK_DB_USER:-keycloak}" -v kc_db="${KEYCLOAK_DB_NAME:-keycloak}" \
  -v kc_password="$KEYCLOAK_DB_PASSWORD" <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pulse_app') THEN CREATE ROLE pulse_app NOLOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pulse_operator') THEN
    CREATE ROLE pulse_operator NOLOGIN BYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pulse_ingest') THEN CREATE ROLE pulse_ingest NOLOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pulse_worker') THEN
    CREATE ROLE pulse_worker NOLOGIN BYPASSRLS;
  END IF;
  IF EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb') THEN
    CREATE EXTENSION IF NOT EXISTS timescaledb;
  END IF;
  IF EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
  END IF;
END $$;

CREATE ROLE :"db_user" LOGIN PASSWORD :'db_password';
GRANT pulse_app, pulse_operator, pulse_ingest, pulse_worker TO :"db_user" WITH ADMIN OPTION;
ALTER DATABASE :"db_name" OWNER TO :"db_user";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE ROLE :"kc_user" LOGIN PASSWORD :'kc_password';
CREATE DATABASE :"kc_db" OWNER :"kc_user";
SQL
echo "created login ${DB_USER:-pulse} (owner of ${POSTGRES_DB:-pulse}) and Keycloak's database ${KEYCLOAK_DB_NAME:-keycloak}"
