"""The micropay demo as an ape script: the same story as ``make demo``, on ape's network.

    ape run demo --network ethereum:local:foundry     # or :test, :hardhat

ape starts the node; the story runs through the SDK on ape's own web3 connection, with
the test mnemonic's keys (ape's test accounts) and the node's clock moved through ape.
"""

from __future__ import annotations

from ape import chain, networks

from micropay import demo
from micropay.networks import Connection, dev_keys


def main() -> None:
    provider = networks.provider

    def advance(seconds: int) -> None:
        chain.mine(deltatime=seconds)

    connection = Connection(provider.network.choice, provider.web3, dev_keys(), advance)
    summary = demo.run(connection)
    if not summary.conserved:
        raise SystemExit("the demo's balances do not add up")
