"""Gas of one ``exact`` payment against a channel's, guarded on every network.

The figures come from the code `make bench` prints (bench/gas_exact.py), from real receipts.
"""

from __future__ import annotations

import pytest

from bench.gas_exact import measure

# Receipt gasUsed on anvil, as `python -m bench.gas_exact` printed them.
EXACT = 64_986  # ± a few dozen: the zero bytes of the random nonce and signature
MARGIN = 0.01


@pytest.fixture(scope="module")
def exact_gas_figures(w3, actors):  # type: ignore[no-untyped-def]
    return measure(w3, actors.deployer, actors.payee, actors.payer)


def test_one_exact_payment_costs_one_eip3009_transfer(exact_gas_figures):  # type: ignore[no-untyped-def]
    exact, _opened, _claimed = exact_gas_figures
    assert exact <= EXACT * (1 + MARGIN)


def test_a_channel_costs_less_gas_than_exact_from_the_second_request(exact_gas_figures):  # type: ignore[no-untyped-def]
    exact, opened, claimed = exact_gas_figures
    # One request: exact is cheaper; two: the channel's open and claim already cost less.
    assert exact < opened + claimed < 2 * exact
