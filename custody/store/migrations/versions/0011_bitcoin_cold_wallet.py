"""The Bitcoin cold wallet: its descriptor and watch-only wallet, its batches (PSBT, txid, final transaction),
the coins each batch locks, and the owners' signed PSBTs; destinations wide enough for Bitcoin addresses.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

AMOUNT = sa.String(length=80).with_variant(sa.Numeric(78, 0), "postgresql")
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("withdrawals") as batch:
        batch.alter_column("destination", existing_type=sa.String(length=42), type_=sa.String(length=100))
    with op.batch_alter_table("address_book") as batch:
        batch.alter_column("address", existing_type=sa.String(length=42), type_=sa.String(length=100))
    op.create_table(
        "btc_cold_wallets",
        sa.Column("wallet", sa.String(length=64), primary_key=True),
        sa.Column("network", sa.String(length=16), nullable=False, unique=True),
        sa.Column("descriptor", sa.Text(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("owners", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "btc_batches",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("wallet", sa.String(length=64), sa.ForeignKey("btc_cold_wallets.wallet"), nullable=False),
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("txid", sa.String(length=64), nullable=False),
        sa.Column("psbt", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("fee", AMOUNT, nullable=False),
        sa.Column("replaces", sa.String(length=36), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("withdrawals", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("final_tx", sa.Text(), nullable=True),
        sa.Column("block_hash", sa.String(length=64), nullable=True),
        sa.Column("block_height", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_btc_batches_state", "btc_batches", ["state"])
    op.create_table(
        "btc_batch_inputs",
        sa.Column("batch_id", sa.String(length=36), sa.ForeignKey("btc_batches.id"), nullable=False),
        sa.Column("txid", sa.String(length=64), nullable=False),
        sa.Column("vout", sa.Integer(), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "txid", "vout"),
    )
    op.create_index("ix_btc_batch_inputs_outpoint", "btc_batch_inputs", ["txid", "vout"])
    op.create_table(
        "btc_batch_signatures",
        sa.Column("id", SERIAL, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(length=36), sa.ForeignKey("btc_batches.id"), nullable=False),
        sa.Column("fingerprint", sa.String(length=8), nullable=False),
        sa.Column("psbt", sa.Text(), nullable=False),
        sa.Column("imported_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("batch_id", "fingerprint", name="uq_btc_batch_signature_owner"),
    )


def downgrade() -> None:
    op.drop_table("btc_batch_signatures")
    op.drop_index("ix_btc_batch_inputs_outpoint", "btc_batch_inputs")
    op.drop_table("btc_batch_inputs")
    op.drop_index("ix_btc_batches_state", "btc_batches")
    op.drop_table("btc_batches")
    op.drop_table("btc_cold_wallets")
    with op.batch_alter_table("address_book") as batch:
        batch.alter_column("address", existing_type=sa.String(length=100), type_=sa.String(length=42))
    with op.batch_alter_table("withdrawals") as batch:
        batch.alter_column("destination", existing_type=sa.String(length=100), type_=sa.String(length=42))
