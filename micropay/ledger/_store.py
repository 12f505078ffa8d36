"""The storage half of the ledger: one set of SQL statements over two database back ends.

A :class:`Store` knows tables and transactions, not vouchers: it moves typed rows in and out
and leaves checking them (signatures, domains) to :class:`~micropay.ledger.Ledger`. The data
statements are written once here, in the SQL that SQLite and PostgreSQL share (``?``
placeholders; a back end may rewrite them); each back end adds its own table definitions,
connections, transactions and the encoding of 256-bit amounts.

Tables:

- ``ledger_meta``: schema version and the voucher domain the ledger is bound to;
- ``best_vouchers``: per channel, its configuration, the best voucher (the highest
  ceiling), the best voucher *covered* by the confirmed deposit (``covered_amount``,
  ``covered_signature``; NULL until a covered one is accepted), the charged total
  (``charged_amount``, at most the best voucher) and the refunded total
  (``refunded_amount``). The charge write is one
  ``INSERT ... ON CONFLICT DO UPDATE ... WHERE <the charged total is the one read>
  RETURNING replaced_amount``: the database compares and swaps the charged total under its
  own row lock, the voucher raises the best (and covered) one only if higher, and
  ``replaced_amount`` (the charged total replaced) yields the increment without a second
  read that could race;
- ``refunds``: one row per off-chain refund, with the totals after it, written in the
  transaction that swaps the totals (:meth:`Store.refund`);
- ``chain_blocks`` / ``chain_events``: what the chain follower has read (block hashes for
  reorg detection, and per-channel totals by block, so a rollback is a ``DELETE``);
- ``charges``: one row per charged request, the site-signed receipt it was answered with
  (receipt id, channel, payer, asset, resource, amount, cumulative total, time,
  signature, and the ceiling it was charged under). It is written in the transaction of the
  charge write, so there is never a receipt without its row nor a charge counted twice (the
  compare-and-swap on the charged total admits one write per total read).

Rows are frozen dataclasses (:class:`VoucherRow`, :class:`ChargeRow`, and the chain view's
:class:`~micropay.ledger.ChainEvent`) whose fields are the table's columns, each with the
kind that says how it is stored and checked when read: the column lists, ``INSERT``
statements, parameters and decoding are all made from them (:class:`_Table`), so a column
is added to its dataclass and to the back ends' table definitions, nowhere else.

Accepts are written by one writer thread per store (:mod:`micropay.ledger._group`), which
commits the accepts that arrive together in one durable transaction and answers each only
once it is committed.

Schema versions (``ledger_meta.schema_version``): 1, the first; 2 adds the covered voucher
columns; 3 adds ``charges``; 4 adds the charged and refunded totals, ``refunds`` and the
charges' ceiling. Opening an older ledger upgrades it in place, in one
transaction, before anything else reads it; a newer one is refused.
"""

from __future__ import annotations

import asyncio
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Generic, TypeVar

from micropay.charging import refunded_below
from micropay.errors import LedgerCorruptError, LedgerError
from micropay.ledger._group import COMMIT_WINDOW, MAX_BATCH, CommitStats, GroupCommit, Pending
from micropay.ledger._records import BlockRef, ChainEvent, ChainView, EventKind

SCHEMA_VERSION = 4
_T = TypeVar("_T")
_R = TypeVar("_R")

Execute = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
"""Runs one statement inside the current transaction and returns its rows."""


def _column(kind: str) -> Any:
    """A row field and how its column stores it (see :data:`_KINDS`); ``kind?``: NULL allowed."""
    return field(metadata={"kind": kind})


@dataclass(frozen=True)
class VoucherRow:
    """One ``best_vouchers`` row, decoded to Python types but not yet checked.

    The fields are the columns, in this order, and their ``kind`` says how each is stored:
    a column is added here (and in the back ends' table definitions), nowhere else."""

    channel_id: bytes = _column("channel")
    chain_id: int = _column("decimal")
    verifying_contract: str = _column("text")
    payer: str = _column("text")
    payee: str = _column("text")
    token: str = _column("text")
    authorizer: str = _column("text")
    withdraw_delay: int = _column("int")
    salt: bytes = _column("blob")
    cumulative_amount: int = _column("amount")
    signature: bytes = _column("blob")
    accepted_at: float = _column("real")
    owed_since: float | None = _column("real?")
    covered_amount: int | None = field(default=None, metadata={"kind": "amount?"})
    """The best voucher covered by the confirmed deposit (None: none was accepted)."""
    covered_signature: bytes | None = field(default=None, metadata={"kind": "blob?"})
    charged_amount: int = field(default=0, metadata={"kind": "amount"})
    """The charged total: what the site charged, at most the best voucher (the ceiling)."""
    refunded_amount: int = field(default=0, metadata={"kind": "amount"})
    """The total refunded off chain (the charged total already went down by it)."""


@dataclass(frozen=True)
class ChargeRow:
    """One ``charges`` row: a charged request and the receipt the site signed for it."""

    receipt_id: bytes = _column("blob")
    channel_id: bytes = _column("channel")
    payer: str = _column("text")
    asset: str = _column("text")
    resource: str = _column("text")
    amount: int = _column("amount")
    cumulative_amount: int = _column("amount")
    issued_at: int = _column("int")
    signature: bytes = _column("blob")
    ceiling: int = _column("amount")
    """The voucher the charge was made under (``cumulative_amount`` is the charged total)."""


@dataclass(frozen=True)
class RefundRow:
    """One ``refunds`` row: an off-chain refund and the channel's totals after it."""

    channel_id: bytes = _column("channel")
    amount: int = _column("amount")
    reason: str = _column("text")
    refunded_at: float = _column("real")
    charged_amount: int = _column("amount")
    refunded_amount: int = _column("amount")


class _Table(Generic[_R]):
    """A table whose rows are one frozen dataclass: its column list and statements, made from
    the fields and their kinds (:func:`_column`; or ``kinds`` for a class kept elsewhere)."""

    def __init__(self, name: str, row: type[_R], kinds: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.row = row
        found = {
            f.name: kinds[f.name] if kinds else str(f.metadata["kind"])
            for f in fields(row)  # type: ignore[arg-type]
        }
        self.kinds: tuple[tuple[str, str, bool], ...] = tuple(
            (column, kind.rstrip("?"), kind.endswith("?")) for column, kind in found.items()
        )
        """Per column: its name, its kind, and whether it may be NULL."""
        self.names = tuple(found)
        self.columns = ", ".join(self.names)
        self.select = f"SELECT {self.columns} FROM {name}"
        self.key = next(column for column, kind, _ in self.kinds if kind == "channel")

    def insert(self, extra: Sequence[str] = (), alias: str = "") -> str:
        """``INSERT INTO`` every column (and ``extra`` ones, whose values follow the row's)."""
        names = [*self.names, *extra]
        target = f"{self.name} AS {alias}" if alias else self.name
        return f"INSERT INTO {target} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"


VOUCHERS = _Table("best_vouchers", VoucherRow)
CHARGES = _Table("charges", ChargeRow)
REFUNDS = _Table("refunds", RefundRow)
EVENTS = _Table(
    "chain_events",
    ChainEvent,
    {
        "block_number": "int",
        "log_index": "int",
        "channel_id": "channel",
        "kind": "event",
        "total_deposited": "amount?",
        "total_claimed": "amount?",
        "closes_at": "int?",
        "finished": "flag",
    },
)

# The charge write (see :meth:`Store.accept_soon`): insert the channel's row, or update it
# when the compare-and-swap on the charged total holds. Column -> its new value, from the new
# row (``excluded``) and the stored one (``v``): the best voucher and the covered one are
# raised only by a higher one (a metered request's voucher may be at or below the ceiling
# held); the charged total is swapped; the refunded total is left as it is; the age of a
# debt starts when it first arose. ``replaced_amount`` keeps the charged total replaced, for
# the increment, without a second read that could race.
_HIGHER = "excluded.cumulative_amount > v.cumulative_amount"
_COVERS = (
    "excluded.covered_amount IS NOT NULL AND "
    "(v.covered_amount IS NULL OR excluded.covered_amount > v.covered_amount)"
)
_SETS = {
    "cumulative_amount": f"CASE WHEN {_HIGHER} THEN excluded.cumulative_amount "
    "ELSE v.cumulative_amount END",
    "signature": f"CASE WHEN {_HIGHER} THEN excluded.signature ELSE v.signature END",
    "covered_amount": f"CASE WHEN {_COVERS} THEN excluded.covered_amount ELSE v.covered_amount END",
    "covered_signature": f"CASE WHEN {_COVERS} THEN excluded.covered_signature "
    "ELSE v.covered_signature END",
    "charged_amount": "excluded.charged_amount",
    "accepted_at": "excluded.accepted_at",
    "owed_since": "COALESCE(v.owed_since, excluded.owed_since)",
    "replaced_amount": "v.charged_amount",
}
_VOUCHER_COLUMNS = ", ".join([*VOUCHERS.names, "replaced_amount"])
_VOUCHER_VALUES = ", ".join("?" * (len(VOUCHERS.names) + 1))
_UPSERT = f"""INSERT INTO best_vouchers AS v ({_VOUCHER_COLUMNS})
{{source}}
ON CONFLICT (channel_id) DO UPDATE SET
    {", ".join(f"{column} = {value}" for column, value in _SETS.items())}
WHERE {{condition}}
RETURNING replaced_amount
"""
# Without ``over``: the new charged total must beat the stored one. With it: the stored
# charged total must be exactly the one read (a parameter after the row's); a positive one
# was read from a stored row, so the row must exist (no insert: the guard's parameter is the
# channel id).
_NEW_ROW = f"VALUES ({_VOUCHER_VALUES})"
_ACCEPT = _UPSERT.format(source=_NEW_ROW, condition="excluded.charged_amount > v.charged_amount")
_STORED_ROW = (
    f"SELECT {_VOUCHER_VALUES} WHERE EXISTS (SELECT 1 FROM best_vouchers WHERE channel_id = ?)"
)
_SAME_TOTAL = "v.charged_amount = ?"
# With ``ceiling`` too, the stored best voucher must be exactly the one read as well: another
# process that took a voucher without moving the charged total (a refund under it, a metered
# charge of 0) leaves a total that still compares equal, and the voucher it took must not
# pay again here.
_SAME_BEST = f"{_SAME_TOTAL} AND v.cumulative_amount = ?"
_ACCEPT_OVER_NONE = _UPSERT.format(source=_NEW_ROW, condition=_SAME_TOTAL)
_ACCEPT_OVER = _UPSERT.format(source=_STORED_ROW, condition=_SAME_TOTAL)
_ACCEPT_OVER_NONE_BEST = _UPSERT.format(source=_NEW_ROW, condition=_SAME_BEST)
_ACCEPT_OVER_BEST = _UPSERT.format(source=_STORED_ROW, condition=_SAME_BEST)


def _charging(accept: str) -> str:
    """``accept`` and the charge's insert in one statement: the charge row (its values follow
    the accept's) is written for each row the accept stored, that is, if it was stored."""
    values = ", ".join("?" * len(CHARGES.names))
    return (
        f"WITH accepted AS ({accept.strip()}), charged AS (INSERT INTO charges "
        f"({CHARGES.columns}) SELECT {values} FROM accepted) SELECT replaced_amount FROM accepted"
    )


_HELD = "SELECT charged_amount FROM best_vouchers WHERE channel_id = ?"
# A charge under the best voucher already held (prepaid credit): swap the charged total only.
_CHARGE_UNDER = (
    "UPDATE best_vouchers SET charged_amount = ?, accepted_at = ?, "
    "owed_since = COALESCE(owed_since, ?) "
    "WHERE channel_id = ? AND charged_amount = ? AND cumulative_amount = ? RETURNING channel_id"
)
_INSERT_CHARGE = CHARGES.insert()
_TOTALS = "SELECT charged_amount, refunded_amount FROM best_vouchers WHERE channel_id = ?"
_REFUND = (
    "UPDATE best_vouchers SET charged_amount = ?, refunded_amount = ? "
    "WHERE channel_id = ? AND charged_amount = ? AND refunded_amount = ? RETURNING channel_id"
)
_INSERT_REFUND = REFUNDS.insert()

# A channel's view: its deposit is the latest total by block order (a refund lowers it, so a
# maximum would overstate it), every other total only grows and is the maximum over its rows.
# A seed row sits at the newest block read, at log index -1, and says the state after that
# block, as the block's last deposit event does. A channel with no seed row has only some of
# its history here, so it has no view yet.
_VIEW_COLUMNS = """
SELECT e.channel_id,
       (SELECT d.total_deposited FROM chain_events d
        WHERE d.channel_id = e.channel_id AND d.total_deposited IS NOT NULL
        ORDER BY d.block_number DESC, d.log_index DESC LIMIT 1),
       MAX(e.total_claimed), MAX(e.closes_at), MAX(e.finished), MAX(e.block_number)
FROM chain_events e
"""
_SEEDED = f"HAVING MAX(CASE WHEN e.kind = '{EventKind.SEED.value}' THEN 1 ELSE 0 END) = 1"


@dataclass(frozen=True)
class Accepted:
    """What one accept found: the amount the new voucher replaced (0: none was stored), or
    None if it was not stored, and then the amount held (0: none)."""

    replaced: int | None
    held: int


class Store(ABC):
    """A ledger database: SQL shared by the back ends, over a small pool of connections."""

    scheme: ClassVar[str]
    """The URL scheme this back end serves."""
    blocking_reads: ClassVar[bool]
    """Whether a read may wait on a server rather than only on local pages."""
    data_modifying_ctes: ClassVar[bool] = False
    """Whether ``WITH x AS (INSERT ... RETURNING ...)`` works: then an accept and its charge
    are one statement (one round trip to a server), not two."""

    def __init__(
        self,
        location: str,
        max_connections: int = 8,
        *,
        commit_window: float = COMMIT_WINDOW,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.location = location
        """Where the data lives, for messages (a path, or a URL without its password)."""
        if type(max_connections) is not int or max_connections < 1:
            raise LedgerError(f"max_connections must be a positive integer: {max_connections!r}")
        if type(max_batch) is not int or max_batch < 1:
            raise LedgerError(f"max_batch must be a positive integer: {max_batch!r}")
        if not 0 <= commit_window <= 1:
            raise LedgerError(f"commit_window is seconds, 0 to 1: {commit_window!r}")
        self._max_connections = max_connections
        self._idle: list[Any] = []
        self._opened = 0
        self._available = threading.Condition()
        self._closed = False
        self._encoders: dict[str, Callable[[Any], Any]] = {
            **_ENCODERS,
            "amount": self.encode_amount,
        }
        self._window = commit_window
        self._max_batch = max_batch
        self._group: GroupCommit | None = None

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
        """Commit what the writer holds, stop it, close every idle connection now, and each
        lent one when it comes back."""
        with self._available:
            self._closed = True
            group, self._group = self._group, None
        if group is not None:
            group.close()
        with self._available:
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

    # -- rows ----------------------------------------------------------------------------------

    def _params(self, table: _Table[Any], row: Any) -> list[Any]:
        """A row's values as its table's columns store them, in column order."""
        encoders = self._encoders
        return [
            None if (value := getattr(row, name)) is None else encoders[kind](value)
            for name, kind, _ in table.kinds
        ]

    def _decoded(self, table: _Table[_R], values: Sequence[Any]) -> _R:
        """A table's row from the values of its columns (in order), each checked for its kind:
        a value that is not what the column holds raises :class:`LedgerCorruptError`."""
        named = dict(zip(table.names, values, strict=True))
        channel_id = self._channel_id(named[table.key])
        decoded: dict[str, Any] = {}
        for name, kind, nullable in table.kinds:
            value = named[name]
            if value is None:
                if not nullable:
                    raise self._corrupt(channel_id, f"malformed row: {name} is NULL")
                decoded[name] = None
                continue
            if kind == "amount":
                decoded[name] = self._amount(value, channel_id, name)
                continue
            try:
                decoded[name] = _DECODERS[kind](value)
            except (TypeError, ValueError) as err:
                raise self._corrupt(channel_id, f"malformed row: {name}: {err}") from None
        return table.row(**decoded)

    # -- vouchers ------------------------------------------------------------------------------

    def accept(
        self, row: VoucherRow, *, over: int | None = None, charge: ChargeRow | None = None
    ) -> int | None:
        """The charge write: store ``row`` (its voucher raises the stored best only if higher;
        its ``charged_amount`` replaces the stored charged total) if its charged total beats
        the stored one, or, with ``over``, if the stored charged total is exactly ``over``
        (0: none stored, or 0); return the charged total it replaced (0 for a new channel),
        or None if it wrote nothing. ``charge`` is written in the same transaction if, and
        only if, the row is."""
        return self.accept_soon(row, over=over, charge=charge, then=_replaced).result()

    def accept_soon(
        self,
        row: VoucherRow,
        *,
        over: int | None = None,
        ceiling: int | None = None,
        charge: ChargeRow | None = None,
        then: Callable[[Accepted], _T],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Pending[_T]:
        """:meth:`accept`, queued for the writer: the future holds ``then`` of what it found
        once the transaction that wrote it (shared with the accepts queued beside it) is
        durably committed, and only then (``then`` runs on the writer's thread). With
        ``loop`` (the running loop: call from it), the future is one of that loop.

        ``ceiling`` (with ``over``): the best voucher's amount read with it (0: no row was
        read), which the row must still hold too."""
        if over is not None and over < 0:
            raise ValueError("over is an amount: 0 or more")
        if ceiling is not None and (over is None or ceiling < over):
            raise ValueError("a ceiling read is given with the charged total read, at least it")
        if row.charged_amount > row.cumulative_amount:
            raise ValueError("a charged total above the voucher it is charged under")
        params = self._params(VOUCHERS, row)
        params.append(self.encode_amount(0))  # replaced_amount of a new row: none charged
        if over is None:
            sql = _ACCEPT
        elif over == 0:  # nothing (or 0) was read: insert, or swap a stored 0
            sql = _ACCEPT_OVER_NONE if ceiling is None else _ACCEPT_OVER_NONE_BEST
            params.append(self.encode_amount(0))
        else:  # swap exactly the charged total read (SQLite compares the text forms)
            sql = _ACCEPT_OVER if ceiling is None else _ACCEPT_OVER_BEST
            params += [row.channel_id, self.encode_amount(over)]
        if ceiling is not None:  # no stored row holds a best voucher of 0: "none read" stays so
            params.append(self.encode_amount(ceiling))
        charged = None if charge is None else self._params(CHARGES, charge)
        if charged is not None and self.data_modifying_ctes:  # one round trip, not two
            sql, params, charged = _charging(sql), [*params, *charged], None

        def work(execute: Execute) -> Accepted:
            rows = execute(sql, params)
            if not rows:
                held = execute(_HELD, (row.channel_id,))
                if not held:
                    return Accepted(None, 0)
                return Accepted(None, self._amount(held[0][0], row.channel_id, "charged total"))
            if charged is not None:
                execute(_INSERT_CHARGE, charged)
            return Accepted(self._amount(rows[0][0], row.channel_id, "replaced_amount"), 0)

        return self._writer().submit(work, then, loop)

    def charge_soon(
        self,
        channel_id: bytes,
        ceiling: int,
        over: int,
        charged: int,
        at: float,
        *,
        then: Callable[[Accepted], _T],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Pending[_T]:
        """A charge under the best voucher the row holds (``ceiling``), queued for the writer
        as :meth:`accept_soon`'s (``loop`` likewise): the charged total goes from exactly
        ``over`` to ``charged`` (at most the ceiling), else nothing is written; the future
        holds what was found."""
        if not 0 <= over < charged <= ceiling:
            raise ValueError("a charge raises the charged total, at most to the ceiling")
        encode, real = self.encode_amount, self._encoders["real"]
        params = (encode(charged), real(at), real(at), channel_id, encode(over), encode(ceiling))

        def work(execute: Execute) -> Accepted:
            if execute(_CHARGE_UNDER, params):
                return Accepted(over, 0)
            held = execute(_HELD, (channel_id,))
            return Accepted(
                None, self._amount(held[0][0], channel_id, "charged total") if held else 0
            )

        return self._writer().submit(work, then, loop)

    def commit_stats(self) -> CommitStats:
        """A copy of what this process's writer has committed (zeros before its first)."""
        group = self._group
        return CommitStats() if group is None else replace(group.stats)

    def _writer(self) -> GroupCommit:
        group = self._group  # every accept asks: the lock only when the writer is to start
        if group is not None and group.pid == os.getpid():
            return group  # (close() unsets it first; a writer closed meanwhile refuses work)
        with self._available:
            if self._closed:
                raise LedgerError(f"the ledger at {self.location} is closed")
            if self._group is None or self._group.pid != os.getpid():
                self._group = GroupCommit(self, self._window, self._max_batch)
            return self._group

    def charges(self, since: int | None = None, until: int | None = None) -> list[ChargeRow]:
        """The charges issued in ``[since, until)`` (either end open), oldest first."""
        rows = self.read(
            f"{CHARGES.select} WHERE issued_at >= ? AND issued_at < ? "
            "ORDER BY issued_at, channel_id, cumulative_amount",
            (0 if since is None else since, 2**63 - 1 if until is None else until),
        )
        return [self._decoded(CHARGES, row) for row in rows]

    def voucher_row(self, channel_id: bytes) -> VoucherRow | None:
        rows = self.read(f"{VOUCHERS.select} WHERE channel_id = ?", (channel_id,))
        return self._voucher_row(rows[0]) if rows else None

    def voucher_rows(self) -> list[VoucherRow]:
        rows = self.read(f"{VOUCHERS.select} ORDER BY channel_id")
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

    def refund(
        self, channel_id: bytes, amount: int, reason: str, floor: int, at: float
    ) -> RefundRow:
        """Lower the channel's charged total by ``amount`` (added to its refunded total) and
        record the refund, in one transaction; return the row written. Raises
        :class:`RefundError` (``exceeds_refundable``) and writes nothing if that would take the
        charged total below ``floor`` (or 0), and :class:`LookupError` for an unknown channel.
        Concurrent charges cannot interleave: the update is a compare-and-swap on the totals
        just read (retried if a charge moved them in between)."""

        def work(execute: Execute) -> RefundRow:
            encode = self.encode_amount
            for _ in range(8):
                found = execute(_TOTALS, (channel_id,))
                if not found:
                    raise LookupError(channel_id)
                charged = self._amount(found[0][0], channel_id, "charged total")
                refunded = self._amount(found[0][1], channel_id, "refunded total")
                if charged - amount < max(floor, 0):
                    raise refunded_below(channel_id, charged, amount, floor)
                after = RefundRow(
                    channel_id, amount, reason, at, charged - amount, refunded + amount
                )
                swap = (
                    encode(after.charged_amount),
                    encode(after.refunded_amount),
                    channel_id,
                    encode(charged),
                    encode(refunded),
                )
                if execute(_REFUND, swap):
                    execute(_INSERT_REFUND, self._params(REFUNDS, after))
                    return after
            raise LedgerError(f"{self.location}: the channel's totals kept moving; try again")

        return self.transact(work)

    def refunds(self, channel_id: bytes | None = None) -> list[RefundRow]:
        """The refunds recorded (of one channel, or all), oldest first."""
        where, params = ("WHERE channel_id = ? ", (channel_id,)) if channel_id else ("", ())
        rows = self.read(f"{REFUNDS.select} {where}ORDER BY refunded_at, refunded_amount", params)
        return [self._decoded(REFUNDS, row) for row in rows]

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
        insert_event = EVENTS.insert()

        def work(execute: Execute) -> None:
            for block in blocks:
                execute(
                    "INSERT INTO chain_blocks (number, hash) VALUES (?, ?) "
                    "ON CONFLICT (number) DO UPDATE SET hash = excluded.hash",
                    (block.number, block.hash),
                )
            for event in events:
                execute(insert_event, self._params(EVENTS, event))
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
        rows = self.read(f"{_VIEW_COLUMNS} GROUP BY e.channel_id {_SEEDED}")
        return {self._channel_id(row[0]): self._view(row) for row in rows}

    def view(self, channel_id: bytes) -> ChainView | None:
        rows = self.read(
            f"{_VIEW_COLUMNS} WHERE e.channel_id = ? GROUP BY e.channel_id {_SEEDED}",
            (channel_id,),
        )
        return self._view(rows[0]) if rows else None

    def events(self, channel_id: bytes) -> list[ChainEvent]:
        rows = self.read(
            f"{EVENTS.select} WHERE channel_id = ? ORDER BY block_number, log_index",
            (channel_id,),
        )
        return [self._decoded(EVENTS, row) for row in rows]

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

    def _voucher_row(self, values: Sequence[Any]) -> VoucherRow:
        row = self._decoded(VOUCHERS, values)
        if (row.covered_amount is None) != (row.covered_signature is None):
            raise self._corrupt(row.channel_id, "half a covered voucher (amount or signature only)")
        if row.charged_amount > row.cumulative_amount:
            raise self._corrupt(
                row.channel_id,
                f"its charged total {row.charged_amount} is above its best voucher for "
                f"{row.cumulative_amount} (the row was altered)",
            )
        return row

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


def _replaced(found: Accepted) -> int | None:
    return found.replaced


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, found {type(value).__name__}")
    return value


def _blob(value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, found {type(value).__name__}")
    return bytes(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"expected an integer, found {type(value).__name__}")
    return int(value)


def _real(value: Any) -> float:
    if not isinstance(value, float | int) or isinstance(value, bool):
        raise TypeError(f"expected a number, found {type(value).__name__}")
    return float(value)


# How each kind of column is stored (amounts: by the back end) and read back, checked.
_ENCODERS: dict[str, Callable[[Any], Any]] = {
    "channel": bytes,
    "blob": bytes,
    "text": str,
    "int": int,
    "decimal": str,
    "real": float,
    "event": lambda kind: kind.value,
    "flag": lambda flag: 1 if flag else 0,
}
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "channel": _blob,
    "blob": _blob,
    "text": _text,
    "int": _integer,
    "decimal": lambda value: int(_text(value)),
    "real": _real,
    "event": EventKind,
    "flag": bool,
}
