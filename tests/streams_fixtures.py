"""Fixtures and helpers for the stream tests; each test module imports the ones it uses.

Everything goes through the SDK (:class:`micropay.streams.StreamsClient`) on the Web3 of
whichever node ape runs, with transactions from node-unlocked test accounts. Time moves
only with the node's own controls: ``at(t)`` makes the next transaction run at ``t``,
``mine_at(t)`` mines an empty block at ``t`` so views read the chain at that time.

ETH balances are checked on accounts that did not send the transaction (a third party
triggers the withdrawal, or the recipient names another address), so gas never blurs an
amount.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import ape
import pytest
from web3 import Web3

from micropay.stream_model import FixedStreamState, OpenStreamState
from micropay.streams import ETH, FixedStreamConfig, OpenStreamConfig, StreamsClient
from micropay.tokens import TokenClient

DAY = 86_400
YEAR = 365 * DAY
UNLIMITED = 2**256 - 1
_salts = itertools.count(1)


@dataclass(frozen=True)
class People:
    """Node-unlocked addresses in the roles the stream tests need."""

    deployer: str
    sender: str
    recipient: str
    funder: str
    stranger: str
    other: str


@pytest.fixture(scope="session")
def people(accounts: Any) -> People:
    return People(*(accounts[i].address for i in range(6)))


@pytest.fixture(scope="session")
def streams(w3: Web3, people: People) -> StreamsClient:
    """One Streams deployment for the session (ape isolates state per test)."""
    return StreamsClient.deploy(w3, people.deployer)


def _funded_token(
    w3: Web3, people: People, streams: StreamsClient, decimals: int, supply: int
) -> TokenClient:
    token = TokenClient.deploy(w3, people.deployer, f"Stream {decimals}", f"S{decimals}", decimals)
    for holder in (people.sender, people.funder, people.stranger):
        token.mint(holder, supply, people.deployer)
        token.approve(streams.address, UNLIMITED, holder)
    # Recipients already hold some, as in the benchmark's steady state.
    token.mint(people.recipient, 1, people.deployer)
    token.mint(people.other, 1, people.deployer)
    return token


@pytest.fixture(scope="session")
def tok18(w3: Web3, people: People, streams: StreamsClient) -> TokenClient:
    """An 18-decimal ERC-20 the sender, funder and stranger hold 2**200 of, approved."""
    return _funded_token(w3, people, streams, 18, 2**200)


@pytest.fixture(scope="session")
def tok6(w3: Web3, people: People, streams: StreamsClient) -> TokenClient:
    """A 6-decimal ERC-20 (USDC-like), approved like ``tok18``."""
    return _funded_token(w3, people, streams, 6, 10**18)


class FeeToken(TokenClient):
    """The fee-on-transfer test token (contracts/test/FeeOnTransferToken.sol), 1% here."""

    ARTIFACT = "FeeOnTransferToken"


@pytest.fixture(scope="session")
def fee_token(w3: Web3, people: People, streams: StreamsClient) -> FeeToken:
    token = FeeToken.deploy(w3, people.deployer, 100)
    for holder in (people.sender, people.funder):
        token.mint(holder, 10**30, people.deployer)
        token.approve(streams.address, UNLIMITED, holder)
    return token


# -- time ------------------------------------------------------------------------------------


def now(w3: Web3) -> int:
    """The latest block's timestamp: the time views are evaluated at."""
    return int(w3.eth.get_block("latest")["timestamp"])


def at(time: int) -> None:
    """Make the next transaction's block carry ``time``."""
    ape.chain.pending_timestamp = time


def mine_at(time: int) -> None:
    """Mine an empty block at ``time`` so views read the chain then."""
    ape.chain.mine(timestamp=time)


# -- streams ---------------------------------------------------------------------------------


def salt() -> int:
    return next(_salts)


def fixed_config(
    people: People,
    token: str = ETH,
    *,
    amount: int = 10**18,
    start: int,
    end: int,
    cliff: int = 0,
    cancelable: bool = True,
    recipient: str | None = None,
) -> FixedStreamConfig:
    return FixedStreamConfig(
        sender=people.sender,
        recipient=recipient or people.recipient,
        token=token,
        amount=amount,
        start=start,
        cliff=cliff,
        end=end,
        cancelable=cancelable,
        salt=salt(),
    )


def open_config(people: People, token: str = ETH, recipient: str | None = None) -> OpenStreamConfig:
    return OpenStreamConfig(people.sender, recipient or people.recipient, token, salt())


def revert_args(error: Any) -> dict[str, Any]:
    """A revert's decoded arguments with addresses checksummed, for comparing."""
    return {
        k: Web3.to_checksum_address(v) if isinstance(v, str) and len(v) == 42 else v
        for k, v in error.arguments.items()
    }


def balance(w3: Web3, token: str | TokenClient, holder: str) -> int:
    """ETH (token == ETH) or token balance."""
    if isinstance(token, TokenClient):
        return token.balance_of(holder)
    return int(w3.eth.get_balance(Web3.to_checksum_address(holder)))


def assert_fixed_matches_model(
    streams: StreamsClient, config: FixedStreamConfig, model: FixedStreamState, time: int
) -> None:
    """The stored state, the amounts and the status equal the model's at ``time``."""
    assert streams.fixed_state(config) == model
    amounts = streams.fixed_amounts(config)
    assert amounts.streamed == model.streamed_at(config.schedule, time)
    assert amounts.withdrawable == model.withdrawable_at(config.schedule, time)
    assert streams.fixed_status(config) == model.status_at(config.schedule, time)


def assert_open_matches_model(
    streams: StreamsClient, config: OpenStreamConfig, model: OpenStreamState, time: int
) -> None:
    assert streams.open_state(config) == model
    amounts = streams.open_amounts(config)
    assert amounts.streamed == model.streamed_at(time)
    assert amounts.withdrawable == model.withdrawable_at(time)
    assert amounts.refundable == model.refundable_at(time)
    assert amounts.debt == model.debt_at(time)
    assert streams.open_status(config) == model.status_at(time)
