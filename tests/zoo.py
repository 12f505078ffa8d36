"""Deploy and drive the hostile test contracts in ``contracts/test/`` through web3.

The zoo is deployed from the shipped artifacts (``micropay/artifacts/``), like the SDK
deploys PaymentChannels and Streams, so these tests need no ape compile and a mutated copy
of the project (tools/mutate.py) only has to rebuild the artifacts.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from eth_utils.address import to_checksum_address
from web3 import Web3

from micropay._contracts import ContractClient, Sender

UNLIMITED = 2**256 - 1


class ZooContract(ContractClient):
    """A deployed test contract: ``send`` a transaction, ``read`` a view, by function name."""

    ARTIFACT = ""

    def send(self, function: str, *args: Any, sender: Sender, value: int = 0) -> Any:
        return self._transact(getattr(self.contract.functions, function)(*args), sender, value)

    def read(self, function: str, *args: Any) -> Any:
        return self._read(getattr(self.contract.functions, function)(*args))

    def balance_of(self, owner: str) -> int:
        return int(self.read("balanceOf", owner))


@cache
def _zoo_class(artifact: str) -> type[ZooContract]:
    return type(f"{artifact}Contract", (ZooContract,), {"ARTIFACT": artifact})


def deploy(w3: Web3, artifact: str, sender: Sender, *args: Any) -> ZooContract:
    """Deploy one contract of the zoo (``"FeeOnTransferToken"``, ...)."""
    return _zoo_class(artifact).deploy(w3, sender, *args)


def fund(token: ZooContract, holders: list[Any], amount: int, spenders: list[str]) -> None:
    """Mint ``amount`` to each holder (a LocalAccount) and approve every spender without limit."""
    minter = holders[0]
    for holder in holders:
        token.send("mint", holder.address, amount, sender=minter)
        for spender in spenders:
            token.send("approve", spender, UNLIMITED, sender=holder)


def encode(client: ContractClient, function: str, *args: Any) -> bytes:
    """Calldata for ``function(*args)`` on ``client``'s contract (for re-entrant hooks)."""
    data = getattr(client.contract.functions, function)(*args)._encode_transaction_data()
    return bytes.fromhex(data[2:])


def revert_name(client: ContractClient, data: bytes) -> str:
    """The custom error name of raw revert ``data``, decoded with ``client``'s ABI."""
    if len(data) >= 4 and data[:4] in client._errors:
        return client._errors[data[:4]][0]
    return "0x" + data.hex()


def eth_balance(w3: Web3, address: str) -> int:
    return int(w3.eth.get_balance(to_checksum_address(address)))
