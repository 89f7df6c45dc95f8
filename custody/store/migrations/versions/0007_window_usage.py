"""Velocity-window usage per asset, API key and second, filled from the withdrawals that count.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NOT_SPENDING = ("rejected", "cancelled", "failed")  # custody.ledger.states.NOT_SPENDING when this was written


def upgrade() -> None:
    usage = op.create_table(
        "window_usage",
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column("api_key", sa.String(length=64), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.String(length=80).with_variant(sa.Numeric(78, 0), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("asset", "api_key", "at"),
    )
    # Summed here rather than in SQL: SQLite stores amounts as text, and its integers stop at 2**63.
    withdrawals = sa.table(
        "withdrawals",
        sa.column("asset"),
        sa.column("api_key"),
        sa.column("created_at"),
        sa.column("amount"),
        sa.column("state"),
    )
    rows = op.get_bind().execute(
        sa.select(withdrawals.c.asset, withdrawals.c.api_key, withdrawals.c.created_at, withdrawals.c.amount).where(
            withdrawals.c.state.not_in(NOT_SPENDING)
        )
    )
    sums: dict[tuple[str, str, int], int] = {}
    for asset, api_key, at, amount in rows:
        sums[(asset, api_key, at)] = sums.get((asset, api_key, at), 0) + int(amount)
    if sums:
        is_pg = op.get_bind().dialect.name == "postgresql"
        op.bulk_insert(
            usage,
            [
                {"asset": a, "api_key": k, "at": t, "amount": v if is_pg else str(v)}
                for (a, k, t), v in sorted(sums.items())
            ],
        )


def downgrade() -> None:
    op.drop_table("window_usage")
