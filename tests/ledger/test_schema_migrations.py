"""Models vs migrations, automatic upgrade, and `pipeline db upgrade`, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.ledger import db
from pipeline.ledger.models import Base
from tests.ledger.conftest import BACKENDS, database_url_for


@pytest.fixture(params=BACKENDS)
def ledger_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None
) -> Iterator[str]:
    with database_url_for(request.param, tmp_path, postgres_url) as url:
        yield url


def test_migrations_match_models(ledger_url: str) -> None:
    engine = db.create_ledger_engine(ledger_url, upgrade=False)
    try:
        db.upgrade(engine)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(ctx, Base.metadata)
            assert db.current_revision(conn) == db.head_revision()
        assert diffs == [], f"models and migrations differ; write a migration: {diffs}"
    finally:
        engine.dispose()


def test_engine_upgrades_on_first_use(ledger_url: str) -> None:
    engine = db.create_ledger_engine(ledger_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"batches", "documents", "jobs", "llm_calls", "results"} <= tables
    finally:
        engine.dispose()


def test_concurrent_upgrades_do_not_race(ledger_url: str) -> None:
    """Two workers starting at once on an empty database: both end at head, neither fails."""
    engines = [db.create_ledger_engine(ledger_url, upgrade=False) for _ in range(3)]
    results: list[object] = []
    barrier = threading.Barrier(len(engines))

    def run(engine: object) -> None:
        barrier.wait()
        try:
            results.append(db.upgrade(engine))  # type: ignore[arg-type]
        except Exception as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for engine in engines:
        engine.dispose()
    assert results == [db.head_revision()] * len(engines)


def test_normalize_url_picks_psycopg() -> None:
    assert db.normalize_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalize_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalize_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    engine = db.create_ledger_engine(f"sqlite:///{tmp_path / 'sub' / 'l.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) > 0
    finally:
        engine.dispose()


def test_db_upgrade_command(
    ledger_url: str, pipeline_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = ledger_url.replace("postgresql+psycopg://", "postgresql://")
    monkeypatch.setenv("PIPELINE_DATABASE_URL", plain)
    from pipeline.settings import get_settings

    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"is at revision {db.head_revision()}" in result.output
    engine = db.create_ledger_engine(ledger_url, upgrade=False)
    try:
        with engine.connect() as conn:
            assert db.current_revision(conn) == db.head_revision()
    finally:
        engine.dispose()


def test_the_head_constant_is_the_newest_migration() -> None:
    """`db.HEAD` lets a current database open without loading Alembic; a migration added
    without moving it would leave databases un-upgraded."""
    assert db.HEAD == db.head_revision()


def test_a_current_database_opens_without_alembic(ledger_url: str, tmp_path: Path) -> None:
    """A second process opening a database at head never imports Alembic (its import costs
    about as much CPU as SQLAlchemy's); one opening an empty database migrates it."""
    probe = (
        "import sys; from pipeline.ledger import db; "
        f"e = db.create_ledger_engine({ledger_url!r}); "
        "print(db.HEAD, any(m == 'alembic' or m.startswith('alembic.') for m in sys.modules))"
    )
    first = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           timeout=120, check=True)  # fmt: skip
    second = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, check=True)  # fmt: skip
    assert first.stdout.split() == [db.HEAD, "True"], first.stderr
    assert second.stdout.split() == [db.HEAD, "False"], second.stderr


def test_results_stored_before_0006_get_the_provider_they_name(ledger_url: str) -> None:
    """Migration 0006 fills results.provider from each stored result's produced_by, and the
    same document may then hold one result per provider."""
    from alembic import command
    from sqlalchemy import text

    engine = db.create_ledger_engine(ledger_url, upgrade=False)
    try:
        with engine.begin() as conn:
            cfg = db.alembic_config(engine.url.render_as_string(hide_password=False))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0005")
            rows = [("d1", '{"produced_by": {"provider": "offline"}}'),
                    ("d2", '{"summary": "from before results named a provider"}')]  # fmt: skip
            for doc, data in rows:
                conn.execute(text("INSERT INTO results (document_id, model, prompt_version, "
                                  "data, created_at) VALUES (:d, 'm', 'v', :data, "
                                  "CURRENT_TIMESTAMP)"), {"d": doc, "data": data})  # fmt: skip
            command.upgrade(cfg, "head")
            got = dict(conn.execute(text("SELECT document_id, provider FROM results")).all())
            assert got == {"d1": "offline", "d2": ""}
            conn.execute(text("INSERT INTO results (document_id, model, prompt_version, "
                              "provider, data, created_at) VALUES ('d1', 'm', 'v', 'gemini', "
                              "'{}', CURRENT_TIMESTAMP)"))  # fmt: skip
    finally:
        engine.dispose()
