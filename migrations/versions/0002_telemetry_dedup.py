"""Telemetry is idempotent on (tenant, device, time, seq, msg_type): a redelivered message is stored once.

The unique index replaces the plain (tenant_id, device_id, time DESC) index and serves the same queries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS telemetry_device_time")
    op.execute("CREATE UNIQUE INDEX telemetry_device_time ON telemetry (tenant_id, device_id, time DESC, seq, msg_type)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS telemetry_device_time")
    op.execute("CREATE INDEX telemetry_device_time ON telemetry (tenant_id, device_id, time DESC)")
