"""Deploy micropay's two singletons, PaymentChannels and Streams, with ape; print where.

    ape run deploy --network ethereum:local:foundry
    ape run deploy --network ethereum:sepolia:node     # asks for an ape account alias

Where the deterministic deployment proxy exists (anvil, most public chains) both go through
it with CREATE2 and micropay's fixed salt, from the bytecode the package ships, so they land
at the addresses ``micropay deploy`` uses on every such chain (and a second run finds them
there). Elsewhere (hardhat, ape's in-process chain) they are deployed normally. On a local
network the first test account pays; elsewhere the ape account named by
$MICROPAY_DEPLOYER, or asked for.
"""

from __future__ import annotations

import os

from ape import accounts, chain, networks, project

from micropay._artifacts import load_artifact
from micropay.deployments import CREATE2_PROXY, SALT, SINGLETONS, create2_address


def _deploy(name: str, deployer: object, deterministic: bool) -> str:
    if not deterministic:
        return str(getattr(project, name).deploy(sender=deployer).address)
    init_code = bytes.fromhex(load_artifact(name).bytecode[2:])
    target = create2_address(init_code)
    if not chain.provider.get_code(target):
        deployer.transfer(CREATE2_PROXY, 0, data=SALT + init_code)  # type: ignore[attr-defined]
        if not chain.provider.get_code(target):
            raise RuntimeError(f"the CREATE2 proxy did not create {name} at {target}")
    return target


def main() -> None:
    if networks.provider.network.name == "local":
        deployer = accounts.test_accounts[0]
    else:
        alias = os.environ.get("MICROPAY_DEPLOYER") or input("ape account alias: ").strip()
        deployer = accounts.load(alias)
    deterministic = bool(chain.provider.get_code(CREATE2_PROXY))
    print(f"network: {networks.provider.network.choice} (chain id {chain.chain_id})")
    print(f"deployer: {deployer.address}")
    print(f"deterministic (CREATE2): {deterministic}")
    for name in SINGLETONS:
        print(f"{name:<16} {_deploy(name, deployer, deterministic)}")
