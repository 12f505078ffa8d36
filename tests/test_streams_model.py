"""The Python stream model on its own: the properties that make it exact (no chain needed).

The differential checks against the contract are in test_streams_stateful.py and the
operation tests; these pin the arithmetic the contract is compared with.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from micropay.stream_model import (
    FIXED_STATUS_SUCCESSORS,
    RATE_SCALE,
    UINT128_MAX,
    FixedSchedule,
    FixedStatus,
    FixedStreamState,
    OpenStreamState,
    rate_for,
)
from micropay.streams import FixedStreamConfig, OpenStreamConfig

pytestmark = pytest.mark.offchain

amounts = st.integers(1, UINT128_MAX)
times = st.integers(0, 2**40 - 1)


@st.composite
def schedules(draw: st.DrawFn) -> FixedSchedule:
    start = draw(st.integers(0, 2**40 - 3))
    end = draw(st.integers(start + 1, 2**40 - 1))
    cliff = draw(st.one_of(st.just(0), st.integers(start, end)))
    return FixedSchedule(draw(amounts), start, cliff, end)


@given(schedules(), times, times)
def test_fixed_streamed_is_monotonic_and_bounded(schedule, a, b):
    early, late = sorted((a, b))
    assert 0 <= schedule.streamed_at(early) <= schedule.streamed_at(late) <= schedule.amount


@given(schedules(), times)
def test_fixed_streamed_is_the_floor_of_the_exact_share(schedule, t):
    streamed = schedule.streamed_at(t)
    if t >= schedule.end:
        assert streamed == schedule.amount
    elif t < max(schedule.start, schedule.cliff):
        assert streamed == 0
    else:
        exact = Fraction(schedule.amount * (t - schedule.start), schedule.end - schedule.start)
        assert streamed <= exact < streamed + 1


@given(schedules(), st.lists(times, max_size=8), times)
def test_fixed_withdrawals_in_any_number_of_steps_sum_to_the_amount(schedule, steps, cancel):
    """No dust: what is withdrawn plus what cancellation refunds is exactly the amount."""
    state = FixedStreamState(created=True)
    paid = 0
    canceled = False
    for t in sorted(steps):
        if not canceled and t >= cancel and cancel < schedule.end:
            state, refund = state.after_cancel(schedule, cancel)
            assert refund == schedule.amount - schedule.streamed_at(cancel)
            canceled = True
        state, amount = state.after_withdraw(schedule, t)
        assert amount >= 0
        paid += amount
    state, amount = state.after_withdraw(schedule, 2**40)
    paid += amount
    assert paid + state.refunded(schedule) == schedule.amount
    assert state.owed(schedule) == 0
    assert state.status_at(schedule, 2**40) == FixedStatus.DEPLETED


def test_fixed_status_successors_never_go_back():
    for status, successors in FIXED_STATUS_SUCCESSORS.items():
        assert status in successors
        if status != FixedStatus.PENDING:
            assert FixedStatus.PENDING not in successors
    assert FIXED_STATUS_SUCCESSORS[FixedStatus.DEPLETED] == {FixedStatus.DEPLETED}


rates = st.integers(1, 2**128 - 1)


@given(rates, st.integers(0, 10**6), st.lists(st.integers(0, 10**6), max_size=6))
def test_open_snapshots_never_round_anything_away(rate, start, gaps):
    """Pausing and resuming at the same instant, any number of times, streams exactly what
    one uninterrupted run does: the remainder carries the fraction of a unit."""
    state = OpenStreamState.created(start, rate, 0)
    t = start
    for gap in gaps:
        t += gap
        state = state.after_pause(t).after_resume(t, rate)
    end = t + 1
    assert state.streamed_at(end) == rate * (end - start) // RATE_SCALE
    assert state.streamed_exactly_at(end) == Fraction(rate * (end - start), RATE_SCALE)


@given(st.integers(1, 10**40), st.integers(0, 10**30), st.integers(0, 10**9))
def test_runs_dry_at_is_the_first_second_everything_funded_is_owed(rate, deposit, start):
    state = OpenStreamState.created(start, rate, deposit)
    dry = state.runs_dry_at()
    assert dry is not None
    assert state.streamed_at(dry) >= deposit
    assert state.refundable_at(dry) == 0
    if dry > start:
        assert state.streamed_at(dry - 1) < deposit
        assert state.refundable_at(dry - 1) > 0


def test_a_paused_stream_that_is_not_dry_never_runs_dry():
    state = OpenStreamState.created(100, RATE_SCALE, 50).after_pause(110)
    assert state.runs_dry_at() is None
    assert state.after_deposit(1).runs_dry_at() is None
    dry = OpenStreamState.created(100, RATE_SCALE, 5).after_pause(110)
    assert dry.runs_dry_at() == 110  # already dry when paused


@given(rates, st.integers(0, 10**12), st.integers(0, 10**9), st.integers(0, 10**6))
def test_open_conservation_holds_through_withdraw_and_refund(rate, deposit, t1, dt):
    state = OpenStreamState.created(0, rate, deposit)
    state, paid = state.after_withdraw(t1)
    refundable = state.refundable_at(t1 + dt)
    if refundable:
        state = state.after_refund(t1 + dt, refundable)
    assert state.withdrawn + state.refunded + state.balance == state.deposited
    assert state.withdrawn == paid
    assert state.withdrawable_at(t1 + dt) + state.debt_at(t1 + dt) == state.owed_at(t1 + dt)


def test_model_refuses_impossible_transitions():
    state = OpenStreamState.created(10, RATE_SCALE, 100)
    with pytest.raises(ValueError):
        state.after_refund(20, 91)
    with pytest.raises(ValueError):
        state.after_deposit(0)
    with pytest.raises(ValueError):
        state.streamed_at(9)
    with pytest.raises(ValueError):
        state.after_deposit(UINT128_MAX)


def test_rate_for_rounds_down_to_the_scale():
    assert rate_for(1_000, 86_400) == 11_574_074_074_074_074
    assert rate_for(86_400, 86_400) == RATE_SCALE
    with pytest.raises(ValueError):
        rate_for(1, 0)


def test_stream_ids_are_the_abi_hash_of_the_parameters():
    # Independent encoding: the 9 (or 4) static words concatenated, then keccak.
    from eth_utils.crypto import keccak

    a = "0x" + "11" * 20
    config = FixedStreamConfig(a, a, a, 5, 6, 9, 7, True, 8)
    words = [int(a, 16), int(a, 16), int(a, 16), 5, 6, 7, 9, 1, 8]
    assert config.stream_id == keccak(b"".join(w.to_bytes(32, "big") for w in words))
    open_config = OpenStreamConfig(a, a, a, 3)
    words = [int(a, 16)] * 3 + [3]
    assert open_config.stream_id == keccak(b"".join(w.to_bytes(32, "big") for w in words))
