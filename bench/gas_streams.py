"""Gas of every stream operation, measured from real receipts on a throw-away anvil.

Run: ``.venv/bin/python -m bench.gas_streams`` (``make bench`` runs it too). Prints a
Markdown table of receipt ``gasUsed`` (the 21,000 base included) against issue 4's goals
and the best published anchors (Sablier's forge figures plus 21,000).

Every figure is a steady-state one: the contract, the token and the accounts have been
used before, the recipient already holds some of the token, and approvals are unlimited
(most wallets grant those; a finite allowance costs about 2,900 gas more per pull).
A first-ever withdrawal to an address holding none of the token pays 17,100 more in the
token's own storage, whatever the stream contract does; that case is printed too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from web3 import Web3

from micropay.devnode import anvil
from micropay.streams import ETH, FixedStreamConfig, OpenStreamConfig, StreamsClient
from micropay.tokens import TokenClient

UNLIMITED = 2**256 - 1
DAY = 86_400


@dataclass(frozen=True)
class Row:
    operation: str
    gas: int
    goal: int | None = None
    anchor: str = ""

    def markdown(self) -> str:
        goal = f"≤ {self.goal:,}" if self.goal else ""
        met = "" if self.goal is None else ("yes" if self.gas <= self.goal else "**no**")
        return f"| {self.operation} | {self.gas:,} | {goal} | {self.anchor} | {met} |"


def _advance(w3: Web3, seconds: int) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def _now(w3: Web3) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])


def measure(
    w3: Web3,
    accounts: Sequence[str] | None = None,
    advance: Callable[[int], None] | None = None,
) -> list[Row]:
    """Perform each operation through the SDK and collect its receipt's gasUsed.

    ``accounts`` (five node-unlocked, funded addresses) and ``advance`` (move the node's
    clock forward and mine) default to anvil's; tests/test_streams_gas.py passes ape's, so
    the regression guard and this table measure the very same scenario.
    """
    deployer, sender, recipient, funder, fresh = (accounts or w3.eth.accounts)[:5]
    step = advance or (lambda seconds: _advance(w3, seconds))
    streams = StreamsClient.deploy(w3, deployer)
    token = TokenClient.deploy(w3, deployer, "Bench Token", "BNCH", 18)
    for account in (sender, recipient, funder):
        token.mint(account, 10**30, deployer)
        token.approve(streams.address, UNLIMITED, account)
    salt = iter(range(1, 1_000_000))
    rows: list[Row] = []

    def fixed(token_address: str, **overrides: object) -> FixedStreamConfig:
        now = _now(w3)
        fields: dict[str, object] = {
            "sender": sender,
            "recipient": recipient,
            "token": token_address,
            "amount": 10**19,
            "start": now,
            "end": now + 30 * DAY,
            "salt": next(salt).to_bytes(32, "big"),
        }
        fields.update(overrides)
        return FixedStreamConfig(**fields)  # type: ignore[arg-type]

    def opened(token_address: str, to: str = recipient) -> OpenStreamConfig:
        return OpenStreamConfig(sender, to, token_address, next(salt).to_bytes(32, "big"))

    # Warm-up: the contract holds both currencies before anything is measured.
    streams.create_fixed(fixed(ETH), sender)
    streams.create_fixed(fixed(token.address), sender)

    eth_stream = fixed(ETH)
    rows.append(
        Row(
            "create a fixed ETH stream",
            streams.create_fixed(eth_stream, sender).gas_used,
            70_000,
            "Sablier Lockup Linear ~142,700; LlamaPay 69,963 (unfunded)",
        )
    )
    erc20_stream = fixed(token.address, cliff=0)
    rows.append(
        Row(
            "create a fixed ERC-20 stream",
            streams.create_fixed(erc20_stream, sender).gas_used,
            anchor="Sablier Lockup Linear ~142,700",
        )
    )
    rate = 10**21 * 10**18 // (30 * DAY)
    open_stream = opened(token.address)
    rows.append(
        Row(
            "create an open-ended ERC-20 stream with its first deposit",
            streams.create_open(open_stream, rate, 10**21, sender).gas_used,
            110_000,
            "Sablier Flow create ~148,000 + deposit ~58,000",
        )
    )
    open_eth = opened(ETH)
    rows.append(
        Row(
            "create an open-ended ETH stream with its first deposit",
            streams.create_open(open_eth, rate, 10**19, sender).gas_used,
        )
    )

    step(DAY)
    rows.append(
        Row(
            "for reference: a plain ERC-20 transfer between two holders",
            int(token.transfer(recipient, 1, funder)["gasUsed"]),
        )
    )
    rows.append(
        Row(
            "withdraw (fixed ETH stream, recipient to itself)",
            streams.withdraw(eth_stream, recipient).gas_used,
            45_000,
            "Sablier Lockup Linear ~51,000",
        )
    )
    rows.append(
        Row(
            "withdraw (fixed ERC-20 stream, recipient to itself)",
            streams.withdraw(erc20_stream, recipient).gas_used,
            45_000,
            "Sablier Lockup Linear ~51,000",
        )
    )
    rows.append(
        Row(
            "withdraw (open-ended ERC-20 stream, recipient to itself)",
            streams.withdraw(open_stream, recipient).gas_used,
            45_000,
            "Sablier Flow ~67,000",
        )
    )
    rows.append(
        Row(
            "withdraw (open-ended ETH stream, recipient to itself)",
            streams.withdraw(open_eth, recipient).gas_used,
            45_000,
            "Sablier Flow ~67,000",
        )
    )
    step(DAY)
    rows.append(
        Row(
            "withdraw (fixed ERC-20, triggered by a third party)",
            streams.withdraw(erc20_stream, funder).gas_used,
        )
    )
    first_time = fixed(token.address, recipient=fresh)
    streams.create_fixed(first_time, sender)
    step(DAY)
    rows.append(
        Row(
            "withdraw (fixed ERC-20, recipient's first ever token balance)",
            streams.withdraw(first_time, fresh).gas_used,
        )
    )

    rows.append(
        Row(
            "cancel (fixed ETH stream, mid-stream)",
            streams.cancel(eth_stream, sender).gas_used,
            50_000,
            "Sablier Lockup Linear ~60,000",
        )
    )
    rows.append(
        Row(
            "cancel (fixed ERC-20 stream, mid-stream)",
            streams.cancel(erc20_stream, sender).gas_used,
            50_000,
            "Sablier Lockup Linear ~60,000",
        )
    )

    one = streams.create_fixed_batch([fixed(ETH)], sender).gas_used
    ten = streams.create_fixed_batch([fixed(ETH) for _ in range(10)], sender).gas_used
    rows.append(Row("batch create, 1 fixed ETH stream", one))
    rows.append(Row("batch create, 10 fixed ETH streams", ten))
    rows.append(
        Row(
            "batch create: extra gas per additional fixed stream",
            (ten - one) // 9,
            35_000,
            "Sablier batch ~170,000 each",
        )
    )
    one = streams.create_fixed_batch([fixed(token.address)], sender).gas_used
    ten = streams.create_fixed_batch([fixed(token.address) for _ in range(10)], sender).gas_used
    rows.append(
        Row(
            "batch create: extra gas per additional fixed ERC-20 stream",
            (ten - one) // 9,
            35_000,
            "Sablier batch ~170,000 each",
        )
    )
    one = streams.create_open_batch([(opened(token.address), rate, 10**20)], sender).gas_used
    ten = streams.create_open_batch(
        [(opened(token.address), rate, 10**20) for _ in range(10)], sender
    ).gas_used
    rows.append(
        Row(
            "batch create: extra gas per additional open-ended stream (funded)",
            (ten - one) // 9,
            35_000,
            "Sablier batch ~170,000 each",
        )
    )

    rows.append(
        Row(
            "top up an open-ended ERC-20 stream (third party)",
            streams.top_up(open_stream, 10**20, funder).gas_used,
            anchor="Sablier Flow deposit ~58,000",
        )
    )
    # Time passes between the sender's calls, as it would: a snapshot taken in the same
    # second as the previous one rewrites unchanged values, which costs less.
    step(60)
    rows.append(
        Row(
            "adjust rate (the stream's first snapshot)",
            streams.adjust_rate(open_stream, rate * 2, sender).gas_used,
        )
    )
    step(60)
    rows.append(Row("adjust rate", streams.adjust_rate(open_stream, rate, sender).gas_used))
    step(60)
    rows.append(Row("pause", streams.pause(open_stream, sender).gas_used))
    refundable = streams.open_amounts(open_stream).refundable
    step(60)
    rows.append(
        Row(
            "refund (ERC-20, paused stream)",
            streams.refund(open_stream, refundable // 2, sender).gas_used,
        )
    )
    step(60)
    rows.append(Row("resume", streams.resume(open_stream, rate, sender).gas_used))
    rows.append(
        Row(
            "transfer to a new recipient (open-ended)",
            streams.transfer(open_stream, funder, recipient).gas_used,
        )
    )
    step(DAY)
    rows.append(
        Row(
            "withdraw after a transfer (open-ended ERC-20)",
            streams.withdraw(open_stream, funder).gas_used,
        )
    )
    return rows


def main() -> None:
    with anvil() as w3:
        rows = measure(w3)
    print("### Streams: receipt gasUsed on anvil (cancun, 21,000 base included)\n")
    print("| operation | measured gasUsed | goal | best anchor | met? |")
    print("| --- | ---: | --- | --- | --- |")
    for row in rows:
        print(row.markdown())


if __name__ == "__main__":
    main()
