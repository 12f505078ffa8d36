"""The payee's side: accept vouchers fast and safely, then settle with the best ones.

``Payee.accept`` is what a paywall calls per request. It checks, in order of cost: that the
channel pays this payee through this contract, that the cumulative amount grows, the
signature (fast path, no RPC), and the channel's on-chain state from a cache: it exists, is
not finished, holds enough deposit, and the payer's withdraw (if any) does not end within
the safety margin. Only a voucher above the cached deposit triggers a refresh from the
chain (the payer may have topped up). It returns what the voucher added.

Vouchers are kept by a :class:`VoucherBook`; the in-memory one here is the default, and
the durable ledger (``micropay.ledger``) implements the same protocol.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from micropay.channels import ChannelClient, ChannelState
from micropay.errors import (
    ChannelClosingError,
    InsufficientDepositError,
    StaleVoucherError,
    UnknownChannelError,
)
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


class VoucherBook(Protocol):
    """Where a payee keeps the best voucher of each channel."""

    def accept_if_higher(
        self, config: ChannelConfig, voucher: Voucher, *, over: int | None = None
    ) -> int:
        """Store ``voucher`` atomically if it beats the stored one; return the increment.

        Raise :class:`StaleVoucherError` if it does not beat it. With ``over``, the stored
        voucher must also be exactly that amount (0: none stored): a seller who priced a
        request as "what I read plus the price" needs the book unchanged since the read, or
        a rival process that stored a smaller voucher in between would shrink the charge.
        """

    def best(self, channel_id: bytes) -> Voucher | None: ...

    def config(self, channel_id: bytes) -> ChannelConfig | None: ...

    def channel_ids(self) -> list[bytes]: ...


class MemoryVoucherBook:
    """A thread-safe in-process book: fine for one process that may lose its vouchers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._best: dict[bytes, tuple[ChannelConfig, Voucher]] = {}

    def accept_if_higher(
        self, config: ChannelConfig, voucher: Voucher, *, over: int | None = None
    ) -> int:
        with self._lock:
            held = self._best.get(voucher.channel_id)
            previous = held[1].cumulative_amount if held else 0
            if voucher.cumulative_amount <= previous:
                raise StaleVoucherError(
                    f"voucher for {voucher.cumulative_amount} does not beat the accepted {previous}"
                )
            if over is not None and previous != over:
                raise StaleVoucherError(f"the book holds {previous} for the channel, not {over}")
            self._best[voucher.channel_id] = (config, voucher)
            return voucher.cumulative_amount - previous

    def best(self, channel_id: bytes) -> Voucher | None:
        held = self._best.get(channel_id)
        return held[1] if held else None

    def config(self, channel_id: bytes) -> ChannelConfig | None:
        held = self._best.get(channel_id)
        return held[0] if held else None

    def channel_ids(self) -> list[bytes]:
        return list(self._best)


@dataclass
class _CachedState:
    state: ChannelState
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
    ) -> None:
        """``safety_margin``: refuse vouchers once a payer's withdraw ends within this many
        seconds (the payee needs the time to claim). ``state_ttl``: how long a cached
        channel state is trusted before it is read again. ``max_cached_channels`` bounds
        the cache (least recently read first out); channels that do not exist on chain are
        never cached, so strangers naming made-up channels cannot grow it."""
        self.client = client
        self.account = account
        self.book: VoucherBook = book if book is not None else MemoryVoucherBook()
        self.safety_margin = safety_margin
        self.state_ttl = state_ttl
        self._verifier = VoucherVerifier(client.domain)
        self._address_bytes = bytes.fromhex(account.address[2:])
        self.max_cached_channels = max_cached_channels
        self._cache: OrderedDict[bytes, _CachedState] = OrderedDict()
        self._cache_lock = threading.Lock()

    # -- state cache ---------------------------------------------------------------------------

    def refresh(self, channel_id: bytes) -> ChannelState:
        """Read a channel's state from the chain now and cache it (if it exists)."""
        return self._read(channel_id).state

    def _read(self, channel_id: bytes) -> _CachedState:
        state = self.client.state(channel_id)
        chain_time = int(self.client.w3.eth.get_block("latest")["timestamp"])
        entry = _CachedState(state, chain_time, time.monotonic())
        if state.exists:
            with self._cache_lock:
                self._cache[channel_id] = entry
                self._cache.move_to_end(channel_id)
                while len(self._cache) > self.max_cached_channels:
                    self._cache.popitem(last=False)
        return entry

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
        """Check a voucher and keep it if it is the best so far; return what it added."""
        claimed = self.check(config, voucher).claimed_floor
        increment = self.book.accept_if_higher(config, voucher)
        # A book that lost the channel (or never had it) counts from 0; what was already
        # claimed on chain was paid before, so it is not added again.
        increment = min(increment, voucher.cumulative_amount - claimed)
        return Accepted(voucher.channel_id, increment, voucher.cumulative_amount)

    def check(self, config: ChannelConfig, voucher: Voucher) -> Checked:
        """Every check :meth:`accept` makes, storing nothing (a paywall stores later)."""
        if config.payee != self.account.address:
            raise UnknownChannelError("the channel pays another payee")
        if voucher.channel_id != config.channel_id:
            raise UnknownChannelError("the voucher is for another channel than the configuration")
        best = self.book.best(voucher.channel_id)
        if best is not None and voucher.cumulative_amount <= best.cumulative_amount:
            raise StaleVoucherError(
                f"voucher for {voucher.cumulative_amount} does not beat the accepted "
                f"{best.cumulative_amount}"
            )
        self._verifier.verify(voucher, bytes.fromhex(config.authorizer[2:]))
        state = self._check_funded(voucher)
        if voucher.cumulative_amount <= state.claimed:
            raise StaleVoucherError(
                f"voucher for {voucher.cumulative_amount} does not beat the {state.claimed} "
                "already claimed on chain"
            )
        previous = max(best.cumulative_amount if best else 0, state.claimed)
        return Checked(voucher.cumulative_amount - previous, state.claimed, state)

    def _check_funded(self, voucher: Voucher) -> ChannelState:
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
        return state

    # -- settling ------------------------------------------------------------------------------

    def unclaimed(self, channel_id: bytes) -> int:
        """Accepted but not yet claimed on chain (per the cached state)."""
        best = self.book.best(channel_id)
        if best is None:
            return 0
        return best.cumulative_amount - self._cached(channel_id).state.claimed

    def claim(self, channel_id: bytes) -> TxReceipt:
        """Claim one channel up to its best voucher; the channel stays open."""
        config, voucher = self._held(channel_id)
        receipt = self.client.claim(config, voucher, self.account)
        self.refresh(channel_id)
        return receipt

    def claim_all(self, channel_ids: Iterable[bytes] | None = None) -> TxReceipt | None:
        """Claim every channel with something unclaimed, in one transaction."""
        ids = list(self.book.channel_ids() if channel_ids is None else channel_ids)
        batch = []
        for channel_id in ids:
            state = self.refresh(channel_id)
            config, voucher = self._held(channel_id)
            if not state.finished and voucher.cumulative_amount > state.claimed:
                batch.append((config, voucher))
        if not batch:
            return None
        batch.sort(key=lambda item: item[0].token)  # consecutive same-token claims pay out once
        receipt = self.client.claim_many(batch, self.account)
        for config, _ in batch:
            self.refresh(config.channel_id)
        return receipt

    def close(self, channel_id: bytes) -> TxReceipt:
        """Close with the best voucher: claim it and refund the rest to the payer."""
        config, voucher = self._held(channel_id)
        state = self.refresh(channel_id)
        receipt = self.client.close(
            config, voucher if voucher.cumulative_amount > state.claimed else None, self.account
        )
        self.refresh(channel_id)
        return receipt

    def _held(self, channel_id: bytes) -> tuple[ChannelConfig, Voucher]:
        config = self.book.config(channel_id)
        voucher = self.book.best(channel_id)
        if config is None or voucher is None:
            raise UnknownChannelError("no voucher was accepted for this channel")
        return config, voucher
