"""The hot wallet's Bitcoin account: its watch-only wallet, its payments' signed versions, the coins each payment
reserves (keyed by outpoint, so no two payments hold one coin) and the withdrawals each pays.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

AMOUNT = sa.String(length=80).with_variant(sa.Numeric(78, 0), "postgresql")


def upgrade() -> None:
    op.create_table(
        "btc_hot_wallets",
        sa.Column("wallet", sa.String(length=64), primary_key=True),
        sa.Column("network", sa.String(length=16), nullable=False, unique=True),
        sa.Column("descriptor", sa.Text(), nullable=False),
        sa.Column("address", sa.String(length=100), nullable=False),
        sa.Column("next_change", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("balance", AMOUNT, nullable=True),
        sa.Column("balance_height", sa.BigInteger(), nullable=True),
    )
    op.create_table(
        "btc_hot_txs",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("payment", sa.String(length=36), nullable=False),
        sa.Column("wallet", sa.String(length=64), sa.ForeignKey("btc_hot_wallets.wallet"), nullable=False),
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("txid", sa.String(length=64), nullable=False, unique=True),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("fee", AMOUNT, nullable=False),
        sa.Column("fee_rate", sa.Integer(), nullable=False),
        sa.Column("vsize", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("broadcast_at", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", sa.String(length=64), nullable=True),
        sa.Column("block_height", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_btc_hot_txs_payment", "btc_hot_txs", ["payment"])
    op.create_index("ix_btc_hot_txs_state", "btc_hot_txs", ["state"])
    op.create_table(
        "btc_hot_inputs",
        sa.Column("txid", sa.String(length=64), nullable=False),
        sa.Column("vout", sa.Integer(), nullable=False),
        sa.Column("payment", sa.String(length=36), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("branch", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("txid", "vout"),
    )
    op.create_index("ix_btc_hot_inputs_payment", "btc_hot_inputs", ["payment"])
    op.create_table(
        "btc_hot_payouts",
        sa.Column("withdrawal_id", sa.String(length=36), primary_key=True),
        sa.Column("payment", sa.String(length=36), nullable=False),
    )
    op.create_index("ix_btc_hot_payouts_payment", "btc_hot_payouts", ["payment"])


def downgrade() -> None:
    op.drop_index("ix_btc_hot_payouts_payment", "btc_hot_payouts")
    op.drop_table("btc_hot_payouts")
    op.drop_index("ix_btc_hot_inputs_payment", "btc_hot_inputs")
    op.drop_table("btc_hot_inputs")
    op.drop_index("ix_btc_hot_txs_state", "btc_hot_txs")
    op.drop_index("ix_btc_hot_txs_payment", "btc_hot_txs")
    op.drop_table("btc_hot_txs")
    op.drop_table("btc_hot_wallets")
