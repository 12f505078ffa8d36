"""The example content site under uvicorn on anvil, paid for by the HTTP clients.

A reader pays for 200 articles and the site settles: every wei is accounted for on chain.
Fifty readers in parallel pay twenty articles each against one server: the book holds
exactly the sum of the prices served.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from paywall_helpers import Server, chain, fund

from micropay._x402 import Receipt
from micropay.example_site import ARTICLES, create_site
from micropay.http_client import HttpPayer, PaymentPolicy, PaymentTransport

pytestmark = pytest.mark.standalone

PRICE = 10**13


@pytest.fixture(scope="module")
def node() -> Iterator:
    with chain() as c:
        yield c


def gas_paid(w3, receipt) -> int:
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


def test_a_reader_pays_200_articles_and_the_chain_adds_up_to_the_wei(node, tmp_path):
    w3 = node.w3
    site = create_site(w3, site_key=node.site, contract=node.channels.address, price=PRICE)
    reader = node.readers[0]
    before = {a: w3.eth.get_balance(a) for a in (reader.address, node.site.address)}
    contract_before = w3.eth.get_balance(node.channels.address)
    payer = HttpPayer(w3, reader, PaymentPolicy(max_price=PRICE), store=tmp_path / "reader.json")
    slugs = itertools.cycle(ARTICLES)
    receipts = []
    with (
        Server(site.app) as server,
        httpx.Client(base_url=server.url, transport=PaymentTransport(payer)) as client,
    ):
        assert client.get("/").status_code == 200  # the free page costs nothing
        for _ in range(200):
            response = client.get(f"/articles/{next(slugs)}")
            assert response.status_code == 200
            receipts.append(Receipt.decode(response.headers["payment-response"]))
        assert client.get("/articles/no-such-article").status_code == 404  # not charged
    [channel_id] = site.payee.book.channel_ids()
    assert [r.cumulative_amount for r in receipts] == [PRICE * n for n in range(1, 201)]
    assert site.payee.book.best(channel_id).cumulative_amount == 200 * PRICE

    # What the reader spent on gas: its deposit (and any top-up) transactions.
    reader_gas = sum(
        gas_paid(w3, w3.eth.get_transaction_receipt(tx["hash"]))
        for number in range(1, w3.eth.block_number + 1)
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]
        if tx["from"] == reader.address
    )
    deposited = site.channels.state(channel_id).deposited
    claim = site.payee.claim_all()
    close = site.payee.close(channel_id)
    site_gas = gas_paid(w3, claim) + gas_paid(w3, close)

    assert site.channels.state(channel_id).claimed == 200 * PRICE
    assert w3.eth.get_balance(node.site.address) - before[node.site.address] == (
        200 * PRICE - site_gas
    )
    assert before[reader.address] - w3.eth.get_balance(reader.address) == 200 * PRICE + reader_gas
    assert w3.eth.get_balance(node.channels.address) == contract_before
    assert deposited >= 200 * PRICE


def test_fifty_readers_in_parallel_are_charged_exactly_what_they_were_served(node):
    w3 = node.w3
    site = create_site(w3, site_key=node.site, contract=node.channels.address, price=PRICE)
    readers = fund(w3, node.deployer, 50, 10**18)
    served: list[int] = []

    def read_twenty(reader) -> list[int]:
        payer = HttpPayer(w3, reader, PaymentPolicy(max_price=PRICE))
        with httpx.Client(
            base_url=server.url, transport=PaymentTransport(payer), timeout=60
        ) as client:
            charged = []
            for n in range(20):
                response = client.get(f"/articles/{list(ARTICLES)[n % len(ARTICLES)]}")
                assert response.status_code == 200, response.text
                charged.append(Receipt.decode(response.headers["payment-response"]).amount)
            return charged

    with Server(site.app) as server, ThreadPoolExecutor(50) as pool:
        for charged in pool.map(read_twenty, readers):
            served.extend(charged)

    book = site.payee.book
    held = [book.best(cid).cumulative_amount for cid in book.channel_ids()]
    assert len(served) == 1_000
    assert len(held) == 50
    assert held == [20 * PRICE] * 50
    assert sum(held) == sum(served) == 1_000 * PRICE
