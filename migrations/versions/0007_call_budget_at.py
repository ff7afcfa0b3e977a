"""llm_calls.budget_at: the moment whose UTC day and month a call's budget hold counts in
(its reservation's). The row's started_at is read just after the reservation, so a call
reserved a moment before midnight UTC started in the next day; the reconciler's floor
counted it there, not where its hold was. Rows from before have NULL (started_at stands in).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("llm_calls") as batch:
        batch.add_column(sa.Column("budget_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("llm_calls") as batch:
        batch.drop_column("budget_at")
