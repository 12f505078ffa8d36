"""The server back end: PostgreSQL through psycopg 3, for sites that run several servers.

Every server process opens the same database; the conditional upsert runs under
PostgreSQL's row lock, whose ``ON CONFLICT DO UPDATE ... WHERE`` sees the newest committed
row even under READ COMMITTED, so concurrent accepts neither lose the higher voucher nor
count an increment twice. Commits are durable as the server is configured
(``synchronous_commit`` is on by default).

Amounts are ``NUMERIC(78, 0)``: exact for any uint256 and ordered as numbers. psycopg is an
optional dependency (``pip install 'micropay[postgres]'``), imported only when a
``postgresql://`` ledger is opened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from micropay.errors import LedgerError
from micropay.ledger._authorizations import POSTGRES_IDS_TABLE, POSTGRES_TABLE
from micropay.ledger._store import Execute, Store

_T = TypeVar("_T")

# Serialises schema creation between processes opening a fresh database at once
# (concurrent CREATE TABLE IF NOT EXISTS can otherwise collide in the catalog).
_SCHEMA_LOCK = 0x6D6963726F706179  # "micropay"


def _charges_table(name: str) -> str:
    """The charges table (version 4: no longer unique per charged total, which a zero metered
    charge or a refund repeats; the ceiling each charge was made under beside it)."""
    return f"""CREATE TABLE IF NOT EXISTS {name} (
        receipt_id BYTEA PRIMARY KEY,
        channel_id BYTEA NOT NULL,
        payer TEXT NOT NULL,
        asset TEXT NOT NULL,
        resource TEXT NOT NULL,
        amount NUMERIC(78, 0) NOT NULL,
        cumulative_amount NUMERIC(78, 0) NOT NULL,
        issued_at BIGINT NOT NULL,
        signature BYTEA NOT NULL,
        ceiling NUMERIC(78, 0) NOT NULL
    )"""


_CHARGES = [
    _charges_table("charges"),
    "CREATE INDEX IF NOT EXISTS charges_by_time ON charges (issued_at)",
]
_REFUNDS = [
    """CREATE TABLE IF NOT EXISTS refunds (
        channel_id BYTEA NOT NULL,
        amount NUMERIC(78, 0) NOT NULL,
        reason TEXT NOT NULL,
        refunded_at DOUBLE PRECISION NOT NULL,
        charged_amount NUMERIC(78, 0) NOT NULL,
        refunded_amount NUMERIC(78, 0) NOT NULL,
        PRIMARY KEY (channel_id, refunded_amount)
    )""",
]
_CHARGE_COLUMNS = (
    "receipt_id, channel_id, payer, asset, resource, amount, cumulative_amount, issued_at, "
    "signature"
)

_SCHEMA = [
    f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})",
    "CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS best_vouchers (
        channel_id BYTEA PRIMARY KEY,
        chain_id TEXT NOT NULL,
        verifying_contract TEXT NOT NULL,
        payer TEXT NOT NULL,
        payee TEXT NOT NULL,
        token TEXT NOT NULL,
        authorizer TEXT NOT NULL,
        withdraw_delay BIGINT NOT NULL,
        salt BYTEA NOT NULL,
        cumulative_amount NUMERIC(78, 0) NOT NULL,
        signature BYTEA NOT NULL,
        replaced_amount NUMERIC(78, 0) NOT NULL,
        accepted_at DOUBLE PRECISION NOT NULL,
        owed_since DOUBLE PRECISION,
        covered_amount NUMERIC(78, 0),
        covered_signature BYTEA,
        charged_amount NUMERIC(78, 0) NOT NULL,
        refunded_amount NUMERIC(78, 0) NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS chain_blocks (number BIGINT PRIMARY KEY, hash BYTEA NOT NULL)",
    """CREATE TABLE IF NOT EXISTS chain_events (
        block_number BIGINT NOT NULL,
        log_index INTEGER NOT NULL,
        channel_id BYTEA NOT NULL,
        kind TEXT NOT NULL,
        total_deposited NUMERIC(78, 0),
        total_claimed NUMERIC(78, 0),
        closes_at BIGINT,
        finished SMALLINT NOT NULL,
        PRIMARY KEY (block_number, log_index, channel_id)
    )""",
    "CREATE INDEX IF NOT EXISTS chain_events_by_channel ON chain_events (channel_id)",
    # exact payments: the claim on each authorization (micropay/ledger/_authorizations.py)
    POSTGRES_TABLE,
    POSTGRES_IDS_TABLE,
    *_CHARGES,
    *_REFUNDS,
]

# Version 2: the best voucher the confirmed deposit covers (a v1 ledger never kept one).
# Version 3: the charges (a v2 ledger kept none); bind's CREATE ... IF NOT EXISTS made the
# table already (in its version 4 form), the step is named for the record.
# Version 4: charged and refunded totals beside the best voucher (a v3 ledger charged every
# voucher whole, so its charged total is its best voucher's), the refunds, and the charges
# rebuilt without their uniqueness per charged total and with the ceiling (a v3 charge's
# ceiling was its charged total).
_UPGRADES = {
    4: [
        "ALTER TABLE best_vouchers ADD COLUMN charged_amount NUMERIC(78, 0)",
        "ALTER TABLE best_vouchers ADD COLUMN refunded_amount NUMERIC(78, 0)",
        "UPDATE best_vouchers SET charged_amount = cumulative_amount, refunded_amount = 0",
        _charges_table("charges_v4"),
        f"INSERT INTO charges_v4 ({_CHARGE_COLUMNS}, ceiling) "
        f"SELECT {_CHARGE_COLUMNS}, cumulative_amount FROM charges",
        "DROP TABLE charges",
        "ALTER TABLE charges_v4 RENAME TO charges",
        *_CHARGES,
        *_REFUNDS,
    ],
    3: _CHARGES,
    2: [
        "ALTER TABLE best_vouchers ADD COLUMN covered_amount NUMERIC(78, 0)",
        "ALTER TABLE best_vouchers ADD COLUMN covered_signature BYTEA",
    ],
}


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class PostgresStore(Store):
    """A ledger in a PostgreSQL database (the tables live in the connection's search path)."""

    scheme = "postgresql"
    blocking_reads = True
    data_modifying_ctes = True

    def __init__(self, url: str, max_connections: int = 8) -> None:
        super().__init__(redact(url), max_connections)
        try:
            import psycopg
        except ImportError:
            raise LedgerError(
                "a postgresql:// ledger needs psycopg 3: pip install 'micropay[postgres]'"
            ) from None
        self._psycopg = psycopg
        self._url = url
        self._statements: dict[str, str] = {}

    def _sql(self, sql: str) -> str:
        converted = self._statements.get(sql)
        if converted is None:
            if "%" in sql:
                raise AssertionError("shared ledger SQL must not contain '%'")
            converted = sql.replace("?", "%s")
            self._statements[sql] = converted
        return converted

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        except self._psycopg.Error as err:
            raise LedgerError(f"cannot connect to the ledger at {self.location}: {err}") from err

    def _close_connection(self, connection: Any) -> None:
        connection.close()

    def _usable(self, connection: Any) -> bool:
        return not (connection.closed or connection.broken)

    def _read(self, connection: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            rows: list[tuple[Any, ...]] = connection.execute(self._sql(sql), params).fetchall()
        except self._psycopg.Error as err:
            raise LedgerError(f"{self.location}: {err}") from err
        return rows

    def _transact(self, connection: Any, work: Callable[[Execute], _T]) -> _T:
        def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            cursor = connection.execute(self._sql(sql), params)
            rows: list[tuple[Any, ...]] = cursor.fetchall() if cursor.description else []
            return rows

        try:
            with connection.transaction():
                return work(execute)
        except self._psycopg.Error as err:
            raise LedgerError(f"{self.location}: {err}") from err

    def _schema(self) -> list[str]:
        return _SCHEMA

    def _upgrades(self) -> dict[int, list[str]]:
        return _UPGRADES

    def check_integrity(self) -> None:
        """The server guards its own pages; rows are checked as they are read."""

    def encode_amount(self, amount: int) -> Decimal:
        return Decimal(amount)

    def decode_amount(self, value: Any) -> int:
        if not isinstance(value, Decimal) or value != value.to_integral_value():
            raise ValueError("not an integer")
        return int(value)
