"""llm_calls.mode: interactive (generateContent) or batch (a Gemini batch job, half price)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot add a NOT NULL column with ALTER TABLE otherwise.
    with op.batch_alter_table("llm_calls") as batch:
        batch.add_column(
            sa.Column("mode", sa.String(16), nullable=False, server_default="interactive")
        )


def downgrade() -> None:
    with op.batch_alter_table("llm_calls") as batch:
        batch.drop_column("mode")
