"""A private anvil for the watchtower tests, its keys, and the chain controls they use.

The watchtower tests start their own node (``standalone``) because they reorganise the chain
and move its clock by days, which the suite's shared nodes must not see.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from micropay.channels import ChannelClient
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.payer import Payer

MNEMONIC = "test test test test test test test test test test test junk"
ETH = 10**18
_salts = itertools.count(1)


def anvil_keys(count: int = 5) -> list[LocalAccount]:
    """anvil's funded accounts, as local keys (the SDK signs its own transactions)."""
    Account.enable_unaudited_hdwallet_features()
    return [
        Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count)
    ]


@dataclass(frozen=True)
class Chain:
    """The node, the deployment and the people, with anvil's time and reorg controls."""

    w3: Web3
    client: ChannelClient
    payer: LocalAccount
    payee: LocalAccount
    tower: LocalAccount
    """Pays the gas of the watchtower's claims (any account may relay one the payee signed)."""

    def rpc(self, method: str, *params: Any) -> Any:
        response = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        if "error" in response:
            raise RuntimeError(f"{method}: {response['error']}")
        return response.get("result")

    @property
    def head(self) -> int:
        return int(self.w3.eth.block_number)

    @property
    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def mine(self, blocks: int = 1, seconds: int = 0) -> int:
        """Move the clock ``seconds`` forward, mine ``blocks`` empty blocks; the new head."""
        if seconds:
            self.rpc("evm_increaseTime", seconds)
        for _ in range(blocks):
            self.rpc("evm_mine")
        return self.head

    def mine_at(self, timestamp: int) -> int:
        self.rpc("evm_mine", timestamp)
        return self.head

    def reorg(self, depth: int) -> None:
        """Replace the last ``depth`` blocks with empty ones: their transactions are gone."""
        self.rpc("anvil_reorg", depth, [])

    def open_channel(self, deposit: int = ETH, delay: int = 3600) -> Payer:
        return Payer.open(
            self.client,
            self.payer,
            self.payee.address,
            deposit,
            withdraw_delay=delay,
            salt=next(_salts).to_bytes(32, "big"),
        )

    def payee_with(self, ledger: Ledger) -> Payee:
        # A short cache: the tests move the chain under the payee's feet.
        return Payee(self.client, self.payee, book=ledger, safety_margin=60, state_ttl=0.0)


def start_chain(w3: Web3) -> Chain:
    deployer, payer, payee, tower = anvil_keys(4)
    return Chain(w3, ChannelClient.deploy(w3, deployer), payer, payee, tower)
