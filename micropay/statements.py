"""Statements: what was paid, for what, per site, day, resource or payer.

The same summary serves both sides. A reader's statement is built from the receipts its
wallet kept (:mod:`micropay.receipt_log`), a site's from the charges its ledger recorded
(:meth:`micropay.ledger.Ledger.charges`); each charge becomes a :class:`Charge` and
:func:`summarise` adds them up per key and asset, exactly (base units, no rounding).
Days are UTC calendar days of the time the site signed the receipt.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from micropay.receipt_log import KeptReceipt
from micropay.receipts import SignedReceipt

__all__ = ["GROUPINGS", "Charge", "Grouping", "StatementLine", "summarise"]

Grouping = Literal["site", "day", "resource", "payer"]
GROUPINGS: Final[tuple[Grouping, ...]] = ("site", "day", "resource", "payer")


@dataclass(frozen=True)
class Charge:
    """One charge as a statement counts it. ``asset`` is None when an unsigned receipt did
    not say; ``verified`` is False for a receipt the reader flagged (not the site's)."""

    site: str
    payer: str
    resource: str
    asset: str | None
    amount: int
    time: int
    verified: bool = True

    @classmethod
    def of_kept(cls, kept: KeptReceipt) -> Charge:
        """A receipt the reader kept (its site is the origin it paid)."""
        signed = kept.receipt.signed
        return cls(
            site=kept.site,
            payer=kept.receipt.payer,
            resource=kept.resource,
            asset=None if signed is None else signed.asset,
            amount=kept.receipt.amount,
            time=kept.recorded_at if signed is None else signed.issued_at,
            verified=kept.problem is None,
        )

    @classmethod
    def of_receipt(cls, receipt: SignedReceipt, site: str) -> Charge:
        """A charge a site's ledger recorded (``site``: how the statement names the site)."""
        return cls(
            site=site,
            payer=receipt.payer,
            resource=receipt.resource,
            asset=receipt.asset,
            amount=receipt.amount,
            time=receipt.issued_at,
        )

    def key(self, by: Grouping) -> str:
        if by == "day":
            return datetime.fromtimestamp(self.time, UTC).date().isoformat()
        value: str = getattr(self, by)
        return value


@dataclass(frozen=True)
class StatementLine:
    """What was charged for one key in one asset: how many charges, their total, and how
    many of them rest on a receipt that is not the site's (``unverified``)."""

    key: str
    asset: str | None
    count: int
    total: int
    unverified: int


def summarise(charges: Iterable[Charge], by: Grouping) -> list[StatementLine]:
    """One line per (key, asset), sorted by key then asset."""
    if by not in GROUPINGS:
        raise ValueError(f"a statement is grouped by one of {', '.join(GROUPINGS)}, not {by!r}")
    sums: dict[tuple[str, str | None], list[int]] = {}
    for charge in charges:
        line = sums.setdefault((charge.key(by), charge.asset), [0, 0, 0])
        line[0] += 1
        line[1] += charge.amount
        line[2] += 0 if charge.verified else 1
    return [
        StatementLine(key, asset, count, total, unverified)
        for (key, asset), (count, total, unverified) in sorted(
            sums.items(), key=lambda item: (item[0][0], item[0][1] or "")
        )
    ]
