"""Opening the ledger database: URL rules, SQLite pragmas, and migrations applied on first use.

Workers start in parallel, so the automatic upgrade is serialised: a transaction-scoped
advisory lock on PostgreSQL, a file lock beside the database on SQLite. Without it two
workers on a fresh database would both try to create the tables and one would crash.

Alembic is imported only when a database is not at `HEAD` already: it costs about as much
CPU as SQLAlchemy itself to import, and every `pipeline` process opens the ledger, nearly
always on a database that is current.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import DatabaseUnavailable, SettingsError
from pipeline.resources import migrations_path
from pipeline.settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision in migrations/versions/. A database already there is opened without
# loading Alembic; tests/ledger/test_schema_migrations.py fails when a migration is added
# and this is not moved with it.
HEAD = "0008"

# Any fixed 64-bit number: the key of the PostgreSQL advisory lock that guards migrations.
_PG_MIGRATION_LOCK = 0x706970656C696E65  # "pipeline"
_SQLITE_BUSY_TIMEOUT_MS = 10_000

_upgraded: set[str] = set()
_upgrade_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://) and pick the psycopg 3 driver."""
    for plain in ("postgres://", "postgresql://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return normalize_url(settings.database_url)
    return f"sqlite:///{settings.sqlite_path}"


def alembic_config(url: str) -> Config:
    """The Alembic config built in code: there is deliberately no alembic.ini to find."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_path()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def create_ledger_engine(url: str, *, upgrade: bool = True) -> Engine:
    """An engine for `url`, migrated to head unless `upgrade=False`.

    PostgreSQL connections are pre-pinged so a connection killed by a database restart is
    noticed before use (and the recorder can fall back to its Redis buffer instead of hanging).
    """
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise SettingsError(
            f"PIPELINE_DATABASE_URL: {exc}; give a URL such as "
            "postgresql://user@host/dbname or sqlite:///path/to/pipeline.db"
        ) from None
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
    elif parsed.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = {"connect_timeout": 5}
    try:
        engine = create_engine(url, **kwargs)
    except NoSuchModuleError as exc:  # an unknown scheme (postgress://) or a missing driver
        raise SettingsError(
            f"PIPELINE_DATABASE_URL: no database driver for "
            f"{parsed.render_as_string(hide_password=True)} ({exc}); use postgresql:// or "
            "sqlite:///, or install the driver the URL names"
        ) from None
    except (ArgumentError, ImportError) as exc:
        raise DatabaseUnavailable(
            f"cannot open the ledger database {parsed.render_as_string(hide_password=True)}: "
            f"{exc.__class__.__name__}: {exc} — check PIPELINE_DATABASE_URL"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if upgrade:
        ensure_upgraded(engine)
    return engine


def get_engine(settings: Settings, *, upgrade: bool = True) -> Engine:
    return create_ledger_engine(database_url(settings), upgrade=upgrade)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def head_revision() -> str | None:
    """The newest revision Alembic finds in migrations/versions/ (loads Alembic)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at, None for a database Alembic never touched."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _at_head(engine: Engine) -> bool:
    """Whether the database is at `HEAD`, read with plain SQL (no Alembic, no lock). False
    when the version table is missing or unreadable: the locked upgrade path decides then."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:
        return False
    return [tuple(row) for row in rows] == [(HEAD,)]


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".migrate-lock")
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade(engine: Engine) -> str | None:
    """Apply every pending migration under the migration lock; returns the revision now current."""
    url = engine.url
    try:
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            with _file_lock(Path(url.database)), engine.begin() as conn:
                return _upgrade_on(engine, conn)
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            return _upgrade_on(engine, conn)
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(
            f"cannot open the ledger database {url.render_as_string(hide_password=True)}: "
            f"{exc.__class__.__name__}: {str(exc).splitlines()[0]} — check PIPELINE_DATABASE_URL "
            "and that the database server is running"
        ) from exc


def _upgrade_on(engine: Engine, conn: Connection) -> str | None:
    from alembic import command

    head = head_revision()
    if current_revision(conn) == head:
        return head
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    return current_revision(conn)


def ensure_upgraded(engine: Engine) -> None:
    """Migrate once per database per process; later engines for the same URL skip the check."""
    key = engine.url.render_as_string(hide_password=False)
    with _upgrade_lock:
        if key in _upgraded:
            return
        if not _at_head(engine):
            upgrade(engine)
        _upgraded.add(key)
