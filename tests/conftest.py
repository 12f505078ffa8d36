"""Shared fixtures. The suite runs under ``ape test`` once per network (tools/run_tests.py);
tests marked ``offchain`` need no chain and run only in the in-process pass."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The throw-away PostgreSQL server and the both-back-ends `ledger_url` fixture.
pytest_plugins = ["ledger_fixtures"]

ROOT = Path(__file__).resolve().parent.parent

# py-solc-x finds the pinned compiler here (tools/compiler.py fills it); set it for runs that
# do not come through the Makefile too.
os.environ.setdefault("SOLCX_BINARY_PATH", str(ROOT / ".solcx"))


def _decode_hardhat_reverts_under_web3_v7() -> None:
    """ape-hardhat 0.8.5 parses a revert's data out of ``exception.args[0]``, which web3 6 gave
    as the RPC error dict and web3 7 gives as that dict's ``str()``; custom errors then fail
    to decode ("Non-hexadecimal digit found"). Hand it the dict again."""
    from ape_hardhat.provider import HardhatProvider

    original = HardhatProvider.get_virtual_machine_error
    if getattr(original, "_micropay_shim", False):
        return

    def get_virtual_machine_error(self, exception, **kwargs):  # type: ignore[no-untyped-def]
        rpc_response = getattr(exception, "rpc_response", None)
        if isinstance(rpc_response, dict) and isinstance(rpc_response.get("error"), dict):
            exception = type(exception)(rpc_response["error"])
        return original(self, exception, **kwargs)

    get_virtual_machine_error._micropay_shim = True  # type: ignore[attr-defined]
    HardhatProvider.get_virtual_machine_error = get_virtual_machine_error  # type: ignore[method-assign]


_decode_hardhat_reverts_under_web3_v7()


def pytest_report_header(config: pytest.Config) -> str:
    return f"micropay network: {os.environ.get('MICROPAY_TEST_NETWORK', 'default (in-process)')}"


@pytest.fixture(scope="session")
def deployer(accounts):  # type: ignore[no-untyped-def]
    return accounts[0]


@pytest.fixture
def token(project, deployer):  # type: ignore[no-untyped-def]
    """A fresh 18-decimal ERC-20 with EIP-2612 permit."""
    return project.MockERC20Permit.deploy("Mock Token", "MOCK", 18, sender=deployer)


# -- SDK fixtures: the web3 the SDK uses, on whichever network ape is connected to ------------


@pytest.fixture(scope="session")
def w3(networks):  # type: ignore[no-untyped-def]
    """The provider's Web3: the SDK talks to the same node ape started."""
    return networks.provider.web3


@pytest.fixture(scope="session")
def keys(accounts):  # type: ignore[no-untyped-def]
    """eth-account keys of ape's funded test accounts: the SDK signs locally on every network."""
    from eth_account import Account

    return [Account.from_key(accounts[i].private_key) for i in range(len(accounts))]


@pytest.fixture(scope="session")
def actors(keys):  # type: ignore[no-untyped-def]
    """Named roles: deployer, payer, payee, relayer, stranger."""
    from types import SimpleNamespace

    return SimpleNamespace(
        deployer=keys[0], payer=keys[1], payee=keys[2], relayer=keys[3], stranger=keys[4]
    )


@pytest.fixture(scope="session")
def channels(w3, actors):  # type: ignore[no-untyped-def]
    """One PaymentChannels deployment for the session (ape isolates state per test)."""
    from micropay.channels import ChannelClient

    return ChannelClient.deploy(w3, actors.deployer)


@pytest.fixture(scope="session")
def usd(w3, actors, channels):  # type: ignore[no-untyped-def]
    """A 6-decimal ERC-20 the payer holds plenty of and has approved to the channels."""
    from micropay.tokens import TokenClient

    token = TokenClient.deploy(w3, actors.deployer, "Test USD", "tUSD", 6)
    token.mint(actors.payer.address, 10**15, actors.deployer)
    token.approve(channels.address, 2**256 - 1, actors.payer)
    return token
