"""The cold wallet's owners' names, from their cards, for `custody batch list` and the status to show.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cold_wallets") as batch:
        batch.add_column(sa.Column("owner_names", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cold_wallets") as batch:
        batch.drop_column("owner_names")
