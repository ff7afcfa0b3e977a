"""batch_documents: every document of a batch, also those answered by a run of another batch

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batch_documents",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("document_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=500), nullable=True),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("prompt_version", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "document_id", name=op.f("pk_batch_documents")),
    )
    op.create_index(op.f("ix_batch_documents_job_id"), "batch_documents", ["job_id"])
    # Batches recorded before this table: their documents' root jobs (a long document's
    # parts and merge are `<root>-reduce…` and stay out).
    op.execute(
        """
        INSERT INTO batch_documents (batch_id, document_id, job_id, name, created_at)
        SELECT j.batch_id, j.document_id, MIN(j.id), MIN(d.file_name), MIN(j.created_at)
        FROM jobs j LEFT JOIN documents d ON d.id = j.document_id
        WHERE j.batch_id IS NOT NULL AND j.document_id IS NOT NULL
          AND j.id NOT LIKE '%-reduce%'
        GROUP BY j.batch_id, j.document_id
        """
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_batch_documents_job_id"), table_name="batch_documents")
    op.drop_table("batch_documents")
