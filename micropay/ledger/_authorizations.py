"""The ledger's book of ``exact`` authorizations: one claim per nonce, across processes.

Table ``exact_authorizations``, keyed by (token, authorizer, nonce) as EIP-3009 keys its
nonces. A worker *claims* an authorization before it submits the transfer: one
``INSERT ... ON CONFLICT DO UPDATE ... WHERE <the standing claim is stale> RETURNING``, so
the database decides under its row lock which worker settles, and the others read the row
that stands (settled: its receipt; claimed: being settled). Table ``exact_payment_ids``
ties each x402 ``payment-identifier`` id to the first authorization sent under it, the same
way (insert if absent, then read what stands). The table is created with the
others (``CREATE TABLE IF NOT EXISTS``), so a ledger of an earlier schema gains it on open.
"""

from __future__ import annotations

from typing import Any

from micropay.errors import LedgerCorruptError
from micropay.exact import Settlement
from micropay.ledger._store import Execute, Store

SQLITE_TABLE = """CREATE TABLE IF NOT EXISTS exact_authorizations (
    token TEXT NOT NULL,
    authorizer TEXT NOT NULL,
    nonce BLOB NOT NULL,
    signature BLOB NOT NULL,
    valid_before TEXT NOT NULL,
    state TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    tx_hash BLOB,
    receipt TEXT,
    reason TEXT,
    PRIMARY KEY (token, authorizer, nonce)
)"""

POSTGRES_TABLE = """CREATE TABLE IF NOT EXISTS exact_authorizations (
    token TEXT NOT NULL,
    authorizer TEXT NOT NULL,
    nonce BYTEA NOT NULL,
    signature BYTEA NOT NULL,
    valid_before NUMERIC(78, 0) NOT NULL,
    state TEXT NOT NULL,
    claimed_at DOUBLE PRECISION NOT NULL,
    tx_hash BYTEA,
    receipt TEXT,
    reason TEXT,
    PRIMARY KEY (token, authorizer, nonce)
)"""

# x402 payment-identifier ids, each tied to the one authorization it was first sent with.
SQLITE_IDS_TABLE = """CREATE TABLE IF NOT EXISTS exact_payment_ids (
    payment_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    authorizer TEXT NOT NULL,
    nonce BLOB NOT NULL,
    signature BLOB NOT NULL
)"""

POSTGRES_IDS_TABLE = SQLITE_IDS_TABLE.replace("BLOB", "BYTEA")

_BIND = """
INSERT INTO exact_payment_ids (payment_id, token, authorizer, nonce, signature)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (payment_id) DO NOTHING
"""
_BOUND = "SELECT token, authorizer, nonce, signature FROM exact_payment_ids WHERE payment_id = ?"

_COLUMNS = (
    "token, authorizer, nonce, signature, valid_before, state, claimed_at, tx_hash, receipt, reason"
)
_CLAIM = f"""
INSERT INTO exact_authorizations AS a ({_COLUMNS})
VALUES (?, ?, ?, ?, ?, 'claimed', ?, NULL, NULL, NULL)
ON CONFLICT (token, authorizer, nonce) DO UPDATE SET
    signature = excluded.signature,
    valid_before = excluded.valid_before,
    claimed_at = excluded.claimed_at
WHERE a.state = 'claimed' AND a.tx_hash IS NULL AND a.claimed_at < ?
RETURNING state
"""
_KEY = "token = ? AND authorizer = ? AND nonce = ?"
_SELECT = f"SELECT {_COLUMNS} FROM exact_authorizations WHERE {_KEY}"
_UPDATE = f"""
UPDATE exact_authorizations SET state = ?, claimed_at = ?, tx_hash = ?, receipt = ?, reason = ?
WHERE {_KEY}
"""
_STATES = ("claimed", "settled", "failed")


class AuthorizationJournal:
    """An :class:`~micropay.exact.AuthorizationBook` in the ledger's database."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def claim(self, settlement: Settlement, stale_before: float) -> Settlement | None:
        s = settlement
        key = (s.token, s.authorizer, s.nonce)

        def work(execute: Execute) -> Settlement | None:
            won = execute(
                _CLAIM,
                (
                    *key,
                    s.signature,
                    self._store.encode_amount(s.valid_before),
                    s.claimed_at,
                    stale_before,
                ),
            )
            if won:
                return None
            [row] = execute(_SELECT, key)
            return self._settlement(row)

        return self._store.transact(work)

    def update(self, settlement: Settlement) -> None:
        s = settlement
        self._store.transact(
            lambda execute: execute(
                _UPDATE,
                (
                    s.state,
                    s.claimed_at,
                    s.transaction,
                    s.receipt,
                    s.reason,
                    s.token,
                    s.authorizer,
                    s.nonce,
                ),
            )
        )

    def bind(self, payment_id: str, settlement: Settlement) -> bool:
        s = settlement
        paid = (s.token, s.authorizer, s.nonce, s.signature)

        def work(execute: Execute) -> bool:
            execute(_BIND, (payment_id, *paid))
            [(token, authorizer, nonce, signature)] = execute(_BOUND, (payment_id,))
            return (str(token), str(authorizer), bytes(nonce), bytes(signature)) == paid

        return self._store.transact(work)

    def get(self, token: str, authorizer: str, nonce: bytes) -> Settlement | None:
        rows = self._store.read(_SELECT, (token, authorizer, nonce))
        return self._settlement(rows[0]) if rows else None

    def _settlement(self, row: tuple[Any, ...]) -> Settlement:
        token, authorizer, nonce, signature, valid_before, state, claimed_at = row[:7]
        tx_hash, receipt, reason = row[7:]
        if state not in _STATES:
            raise LedgerCorruptError(f"exact_authorizations holds an unknown state {state!r}")
        try:
            before = self._store.decode_amount(valid_before)
        except ValueError:
            raise LedgerCorruptError("exact_authorizations: a malformed valid_before") from None
        return Settlement(
            token=str(token),
            authorizer=str(authorizer),
            nonce=bytes(nonce),
            signature=bytes(signature),
            valid_before=before,
            state=state,
            claimed_at=float(claimed_at),
            transaction=None if tx_hash is None else bytes(tx_hash),
            receipt=receipt,
            reason=reason,
        )
