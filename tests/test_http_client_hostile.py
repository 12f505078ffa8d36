"""The paying client (micropay/http_client.py) against hostile sites and careless callers:
neither what a site sends back nor two processes on one wallet make it authorise more than
its policy allows, nor crash with an exception that is not micropay's.

Real parts: the session's chain (in-process by default), PaymentChannels, the example
site's Paywall (or a small hostile Starlette site) served by uvicorn on loopback, httpx
through PaymentTransport.
"""

from __future__ import annotations

import base64
import sys
from dataclasses import replace
from types import SimpleNamespace

import httpx
import pytest
from paywall_helpers import Server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from micropay._eip3009 import AuthorizationToken
from micropay._x402 import OfferJSON, PaymentRequired
from micropay.credit import PAYMENT_CREDIT
from micropay.errors import MicropayError, OfferNotAllowedError, SpendingLimitError
from micropay.exact import ExactOffer, ExactPayload
from micropay.example_site import create_site
from micropay.http_client import HttpPayer, PaymentPolicy, PaymentTransport, site_of
from micropay.wallet import Wallet

PRICE = 10**13
ARTICLE = "/articles/vouchers-explained"


def get(url: str, payer: HttpPayer, path: str = ARTICLE) -> httpx.Response:
    with httpx.Client(base_url=url, transport=PaymentTransport(payer), timeout=60) as client:
        return client.get(path)


def rewriting(app, change):
    """ASGI middleware that rewrites the status line and headers of the app's answers
    (``change(scope, message)``), as a hostile site or a man in the middle would."""

    async def middleware(scope, receive, send):
        async def send_changed(message):
            if message["type"] == "http.response.start":
                message = change(scope, message)
            await send(message)

        await app(scope, receive, send_changed)

    return middleware


def header(message, name: bytes) -> bytes | None:
    for key, value in message["headers"]:
        if key.lower() == name:
            return value
    return None


def with_header(message, name: bytes, value: bytes):
    headers = [(k, v) for k, v in message["headers"] if k.lower() != name] + [(name, value)]
    return {**message, "headers": headers}


def test_a_credit_token_with_a_zero_price_is_ignored_not_an_unnamed_crash(w3, actors, channels):
    """The hostile site (or a man in the middle) answers a paid voucher of a site selling
    credit with a PAYMENT-CREDIT token whose 16-byte price field is 0.

    The token is ignored, as any the client cannot use: the caller gets the article it paid
    for. (``credit.peek`` raised a plain ValueError for a price of 0, out of ``conclude``
    after the price was counted: the caller lost the response it paid for.)"""
    site = create_site(w3, site_key=actors.payee, contract=channels.address, price=PRICE, prepay=5)

    def zero_price_token(scope, message):
        token = header(message, PAYMENT_CREDIT.lower().encode())
        if token is None:
            return message
        raw = bytearray(base64.urlsafe_b64decode(token + b"=" * (-len(token) % 4)))
        raw[65:81] = bytes(16)  # version | channel id | ceiling | price (now 0) | tag
        forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=")
        return with_header(message, PAYMENT_CREDIT.lower().encode(), forged)

    payer = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=5 * PRICE, prepay=5))
    with Server(rewriting(site.app, zero_price_token)) as server:
        try:
            response = get(server.url, payer)
        except MicropayError as err:  # a named refusal would be acceptable too
            response = err
        assert not isinstance(response, MicropayError)
        assert response.status_code == 200
        assert not payer.holds_credit(site_of(server.url))


def test_a_prepaid_offer_at_price_zero_is_refused_not_a_zero_division(w3, actors, channels):
    """The hostile site: after an honest first read (the reader now holds a channel to its
    payee), its 402s offer the same channel at a price of 0 with ``extra.prepay: 2``.

    The offer is refused (a price of 0), a named error. (Nothing refused it before, and
    ``HttpPayer._next_total`` divided by the price: a ZeroDivisionError.)"""
    site = create_site(w3, site_key=actors.payee, contract=channels.address, price=PRICE)
    hostile = {"on": False}

    def free_with_credit(scope, message):
        required = header(message, b"payment-required")
        if not hostile["on"] or message["status"] != 402 or required is None:
            return message
        [offer] = PaymentRequired.decode(required).channel_offers
        lie = PaymentRequired((replace(offer, price=0, prepay=2),))
        return with_header(message, b"payment-required", lie.encode().encode())

    payer = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE))
    with Server(rewriting(site.app, free_with_credit)) as server:
        assert get(server.url, payer).status_code == 200  # honest: a channel is open
        hostile["on"] = True
        with pytest.raises(OfferNotAllowedError, match="a price of 0"):
            get(server.url, payer)


def test_exact_authorizations_refused_then_settled_later_stay_within_the_cap(w3, actors, channels):
    """The hostile site sells in ``exact`` with a long ``maxTimeoutSeconds`` (its choice:
    the policy does not bound it). It answers every paid request 500 without settling,
    keeps each authorization, and submits them all to the token afterwards.

    A refused authorization whose nonce is unused stays reserved against the caps until its
    window closes (the site still holds it), and the retries send that same one: the site
    can settle one price. (It was released at once and each retry signed a new one: five
    prices left the wallet under a cap of two, none of them counted.)"""
    usdc = AuthorizationToken.deploy(w3, actors.deployer, "USD Coin", "USDC")
    usdc.mint(actors.payer.address, 100 * PRICE, actors.deployer)
    domain = usdc.domain()
    offer = ExactOffer(
        PRICE, usdc.address, actors.payee.address, domain.chain_id, domain.name,
        domain.version, max_timeout_seconds=3600,
    )  # fmt: skip
    kept: list[ExactPayload] = []

    async def report(request: Request) -> Response:
        sent = request.headers.get("payment-signature")
        if sent is None:
            required = PaymentRequired((OfferJSON("exact", offer.to_json()),))
            return Response(status_code=402, headers={"payment-required": required.encode()})
        kept.append(ExactPayload.decode(sent))  # keep it, settle it later
        return PlainTextResponse("try again later", status_code=500)

    cap = 2 * PRICE
    payer = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE, max_spend_per_site=cap))
    before = usdc.balance_of(actors.payer.address)
    with Server(Starlette(routes=[Route("/report", report)])) as server:
        site = SimpleNamespace(url=server.url)
        for _ in range(5):  # the caller retries a failing request
            try:
                get(site.url, payer, "/report")
            except MicropayError:
                break  # SpendingLimitError once the cap is reached: what the policy promises
    assert len(kept) == 5 and len({p.authorization.nonce for p in kept}) == 1  # one, resent
    assert payer._reserved[site_of(server.url)] == PRICE  # held until its window closes
    usdc.transfer_with_authorization(kept[0].authorization, kept[0].signature, actors.payee)
    assert before - usdc.balance_of(actors.payer.address) == PRICE <= cap


def test_a_deeply_nested_payment_event_in_a_paid_stream_is_a_named_error(w3, actors, channels):
    """The man in the middle (or a hostile site behind its own paywall) adds to a paid SSE
    stream an event ``event: payment-receipt`` whose data is JSON nested 100,000 deep.

    The event is not the paywall's (its data is longer than any payment event's, and too
    deep to decode): ignored, and the stream is read and accounted as usual. (The decoder's
    RecursionError escaped the caller's read of the body, and ``conclude_stream`` never
    ran.)"""
    from starlette.responses import StreamingResponse

    from micropay.payee import Payee
    from micropay.paywall import Paywall
    from micropay.streaming import PerUnit

    async def complete(request: Request) -> StreamingResponse:
        async def generate():
            for i in range(5):
                yield f"data: tok{i}\n\n".encode()

        return StreamingResponse(generate(), media_type="text/event-stream")

    unit, increment = 10**9, 100
    payee = Payee(channels, actors.payee)
    app = Paywall(
        Starlette(routes=[Route("/v1/complete", complete)]),
        payee=payee,
        prices={"GET /v1/complete": PerUnit(unit, increment=increment, timeout=1.0)},
    )
    depth = 5_000  # above Python's default recursion limit of 1000
    deep = b"event: payment-receipt\ndata: " + b"[" * depth + b"]" * depth + b"\n\n"

    def injecting(inner):
        async def middleware(scope, receive, send):
            # Only into the paid stream's body (the answer to the voucher, chunked).
            injected = b"payment-signature" not in dict(scope.get("headers", []))

            async def send_changed(message):
                nonlocal injected
                if message["type"] == "http.response.start" and message["status"] != 200:
                    injected = True
                if message["type"] == "http.response.body" and message.get("body") and not injected:
                    injected = True
                    message = {**message, "body": deep + message["body"]}
                await send(message)

            await inner(scope, receive, send_changed)

        return middleware

    payer = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=unit * increment))
    # The client process as Python starts it (recursion limit 1000). Under ape the limit is
    # 100,000, and data nested 100,000 deep then overflows the C stack: the decoder
    # segfaults the whole client process (seen while writing this test), so that variant
    # is not run here.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        with Server(injecting(app)) as server:
            response = get(server.url, payer, "/v1/complete")
            assert response.status_code == 200
            assert all(f"tok{i}" in response.text for i in range(5))
            assert payer.store.site_spend(site_of(server.url)) == 5 * unit  # accounted
    finally:
        sys.setrecursionlimit(limit)


def test_two_payers_on_one_wallet_file_keep_each_others_spending_and_channels(
    w3, actors, channels, tmp_path
):
    """The careless caller: two worker processes of one agent open the same wallet file
    (README: ``HttpPayer(..., store=".micropay/wallet.json")``, the file the CLI shares).

    Each change of the file takes in what the other wrote first: both prices and both
    channels are kept, and a later run under a period cap of two prices pays no third.
    (The last writer won: the other's spending and channel were dropped, and the third run
    paid past its cap.) Two ``HttpPayer``s in one test process, each with its own
    ``Wallet`` of the same path, are two processes as far as the file is concerned."""
    store = tmp_path / "wallet.json"
    cap = 2 * PRICE
    policy = PaymentPolicy(max_price=PRICE, max_spend_per_period=cap, period=3600)
    site_a = create_site(w3, site_key=actors.payee, contract=channels.address, price=PRICE)
    site_b = create_site(w3, site_key=actors.relayer, contract=channels.address, price=PRICE)
    with Server(site_a.app) as a, Server(site_b.app) as b:
        first = HttpPayer(w3, actors.payer, policy, store=store)  # process 1
        second = HttpPayer(w3, actors.payer, policy, store=store)  # process 2, same file
        assert get(a.url, first).status_code == 200  # process 1 pays site A one price
        assert get(b.url, second).status_code == 200  # process 2 pays site B one price

        # The file should now say two prices were spent, on two channels.
        on_disk = Wallet(store)
        spent = on_disk.spend_since(0)
        channels_kept = len(on_disk.channels())

        # A later run under the same 2-price period cap: it must refuse to pay again.
        # (Site B: the channel the file still knows. On site A the lost record also makes the
        # client call the honest site hostile, as its own voucher comes back as "stale".)
        third = HttpPayer(w3, actors.payer, policy, store=store)
        with pytest.raises(SpendingLimitError):
            get(b.url, third)
    paid = sum(
        site.payee.book.best(cid).cumulative_amount
        for site in (site_a, site_b)
        for cid in site.payee.book.channel_ids()
    )
    assert (spent, channels_kept, paid) == (2 * PRICE, 2, cap), (spent, channels_kept, paid)
