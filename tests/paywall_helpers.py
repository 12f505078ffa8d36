"""Helpers for the paywall and HTTP client tests: a throw-away chain and a real server.

The HTTP tests are ``standalone``: each module starts its own anvil (micropay.devnode) and
serves the app with uvicorn on a loopback port, because the in-process chain is too slow
for thousands of requests and a real server is what the paywall must survive.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from micropay._x402 import Receipt
from micropay.channels import ChannelClient
from micropay.devnode import anvil
from micropay.http_client import HttpPayer, PaymentTransport
from micropay.ledger import Ledger

MNEMONIC = "test test test test test test test test test test test junk"
Account.enable_unaudited_hdwallet_features()


def dev_key(index: int) -> LocalAccount:
    """One of anvil's funded accounts, as a local key (the SDK signs locally)."""
    account: LocalAccount = Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return account


@dataclass
class Chain:
    w3: Web3
    channels: ChannelClient
    deployer: LocalAccount
    site: LocalAccount
    readers: list[LocalAccount]


@contextlib.contextmanager
def chain() -> Iterator[Chain]:
    """anvil with PaymentChannels deployed; account 1 is the site, 2-9 are readers."""
    with anvil() as w3:
        deployer = dev_key(0)
        channels = ChannelClient.deploy(w3, deployer)
        yield Chain(w3, channels, deployer, dev_key(1), [dev_key(i) for i in range(2, 10)])


def fund(w3: Web3, source: LocalAccount, count: int, amount: int) -> list[LocalAccount]:
    """Fresh accounts holding ``amount`` wei each (anvil funds only ten)."""
    accounts = [Account.create() for _ in range(count)]
    nonce = w3.eth.get_transaction_count(source.address)
    gas_price, chain_id = w3.eth.gas_price, w3.eth.chain_id
    hashes = []
    for offset, account in enumerate(accounts):
        tx = {
            "to": account.address,
            "value": amount,
            "gas": 21_000,
            "gasPrice": gas_price,
            "nonce": nonce + offset,
            "chainId": chain_id,
        }
        hashes.append(w3.eth.send_raw_transaction(source.sign_transaction(tx).raw_transaction))
    for tx_hash in hashes:
        w3.eth.wait_for_transaction_receipt(tx_hash)
    return accounts


class Server:
    """uvicorn serving ``app`` on 127.0.0.1 in a background thread, for a ``with`` block."""

    def __init__(self, app: Any, **options: Any) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self.port: int = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # A client in a loaded test can sit longer than uvicorn's 5 s keep-alive between a
        # 402 and its paid resend (opening a channel on a busy chain); a server closing that
        # connection just as the resend goes out resets it. Tests are not about that race.
        options = {"timeout_keep_alive": 120, **options}
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", **options
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    def __enter__(self) -> Server:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


@contextlib.contextmanager
def paying(app: Any, payer: HttpPayer) -> Iterator[httpx.Client]:
    """A real uvicorn serving ``app`` and an httpx client paying through ``payer``."""
    with (
        Server(app) as server,
        httpx.Client(base_url=server.url, transport=PaymentTransport(payer)) as client,
    ):
        yield client


def receipt_of(response: httpx.Response) -> Receipt:
    """The ``PAYMENT-RESPONSE`` of a paid answer."""
    return Receipt.decode(response.headers["payment-response"])


@contextlib.contextmanager
def shared_ledger(w3_domain: Any, path: Any) -> Iterator[tuple[Ledger, Ledger]]:
    """Two ``Ledger`` objects on one SQLite file (``path``), for ``w3_domain``: what two
    worker processes of one site hold of one ledger."""
    url = f"sqlite:///{path}"
    with Ledger.open(url, w3_domain) as one, Ledger.open(url, w3_domain) as two:
        yield one, two
