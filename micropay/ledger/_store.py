"""The storage half of the ledger: one set of SQL statements over two database back ends.

A :class:`Store` knows tables and transactions, not vouchers: it moves typed rows in and out
and leaves checking them (signatures, domains) to :class:`~micropay.ledger.Ledger`. The data
statements are written once here, in the SQL that SQLite and PostgreSQL share (``?``
placeholders; a back end may rewrite them); each back end adds its own table definitions,
connections, transactions and the encoding of 256-bit amounts.

Tables:

- ``ledger_meta``: schema version and the voucher domain the ledger is bound to;
- ``best_vouchers``: per channel, its configuration, the best voucher and the best voucher
  *covered* by the confirmed deposit (``covered_amount``, ``covered_signature``; NULL until a
  covered one is accepted). Accepting is one
  ``INSERT ... ON CONFLICT DO UPDATE ... WHERE new > stored RETURNING replaced_amount``: the
  database compares and swaps under its own row lock, and ``replaced_amount`` (the amount the
  new voucher replaced) yields the increment without a second read that could race. A
  covered voucher fills the covered columns in the same statement; any other leaves them;
- ``chain_blocks`` / ``chain_events``: what the chain follower has read (block hashes for
  reorg detection, and per-channel totals by block, so a rollback is a ``DELETE``);
- ``charges``: one row per charged request, the site-signed receipt it was answered with
  (receipt id, channel, payer, asset, resource, amount, cumulative total, time,
  signature). It is written in the transaction of the voucher accept that charged it, so
  there is never a receipt without its row nor a charge counted twice (a channel's
  cumulative totals are unique).

Schema versions (``ledger_meta.schema_version``): 1, the first; 2 adds the covered voucher
columns; 3 adds ``charges``. Opening an older ledger upgrades it in place, in one
transaction, before anything else reads it; a newer one is refused.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from micropay.errors import LedgerCorruptError, LedgerError
from micropay.ledger._records import BlockRef, ChainEvent, ChainView, EventKind

SCHEMA_VERSION = 3
_T = TypeVar("_T")

Execute = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
"""Runs one statement inside the current transaction and returns its rows."""

_VOUCHER_NAMES = (
    "channel_id",
    "chain_id",
    "verifying_contract",
    "payer",
    "payee",
    "token",
    "authorizer",
    "withdraw_delay",
    "salt",
    "cumulative_amount",
    "signature",
    "accepted_at",
    "owed_since",
    "covered_amount",
    "covered_signature",
)
_VOUCHER_COLUMNS = ", ".join(_VOUCHER_NAMES)

# A NULL covered voucher in the new row keeps the stored one (COALESCE): only a voucher
# within the confirmed deposit may replace it.
_ACCEPT = f"""
INSERT INTO best_vouchers AS v ({_VOUCHER_COLUMNS}, replaced_amount)
VALUES ({", ".join("?" * (len(_VOUCHER_NAMES) + 1))})
ON CONFLICT (channel_id) DO UPDATE SET
    cumulative_amount = excluded.cumulative_amount,
    signature = excluded.signature,
    covered_amount = COALESCE(excluded.covered_amount, v.covered_amount),
    covered_signature = COALESCE(excluded.covered_signature, v.covered_signature),
    replaced_amount = v.cumulative_amount,
    accepted_at = excluded.accepted_at,
    owed_since = COALESCE(v.owed_since, excluded.owed_since)
WHERE excluded.cumulative_amount > v.cumulative_amount
RETURNING replaced_amount
"""
# Accepting over a stored amount read earlier (``over``): "none was stored" may only insert,
# an amount may only replace that amount.
_INSERT_NEW = (
    _ACCEPT[: _ACCEPT.index("ON CONFLICT")]
    + """ON CONFLICT (channel_id) DO NOTHING
RETURNING replaced_amount
"""
)
_REPLACE_READ = """
UPDATE best_vouchers SET
    cumulative_amount = ?,
    signature = ?,
    covered_amount = COALESCE(?, covered_amount),
    covered_signature = COALESCE(?, covered_signature),
    replaced_amount = cumulative_amount,
    accepted_at = ?,
    owed_since = COALESCE(owed_since, ?)
WHERE channel_id = ? AND cumulative_amount = ?
RETURNING replaced_amount
"""

_CHARGE_NAMES = (
    "receipt_id",
    "channel_id",
    "payer",
    "asset",
    "resource",
    "amount",
    "cumulative_amount",
    "issued_at",
    "signature",
)
_CHARGE_COLUMNS = ", ".join(_CHARGE_NAMES)
_INSERT_CHARGE = (
    f"INSERT INTO charges ({_CHARGE_COLUMNS}) VALUES ({', '.join('?' * len(_CHARGE_NAMES))})"
)

# A channel's view is the maximum of each total over its rows; a channel with no seed row has
# only some of its history here, so it has no view yet.
_VIEW_COLUMNS = """
SELECT channel_id, MAX(total_deposited), MAX(total_claimed), MAX(closes_at), MAX(finished),
       MAX(block_number)
FROM chain_events
"""
_SEEDED = f"HAVING MAX(CASE WHEN kind = '{EventKind.SEED.value}' THEN 1 ELSE 0 END) = 1"


@dataclass(frozen=True)
class VoucherRow:
    """One ``best_vouchers`` row, decoded to Python types but not yet checked."""

    channel_id: bytes
    chain_id: int
    verifying_contract: str
    payer: str
    payee: str
    token: str
    authorizer: str
    withdraw_delay: int
    salt: bytes
    cumulative_amount: int
    signature: bytes
    accepted_at: float
    owed_since: float | None
    covered_amount: int | None = None
    """The best voucher covered by the confirmed deposit (None: none was accepted)."""
    covered_signature: bytes | None = None


@dataclass(frozen=True)
class ChargeRow:
    """One ``charges`` row: a charged request and the receipt the site signed for it."""

    receipt_id: bytes
    channel_id: bytes
    payer: str
    asset: str
    resource: str
    amount: int
    cumulative_amount: int
    issued_at: int
    signature: bytes


class Store(ABC):
    """A ledger database: SQL shared by the back ends, over a small pool of connections."""

    scheme: ClassVar[str]
    """The URL scheme this back end serves."""

    def __init__(self, location: str, max_connections: int = 8) -> None:
        self.location = location
        """Where the data lives, for messages (a path, or a URL without its password)."""
        if type(max_connections) is not int or max_connections < 1:
            raise LedgerError(f"max_connections must be a positive integer: {max_connections!r}")
        self._max_connections = max_connections
        self._idle: list[Any] = []
        self._opened = 0
        self._available = threading.Condition()
        self._closed = False

    # -- what a back end provides ----------------------------------------------------------

    @abstractmethod
    def _connect(self) -> Any:
        """A new connection, configured, in autocommit mode."""

    @abstractmethod
    def _close_connection(self, connection: Any) -> None: ...

    def _usable(self, connection: Any) -> bool:
        """Whether a returned connection may be lent again (a broken one is replaced)."""
        return True

    @abstractmethod
    def _read(self, connection: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one read-only statement outside any explicit transaction."""

    @abstractmethod
    def _transact(self, connection: Any, work: Callable[[Execute], _T]) -> _T:
        """Run ``work`` in one write transaction: all its statements commit, or none do."""

    @abstractmethod
    def _schema(self) -> list[str]:
        """``CREATE ... IF NOT EXISTS`` statements for every table and index (current schema)."""

    @abstractmethod
    def _upgrades(self) -> dict[int, list[str]]:
        """Per schema version, the statements that bring a ledger of the version before it up
        to it (the tables exist: ``CREATE ... IF NOT EXISTS`` left them as they were)."""

    @abstractmethod
    def encode_amount(self, amount: int) -> Any:
        """A uint256 as the column stores it, ordered the way the integers are."""

    @abstractmethod
    def decode_amount(self, value: Any) -> int: ...

    @abstractmethod
    def check_integrity(self) -> None:
        """Raise :class:`LedgerCorruptError` if the storage itself is damaged (if it can tell)."""

    # -- connections ---------------------------------------------------------------------------

    @contextmanager
    def _borrowed(self) -> Iterator[Any]:
        """Lend a connection to one caller at a time (a transaction belongs to a connection),
        opening up to ``max_connections`` and making further callers wait. Pooled rather
        than one per thread: a server that starts a thread per request would otherwise
        open a database connection per request."""
        with self._available:
            while True:
                if self._closed:
                    raise LedgerError(f"the ledger at {self.location} is closed")
                if self._idle:
                    connection = self._idle.pop()
                    break
                if self._opened < self._max_connections:
                    self._opened += 1
                    connection = None
                    break
                self._available.wait()
        if connection is None:
            try:
                connection = self._connect()
            except BaseException:
                with self._available:
                    self._opened -= 1
                    self._available.notify()
                raise
        try:
            yield connection
        finally:
            keep = not self._closed and self._usable(connection)
            if not keep:
                self._close_connection(connection)
            with self._available:
                if keep:
                    self._idle.append(connection)
                else:
                    self._opened -= 1
                self._available.notify()

    def close(self) -> None:
        """Close every idle connection now, and each lent one when it comes back."""
        with self._available:
            self._closed = True
            idle, self._idle = self._idle, []
            self._available.notify_all()
        for connection in idle:
            self._close_connection(connection)

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._borrowed() as connection:
            return self._read(connection, sql, params)

    def transact(self, work: Callable[[Execute], _T]) -> _T:
        with self._borrowed() as connection:
            return self._transact(connection, work)

    # -- schema and binding --------------------------------------------------------------------

    def bind(
        self, chain_id: int, verifying_contract: str, *, create: bool = True
    ) -> tuple[int, str]:
        """Create the tables if needed and record the domain on first use; return the domain
        the ledger is bound to (the caller compares it with the one it was opened for).
        Without ``create``, a ledger never bound raises :class:`LedgerError` and the
        transaction (tables included) is rolled back."""

        def work(execute: Execute) -> tuple[int, str]:
            for statement in self._schema():
                execute(statement, ())
            meta: dict[str, str] = dict(execute("SELECT key, value FROM ledger_meta", ()))
            if not meta and not create:
                raise LedgerError(f"no voucher ledger at {self.location} (it holds none yet)")
            if not meta:
                for key, value in (
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("chain_id", str(chain_id)),
                    ("verifying_contract", verifying_contract),
                ):
                    execute("INSERT INTO ledger_meta (key, value) VALUES (?, ?)", (key, value))
                return chain_id, verifying_contract
            version, bound = self._bound_domain(meta)
            self._upgrade(execute, version)
            return bound

        return self.transact(work)

    def _bound_domain(self, meta: dict[str, str]) -> tuple[int, tuple[int, str]]:
        """The schema version and the domain ``ledger_meta`` records."""
        try:
            version = int(meta["schema_version"])
            chain_id = int(meta["chain_id"])
            contract = meta["verifying_contract"]
        except (KeyError, ValueError) as err:
            raise LedgerCorruptError(
                f"{self.location}: the ledger_meta table is incomplete or malformed ({err!r})"
            ) from None
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.location} has ledger schema version {version}; this micropay reads up "
                f"to {SCHEMA_VERSION}: upgrade micropay"
            )
        if version < 1:
            raise LedgerCorruptError(f"{self.location}: schema version {version} never existed")
        return version, (chain_id, contract)

    def _upgrade(self, execute: Execute, version: int) -> None:
        """Bring a ledger of an older schema up to this one, inside the binding transaction
        (which the back ends serialise between processes, so one of them upgrades)."""
        if version == SCHEMA_VERSION:
            return
        upgrades = self._upgrades()
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in upgrades[step]:
                execute(statement, ())
        execute(
            "UPDATE ledger_meta SET value = ? WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION),),
        )

    # -- vouchers ------------------------------------------------------------------------------

    def accept(
        self, row: VoucherRow, *, over: int | None = None, charge: ChargeRow | None = None
    ) -> int | None:
        """Store ``row`` if its amount beats the stored one (and, with ``over``, the stored
        amount is exactly ``over``, 0 meaning none); return the amount it replaced (0 for a
        new channel), or None if it did not. ``charge`` is written in the same transaction
        if, and only if, the voucher is."""
        if over is not None:
            if over < 0:
                raise ValueError("over is an amount: 0 or more")
            if row.cumulative_amount <= over:
                return None  # it cannot beat the amount the caller says is stored
        params: tuple[Any, ...]
        covered_amount = (
            None if row.covered_amount is None else self.encode_amount(row.covered_amount)
        )
        if over:  # replace exactly the amount read
            sql = _REPLACE_READ
            params = (
                self.encode_amount(row.cumulative_amount),
                row.signature,
                covered_amount,
                row.covered_signature,
                row.accepted_at,
                row.owed_since,
                row.channel_id,
                self.encode_amount(over),  # SQLite compares the stored text form
            )
        else:  # insert or raise the row (over None), or insert only (over 0: none was read)
            sql = _ACCEPT if over is None else _INSERT_NEW
            params = (
                row.channel_id,
                str(row.chain_id),
                row.verifying_contract,
                row.payer,
                row.payee,
                row.token,
                row.authorizer,
                row.withdraw_delay,
                row.salt,
                self.encode_amount(row.cumulative_amount),
                row.signature,
                row.accepted_at,
                row.owed_since,
                covered_amount,
                row.covered_signature,
                self.encode_amount(0),
            )

        def work(execute: Execute) -> list[tuple[Any, ...]]:
            rows = execute(sql, params)
            if rows and charge is not None:
                execute(_INSERT_CHARGE, self._charge_params(charge))
            return rows

        rows = self.transact(work)
        if not rows:
            return None
        return self._amount(rows[0][0], row.channel_id, "replaced_amount")

    def _charge_params(self, charge: ChargeRow) -> tuple[Any, ...]:
        return (
            charge.receipt_id,
            charge.channel_id,
            charge.payer,
            charge.asset,
            charge.resource,
            self.encode_amount(charge.amount),
            self.encode_amount(charge.cumulative_amount),
            charge.issued_at,
            charge.signature,
        )

    def charges(self, since: int | None = None, until: int | None = None) -> list[ChargeRow]:
        """The charges issued in ``[since, until)`` (either end open), oldest first."""
        rows = self.read(
            f"SELECT {_CHARGE_COLUMNS} FROM charges WHERE issued_at >= ? AND issued_at < ? "
            "ORDER BY issued_at, channel_id, cumulative_amount",
            (0 if since is None else since, 2**63 - 1 if until is None else until),
        )
        return [self._charge_row(row) for row in rows]

    def voucher_row(self, channel_id: bytes) -> VoucherRow | None:
        rows = self.read(
            f"SELECT {_VOUCHER_COLUMNS} FROM best_vouchers WHERE channel_id = ?", (channel_id,)
        )
        return self._voucher_row(rows[0]) if rows else None

    def voucher_rows(self) -> list[VoucherRow]:
        rows = self.read(f"SELECT {_VOUCHER_COLUMNS} FROM best_vouchers ORDER BY channel_id")
        return [self._voucher_row(row) for row in rows]

    def channel_ids(self) -> list[bytes]:
        rows = self.read("SELECT channel_id FROM best_vouchers ORDER BY channel_id")
        return [self._channel_id(row[0]) for row in rows]

    def set_owed_since(self, changes: Iterable[tuple[bytes, float | None]]) -> None:
        """Record when channels started owing (or that they no longer owe: None)."""
        updates = list(changes)
        if not updates:
            return

        def work(execute: Execute) -> None:
            for channel_id, since in updates:
                execute(
                    "UPDATE best_vouchers SET owed_since = ? WHERE channel_id = ?",
                    (since, channel_id),
                )

        self.transact(work)

    # -- chain view ----------------------------------------------------------------------------

    def blocks(self) -> list[BlockRef]:
        """The followed blocks whose hashes are kept, newest first."""
        rows = self.read("SELECT number, hash FROM chain_blocks ORDER BY number DESC")
        return [BlockRef(int(number), bytes(block_hash)) for number, block_hash in rows]

    def cursor(self) -> BlockRef | None:
        rows = self.read("SELECT number, hash FROM chain_blocks ORDER BY number DESC LIMIT 1")
        return BlockRef(int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def record(self, blocks: Sequence[BlockRef], events: Sequence[ChainEvent], keep: int) -> None:
        """Store read blocks and their events in one transaction (so the cursor never runs
        ahead of the events), then forget block hashes more than ``keep`` blocks old."""
        newest = max((block.number for block in blocks), default=None)

        def work(execute: Execute) -> None:
            for block in blocks:
                execute(
                    "INSERT INTO chain_blocks (number, hash) VALUES (?, ?) "
                    "ON CONFLICT (number) DO UPDATE SET hash = excluded.hash",
                    (block.number, block.hash),
                )
            for event in events:
                execute(
                    "INSERT INTO chain_events (block_number, log_index, channel_id, kind, "
                    "total_deposited, total_claimed, closes_at, finished) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        event.block_number,
                        event.log_index,
                        event.channel_id,
                        event.kind.value,
                        None
                        if event.total_deposited is None
                        else self.encode_amount(event.total_deposited),
                        None
                        if event.total_claimed is None
                        else self.encode_amount(event.total_claimed),
                        event.closes_at,
                        1 if event.finished else 0,
                    ),
                )
            if newest is not None:
                execute("DELETE FROM chain_blocks WHERE number < ?", (newest - keep,))

        self.transact(work)

    def rollback(self, number: int) -> None:
        """Forget everything read from blocks after ``number``."""

        def work(execute: Execute) -> None:
            execute("DELETE FROM chain_events WHERE block_number > ?", (number,))
            execute("DELETE FROM chain_blocks WHERE number > ?", (number,))

        self.transact(work)

    def reset_chain_view(self) -> None:
        def work(execute: Execute) -> None:
            execute("DELETE FROM chain_events", ())
            execute("DELETE FROM chain_blocks", ())

        self.transact(work)

    def unseeded(self) -> list[bytes]:
        """Ledger channels whose state the follower has not read (no seed row)."""
        rows = self.read(
            "SELECT channel_id FROM best_vouchers v WHERE NOT EXISTS (SELECT 1 FROM chain_events "
            f"e WHERE e.channel_id = v.channel_id AND e.kind = '{EventKind.SEED.value}') "
            "ORDER BY channel_id"
        )
        return [self._channel_id(row[0]) for row in rows]

    def views(self) -> dict[bytes, ChainView]:
        rows = self.read(f"{_VIEW_COLUMNS} GROUP BY channel_id {_SEEDED}")
        return {self._channel_id(row[0]): self._view(row) for row in rows}

    def view(self, channel_id: bytes) -> ChainView | None:
        rows = self.read(
            f"{_VIEW_COLUMNS} WHERE channel_id = ? GROUP BY channel_id {_SEEDED}", (channel_id,)
        )
        return self._view(rows[0]) if rows else None

    def events(self, channel_id: bytes) -> list[ChainEvent]:
        rows = self.read(
            "SELECT block_number, log_index, channel_id, kind, total_deposited, total_claimed, "
            "closes_at, finished FROM chain_events WHERE channel_id = ? "
            "ORDER BY block_number, log_index",
            (channel_id,),
        )
        return [self._event(row) for row in rows]

    # -- decoding ------------------------------------------------------------------------------

    def _corrupt(self, channel_id: bytes | None, what: str) -> LedgerCorruptError:
        where = f"channel 0x{channel_id.hex()}" if channel_id is not None else "a row"
        return LedgerCorruptError(f"{self.location}: {where}: {what}")

    def _channel_id(self, value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview) or len(bytes(value)) != 32:
            raise self._corrupt(None, f"channel_id is not 32 bytes: {value!r}")
        return bytes(value)

    def _amount(self, value: Any, channel_id: bytes, column: str) -> int:
        try:
            amount = self.decode_amount(value)
        except (TypeError, ValueError, ArithmeticError):
            amount = -1
        if not 0 <= amount < 2**256:
            raise self._corrupt(channel_id, f"{column} is not a uint256: {value!r}")
        return amount

    def _voucher_row(self, values: tuple[Any, ...]) -> VoucherRow:
        row = dict(zip(_VOUCHER_NAMES, values, strict=True))
        channel_id = self._channel_id(row["channel_id"])
        covered_amount, covered_signature = row["covered_amount"], row["covered_signature"]
        if (covered_amount is None) != (covered_signature is None):
            raise self._corrupt(channel_id, "half a covered voucher (amount or signature only)")
        try:
            return VoucherRow(
                channel_id=channel_id,
                chain_id=int(row["chain_id"]),
                verifying_contract=_text(row["verifying_contract"]),
                payer=_text(row["payer"]),
                payee=_text(row["payee"]),
                token=_text(row["token"]),
                authorizer=_text(row["authorizer"]),
                withdraw_delay=int(row["withdraw_delay"]),
                salt=_blob(row["salt"]),
                cumulative_amount=self._amount(
                    row["cumulative_amount"], channel_id, "cumulative_amount"
                ),
                signature=_blob(row["signature"]),
                accepted_at=float(row["accepted_at"]),
                owed_since=None if row["owed_since"] is None else float(row["owed_since"]),
                covered_amount=None
                if covered_amount is None
                else self._amount(covered_amount, channel_id, "covered_amount"),
                covered_signature=None if covered_signature is None else _blob(covered_signature),
            )
        except (TypeError, ValueError) as err:
            raise self._corrupt(channel_id, f"malformed row: {err}") from None

    def _charge_row(self, values: tuple[Any, ...]) -> ChargeRow:
        row = dict(zip(_CHARGE_NAMES, values, strict=True))
        channel_id = self._channel_id(row["channel_id"])
        try:
            return ChargeRow(
                receipt_id=_blob(row["receipt_id"]),
                channel_id=channel_id,
                payer=_text(row["payer"]),
                asset=_text(row["asset"]),
                resource=_text(row["resource"]),
                amount=self._amount(row["amount"], channel_id, "amount"),
                cumulative_amount=self._amount(
                    row["cumulative_amount"], channel_id, "cumulative_amount"
                ),
                issued_at=int(row["issued_at"]),
                signature=_blob(row["signature"]),
            )
        except (TypeError, ValueError) as err:
            raise self._corrupt(channel_id, f"malformed charge row: {err}") from None

    def _view(self, row: tuple[Any, ...]) -> ChainView:
        channel_id = self._channel_id(row[0])
        deposited, claimed, closes_at, finished, block = row[1:6]
        return ChainView(
            deposited=0 if deposited is None else self._amount(deposited, channel_id, "deposited"),
            claimed=0 if claimed is None else self._amount(claimed, channel_id, "claimed"),
            closes_at=int(closes_at or 0),
            finished=bool(finished),
            as_of_block=int(block),
        )

    def _event(self, row: tuple[Any, ...]) -> ChainEvent:
        channel_id = self._channel_id(row[2])
        deposited, claimed = row[4], row[5]
        return ChainEvent(
            block_number=int(row[0]),
            log_index=int(row[1]),
            channel_id=channel_id,
            kind=EventKind(row[3]),
            total_deposited=None
            if deposited is None
            else self._amount(deposited, channel_id, "total_deposited"),
            total_claimed=None
            if claimed is None
            else self._amount(claimed, channel_id, "total_claimed"),
            closes_at=None if row[6] is None else int(row[6]),
            finished=bool(row[7]),
        )


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, found {type(value).__name__}")
    return value


def _blob(value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, found {type(value).__name__}")
    return bytes(value)
