"""The paywall middleware, request by request: what it charges, when, and how it refuses.

Runs on its own anvil (standalone); the app is driven in process through httpx's ASGI
transport, so each behaviour is pinned without a socket (the hostile corpus, the end-to-end
and the concurrency tests use a real uvicorn).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI, Request
from paywall_helpers import chain, shared_ledger
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from micropay._x402 import PaymentPayload, PaymentRequired, Reason, Receipt
from micropay.ledger import Ledger
from micropay.payee import MemoryVoucherBook, Payee
from micropay.payer import Payer
from micropay.paywall import Paywall
from micropay.vouchers import VoucherDomain, sign_voucher

pytestmark = pytest.mark.standalone

PRICE = 1_000


@pytest.fixture(scope="module")
def node() -> Iterator:
    with chain() as c:
        yield c


async def article(request):
    payment = request.state.payment
    return JSONResponse(
        {"slug": request.path_params["slug"], "payer": payment.payer, "amount": payment.amount}
    )


async def broken(request):
    raise RuntimeError("the handler failed")


async def missing(request):
    return PlainTextResponse("no such thing", status_code=404)


async def slow(request):
    await asyncio.sleep(0.05)
    return PlainTextResponse("slow content")


async def free(request):
    return PlainTextResponse("free content")


def make_site(node, book=None, state_ttl=30.0, **options):
    payee = Payee(node.channels, node.site, book=book, state_ttl=state_ttl)
    app = Starlette(
        routes=[
            Route("/articles/{slug}", article),
            Route("/broken", broken),
            Route("/missing", missing),
            Route("/slow", slow),
            Route("/", free),
        ]
    )
    prices = {
        "GET /articles/{slug}": PRICE,
        "GET /broken": PRICE,
        "GET /missing": PRICE,
        "GET /slow": PRICE,
    }
    app.add_middleware(Paywall, payee=payee, prices=prices, **options)
    return SimpleNamespace(app=app, payee=payee, book=payee.book)


class Reader:
    """A payer with one open channel that builds PAYMENT-SIGNATURE headers by hand."""

    def __init__(self, node, account_index=0, deposit=100 * PRICE, delay=7200):
        self.node = node
        self.payer = Payer.open(
            node.channels,
            node.readers[account_index],
            node.site.address,
            deposit,
            withdraw_delay=delay,
        )

    def header(self, cumulative, *, price=PRICE, key=None, domain=None, network=None):
        domain = domain or self.node.channels.domain
        voucher = sign_voucher(
            domain,
            self.payer.config.channel_id,
            cumulative,
            key or bytes(self.payer.authorizer_key.key),
        )
        return PaymentPayload(
            network or f"eip155:{domain.chain_id}",
            price,
            self.payer.config.token,
            self.payer.config.payee,
            self.payer.config,
            voucher,
        ).encode()


def get(app, path, header=None, headers=None):
    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://site") as client:
            sent = dict(headers or {})
            if header is not None:
                sent["PAYMENT-SIGNATURE"] = header
            return await client.get(path, headers=sent)

    return asyncio.run(go())


def required(response) -> PaymentRequired:
    return PaymentRequired.decode(response.headers["payment-required"])


def total(site, reader) -> int:
    best = site.book.best(reader.payer.config.channel_id)
    return best.cumulative_amount if best else 0


# -- pass-through and the offer ------------------------------------------------------------


def test_unpriced_routes_pass_through_untouched_even_with_garbage_headers(node):
    site = make_site(node)
    response = get(site.app, "/", header="%%% not a payment %%%")
    assert (response.status_code, response.text) == (200, "free content")
    assert "payment-response" not in response.headers


def test_an_unpaid_request_gets_402_with_the_offer(node):
    site = make_site(node)
    response = get(site.app, "/articles/a")
    assert response.status_code == 402
    assert response.json()["error"] == Reason.PAYMENT_REQUIRED
    offer = required(response).offers[0]
    assert offer.price == PRICE
    assert offer.network == f"eip155:{node.w3.eth.chain_id}"
    assert offer.pay_to == node.site.address
    assert offer.contract == node.channels.address
    assert offer.domain == node.channels.domain
    assert offer.min_deposit == 10 * PRICE
    assert offer.min_withdraw_delay == 7200


def test_spelling_variants_of_a_priced_path_are_priced_too(node):
    site = make_site(node)
    for url in ("/articles/a/", "http://site//articles//a", "/articles/a?x=1"):
        assert get(site.app, url).status_code == 402, url


# -- paying --------------------------------------------------------------------------------


def test_a_paid_request_is_served_charged_and_receipted(node):
    site, reader = make_site(node), Reader(node)
    response = get(site.app, "/articles/a", reader.header(PRICE))
    assert response.status_code == 200
    assert response.json() == {"slug": "a", "payer": reader.payer.account.address, "amount": PRICE}
    receipt = Receipt.decode(response.headers["payment-response"])
    assert receipt.channel_id == reader.payer.config.channel_id
    assert (receipt.amount, receipt.cumulative_amount) == (PRICE, PRICE)
    assert receipt.remaining == 99 * PRICE
    assert total(site, reader) == PRICE
    assert response.headers["cache-control"] == "private, no-store"


def test_successive_requests_add_exactly_the_price(node):
    site, reader = make_site(node), Reader(node)
    for n in range(1, 6):
        assert get(site.app, f"/articles/{n}", reader.header(n * PRICE)).status_code == 200
    assert total(site, reader) == 5 * PRICE


@pytest.mark.parametrize("path", ["/missing", "/broken"])
def test_a_failed_handler_charges_nothing_and_the_same_voucher_pays_later(node, path):
    site, reader = make_site(node), Reader(node)
    response = get(site.app, path, reader.header(PRICE))
    assert response.status_code in (404, 500)
    assert "payment-response" not in response.headers
    assert total(site, reader) == 0
    assert get(site.app, "/articles/a", reader.header(PRICE)).status_code == 200
    assert total(site, reader) == PRICE


def test_a_durable_ledger_works_as_the_book(node, tmp_path):
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}", node.channels.domain)
    site, reader = make_site(node, book=ledger), Reader(node)
    for n in range(1, 4):
        assert get(site.app, "/articles/a", reader.header(n * PRICE)).status_code == 200
    assert get(site.app, "/missing", reader.header(4 * PRICE)).status_code == 404
    assert ledger.best(reader.payer.config.channel_id).cumulative_amount == 3 * PRICE


def test_the_paywall_keeps_the_covered_voucher_beside_one_against_a_fresh_top_up(node, tmp_path):
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}", node.channels.domain)
    site = make_site(node, book=ledger, state_ttl=0.0, min_deposit=2 * PRICE)
    reader = Reader(node, deposit=2 * PRICE)
    channel_id = reader.payer.config.channel_id
    for _ in range(2):
        node.w3.provider.make_request("evm_mine", [])  # the opening deposit is confirmed
    assert get(site.app, "/articles/a", reader.header(PRICE)).status_code == 200
    assert get(site.app, "/articles/a", reader.header(2 * PRICE)).status_code == 200
    reader.payer.top_up(2 * PRICE)
    assert get(site.app, "/articles/a", reader.header(3 * PRICE)).status_code == 200
    assert ledger.best(channel_id).cumulative_amount == 3 * PRICE
    assert ledger.best_covered(channel_id).cumulative_amount == 2 * PRICE


def test_fastapi_handlers_read_the_payment_from_request_state(node):
    payee = Payee(node.channels, node.site)
    app = FastAPI()

    @app.get("/paid/{item}")
    def paid(item: str, request: Request) -> dict:
        return {
            "item": item,
            "payer": request.state.payment.payer,
            "amount": request.state.payment.amount,
        }

    app.add_middleware(Paywall, payee=payee, prices={"GET /paid/{item}": PRICE})
    reader = Reader(node)
    assert get(app, "/paid/x").status_code == 402
    response = get(app, "/paid/x", reader.header(PRICE))
    assert response.json() == {"item": "x", "payer": reader.payer.account.address, "amount": PRICE}


# -- resynchronising -----------------------------------------------------------------------


def test_a_replayed_voucher_gets_402_with_the_signed_view(node):
    site, reader = make_site(node), Reader(node)
    header = reader.header(PRICE)
    assert get(site.app, "/articles/a", header).status_code == 200
    response = get(site.app, "/articles/a", header)
    assert response.status_code == 402
    assert response.json()["error"] == Reason.STALE_VOUCHER
    view = required(response).channel
    assert view.cumulative_amount == PRICE
    assert view.voucher == site.book.best(reader.payer.config.channel_id)
    assert total(site, reader) == PRICE


def test_a_voucher_that_skips_ahead_gets_402_cumulative_mismatch(node):
    site, reader = make_site(node), Reader(node)
    response = get(site.app, "/articles/a", reader.header(3 * PRICE))
    assert response.json()["error"] == Reason.CUMULATIVE_MISMATCH
    view = required(response).channel
    assert (view.cumulative_amount, view.signature) == (0, None)  # nothing held, nothing claimed
    assert total(site, reader) == 0


def test_the_view_is_shown_only_to_the_channel_authorizer(node):
    site, reader = make_site(node), Reader(node)
    get(site.app, "/articles/a", reader.header(PRICE))
    forged = reader.header(PRICE, key=bytes.fromhex("11" * 32))
    response = get(site.app, "/articles/a", forged)
    assert response.json()["error"] == Reason.INVALID_SIGNATURE
    assert required(response).channel is None


def test_after_losing_its_book_the_site_counts_from_what_was_claimed(node):
    site, reader = make_site(node), Reader(node)
    for n in range(1, 4):
        get(site.app, "/articles/a", reader.header(n * PRICE))
    site.payee.claim(reader.payer.config.channel_id)
    forgetful = make_site(node, book=MemoryVoucherBook())
    replay = get(forgetful.app, "/articles/a", reader.header(2 * PRICE))
    assert replay.json()["error"] == Reason.STALE_VOUCHER  # below the claimed 3000
    assert required(replay).channel.cumulative_amount == 3 * PRICE
    assert get(forgetful.app, "/articles/a", reader.header(4 * PRICE)).status_code == 200


# -- refusals ------------------------------------------------------------------------------


def refusal(site, header, path="/articles/a"):
    response = get(site.app, path, header)
    assert 400 <= response.status_code < 500
    assert "payment-response" not in response.headers
    return response.status_code, response.json()["error"]


def test_wrong_offers_are_refused_with_specific_reasons(node):
    site, reader = make_site(node), Reader(node)
    other_chain = VoucherDomain(1, node.channels.address)
    assert refusal(site, reader.header(PRICE, network="eip155:1", domain=other_chain)) == (
        402,
        Reason.WRONG_NETWORK,
    )
    assert refusal(site, reader.header(PRICE, price=PRICE - 1)) == (402, Reason.PRICE_MISMATCH)
    obj = json.loads(base64.b64decode(reader.header(PRICE)))
    obj["accepted"]["payTo"] = node.deployer.address
    wrong_payee = base64.b64encode(json.dumps(obj).encode()).decode()
    assert refusal(site, wrong_payee) == (402, Reason.WRONG_PAYEE)


def test_vouchers_signed_for_another_chain_or_contract_are_forged_here(node):
    site, reader = make_site(node), Reader(node)
    for domain in (
        VoucherDomain(1, node.channels.address),
        VoucherDomain(node.w3.eth.chain_id, node.deployer.address),
    ):
        header = reader.header(PRICE, domain=domain, network=f"eip155:{node.w3.eth.chain_id}")
        assert refusal(site, header) == (402, Reason.INVALID_SIGNATURE)


def test_channel_conditions_are_refused_with_specific_reasons(node):
    site = make_site(node)
    short = Reader(node, delay=3600)
    assert refusal(site, short.header(PRICE)) == (402, Reason.WITHDRAW_DELAY_TOO_SHORT)
    small = Reader(node, deposit=PRICE)
    assert refusal(site, small.header(PRICE)) == (402, Reason.DEPOSIT_TOO_SMALL)
    reader = Reader(node, deposit=10 * PRICE)
    assert get(site.app, "/articles/a", reader.header(PRICE)).status_code == 200
    over = get(site.app, "/articles/a", reader.header(11 * PRICE))
    assert over.json()["error"] == Reason.CUMULATIVE_MISMATCH  # it skips ahead, too


def test_a_channel_whose_withdraw_ends_within_the_safety_margin_is_closing(node):
    # state_ttl=0: read the chain every time, so the withdraw request is seen at once (with
    # the default it is seen within 30 s, and the default minimum delay is twice the margin).
    site = make_site(node, state_ttl=0, min_withdraw_delay=3600)
    reader = Reader(node, delay=3600)
    assert get(site.app, "/articles/a", reader.header(PRICE)).status_code == 200
    reader.payer.request_withdraw()
    assert refusal(site, reader.header(2 * PRICE)) == (402, Reason.CHANNEL_CLOSING)


def test_an_amount_above_the_deposit_is_refused(node):
    site = make_site(node, min_deposit=PRICE)
    reader = Reader(node, deposit=PRICE)
    assert get(site.app, "/articles/a", reader.header(PRICE)).status_code == 200
    status, reason = refusal(site, reader.header(2 * PRICE))
    assert (status, reason) == (402, Reason.INSUFFICIENT_DEPOSIT)


def test_an_unopened_channel_is_unknown(node):
    site = make_site(node)
    reader = Reader(node)
    config = reader.payer.config
    unopened = type(config)(
        config.payer,
        config.payee,
        config.token,
        config.authorizer,
        config.withdraw_delay,
        (2**200).to_bytes(32, "big"),
    )
    reader.payer.config = unopened
    assert refusal(site, reader.header(PRICE)) == (402, Reason.UNKNOWN_CHANNEL)


def test_two_payment_headers_are_refused(node):
    site, reader = make_site(node), Reader(node)

    async def go():
        transport = httpx.ASGITransport(app=site.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://site") as client:
            headers = [
                ("PAYMENT-SIGNATURE", reader.header(PRICE)),
                ("payment-signature", reader.header(PRICE)),
            ]
            return await client.get("/articles/a", headers=headers)

    response = asyncio.run(go())
    assert (response.status_code, response.json()["error"]) == (400, Reason.DUPLICATE_HEADER)
    assert total(site, reader) == 0


def test_an_oversized_header_gets_431(node):
    site = make_site(node)
    assert refusal(site, "A" * 10_000) == (431, Reason.HEADER_TOO_LARGE)


# -- concurrency ---------------------------------------------------------------------------


def test_concurrent_copies_of_one_voucher_are_charged_once(node):
    site, reader = make_site(node), Reader(node)
    header = reader.header(PRICE)

    async def go():
        transport = httpx.ASGITransport(app=site.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://site") as client:
            return await asyncio.gather(
                *(client.get("/slow", headers={"PAYMENT-SIGNATURE": header}) for _ in range(20))
            )

    responses = asyncio.run(go())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1
    assert set(statuses) - {200} <= {402, 409}
    assert total(site, reader) == PRICE


def test_concurrent_vouchers_of_different_prices_on_one_channel_never_undercount(node):
    payee = Payee(node.channels, node.site)
    app = Starlette(routes=[Route("/slow", slow), Route("/articles/{slug}", article)])
    app.add_middleware(
        Paywall, payee=payee, prices={"GET /slow": PRICE, "GET /articles/{slug}": 2 * PRICE}
    )
    reader = Reader(node)

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://site") as client:
            return await asyncio.gather(
                client.get("/slow", headers={"PAYMENT-SIGNATURE": reader.header(PRICE)}),
                client.get(
                    "/articles/a",
                    headers={"PAYMENT-SIGNATURE": reader.header(2 * PRICE, price=2 * PRICE)},
                ),
            )

    responses = asyncio.run(go())
    served = sum(
        PRICE if r.url.path == "/slow" else 2 * PRICE for r in responses if r.status_code == 200
    )
    best = payee.book.best(reader.payer.config.channel_id)
    assert best.cumulative_amount == served


def test_two_processes_on_one_ledger_never_store_a_voucher_for_less_than_its_price(node, tmp_path):
    """Two sites (as two worker processes) share one ledger file. Both read the channel at
    0; the cheap request is stored first, so the dear one's voucher (2 x price over 0) would
    add only one price: it is refused with 402 and its content is never sent."""
    entered, gate = asyncio.Event(), asyncio.Event()

    async def dear(request):
        entered.set()  # past every check, before its voucher is written
        await gate.wait()
        return PlainTextResponse("dear content")

    def site(book):
        app = Starlette(routes=[Route("/cheap", free), Route("/dear", dear)])
        payee = Payee(node.channels, node.site, book=book)
        prices = {"GET /cheap": PRICE, "GET /dear": 2 * PRICE}
        app.add_middleware(Paywall, payee=payee, prices=prices)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://site")

    reader = Reader(node)
    channel_id = reader.payer.config.channel_id
    with shared_ledger(node.channels.domain, tmp_path / "shared.db") as (one, two):

        async def go():
            async with site(one) as first, site(two) as second:
                dear_header = reader.header(2 * PRICE, price=2 * PRICE)
                held = asyncio.create_task(
                    second.get("/dear", headers={"PAYMENT-SIGNATURE": dear_header})
                )
                await entered.wait()
                cheap = await first.get(
                    "/cheap", headers={"PAYMENT-SIGNATURE": reader.header(PRICE)}
                )
                gate.set()
                return cheap, await held

        cheap, dear_response = asyncio.run(go())
        assert (cheap.status_code, cheap.text) == (200, "free content")
        assert dear_response.status_code == 402
        assert "dear content" not in dear_response.text
        refusal = required(dear_response)
        assert refusal.error == Reason.STALE_VOUCHER
        # the view lets the authorizer (whose signature was checked) pay on from the new total
        assert refusal.channel.cumulative_amount == PRICE
        assert refusal.channel.voucher == two.best(channel_id)
        assert two.best(channel_id).cumulative_amount == PRICE  # what was served, exactly


def test_a_site_prices_over_what_it_stored_and_reads_the_ledger_when_another_moved_it(
    node, tmp_path
):
    """Two sites (two worker processes) on one ledger. Each prices a request over the best
    voucher it stored itself, reading the ledger only when the voucher does not match: a
    reader who paid the other site in between is served at the new total, and a replay of
    the voucher the other site took, which matches only the stale total, is refused by the
    write with its content withheld."""
    reader = Reader(node)
    channel_id = reader.payer.config.channel_id
    with shared_ledger(node.channels.domain, tmp_path / "shared.db") as (one, two):
        first, second = make_site(node, book=one), make_site(node, book=two)

        def pay(site, cumulative):
            return get(site.app, "/articles/a", reader.header(cumulative))

        assert pay(first, PRICE).status_code == 200
        assert pay(second, 2 * PRICE).status_code == 200  # the second had never seen it
        replayed = pay(first, 2 * PRICE)  # one price over what the first stored: 1,000
        assert replayed.status_code == 402
        assert "slug" not in replayed.text
        assert required(replayed).error == Reason.STALE_VOUCHER
        assert required(replayed).channel.cumulative_amount == 2 * PRICE
        assert pay(first, 3 * PRICE).status_code == 200
        assert pay(second, 4 * PRICE).status_code == 200  # stored 2,000 itself: reads again
        assert one.best(channel_id).cumulative_amount == 4 * PRICE
        assert [c.cumulative_amount for c in one.charges()] == [PRICE * n for n in (1, 2, 3, 4)]
