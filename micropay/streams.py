"""A web3.py client for the Streams singleton: fixed and open-ended payment streams.

The contract stores only what changes; a stream is named by the hash of its immutable
parameters, so every call takes the stream's :class:`FixedStreamConfig` or
:class:`OpenStreamConfig`. Build one locally (its ``stream_id`` is computed here, the same
way the contract does) or recover it from the creation event with
:meth:`StreamsClient.fixed_config` / :meth:`StreamsClient.open_config`.

Every transaction returns a :class:`StreamReceipt` with the money it moved and the block
time it ran at, which is what :mod:`micropay.stream_model` needs to say what the stream
owes next. Reverts are raised as the named exceptions below (all
:class:`~micropay.errors.ContractRevertError`)::

    ContractRevertError
    ├── StreamConfigError           parameters the contract refuses (zero address, times, rate)
    ├── StreamExistsError           a stream with this id exists: change the salt
    ├── UnknownStreamError          no stream with this id
    ├── AmountNotReceivedError      the token delivered less than a fixed stream needs
    ├── DepositTooLargeError        the total deposited would pass 2**128 - 1
    ├── NotStreamSenderError        only the sender may do that
    ├── NotStreamRecipientError     only the recipient may do that (incl. withdraw elsewhere)
    ├── NothingToWithdrawError      nothing streamed and covered is left to withdraw
    ├── StreamNotCancelableError    non-cancelable, already canceled or already settled
    ├── StreamPauseError            pause/resume/rate change in the wrong state
    └── RefundExceedsUnownedError   the sender asked back money already owed
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3.logs import DISCARD
from web3.types import TxReceipt

from micropay._contracts import ContractClient, Sender
from micropay.errors import ContractRevertError, register_revert, revert_error
from micropay.stream_model import (
    RATE_SCALE,
    FixedSchedule,
    FixedStatus,
    FixedStreamState,
    OpenStatus,
    OpenStreamState,
)

ETH = "0x0000000000000000000000000000000000000000"
"""The token address that means native ETH."""

_ZERO_SALT = b"\x00" * 32
_FIXED_TYPES = [
    "address",
    "address",
    "address",
    "uint128",
    "uint40",
    "uint40",
    "uint40",
    "bool",
    "bytes32",
]
_OPEN_TYPES = ["address", "address", "address", "bytes32"]

__all__ = [
    "ETH",
    "RATE_SCALE",
    "AmountNotReceivedError",
    "DepositTooLargeError",
    "FixedAmounts",
    "FixedStreamConfig",
    "NotStreamRecipientError",
    "NotStreamSenderError",
    "NothingToWithdrawError",
    "OpenAmounts",
    "OpenStreamConfig",
    "RefundExceedsUnownedError",
    "StreamConfigError",
    "StreamExistsError",
    "StreamNotCancelableError",
    "StreamPauseError",
    "StreamReceipt",
    "StreamsClient",
    "UnknownStreamError",
]

# -- named reverts ---------------------------------------------------------------------------


@register_revert("Streams_ZeroSender", "a stream needs a sender")
class StreamConfigError(ContractRevertError):
    """The contract refused the stream's parameters or the call's arguments."""


for _name, _message in [
    ("Streams_ZeroRecipient", "a stream needs a recipient"),
    ("Streams_ZeroAmount", "the amount must be positive (after any transfer fee)"),
    (
        "Streams_InvalidTimes",
        "need start < end and cliff 0 or within [start, end]; got "
        "start={start}, cliff={cliff}, end={end}",
    ),
    ("Streams_EndNotInFuture", "the stream would end at {end}, not after the block at {timestamp}"),
    ("Streams_ZeroRate", "an open-ended stream needs a positive rate (pause it to stop it)"),
    ("Streams_EmptyBatch", "a batch needs at least one stream"),
    (
        "Streams_BatchLengthMismatch",
        "{streams} streams need as many rates and amounts, got {rates} and {amounts}",
    ),
    (
        "Streams_BatchTokenMismatch",
        "stream {index} of the batch uses {token}, not the batch's token {expected}",
    ),
    (
        "Streams_InvalidNewRecipient",
        "cannot hand the stream to {newRecipient}: zero or already the recipient",
    ),
    ("Streams_ZeroDestination", "cannot withdraw to the zero address"),
]:
    register_revert(_name, _message)(StreamConfigError)


@register_revert("Streams_StreamExists", "stream {streamId} already exists; use another salt")
class StreamExistsError(ContractRevertError):
    """A stream with the same parameters exists (the id is their hash)."""


@register_revert(
    "Streams_UnknownStream", "no stream {streamId}: check every parameter and the salt"
)
class UnknownStreamError(ContractRevertError):
    """No stream has this id; usually a parameter differs from the creation's."""


@register_revert(
    "Streams_AmountNotReceived",
    "the token delivered {received} of {expected}: fee-on-transfer tokens cannot fund fixed "
    "streams or batches",
)
class AmountNotReceivedError(ContractRevertError):
    """The token delivered less than the stream (or batch) needs."""


@register_revert(
    "Streams_DepositTooLarge", "stream {streamId} would hold {totalDeposited} in all, over 2**128-1"
)
class DepositTooLargeError(ContractRevertError):
    """The stream's total deposited would overflow its 128-bit counter."""


@register_revert("Streams_NotSender", "only the stream's sender may do this, not {caller}")
class NotStreamSenderError(ContractRevertError):
    """Only the sender may cancel, pause, resume, change the rate or refund."""


@register_revert("Streams_NotRecipient", "only the stream's recipient may do this, not {caller}")
class NotStreamRecipientError(ContractRevertError):
    """Only the current recipient may transfer the stream or withdraw elsewhere."""


register_revert(
    "Streams_WithdrawalToOther",
    "{caller} is not the recipient, so it may withdraw only to the recipient, not to {to}",
)(NotStreamRecipientError)


@register_revert("Streams_NothingToWithdraw", "stream {streamId} has nothing to withdraw yet")
class NothingToWithdrawError(ContractRevertError):
    """Everything streamed and covered has been withdrawn already."""


@register_revert("Streams_NotCancelable", "stream {streamId} was created non-cancelable")
class StreamNotCancelableError(ContractRevertError):
    """The stream cannot be canceled (any more)."""


for _name, _message in [
    ("Streams_AlreadyCanceled", "stream {streamId} was already canceled at {canceledAt}"),
    ("Streams_AlreadySettled", "stream {streamId} ended at {end}: everything has streamed"),
]:
    register_revert(_name, _message)(StreamNotCancelableError)


@register_revert("Streams_AlreadyPaused", "stream {streamId} is already paused")
class StreamPauseError(ContractRevertError):
    """Pause, resume or a rate change in the wrong state."""


for _name, _message in [
    (
        "Streams_NotPaused",
        "stream {streamId} is running (ratePerSecond {ratePerSecond}, base units a second "
        "times 10**18); pause it first",
    ),
    ("Streams_StreamPaused", "stream {streamId} is paused: resume it with the new rate"),
]:
    register_revert(_name, _message)(StreamPauseError)


@register_revert(
    "Streams_RefundExceedsUnowed",
    "asked back {amount} but only {refundable} of the balance is not yet owed",
)
class RefundExceedsUnownedError(ContractRevertError):
    """The refund would take money the recipient is already owed."""


# -- value types -----------------------------------------------------------------------------


def _salt(salt: bytes | int) -> bytes:
    if isinstance(salt, int):
        return salt.to_bytes(32, "big")
    if len(salt) != 32:
        raise ValueError("a salt is 32 bytes (or an int)")
    return bytes(salt)


@dataclass(frozen=True)
class FixedStreamConfig:
    """A fixed stream's immutable parameters (``IStreams.FixedStream``); they name it."""

    sender: str
    recipient: str
    token: str
    amount: int
    start: int
    end: int
    cliff: int = 0
    cancelable: bool = True
    salt: bytes = _ZERO_SALT

    def __post_init__(self) -> None:
        for name in ("sender", "recipient", "token"):
            object.__setattr__(self, name, to_checksum_address(getattr(self, name)))
        object.__setattr__(self, "salt", _salt(self.salt))

    def as_abi(self) -> tuple[Any, ...]:
        """The struct as web3 passes it."""
        return (
            self.sender,
            self.recipient,
            self.token,
            self.amount,
            self.start,
            self.cliff,
            self.end,
            self.cancelable,
            self.salt,
        )

    @property
    def stream_id(self) -> bytes:
        """keccak256(abi.encode(stream)), exactly as the contract computes it."""
        return keccak(abi_encode(_FIXED_TYPES, self.as_abi()))

    @property
    def schedule(self) -> FixedSchedule:
        return FixedSchedule(self.amount, self.start, self.cliff, self.end)

    @property
    def is_eth(self) -> bool:
        return self.token == ETH


@dataclass(frozen=True)
class OpenStreamConfig:
    """An open-ended stream's immutable parameters (``IStreams.OpenStream``); the rate is not
    among them because the sender can change it."""

    sender: str
    recipient: str
    token: str
    salt: bytes = _ZERO_SALT

    def __post_init__(self) -> None:
        for name in ("sender", "recipient", "token"):
            object.__setattr__(self, name, to_checksum_address(getattr(self, name)))
        object.__setattr__(self, "salt", _salt(self.salt))

    def as_abi(self) -> tuple[Any, ...]:
        return (self.sender, self.recipient, self.token, self.salt)

    @property
    def stream_id(self) -> bytes:
        return keccak(abi_encode(_OPEN_TYPES, self.as_abi()))

    @property
    def is_eth(self) -> bool:
        return self.token == ETH


@dataclass(frozen=True)
class StreamReceipt:
    """What one transaction did to a stream.

    ``amount`` is the money it moved: the amount locked by a fixed creation, the amount
    credited by a deposit (or an open creation's first deposit), paid by a withdrawal,
    returned by a refund or cancellation; 0 for pause, resume, rate change and transfer.
    ``timestamp`` is the block time it ran at, the ``time`` the model needs.
    """

    stream_id: bytes
    amount: int
    timestamp: int
    gas_used: int
    tx_hash: str


@dataclass(frozen=True)
class BatchReceipt:
    """What a batch creation did: the new ids, in order, and the one transaction's cost."""

    stream_ids: tuple[bytes, ...]
    total_amount: int
    timestamp: int
    gas_used: int
    tx_hash: str


@dataclass(frozen=True)
class FixedAmounts:
    """A fixed stream's amounts at the latest block, as the contract computes them."""

    streamed: int
    withdrawable: int


@dataclass(frozen=True)
class OpenAmounts:
    """An open-ended stream's amounts at the latest block, as the contract computes them."""

    streamed: int
    withdrawable: int
    refundable: int
    debt: int


# -- the client ------------------------------------------------------------------------------


class StreamsClient(ContractClient):
    """Create, fund, withdraw from and manage streams on a deployed ``Streams`` contract.

    ``sender`` is whoever signs each transaction (see :mod:`micropay._contracts`). ERC-20
    creations and deposits pull from the caller, who must have approved this contract.
    """

    ARTIFACT = "Streams"
    SHIPPED_CODE = True

    # -- fixed streams ------------------------------------------------------------------------

    def create_fixed(self, config: FixedStreamConfig, sender: Sender) -> StreamReceipt:
        """Create and fully fund a fixed stream (ETH goes along as the value)."""
        value = config.amount if config.is_eth else 0
        call = self.contract.functions.createFixedStream(config.as_abi())
        return self._stream_receipt(
            config.stream_id, self._transact(call, sender, value), config.amount
        )

    def create_fixed_batch(
        self, configs: Sequence[FixedStreamConfig], sender: Sender
    ) -> BatchReceipt:
        """Create many fixed streams in one transaction; they must share one token."""
        total = sum(c.amount for c in configs)
        value = total if configs and configs[0].is_eth else 0
        call = self.contract.functions.createFixedStreams([c.as_abi() for c in configs])
        receipt = self._transact(call, sender, value)
        return BatchReceipt(
            tuple(c.stream_id for c in configs),
            total,
            self._timestamp(receipt),
            int(receipt["gasUsed"]),
            receipt["transactionHash"].to_0x_hex(),
        )

    def withdraw(
        self, config: FixedStreamConfig | OpenStreamConfig, sender: Sender, to: str | None = None
    ) -> StreamReceipt:
        """Pay out everything withdrawable to ``to`` (default: the current recipient).

        The recipient may name any address; anyone else may only pay the recipient.
        """
        destination = to_checksum_address(to) if to else self.recipient_of(config)
        functions = self.contract.functions
        if isinstance(config, FixedStreamConfig):
            call = functions.withdrawFixed(config.as_abi(), destination)
        else:
            call = functions.withdrawOpen(config.as_abi(), destination)
        receipt = self._transact(call, sender)
        return self._stream_receipt(
            config.stream_id, receipt, self._event_amount(receipt, "Withdrawn")
        )

    def cancel(self, config: FixedStreamConfig, sender: Sender) -> StreamReceipt:
        """The sender cancels: the streamed part stays the recipient's, the rest comes back."""
        receipt = self._transact(self.contract.functions.cancel(config.as_abi()), sender)
        return self._stream_receipt(
            config.stream_id, receipt, self._event_amount(receipt, "Canceled", "refunded")
        )

    def transfer(
        self, config: FixedStreamConfig | OpenStreamConfig, new_recipient: str, sender: Sender
    ) -> StreamReceipt:
        """The current recipient hands the stream to ``new_recipient``."""
        functions = self.contract.functions
        if isinstance(config, FixedStreamConfig):
            call = functions.transferFixedStream(config.as_abi(), new_recipient)
        else:
            call = functions.transferOpenStream(config.as_abi(), new_recipient)
        return self._stream_receipt(config.stream_id, self._transact(call, sender), 0)

    def fixed_state(self, config: FixedStreamConfig) -> FixedStreamState:
        """The stored state (all zero if the stream does not exist)."""
        raw = self._read(self.contract.functions.getFixedStream(config.stream_id))
        return FixedStreamState(int(raw[0]), int(raw[1]), bool(raw[2]), bool(raw[3]))

    def fixed_amounts(self, config: FixedStreamConfig) -> FixedAmounts:
        raw = self._read(self.contract.functions.fixedStreamAmounts(config.as_abi()))
        return FixedAmounts(int(raw[0]), int(raw[1]))

    def fixed_status(self, config: FixedStreamConfig) -> FixedStatus:
        return FixedStatus(self._read(self.contract.functions.fixedStatus(config.as_abi())))

    # -- open-ended streams -------------------------------------------------------------------

    def create_open(
        self, config: OpenStreamConfig, rate_per_second: int, deposit: int, sender: Sender
    ) -> StreamReceipt:
        """Create an open-ended stream, streaming from this block, with a first deposit
        (0 for none). ``rate_per_second`` is scaled by RATE_SCALE (see ``rate_for``)."""
        value = deposit if config.is_eth else 0
        call = self.contract.functions.createOpenStream(config.as_abi(), rate_per_second, deposit)
        receipt = self._transact(call, sender, value)
        return self._stream_receipt(
            config.stream_id, receipt, self._event_amount(receipt, "Deposited")
        )

    def create_open_batch(
        self, streams: Sequence[tuple[OpenStreamConfig, int, int]], sender: Sender
    ) -> BatchReceipt:
        """Create many open-ended streams, each ``(config, rate_per_second, deposit)``, in
        one token; the deposits' total must arrive in full."""
        total = sum(deposit for _, _, deposit in streams)
        value = total if streams and streams[0][0].is_eth else 0
        call = self.contract.functions.createOpenStreams(
            [c.as_abi() for c, _, _ in streams],
            [r for _, r, _ in streams],
            [d for _, _, d in streams],
        )
        receipt = self._transact(call, sender, value)
        return BatchReceipt(
            tuple(c.stream_id for c, _, _ in streams),
            total,
            self._timestamp(receipt),
            int(receipt["gasUsed"]),
            receipt["transactionHash"].to_0x_hex(),
        )

    def top_up(self, config: OpenStreamConfig, amount: int, sender: Sender) -> StreamReceipt:
        """Deposit into an open-ended stream (anyone may); it pays any debt first."""
        value = amount if config.is_eth else 0
        call = self.contract.functions.deposit(config.as_abi(), amount)
        receipt = self._transact(call, sender, value)
        return self._stream_receipt(
            config.stream_id, receipt, self._event_amount(receipt, "Deposited")
        )

    def pause(self, config: OpenStreamConfig, sender: Sender) -> StreamReceipt:
        call = self.contract.functions.pause(config.as_abi())
        return self._stream_receipt(config.stream_id, self._transact(call, sender), 0)

    def resume(
        self, config: OpenStreamConfig, rate_per_second: int, sender: Sender
    ) -> StreamReceipt:
        call = self.contract.functions.resume(config.as_abi(), rate_per_second)
        return self._stream_receipt(config.stream_id, self._transact(call, sender), 0)

    def adjust_rate(
        self, config: OpenStreamConfig, rate_per_second: int, sender: Sender
    ) -> StreamReceipt:
        """Change a running stream's rate from this block on (pause/resume otherwise)."""
        call = self.contract.functions.adjustRate(config.as_abi(), rate_per_second)
        return self._stream_receipt(config.stream_id, self._transact(call, sender), 0)

    def refund(self, config: OpenStreamConfig, amount: int, sender: Sender) -> StreamReceipt:
        """The sender takes back ``amount`` of the balance not yet owed. On a running stream
        the refundable amount shrinks every second: leave a margin, or pause first."""
        receipt = self._transact(self.contract.functions.refund(config.as_abi(), amount), sender)
        return self._stream_receipt(
            config.stream_id, receipt, self._event_amount(receipt, "Refunded")
        )

    def open_state(self, config: OpenStreamConfig | bytes) -> OpenStreamState:
        """The stored state (all zero if the stream does not exist)."""
        stream_id = config if isinstance(config, bytes) else config.stream_id
        raw = self._read(self.contract.functions.getOpenStream(stream_id))
        return OpenStreamState(
            rate_per_second=int(raw[0]),
            snapshot_time=int(raw[1]),
            snapshot_remainder=int(raw[2]),
            transferred=bool(raw[3]),
            deposited=int(raw[4]),
            withdrawn=int(raw[5]),
            streamed_at_snapshot=int(raw[6]),
            refunded=int(raw[7]),
        )

    def open_amounts(self, config: OpenStreamConfig) -> OpenAmounts:
        raw = self._read(self.contract.functions.openStreamAmounts(config.stream_id))
        return OpenAmounts(int(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]))

    def open_status(self, config: OpenStreamConfig) -> OpenStatus:
        return OpenStatus(self._read(self.contract.functions.openStatus(config.stream_id)))

    # -- both kinds ---------------------------------------------------------------------------

    def recipient_of(self, config: FixedStreamConfig | OpenStreamConfig) -> ChecksumAddress:
        """Who may withdraw now: the original recipient or whoever it was handed to."""
        call = self.contract.functions.recipientOf(config.stream_id, config.recipient)
        return to_checksum_address(self._read(call))

    def stream_config(
        self, stream_id: bytes, from_block: int = 0
    ) -> FixedStreamConfig | OpenStreamConfig:
        """Recover either kind of stream's parameters from its id alone.

        The stored state says which kind it is (a fixed stream is ``created``, an
        open-ended one has a ``snapshotTime``), so a caller holding only an id, like the
        command line, need not know. Raises :class:`UnknownStreamError` for neither.
        """
        fixed = self._read(self.contract.functions.getFixedStream(stream_id))
        if fixed[2]:
            return self.fixed_config(stream_id, from_block)
        if self.open_state(stream_id).exists:
            return self.open_config(stream_id, from_block)
        raise revert_error("Streams_UnknownStream", {"streamId": "0x" + stream_id.hex()})

    def last_rate(self, config: OpenStreamConfig, from_block: int = 0) -> int:
        """The rate an open-ended stream last streamed at, paused or not.

        A pause stores rate 0, so the rate before it lives only in the events that set it
        (creation, resume, rate change); resuming "where it was" needs it.
        """
        latest: tuple[int, int, int] = (-1, -1, 0)
        filters = {"streamId": config.stream_id}
        for event, field in [
            ("OpenStreamCreated", "ratePerSecond"),
            ("Resumed", "ratePerSecond"),
            ("RateAdjusted", "newRatePerSecond"),
        ]:
            for log in self.contract.events[event].get_logs(
                from_block=from_block, argument_filters=filters
            ):
                latest = max(latest, (log["blockNumber"], log["logIndex"], log["args"][field]))
        if latest[0] < 0:
            raise revert_error("Streams_UnknownStream", {"streamId": "0x" + config.stream_id.hex()})
        return int(latest[2])

    def fixed_config(self, stream_id: bytes, from_block: int = 0) -> FixedStreamConfig:
        """Recover a fixed stream's parameters from its creation event."""
        args = self._creation_args("FixedStreamCreated", stream_id, from_block)
        return FixedStreamConfig(
            sender=args["sender"],
            recipient=args["recipient"],
            token=args["token"],
            amount=args["amount"],
            start=args["start"],
            cliff=args["cliff"],
            end=args["end"],
            cancelable=args["cancelable"],
            salt=args["salt"],
        )

    def open_config(self, stream_id: bytes, from_block: int = 0) -> OpenStreamConfig:
        """Recover an open-ended stream's parameters from its creation event."""
        args = self._creation_args("OpenStreamCreated", stream_id, from_block)
        return OpenStreamConfig(args["sender"], args["recipient"], args["token"], args["salt"])

    # -- internals ----------------------------------------------------------------------------

    def _creation_args(self, event: str, stream_id: bytes, from_block: int) -> dict[str, Any]:
        logs = self.contract.events[event].get_logs(
            from_block=from_block, argument_filters={"streamId": stream_id}
        )
        if not logs:
            raise ContractRevertError(
                "Streams_UnknownStream",
                {"streamId": "0x" + stream_id.hex()},
                f"no {event} event for stream 0x{stream_id.hex()}",
            )
        return dict(logs[0]["args"])

    def _timestamp(self, receipt: TxReceipt) -> int:
        return int(self.w3.eth.get_block(receipt["blockNumber"])["timestamp"])

    def _event_amount(self, receipt: TxReceipt, event: str, field: str = "amount") -> int:
        events = self.contract.events[event]().process_receipt(receipt, errors=DISCARD)
        return sum(int(e["args"][field]) for e in events)

    def _stream_receipt(self, stream_id: bytes, receipt: TxReceipt, amount: int) -> StreamReceipt:
        return StreamReceipt(
            stream_id,
            amount,
            self._timestamp(receipt),
            int(receipt["gasUsed"]),
            receipt["transactionHash"].to_0x_hex(),
        )
