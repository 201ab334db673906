"""Acquisition notifications: the notifications table and the schedule entry's
encrypted callback credential.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import grscos.storage.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_result_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt", grscos.storage.models.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created", grscos.storage.models.UTCDateTime(), nullable=False),
        sa.Column("delivered", grscos.storage.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["task_result_id"], ["task_results.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_result_id"),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_due", ["state", "next_attempt"], unique=False)

    with op.batch_alter_table("schedule_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_credential", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedule_entries", schema=None) as batch_op:
        batch_op.drop_column("callback_credential")

    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_due")

    op.drop_table("notifications")
