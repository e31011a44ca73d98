"""Jobs by channel: indexes for per-channel rate limits and the delivery log, and deletable channels.

- (channel_id, next_attempt_at) over PENDING jobs: a rate-limited channel's due jobs, oldest first.
- (channel_id, updated_at): a channel's sends of the last minute (its rate budget), the delivery log
  filtered by channel, and the ON DELETE SET NULL of a deleted channel without a full scan.
- A delivered job may outlive its channel (the delivery log keeps it, with channel_id NULL).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX notification_jobs_channel_due ON notification_jobs (channel_id, next_attempt_at) "
               "WHERE status = 'PENDING'")
    op.execute("CREATE INDEX notification_jobs_channel_recent ON notification_jobs (channel_id, updated_at)")
    op.execute("ALTER TABLE notification_jobs DROP CONSTRAINT notification_jobs_check")
    op.execute("ALTER TABLE notification_jobs ADD CONSTRAINT notification_jobs_target_check CHECK "
               "(channel_id IS NOT NULL OR contact_id IS NOT NULL OR status IN ('DELIVERED', 'DEAD', 'CANCELLED'))")


def downgrade() -> None:
    op.execute("ALTER TABLE notification_jobs DROP CONSTRAINT notification_jobs_target_check")
    op.execute("ALTER TABLE notification_jobs ADD CONSTRAINT notification_jobs_check CHECK "
               "(channel_id IS NOT NULL OR contact_id IS NOT NULL OR status IN ('DEAD', 'CANCELLED'))")
    op.execute("DROP INDEX IF EXISTS notification_jobs_channel_recent")
    op.execute("DROP INDEX IF EXISTS notification_jobs_channel_due")
