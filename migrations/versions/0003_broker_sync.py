"""Broker sync outbox on device credentials: the MQTT password to push (encrypted) and when it was applied.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE device_credentials ADD COLUMN broker_secret_encrypted text, "
               "ADD COLUMN broker_synced_at timestamptz")
    op.execute("CREATE INDEX device_credentials_broker_pending ON device_credentials (created_at) "
               "WHERE kind = 'MQTT_PASSWORD' AND broker_synced_at IS NULL")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS device_credentials_broker_pending")
    op.execute("ALTER TABLE device_credentials DROP COLUMN broker_secret_encrypted, DROP COLUMN broker_synced_at")
