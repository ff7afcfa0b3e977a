"""llm_calls.usage_missing: the provider left usage out and the row is booked at its bound

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot add a NOT NULL column with ALTER TABLE otherwise.
    with op.batch_alter_table("llm_calls") as batch:
        batch.add_column(
            sa.Column("usage_missing", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("llm_calls") as batch:
        batch.drop_column("usage_missing")
