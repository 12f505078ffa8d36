"""Small helpers shared by the channel tests (not fixtures: plain functions)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import ape

from micropay.errors import ContractRevertError
from micropay.vouchers import ZERO_ADDRESS, ChannelConfig

DELAY = 3600
_salts = itertools.count(1)


def make_config(
    payer: Any,
    payee: Any,
    authorizer: Any | None = None,
    *,
    token: str = ZERO_ADDRESS,
    delay: int = DELAY,
    salt: int | None = None,
) -> ChannelConfig:
    return ChannelConfig(
        payer=payer.address,
        payee=payee.address,
        token=token,
        authorizer=(authorizer or payer).address,
        withdraw_delay=delay,
        salt=(next(_salts) if salt is None else salt).to_bytes(32, "big"),
    )


def attempt(log: Any, step: str, action: Callable[[], Any], error: str | None) -> Any:
    """Run a transaction for a state machine (counting the step in ``log``, an
    audit_profiles.ExampleLog): it must revert with the custom error ``error``, or succeed
    if that is None. Returns its result, or None if it reverted."""
    log.step(step)
    try:
        result = action()
    except ContractRevertError as err:
        assert error is not None, f"{step}: unexpected revert {err}"
        assert err.error_name == error, f"{step}: expected {error}, got {err}"
        return None
    assert error is None, f"{step}: expected {error}, but it succeeded"
    return result


def advance(seconds: int) -> None:
    """Move the node's clock forward and mine a block (works on all three networks)."""
    ape.chain.mine(deltatime=seconds)


def gas_cost(receipt: Any) -> int:
    """Wei a transaction cost its sender."""
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


class EthLedger:
    """Track ETH balances across transactions, adding back what each sender paid for gas."""

    def __init__(self, w3: Any, *addresses: str) -> None:
        self.w3 = w3
        self.start = {a: w3.eth.get_balance(a) for a in addresses}
        self.gas: dict[str, int] = dict.fromkeys(addresses, 0)

    def paid_gas(self, address: str, receipt: Any) -> Any:
        self.gas[address] += gas_cost(receipt)
        return receipt

    def delta(self, address: str) -> int:
        """Balance change of ``address``, not counting gas it paid."""
        return self.w3.eth.get_balance(address) - self.start[address] + self.gas[address]
