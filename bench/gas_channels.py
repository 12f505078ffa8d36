"""Gas of every PaymentChannels operation, from real receipts on a throw-away anvil.

Run with ``make bench`` (or ``python -m bench.gas_channels``). Figures are receipt
``gasUsed``, which includes the 21,000 base; forge-measured anchors are shown with 21,000
added so the columns compare like with like.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from eth_account import Account
from web3 import Web3

from micropay._contracts import Sender, sender_address
from micropay.channels import ChannelClient
from micropay.devnode import anvil
from micropay.networks import rpc_advance
from micropay.tokens import TokenClient
from micropay.vouchers import ZERO_ADDRESS, ChannelConfig, sign_voucher

DELAY = 3600


@dataclass(frozen=True)
class GasRow:
    operation: str
    measured: int
    goal: int
    anchor: str

    @property
    def met(self) -> bool:
        return self.measured <= self.goal


GOALS: dict[str, tuple[int, str]] = {
    "deposit opening an ETH channel": (
        50_000,
        "µRaiden open 88,976 (ERC223); x402 first deposit ~105,800",
    ),
    "deposit opening an ERC-20 channel": (75_000, "µRaiden 120,090 incl. approve"),
    "top-up of an ETH channel": (35_000, "µRaiden 54,885"),
    "claim one voucher, payout included": (50_000, "x402: claim ~61,300 then settle ~52,200"),
    "claim many: extra gas per additional channel": (15_000, "x402: ~17,000 each"),
    "close by payee (claim + refund)": (60_000, "µRaiden cooperativeClose 71,182"),
    "finish withdraw": (40_000, "µRaiden settle 40,896"),
}


def measure(
    w3: Web3,
    deployer: Sender,
    payer: Sender,
    payee: Sender,
    advance: Callable[[int], None],
) -> list[GasRow]:
    """Run each operation once in a realistic state and return its receipt gas.

    ``advance(seconds)`` moves the node's clock (each network has its own way). The tests
    call this too, to guard the figures against regressions on every network.
    """
    session = Account.from_key(os.urandom(32))
    channels = ChannelClient.deploy(w3, deployer)
    token = TokenClient.deploy(w3, deployer, "Bench USD", "bUSD", 6)
    token.mint(sender_address(payer), 10**15, deployer)
    token.approve(channels.address, 2**256 - 1, payer)
    # The contract already holds the token (another channel), as the goal's wording asks.
    salts = iter(range(1, 10_000))

    def config(token_address: str = ZERO_ADDRESS) -> ChannelConfig:
        return ChannelConfig(
            sender_address(payer),
            sender_address(payee),
            token_address,
            session.address,
            DELAY,
            next(salts).to_bytes(32, "big"),
        )

    def gas(receipt: dict[str, int] | object) -> int:
        return int(receipt["gasUsed"])  # type: ignore[index]

    def voucher(cfg: ChannelConfig, amount: int):  # type: ignore[no-untyped-def]
        return sign_voucher(channels.domain, cfg.channel_id, amount, session)

    measured: dict[str, int] = {}
    first = config(token.address)
    channels.deposit(first, 1_000, payer)

    eth = config()
    measured["deposit opening an ETH channel"] = gas(channels.deposit(eth, 10**18, payer))
    measured["top-up of an ETH channel"] = gas(channels.deposit(eth, 10**18, payer))
    erc = config(token.address)
    measured["deposit opening an ERC-20 channel"] = gas(channels.deposit(erc, 10**9, payer))
    measured["claim one voucher, payout included"] = gas(
        channels.claim(eth, voucher(eth, 10**17), payee)
    )

    batch_sizes = (1, 11)
    batch_gas: list[int] = []
    for size in batch_sizes:
        group = [config() for _ in range(size)]
        for cfg in group:
            channels.deposit(cfg, 10**18, payer)
        batch_gas.append(gas(channels.claim_many([(c, voucher(c, 10**17)) for c in group], payee)))
    extra = (batch_gas[1] - batch_gas[0]) // (batch_sizes[1] - batch_sizes[0])
    measured["claim many: extra gas per additional channel"] = extra

    closing = config()
    channels.deposit(closing, 10**18, payer)
    measured["close by payee (claim + refund)"] = gas(
        channels.close(closing, voucher(closing, 3 * 10**17), payee)
    )

    leaving = config()
    channels.deposit(leaving, 10**18, payer)
    channels.request_withdraw(leaving, payer)
    advance(DELAY)
    measured["finish withdraw"] = gas(channels.finish_withdraw(leaving, payer))

    return [GasRow(op, measured[op], *GOALS[op]) for op in GOALS]


def render(rows: list[GasRow]) -> str:
    lines = [
        "| operation (receipt gasUsed) | measured | goal | best anchor | met |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.operation} | {row.measured:,} | ≤ {row.goal:,} | {row.anchor} | "
            f"{'yes' if row.met else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> None:
    with anvil() as w3:
        deployer, payer, payee = w3.eth.accounts[:3]
        rows = measure(w3, deployer, payer, payee, rpc_advance(w3))
    print("PaymentChannels gas on anvil (cancun):\n")
    print(render(rows))


if __name__ == "__main__":
    main()
