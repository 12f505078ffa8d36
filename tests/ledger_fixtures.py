"""Pytest plugin for the ledger and watchtower tests: a real PostgreSQL, and ledger URLs.

Test modules load it with ``pytest_plugins = ["ledger_fixtures"]`` so the server is one per
session however many modules use it. ``postgres_url`` starts a throw-away server through
tools/postgres.py (installing Debian's package if the machine has none), unless
``MICROPAY_TEST_POSTGRES_URL`` points at one already running. ``ledger_url`` runs a test once
per back end: a fresh SQLite file, and a fresh schema in the PostgreSQL server (marked
``standalone``: it uses a service the suite starts itself).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from postgres import URL_VARIABLE, throwaway_postgres  # noqa: E402

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.standalone),
]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for this session (its superuser's URL)."""
    existing = os.environ.get(URL_VARIABLE)
    if existing:
        yield existing
        return
    with throwaway_postgres() as server:
        yield server.url


def schema_url(server_url: str, schema: str) -> str:
    """The server URL with ``schema`` as the search path: one isolated ledger per test."""
    options = quote(f"-csearch_path={schema}", safe="")
    return f"{server_url}{'&' if '?' in server_url else '?'}options={options}"


@pytest.fixture
def postgres_ledger_url(postgres_url: str) -> Iterator[str]:
    """A URL of an empty schema, dropped after the test."""
    import psycopg

    schema = f"ledger_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    yield schema_url(postgres_url, schema)
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh ledger URL, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("postgres_ledger_url")
    return url
