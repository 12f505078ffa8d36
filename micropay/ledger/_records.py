"""The values the ledger hands out: positions (what a channel owes the payee) and chain facts.

All are frozen: they are snapshots of rows, and a caller mutating one would only fool itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from micropay.channels import voucher_to_claim
from micropay.vouchers import ChannelConfig, Voucher


@dataclass(frozen=True)
class BlockRef:
    """A block the chain follower has read, by number and hash (the hash detects reorgs)."""

    number: int
    hash: bytes


class EventKind(StrEnum):
    """What a chain-view row records. ``SEED`` is not an event: it is a channel's state read
    at one block when the follower first meets the channel, so no history scan is needed."""

    SEED = "seed"
    DEPOSITED = "deposited"
    CLAIMED = "claimed"
    WITHDRAW_REQUESTED = "withdraw_requested"
    CLOSED = "closed"
    WITHDRAWN = "withdrawn"
    REFUNDED = "refunded"
    """The payee's on-chain partial refund: ``total_deposited`` is the new, lower total."""


@dataclass(frozen=True)
class ChainEvent:
    """One fact about a channel at one block. Totals, not deltas, so dropping the rows of
    reorged blocks rolls the channel's state back: its deposit is the latest
    ``total_deposited`` by (block, log index), since a refund lowers it; the other totals
    only grow and are the maximum over its rows. A field the event does not carry is None."""

    block_number: int
    log_index: int
    channel_id: bytes
    kind: EventKind
    total_deposited: int | None = None
    total_claimed: int | None = None
    closes_at: int | None = None
    finished: bool = False


@dataclass(frozen=True)
class ChainView:
    """A channel's on-chain balances as far as the follower has read (confirmed blocks only)."""

    deposited: int
    claimed: int
    closes_at: int
    """0 while open; when the payer may finish withdrawing, once it asked."""
    finished: bool
    as_of_block: int
    """The newest block that contributed to this view."""

    @property
    def withdraw_requested(self) -> bool:
        return self.closes_at != 0


@dataclass(frozen=True)
class Position:
    """One channel as the payee holds it: its configuration, best voucher, best covered
    voucher and chain view.

    ``chain`` is None until a chain follower (the watchtower) has read the channel; until then
    nothing is known to be claimed, so the whole best voucher counts as unsettled.
    """

    config: ChannelConfig
    voucher: Voucher
    chain: ChainView | None
    accepted_at: float
    """Unix time the best voucher was stored."""
    owed_since: float | None
    """Unix time the channel last went from settled to owing (None: nothing owed)."""
    covered: Voucher | None = None
    """The best voucher accepted within the confirmed deposit (None: none was): what is
    still claimable if the deposit the best one relied on is reorged away."""
    charged: int | None = None
    """The charged total: what settlement claims, at most the best voucher (None: all of it)."""
    refunded: int = 0
    """The total refunded off chain (the charged total already went down by it)."""

    @property
    def charged_total(self) -> int:
        return self.voucher.cumulative_amount if self.charged is None else self.charged

    @property
    def channel_id(self) -> bytes:
        return self.config.channel_id

    @property
    def claimed(self) -> int:
        return self.chain.claimed if self.chain is not None else 0

    @property
    def unsettled(self) -> int:
        """Charged but not yet claimed on chain: what a claim of the charged total would pay."""
        return max(self.charged_total - self.claimed, 0)

    @property
    def underfunded(self) -> bool:
        """The best voucher promises more than the channel holds (a deposit was reorged away,
        a voucher was accepted against a deposit that never confirmed, or the payee refunded
        on chain more than the best voucher left unspent): a claim with it would revert."""
        return self.chain is not None and self.voucher.cumulative_amount > self.chain.deposited

    @property
    def to_claim(self) -> Voucher | None:
        """The voucher a claim would carry on the chain as the view shows it: the best one,
        or the best covered one if the deposit falls short of the best; None if neither
        would add anything (or the channel is finished)."""
        if self.chain is None:
            return self.voucher if self.unsettled > 0 else None
        if self.chain.finished:
            return None
        return voucher_to_claim(
            self.voucher, self.covered, deposited=self.chain.deposited, claimed=self.claimed
        )

    @property
    def claimable(self) -> bool:
        """A claim (with :attr:`to_claim`) would succeed on the chain as the view shows it."""
        return self.claimable_amount > 0

    @property
    def claimable_amount(self) -> int:
        """What a claim with :attr:`to_claim` would add (0 if nothing is claimable): the
        charged total, capped by that voucher and the deposit, over what is claimed."""
        voucher = self.to_claim
        if voucher is None:
            return 0
        cap = voucher.cumulative_amount
        if self.chain is not None:
            cap = min(cap, self.chain.deposited)
        return max(min(self.charged_total, cap) - self.claimed, 0)
