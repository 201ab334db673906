"""Scheduler health: tasks failed in a row, the last failure and the signal
analyzer's problem, for /status and the scheduler's exit after too many failures.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scheduler_state", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("last_failure", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("sigan_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scheduler_state", schema=None) as batch_op:
        batch_op.drop_column("sigan_error")
        batch_op.drop_column("last_failure")
        batch_op.drop_column("consecutive_failures")
