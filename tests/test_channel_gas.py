"""Gas of every PaymentChannels operation, guarded against regressions on every network.

The figures come from the same code `make bench` prints (bench/gas_channels.py), measured
from real receipts; gas is deterministic, so a small margin catches any regression.
"""

from __future__ import annotations

import pytest
from channel_helpers import advance

from bench.gas_channels import GOALS, measure

# Receipt gasUsed measured on anvil (cancun, via-IR). Update deliberately, with the README.
BASELINE = {
    "deposit opening an ETH channel": 48_222,
    "deposit opening an ERC-20 channel": 69_263,
    "top-up of an ETH channel": 31_122,
    "claim one voucher, payout included": 43_297,
    "claim many: extra gas per additional channel": 14_539,
    "close by payee (claim + refund)": 54_479,
    "finish withdraw": 37_816,
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
