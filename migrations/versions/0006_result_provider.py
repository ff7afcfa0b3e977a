"""results.provider, batch_documents.provider and llm_calls.provider: who answered a stored
result, who a batch's member run asks, and who answered each call. A result is found only
for its own provider, so an emulator rehearsal's (or the offline demo's) result never stands
for Gemini's in a batch that shares the ledger, nor the reverse; and a cost report tells a
rehearsal's priced-but-never-billed calls from Gemini's.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "uq_results_document_id_model_prompt_version"
_NEW = "uq_results_document_id_model_prompt_version_provider"


def _provider(data: object) -> str:
    """The provider a stored result names in produced_by ("" when it names none)."""
    if isinstance(data, str):
        data = json.loads(data)
    produced = data.get("produced_by") if isinstance(data, dict) else None
    return str(produced.get("provider") or "") if isinstance(produced, dict) else ""


def upgrade() -> None:
    # batch_alter_table: SQLite cannot add a NOT NULL column or change a constraint otherwise.
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("provider", sa.String(16), nullable=False, server_default=""))
    results = sa.table("results", sa.column("id", sa.Integer), sa.column("data", sa.JSON),
                       sa.column("provider", sa.String))  # fmt: skip
    conn = op.get_bind()
    for row in conn.execute(sa.select(results.c.id, results.c.data)).all():
        conn.execute(results.update().where(results.c.id == row.id)
                     .values(provider=_provider(row.data)))  # fmt: skip
    with op.batch_alter_table("results") as batch:
        batch.drop_constraint(_OLD, type_="unique")
        batch.create_unique_constraint(_NEW, ["document_id", "model", "prompt_version",
                                              "provider"])  # fmt: skip
    with op.batch_alter_table("batch_documents") as batch:
        batch.add_column(sa.Column("provider", sa.String(16), nullable=True))
    with op.batch_alter_table("llm_calls") as batch:
        batch.add_column(sa.Column("provider", sa.String(16), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("llm_calls") as batch:
        batch.drop_column("provider")
    with op.batch_alter_table("batch_documents") as batch:
        batch.drop_column("provider")
    with op.batch_alter_table("results") as batch:
        batch.drop_constraint(_NEW, type_="unique")
        batch.create_unique_constraint(_OLD, ["document_id", "model", "prompt_version"])
        batch.drop_column("provider")
