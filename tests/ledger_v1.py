"""A ledger as micropay wrote it at schema version 1, to test the upgrade to version 2.

The statements are the version 1 table definitions of ``micropay/ledger/_sqlite.py`` and
``_postgres.py``, verbatim (the PostgreSQL advisory lock aside: one writer here), and the
rows are inserted as version 1's accept wrote them. Kept here, not built from today's code,
so the test reads a database the old release could have left on disk.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger_helpers import raw_execute

from micropay.vouchers import ChannelConfig, Voucher, VoucherDomain

SQLITE = [
    "CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS best_vouchers (
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
        owed_since REAL
    )""",
    "CREATE TABLE IF NOT EXISTS chain_blocks (number INTEGER PRIMARY KEY, hash BLOB NOT NULL)",
    """CREATE TABLE IF NOT EXISTS chain_events (
        block_number INTEGER NOT NULL,
        log_index INTEGER NOT NULL,
        channel_id BLOB NOT NULL,
        kind TEXT NOT NULL,
        total_deposited TEXT,
        total_claimed TEXT,
        closes_at INTEGER,
        finished INTEGER NOT NULL,
        PRIMARY KEY (block_number, log_index, channel_id)
    )""",
    "CREATE INDEX IF NOT EXISTS chain_events_by_channel ON chain_events (channel_id)",
]

POSTGRESQL = [
    "CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS best_vouchers (
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
        owed_since DOUBLE PRECISION
    )""",
    "CREATE TABLE IF NOT EXISTS chain_blocks (number BIGINT PRIMARY KEY, hash BYTEA NOT NULL)",
    """CREATE TABLE IF NOT EXISTS chain_events (
        block_number BIGINT NOT NULL,
        log_index INTEGER NOT NULL,
        channel_id BYTEA NOT NULL,
        kind TEXT NOT NULL,
        total_deposited NUMERIC(78, 0),
        total_claimed NUMERIC(78, 0),
        closes_at BIGINT,
        finished SMALLINT NOT NULL,
        PRIMARY KEY (block_number, log_index, channel_id)
    )""",
    "CREATE INDEX IF NOT EXISTS chain_events_by_channel ON chain_events (channel_id)",
]


def create_v1_ledger(
    url: str, domain: VoucherDomain, vouchers: Sequence[tuple[ChannelConfig, Voucher]]
) -> None:
    """Write a version 1 ledger at ``url`` bound to ``domain``, holding ``vouchers`` as the
    best voucher of their channels."""
    sqlite = url.startswith("sqlite:")
    for statement in SQLITE if sqlite else POSTGRESQL:
        raw_execute(url, statement)
    for key, value in (
        ("schema_version", "1"),
        ("chain_id", str(domain.chain_id)),
        ("verifying_contract", domain.verifying_contract),
    ):
        raw_execute(url, "INSERT INTO ledger_meta (key, value) VALUES (?, ?)", (key, value))

    def amount(value: int) -> object:
        return f"{value:078d}" if sqlite else value

    for config, voucher in vouchers:
        raw_execute(
            url,
            "INSERT INTO best_vouchers (channel_id, chain_id, verifying_contract, payer, payee, "
            "token, authorizer, withdraw_delay, salt, cumulative_amount, signature, "
            "replaced_amount, accepted_at, owed_since) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ),
        )
