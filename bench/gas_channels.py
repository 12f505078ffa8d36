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

from micropay._contracts import RawCall, Sender, send_transaction, sender_address
from micropay.channels import ChannelClient
from micropay.devnode import anvil
from micropay.networks import rpc_advance
from micropay.tokens import TokenClient
from micropay.vouchers import ZERO_ADDRESS, ChannelConfig, sign_payee_claim, sign_voucher

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
    "claim one voucher, payout included": (45_000, "x402: claim ~61,300 then settle ~52,200"),
    "claim relayed with the payee's signature, payout included": (
        55_000,
        "x402 batch-settlement claim ~61,000",
    ),
    "claim many: extra gas per additional channel": (15_000, "x402: ~17,000 each"),
    "close by payee (claim + refund)": (60_000, "µRaiden cooperativeClose 71,182"),
    "on-chain refund by payee, channel stays open": (40_000, "x402 partial refund (cooperative)"),
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
    call this too, to guard the figures against regressions on every network. Claims settle
    below the voucher's ceiling, as a metered payee does; the relayed claim is sent by the
    payer on behalf of a payee key made here.
    """
    session = Account.from_key(os.urandom(32))
    relayed_payee = Account.from_key(os.urandom(32))
    channels = ChannelClient.deploy(w3, deployer)
    token = TokenClient.deploy(w3, deployer, "Bench USD", "bUSD", 6)
    token.mint(sender_address(payer), 10**15, deployer)
    token.approve(channels.address, 2**256 - 1, payer)
    # The contract already holds the token (another channel), as the goal's wording asks.
    salts = iter(range(1, 10_000))

    def config(token_address: str = ZERO_ADDRESS, to: str | None = None) -> ChannelConfig:
        return ChannelConfig(
            sender_address(payer),
            to or sender_address(payee),
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
        channels.claim(eth, voucher(eth, 2 * 10**17), payee, total=10**17)
    )
    # The relayed payee already holds ETH, like the payee of the other rows (paying an empty
    # account costs 25,000 more).
    send_transaction(w3, RawCall(w3, relayed_payee.address), deployer, 1)
    relayed = config(to=relayed_payee.address)
    channels.deposit(relayed, 10**18, payer)
    consent = sign_payee_claim(channels.domain, relayed.channel_id, 10**17, relayed_payee)
    measured["claim relayed with the payee's signature, payout included"] = gas(
        channels.claim_for(relayed, voucher(relayed, 2 * 10**17), consent, payer)
    )

    batch_sizes = (1, 11)
    batch_gas: list[int] = []
    for size in batch_sizes:
        group = [config() for _ in range(size)]
        for cfg in group:
            channels.deposit(cfg, 10**18, payer)
        items = [(c, voucher(c, 2 * 10**17), 10**17) for c in group]
        batch_gas.append(gas(channels.claim_many(items, payee)))
    extra = (batch_gas[1] - batch_gas[0]) // (batch_sizes[1] - batch_sizes[0])
    measured["claim many: extra gas per additional channel"] = extra

    closing = config()
    channels.deposit(closing, 10**18, payer)
    measured["close by payee (claim + refund)"] = gas(
        channels.close(closing, voucher(closing, 4 * 10**17), payee, total=3 * 10**17)
    )

    refunding = config()
    channels.deposit(refunding, 10**18, payer)
    channels.claim(refunding, voucher(refunding, 2 * 10**17), payee, total=10**17)
    measured["on-chain refund by payee, channel stays open"] = gas(
        channels.refund(refunding, 3 * 10**17, payee)
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
