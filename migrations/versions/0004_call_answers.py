"""call_answers: paid answers by call key, so an answer outlives a Redis outage or data loss

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call_answers",
        sa.Column("call_key", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=True),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("call_key", name=op.f("pk_call_answers")),
    )


def downgrade() -> None:
    op.drop_table("call_answers")
