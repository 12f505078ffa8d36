"""Connecting to a chain by name: the embedded in-process chain, a local node, or a URL.

``embedded`` runs eth-tester inside this process (for demos and trying things; it needs
the ``eth-tester[py-evm]`` package, which the dev install has). ``anvil`` and ``hardhat``
connect to a node on 127.0.0.1:8545 (``micropay node`` starts one; MICROPAY_LOCAL_RPC
points elsewhere) or, with
``start_node=True``, start a throw-away one. Anything starting with ``http`` is an RPC URL.

Local networks come with the well-known test mnemonic's keys, funded on every local chain
here. So does an RPC URL on loopback (127.0.0.1, localhost, ::1) that serves a dev chain:
chain id 31337 (anvil, hardhat) with the mnemonic's first account funded. Any other URL
(and ``anvil`` or ``hardhat`` whose MICROPAY_LOCAL_RPC is off this machine) has none, and
keys must come from the caller: a node elsewhere never gets a key whose secret everyone
knows.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3

from micropay.errors import NetworkError

TEST_MNEMONIC = "test test test test test test test test test test test junk"
LOCAL_RPC = "http://127.0.0.1:8545"  # MICROPAY_LOCAL_RPC overrides it
NETWORK_NAMES = ("embedded", "anvil", "hardhat")
DEV_CHAIN_ID = 31337  # anvil's and hardhat's


def dev_keys(count: int = 10) -> tuple[LocalAccount, ...]:
    """The test mnemonic's first ``count`` keys: funded on anvil, hardhat and embedded."""
    Account.enable_unaudited_hdwallet_features()
    return tuple(
        Account.from_mnemonic(TEST_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        for i in range(count)
    )


@dataclass(frozen=True)
class Connection:
    """A connected Web3 and what the network offers on top of it."""

    name: str
    w3: Web3
    dev_keys: tuple[LocalAccount, ...]
    _advance: Callable[[int], None] | None = None

    @property
    def is_local(self) -> bool:
        return self._advance is not None

    def advance(self, seconds: int) -> None:
        """Move the chain's clock forward (local networks only) and mine a block."""
        if self._advance is None:
            raise NetworkError(f"cannot move time on {self.name}: it is not a local chain")
        self._advance(seconds)


def rpc_advance(w3: Web3) -> Callable[[int], None]:
    """Move a dev node's clock (anvil, hardhat) with evm_increaseTime and mine a block."""

    def advance(seconds: int) -> None:
        w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    return advance


def embedded_chain() -> Connection:
    """A fresh in-process chain (eth-tester) with the test mnemonic's accounts funded."""
    try:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3.providers.eth_tester import EthereumTesterProvider
    except ImportError as err:  # pragma: no cover - the dev install always has it
        raise NetworkError(
            "the embedded chain needs eth-tester with py-evm: pip install 'eth-tester[py-evm]'"
        ) from err
    backend = PyEVMBackend.from_mnemonic(TEST_MNEMONIC, num_accounts=10, hd_path="m/44'/60'/0'/0")
    tester = EthereumTester(backend)
    w3 = Web3(EthereumTesterProvider(tester))

    def advance(seconds: int) -> None:
        latest = w3.eth.get_block("latest")["timestamp"]
        # eth-tester mines the travelled-to block one second early; ask for one more.
        tester.time_travel(int(latest) + seconds + 1)

    return Connection("embedded", w3, dev_keys(), advance)


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` names this machine (127.0.0.0/8, ::1, localhost): only such a node can
    be a throw-away dev chain of ours rather than someone's real one."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_dev_chain(w3: Web3) -> bool:
    """Whether the node is a dev chain funding the test mnemonic: chain id 31337 and its
    first account unlocked on the node or holding ether."""
    if w3.eth.chain_id != DEV_CHAIN_ID:
        return False
    first = dev_keys(1)[0].address
    try:
        unlocked = first in w3.eth.accounts
    except Exception:  # a node without eth_accounts: the balance decides
        unlocked = False
    return unlocked or w3.eth.get_balance(first) > 0


def _http(url: str, name: str, local: bool) -> Connection:
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 30}))
    if not w3.is_connected():
        hint = " (start one with `micropay node " + name + "`)" if local else ""
        raise NetworkError(f"no node answers at {url}{hint}")
    # A node named anvil or hardhat is taken for a dev chain, a URL only once it shows it is
    # one; neither gets the test keys off this machine.
    local = is_loopback_url(url) and (local or is_dev_chain(w3))
    return Connection(name, w3, dev_keys() if local else (), rpc_advance(w3) if local else None)


@contextmanager
def connect(network: str, *, start_node: bool = False) -> Iterator[Connection]:
    """Connect to ``network`` (a name in NETWORK_NAMES or an http(s) URL)."""
    if network == "embedded":
        yield embedded_chain()
    elif network in ("anvil", "hardhat"):
        if start_node:
            from micropay import devnode

            starter: Any = devnode.anvil if network == "anvil" else devnode.hardhat
            with starter() as w3:
                yield Connection(network, w3, dev_keys(), rpc_advance(w3))
        else:
            yield _http(os.environ.get("MICROPAY_LOCAL_RPC", LOCAL_RPC), network, local=True)
    elif network.startswith(("http://", "https://")):
        yield _http(network, network, local=False)
    else:
        raise NetworkError(
            f"unknown network {network!r}: use {', '.join(NETWORK_NAMES)} or an http(s) URL"
        )
