"""Precision at the edges: 6- and 18-decimal tokens, one-wei and 2**128-1 amounts, streams
that last centuries; the contract and the model agree to the wei everywhere."""

from __future__ import annotations

import pytest
from streams_fixtures import (
    DAY,
    YEAR,
    assert_fixed_matches_model,
    assert_open_matches_model,
    at,
    fixed_config,
    mine_at,
    now,
    open_config,
    people,
    streams,
    tok6,
    tok18,
)

from micropay.stream_model import FixedStreamState, OpenStreamState, rate_for
from micropay.streams import NothingToWithdrawError

__all__ = ["people", "streams", "tok6", "tok18"]  # fixtures used below

UINT128_MAX = 2**128 - 1


@pytest.mark.parametrize("decimals", [6, 18])
def test_one_base_unit_over_ten_years_streams_nothing_until_the_end(
    w3, streams, people, tok6, tok18, decimals
):
    token = tok6 if decimals == 6 else tok18
    t0 = now(w3) + 10
    config = fixed_config(people, token.address, amount=1, start=t0, end=t0 + 10 * YEAR)
    streams.create_fixed(config, people.sender)
    model = FixedStreamState(created=True)
    at(config.end - 1)
    with pytest.raises(NothingToWithdrawError):
        streams.withdraw(config, people.recipient)
    mine_at(config.end - 1)
    assert_fixed_matches_model(streams, config, model, config.end - 1)
    at(config.end)
    assert streams.withdraw(config, people.recipient).amount == 1


def test_the_largest_amount_over_a_thousand_years_agrees_with_the_model(w3, streams, people, tok18):
    t0 = now(w3) + 10
    config = fixed_config(
        people, tok18.address, amount=UINT128_MAX, start=t0, end=t0 + 1_000 * YEAR, cliff=t0 + 7
    )
    streams.create_fixed(config, people.sender)
    model = FixedStreamState(created=True)
    for t in (t0 + 6, t0 + 7, t0 + YEAR + 3, t0 + 999 * YEAR + DAY):
        at(t)
        if model.withdrawable_at(config.schedule, t) == 0:  # before the cliff
            with pytest.raises(NothingToWithdrawError):
                streams.withdraw(config, people.recipient, to=people.other)
            continue
        paid = streams.withdraw(config, people.recipient, to=people.other)
        model, amount = model.after_withdraw(config.schedule, paid.timestamp)
        assert paid.amount == amount > 0
        assert_fixed_matches_model(streams, config, model, paid.timestamp)
    at(config.end)
    model, amount = model.after_withdraw(config.schedule, config.end)
    assert streams.withdraw(config, people.recipient).amount == amount
    assert model.withdrawn == UINT128_MAX


@pytest.mark.parametrize("decimals", [6, 18])
def test_monthly_salary_rates_stream_exactly_for_both_decimals(
    w3, streams, people, tok6, tok18, decimals
):
    token = tok6 if decimals == 6 else tok18
    month = 30 * DAY
    salary = 4_321 * 10**decimals
    config = open_config(people, token.address)
    rate = rate_for(salary, month)
    receipt = streams.create_open(config, rate, 2 * salary, people.sender)
    model = OpenStreamState.created(receipt.timestamp, rate, 2 * salary)
    at(receipt.timestamp + month)
    paid = streams.withdraw(config, people.recipient)
    model, amount = model.after_withdraw(paid.timestamp)
    assert paid.amount == amount
    # Rounding the rate down costs under one base unit a month.
    assert salary - 1 <= amount <= salary
    assert_open_matches_model(streams, config, model, paid.timestamp)


def test_the_largest_rate_for_centuries_fits_and_agrees(w3, streams, people, tok18):
    config = open_config(people, tok18.address)
    receipt = streams.create_open(config, UINT128_MAX, UINT128_MAX, people.sender)
    model = OpenStreamState.created(receipt.timestamp, UINT128_MAX, UINT128_MAX)
    at(receipt.timestamp + 300 * YEAR)
    paused = streams.pause(config, people.sender)
    model = model.after_pause(paused.timestamp)
    assert_open_matches_model(streams, config, model, paused.timestamp)
    assert model.streamed_at_snapshot < UINT128_MAX  # ~3.2e30 after 300 years at the max rate


def test_a_tiny_rate_accrues_whole_units_only_when_they_are_whole(w3, streams, people, tok6):
    config = open_config(people, tok6.address)
    receipt = streams.create_open(config, 1, 10, people.sender)  # 1e-18 unit a second
    model = OpenStreamState.created(receipt.timestamp, 1, 10)
    mine_at(receipt.timestamp + 100 * YEAR)
    assert_open_matches_model(streams, config, model, receipt.timestamp + 100 * YEAR)
    assert model.streamed_at(receipt.timestamp + 100 * YEAR) == 0
