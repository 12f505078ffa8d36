"""The payee's durable voucher ledger: SQLite by default, PostgreSQL for several servers.

A payee that loses its best voucher loses money, so the ledger is where accepted vouchers
live: each accept is one atomic, durable compare-and-swap (stored only if it beats the stored
voucher, returning what it added), concurrent accepts from threads or processes never lose
the higher voucher or count an increment twice, and damaged or foreign data raises a named
error rather than vanishing. The same database keeps the watchtower's chain view (what has
been claimed on chain), so "owed but not yet settled" is exact::

    ledger = Ledger.open("sqlite:////var/lib/shop/ledger.db", client.domain)
    payee = Payee(client, account, book=ledger)

Back ends are chosen by URL, as SQLAlchemy spells them: ``sqlite:///ledger.db`` (a path
relative to the working directory), ``sqlite:////var/lib/shop/ledger.db`` (absolute) and
``postgresql://user:password@host:5432/dbname`` (needs ``micropay[postgres]``; several ledgers
can share a database in separate schemas with ``?options=-csearch_path%3Dname``).
"""

from micropay.errors import (
    ForeignLedgerError,
    LedgerCorruptError,
    LedgerError,
    LedgerURLError,
)
from micropay.ledger._group import CommitStats
from micropay.ledger._journal import ChainJournal
from micropay.ledger._ledger import Ledger
from micropay.ledger._records import BlockRef, ChainEvent, ChainView, EventKind, Position

__all__ = [
    "BlockRef",
    "ChainEvent",
    "ChainJournal",
    "ChainView",
    "CommitStats",
    "EventKind",
    "ForeignLedgerError",
    "Ledger",
    "LedgerCorruptError",
    "LedgerError",
    "LedgerURLError",
    "Position",
]
