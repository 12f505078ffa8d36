"""Gas of every PaymentChannels operation, guarded against regressions on every network.

The figures come from the same code `make bench` prints (bench/gas_channels.py), measured
from real receipts; gas is deterministic, so a small margin catches any regression.
"""

from __future__ import annotations

import pytest
from channel_helpers import advance

from bench.gas_channels import GOALS, measure

# Receipt gasUsed measured on anvil (cancun, via-IR). Update deliberately, with the README.
# Claims settle a total below the voucher's ceiling (issue 13).
BASELINE = {
    "deposit opening an ETH channel": 48_418,
    "deposit opening an ERC-20 channel": 69_459,
    "top-up of an ETH channel": 31_318,
    "claim one voucher, payout included": 43_636,
    "claim relayed with the payee's signature, payout included": 51_645,
    "claim many: extra gas per additional channel": 14_926,
    "close by payee (claim + refund)": 54_751,
    "on-chain refund by payee, channel stays open": 39_920,
    "finish withdraw": 37_932,
}
MARGIN = 0.01  # 1%: balances and salts shift a few calldata bytes between runs


@pytest.fixture(scope="module")
def measured(w3, actors):
    return {
        row.operation: row.measured
        for row in measure(w3, actors.deployer, actors.payer, actors.payee, advance)
    }


@pytest.mark.parametrize("operation", list(BASELINE))
def test_gas_does_not_regress(measured, operation):
    assert measured[operation] <= BASELINE[operation] * (1 + MARGIN), (
        f"{operation}: {measured[operation]:,} gas, baseline {BASELINE[operation]:,}"
    )


@pytest.mark.parametrize("operation", list(BASELINE))
def test_gas_meets_the_goal(measured, operation):
    goal, _anchor = GOALS[operation]
    assert measured[operation] <= goal


# Issue 13's targets, receipt gas with the 21,000 base: a claim that settles below its
# ceiling, one more channel in a claim-many, a close, and an on-chain partial refund.
ISSUE_13_TARGETS = {
    "claim one voucher, payout included": 45_000,
    "claim many: extra gas per additional channel": 15_000,
    "close by payee (claim + refund)": 60_000,
    "on-chain refund by payee, channel stays open": 40_000,
}


@pytest.mark.parametrize("operation", list(ISSUE_13_TARGETS))
def test_ceiling_claims_and_refunds_meet_issue_13_targets(measured, operation):
    assert measured[operation] <= ISSUE_13_TARGETS[operation], (
        f"{operation}: {measured[operation]:,} gas, target {ISSUE_13_TARGETS[operation]:,}"
    )
