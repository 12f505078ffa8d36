"""The payee's side: accept vouchers fast and safely, then settle with the best ones.

``Payee.accept`` is what a paywall calls per request. It checks, in order of cost: that the
channel pays this payee through this contract, that the voucher beats the charged total, the
signature (fast path, no RPC), and the channel's on-chain state from a cache: it exists, is
not finished, holds enough deposit, and the payer's withdraw (if any) does not end within
the safety margin. Only a voucher above the cached deposit triggers a refresh from the
chain (the payer may have topped up). It returns what the voucher added.

Reorgs: a voucher may be accepted against the latest deposit, though a top-up in it is not
yet confirmed (a reader who tops up should not wait for blocks). If a reorg then removes the
top-up, that voucher exceeds the deposit and can never be claimed. So the book keeps, beside
each channel's best voucher, the best one *covered* by the confirmed deposit (the deposit as
of ``confirmations`` blocks under the head, read with the cached state), and every claim
falls back on it when the best one is short: a reorg costs at most the vouchers accepted
beyond the confirmed deposit, never those it covered.

Vouchers are kept by a :class:`VoucherBook`; the in-memory one here is the default, and
the durable ledger (``micropay.ledger``) implements the same protocol. Beside each best
voucher (a *ceiling*) a book keeps the channel's charged and refunded totals
(:mod:`micropay.charging`): settlement claims the charged total, :meth:`Payee.refund` lowers
it off chain, and :meth:`Payee.refund_on_chain` returns unspent deposit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from micropay.channels import ChannelClient, ChannelState
from micropay.charging import Held, Refund, charged_total, refund_amount, refunded_below
from micropay.claims import Claim, batches, claim_from, send
from micropay.errors import (
    ChannelClosingError,
    InsufficientDepositError,
    PayeeConfigError,
    RefundError,
    StaleVoucherError,
    UnknownChannelError,
)
from micropay.receipts import SignedReceipt
from micropay.vouchers import ChannelConfig, Voucher, VoucherVerifier


@dataclass(frozen=True)
class Accepted:
    """What one accepted voucher added (``increment``) and the channel's new best total."""

    channel_id: bytes
    increment: int
    cumulative_amount: int


@dataclass(frozen=True)
class Checked:
    """A voucher that passed every check: what it would add, over which on-chain floor."""

    increment: int
    claimed_floor: int
    state: ChannelState
    covered: bool
    """The confirmed deposit covers it too (not only the latest): store it as covered."""


class VoucherBook(Protocol):
    """Where a payee keeps, per channel, the best voucher, the charged and refunded totals."""

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
        """The charge write: in one atomic step, keep ``voucher`` as the channel's best if its
        ceiling is higher than the stored one, set the charged total to ``charged`` (default:
        the voucher's whole amount, as a fixed price charges), and record ``charge``; return
        the increment (new charged total minus the one replaced; 0 if none was stored).

        ``charged`` must be at most the voucher's amount (a ``ValueError`` otherwise).
        Compare-and-swap on the charged total: with ``over``, the stored charged total must be
        exactly ``over`` (0: none stored, or 0 charged): a seller who priced a request as "what
        I read plus the price" needs the total unchanged since the read, or a rival process's
        charge (or a refund) in between would be overwritten. Without ``over`` (or with
        ``charged`` None, a voucher charged whole), ``charged`` must also beat the stored
        charged total; with ``over`` and a ``charged`` equal to it the write is a zero
        metered charge (the voucher and receipt are still recorded). Either failing raises
        :class:`StaleVoucherError` and writes nothing.

        ``covered``: the channel's confirmed deposit covers the voucher, so it also becomes
        the channel's best covered voucher (if above the stored covered one). Otherwise the
        covered one stays as it was, in the same atomic step: a reorg that removes the
        top-up the new voucher relies on cannot take it.

        ``charge``: the signed receipt the request that paid it is answered with; the book
        records it with the voucher, in the same atomic step, or not at all.
        """

    def refund(self, channel_id: bytes, amount: int, reason: str, *, floor: int = 0) -> Refund:
        """Lower the channel's charged total by ``amount`` (a positive int) and add it to the
        refunded total, atomically against concurrent charges, recording the refund; never
        below ``floor`` (what is claimed on chain) nor 0. Raises :class:`RefundError`."""

    def charges(self, since: int | None = None, until: int | None = None) -> list[SignedReceipt]:
        """The recorded charges issued in ``[since, until)`` (Unix seconds), oldest first."""

    def best(self, channel_id: bytes) -> Voucher | None: ...

    def held(self, channel_id: bytes) -> Held | None:
        """The channel's best voucher with its charged and refunded totals, or None."""

    def best_covered(self, channel_id: bytes) -> Voucher | None:
        """The best voucher accepted as covered by the confirmed deposit, or None."""

    def config(self, channel_id: bytes) -> ChannelConfig | None: ...

    def channel_ids(self) -> list[bytes]: ...


@runtime_checkable
class VerifyingBook(VoucherBook, Protocol):
    """A book that checks signatures itself before storing (the durable ledger): it checks
    for the payee too, and remembers what passed, so a voucher is checked once."""

    def verify(self, config: ChannelConfig, voucher: Voucher) -> None:
        """Raise :class:`InvalidSignatureError` unless the channel's authorizer signed it."""


@runtime_checkable
class CommittingBook(VoucherBook, Protocol):
    """A book whose writes are committed in groups by a writer of its own (the durable
    ledger): an event loop awaits :meth:`accept_soon`'s future instead of parking a thread.
    Given the running asyncio loop as ``loop``, the future is one of that loop (settled with
    one wake-up per commit); without it, a :class:`concurrent.futures.Future`."""

    blocking_reads: bool
    """Whether its reads may wait on a server (then an event loop reads it from a thread)."""

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
    ) -> Future[int] | asyncio.Future[int]:
        """:meth:`VoucherBook.accept_if_higher`, its result in a future once it is durable;
        with ``ceiling``, only if the best voucher held is still that one (0: none)."""

    def charge_soon(
        self,
        channel_id: bytes,
        ceiling: int,
        over: int,
        charged: int,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Future[int] | asyncio.Future[int]:
        """A charge under the best voucher held (``ceiling``, not written again): the charged
        total from exactly ``over`` to ``charged``, its result in a future once durable
        (:class:`StaleVoucherError` if the book holds another total or ceiling)."""
        ...


class MemoryVoucherBook:
    """A thread-safe in-process book: fine for one process that may lose its vouchers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[bytes, tuple[ChannelConfig, Held]] = {}
        self._covered: dict[bytes, Voucher] = {}
        self._charges: list[SignedReceipt] = []
        self._refunds: list[Refund] = []

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
        total = charged_total(voucher, charged)
        with self._lock:
            entry = self._held.get(voucher.channel_id)
            held = entry[1] if entry else None
            previous = held.charged if held else 0
            if over is not None and previous != over:
                raise StaleVoucherError(
                    f"the book holds {previous} for the channel, not {over} (its charged total)"
                )
            if (over is None or charged is None) and total <= previous:
                raise StaleVoucherError(
                    f"voucher for {voucher.cumulative_amount} does not beat the accepted {previous}"
                )
            higher = held is None or voucher.cumulative_amount > held.ceiling
            best = voucher if higher or held is None else held.voucher
            self._held[voucher.channel_id] = (
                config,
                Held(best, total, held.refunded if held else 0),
            )
            stored_cover = self._covered.get(voucher.channel_id)
            if covered and (
                stored_cover is None or voucher.cumulative_amount > stored_cover.cumulative_amount
            ):
                self._covered[voucher.channel_id] = voucher
            if charge is not None:
                self._charges.append(charge)
            return total - previous

    def refund(self, channel_id: bytes, amount: int, reason: str, *, floor: int = 0) -> Refund:
        amount = refund_amount(amount)
        with self._lock:
            entry = self._held.get(channel_id)
            if entry is None:
                raise RefundError("unknown_channel", "the book holds nothing for this channel")
            config, held = entry
            if held.charged - amount < max(floor, 0):
                raise refunded_below(channel_id, held.charged, amount, floor)
            after = Held(held.voucher, held.charged - amount, held.refunded + amount)
            self._held[channel_id] = (config, after)
            record = Refund(channel_id, amount, reason, time.time(), after.charged, after.refunded)
            self._refunds.append(record)
            return record

    def refunds(self, channel_id: bytes | None = None) -> list[Refund]:
        """The refunds recorded (of one channel, or all), oldest first."""
        with self._lock:
            return [r for r in self._refunds if channel_id in (None, r.channel_id)]

    def charges(self, since: int | None = None, until: int | None = None) -> list[SignedReceipt]:
        with self._lock:
            held = list(self._charges)
        low, high = since if since is not None else 0, until if until is not None else 2**64
        return sorted(
            (c for c in held if low <= c.issued_at < high),
            key=lambda c: (c.issued_at, c.channel_id, c.cumulative_amount),
        )

    def best(self, channel_id: bytes) -> Voucher | None:
        entry = self._held.get(channel_id)
        return entry[1].voucher if entry else None

    def held(self, channel_id: bytes) -> Held | None:
        entry = self._held.get(channel_id)
        return entry[1] if entry else None

    def best_covered(self, channel_id: bytes) -> Voucher | None:
        return self._covered.get(channel_id)

    def config(self, channel_id: bytes) -> ChannelConfig | None:
        entry = self._held.get(channel_id)
        return entry[0] if entry else None

    def channel_ids(self) -> list[bytes]:
        return list(self._held)


@dataclass
class _CachedState:
    state: ChannelState
    confirmed_deposit: int  # the deposit ``confirmations`` blocks under the head when read
    chain_time: int  # the latest block's timestamp when read
    read_at: float  # time.monotonic() when read

    def now(self) -> float:
        """The chain's time now, estimated without a round trip."""
        return self.chain_time + (time.monotonic() - self.read_at)


class Payee:
    """Accepts vouchers for channels paying ``account`` on one PaymentChannels deployment."""

    def __init__(
        self,
        client: ChannelClient,
        account: LocalAccount,
        *,
        book: VoucherBook | None = None,
        safety_margin: int = 3600,
        state_ttl: float = 30.0,
        max_cached_channels: int = 100_000,
        confirmations: int = 2,
    ) -> None:
        """``safety_margin``: refuse vouchers once a payer's withdraw ends within this many
        seconds (the payee needs the time to claim). ``state_ttl``: how long a cached
        channel state is trusted before it is read again. ``max_cached_channels`` bounds
        the cache (least recently read first out); channels that do not exist on chain are
        never cached, so strangers naming made-up channels cannot grow it.
        ``confirmations``: how deep a deposit must be before the vouchers it covers are kept
        as covered (the watchtower's default depth; 0 trusts the latest block, as a dev
        chain that never reorganises may)."""
        if type(confirmations) is not int or confirmations < 0:
            raise PayeeConfigError(f"confirmations must be an integer >= 0: {confirmations!r}")
        self.client = client
        self.account = account
        self.book: VoucherBook = book if book is not None else MemoryVoucherBook()
        self.safety_margin = safety_margin
        self.state_ttl = state_ttl
        self.confirmations = confirmations
        self._verifier = VoucherVerifier(client.domain)
        self._verify: Callable[[ChannelConfig, Voucher], None] = (
            self.book.verify if isinstance(self.book, VerifyingBook) else self._verify_here
        )
        self._address_bytes = bytes.fromhex(account.address[2:])
        self.max_cached_channels = max_cached_channels
        self._cache: OrderedDict[bytes, _CachedState] = OrderedDict()
        self._cache_lock = threading.Lock()

    def _verify_here(self, config: ChannelConfig, voucher: Voucher) -> None:
        self._verifier.verify(voucher, bytes.fromhex(config.authorizer[2:]))

    # -- state cache ---------------------------------------------------------------------------

    def refresh(self, channel_id: bytes) -> ChannelState:
        """Read a channel's state from the chain now and cache it (if it exists)."""
        return self._read(channel_id).state

    def _read(self, channel_id: bytes) -> _CachedState:
        # The head first: if a block arrives in between, the state is the newer one and the
        # confirmed depth is counted from the older head, which errs on the safe side.
        head = self.client.w3.eth.get_block("latest")
        state = self.client.state(channel_id)
        confirmed = self._confirmed_deposit(channel_id, state, int(head["number"]))
        entry = _CachedState(state, confirmed, int(head["timestamp"]), time.monotonic())
        if state.exists:
            with self._cache_lock:
                self._cache[channel_id] = entry
                self._cache.move_to_end(channel_id)
                while len(self._cache) > self.max_cached_channels:
                    self._cache.popitem(last=False)
        return entry

    def _confirmed_deposit(self, channel_id: bytes, latest: ChannelState, head: int) -> int:
        """The deposit as of ``confirmations`` blocks under ``head``, read from the chain each
        time: deposits do not only grow (the payee's on-chain refund lowers them), so a
        deposit seen confirmed before a refund says nothing about a top-up after it."""
        if self.confirmations == 0 or not latest.exists:
            return latest.deposited
        block = max(head - self.confirmations, 0)
        return min(self.client.state(channel_id, block=block).deposited, latest.deposited)

    def cached_state(
        self, channel_id: bytes, *, max_age: float | None = None
    ) -> ChannelState | None:
        """The channel's state as last read from the chain, without a round trip; None if it
        was never read (or fell out of the cache), or was read over ``max_age`` seconds ago.

        A caller on an event loop reads the chain itself (in a thread) when this says None,
        so that :meth:`check` finds a fresh entry and never blocks the loop."""
        cached = self._cache.get(channel_id)
        if cached is None:
            return None
        if max_age is not None and time.monotonic() - cached.read_at > max_age:
            return None
        return cached.state

    def _cached(self, channel_id: bytes) -> _CachedState:
        cached = self._cache.get(channel_id)
        if cached is None or time.monotonic() - cached.read_at > self.state_ttl:
            cached = self._read(channel_id)
        return cached

    # -- accepting -----------------------------------------------------------------------------

    def accept(self, config: ChannelConfig, voucher: Voucher) -> Accepted:
        """Check a voucher and keep it if it is the best so far; return what it added. The
        voucher is charged whole (a fixed price): the charged total becomes its amount."""
        checked = self.check(config, voucher)
        claimed = checked.claimed_floor
        increment = self.book.accept_if_higher(config, voucher, covered=checked.covered)
        # A book that lost the channel (or never had it) counts from 0; what was already
        # claimed on chain was paid before, so it is not added again.
        increment = min(increment, voucher.cumulative_amount - claimed)
        return Accepted(voucher.channel_id, increment, voucher.cumulative_amount)

    def check(self, config: ChannelConfig, voucher: Voucher) -> Checked:
        """Every check :meth:`accept` makes, storing nothing (a paywall stores later)."""
        if voucher.channel_id != config.channel_id:
            raise UnknownChannelError("the voucher is for another channel than the configuration")
        return self.check_over(config, voucher, self.book.held(voucher.channel_id))

    def check_over(self, config: ChannelConfig, voucher: Voucher, held: Held | None) -> Checked:
        """:meth:`check` over what the caller has just read from the book (``held``; None:
        nothing), so a paywall that read it for pricing reads it once. It does not touch the
        book, and reads the chain only if the cached state is older than ``state_ttl`` or
        below the voucher (refresh it first to keep it off the chain).

        The voucher must beat the charged total (not the best ceiling: a stream's first
        voucher after a refund or a stream cut short may be at or below it; the paywall asks
        every other voucher to be above it), and the deposit must cover the whole voucher: a
        voucher is the charged total plus the most this request may charge, so every charge
        up to that maximum stays claimable. ``increment`` is that maximum (the voucher over
        the charged total, or over what is claimed on chain).

        The signature is checked by the book when it can remember that it did
        (:meth:`micropay.ledger.Ledger.verify`): its store that follows checks no more."""
        if config.payee != self.account.address:
            raise UnknownChannelError("the channel pays another payee")
        if voucher.channel_id != config.channel_id:
            raise UnknownChannelError("the voucher is for another channel than the configuration")
        if held is not None and held.voucher.channel_id != voucher.channel_id:
            raise UnknownChannelError("the best voucher given is for another channel")
        if held is not None and voucher.cumulative_amount <= held.charged:
            raise StaleVoucherError(
                f"voucher for {voucher.cumulative_amount} does not beat the charged total "
                f"{held.charged}"
            )
        self._verify(config, voucher)
        cached = self._check_funded(voucher)
        state = cached.state
        if voucher.cumulative_amount <= state.claimed:
            raise StaleVoucherError(
                f"voucher for {voucher.cumulative_amount} does not beat the {state.claimed} "
                "already claimed on chain"
            )
        previous = max(held.charged if held else 0, state.claimed)
        covered = voucher.cumulative_amount <= cached.confirmed_deposit
        return Checked(voucher.cumulative_amount - previous, state.claimed, state, covered)

    def _check_funded(self, voucher: Voucher) -> _CachedState:
        cached = self._cached(voucher.channel_id)
        if voucher.cumulative_amount > cached.state.deposited and cached.state.exists:
            # The payer may have topped up since we last looked.
            cached = self._read(voucher.channel_id)
        state = cached.state
        if not state.exists:
            raise UnknownChannelError("the channel has no deposit on chain")
        if state.finished:
            raise ChannelClosingError("the channel is finished")
        if state.withdraw_requested and state.closes_at - cached.now() < self.safety_margin:
            raise ChannelClosingError(
                f"the payer's withdraw ends at {state.closes_at}, within the "
                f"{self.safety_margin} s safety margin"
            )
        if voucher.cumulative_amount > state.deposited:
            raise InsufficientDepositError(
                f"voucher for {voucher.cumulative_amount} exceeds the deposit of {state.deposited}"
            )
        return cached

    # -- refunds -------------------------------------------------------------------------------

    def refund(self, channel_id: bytes, amount: int, reason: str = "") -> Refund:
        """Refund ``amount`` of what the channel was charged, off chain and without gas: the
        charged total goes down by it (never below what is claimed on chain, read now, nor
        0), the book records it beside the charges, and the channel's next receipt reports
        the new refunded total. Raises :class:`RefundError` (``invalid_amount``,
        ``unknown_channel``, ``exceeds_refundable``). Blocking (it reads the chain)."""
        amount = refund_amount(amount)
        if type(reason) is not str:
            raise RefundError("invalid_reason", f"a refund's reason is text: {reason!r}")
        if self.book.held(channel_id) is None:
            raise RefundError("unknown_channel", "no voucher was accepted for this channel")
        claimed = self.refresh(channel_id).claimed
        return self.book.refund(channel_id, amount, reason, floor=claimed)

    def refund_on_chain(self, channel_id: bytes, amount: int) -> TxReceipt:
        """Return ``amount`` of the channel's unspent deposit to the payer now, on chain, the
        channel staying open (``ChannelClient.refund``). Only deposit nobody was charged for
        may go: the deposit less the larger of the charged total and what is claimed. The
        cached state is read again after it, so no charge is then checked against the old
        deposit. Raises :class:`RefundError` (``invalid_amount``, ``unknown_channel``,
        ``exceeds_unspent``)."""
        amount = refund_amount(amount)
        config = self.book.config(channel_id)
        held = self.book.held(channel_id)
        if config is None or held is None:
            raise RefundError("unknown_channel", "no voucher was accepted for this channel")
        state = self.refresh(channel_id)
        unspent = state.deposited - max(held.charged, state.claimed)
        if amount > unspent:
            raise RefundError(
                "exceeds_unspent",
                f"channel 0x{channel_id.hex()}: only {max(unspent, 0)} of its deposit is "
                f"unspent; {amount} cannot be refunded",
            )
        try:
            return self.client.refund(config, amount, self.account)
        finally:
            self.refresh(channel_id)

    # -- settling ------------------------------------------------------------------------------

    def unclaimed(self, channel_id: bytes) -> int:
        """Accepted but not yet claimed on chain (per the cached state)."""
        held = self.book.held(channel_id)
        if held is None:
            return 0
        return max(held.charged - self._cached(channel_id).state.claimed, 0)

    def claim(self, channel_id: bytes) -> TxReceipt:
        """Claim one channel's charged total, with its best voucher as the ceiling (its best
        covered one if the deposit no longer covers the best); the channel stays open."""
        config, held = self._held(channel_id)
        claim = self._claim(channel_id, self.refresh(channel_id))
        if claim is None:  # nothing claimable: the contract says why
            receipt = self.client.claim(config, held.voucher, self.account, total=held.charged)
        else:
            receipt = self.client.claim(config, claim.voucher, self.account, total=claim.total)
        self.refresh(channel_id)
        return receipt

    def claim_all(self, channel_ids: Iterable[bytes] | None = None) -> TxReceipt | None:
        """Claim every channel with something unclaimed, in one transaction (the watchtower
        and ``micropay settle`` claim by the same path, :mod:`micropay.claims`). A channel
        whose best voucher exceeds its deposit (a top-up reorged away) is claimed with its best
        covered voucher; one with neither claimable is left out, so it cannot make the whole
        batch revert."""
        ids = list(self.book.channel_ids() if channel_ids is None else channel_ids)
        found = [
            claim
            for channel_id in ids
            if (claim := self._claim(channel_id, self.refresh(channel_id))) is not None
        ]
        if not found:
            return None
        [batch] = batches(found)
        receipt = send(self.client, batch, self.account)
        for claim in batch:
            self.refresh(claim.channel_id)
        return receipt

    def close(self, channel_id: bytes) -> TxReceipt:
        """Close settling the charged total under the best voucher (the best covered one if the
        deposit no longer covers the best): claim it and refund the rest to the payer."""
        config, held = self._held(channel_id)
        state = self.refresh(channel_id)
        claim = self._claim(channel_id, state)
        if claim is not None:
            receipt = self.client.close(config, claim.voucher, self.account, total=claim.total)
        elif held.charged > state.claimed:
            # nothing claimable: let the contract say why rather than refund
            receipt = self.client.close(config, held.voucher, self.account, total=held.charged)
        else:
            receipt = self.client.close(config, None, self.account)
        self.refresh(channel_id)
        return receipt

    def _claim(self, channel_id: bytes, state: ChannelState) -> Claim | None:
        """The claim the channel pays now (see :func:`micropay.claims.claim_from`), or None.
        The covered voucher is read only when the deposit falls short of the best one."""
        config, held = self._held(channel_id)
        short = held.ceiling > state.deposited
        covered = self.book.best_covered(channel_id) if short else None
        return claim_from(config, held.voucher, covered, state, charged=held.charged)

    def _held(self, channel_id: bytes) -> tuple[ChannelConfig, Held]:
        config = self.book.config(channel_id)
        held = self.book.held(channel_id)
        if config is None or held is None:
            raise UnknownChannelError("no voucher was accepted for this channel")
        return config, held
