"""The initial schema: users, tokens, schedule, task results, acquisitions, location,
scheduler state.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

import grscos.storage.models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "location",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gps", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("altitude", sa.Float(), nullable=True),
        sa.Column("modified", grscos.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "scheduler_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("started", grscos.storage.models.UTCDateTime(), nullable=False),
        sa.Column("heartbeat", grscos.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=150), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created", grscos.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "schedule_entries",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("start", grscos.storage.models.UTCDateTime(), nullable=False),
        sa.Column("stop", grscos.storage.models.UTCDateTime(), nullable=True),
        sa.Column("interval", sa.BigInteger(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("is_private", sa.Boolean(), nullable=False),
        sa.Column("callback_url", sa.String(length=2000), nullable=True),
        sa.Column("next_task_time", grscos.storage.models.UTCDateTime(), nullable=True),
        sa.Column("next_task_id", sa.Integer(), nullable=False),
        sa.Column("last_task_time", grscos.storage.models.UTCDateTime(), nullable=True),
        sa.Column("created", grscos.storage.models.UTCDateTime(), nullable=False),
        sa.Column("modified", grscos.storage.models.UTCDateTime(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("schedule_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_schedule_due", ["is_active", "next_task_time", "priority"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_schedule_entries_created"), ["created"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_schedule_entries_owner_id"), ["owner_id"], unique=False
        )

    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created", grscos.storage.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("digest"),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tokens_user_id"), ["user_id"], unique=False)

    op.create_table(
        "task_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_entry_id", sa.String(length=200), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("scheduled", grscos.storage.models.UTCDateTime(), nullable=False),
        sa.Column("started", grscos.storage.models.UTCDateTime(), nullable=False),
        sa.Column("finished", grscos.storage.models.UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["schedule_entry_id"], ["schedule_entries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("schedule_entry_id", "task_id"),
    )
    with op.batch_alter_table("task_results", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_task_results_finished"), ["finished"], unique=False)

    op.create_table(
        "acquisitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_result_id", sa.Integer(), nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("data_path", sa.String(length=1000), nullable=False),
        sa.Column("data_size", sa.BigInteger(), nullable=False),
        sa.Column("created", grscos.storage.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["task_result_id"], ["task_results.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_result_id", "recording_id"),
    )
    with op.batch_alter_table("acquisitions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_acquisitions_created"), ["created"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_acquisitions_task_result_id"), ["task_result_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("acquisitions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_acquisitions_task_result_id"))
        batch_op.drop_index(batch_op.f("ix_acquisitions_created"))

    op.drop_table("acquisitions")
    with op.batch_alter_table("task_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_results_finished"))

    op.drop_table("task_results")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tokens_user_id"))

    op.drop_table("tokens")
    with op.batch_alter_table("schedule_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_schedule_entries_owner_id"))
        batch_op.drop_index(batch_op.f("ix_schedule_entries_created"))
        batch_op.drop_index("ix_schedule_due")

    op.drop_table("schedule_entries")
    op.drop_table("users")
    op.drop_table("scheduler_state")
    op.drop_table("location")
