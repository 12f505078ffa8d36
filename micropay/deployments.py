"""Deploying micropay's two singletons, at the same address wherever possible.

Where the deterministic deployment proxy (``0x4e59b448…``, present on anvil and on most
public chains) exists, both contracts are created through it with CREATE2 and a fixed
salt, so PaymentChannels and Streams have the same addresses on every such chain and a
second deploy finds them already there. Elsewhere (hardhat, the embedded chain) they are
deployed normally. :class:`DeploymentRegistry` records the addresses per chain in a JSON
file, so the CLI and scripts find them again.

A chain is its id *and* its genesis block hash: every local dev node has chain id 31337,
and a restarted one is a new, empty chain where the recorded addresses hold nothing. What
:meth:`DeploymentRegistry.find` returns is checked to run the code micropay ships, so money
is never sent to an address left over from another node.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from web3 import Web3

from micropay._artifacts import load_artifact
from micropay._contracts import RawCall, Sender, check_shipped_code, send_transaction
from micropay._files import write_json_atomically
from micropay._keccak import keccak256
from micropay.errors import ContractCodeError, MicropayError

CREATE2_PROXY = to_checksum_address("0x4e59b44847b379578588920ca78fbf26c0b4956c")
# One salt for all releases of the same bytecode: the address changes only with the code.
SALT = keccak256(b"micropay")
SINGLETONS = ("PaymentChannels", "Streams")


class DeploymentError(MicropayError, LookupError):
    """No deployment is recorded for this chain, the recorded one is not on it, or the
    registry file is unreadable."""


@dataclass(frozen=True)
class Deployment:
    """Where micropay lives on one chain (named by its id and genesis block hash)."""

    chain_id: int
    genesis: str
    channels: str
    streams: str
    deterministic: bool


def genesis_hash(w3: Web3) -> str:
    """The hash of block 0, ``0x``-prefixed: what tells two chains with one id apart."""
    return "0x" + bytes(w3.eth.get_block(0)["hash"]).hex()


def create2_address(init_code: bytes, salt: bytes = SALT) -> ChecksumAddress:
    """Where the proxy puts ``init_code``: keccak(0xff ‖ proxy ‖ salt ‖ keccak(code))[12:]."""
    digest = keccak256(b"\xff" + bytes.fromhex(CREATE2_PROXY[2:]) + salt + keccak256(init_code))
    return to_checksum_address(digest[12:])


def _deploy_one(w3: Web3, name: str, sender: Sender, deterministic: bool) -> str:
    init_code = bytes.fromhex(load_artifact(name).bytecode[2:])
    if not deterministic:
        from micropay._contracts import ContractClient

        class _Plain(ContractClient):
            ARTIFACT = name

        return _Plain.deploy(w3, sender).address
    target = create2_address(init_code)
    if not w3.eth.get_code(target):
        send_transaction(w3, RawCall(w3, CREATE2_PROXY, SALT + init_code), sender)
        if not w3.eth.get_code(target):
            raise DeploymentError(f"the CREATE2 proxy did not create {name} at {target}")
    return target


def deploy(w3: Web3, sender: Sender) -> Deployment:
    """Deploy (or find) both singletons on the chain ``w3`` is connected to."""
    deterministic = bool(w3.eth.get_code(CREATE2_PROXY))
    channels, streams = (_deploy_one(w3, name, sender, deterministic) for name in SINGLETONS)
    return Deployment(w3.eth.chain_id, genesis_hash(w3), channels, streams, deterministic)


class DeploymentRegistry:
    """Deployments per chain (id and genesis hash), kept in a small JSON file.

    Entries are keyed ``"<chain id>:<genesis hash>"``. Entries written before the genesis
    hash was recorded (keyed by the chain id alone) cannot say which node they came from:
    they are never used, and recording a deployment on that chain id replaces them.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, dict[str, object]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf8"))
        except (OSError, ValueError) as err:
            raise DeploymentError(f"cannot read the registry {self.path}: {err}") from err
        if not isinstance(data, dict):
            raise DeploymentError(f"{self.path} is not a deployment registry (not an object)")
        return data

    def record(self, deployment: Deployment) -> None:
        data = self._read()
        data.pop(str(deployment.chain_id), None)  # an old-format entry for this chain id
        data[_key(deployment.chain_id, deployment.genesis)] = asdict(deployment)
        write_json_atomically(self.path, data, indent=2)

    def get(self, chain_id: int, genesis: str) -> Deployment:
        """The deployment recorded for this chain, as recorded (not checked against it)."""
        data = self._read()
        entry = data.get(_key(chain_id, genesis))
        if entry is None:
            others = [key for key in data if key.split(":")[0] == str(chain_id)]
            why = (
                f"; what is recorded for chain id {chain_id} is from another node (a restarted "
                "dev node is a new chain) or from an older micropay"
                if others
                else ""
            )
            raise DeploymentError(
                f"no micropay deployment recorded for chain {chain_id} (genesis "
                f"{_short(genesis)}) in {self.path}{why}; run `micropay deploy`"
            )
        try:
            return Deployment(
                chain_id=int(str(entry["chain_id"])),
                genesis=str(entry["genesis"]),
                channels=to_checksum_address(str(entry["channels"])),
                streams=to_checksum_address(str(entry["streams"])),
                deterministic=bool(entry["deterministic"]),
            )
        except (KeyError, ValueError) as err:
            raise DeploymentError(f"malformed entry for chain {chain_id} in {self.path}") from err

    def find(self, w3: Web3) -> Deployment:
        """The deployment on the chain ``w3`` is connected to, checked to run micropay's code."""
        genesis = genesis_hash(w3)
        deployment = self.get(w3.eth.chain_id, genesis)
        addresses = (deployment.channels, deployment.streams)
        for name, address in zip(SINGLETONS, addresses, strict=True):
            try:
                check_shipped_code(w3, address, name)
            except ContractCodeError as err:
                raise DeploymentError(
                    f"{err} (genesis {_short(genesis)}): the deployment recorded in {self.path} "
                    "is not on this chain; run `micropay deploy`"
                ) from None
        return deployment


def _key(chain_id: int, genesis: str) -> str:
    return f"{chain_id}:{genesis}"


def _short(genesis: str) -> str:
    return genesis[:10] + "…"
