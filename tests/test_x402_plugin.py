"""micropay's ``channel`` inside the official x402 SDK: its client and server scheme plugins.

Real parts only: anvil, uvicorn on loopback, the x402 package's own client (``x402Client``
and its httpx transport), resource server and FastAPI middleware. An x402 client with the
client plugin pays micropay's paywall 100 times on one channel, settled in one claim; a
wallet that lost its state recovers through the corrective 402 without paying twice; an
x402 server with the server plugin takes payments from micropay's HttpPayer and from the
x402 client, and answers hostile payments with a 402 and the reason.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from paywall_helpers import Chain, Server, chain
from x402 import x402Client, x402ClientSync
from x402.http.clients import x402_httpx_transport, x402_requests
from x402.http.middleware.fastapi import PaymentMiddlewareASGI
from x402.http.types import RouteConfig
from x402.schemas import SettleResponse
from x402.server import x402ResourceServer
from x402_models import Recorder, check_required

from micropay._x402 import Reason, Receipt
from micropay.errors import PaymentHeaderError
from micropay.example_site import ARTICLES, ContentSite, create_site
from micropay.http_client import DepositPolicy, HttpPayer, PaymentPolicy, PaymentTransport
from micropay.payee import Payee
from micropay.vouchers import ZERO_ADDRESS, sign_voucher
from micropay.wallet import derive_session_key
from micropay.x402_plugin import ChannelScheme, ChannelServerScheme

pytestmark = pytest.mark.standalone

PRICE = 10**13
SLUG = next(iter(ARTICLES))
ETH = {"allowed_assets": [{"network": "eip155:*", "asset": ZERO_ADDRESS}]}


def test_receipts_read_in_micropays_form_and_in_the_sdks_with_the_fields_in_extra():
    signed = Receipt("eip155:31337", "0x" + "33" * 20, b"\x07" * 32, 5, 15, 85)
    sdk_form = signed.to_x402_json()
    assert set(sdk_form) == {"success", "transaction", "network", "payer", "amount", "extra"}
    assert SettleResponse.model_validate(sdk_form).extra["channelId"] == "0x" + "07" * 32
    for form in (signed.to_json(), sdk_form):
        assert Receipt.decode(_b64(form)) == signed
    doubled = {**sdk_form, "extra": {**sdk_form["extra"], "amount": "1"}}
    with pytest.raises(PaymentHeaderError):
        Receipt.decode(_b64(doubled))


def test_the_sdks_spend_controls_know_the_stablecoins_channels_may_be_in():
    base_usdc = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    assert ChannelScheme.find_default_asset(base_usdc, "eip155:8453")["symbol"] == "USDC"
    assert ChannelScheme.find_default_asset(ZERO_ADDRESS, "eip155:8453") is None


def _b64(obj: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


@pytest.fixture(scope="module")
def xplugin_chain() -> Iterator[Chain]:
    with chain() as c:
        yield c


@pytest.fixture(scope="module")
def xplugin_site(xplugin_chain: Chain) -> ContentSite:
    """micropay's own paywall (the example site), paid per article."""
    node = xplugin_chain
    return create_site(node.w3, site_key=node.site, contract=node.channels.address, price=PRICE)


def _payer(node: Chain, reader: int, store: Path) -> HttpPayer:
    return HttpPayer(node.w3, node.readers[reader], PaymentPolicy(max_price=PRICE), store=store)


def _agent(payer: HttpPayer) -> x402Client:
    """An x402 agent: the SDK's client, plus the one line that pays ``channel``."""
    client = x402Client()
    client.register("eip155:*", ChannelScheme(payer))
    client.set_spend_controls(ETH)  # the SDK passes ETH offers only when told to
    return client


async def _read(client: x402Client, url: str, times: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=x402_httpx_transport(client), timeout=30) as http:
        return [await http.get(url) for _ in range(times)]


def _balance(node: Chain, address: str) -> int:
    return int(node.w3.eth.get_balance(node.w3.to_checksum_address(address)))


def test_an_x402_client_pays_a_hundred_requests_on_one_channel_settled_once(
    xplugin_chain, xplugin_site, tmp_path
):
    node, site = xplugin_chain, xplugin_site
    payer = _payer(node, 0, tmp_path / "wallet")
    recorder = Recorder(site.app)
    sent = node.w3.eth.get_transaction_count(payer.account.address)
    with Server(recorder) as server:
        url = f"{server.url}/articles/{SLUG}"
        responses = asyncio.run(_read(_agent(payer), url, 100))
    assert [r.status_code for r in responses] == [200] * 100
    # The reader sent one transaction, the deposit that opened the channel.
    assert node.w3.eth.get_transaction_count(payer.account.address) == sent + 1
    assert all(ARTICLES[SLUG].title in r.text for r in responses)
    counts = recorder.check_all()  # every header, the SDK's included, is valid x402
    assert counts["payment-signature"] == counts["payment-response"] == 100
    assert counts["payment-required"] == 100  # each request's first ask, nothing refused
    (status,) = payer.channels()  # one channel opened, on chain, holding 100 vouchers
    config = status.channel.config
    assert status.chain.deposited == 100 * PRICE and status.spent == 100 * PRICE
    assert site.payee.book.best(config.channel_id).cumulative_amount == 100 * PRICE
    for response in responses[-1:]:
        receipt = Receipt.decode(response.headers["payment-response"])
        assert (receipt.channel_id, receipt.cumulative_amount) == (config.channel_id, 100 * PRICE)

    before = _balance(node, site.payee.account.address)
    claim = site.payee.claim_all()  # the site settles: one transaction for the 100 payments
    assert claim is not None and claim["status"] == 1
    gas = claim["gasUsed"] * claim["effectiveGasPrice"]
    assert _balance(node, site.payee.account.address) - before + gas == 100 * PRICE
    assert node.channels.state(config).claimed == 100 * PRICE
    assert site.payee.claim_all() is None  # nothing left to claim


def test_a_wallet_that_lost_its_state_recovers_through_the_corrective_402(
    xplugin_chain, xplugin_site, tmp_path
):
    node, site = xplugin_chain, xplugin_site
    recorder = Recorder(site.app)
    with Server(recorder) as server:
        url = f"{server.url}/articles/{SLUG}"
        first = _payer(node, 1, tmp_path / "first")
        assert [r.status_code for r in asyncio.run(_read(_agent(first), url, 10))] == [200] * 10
        (status,) = first.channels()
        channel_id = status.channel.config.channel_id
        assert site.payee.book.best(channel_id).cumulative_amount == 10 * PRICE

        # The same key, a fresh plugin and an empty wallet: it finds the channel on chain,
        # offers the claimed total (0) plus a price, is shown the site's view and pays once.
        recorder.seen.clear()
        fresh = _payer(node, 1, tmp_path / "lost")
        again = asyncio.run(_read(_agent(fresh), url, 2))
    assert [r.status_code for r in again] == [200, 200]
    assert site.payee.book.best(channel_id).cumulative_amount == 12 * PRICE  # two prices more
    refusals = [
        check_required(value)
        for name, value in recorder.seen
        if name == "payment-required" and check_required(value).error != "payment_required"
    ]
    assert [r.error for r in refusals] == [Reason.STALE_VOUCHER]
    assert refusals[0].extensions["channel"]["cumulativeAmount"] == str(10 * PRICE)
    assert recorder.check_all()["payment-signature"] == 3  # one refused, two paid
    (found,) = fresh.channels()
    assert found.channel.config.channel_id == channel_id and found.spent == 12 * PRICE


# -- the server plugin -----------------------------------------------------------------------


def _x402_site(node: Chain, book_key: int = 1) -> tuple[Any, ChannelServerScheme]:
    """An x402 FastAPI server that takes ``channel`` through micropay's payee and book."""
    channel = ChannelServerScheme(Payee(node.channels, node.site), min_deposit=10 * PRICE)
    server = x402ResourceServer([channel.facilitator])
    server.register(channel.network, channel)
    app = FastAPI()

    @app.get("/articles/{slug}")
    async def article(slug: str) -> HTMLResponse:
        if slug not in ARTICLES:
            return HTMLResponse("no such article", status_code=404)
        return HTMLResponse(f"<h1>{ARTICLES[slug].title}</h1>")

    routes = {
        "GET /articles/*": RouteConfig(
            accepts=channel.option(PRICE),
            description="One article, paid per read",
            mime_type="text/html",
        )
    }
    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)
    return app, channel


def test_an_x402_server_takes_channel_payments_from_both_clients(xplugin_chain, tmp_path):
    node = xplugin_chain
    app, channel = _x402_site(node)
    recorder = Recorder(app)
    with Server(recorder) as server:
        url = f"{server.url}/articles/{SLUG}"
        plain = httpx.get(url)
        assert plain.status_code == 402
        offer = check_required(plain.headers["payment-required"]).accepts[0]
        assert offer.scheme == "channel" and offer.extra["contract"] == node.channels.address
        assert offer.extra["minDeposit"] == str(10 * PRICE)

        # micropay's own client, unchanged, pays the x402 server and keeps its receipts.
        http_payer = _payer(node, 2, tmp_path / "http")
        with httpx.Client(transport=PaymentTransport(http_payer), timeout=30) as client:
            assert [client.get(url).status_code for _ in range(3)] == [200] * 3
        kept = http_payer.store.receipts.all()
        assert len(kept) == 3 and all(k.problem is None for k in kept)
        assert kept[-1].receipt.cumulative_amount == 3 * PRICE

        # An x402 agent with the client plugin, async and sync.
        agent_payer = _payer(node, 3, tmp_path / "agent")
        assert [r.status_code for r in asyncio.run(_read(_agent(agent_payer), url, 3))] == [200] * 3
        sync = x402ClientSync()
        sync.register("eip155:*", ChannelScheme(agent_payer))
        sync.set_spend_controls(ETH)
        with x402_requests(sync) as session:
            assert session.get(url).status_code == 200

        # A wallet that lost its state recovers here too, through extensions.channel.
        fresh = _payer(node, 3, tmp_path / "agent-lost")
        assert [r.status_code for r in asyncio.run(_read(_agent(fresh), url, 1))] == [200]
    counts = recorder.check_all()
    assert counts["payment-response"] == 3 + 3 + 1 + 1
    corrections = [
        model
        for name, value in recorder.seen
        if name == "payment-required"
        and (model := check_required(value)).error == Reason.STALE_VOUCHER
    ]
    assert len(corrections) == 1 and "channel" in (corrections[0].extensions or {})
    book = channel.paywall.book
    totals = sorted(
        book.best(s.channel.config.channel_id).cumulative_amount
        for s in (*http_payer.channels(), *agent_payer.channels())
    )
    assert totals == [3 * PRICE, 5 * PRICE]
    claim = channel.paywall.payee.claim_all()
    assert claim is not None and claim["status"] == 1
    assert sum(node.channels.state(s.channel.config).claimed for s in fresh.channels()) == 5 * PRICE


def _payment(recorder: Recorder) -> dict[str, Any]:
    last = [value for name, value in recorder.seen if name == "payment-signature"][-1]
    obj: dict[str, Any] = json.loads(base64.b64decode(last))
    return obj


def _send(url: str, obj: dict[str, Any]) -> httpx.Response:
    header = base64.b64encode(json.dumps(obj).encode()).decode()
    return httpx.get(url, headers={"payment-signature": header})


def test_hostile_payments_to_the_server_plugin_get_a_402_with_the_reason(xplugin_chain, tmp_path):
    node = xplugin_chain
    app, channel = _x402_site(node)
    recorder = Recorder(app)
    # A deposit of ten prices (the site's minimum), spent by ten paid requests.
    policy = PaymentPolicy(max_price=PRICE, deposit=DepositPolicy(requests=10))
    payer = HttpPayer(node.w3, node.readers[4], policy, store=tmp_path / "hostile")
    with Server(recorder) as server:
        url = f"{server.url}/articles/{SLUG}"
        with httpx.Client(transport=PaymentTransport(payer), timeout=30) as client:
            assert [client.get(url).status_code for _ in range(10)] == [200] * 10
        (status,) = payer.channels()
        config = status.channel.config
        assert status.chain.deposited == 10 * PRICE
        good = _payment(recorder)  # the tenth voucher, taken
        key = derive_session_key(
            node.readers[4],
            node.w3.eth.chain_id,
            node.channels.address,
            channel.pay_to,
            ZERO_ADDRESS,
            0,
        )

        def with_voucher(total: int, signer: bytes = bytes(key.key)) -> dict[str, Any]:
            voucher = sign_voucher(channel.paywall.domain, config.channel_id, total, signer)
            obj = json.loads(json.dumps(good))
            obj["payload"]["cumulativeAmount"] = str(total)
            obj["payload"]["signature"] = "0x" + voucher.signature.hex()
            return obj

        stranger = bytes(node.readers[5].key)
        wrong_payee = json.loads(json.dumps(good))
        wrong_payee["payload"]["channel"]["payee"] = node.readers[6].address
        no_channel = json.loads(json.dumps(good))
        del no_channel["payload"]["channel"]
        cases = {
            Reason.INVALID_SIGNATURE: with_voucher(11 * PRICE, stranger),
            Reason.WRONG_PAYEE: wrong_payee,
            Reason.INSUFFICIENT_DEPOSIT: with_voucher(11 * PRICE),  # the next, over the deposit
            Reason.CUMULATIVE_MISMATCH: with_voucher(13 * PRICE),
            Reason.STALE_VOUCHER: good,  # the voucher already taken, sent again
            Reason.INVALID_PAYLOAD: no_channel,
        }
        for reason, obj in cases.items():
            answer = _send(url, obj)
            assert answer.status_code == 402, (reason, answer.status_code, answer.text)
            assert check_required(answer.headers["payment-required"]).error == reason
        junk = httpx.get(url, headers={"payment-signature": "not base64!"})
        assert junk.status_code == 402 and "payment-required" in junk.headers
        # None of them was charged: the book holds the ten paid requests.
        assert channel.paywall.book.best(config.channel_id).cumulative_amount == 10 * PRICE
