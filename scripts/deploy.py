"""Compile and deploy micropay's contracts on the chosen network, then print the addresses.

    ape run deploy --network ethereum:local:test      # what `make demo` runs for now

On a local network the first test account pays; elsewhere ape asks for an account.
"""

from __future__ import annotations

from ape import accounts, chain, networks, project

# Deployed in this order; each entry is (contract, constructor arguments).
DEPLOYMENTS: list[tuple[str, tuple[object, ...]]] = [
    ("MockERC20Permit", ("micropay test dollar", "mUSD", 6)),
]


def main() -> None:
    if networks.provider.network.name == "local":
        deployer = accounts.test_accounts[0]
    else:
        deployer = accounts.load(input("ape account alias to deploy from: ").strip())
    print(f"network: {networks.provider.network.choice} (chain id {chain.chain_id})")
    print(f"deployer: {deployer.address}")
    for name, args in DEPLOYMENTS:
        contract = getattr(project, name).deploy(*args, sender=deployer)
        print(f"{name:<20} {contract.address}")
