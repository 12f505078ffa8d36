"""A ledger as micropay wrote it at schema version 2, to test the upgrade to version 3.

Version 2 is version 1 (tests/ledger_v1.py, kept verbatim there) with the covered voucher
columns in ``best_vouchers``; these are its ``best_vouchers`` definitions verbatim, and the
rows are inserted as version 2's accept wrote them. It had no ``charges`` table.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger_helpers import raw_execute
from ledger_v1 import POSTGRESQL as POSTGRESQL_V1
from ledger_v1 import SQLITE as SQLITE_V1

from micropay.vouchers import ChannelConfig, Voucher, VoucherDomain

_BEST_VOUCHERS_SQLITE = """CREATE TABLE IF NOT EXISTS best_vouchers (
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
        covered_signature BLOB
    )"""

_BEST_VOUCHERS_POSTGRESQL = """CREATE TABLE IF NOT EXISTS best_vouchers (
        channel_id BYTEA PRIMARY KEY,
        chain_id TEXT NOT NULL,
        verifying_contract TEXT NOT NULL,
        payer TEXT NOT NULL,
        payee TEXT NOT NULL,
        token TEXT NOT NULL,
        authorizer TEXT NOT NULL,
        withdraw_delay BIGINT NOT NULL,
        salt BYTEA NOT NULL,
        cumulative_amount NUMERIC(78, 0) NOT NULL,
        signature BYTEA NOT NULL,
        replaced_amount NUMERIC(78, 0) NOT NULL,
        accepted_at DOUBLE PRECISION NOT NULL,
        owed_since DOUBLE PRECISION,
        covered_amount NUMERIC(78, 0),
        covered_signature BYTEA
    )"""


def _v2(statements: list[str], best_vouchers: str) -> list[str]:
    return [best_vouchers if "best_vouchers" in s else s for s in statements]


SQLITE = _v2(SQLITE_V1, _BEST_VOUCHERS_SQLITE)
POSTGRESQL = _v2(POSTGRESQL_V1, _BEST_VOUCHERS_POSTGRESQL)


def create_v2_ledger(
    url: str, domain: VoucherDomain, vouchers: Sequence[tuple[ChannelConfig, Voucher, bool]]
) -> None:
    """Write a version 2 ledger at ``url`` bound to ``domain``, holding ``vouchers`` as the
    best voucher of their channels (and as the covered one where the flag says so)."""
    sqlite = url.startswith("sqlite:")
    for statement in SQLITE if sqlite else POSTGRESQL:
        raw_execute(url, statement)
    for key, value in (
        ("schema_version", "2"),
        ("chain_id", str(domain.chain_id)),
        ("verifying_contract", domain.verifying_contract),
    ):
        raw_execute(url, "INSERT INTO ledger_meta (key, value) VALUES (?, ?)", (key, value))

    def amount(value: int) -> object:
        return f"{value:078d}" if sqlite else value

    for config, voucher, covered in vouchers:
        raw_execute(
            url,
            "INSERT INTO best_vouchers (channel_id, chain_id, verifying_contract, payer, payee, "
            "token, authorizer, withdraw_delay, salt, cumulative_amount, signature, "
            "replaced_amount, accepted_at, owed_since, covered_amount, covered_signature) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                config.channel_id,
                str(domain.chain_id),
                domain.verifying_contract,
                config.payer,
                config.payee,
                config.token,
                config.authorizer,
                config.withdraw_delay,
                config.salt,
                amount(voucher.cumulative_amount),
                voucher.signature,
                amount(0),
                1_700_000_000.0,
                1_700_000_000.0,
                amount(voucher.cumulative_amount) if covered else None,
                voucher.signature if covered else None,
            ),
        )
