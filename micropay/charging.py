"""Charged totals: what a payee's book holds per channel besides the best voucher.

A voucher's cumulative amount is a *ceiling* the payer authorises. The site charges up to it
(a fixed price charges the whole voucher; a metered route "up to N" charges what the handler
used), and what it charged is the channel's *charged total*: the amount settlement claims,
with the best voucher as the ceiling (contract v2). Off-chain refunds lower the charged total
(never below what is claimed on chain) and add to the *refunded total*, so a client holding
its receipts can reconcile the two. The payee's books (:class:`~micropay.payee.MemoryVoucherBook`,
:class:`~micropay.ledger.Ledger`) keep these values and the checks here.
"""

from __future__ import annotations

from dataclasses import dataclass

from micropay.errors import RefundError
from micropay.vouchers import Voucher


@dataclass(frozen=True)
class Held:
    """What a book holds for one channel.

    ``voucher`` is the best voucher accepted (the highest ceiling the payer signed);
    ``charged`` the channel's charged total, what the site has actually charged and what
    settlement claims (always at most the ceiling); ``refunded`` the total refunded off chain
    so far (the charged total already went down by it). For fixed prices the charged total is
    the ceiling; a metered route or a refund leaves it below."""

    voucher: Voucher
    charged: int
    refunded: int = 0

    @property
    def ceiling(self) -> int:
        return self.voucher.cumulative_amount


@dataclass(frozen=True)
class Refund:
    """One off-chain refund as the book recorded it: ``charged`` is the charged total after
    it, ``refunded`` the channel's refunded total after it."""

    channel_id: bytes
    amount: int
    reason: str
    refunded_at: float
    charged: int
    refunded: int


def charged_total(voucher: Voucher, charged: int | None) -> int:
    """The charged total a charge write sets: ``charged``, or the voucher's whole amount;
    checked to be an int from 0 to the voucher's ceiling."""
    if charged is None:
        return voucher.cumulative_amount
    if type(charged) is not int or not 0 <= charged <= voucher.cumulative_amount:
        raise ValueError(
            f"a charged total is an int from 0 to the voucher's {voucher.cumulative_amount}: "
            f"{charged!r}"
        )
    return charged


def refund_amount(amount: object) -> int:
    """``amount`` if it is a positive int (not a bool), else :class:`RefundError`."""
    if type(amount) is not int or amount <= 0:
        raise RefundError("invalid_amount", f"a refund is a positive integer: {amount!r}")
    return amount


def refunded_below(channel_id: bytes, charged: int, amount: int, floor: int) -> RefundError:
    """The refusal of a refund that would take ``charged`` below ``floor`` (or 0)."""
    return RefundError(
        "exceeds_refundable",
        f"channel 0x{channel_id.hex()}: a refund of {amount} would take its charged total of "
        f"{charged} below the {max(floor, 0)} claimed on chain",
    )
