"""Deploying micropay's two singletons, at the same address wherever possible.

Where the deterministic deployment proxy (``0x4e59b448…``, present on anvil and on most
public chains) exists, both contracts are created through it with CREATE2 and a fixed
salt, so PaymentChannels and Streams have the same addresses on every such chain and a
second deploy finds them already there. Elsewhere (hardhat, the embedded chain) they are
deployed normally. :class:`DeploymentRegistry` records the addresses per chain id in a
JSON file, so the CLI and scripts find them again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from web3 import Web3

from micropay._artifacts import load_artifact
from micropay._contracts import RawCall, Sender, send_transaction
from micropay._files import write_json_atomically
from micropay._keccak import keccak256
from micropay.errors import MicropayError

CREATE2_PROXY = to_checksum_address("0x4e59b44847b379578588920ca78fbf26c0b4956c")
# One salt for all releases of the same bytecode: the address changes only with the code.
SALT = keccak256(b"micropay")
SINGLETONS = ("PaymentChannels", "Streams")


class DeploymentError(MicropayError, LookupError):
    """No deployment is recorded for this chain, or the registry file is unreadable."""


@dataclass(frozen=True)
class Deployment:
    """Where micropay lives on one chain."""

    chain_id: int
    channels: str
    streams: str
    deterministic: bool


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
    return Deployment(w3.eth.chain_id, channels, streams, deterministic)


class DeploymentRegistry:
    """Deployments per chain id, kept in a small JSON file."""

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
        data[str(deployment.chain_id)] = asdict(deployment)
        write_json_atomically(self.path, data, indent=2)

    def get(self, chain_id: int) -> Deployment:
        entry = self._read().get(str(chain_id))
        if entry is None:
            raise DeploymentError(
                f"no micropay deployment recorded for chain {chain_id} in {self.path}; "
                "run `micropay deploy` first"
            )
        try:
            return Deployment(
                chain_id=int(str(entry["chain_id"])),
                channels=to_checksum_address(str(entry["channels"])),
                streams=to_checksum_address(str(entry["streams"])),
                deterministic=bool(entry["deterministic"]),
            )
        except (KeyError, ValueError) as err:
            raise DeploymentError(f"malformed entry for chain {chain_id} in {self.path}") from err
