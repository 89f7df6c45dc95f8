"""Cold wallet record, and the built-in key that owns rebalancing withdrawals.

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
    op.create_table(
        "cold_wallets",
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    # Sweeps and top-ups are withdrawals owned by this key. It is revoked from birth and its public key is
    # the all-zero point, so no request can ever authenticate as it.
    keys = sa.table(
        "api_keys",
        sa.column("name", sa.String),
        sa.column("public_key", sa.String),
        sa.column("scopes", sa.String),
        sa.column("created_at", sa.BigInteger),
        sa.column("revoked_at", sa.BigInteger),
    )
    op.bulk_insert(
        keys,
        [{"name": "custody-rebalancer", "public_key": "0" * 64, "scopes": "read", "created_at": 0, "revoked_at": 0}],
    )


def downgrade() -> None:
    op.execute("DELETE FROM api_keys WHERE name = 'custody-rebalancer'")
    op.drop_table("cold_wallets")
