"""The exact arithmetic of micropay streams, in Python, agreeing with ``Streams.sol`` to the wei.

Why a model at all: a recipient wants to know what it can withdraw *at* some time, a sender
when an open-ended stream will run dry, an auditor whether the contract pays what it
promises, all without sending a transaction. Every function here uses Python integers
(``fractions.Fraction`` only to show the fraction of a base unit not yet whole), does exactly the
floors the contract does and nothing else, and the test suite checks it against the
deployed contract after every step of a random walk.

Fixed stream, parameters ``amount, start, cliff, end``:

    streamed(t) = amount                                   if t >= end
                = 0                                        if t < start or t < cliff
                = floor(amount * (t - start) / (end - start))  otherwise

frozen at ``streamed(canceled_at)`` once canceled. The floor never loses anything: what
has not streamed yet streams later (or is refunded on cancel).

Open-ended stream, stored state ``rate, snapshot_time, remainder, streamed_at_snapshot``
and the totals ``deposited, withdrawn, refunded``:

    streamed(t)  = streamed_at_snapshot + (remainder + rate * (t - snapshot_time)) // RATE_SCALE
    funded       = deposited - refunded
    withdrawable = min(streamed(t), funded) - withdrawn
    refundable   = max(0, funded - streamed(t))
    debt         = max(0, streamed(t) - funded)

A snapshot (pause, resume, rate change) keeps the fraction of a base unit in ``remainder``,
so changing the rate never rounds anything away.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum
from fractions import Fraction

RATE_SCALE = 10**18
"""``ratePerSecond`` is in base units per second times this (the contract's RATE_SCALE)."""

UINT128_MAX = 2**128 - 1


class FixedStatus(IntEnum):
    """Where a fixed stream is in its life (same numbering as ``IStreams.FixedStatus``)."""

    PENDING = 0
    STREAMING = 1
    SETTLED = 2
    CANCELED = 3
    DEPLETED = 4


class OpenStatus(IntEnum):
    """Whether an open-ended stream accrues and whether it is in debt (``IStreams.OpenStatus``)."""

    STREAMING = 0
    STREAMING_IN_DEBT = 1
    PAUSED = 2
    PAUSED_IN_DEBT = 3


# The moves a fixed stream's status can make, between any two observations: time only runs
# forward, cancellation and withdrawals cannot be undone.
FIXED_STATUS_SUCCESSORS: dict[FixedStatus, frozenset[FixedStatus]] = {
    FixedStatus.PENDING: frozenset(FixedStatus),
    FixedStatus.STREAMING: frozenset(FixedStatus) - {FixedStatus.PENDING},
    FixedStatus.SETTLED: frozenset({FixedStatus.SETTLED, FixedStatus.DEPLETED}),
    FixedStatus.CANCELED: frozenset({FixedStatus.CANCELED, FixedStatus.DEPLETED}),
    FixedStatus.DEPLETED: frozenset({FixedStatus.DEPLETED}),
}


def rate_for(amount: int, seconds: int) -> int:
    """The ``ratePerSecond`` that streams ``amount`` base units every ``seconds`` seconds.

    Rounded down (a stream never pays more than asked); the shortfall over one period is
    below ``seconds / RATE_SCALE`` base units, that is nothing for any real period.
    """
    if seconds <= 0:
        raise ValueError("the period must be a positive number of seconds")
    return amount * RATE_SCALE // seconds


@dataclass(frozen=True)
class FixedSchedule:
    """The parameters that decide how much a fixed stream has streamed at any time."""

    amount: int
    start: int
    cliff: int
    end: int

    def streamed_at(self, time: int) -> int:
        """Base units streamed by ``time`` (nothing before the cliff, everything at end)."""
        if time >= self.end:
            return self.amount
        if time < self.start or time < self.cliff:
            return 0
        return self.amount * (time - self.start) // (self.end - self.start)


@dataclass(frozen=True)
class FixedStreamState:
    """What the contract stores for a fixed stream (``IStreams.FixedStreamState``)."""

    withdrawn: int = 0
    canceled_at: int = 0
    created: bool = False
    transferred: bool = False

    def streamed_at(self, schedule: FixedSchedule, time: int) -> int:
        """What the recipient has earned by ``time``; frozen at cancellation."""
        return schedule.streamed_at(self.canceled_at if self.canceled_at else time)

    def withdrawable_at(self, schedule: FixedSchedule, time: int) -> int:
        """What a withdrawal at ``time`` pays."""
        return self.streamed_at(schedule, time) - self.withdrawn

    def refunded(self, schedule: FixedSchedule) -> int:
        """What cancellation sent back to the sender (0 if not canceled)."""
        if not self.canceled_at:
            return 0
        return schedule.amount - schedule.streamed_at(self.canceled_at)

    def owed(self, schedule: FixedSchedule) -> int:
        """What the contract still holds for this stream, for whoever it will go to."""
        return schedule.amount - self.withdrawn - self.refunded(schedule)

    def status_at(self, schedule: FixedSchedule, time: int) -> FixedStatus:
        """The status the contract's ``fixedStatus`` reports at ``time``."""
        if self.canceled_at:
            if self.withdrawn == schedule.streamed_at(self.canceled_at):
                return FixedStatus.DEPLETED
            return FixedStatus.CANCELED
        if self.withdrawn == schedule.amount:
            return FixedStatus.DEPLETED
        if time >= schedule.end:
            return FixedStatus.SETTLED
        return FixedStatus.PENDING if time < schedule.start else FixedStatus.STREAMING

    def after_withdraw(self, schedule: FixedSchedule, time: int) -> tuple[FixedStreamState, int]:
        """The state after a withdrawal at ``time``, and what it paid."""
        streamed = self.streamed_at(schedule, time)
        return replace(self, withdrawn=streamed), streamed - self.withdrawn

    def after_cancel(self, schedule: FixedSchedule, time: int) -> tuple[FixedStreamState, int]:
        """The state after cancellation at ``time``, and what went back to the sender."""
        return replace(self, canceled_at=time), schedule.amount - schedule.streamed_at(time)


@dataclass(frozen=True)
class OpenStreamState:
    """What the contract stores for an open-ended stream (``IStreams.OpenStreamState``)."""

    rate_per_second: int = 0
    snapshot_time: int = 0
    snapshot_remainder: int = 0
    transferred: bool = False
    streamed_at_snapshot: int = 0
    withdrawn: int = 0
    deposited: int = 0
    refunded: int = 0

    @classmethod
    def created(cls, time: int, rate_per_second: int, deposit: int = 0) -> OpenStreamState:
        """A stream created at ``time`` with an optional first deposit."""
        return cls(rate_per_second=rate_per_second, snapshot_time=time, deposited=deposit)

    @property
    def exists(self) -> bool:
        return self.snapshot_time != 0

    @property
    def paused(self) -> bool:
        return self.rate_per_second == 0

    @property
    def funded(self) -> int:
        """Deposits the sender has not taken back: what withdrawals can ever draw on."""
        return self.deposited - self.refunded

    @property
    def balance(self) -> int:
        """What the contract holds for this stream right now."""
        return self.deposited - self.refunded - self.withdrawn

    def _accrued_scaled(self, time: int) -> int:
        if time < self.snapshot_time:
            raise ValueError(f"time {time} is before the last snapshot {self.snapshot_time}")
        return self.snapshot_remainder + self.rate_per_second * (time - self.snapshot_time)

    def streamed_at(self, time: int) -> int:
        """Whole base units streamed by ``time``, whether the balance covers them or not."""
        return self.streamed_at_snapshot + self._accrued_scaled(time) // RATE_SCALE

    def withdrawable_at(self, time: int) -> int:
        """What a withdrawal at ``time`` pays: streamed, covered and not yet withdrawn."""
        return min(self.streamed_at(time), self.funded) - self.withdrawn

    def refundable_at(self, time: int) -> int:
        """What the sender may take back at ``time``: the balance not yet owed."""
        return max(0, self.funded - self.streamed_at(time))

    def debt_at(self, time: int) -> int:
        """What is owed at ``time`` beyond the balance; deposits pay it first."""
        return max(0, self.streamed_at(time) - self.funded)

    def owed_at(self, time: int) -> int:
        """What the recipient is owed at ``time``, covered or not."""
        return self.streamed_at(time) - self.withdrawn

    def status_at(self, time: int) -> OpenStatus:
        """The status the contract's ``openStatus`` reports at ``time``."""
        in_debt = self.streamed_at(time) > self.funded
        if self.paused:
            return OpenStatus.PAUSED_IN_DEBT if in_debt else OpenStatus.PAUSED
        return OpenStatus.STREAMING_IN_DEBT if in_debt else OpenStatus.STREAMING

    def runs_dry_at(self) -> int | None:
        """The first second at which everything funded is owed to the recipient.

        From then on the refundable balance is 0, and each further accrued unit is debt.
        ``None`` if that never happens at the current rate (a paused stream that is not
        dry yet). If the stream is already dry, the answer is a time not after the
        snapshot.
        """
        needed = (self.funded - self.streamed_at_snapshot) * RATE_SCALE - self.snapshot_remainder
        if needed <= 0:
            return self.snapshot_time
        if self.rate_per_second == 0:
            return None
        return self.snapshot_time + -(-needed // self.rate_per_second)

    def streamed_exactly_at(self, time: int) -> Fraction:
        """Streamed by ``time`` including the fraction of a base unit not yet whole."""
        return self.streamed_at_snapshot + Fraction(self._accrued_scaled(time), RATE_SCALE)

    # -- transitions, as the contract makes them ----------------------------------------------

    def after_deposit(self, amount: int) -> OpenStreamState:
        """The state after ``amount`` arrived (it pays any debt first by construction)."""
        if amount <= 0:
            raise ValueError("a deposit must be positive")
        if self.deposited + amount > UINT128_MAX:
            raise ValueError("total deposited would exceed 2**128 - 1")
        return replace(self, deposited=self.deposited + amount)

    def after_withdraw(self, time: int) -> tuple[OpenStreamState, int]:
        """The state after a withdrawal at ``time``, and what it paid."""
        amount = self.withdrawable_at(time)
        return replace(self, withdrawn=self.withdrawn + amount), amount

    def after_refund(self, time: int, amount: int) -> OpenStreamState:
        """The state after the sender took back ``amount`` at ``time``."""
        if not 0 < amount <= self.refundable_at(time):
            raise ValueError(f"{amount} is not refundable (at most {self.refundable_at(time)})")
        return replace(self, refunded=self.refunded + amount)

    def _snapshot(self, time: int, new_rate: int) -> OpenStreamState:
        accrued = self._accrued_scaled(time)
        return replace(
            self,
            rate_per_second=new_rate,
            snapshot_time=time,
            snapshot_remainder=accrued % RATE_SCALE,
            streamed_at_snapshot=self.streamed_at_snapshot + accrued // RATE_SCALE,
        )

    def after_pause(self, time: int) -> OpenStreamState:
        return self._snapshot(time, 0)

    def after_adjust_rate(self, time: int, rate_per_second: int) -> OpenStreamState:
        return self._snapshot(time, rate_per_second)

    def after_resume(self, time: int, rate_per_second: int) -> OpenStreamState:
        # Paused: nothing accrued, only the clock moves and the remainder carries over.
        return replace(self, rate_per_second=rate_per_second, snapshot_time=time)
