"""Gas guards: every stream operation's receipt gasUsed, measured by the benchmark's own
scenario (bench/gas_streams.py) on each network, must stay at the figures below.

Gas is deterministic and the same on all three networks (same EVM rules, same calldata);
the small margin only absorbs calldata bytes that depend on the clock (a timestamp byte that
happens to be zero costs 12 gas less). A figure that moves by more is a change to explain:
update it here and in the README's table together.
"""

from __future__ import annotations

import ape
import pytest

from bench.gas_streams import measure

MARGIN = 200

# Receipt gasUsed including the 21,000 base, as `python -m bench.gas_streams` printed them.
EXPECTED = {
    "create a fixed ETH stream": 50_823,
    "create a fixed ERC-20 stream": 71_327,
    "create an open-ended ERC-20 stream with its first deposit": 93_754,
    "create an open-ended ETH stream with its first deposit": 73_219,
    "for reference: a plain ERC-20 transfer between two holders": 34_077,
    "withdraw (fixed ETH stream, recipient to itself)": 39_248,
    "withdraw (fixed ERC-20 stream, recipient to itself)": 48_340,
    "withdraw (open-ended ERC-20 stream, recipient to itself)": 51_620,
    "withdraw (open-ended ETH stream, recipient to itself)": 42_534,
    "withdraw (fixed ERC-20, triggered by a third party)": 48_374,
    "withdraw (fixed ERC-20, recipient's first ever token balance)": 65_464,
    "cancel (fixed ETH stream, mid-stream)": 38_239,
    "cancel (fixed ERC-20 stream, mid-stream)": 47_331,
    "batch create, 1 fixed ETH stream": 52_281,
    "batch create, 10 fixed ETH streams": 315_946,
    "batch create: extra gas per additional fixed stream": 29_296,
    "batch create: extra gas per additional fixed ERC-20 stream": 29_538,
    "batch create: extra gas per additional open-ended stream (funded)": 52_240,
    "top up an open-ended ERC-20 stream (third party)": 53_785,
    "adjust rate (the stream's first snapshot)": 53_462,
    "adjust rate": 36_362,
    "pause": 35_244,
    "refund (ERC-20, paused stream)": 50_914,
    "resume": 29_915,
    "transfer to a new recipient (open-ended)": 52_685,
    "withdraw after a transfer (open-ended ERC-20)": 53_789,
}

# Issue 4's goals that are met; the misses (ERC-20 and open-ended withdrawals, open-ended
# batches) are explained in the README and by the reference row above.
GOALS_MET = {
    "create a fixed ETH stream": 70_000,
    "create an open-ended ERC-20 stream with its first deposit": 110_000,
    "withdraw (fixed ETH stream, recipient to itself)": 45_000,
    "withdraw (open-ended ETH stream, recipient to itself)": 45_000,
    "cancel (fixed ETH stream, mid-stream)": 50_000,
    "cancel (fixed ERC-20 stream, mid-stream)": 50_000,
    "batch create: extra gas per additional fixed stream": 35_000,
    "batch create: extra gas per additional fixed ERC-20 stream": 35_000,
}


@pytest.fixture(scope="module")
def measured(accounts):  # type: ignore[no-untyped-def]
    rows = measure(
        ape.chain.provider.web3,
        [accounts[i].address for i in range(5)],
        lambda seconds: ape.chain.mine(deltatime=seconds),
    )
    return {row.operation: row.gas for row in rows}


def test_every_operation_is_measured(measured):
    assert set(measured) == set(EXPECTED)


@pytest.mark.parametrize("operation", sorted(EXPECTED))
def test_gas_stays_at_the_recorded_figure(measured, operation):
    assert abs(measured[operation] - EXPECTED[operation]) <= MARGIN, (
        f"{operation}: {measured[operation]:,} gas, recorded {EXPECTED[operation]:,}"
    )


@pytest.mark.parametrize("operation", sorted(GOALS_MET))
def test_goal_is_met(measured, operation):
    assert measured[operation] <= GOALS_MET[operation]
