"""The ledger: the payee's best vouchers, checked on the way in and on the way out.

Storage is a :class:`~micropay.ledger._store.Store` chosen by URL; this class adds what makes
the data trustworthy: the ledger is bound to one voucher domain (chain and contract) on first
use, every voucher is verified before it is stored, and every row is verified again when it
is read, so a damaged, altered or foreign row raises a named error instead of turning into
a claim that reverts (or a voucher quietly missing from the books).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from micropay.charging import Held, Refund, charged_total, refund_amount
from micropay.errors import (
    ForeignLedgerError,
    LedgerCorruptError,
    LedgerURLError,
    RefundError,
    StaleVoucherError,
    VoucherError,
)
from micropay.ledger._authorizations import AuthorizationJournal
from micropay.ledger._group import CommitStats, Pending, pending
from micropay.ledger._journal import ChainJournal
from micropay.ledger._records import ChainView, Position
from micropay.ledger._store import Accepted, ChargeRow, RefundRow, Store, VoucherRow
from micropay.receipts import SignedReceipt
from micropay.vouchers import ChannelConfig, Voucher, VoucherDomain, VoucherVerifier

if TYPE_CHECKING:
    from micropay.payee import VoucherBook


def open_store(url: str, max_connections: int = 8, *, create: bool = True) -> Store:
    """The back end a URL names, in the convention SQLAlchemy made familiar:

    - ``sqlite:///ledger.db`` (relative to the working directory) or
      ``sqlite:////var/lib/shop/ledger.db`` (absolute): whatever follows the third slash is
      the file's path (without ``create``, the file must exist);
    - ``postgresql://user:password@host:5432/dbname`` (libpq's URI form; ``postgres://`` too).
    """
    if not isinstance(url, str):
        raise LedgerURLError(f"a ledger URL must be a string, not {type(url).__name__}")
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        if not url.lower().startswith("sqlite:///"):
            raise LedgerURLError(
                f"{url!r}: a SQLite ledger URL is sqlite:/// followed by the file's path "
                "(sqlite:///ledger.db, or sqlite:////absolute/path/ledger.db)"
            )
        path = unquote(url[len("sqlite:///") :])
        if "?" in path or "#" in path:
            raise LedgerURLError(f"{url!r}: SQLite ledger URLs take no query or fragment")
        if not path or path.endswith("/") or path == ":memory:":
            raise LedgerURLError(f"{url!r} names no file (a ledger must be durable)")
        from micropay.ledger._sqlite import SqliteStore

        return SqliteStore(Path(path), max_connections, create=create)
    if scheme in ("postgresql", "postgres"):
        from micropay.ledger._postgres import PostgresStore

        return PostgresStore(url, max_connections)
    raise LedgerURLError(
        f"unsupported ledger URL {url!r}: use sqlite:///ledger.db or postgresql://..."
    )


class Ledger:
    """A durable :class:`~micropay.payee.VoucherBook` bound to one voucher domain.

    ``Payee(client, account, book=Ledger.open(url, client.domain))`` makes a payee whose
    accepted vouchers survive crashes and are shared by every process opening the same URL.
    Open one ``Ledger`` per process (never share one across ``fork``); it is safe to use
    from many threads.
    """

    def __init__(
        self,
        store: Store,
        domain: VoucherDomain,
        *,
        create: bool = True,
        max_cached_channels: int = 10_000,
    ) -> None:
        """Use :meth:`open`; this binds an already constructed store (``create`` and
        ``max_cached_channels``: as :meth:`open` says)."""
        self._store = store
        self.domain = domain
        self._verifier = VoucherVerifier(domain)
        # The (amount, signature) last verified per channel: best and covered vouchers.
        self._verified: dict[bytes, tuple[int, bytes]] = {}
        self._verified_covered: dict[bytes, tuple[int, bytes]] = {}
        # Bounded caches, least recently used first out: each known channel's configuration
        # (built once: checksums and a hash), and the vouchers :meth:`verify` just checked.
        self._max_cached = max_cached_channels
        self._configs: OrderedDict[bytes, tuple[tuple[object, ...], ChannelConfig]] = OrderedDict()
        self._fresh: OrderedDict[bytes, tuple[int, bytes, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.chain = ChainJournal(store)
        """The chain view the watchtower keeps here (cursor, block hashes, channel events)."""
        self.authorizations = AuthorizationJournal(store)
        """Claims on ``exact`` authorizations (a :class:`~micropay.exact.AuthorizationBook`)."""
        try:
            store.check_integrity()
            chain_id, contract = store.bind(
                domain.chain_id, domain.verifying_contract, create=create
            )
        except BaseException:
            store.close()
            raise
        if (chain_id, contract) != (domain.chain_id, domain.verifying_contract):
            store.close()
            raise ForeignLedgerError(
                f"{store.location} holds vouchers for chain {chain_id}, contract {contract}; "
                f"it was opened for chain {domain.chain_id}, contract "
                f"{domain.verifying_contract}"
            )

    @classmethod
    def open(
        cls,
        url: str,
        domain: VoucherDomain,
        *,
        max_connections: int = 8,
        create: bool = True,
        max_cached_channels: int = 10_000,
    ) -> Ledger:
        """Open (creating if needed) the ledger at ``url`` for vouchers of ``domain``.

        With ``create=False`` a ledger that does not exist yet raises :class:`LedgerError`
        and nothing is created: a command reading a site's ledger (``micropay settle``)
        must take a mistyped URL for an error, not for an empty ledger.

        At most ``max_connections`` database connections are open at once; threads beyond
        that wait their turn (each operation holds one only briefly). Accepts go through one
        more, the writer's, which commits the accepts that arrive together in one
        transaction (see :mod:`micropay.ledger._group`).

        The configurations of the ``max_cached_channels`` channels read most recently are
        kept, built, in memory (a row read again is compared with them, not rebuilt).

        SQLite files are integrity-checked on open. A ledger created for another chain or
        contract raises :class:`ForeignLedgerError`; a damaged one :class:`LedgerCorruptError`.
        """
        if not isinstance(domain, VoucherDomain):
            raise VoucherError("a ledger needs the VoucherDomain its vouchers are signed for")
        store = open_store(url, max_connections, create=create)
        return cls(store, domain, create=create, max_cached_channels=max_cached_channels)

    @property
    def location(self) -> str:
        """Where the ledger lives (a path, or the URL without its password)."""
        return self._store.location

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the VoucherBook protocol ----------------------------------------------------------

    def accept_if_higher(
        self,
        config: ChannelConfig,
        voucher: Voucher,
        *,
        over: int | None = None,
        covered: bool = False,
        charge: SignedReceipt | None = None,
        charged: int | None = None,
    ) -> int:
        """The charge write (:meth:`micropay.payee.VoucherBook.accept_if_higher`), durably, in
        one transaction: the voucher raises the best (and, ``covered``, the best covered) if
        higher, the charged total becomes ``charged`` (default: the voucher's amount), and
        ``charge`` (the receipt the request is answered with) becomes a row of ``charges``.

        Returns the increment (new charged total minus the one it replaced); raises
        :class:`StaleVoucherError` if the charged total does not beat the stored one, or if
        ``over`` is given and the stored charged total is not exactly ``over`` (0: none
        stored, or 0), and :class:`InvalidSignatureError` if the channel's authorizer did not
        sign it here.
        """
        return self.accept_soon(
            config, voucher, over=over, covered=covered, charge=charge, charged=charged
        ).result()

    def accept_soon(
        self,
        config: ChannelConfig,
        voucher: Voucher,
        *,
        over: int | None = None,
        covered: bool = False,
        charge: SignedReceipt | None = None,
        charged: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        ceiling: int | None = None,
    ) -> Pending[int]:
        """:meth:`accept_if_higher` without waiting: the checks run now (a bad voucher raises
        here), the write joins the ledger's next group commit, and the future holds the
        increment (or the :class:`StaleVoucherError`) once that commit is durable.
        ``ceiling`` (with ``over``): the best voucher's amount the caller read (0: none),
        which the ledger must still hold, or the write is stale: a voucher another process
        took without moving the charged total must not pay again.

        A server on an asyncio loop passes it as ``loop`` (calling from it) and awaits the
        future, a future of that loop, instead of parking a thread: the writer wakes the loop
        once per commit for all of its futures there. Without ``loop`` the future is a
        :class:`concurrent.futures.Future`, for threads."""
        if voucher.channel_id != config.channel_id:
            raise VoucherError("the voucher is for another channel than the configuration")
        if self._fresh.pop(config.channel_id, None) != (
            voucher.cumulative_amount,
            voucher.signature,
            config.authorizer,
        ):
            self._verifier.verify(voucher, bytes.fromhex(config.authorizer[2:]))
        total = charged_total(voucher, charged)
        if charged is None and over is not None and total <= over:
            # A voucher charged whole must add to the total read: nothing to write.
            stale: Pending[int] = pending(loop)
            stale.set_exception(
                StaleVoucherError(
                    f"voucher for {voucher.cumulative_amount} does not beat the accepted {over}"
                )
            )
            return stale
        charge_row = None if charge is None else self._charge_row(config, voucher, charge, total)
        self._remember(config)
        now = time.time()
        row = VoucherRow(
            channel_id=config.channel_id,
            chain_id=self.domain.chain_id,
            verifying_contract=self.domain.verifying_contract,
            payer=config.payer,
            payee=config.payee,
            token=config.token,
            authorizer=config.authorizer,
            withdraw_delay=config.withdraw_delay,
            salt=config.salt,
            cumulative_amount=voucher.cumulative_amount,
            signature=voucher.signature,
            accepted_at=now,
            owed_since=now,
            covered_amount=voucher.cumulative_amount if covered else None,
            covered_signature=voucher.signature if covered else None,
            charged_amount=total,
            refunded_amount=0,
        )

        def increment(found: Accepted) -> int:
            if found.replaced is None:
                if over is not None and found.held != over:
                    raise StaleVoucherError(
                        f"the book holds {found.held} for the channel, not {over} (its "
                        "charged total)"
                    )
                if ceiling is not None:  # the charged total read, under another best voucher
                    raise StaleVoucherError(
                        f"the book holds another best voucher for the channel than {ceiling}"
                    )
                raise StaleVoucherError(
                    f"voucher for {voucher.cumulative_amount} does not beat the accepted "
                    f"{found.held}"
                )
            # Read back next, the row's best is this voucher if it raised it: verified already.
            known = self._verified.get(config.channel_id)
            if known is None or voucher.cumulative_amount > known[0]:
                self._verified[config.channel_id] = (voucher.cumulative_amount, voucher.signature)
            return total - found.replaced

        return self._store.accept_soon(
            row, over=over, ceiling=ceiling, charge=charge_row, then=increment, loop=loop
        )

    def charge_soon(
        self,
        channel_id: bytes,
        ceiling: int,
        over: int,
        charged: int,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Pending[int]:
        """A charge under the best voucher already held (a prepaid credit's): the charged total
        goes from exactly ``over`` to ``charged`` while the best voucher is still ``ceiling``,
        in the next group commit; the future holds the increment once durable, or
        :class:`StaleVoucherError` if the row holds another total or ceiling. No voucher is
        written, so none is checked: the one held was checked when it was stored. ``loop``
        as for :meth:`accept_soon`."""

        def increment(found: Accepted) -> int:
            if found.replaced is None:
                raise StaleVoucherError(
                    f"the book holds {found.held} for the channel under another ceiling, or "
                    f"not {over} (its charged total)"
                )
            return charged - over

        return self._store.charge_soon(
            channel_id, ceiling, over, charged, time.time(), then=increment, loop=loop
        )

    def verify(self, config: ChannelConfig, voucher: Voucher) -> None:
        """Check the voucher's signature as :meth:`accept_if_higher` would, and remember it
        passed: a payee that checks a voucher here before storing it (the paywall checks
        before the handler, stores after) has it checked once, not twice.

        Raises :class:`InvalidSignatureError` if the channel's authorizer did not sign it."""
        self._verifier.verify(voucher, bytes.fromhex(config.authorizer[2:]))
        with self._lock:
            self._fresh[config.channel_id] = (
                voucher.cumulative_amount,
                voucher.signature,
                config.authorizer,
            )
            while len(self._fresh) > self._max_cached:
                self._fresh.popitem(last=False)

    def commit_stats(self) -> CommitStats:
        """How many accepts this process has committed, in how many transactions (group
        commit shares one between the accepts that arrive together)."""
        return self._store.commit_stats()

    @property
    def blocking_reads(self) -> bool:
        """Whether a read may wait on a server (PostgreSQL) rather than only on this
        machine's pages (SQLite in WAL mode, whose readers never wait for the writer): a
        server on an event loop reads a blocking ledger from a thread, SQLite in place."""
        return self._store.blocking_reads

    def _charge_row(
        self, config: ChannelConfig, voucher: Voucher, charge: SignedReceipt, charged: int
    ) -> ChargeRow:
        if (charge.domain, charge.channel_id, charge.payer, charge.cumulative_amount) != (
            self.domain,
            config.channel_id,
            config.payer,
            charged,
        ):
            raise VoucherError("the charge's receipt is not of this voucher")
        return ChargeRow(
            receipt_id=charge.receipt_id,
            channel_id=charge.channel_id,
            payer=charge.payer,
            asset=charge.asset,
            resource=charge.resource,
            amount=charge.amount,
            cumulative_amount=charge.cumulative_amount,
            issued_at=charge.issued_at,
            signature=charge.signature,
            ceiling=voucher.cumulative_amount,
        )

    def refund(self, channel_id: bytes, amount: int, reason: str, *, floor: int = 0) -> Refund:
        """Lower the channel's charged total by ``amount`` and record the refund in
        ``refunds``, in one transaction, atomic against concurrent charges (compare-and-swap
        on the totals); never below ``floor`` (what is claimed on chain) nor 0. Raises
        :class:`RefundError` (``invalid_amount``, ``unknown_channel``, ``exceeds_refundable``)."""
        amount = refund_amount(amount)
        try:
            row = self._store.refund(channel_id, amount, str(reason), floor, time.time())
        except LookupError:
            raise RefundError(
                "unknown_channel", "the ledger holds nothing for this channel"
            ) from None
        return _refund_of(row)

    def refunds(self, channel_id: bytes | None = None) -> list[Refund]:
        """The refunds recorded (of one channel, or all), oldest first."""
        return [_refund_of(row) for row in self._store.refunds(channel_id)]

    def charges(self, since: int | None = None, until: int | None = None) -> list[SignedReceipt]:
        """Every charge issued in ``[since, until)`` (Unix seconds; either end open), oldest
        first, as the receipts the readers were given: the site's statement."""
        return [
            SignedReceipt(
                domain=self.domain,
                receipt_id=row.receipt_id,
                channel_id=row.channel_id,
                payer=row.payer,
                asset=row.asset,
                resource=row.resource,
                amount=row.amount,
                cumulative_amount=row.cumulative_amount,
                issued_at=row.issued_at,
                signature=row.signature,
            )
            for row in self._store.charges(since, until)
        ]

    def best(self, channel_id: bytes) -> Voucher | None:
        """The best voucher accepted for the channel, verified, or None."""
        row = self._store.voucher_row(channel_id)
        return None if row is None else self._checked(row)[1]

    def held(self, channel_id: bytes) -> Held | None:
        """The best voucher (verified) with the charged and refunded totals, or None."""
        row = self._store.voucher_row(channel_id)
        if row is None:
            return None
        return Held(self._checked(row)[1], row.charged_amount, row.refunded_amount)

    def best_covered(self, channel_id: bytes) -> Voucher | None:
        """The best voucher accepted as covered by the confirmed deposit, verified, or None."""
        row = self._store.voucher_row(channel_id)
        return None if row is None else self._covered(row, self._checked(row)[0])

    def config(self, channel_id: bytes) -> ChannelConfig | None:
        row = self._store.voucher_row(channel_id)
        return None if row is None else self._checked(row)[0]

    def channel_ids(self) -> list[bytes]:
        return self._store.channel_ids()

    # -- settlement view -------------------------------------------------------------------

    def position(self, channel_id: bytes) -> Position | None:
        """The channel's configuration, best voucher, totals and chain view, or None if unknown."""
        row = self._store.voucher_row(channel_id)
        return None if row is None else self._position(row, self._store.view(channel_id))

    def positions(self) -> list[Position]:
        """Every channel's position, each row verified (a damaged one raises, none is skipped)."""
        views = self._store.views()
        rows = self._store.voucher_rows()
        return [self._position(row, views.get(row.channel_id)) for row in rows]

    def _position(self, row: VoucherRow, view: ChainView | None) -> Position:
        config, voucher = self._checked(row)
        return Position(
            config,
            voucher,
            view,
            row.accepted_at,
            row.owed_since,
            self._covered(row, config),
            row.charged_amount,
            row.refunded_amount,
        )

    def unsettled(self, channel_id: bytes) -> int:
        """Charged but not claimed on chain, as far as the chain view has read (0 if unknown)."""
        position = self.position(channel_id)
        return 0 if position is None else position.unsettled

    def set_owed_since(self, changes: Iterable[tuple[bytes, float | None]]) -> None:
        """Record when channels began owing (None: settled); the settlement policy's age clock."""
        self._store.set_owed_since(changes)

    def check(self) -> int:
        """Verify every row now (not only when read); return how many were checked.

        Raises on the first problem, naming the channel and what is wrong with it.
        """
        self._verified.clear()
        self._verified_covered.clear()
        rows = self._store.voucher_rows()
        for row in rows:
            self._covered(row, self._checked(row)[0])
        return len(rows)

    # -- checking rows ---------------------------------------------------------------------

    def _checked(self, row: VoucherRow) -> tuple[ChannelConfig, Voucher]:
        where = f"{self.location}: channel 0x{row.channel_id.hex()}"
        if (row.chain_id, row.verifying_contract) != (
            self.domain.chain_id,
            self.domain.verifying_contract,
        ):
            raise ForeignLedgerError(
                f"{where} was written for chain {row.chain_id}, contract "
                f"{row.verifying_contract}, not this ledger's chain {self.domain.chain_id}, "
                f"contract {self.domain.verifying_contract}"
            )
        fields = _config_fields(row)
        with self._lock:
            cached = self._configs.get(row.channel_id)
            if cached is not None:
                self._configs.move_to_end(row.channel_id)
        if cached is not None and cached[0] == fields:
            config = cached[1]
        else:
            try:
                config = ChannelConfig(
                    payer=row.payer,
                    payee=row.payee,
                    token=row.token,
                    authorizer=row.authorizer,
                    withdraw_delay=row.withdraw_delay,
                    salt=row.salt,
                )
            except VoucherError as err:
                raise LedgerCorruptError(f"{where} has a malformed configuration: {err}") from None
            if config.channel_id != row.channel_id:
                raise LedgerCorruptError(
                    f"{where}: its configuration hashes to 0x{config.channel_id.hex()}, not to "
                    "its channel id (the row was altered)"
                )
            self._remember(config, fields)
        try:
            voucher = Voucher(row.channel_id, row.cumulative_amount, row.signature)
        except VoucherError as err:
            raise LedgerCorruptError(f"{where} has a malformed configuration: {err}") from None
        self._verify_once(
            self._verified,
            voucher,
            config,
            f"{where}: the voucher",
            "or copied from a ledger for another contract",
        )
        return config, voucher

    def _remember(self, config: ChannelConfig, fields: tuple[object, ...] | None = None) -> None:
        """Keep a channel's built configuration, under the stored fields it was built from
        (a row read later reuses it only if its fields are these)."""
        with self._lock:
            self._configs[config.channel_id] = (fields or _config_fields(config), config)
            self._configs.move_to_end(config.channel_id)
            while len(self._configs) > self._max_cached:
                self._configs.popitem(last=False)

    def _verify_once(
        self,
        verified: dict[bytes, tuple[int, bytes]],
        voucher: Voucher,
        config: ChannelConfig,
        what: str,
        hint: str = "",
    ) -> None:
        """Check a stored voucher's signature, once per (channel, amount, signature) that
        ``verified`` remembers: a row read again unchanged costs no second ECDSA check."""
        held = (voucher.cumulative_amount, voucher.signature)
        if verified.get(voucher.channel_id) == held:
            return
        try:
            self._verifier.verify(voucher, bytes.fromhex(config.authorizer[2:]))
        except VoucherError as err:
            raise LedgerCorruptError(
                f"{what} for {voucher.cumulative_amount} does not verify under this ledger's "
                f"domain ({err}); the row was altered{' ' + hint if hint else ''}"
            ) from None
        verified[voucher.channel_id] = held

    def _covered(self, row: VoucherRow, config: ChannelConfig) -> Voucher | None:
        """The row's covered voucher, checked like the best one (whose configuration
        ``_checked`` has already checked); usually it is the best one, verified already."""
        if row.covered_amount is None or row.covered_signature is None:
            return None
        where = f"{self.location}: channel 0x{row.channel_id.hex()}"
        if row.covered_amount > row.cumulative_amount:
            raise LedgerCorruptError(
                f"{where}: its covered voucher for {row.covered_amount} is above its best "
                f"voucher for {row.cumulative_amount} (the row was altered)"
            )
        try:
            voucher = Voucher(row.channel_id, row.covered_amount, row.covered_signature)
        except VoucherError as err:
            raise LedgerCorruptError(f"{where} has a malformed covered voucher: {err}") from None
        if (row.covered_amount, row.covered_signature) != (row.cumulative_amount, row.signature):
            self._verify_once(
                self._verified_covered, voucher, config, f"{where}: the covered voucher"
            )
        return voucher


def _refund_of(row: RefundRow) -> Refund:
    return Refund(
        row.channel_id,
        row.amount,
        row.reason,
        row.refunded_at,
        row.charged_amount,
        row.refunded_amount,
    )


_CONFIG_FIELDS = ("payer", "payee", "token", "authorizer", "withdraw_delay", "salt")


def _config_fields(source: ChannelConfig | VoucherRow) -> tuple[object, ...]:
    """What a channel's configuration is made of, from a configuration or a stored row."""
    return tuple(getattr(source, name) for name in _CONFIG_FIELDS)


if TYPE_CHECKING:  # mypy holds the ledger to the payee's protocol

    def _as_voucher_book(ledger: Ledger) -> VoucherBook:
        return ledger
