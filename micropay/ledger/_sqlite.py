"""The embedded back end: one SQLite file, in WAL mode, fsynced at every commit.

``synchronous=FULL`` makes each commit sync the write-ahead log before returning, so a voucher
the ledger has acknowledged survives a crash of the process or the machine. WAL lets readers
go on while one writer commits, and lets several processes share the file. Accepts that
arrive together share one commit, and so one sync (group commit, :mod:`micropay.ledger._group`).

Every write transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock before
reading, so the compare-and-swap of a voucher never reads a snapshot another writer has just
made stale (which SQLite would report as ``SQLITE_BUSY_SNAPSHOT`` instead of waiting).

Amounts are 78-digit zero-padded decimal text: SQLite integers stop at 2**63, and text of one
length sorts as the numbers do, so ``>`` and ``MAX`` in SQL stay exact for any uint256.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from micropay.errors import LedgerCorruptError, LedgerError
from micropay.ledger._authorizations import SQLITE_IDS_TABLE, SQLITE_TABLE
from micropay.ledger._store import Execute, Store

_T = TypeVar("_T")
_DIGITS = 78  # len(str(2**256 - 1))
_BUSY_TIMEOUT_MS = 60_000
_HEADER = b"SQLite format 3\x00"


def _charges_table(name: str) -> str:
    """The charges table (version 4: no longer unique per charged total, which a zero metered
    charge or a refund repeats; the ceiling each charge was made under beside it)."""
    return f"""CREATE TABLE IF NOT EXISTS {name} (
        receipt_id BLOB PRIMARY KEY,
        channel_id BLOB NOT NULL,
        payer TEXT NOT NULL,
        asset TEXT NOT NULL,
        resource TEXT NOT NULL,
        amount TEXT NOT NULL,
        cumulative_amount TEXT NOT NULL,
        issued_at INTEGER NOT NULL,
        signature BLOB NOT NULL,
        ceiling TEXT NOT NULL
    )"""


_CHARGES = [
    _charges_table("charges"),
    "CREATE INDEX IF NOT EXISTS charges_by_time ON charges (issued_at)",
]
_REFUNDS = [
    """CREATE TABLE IF NOT EXISTS refunds (
        channel_id BLOB NOT NULL,
        amount TEXT NOT NULL,
        reason TEXT NOT NULL,
        refunded_at REAL NOT NULL,
        charged_amount TEXT NOT NULL,
        refunded_amount TEXT NOT NULL,
        PRIMARY KEY (channel_id, refunded_amount)
    )""",
]
_CHARGE_COLUMNS = (
    "receipt_id, channel_id, payer, asset, resource, amount, cumulative_amount, issued_at, "
    "signature"
)

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS best_vouchers (
        channel_id BLOB PRIMARY KEY,
        chain_id TEXT NOT NULL,
        verifying_contract TEXT NOT NULL,
        payer TEXT NOT NULL,
        payee TEXT NOT NULL,
        token TEXT NOT NULL,
        authorizer TEXT NOT NULL,
        withdraw_delay INTEGER NOT NULL,
        salt BLOB NOT NULL,
        cumulative_amount TEXT NOT NULL,
        signature BLOB NOT NULL,
        replaced_amount TEXT NOT NULL,
        accepted_at REAL NOT NULL,
        owed_since REAL,
        covered_amount TEXT,
        covered_signature BLOB,
        charged_amount TEXT NOT NULL,
        refunded_amount TEXT NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS chain_blocks (number INTEGER PRIMARY KEY, hash BLOB NOT NULL)",
    """CREATE TABLE IF NOT EXISTS chain_events (
        block_number INTEGER NOT NULL,
        log_index INTEGER NOT NULL,
        channel_id BLOB NOT NULL,
        kind TEXT NOT NULL,
        total_deposited TEXT,
        total_claimed TEXT,
        closes_at INTEGER,
        finished INTEGER NOT NULL,
        PRIMARY KEY (block_number, log_index, channel_id)
    )""",
    "CREATE INDEX IF NOT EXISTS chain_events_by_channel ON chain_events (channel_id)",
    # exact payments: the claim on each authorization (micropay/ledger/_authorizations.py)
    SQLITE_TABLE,
    SQLITE_IDS_TABLE,
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
        "ALTER TABLE best_vouchers ADD COLUMN charged_amount TEXT",
        "ALTER TABLE best_vouchers ADD COLUMN refunded_amount TEXT",
        "UPDATE best_vouchers SET charged_amount = cumulative_amount, "
        f"refunded_amount = '{0:0{_DIGITS}d}'",
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
        "ALTER TABLE best_vouchers ADD COLUMN covered_amount TEXT",
        "ALTER TABLE best_vouchers ADD COLUMN covered_signature BLOB",
    ],
}


class SqliteStore(Store):
    """A ledger in one SQLite file."""

    scheme = "sqlite"
    blocking_reads = False

    def __init__(self, path: Path, max_connections: int = 8, *, create: bool = True) -> None:
        super().__init__(str(path), max_connections)
        self.path = path
        if not create and not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise LedgerError(f"no voucher ledger at {path}: the file {what}")
        if not path.parent.is_dir():
            raise LedgerError(f"cannot create the ledger {path}: {path.parent} is not a directory")
        if path.is_dir():
            raise LedgerError(f"the ledger path {path} is a directory")
        self._check_header()

    def _check_header(self) -> None:
        """Name the commonest damage before SQLite's terser 'file is not a database'."""
        if not self.path.exists():
            return
        with self.path.open("rb") as file:
            header = file.read(len(_HEADER))
        if header and header != _HEADER[: len(header)]:
            raise LedgerCorruptError(f"{self.path} is not a SQLite database (wrong file header)")
        if 0 < len(header) < len(_HEADER):
            raise LedgerCorruptError(f"{self.path} is truncated: shorter than a SQLite header")

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=60.0
            )
            connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LedgerError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            connection.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as err:
            raise self._translate(err) from err
        return connection

    def _close_connection(self, connection: Any) -> None:
        # Best effort: in autocommit mode nothing is pending that closing could lose.
        with contextlib.suppress(sqlite3.Error):
            connection.close()

    def _translate(self, err: sqlite3.Error) -> LedgerError:
        name = str(getattr(err, "sqlite_errorname", ""))
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
            detail = "not a SQLite database" if name == "SQLITE_NOTADB" else str(err)
            return LedgerCorruptError(f"{self.path} is damaged: {detail}")
        return LedgerError(f"{self.path}: {err}")

    def _read(self, connection: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            rows: list[tuple[Any, ...]] = connection.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise self._translate(err) from err
        return rows

    def _transact(self, connection: Any, work: Callable[[Execute], _T]) -> _T:
        def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            rows: list[tuple[Any, ...]] = connection.execute(sql, params).fetchall()
            return rows

        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(execute)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except sqlite3.Error as err:
            raise self._translate(err) from err
        return result

    def _schema(self) -> list[str]:
        return _SCHEMA

    def _upgrades(self) -> dict[int, list[str]]:
        return _UPGRADES

    def check_integrity(self) -> None:
        """``PRAGMA quick_check`` reads every page: a truncated or torn file shows up here, at
        open, rather than as a missing voucher later."""
        rows = self.read("PRAGMA quick_check")
        problems = [str(row[0]) for row in rows if row[0] != "ok"]
        if problems:
            shown = "; ".join(problems[:3])
            raise LedgerCorruptError(f"{self.path} failed SQLite's integrity check: {shown}")

    def encode_amount(self, amount: int) -> str:
        return str(amount).zfill(_DIGITS)  # as f"{amount:078d}", in a third of the time

    def decode_amount(self, value: Any) -> int:
        if not isinstance(value, str) or len(value) != _DIGITS:
            raise ValueError("not a 78-digit decimal")
        if not (value.isascii() and value.isdigit()):
            raise ValueError("not a 78-digit decimal")
        return int(value)
