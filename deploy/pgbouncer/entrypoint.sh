#!/usr/bin/env bash
# Start of the pooler container (deploy/infra.Dockerfile, target pgbouncer): the auth file from the environment,
# then PgBouncer in the foreground as the unprivileged `postgres` user with deploy/pgbouncer/pgbouncer.ini.
# DB_USER/DB_PASSWORD are the login Pulse connects with (PULSE_DATABASE_URL) and PgBouncer passes on to PostgreSQL.
set -euo pipefail
: "${DB_PASSWORD:?set DB_PASSWORD}"
user="${DB_USER:-pulse}"
case "$user$DB_PASSWORD" in *'"'*) echo "DB_USER and DB_PASSWORD must not contain a double quote" >&2; exit 2;; esac
umask 077
printf '"%s" "%s"\n' "$user" "$DB_PASSWORD" > /etc/pgbouncer/userlist.txt
chown postgres:postgres /etc/pgbouncer/userlist.txt
exec pgbouncer -u postgres /etc/pgbouncer/pgbouncer.ini
