"""Per-alert order of notification jobs: an index to find an alert's earlier unfinished job on a channel.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX notification_jobs_alert_order ON notification_jobs (alert_id, channel_id, event_id) "
               "WHERE status IN ('PENDING', 'IN_PROGRESS')")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS notification_jobs_alert_order")
