"""Device list at fleet scale: name-order indexes, trigram search, and tag/text narrowing usable under RLS.

- (tenant_id, name, device_id) in both directions: a page sorted by name walks an index instead of sorting the
  tenant's devices (NULLS LAST both ways, as the API sorts).
- Trigram GIN indexes on name and device_id (pg_trgm, when the server has it) serve `ILIKE '%text%'`.
- Row-level security keeps non-LEAKPROOF operators (`@>` on arrays, `ILIKE`) out of index conditions for
  `pulse_app`, so neither devices_tags nor a trigram index could serve the API's filters. The function
  `pulse_device_ids_matching(tags, pattern)` reads the ids of the current tenant's (`app.tenant_id`, exactly
  the RLS condition) devices carrying every tag and matching the pattern as `pulse_worker`, where those
  indexes apply; the API's query then reads those devices by id under RLS. Switching to `pulse_worker` for that
  one query needs the login to be a member of it, as it is for every Pulse process (docs/operations.md).
  Only `pulse_app` may execute the function.
- No index on device_state.last_seen_at: ingest rewrites that column on every batch, and an index on it turns
  those updates from HOT into full index updates (about twice the time per batch, measured).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MATCHING_SQL = r"""
CREATE FUNCTION pulse_device_ids_matching(want_tags text[], pattern text) RETURNS SETOF text
LANGUAGE plpgsql STABLE SET role = pulse_worker SET search_path = public, pg_temp AS $$
DECLARE
  tenant text := current_setting('app.tenant_id', true);
BEGIN
  IF coalesce(tenant, '') = '' THEN
    RETURN;
  END IF;
  RETURN QUERY EXECUTE 'SELECT device_id FROM devices WHERE tenant_id = $1'
    || CASE WHEN want_tags IS NULL THEN '' ELSE ' AND tags @> $2' END
    || CASE WHEN pattern IS NULL THEN '' ELSE ' AND (device_id ILIKE $3 OR name ILIKE $3)' END
    USING tenant, want_tags, pattern;
END $$
"""

# pg_trgm is a trusted extension: the migrating user needs CREATE on the database, not superuser.
TRIGRAM_SQL = """
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_trgm')
     AND EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pg_trgm')
     AND has_database_privilege(current_database(), 'CREATE') THEN
    CREATE EXTENSION pg_trgm;
  END IF;
  IF EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_trgm') THEN
    CREATE INDEX devices_name_trgm ON devices USING gin (name gin_trgm_ops);
    CREATE INDEX devices_device_id_trgm ON devices USING gin (device_id gin_trgm_ops);
  END IF;
END $$;
"""


def upgrade() -> None:
    op.execute("CREATE INDEX devices_name ON devices (tenant_id, name, device_id)")
    op.execute("CREATE INDEX devices_name_desc ON devices (tenant_id, name DESC NULLS LAST, device_id DESC)")
    op.execute(TRIGRAM_SQL)
    op.execute(MATCHING_SQL)
    op.execute("REVOKE ALL ON FUNCTION pulse_device_ids_matching(text[], text) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION pulse_device_ids_matching(text[], text) TO pulse_app")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS pulse_device_ids_matching(text[], text)")
    op.execute("DROP INDEX IF EXISTS devices_device_id_trgm")
    op.execute("DROP INDEX IF EXISTS devices_name_trgm")
    op.execute("DROP INDEX IF EXISTS devices_name_desc")
    op.execute("DROP INDEX IF EXISTS devices_name")
