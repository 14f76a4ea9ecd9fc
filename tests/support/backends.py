"""Which database and Redis the suite runs against, and how each test gets a clean one.

SQLite: the schema is migrated once into a template file, and each test gets a copy.
PostgreSQL: the schema is migrated once into a fresh `public` schema, and each test
starts from emptied tables. Redis: each test gets its own key prefix.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sqlalchemy import create_engine, text

from app.db.migrate import sync_url, upgrade_database
from app.db.models import metadata

TEST_DATABASE_URL = os.environ.get("GENGATE_TEST_DATABASE_URL") or None
TEST_REDIS_URL = os.environ.get("GENGATE_TEST_REDIS_URL") or None
ON_POSTGRES = bool(TEST_DATABASE_URL)


def async_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def prepare_template(workdir: Path) -> str:
    """Migrate a brand-new schema once per test session; returns its URL."""
    if TEST_DATABASE_URL:
        url = async_url(TEST_DATABASE_URL)
        engine = create_engine(sync_url(url))
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        upgrade_database(url)
        return url
    path = workdir / "template.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade_database(url)
    return url


def fresh_database(template_url: str, workdir: Path) -> str:
    """A database with the migrated schema and no rows, for one test."""
    if template_url.startswith("sqlite"):
        source = Path(template_url.split("///", 1)[1])
        target = workdir / "test.db"
        shutil.copyfile(source, target)
        return f"sqlite+aiosqlite:///{target}"
    engine = create_engine(sync_url(template_url))
    tables = ", ".join(t.name for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return template_url
