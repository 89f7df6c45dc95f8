"""Cold batches: the batch table, owners' signatures, each withdrawal's batch, the Safe's owners and
MultiSendCallOnly, and hot-wallet transactions that execute a batch or make a plain call.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("safe", sa.String(length=42), nullable=False),
        sa.Column("safe_nonce", sa.BigInteger(), nullable=False),
        sa.Column("safe_tx_hash", sa.String(length=66), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("withdrawals", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_batches_state", "batches", ["state"])
    op.create_table(
        "batch_signatures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=42), nullable=False),
        sa.Column("signature", sa.String(length=130), nullable=False),
        sa.Column("imported_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id", "owner", name="uq_batch_signature_owner"),
    )
    with op.batch_alter_table("withdrawals") as t:
        t.add_column(sa.Column("batch_id", sa.String(length=36), nullable=True))
        t.create_index("ix_withdrawals_batch_id", ["batch_id"])
    with op.batch_alter_table("cold_wallets") as t:
        t.add_column(sa.Column("owners", sa.Text(), nullable=True))
        t.add_column(sa.Column("threshold", sa.Integer(), nullable=True))
        t.add_column(sa.Column("multisend", sa.String(length=42), nullable=True))
    with op.batch_alter_table("hot_transactions") as t:
        t.alter_column("withdrawal_id", existing_type=sa.String(length=36), nullable=True)
        t.add_column(sa.Column("batch_id", sa.String(length=36), nullable=True))
        t.create_foreign_key("fk_hot_transactions_batch", "batches", ["batch_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("hot_transactions") as t:
        t.drop_constraint("fk_hot_transactions_batch", type_="foreignkey")
        t.drop_column("batch_id")
        t.alter_column("withdrawal_id", existing_type=sa.String(length=36), nullable=False)
    with op.batch_alter_table("cold_wallets") as t:
        t.drop_column("multisend")
        t.drop_column("threshold")
        t.drop_column("owners")
    with op.batch_alter_table("withdrawals") as t:
        t.drop_index("ix_withdrawals_batch_id")
        t.drop_column("batch_id")
    op.drop_table("batch_signatures")
    op.drop_index("ix_batches_state", table_name="batches")
    op.drop_table("batches")
