"""Exceptions of the payee's durable side: the voucher ledger, settlement and watchtower.

They belong in :mod:`micropay.errors` (one tree, drawn in one place) and live here only
until that module takes them; afterwards this module just re-exports them. Their branch::

    MicropayError
    ├── LedgerError (RuntimeError)         the voucher ledger cannot be opened or used
    │   ├── LedgerURLError (ValueError)    the ledger URL is malformed or names no back end
    │   ├── LedgerCorruptError             the file or a row is damaged: not a database,
    │   │                                  truncated, a malformed row, a bad signature
    │   └── ForeignLedgerError             the ledger or a row belongs to another chain or
    │                                      contract than the one it is opened for
    ├── SettlementPolicyError (ValueError) a settlement policy parameter makes no sense
    └── WatchtowerConfigError (ValueError) a watchtower or chain-follower parameter makes
                                           no sense (confirmations, poll interval, ...)
"""

from __future__ import annotations

from micropay.errors import MicropayError


class LedgerError(MicropayError, RuntimeError):
    """The voucher ledger cannot be opened or used (server down, directory missing, ...)."""


class LedgerURLError(LedgerError, ValueError):
    """The ledger URL is malformed or names a back end micropay does not have."""


class LedgerCorruptError(LedgerError):
    """The ledger's storage or one of its rows is damaged; the message names what and where.

    Raised instead of skipping the damaged data: a payee must never lose a voucher quietly.
    """


class ForeignLedgerError(LedgerError):
    """The ledger, or one row in it, was written for another chain or contract."""


class SettlementPolicyError(MicropayError, ValueError):
    """A settlement policy parameter is out of range or inconsistent."""


class WatchtowerConfigError(MicropayError, ValueError):
    """A watchtower or chain-follower parameter is out of range."""
