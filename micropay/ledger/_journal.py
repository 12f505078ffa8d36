"""The chain view kept in the ledger's database: what the chain follower has read, and where.

The watchtower's follower is its only writer. Keeping it in the ledger's own database means
one backup holds everything, a restart resumes from the stored cursor, and "owed but not yet
settled" (best voucher minus claimed) is one read away.
"""

from __future__ import annotations

from collections.abc import Sequence

from micropay.errors import LedgerError
from micropay.ledger._records import BlockRef, ChainEvent, ChainView
from micropay.ledger._store import Store


class ChainJournal:
    """Blocks read (newest hashes kept for reorg checks) and per-channel events by block."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def cursor(self) -> BlockRef | None:
        """The newest block read, or None before the first read."""
        return self._store.cursor()

    def blocks(self) -> list[BlockRef]:
        """The blocks whose hashes are kept, newest first: where a reorg is looked for."""
        return self._store.blocks()

    def record(
        self, blocks: Sequence[BlockRef], events: Sequence[ChainEvent], keep: int = 256
    ) -> None:
        """Add read blocks and their events atomically; keep hashes of the last ``keep`` blocks."""
        if keep < 1:
            raise LedgerError("keep at least the newest block's hash (keep >= 1)")
        self._store.record(blocks, events, keep)

    def rollback(self, number: int) -> None:
        """Forget blocks after ``number`` and what they said: a reorg replaced them."""
        self._store.rollback(number)

    def reset(self) -> None:
        """Forget the whole chain view; the follower re-reads every channel's state."""
        self._store.reset_chain_view()

    def unseeded(self) -> list[bytes]:
        """Ledger channels with nothing read about them yet."""
        return self._store.unseeded()

    def view(self, channel_id: bytes) -> ChainView | None:
        return self._store.view(channel_id)

    def views(self) -> dict[bytes, ChainView]:
        return self._store.views()

    def events(self, channel_id: bytes) -> list[ChainEvent]:
        """A channel's recorded rows in chain order (seeds included), for audits and tests."""
        return self._store.events(channel_id)
