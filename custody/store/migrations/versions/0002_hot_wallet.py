"""Hot wallet: wallets with their next nonce, every signed payment version, observed balances.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chain_balances",
        sa.Column("wallet", sa.String(length=42), nullable=False),
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.String(length=80).with_variant(sa.Numeric(78, 0), "postgresql"), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("wallet", "asset"),
    )
    op.create_table(
        "hot_wallets",
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("next_nonce", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_table(
        "hot_transactions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("withdrawal_id", sa.String(length=36), nullable=False),
        sa.Column("wallet", sa.String(length=42), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("max_fee", sa.String(length=80).with_variant(sa.Numeric(78, 0), "postgresql"), nullable=False),
        sa.Column("priority_fee", sa.String(length=80).with_variant(sa.Numeric(78, 0), "postgresql"), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("broadcast_at", sa.BigInteger(), nullable=True),
        sa.Column("mined_block", sa.BigInteger(), nullable=True),
        sa.Column("mined_block_hash", sa.String(length=66), nullable=True),
        sa.ForeignKeyConstraint(
            ["wallet"],
            ["hot_wallets.address"],
        ),
        sa.ForeignKeyConstraint(
            ["withdrawal_id"],
            ["withdrawals.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tx_hash"),
        sa.UniqueConstraint("wallet", "nonce", "attempt", name="uq_hot_tx_attempt"),
    )
    with op.batch_alter_table("hot_transactions", schema=None) as batch_op:
        batch_op.create_index("ix_hot_tx_state", ["state"], unique=False)
        batch_op.create_index("ix_hot_tx_withdrawal", ["withdrawal_id"], unique=False)

    with op.batch_alter_table("withdrawals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tx_hash", sa.String(length=66), nullable=True))
        batch_op.add_column(sa.Column("failure", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("withdrawals", schema=None) as batch_op:
        batch_op.drop_column("failure")
        batch_op.drop_column("tx_hash")

    with op.batch_alter_table("hot_transactions", schema=None) as batch_op:
        batch_op.drop_index("ix_hot_tx_withdrawal")
        batch_op.drop_index("ix_hot_tx_state")

    op.drop_table("hot_transactions")
    op.drop_table("hot_wallets")
    op.drop_table("chain_balances")
