"""A PostgreSQL database for the tests whose subject needs one (LISTEN/NOTIFY, a server to
cut), on both runs, as tests/faults/conftest.py does: the suite's own database on the
PostgreSQL run, and on the SQLite run a database of their own on the local server
(GENGATE_FAULTS_POSTGRES_URL names the server; the run's CI starts one).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text

from app.db.migrate import sync_url, upgrade_database
from tests.support.backends import ON_POSTGRES, async_url

SERVER_URL = os.environ.get("GENGATE_FAULTS_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


@contextmanager
def postgres_template(template_database_url: str, *, name: str) -> Iterator[str]:
    """A migrated PostgreSQL database: the suite's (`template_database_url`) on the
    PostgreSQL run, else a new one named `name_<random>`, dropped afterwards."""
    if ON_POSTGRES:
        yield template_database_url
        return
    database = f"{name}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        sync_url(async_url(f"{SERVER_URL}/postgres")), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    url = async_url(f"{SERVER_URL}/{database}")
    try:
        upgrade_database(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
