"""Service heartbeats: each ingest instance says every few seconds whether it can take device traffic, so the
evaluator can tell a silent fleet from a broken ingest path (and not page for every device at once).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE service_heartbeats (
  instance      text PRIMARY KEY,
  process_type  text NOT NULL,
  ready         boolean NOT NULL,
  ready_since   timestamptz,
  beat_at       timestamptz NOT NULL,
  detail        text NOT NULL DEFAULT ''
)""")
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON service_heartbeats TO pulse_worker, pulse_operator, "
               "pulse_ingest")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS service_heartbeats")
