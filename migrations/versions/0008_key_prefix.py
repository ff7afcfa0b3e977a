"""llm_calls.key_prefix and jobs.key_prefix: the queue key prefix (PIPELINE_KEY_PREFIX) whose
worker or submitter wrote the row. One ledger serves every prefix of a home (a rehearsal
beside the real runs); the reconciler closes only its own prefix's rows, since another
prefix's live job is not in its Redis keys and looked gone (its calls were booked abandoned
mid-call, its jobs marked lost). Rows from before have NULL (reconciled as before).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("llm_calls", "jobs"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("key_prefix", sa.String(100), nullable=True))


def downgrade() -> None:
    for table in ("llm_calls", "jobs"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("key_prefix")
