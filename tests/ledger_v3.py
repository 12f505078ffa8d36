"""A ledger as micropay wrote it at schema version 3, to test the upgrade to version 4.

Version 3 is version 2 (tests/ledger_v2.py) with the ``charges`` table, whose definitions
are copied here verbatim: unique per (channel, charged total), and without a ceiling. Its
``best_vouchers`` had no charged or refunded totals (every voucher was charged whole).
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger_helpers import raw_execute
from ledger_v2 import create_v2_ledger

from micropay.receipts import SignedReceipt
from micropay.vouchers import ChannelConfig, Voucher, VoucherDomain

_CHARGES_SQLITE = [
    """CREATE TABLE IF NOT EXISTS charges (
        receipt_id BLOB PRIMARY KEY,
        channel_id BLOB NOT NULL,
        payer TEXT NOT NULL,
        asset TEXT NOT NULL,
        resource TEXT NOT NULL,
        amount TEXT NOT NULL,
        cumulative_amount TEXT NOT NULL,
        issued_at INTEGER NOT NULL,
        signature BLOB NOT NULL,
        UNIQUE (channel_id, cumulative_amount)
    )""",
    "CREATE INDEX IF NOT EXISTS charges_by_time ON charges (issued_at)",
]
_CHARGES_POSTGRESQL = [
    """CREATE TABLE IF NOT EXISTS charges (
        receipt_id BYTEA PRIMARY KEY,
        channel_id BYTEA NOT NULL,
        payer TEXT NOT NULL,
        asset TEXT NOT NULL,
        resource TEXT NOT NULL,
        amount NUMERIC(78, 0) NOT NULL,
        cumulative_amount NUMERIC(78, 0) NOT NULL,
        issued_at BIGINT NOT NULL,
        signature BYTEA NOT NULL,
        UNIQUE (channel_id, cumulative_amount)
    )""",
    "CREATE INDEX IF NOT EXISTS charges_by_time ON charges (issued_at)",
]


def create_v3_ledger(
    url: str,
    domain: VoucherDomain,
    vouchers: Sequence[tuple[ChannelConfig, Voucher, bool]],
    charges: Sequence[SignedReceipt],
) -> None:
    """Write a version 3 ledger at ``url``: ``vouchers`` as in :func:`create_v2_ledger`,
    and ``charges`` as rows of version 3's ``charges``."""
    sqlite = url.startswith("sqlite:")
    create_v2_ledger(url, domain, vouchers)
    for statement in _CHARGES_SQLITE if sqlite else _CHARGES_POSTGRESQL:
        raw_execute(url, statement)
    raw_execute(url, "UPDATE ledger_meta SET value = '3' WHERE key = 'schema_version'")

    def amount(value: int) -> object:
        return f"{value:078d}" if sqlite else value

    for kept in charges:
        raw_execute(
            url,
            "INSERT INTO charges (receipt_id, channel_id, payer, asset, resource, amount, "
            "cumulative_amount, issued_at, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                kept.receipt_id,
                kept.channel_id,
                kept.payer,
                kept.asset,
                kept.resource,
                amount(kept.amount),
                amount(kept.cumulative_amount),
                kept.issued_at,
                kept.signature,
            ),
        )
