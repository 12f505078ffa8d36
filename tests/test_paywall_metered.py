"""Metered routes ("up to N") and refunds, end to end: a real uvicorn on loopback, the real
HttpPayer, the real contract on anvil and a SQLite ledger.

The handler says what it used (``request.state.payment.charge``); the voucher is the
charged total plus N; receipts carry the charge, the charged total, the ceiling and the
refunded total; settlement claims the charged total. A site that settles its best ceiling
instead takes at most one request's slack from the payer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from paywall_helpers import Server, chain, fund, paying, receipt_of
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from micropay._x402 import PaymentRequired, Receipt
from micropay.errors import ChargeError, ChargeReceiptError, RefundError
from micropay.http_client import HttpPayer, PaymentPolicy
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall, PricedRoute, UpTo

pytestmark = pytest.mark.standalone
pytest_plugins = ["ledger_fixtures"]

MAXIMUM = 10**13
PRICE = 10**12


@pytest.fixture(scope="module")
def metered_node() -> Iterator:
    with chain() as c:
        yield c


async def search(request: Request) -> JSONResponse:
    """Charges what the query says it used; ``bad`` tries a hostile charge first."""
    payment = request.state.payment
    refused = None
    bad = request.query_params.get("bad")
    if bad is not None:
        hostile = {"over": MAXIMUM + 1, "negative": -1, "float": 1.5, "bool": True}[bad]
        try:
            payment.charge(hostile)
        except ChargeError as err:
            refused = type(err).__name__
    used = request.query_params.get("used")
    if used is not None:
        payment.charge(int(used))
    if request.query_params.get("twice") is not None:
        payment.charge(int(request.query_params["twice"]))  # the last call stands
    status = int(request.query_params.get("status", "200"))
    return JSONResponse({"refused": refused, "maximum": payment.amount}, status_code=status)


async def article(request: Request) -> PlainTextResponse:
    try:
        request.state.payment.charge(1)
    except ChargeError:
        return PlainTextResponse("fixed price")
    return PlainTextResponse("charged on a fixed route?")


def metered_site(node, tmp_path, name="site.db", url=None):
    ledger = Ledger.open(url or f"sqlite:///{tmp_path / name}", node.channels.domain)
    payee = Payee(node.channels, node.site, book=ledger, confirmations=0)
    app = Starlette(routes=[Route("/search", search), Route("/articles/{slug}", article)])
    paywall = Paywall(
        app,
        payee=payee,
        prices={"GET /search": UpTo(MAXIMUM), "GET /articles/{slug}": PRICE},
        min_deposit=10 * MAXIMUM,
    )
    return paywall, payee, ledger


def reader(node, index, tmp_path) -> HttpPayer:
    return HttpPayer(
        node.w3,
        node.readers[index],
        PaymentPolicy(max_price=MAXIMUM),
        store=tmp_path / f"reader{index}.json",
    )


def test_route_spellings_and_the_402_offer_say_metered(metered_node, tmp_path):
    assert PricedRoute.parse("GET /a", MAXIMUM, metered=True).metered
    assert PricedRoute.parse("GET /a", UpTo(MAXIMUM)).price == MAXIMUM
    assert not PricedRoute.parse("GET /a", MAXIMUM).metered
    with pytest.raises(ValueError, match="channel' only"):
        PricedRoute.parse("GET /a", UpTo(5), schemes=("channel", "exact"))
    paywall, _, ledger = metered_site(metered_node, tmp_path)
    with Server(paywall) as server, httpx.Client(base_url=server.url) as client:
        metered = PaymentRequired.decode(client.get("/search").headers["payment-required"])
        fixed = PaymentRequired.decode(client.get("/articles/a").headers["payment-required"])
    [offer] = metered.offers
    assert offer.metered and offer.price == MAXIMUM
    assert offer.to_json()["extra"]["metered"] is True
    assert "metered" not in fixed.offers[0].to_json()["extra"]  # fixed offers as before
    ledger.close()


def test_a_metered_reader_pays_what_each_request_used_and_settlement_claims_it(
    metered_node, tmp_path, ledger_url
):
    """On SQLite and on PostgreSQL, each with a fresh reader."""
    node = metered_node
    paywall, payee, ledger = metered_site(node, tmp_path, url=ledger_url)
    [account] = fund(node.w3, node.deployer, 1, 10**18)
    payer = HttpPayer(
        node.w3, account, PaymentPolicy(max_price=MAXIMUM), store=tmp_path / "fresh.json"
    )
    used = [3 * PRICE, 0, MAXIMUM, PRICE // 7, 1]
    with paying(paywall, payer) as client:
        receipts = []
        charged = best = 0
        for amount in used:
            response = client.get("/search", params={"used": amount})
            assert response.status_code == 200
            receipt = receipt_of(response)
            assert receipt.amount == amount
            # Signed on the charged total, or one above the best voucher when that would not
            # rise above it (after the zero charge): no voucher is ever taken twice.
            assert receipt.ceiling == max(charged + MAXIMUM, best + 1 if best else 0)
            assert receipt.ceiling > best
            best = receipt.ceiling
            charged += amount
            assert receipt.cumulative_amount == charged
            assert receipt.signed is not None and receipt.signed.amount == amount
            receipts.append(receipt)
        # No charge called: 0. A non-2xx answer: nothing, whatever the handler said.
        receipts.append(receipt_of(client.get("/search")))
        assert receipts[-1].amount == 0
        assert client.get("/search", params={"used": 5, "status": 404}).status_code == 404
        # A second call replaces the first.
        receipts.append(receipt_of(client.get("/search", params={"used": 9, "twice": 4})))
        assert receipts[-1].amount == 4
        charged += 4
        # A fixed route on the same channel charges its price over the charged total.
        fixed = client.get("/articles/x")
        assert fixed.text == "fixed price" and receipt_of(fixed).amount == PRICE
        best = max(r.ceiling for r in receipts)
        assert receipt_of(fixed).ceiling == max(charged + PRICE, best + 1)
        receipts.append(receipt_of(fixed))
        charged += PRICE
    [channel_id] = ledger.channel_ids()
    held = ledger.held(channel_id)
    assert held.charged == charged
    assert held.ceiling == max(r.ceiling for r in receipts)  # the best voucher is kept
    payee.claim_all()
    assert node.channels.state(channel_id).claimed == charged  # the charged total, not a ceiling
    ledger.close()


def test_hostile_charges_raise_in_the_handler_and_charge_nothing(metered_node, tmp_path):
    node = metered_node
    paywall, _, ledger = metered_site(node, tmp_path)
    payer = reader(node, 1, tmp_path)
    with paying(paywall, payer) as client:
        for bad in ("over", "negative", "float", "bool"):
            response = client.get("/search", params={"bad": bad})
            assert response.json()["refused"] == "ChargeError"
            assert receipt_of(response).amount == 0
        response = client.get("/search", params={"bad": "over", "used": 7})
        assert receipt_of(response).amount == 7  # a valid charge after a refused one stands
    [channel_id] = ledger.channel_ids()
    assert ledger.held(channel_id).charged == 7
    ledger.close()


def test_a_refund_lowers_the_charged_total_and_the_next_receipt_shows_it(metered_node, tmp_path):
    node = metered_node
    paywall, payee, ledger = metered_site(node, tmp_path)
    payer = reader(node, 2, tmp_path)
    with paying(paywall, payer) as client:
        client.get("/search", params={"used": 5 * PRICE})
        [channel_id] = ledger.channel_ids()
        refund = payee.refund(channel_id, PRICE, "a wrong answer")
        assert (refund.charged, refund.refunded) == (4 * PRICE, PRICE)
        # The paywall's own refund (awaitable: the chain read runs in a thread) stacks on it.
        refund = asyncio.run(paywall.refund(channel_id, PRICE, "late"))
        assert (refund.charged, refund.refunded) == (3 * PRICE, 2 * PRICE)
        with pytest.raises(RefundError) as err:
            asyncio.run(paywall.refund(channel_id, 3 * PRICE + 1, "more than charged"))
        assert err.value.reason == "exceeds_refundable"
        # The reader's next request is signed over the old total; the site shows it the
        # lowered one (a 402 view), the reader resyncs and pays over the refunded total.
        receipt = receipt_of(client.get("/search", params={"used": PRICE}))
        assert receipt.refunded == 2 * PRICE
        assert receipt.cumulative_amount == 4 * PRICE
        # Refunds never go below what is claimed on chain.
        payee.claim_all()
        with pytest.raises(RefundError) as err:
            payee.refund(channel_id, 1, "after the claim")
        assert err.value.reason == "exceeds_refundable"
        with pytest.raises(RefundError) as err:
            payee.refund(b"\x07" * 32, 1, "whose?")
        assert err.value.reason == "unknown_channel"
        with pytest.raises(RefundError) as err:
            payee.refund(channel_id, 0, "nothing")
        assert err.value.reason == "invalid_amount"
        receipt = receipt_of(client.get("/search", params={"used": PRICE}))
        assert receipt.cumulative_amount == 5 * PRICE and receipt.refunded == 2 * PRICE
    refunds = ledger.refunds(channel_id)
    assert [(r.amount, r.reason, r.charged) for r in refunds] == [
        (PRICE, "a wrong answer", 4 * PRICE),
        (PRICE, "late", 3 * PRICE),
    ]
    ledger.close()


def test_an_on_chain_refund_returns_unspent_deposit_and_charges_stay_within_it(
    metered_node, tmp_path
):
    node = metered_node
    paywall, payee, ledger = metered_site(node, tmp_path)
    payer = reader(node, 3, tmp_path)
    with paying(paywall, payer) as client:
        client.get("/search", params={"used": PRICE})
        [channel_id] = ledger.channel_ids()
        state = node.channels.state(channel_id)
        unspent = state.deposited - PRICE
        with pytest.raises(RefundError) as err:
            payee.refund_on_chain(channel_id, unspent + 1)
        assert err.value.reason == "exceeds_unspent"
        # Leave room for exactly one more maximum: the cache is read again after it.
        payee.refund_on_chain(channel_id, unspent - MAXIMUM)
        assert payee.cached_state(channel_id).deposited == PRICE + MAXIMUM
        assert receipt_of(client.get("/search", params={"used": 2})).amount == 2
    payee.claim_all()
    assert node.channels.state(channel_id).claimed == PRICE + 2
    ledger.close()


class _LyingReceipts:
    """A hostile site: rewrites each PAYMENT-RESPONSE's charged total (unsigned, as sites
    before signed receipts sent them) by ``shift``."""

    def __init__(self, app, shift: int) -> None:
        self.app, self.shift = app, shift

    async def __call__(self, scope, receive, send):
        async def lying(message):
            if message["type"] == "http.response.start":
                headers = []
                for name, value in message.get("headers", ()):
                    if name == b"payment-response":
                        receipt = Receipt.decode(value)
                        total = receipt.cumulative_amount + self.shift
                        value = replace(receipt, signed=None, cumulative_amount=total).encode()
                        value = value.encode("ascii")
                    headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, lying)


@pytest.mark.parametrize("shift", [MAXIMUM, 1, -1])
def test_the_client_refuses_a_receipt_above_the_ceiling_or_off_its_charge(
    metered_node, tmp_path, shift
):
    node = metered_node
    paywall, _, ledger = metered_site(node, tmp_path, name=f"liar{shift}.db")
    payer = reader(node, 4 + (shift > 0) + (shift == MAXIMUM), tmp_path)
    with paying(_LyingReceipts(paywall, shift), payer) as client:
        with pytest.raises(ChargeReceiptError) as err:
            client.get("/search", params={"used": 10})
        assert err.value.site
        with pytest.raises(Exception, match="not used until it is resynchronised"):
            client.get("/search", params={"used": 10})
    ledger.close()


def test_a_site_settling_its_best_ceiling_takes_at_most_one_requests_slack(metered_node, tmp_path):
    """The dishonest site: it charged little, then closes claiming its best voucher whole.
    The payer loses exactly the last request's slack (N minus its charge), in wei."""
    node = metered_node
    w3 = node.w3
    paywall, _, ledger = metered_site(node, tmp_path, name="dishonest.db")
    account = node.readers[7]
    payer = reader(node, 7, tmp_path)
    with paying(paywall, payer) as client:
        client.get("/search", params={"used": 1})  # opens the channel
        [channel_id] = ledger.channel_ids()
        before = w3.eth.get_balance(account.address)
        for amount in (PRICE, 2 * PRICE, 5):
            client.get("/search", params={"used": amount})
    held = ledger.held(channel_id)
    charged, ceiling = held.charged, held.ceiling
    assert ceiling - charged == MAXIMUM - 5  # the last request's slack
    config = ledger.config(channel_id)
    deposited = node.channels.state(channel_id).deposited
    node.channels.close(config, held.voucher, node.site, total=ceiling)  # settles the ceiling
    after = w3.eth.get_balance(account.address)
    # The payer signed vouchers only (no gas since ``before``) and got the rest back at close.
    refunded = after - before
    honest_refund = deposited - charged
    assert honest_refund - refunded == MAXIMUM - 5 <= MAXIMUM
    ledger.close()
