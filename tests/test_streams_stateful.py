"""A Hypothesis state machine driving the deployed Streams contract with random operations at
random times, checking after every step that the chain agrees with the Python model to the
wei and that the invariants hold:

- solvency: for ETH and the token, the contract holds exactly what its streams still owe;
- conservation: per stream, withdrawn + refunded + still owed = deposited;
- monotonicity: what a stream has streamed never decreases;
- status: a fixed stream's status only moves forward; an open-ended stream is paused or
  running only as its sender's last pause or resume left it.

Each operation is first decided by the model: an operation the model says must fail is
sent anyway and must fail with the named error the model predicts.

After each step the streams the step acted on are read back from the chain, and every
tenth step all of them are (their views move with time): reading every stream after every
step made the heavy profile take over 40 minutes on anvil. Solvency covers every stream
after every step, since it compares the contract's balances with the model's debts.

The profiles are the auditor kit's (tests/audit_profiles.py): the default one runs in
``make test`` on three networks; ``MICROPAY_HYPOTHESIS_PROFILE=heavy`` is what ``make audit``
runs, and the examples and steps run are logged for its report.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

import pytest
from audit_profiles import ExampleLog, profile_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from streams_fixtures import DAY, People, at, balance, mine_at, now, people, streams, tok18

from micropay.stream_model import (
    FIXED_STATUS_SUCCESSORS,
    RATE_SCALE,
    FixedStatus,
    FixedStreamState,
    OpenStreamState,
)
from micropay.streams import (
    ETH,
    FixedStreamConfig,
    NothingToWithdrawError,
    OpenStreamConfig,
    RefundExceedsUnownedError,
    StreamConfigError,
    StreamNotCancelableError,
    StreamPauseError,
    StreamsClient,
)
from micropay.tokens import TokenClient

__all__ = ["people", "streams", "tok18"]  # fixtures used below


# How far the clock moves before an operation: often a little, sometimes a lot.
delays = st.one_of(st.integers(1, 120), st.sampled_from([1, 2, 3600, DAY, 7 * DAY]))
rates = st.one_of(
    st.integers(1, RATE_SCALE),  # below a unit a second: remainders matter
    st.integers(RATE_SCALE, 10**6 * RATE_SCALE),
)
indices = st.integers(0, 10**6)
_SALTS = itertools.count()


@dataclass
class Tracked:
    """One stream under test: its parameters, its model, what was last seen of it."""

    config: FixedStreamConfig | OpenStreamConfig
    model: Any  # FixedStreamState | OpenStreamState
    streamed: int = 0
    status: int = 0


class StreamsMachine(RuleBasedStateMachine):
    def __init__(
        self, w3: Any, streams: StreamsClient, people: People, token: TokenClient, log: ExampleLog
    ) -> None:
        super().__init__()
        self.w3, self.streams, self.people, self.token = w3, streams, people, token
        self.log = log
        self.clock = now(w3)
        self.fixed: list[Tracked] = []
        self.open: list[Tracked] = []
        self.touched: list[Tracked] = []  # what the current step acted on
        self.checks = 0
        log.example()
        self.recipients = [people.recipient, people.other, people.stranger]
        # Examples share the chain (ape resets it after the test); what earlier examples
        # left in the contract is counted here and never moves again.
        self.base = {
            ETH: balance(w3, ETH, streams.address),
            token.address: token.balance_of(streams.address),
        }

    # -- helpers ------------------------------------------------------------------------------

    def _step(self, rule: str, tracked: Tracked | None = None) -> None:
        """Count the step for the audit log; what it acts on is read back after it."""
        self.log.step(rule)
        if tracked is not None:
            self.touched.append(tracked)

    def _time(self, delay: int) -> int:
        t = self.clock + delay
        at(t)
        return t

    def _done(self, receipt: Any, t: int) -> None:
        assert receipt.timestamp == t, "the transaction ran at the time it was sent for"
        self.clock = t

    def _token(self, eth: bool) -> str:
        return ETH if eth else self.token.address

    def _salt(self) -> bytes:
        return (2**200 + next(_SALTS)).to_bytes(32, "big")  # unique across examples

    def _balance(self, token: str, holder: str) -> int:
        return balance(self.w3, ETH if token == ETH else self.token, holder)

    def _recipient(self, tracked: Tracked) -> str:
        return self.streams.recipient_of(tracked.config)

    # -- fixed streams -------------------------------------------------------------------------

    @rule(
        eth=st.booleans(),
        amount=st.integers(1, 10**24),
        start=st.integers(-500, 500),
        duration=st.integers(1, 10**6),
        cliff=st.one_of(st.none(), st.floats(0, 1)),
        cancelable=st.booleans(),
        delay=delays,
    )
    def create_fixed(self, eth, amount, start, duration, cliff, cancelable, delay):
        self._step("create fixed")
        t = self._time(delay)
        begin = t + start
        if eth:  # the funder holds 10,000 ETH
            amount = amount % 10**19 + 1
        config = FixedStreamConfig(
            self.people.sender,
            self.people.recipient,
            self._token(eth),
            amount,
            begin,
            begin + duration,
            0 if cliff is None else begin + int(cliff * duration),
            cancelable,
            self._salt(),
        )
        if config.end <= t:
            with pytest.raises(StreamConfigError) as raised:
                self.streams.create_fixed(config, self.people.funder)
            assert raised.value.error_name == "Streams_EndNotInFuture"
            return
        self._done(self.streams.create_fixed(config, self.people.funder), t)
        state = FixedStreamState(created=True)
        self.fixed.append(Tracked(config, state, 0, state.status_at(config.schedule, t)))
        self.touched.append(self.fixed[-1])

    @precondition(lambda self: self.fixed)
    @rule(
        index=indices,
        near=st.sampled_from(["start", "cliff", "end"]),
        offset=st.sampled_from([-1, 0, 1]),
    )
    def jump_to_a_boundary(self, index, near, offset):
        """Mine a block at start-1, start, cliff-1, ... of a stream, when still ahead."""
        tracked = self.fixed[index % len(self.fixed)]
        self._step("jump to a boundary", tracked)
        config = tracked.config
        assert isinstance(config, FixedStreamConfig)
        target = getattr(config, near) + offset
        if target > self.clock:
            mine_at(target)
            self.clock = target

    @precondition(lambda self: self.fixed or self.open)
    @rule(index=indices, fixed=st.booleans(), by_recipient=st.booleans(), delay=delays)
    def withdraw(self, index, fixed, by_recipient, delay):
        pool = self.fixed if (fixed and self.fixed) or not self.open else self.open
        tracked = pool[index % len(pool)]
        self._step("withdraw", tracked)
        t = self._time(delay)
        recipient = self._recipient(tracked)
        caller = recipient if by_recipient else self.people.funder
        to = self.people.deployer if by_recipient else recipient
        if isinstance(tracked.config, FixedStreamConfig):
            expected = tracked.model.withdrawable_at(tracked.config.schedule, t)
        else:
            expected = tracked.model.withdrawable_at(t)
        before = self._balance(tracked.config.token, to)
        if expected == 0:
            with pytest.raises(NothingToWithdrawError):
                self.streams.withdraw(tracked.config, caller, to=to)
            return
        receipt = self.streams.withdraw(tracked.config, caller, to=to)
        self._done(receipt, t)
        if isinstance(tracked.config, FixedStreamConfig):
            tracked.model, amount = tracked.model.after_withdraw(tracked.config.schedule, t)
        else:
            tracked.model, amount = tracked.model.after_withdraw(t)
        assert receipt.amount == amount == expected
        after = self._balance(tracked.config.token, to)
        assert after - before == amount

    @precondition(lambda self: self.fixed)
    @rule(index=indices, delay=delays)
    def cancel(self, index, delay):
        tracked = self.fixed[index % len(self.fixed)]
        self._step("cancel", tracked)
        config = tracked.config
        assert isinstance(config, FixedStreamConfig)
        t = self._time(delay)
        reason = (
            "Streams_NotCancelable"
            if not config.cancelable
            else "Streams_AlreadyCanceled"
            if tracked.model.canceled_at
            else "Streams_AlreadySettled"
            if t >= config.end
            else None
        )
        if reason:
            with pytest.raises(StreamNotCancelableError) as raised:
                self.streams.cancel(config, self.people.sender)
            assert raised.value.error_name == reason
            return
        receipt = self.streams.cancel(config, self.people.sender)
        self._done(receipt, t)
        tracked.model, refund = tracked.model.after_cancel(config.schedule, t)
        assert receipt.amount == refund

    # -- open-ended streams --------------------------------------------------------------------

    @rule(eth=st.booleans(), rate=rates, deposit=st.integers(0, 10**12), delay=delays)
    def create_open(self, eth, rate, deposit, delay):
        self._step("create open")
        config = OpenStreamConfig(
            self.people.sender, self.people.recipient, self._token(eth), self._salt()
        )
        t = self._time(delay)
        receipt = self.streams.create_open(config, rate, deposit, self.people.funder)
        self._done(receipt, t)
        model = OpenStreamState.created(t, rate, deposit)
        self.open.append(Tracked(config, model, 0, model.status_at(t)))
        self.touched.append(self.open[-1])

    @precondition(lambda self: self.open)
    @rule(index=indices, amount=st.integers(1, 10**12), delay=delays)
    def deposit(self, index, amount, delay):
        tracked = self.open[index % len(self.open)]
        self._step("deposit", tracked)
        t = self._time(delay)
        receipt = self.streams.top_up(tracked.config, amount, self.people.stranger)
        self._done(receipt, t)
        tracked.model = tracked.model.after_deposit(amount)
        assert receipt.amount == amount

    @precondition(lambda self: self.open)
    @rule(index=indices, delay=delays)
    def pause(self, index, delay):
        tracked = self.open[index % len(self.open)]
        self._step("pause", tracked)
        t = self._time(delay)
        if tracked.model.paused:
            with pytest.raises(StreamPauseError):
                self.streams.pause(tracked.config, self.people.sender)
            return
        self._done(self.streams.pause(tracked.config, self.people.sender), t)
        tracked.model = tracked.model.after_pause(t)

    @precondition(lambda self: self.open)
    @rule(index=indices, rate=rates, delay=delays)
    def resume_or_adjust(self, index, rate, delay):
        tracked = self.open[index % len(self.open)]
        self._step("resume or adjust", tracked)
        t = self._time(delay)
        if tracked.model.paused:
            self._done(self.streams.resume(tracked.config, rate, self.people.sender), t)
            tracked.model = tracked.model.after_resume(t, rate)
        else:
            self._done(self.streams.adjust_rate(tracked.config, rate, self.people.sender), t)
            tracked.model = tracked.model.after_adjust_rate(t, rate)

    @precondition(lambda self: self.open)
    @rule(index=indices, share=st.floats(0, 1.5), delay=delays)
    def refund(self, index, share, delay):
        tracked = self.open[index % len(self.open)]
        self._step("refund", tracked)
        t = self._time(delay)
        refundable = tracked.model.refundable_at(t)
        amount = max(1, int(refundable * share))
        if amount > refundable:
            with pytest.raises(RefundExceedsUnownedError) as raised:
                self.streams.refund(tracked.config, amount, self.people.sender)
            assert raised.value.arguments["refundable"] == refundable
            return
        receipt = self.streams.refund(tracked.config, amount, self.people.sender)
        self._done(receipt, t)
        tracked.model = tracked.model.after_refund(t, amount)
        assert receipt.amount == amount  # the solvency check sees it leave the contract

    # -- both ----------------------------------------------------------------------------------

    @precondition(lambda self: self.fixed or self.open)
    @rule(index=indices, fixed=st.booleans(), delay=delays)
    def transfer(self, index, fixed, delay):
        pool = self.fixed if (fixed and self.fixed) or not self.open else self.open
        tracked = pool[index % len(pool)]
        self._step("transfer", tracked)
        current = self._recipient(tracked)
        new = self.recipients[(self.recipients.index(current) + 1) % len(self.recipients)]
        t = self._time(delay)
        self._done(self.streams.transfer(tracked.config, new, current), t)
        tracked.model = replace(tracked.model, transferred=True)
        assert self._recipient(tracked) == new

    @rule(delay=delays)
    def let_time_pass(self, delay):
        self._step("let time pass")
        mine_at(self.clock + delay)
        self.clock += delay

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def chain_agrees_with_the_model_and_the_invariants_hold(self):
        # Views run at the latest block. A refused transaction mines nothing on anvil and
        # hardhat, but the in-process chain may have mined up to its pending time: catch up.
        t = now(self.w3)
        assert t >= self.clock
        self.clock = t
        self.checks += 1
        everything = self.checks % 10 == 0
        read = [*self.fixed, *self.open] if everything else self.touched
        for tracked in {id(item): item for item in read}.values():
            if isinstance(tracked.config, FixedStreamConfig):
                self._check_fixed(tracked, t)
            else:
                self._check_open(tracked, t)
        self.touched.clear()
        # conservation, and solvency per token: the contract holds exactly what the model
        # says its streams owe (which the reads above tie to the chain, stream by stream)
        owed = {ETH: 0, self.token.address: 0}
        for tracked in self.fixed:
            config, model = tracked.config, tracked.model
            assert isinstance(config, FixedStreamConfig)
            still_owed = model.owed(config.schedule)
            assert model.withdrawn + model.refunded(config.schedule) + still_owed == config.amount
            owed[config.token] += still_owed
        for tracked in self.open:
            model = tracked.model
            # held = deposited - refunded - withdrawn: paying out more than came in shows here
            assert model.balance >= 0
            owed[tracked.config.token] += model.balance
        assert balance(self.w3, ETH, self.streams.address) - self.base[ETH] == owed[ETH]
        held = self.token.balance_of(self.streams.address) - self.base[self.token.address]
        assert held == owed[self.token.address]

    def _check_fixed(self, tracked: Tracked, t: int) -> None:
        config, model = tracked.config, tracked.model
        assert isinstance(config, FixedStreamConfig)
        assert self.streams.fixed_state(config) == model
        amounts = self.streams.fixed_amounts(config)
        assert amounts.streamed == model.streamed_at(config.schedule, t)
        assert amounts.withdrawable == model.withdrawable_at(config.schedule, t)
        assert amounts.streamed >= tracked.streamed  # monotonic since it was last read
        tracked.streamed = amounts.streamed
        status = self.streams.fixed_status(config)
        assert status == model.status_at(config.schedule, t)
        assert status in FIXED_STATUS_SUCCESSORS[FixedStatus(tracked.status)]
        tracked.status = status

    def _check_open(self, tracked: Tracked, t: int) -> None:
        config, model = tracked.config, tracked.model
        assert self.streams.open_state(config) == model
        amounts = self.streams.open_amounts(config)
        assert (amounts.streamed, amounts.withdrawable, amounts.refundable, amounts.debt) == (
            model.streamed_at(t),
            model.withdrawable_at(t),
            model.refundable_at(t),
            model.debt_at(t),
        )
        assert amounts.withdrawable + amounts.debt == model.owed_at(t)
        assert amounts.streamed >= tracked.streamed
        tracked.streamed = amounts.streamed
        status = self.streams.open_status(config)
        assert status == model.status_at(t)
        # Paused or running only as the last pause/resume left it (the model tracks it).
        assert (status >= 2) == model.paused
        tracked.status = status


def test_random_operations_keep_chain_model_and_invariants_in_step(w3, streams, people, tok18):
    log = ExampleLog("stateful: streams, fixed and open-ended, ETH + token, 3 recipients")
    try:
        run_state_machine_as_test(
            lambda: StreamsMachine(w3, streams, people, tok18, log), settings=profile_settings()
        )
    finally:
        log.write()
