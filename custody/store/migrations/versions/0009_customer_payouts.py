"""Customer payouts: customers, address books, operators' approvals of held withdrawals, customer and unlisted
window usage, and on each withdrawal its customer, destination kind and the backend's signed request.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

AMOUNT = sa.String(length=80).with_variant(sa.Numeric(78, 0), "postgresql")
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("withdrawals") as batch:
        batch.add_column(sa.Column("customer", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("destination_kind", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("request", sa.Text(), nullable=True))
        batch.create_index("ix_withdrawals_customer_asset_created", ["customer", "asset", "created_at"])
    op.create_table(
        "scoped_usage",
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.PrimaryKeyConstraint("scope", "asset", "at"),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("book_only", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "address_book",
        sa.Column("id", SERIAL, primary_key=True, autoincrement=True),
        sa.Column("customer", sa.String(length=64), nullable=False),
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("added_at", sa.BigInteger(), nullable=False),
        sa.Column("active_at", sa.BigInteger(), nullable=False),
        sa.Column("removed_at", sa.BigInteger(), nullable=True),
        sa.Column("announced", sa.Boolean(), nullable=False),
        sa.Column("added_by", sa.String(length=64), nullable=False),
        sa.Column("request", sa.Text(), nullable=True),
    )
    op.create_index("ix_address_book_lookup", "address_book", ["customer", "asset", "address"])
    op.create_index("ix_address_book_pending", "address_book", ["announced", "active_at"])
    op.create_table(
        "approvals",
        sa.Column("withdrawal_id", sa.String(length=36), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("withdrawal_id", "operator"),
    )


def downgrade() -> None:
    op.drop_table("approvals")
    op.drop_index("ix_address_book_pending", "address_book")
    op.drop_index("ix_address_book_lookup", "address_book")
    op.drop_table("address_book")
    op.drop_table("customers")
    op.drop_table("scoped_usage")
    with op.batch_alter_table("withdrawals") as batch:
        batch.drop_index("ix_withdrawals_customer_asset_created")
        batch.drop_column("request")
        batch.drop_column("destination_kind")
        batch.drop_column("customer")
