"""Follow PaymentChannels events for the ledger's channels, through reorgs and restarts.

The follower reads blocks up to ``head - confirmations`` and writes what the events say into
the ledger's chain view (:class:`~micropay.ledger.ChainJournal`) together with the hashes of
the blocks it read. Everything it knows is in the ledger's database, so a restarted follower
resumes at its stored cursor.

Reorgs: before reading on, the follower checks that the block at its cursor still has the
hash it stored. If not, it walks back through the stored hashes to the newest block that is
still canonical, deletes everything read after it (totals are kept per block, so the
channel's state falls back to what the surviving blocks said) and reads forward again. A
reorg deeper than the stored hashes drops the whole chain view, which is rebuilt from the
channels' current state: nothing in it is history that cannot be read again.

A channel the follower has never read (newly in the ledger, or its seed rolled back) is
*seeded*: its state is read from the contract at the cursor block, so no scan of old blocks
is needed; events after the cursor then move it forward. Until it is seeded a channel has
no chain view at all, rather than a partial one.

Every event that moves a channel's state is followed, ``Refunded`` (the payee's on-chain
partial refund, contract version 2) too: it carries the new, lower deposit total, so the
chain view's deposit is the latest total by block order rather than the highest one seen,
and a rollback that removes the refund's block brings the deposit back up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes
from web3.exceptions import BlockNotFound

from micropay.channels import ChannelClient
from micropay.errors import ArtifactError, WatchtowerConfigError
from micropay.ledger import BlockRef, ChainEvent, EventKind, Ledger

_EVENT_KINDS = {
    "Deposited": EventKind.DEPOSITED,
    "Claimed": EventKind.CLAIMED,
    "WithdrawRequested": EventKind.WITHDRAW_REQUESTED,
    "Closed": EventKind.CLOSED,
    "Withdrawn": EventKind.WITHDRAWN,
    "Refunded": EventKind.REFUNDED,
}


@dataclass(frozen=True)
class SyncReport:
    """What one :meth:`ChainFollower.sync` did."""

    head: int
    """The chain's latest block when the sync began."""
    cursor: BlockRef | None
    """The newest block read, after the sync."""
    events: int = 0
    seeded: int = 0
    rolled_back: tuple[int, int] | None = None
    """(old cursor, common ancestor) if a reorg was undone."""
    reset: bool = False
    """The reorg went deeper than the stored hashes; the chain view was rebuilt."""
    interrupted: bool = False
    """The chain changed while reading; the next sync picks up from the cursor."""


def _decoders(client: ChannelClient) -> dict[bytes, tuple[EventKind, Any]]:
    decoders: dict[bytes, tuple[EventKind, Any]] = {}
    for name, kind in _EVENT_KINDS.items():
        try:
            event = getattr(client.contract.events, name)
        except AttributeError:
            raise ArtifactError(f"the PaymentChannels ABI has no {name} event") from None
        decoders[bytes(HexBytes(event.topic))] = (kind, event())
    return decoders


class ChainFollower:
    """Keeps a ledger's chain view in step with the chain (confirmed blocks only)."""

    def __init__(
        self,
        client: ChannelClient,
        ledger: Ledger,
        *,
        confirmations: int = 2,
        keep_blocks: int = 256,
        max_range: int = 2_000,
        topic_filter_limit: int = 200,
    ) -> None:
        """``confirmations``: blocks a block must have on top of it before it is read.
        ``keep_blocks``: how far back block hashes are kept, i.e. the deepest reorg undone
        precisely. ``max_range``: most blocks per ``eth_getLogs``. Up to
        ``topic_filter_limit`` channels are filtered by the node; more are filtered here."""
        for name, value, least in (
            ("confirmations", confirmations, 0),
            ("keep_blocks", keep_blocks, 1),
            ("max_range", max_range, 1),
            ("topic_filter_limit", topic_filter_limit, 0),
        ):
            if type(value) is not int or value < least:
                raise WatchtowerConfigError(f"{name} must be an integer >= {least}: {value!r}")
        self.client = client
        self.ledger = ledger
        self.confirmations = confirmations
        self.keep_blocks = keep_blocks
        self.max_range = max_range
        self.topic_filter_limit = topic_filter_limit
        self._decoders = _decoders(client)

    @property
    def _eth(self) -> Any:
        return self.client.w3.eth

    def _hash_at(self, number: int) -> bytes | None:
        try:
            return bytes(self._eth.get_block(number)["hash"])
        except BlockNotFound:
            return None

    def sync(self) -> SyncReport:
        """Undo any reorg, seed new channels and read confirmed blocks up to the target."""
        head = int(self._eth.block_number)
        target = head - self.confirmations
        journal = self.ledger.chain
        cursor = journal.cursor()
        rolled_back: tuple[int, int] | None = None
        reset = False
        if cursor is not None and self._hash_at(cursor.number) != cursor.hash:
            ancestor = self._common_ancestor(head)
            if ancestor is None:
                journal.reset()
                reset = True
                cursor = None
            else:
                journal.rollback(ancestor.number)
                rolled_back = (cursor.number, ancestor.number)
                cursor = ancestor
        if target < 0:
            return SyncReport(head, cursor, rolled_back=rolled_back, reset=reset)
        if cursor is None:
            start = self._hash_at(target)
            if start is None:
                return SyncReport(head, None, rolled_back=rolled_back, reset=reset)
            cursor = BlockRef(target, start)
            journal.record([cursor], [], self.keep_blocks)

        channel_ids = self.ledger.channel_ids()
        events = 0
        interrupted = False
        while cursor.number < target:
            end = min(cursor.number + self.max_range, target)
            read = self._read_range(cursor, end, channel_ids)
            if read is None:
                interrupted = True
                break
            blocks, new_events = read
            journal.record(blocks, new_events, self.keep_blocks)
            events += len(new_events)
            cursor = blocks[-1]
        # Seeded last, at the newest block read: a recent block, whose state even a pruning
        # node still has. Events read above for a channel not yet seeded are older totals
        # that its seed's totals cover.
        seeded = self._seed(journal.unseeded(), cursor)
        return SyncReport(
            head,
            cursor,
            events=events,
            seeded=seeded,
            rolled_back=rolled_back,
            reset=reset,
            interrupted=interrupted,
        )

    def _common_ancestor(self, head: int) -> BlockRef | None:
        for block in self.ledger.chain.blocks():  # newest first
            if block.number <= head and self._hash_at(block.number) == block.hash:
                return block
        return None

    def _seed(self, channel_ids: Sequence[bytes], at: BlockRef) -> int:
        """Read each channel's state at ``at`` (by number: if a reorg replaces that block,
        the next sync sees the cursor's hash change and rolls the seed back with it)."""
        if not channel_ids:
            return 0
        events = []
        for channel_id in channel_ids:
            state = self.client.state(channel_id, block=at.number)
            events.append(
                ChainEvent(
                    block_number=at.number,
                    log_index=-1,
                    channel_id=channel_id,
                    kind=EventKind.SEED,
                    total_deposited=state.deposited,
                    total_claimed=state.claimed,
                    closes_at=state.closes_at,
                    finished=state.finished,
                )
            )
        self.ledger.chain.record([], events, self.keep_blocks)
        return len(events)

    def _read_range(
        self, cursor: BlockRef, end: int, channel_ids: Sequence[bytes]
    ) -> tuple[list[BlockRef], list[ChainEvent]] | None:
        """Events of blocks ``cursor + 1 .. end`` and the hashes to keep; None if the chain
        moved under the read (the end block's hash changed, or the range no longer
        continues from the cursor)."""
        end_hash = self._hash_at(end)
        try:
            first = self._eth.get_block(cursor.number + 1)
        except BlockNotFound:
            return None
        if bytes(first["parentHash"]) != cursor.hash or end_hash is None:
            return None
        wanted = set(channel_ids)
        topics: list[Any] = [["0x" + topic.hex() for topic in self._decoders]]
        if len(wanted) <= self.topic_filter_limit:
            topics.append(["0x" + channel_id.hex() for channel_id in sorted(wanted)])
        logs = (
            self._eth.get_logs(
                {
                    "address": self.client.address,
                    "fromBlock": cursor.number + 1,
                    "toBlock": end,
                    "topics": topics,
                }
            )
            if wanted
            else []
        )
        if self._hash_at(end) != end_hash:
            return None
        blocks: dict[int, bytes] = {}
        events: list[ChainEvent] = []
        for log in logs:
            event = self._decode(log, wanted)
            if event is not None:
                events.append(event)
                blocks[event.block_number] = bytes(log["blockHash"])
        blocks[end] = end_hash
        return [BlockRef(n, h) for n, h in sorted(blocks.items())], events

    def _decode(self, log: Any, wanted: set[bytes]) -> ChainEvent | None:
        topics = log["topics"]
        if len(topics) < 2 or bytes(topics[0]) not in self._decoders:
            return None
        channel_id = bytes(topics[1])
        if channel_id not in wanted:
            return None
        kind, decoder = self._decoders[bytes(topics[0])]
        args = decoder.process_log(log)["args"]
        block, index = int(log["blockNumber"]), int(log["logIndex"])
        if kind is EventKind.DEPOSITED or kind is EventKind.REFUNDED:
            # A refund's total is the deposit after it: lower than the one before.
            total = int(args["totalDeposited"])
            return ChainEvent(block, index, channel_id, kind, total_deposited=total)
        if kind is EventKind.WITHDRAW_REQUESTED:
            return ChainEvent(block, index, channel_id, kind, closes_at=int(args["closesAt"]))
        # Claimed, and the two endings (Closed, Withdrawn), which also fix the final total.
        finished = kind is not EventKind.CLAIMED
        total = int(args["totalClaimed"])
        return ChainEvent(block, index, channel_id, kind, total_claimed=total, finished=finished)
