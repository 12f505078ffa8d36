"""The settlement policy's decisions: each rule, their order, batching, and bad parameters."""

from __future__ import annotations

from fractions import Fraction

import pytest

from micropay.errors import SettlementPolicyError
from micropay.settlement import Candidate, PlannedClaim, Reason, SettlementPolicy
from micropay.vouchers import ZERO_ADDRESS

pytestmark = pytest.mark.offchain

USD = "0x" + "5d" * 20
GWEI = 10**9
NOW = 1_700_000_000


def candidate(n, unsettled, token=ZERO_ADDRESS, closes_at=0, owed_since=None):
    return Candidate(bytes([n]) * 32, token, unsettled, closes_at, owed_since)


def plan(policy, *candidates, chain_time=NOW, wall_time=NOW, gas_price=GWEI):
    return policy.plan(candidates, chain_time=chain_time, wall_time=wall_time, gas_price=gas_price)


def ids(planned):
    return [(p.channel_id[0], p.reason) for p in planned]


def test_default_policy_claims_nothing_until_a_withdraw_is_requested():
    policy = SettlementPolicy()
    assert plan(policy, candidate(1, 10**18), candidate(2, 5)) == ()
    withdrawing = candidate(3, 5, closes_at=NOW + 86_400)
    assert ids(plan(policy, withdrawing)) == [(3, Reason.WITHDRAW)]


def test_withdraw_lead_waits_until_that_long_before_the_withdraw_completes():
    policy = SettlementPolicy(withdraw_lead=3_600)
    withdrawing = candidate(1, 5, closes_at=NOW + 7_200)
    assert plan(policy, withdrawing) == ()
    assert ids(plan(policy, withdrawing, chain_time=NOW + 3_600)) == [(1, Reason.WITHDRAW)]


def test_threshold_is_per_token_in_base_units():
    policy = SettlementPolicy(thresholds={USD: 1_000_000})
    assert plan(policy, candidate(1, 999_999, USD)) == ()
    assert ids(plan(policy, candidate(1, 1_000_000, USD))) == [(1, Reason.THRESHOLD)]
    assert plan(policy, candidate(2, 10**30)) == ()  # no threshold for ETH


def test_gas_rule_compares_value_with_a_multiple_of_a_lone_claims_gas():
    policy = SettlementPolicy(gas_multiple=10, claim_gas=50_000)
    cost = 10 * 50_000 * GWEI
    assert plan(policy, candidate(1, cost - 1)) == ()
    assert ids(plan(policy, candidate(1, cost))) == [(1, Reason.GAS)]
    # Twice the gas price, twice the value needed.
    assert plan(policy, candidate(1, cost), gas_price=2 * GWEI) == ()


def test_gas_rule_prices_tokens_in_wei_per_unit():
    # 1 tUSD unit (1e-6 USD) at 3000 USD/ETH is 1e-6 / 3000 ETH = 10**12 / 3000 wei.
    price = Fraction(10**12, 3000)
    policy = SettlementPolicy(gas_multiple=5, claim_gas=60_000, wei_per_unit={USD: price})
    needed = 5 * 60_000 * GWEI / price  # units worth five claims of gas
    assert plan(policy, candidate(1, int(needed) - 1, USD)) == ()
    assert ids(plan(policy, candidate(1, int(needed) + 1, USD))) == [(1, Reason.GAS)]
    unpriced = SettlementPolicy(gas_multiple=5)
    assert plan(unpriced, candidate(1, 10**30, USD)) == ()


def test_age_rule_uses_the_wall_clock_since_the_channel_began_owing():
    policy = SettlementPolicy(max_unsettled_age=3_600)
    young = candidate(1, 5, owed_since=NOW - 3_599)
    old = candidate(2, 5, owed_since=NOW - 3_600)
    assert ids(plan(policy, young, old)) == [(2, Reason.AGE)]  # 5 wei is not worth its gas
    assert plan(policy, candidate(3, 5, owed_since=None)) == ()


def test_withdrawals_come_first_earliest_deadline_first():
    policy = SettlementPolicy(thresholds={ZERO_ADDRESS: 100}, piggyback=False)
    planned = plan(
        policy,
        candidate(1, 10**6),
        candidate(2, 1, closes_at=NOW + 900),
        candidate(3, 1, closes_at=NOW + 600),
        candidate(4, 500),
    )
    assert ids(planned) == [
        (3, Reason.WITHDRAW),
        (2, Reason.WITHDRAW),
        (1, Reason.THRESHOLD),
        (4, Reason.THRESHOLD),
    ]


def test_channels_that_pay_their_marginal_gas_ride_along_in_one_batch():
    policy = SettlementPolicy(batch_claim_gas=20_000)
    marginal = 20_000 * GWEI
    planned = plan(
        policy,
        candidate(1, 1, closes_at=NOW + 600),
        candidate(2, marginal),
        candidate(3, marginal - 1),
        candidate(4, 10 * marginal),
    )
    assert ids(planned) == [(1, Reason.WITHDRAW), (4, Reason.BATCH), (2, Reason.BATCH)]


def test_unpriced_tokens_ride_along_from_half_their_threshold():
    policy = SettlementPolicy(thresholds={USD: 1_000})
    planned = plan(policy, candidate(1, 1_000, USD), candidate(2, 500, USD), candidate(3, 499, USD))
    assert ids(planned) == [(1, Reason.THRESHOLD), (2, Reason.BATCH)]


def test_nothing_rides_along_when_nothing_is_due():
    assert plan(SettlementPolicy(), candidate(1, 10**30)) == ()


def test_batches_are_capped_most_urgent_first():
    policy = SettlementPolicy(max_batch=2)
    planned = plan(
        policy,
        candidate(1, 10**18),
        candidate(2, 1, closes_at=NOW + 900),
        candidate(3, 1, closes_at=NOW + 600),
    )
    assert planned == (
        PlannedClaim(bytes([3]) * 32, Reason.WITHDRAW),
        PlannedClaim(bytes([2]) * 32, Reason.WITHDRAW),
    )


def test_a_channel_owing_nothing_is_never_due():
    policy = SettlementPolicy(thresholds={ZERO_ADDRESS: 1}, max_unsettled_age=1)
    assert plan(policy, candidate(1, 0, closes_at=NOW, owed_since=0)) == ()


def test_token_addresses_are_normalised():
    policy = SettlementPolicy(thresholds={USD.lower(): 10})
    assert ids(plan(policy, candidate(1, 10, USD.upper().replace("0X", "0x")))) == [
        (1, Reason.THRESHOLD)
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"thresholds": {USD: 0}},
        {"thresholds": {USD: 1.5}},
        {"thresholds": {"not a token": 10}},
        {"wei_per_unit": {USD: -1}},
        {"wei_per_unit": {USD: "cheap"}},
        {"gas_multiple": 0},
        {"max_unsettled_age": -5},
        {"withdraw_lead": -1},
        {"max_batch": 0},
        {"claim_gas": 0},
        {"batch_claim_gas": -1},
    ],
)
def test_nonsense_parameters_are_refused(kwargs):
    with pytest.raises(SettlementPolicyError):
        SettlementPolicy(**kwargs)
