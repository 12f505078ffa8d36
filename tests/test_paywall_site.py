"""The example content site on the chains the suite runs on, and on its embedded default.

The first test uses the session's chain (in-process, anvil, hardhat), so the paywall and
the client are checked on each; the app runs in process through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from eth_account import Account

from micropay.example_site import ARTICLES, create_site
from micropay.http_client import AsyncPaymentTransport, HttpPayer, PaymentPolicy

PRICE = 10**13


def read_all(site, payer) -> list[int]:
    async def go():
        transport = AsyncPaymentTransport(payer, httpx.ASGITransport(app=site.app))
        async with httpx.AsyncClient(base_url="http://site", transport=transport) as client:
            statuses = [(await client.get("/")).status_code]
            for slug in ARTICLES:
                statuses.append((await client.get(f"/articles/{slug}")).status_code)
            return statuses

    return asyncio.run(go())


def test_a_reader_pays_each_article_once_and_the_site_claims(w3, actors, channels):
    site = create_site(w3, site_key=actors.payee, contract=channels.address, price=PRICE)
    payer = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE))
    assert read_all(site, payer) == [200] * (1 + len(ARTICLES))
    [channel_id] = site.payee.book.channel_ids()
    site.payee.claim_all()
    assert channels.state(channel_id).claimed == len(ARTICLES) * PRICE


@pytest.mark.standalone
def test_the_example_site_runs_on_its_embedded_chain_by_default():
    site = create_site()
    reader = Account.create()
    funding = site.w3.eth.send_transaction(
        {"from": site.w3.eth.accounts[1], "to": reader.address, "value": 10**18}
    )
    site.w3.eth.wait_for_transaction_receipt(funding)
    payer = HttpPayer(site.w3, reader, PaymentPolicy(max_price=PRICE))
    assert read_all(site, payer) == [200] * (1 + len(ARTICLES))
    [channel_id] = site.payee.book.channel_ids()
    assert site.payee.book.best(channel_id).cumulative_amount == len(ARTICLES) * PRICE
