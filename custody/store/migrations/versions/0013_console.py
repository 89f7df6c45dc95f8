"""The operators' console: one-time login tokens and sessions (hashes only), and the indexes its pages read by
at 100,000 withdrawals and more: the audit log by subject (a withdrawal's trail) and by kind (proof-of-reserves
statements, policy history); withdrawals by state and asset (the overview's counts and the hot reservations,
read from the index alone) and by asset in ``seq`` order (the list filtered by asset, paged by keyset).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_login_tokens",
        sa.Column("hash", sa.String(length=64), primary_key=True),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.BigInteger(), nullable=True),
    )
    op.create_table(
        "console_sessions",
        sa.Column("hash", sa.String(length=64), primary_key=True),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_audit_log_subject_seq", "audit_log", ["subject", "seq"])
    op.create_index("ix_audit_log_kind_seq", "audit_log", ["kind", "seq"])
    op.create_index("ix_withdrawals_state_asset", "withdrawals", ["state", "asset"])
    op.create_index("ix_withdrawals_asset_seq", "withdrawals", ["asset", "seq"])


def downgrade() -> None:
    op.drop_index("ix_withdrawals_asset_seq", "withdrawals")
    op.drop_index("ix_withdrawals_state_asset", "withdrawals")
    op.drop_index("ix_audit_log_kind_seq", "audit_log")
    op.drop_index("ix_audit_log_subject_seq", "audit_log")
    op.drop_table("console_sessions")
    op.drop_table("console_login_tokens")
