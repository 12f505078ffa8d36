"""Streamed responses priced per unit, end to end: a real uvicorn on loopback, the real
HttpPayer and transports, the real contract on anvil and a SQLite ledger.

An LLM-style SSE endpoint priced per token and a media stream priced per second (a chunked
body of fixed-size seconds) are paid in increments the transport signs as units arrive;
the caller sees only its content. What is charged is what was delivered, however the
stream ends (finished, unpaid, policy cap, disconnect), and settlement claims exactly it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from paywall_helpers import Server, chain, fund
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from micropay._x402 import Offer, PaymentPayload, PaymentRequired, Receipt
from micropay.errors import (
    ChargeError,
    ChargeReceiptError,
    PaymentHeaderError,
    PaymentProtocolError,
)
from micropay.http_client import AsyncPaymentTransport, HttpPayer, PaymentPolicy, PaymentTransport
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall, PricedRoute
from micropay.streaming import PerUnit, stream_status

pytestmark = pytest.mark.standalone
pytest_plugins = ["ledger_fixtures"]

TOKEN = 10**9  # per token, and per media second
INCREMENT = 100
SECOND_BYTES = 1000  # one media second, in bytes
STEP = TOKEN * INCREMENT  # one increment's amount


@pytest.fixture(scope="module")
def streams_node() -> Iterator:
    with chain() as c:
        yield c


async def complete(request: Request) -> StreamingResponse:
    """An LLM-style answer: ``tokens`` events, one token each."""
    tokens = int(request.query_params.get("tokens", "10"))
    delay = float(request.query_params.get("delay", "0"))
    fail_at = int(request.query_params.get("fail_at", "-1"))

    with contextlib.suppress(ChargeError):
        request.state.payment.charge(1)  # a streamed route meters itself
        raise AssertionError("charge() on a streamed route")

    async def generate() -> AsyncIterator[bytes]:
        for i in range(tokens):
            if i == fail_at:
                raise RuntimeError("the model went away")
            if delay:
                await asyncio.sleep(delay)
            yield f"data: tok{i}\n\n".encode()

    return StreamingResponse(generate(), media_type="text/event-stream")


async def media(request: Request) -> StreamingResponse:
    """A media stream: ``seconds`` chunks of SECOND_BYTES bytes."""
    seconds = int(request.query_params.get("seconds", "10"))

    async def generate() -> AsyncIterator[bytes]:
        for i in range(seconds):
            yield bytes([i % 256]) * SECOND_BYTES

    return StreamingResponse(generate(), media_type="video/mp2t")


def streamed_site(
    node, tmp_path, timeout: float = 1.0, url: str | None = None
) -> tuple[Paywall, Payee, Ledger]:
    ledger = Ledger.open(url or f"sqlite:///{tmp_path / 'streams.db'}", node.channels.domain)
    payee = Payee(node.channels, node.site, book=ledger, confirmations=0)
    app = Starlette(routes=[Route("/v1/complete", complete), Route("/media", media)])
    prices = {
        "GET /v1/complete": PerUnit(TOKEN, increment=INCREMENT, timeout=timeout),
        "GET /media": PerUnit(TOKEN, increment=10, unit_bytes=SECOND_BYTES, timeout=timeout),
    }
    return Paywall(app, payee=payee, prices=prices), payee, ledger


def fresh_payer(node, tmp_path, name: str, **policy: Any) -> HttpPayer:
    [account] = fund(node.w3, node.deployer, 1, 10**18)
    return HttpPayer(
        node.w3,
        account,
        PaymentPolicy(max_price=STEP, **policy),
        store=tmp_path / f"{name}.json",
    )


@contextlib.contextmanager
def streaming(app, payer: HttpPayer) -> Iterator[tuple[Server, httpx.Client]]:
    with (
        Server(app) as server,
        httpx.Client(base_url=server.url, transport=PaymentTransport(payer), timeout=30) as client,
    ):
        yield server, client


def events_of(body: bytes) -> list[bytes]:
    return [e for e in body.split(b"\n\n") if e]


def settled(paywall: Paywall, deadline: float = 10.0) -> None:
    """Wait until the paywall has no stream in progress (the server's task ended)."""
    end = time.monotonic() + deadline
    while paywall._streams:
        assert time.monotonic() < end, "a stream's task did not end"
        time.sleep(0.02)


def test_the_offer_declares_the_stream_terms(streams_node, tmp_path):
    route = PricedRoute.parse("GET /v1/complete", PerUnit(TOKEN, increment=INCREMENT))
    assert route.metered and route.price == STEP and route.stream is not None
    with pytest.raises(ValueError, match="channel' only"):
        PricedRoute.parse("GET /a", PerUnit(5), schemes=("channel", "exact"))
    with pytest.raises(ValueError, match="increment"):
        PerUnit(5, increment=0)
    paywall, _, ledger = streamed_site(streams_node, tmp_path)
    with Server(paywall) as server, httpx.Client(base_url=server.url) as client:
        required = PaymentRequired.decode(client.get("/media").headers["payment-required"])
    [offer] = required.offers
    assert offer.price == 10 * TOKEN and offer.metered
    extra = offer.to_json()["extra"]
    assert extra["stream"] == {"unitPrice": str(TOKEN), "increment": 10, "unitBytes": 1000}
    assert Offer.from_json(offer.to_json()) == offer
    # Terms that do not add up, or a stream that is not metered, are not an offer.
    for bad in (
        {"stream": {**extra["stream"], "increment": 11}},
        {"metered": False},
        {"stream": {**extra["stream"], "unitPrice": "0"}},
        {"stream": {**extra["stream"], "unitBytes": -1}},
        {"stream": {"unitPrice": str(TOKEN), "increment": True}},
    ):
        wire = offer.to_json()
        wire["extra"] = {**wire["extra"], **bad}
        with pytest.raises(PaymentHeaderError):
            Offer.from_json(wire)
    ledger.close()


def test_an_llm_stream_pays_per_token_in_increments_and_settles_what_was_delivered(
    streams_node, tmp_path, ledger_url
):
    """On SQLite and on PostgreSQL (the charge write is the book's, shared)."""
    node = streams_node
    paywall, payee, ledger = streamed_site(node, tmp_path, url=ledger_url)
    payer = fresh_payer(node, tmp_path, "llm")
    with streaming(paywall, payer) as (_, client):
        with client.stream("GET", "/v1/complete", params={"tokens": 250}) as response:
            assert response.status_code == 200
            body = b"".join(response.iter_bytes())
        status = stream_status(response)
        # A second stream on the same channel, after the first: builds on its charged total.
        second = client.get("/v1/complete", params={"tokens": 30})
    events = events_of(body)
    assert events == [f"data: tok{i}".encode() for i in range(250)]  # no payment events
    assert status is not None and status.units == 250 and status.ended == "end"
    assert status.stopped is None and status.paid == 250 * TOKEN
    assert status.ceiling == 3 * STEP  # the request's increment and two more
    [channel_id] = ledger.channel_ids()
    assert status.receipt is not None and status.receipt.cumulative_amount == 250 * TOKEN
    second_status = stream_status(second)
    assert len(events_of(second.content)) == 30 and second_status is not None
    assert second_status.charged == 280 * TOKEN
    held = ledger.held(channel_id)
    assert held.charged == 280 * TOKEN and held.ceiling == 280 * TOKEN + STEP - 30 * TOKEN
    payee.claim_all()
    assert node.channels.state(channel_id).claimed == 280 * TOKEN
    ledger.close()


def test_the_async_transport_pays_both_kinds_of_stream_the_same_way(streams_node, tmp_path):
    node = streams_node
    paywall, _, ledger = streamed_site(node, tmp_path)
    payer = fresh_payer(node, tmp_path, "async")

    async def run(url: str) -> tuple[list[bytes], Any, httpx.Response]:
        async with httpx.AsyncClient(
            base_url=url, transport=AsyncPaymentTransport(payer), timeout=30
        ) as client:
            async with client.stream("GET", "/v1/complete", params={"tokens": 150}) as response:
                body = b"".join([chunk async for chunk in response.aiter_bytes()])
            media = await client.get("/media", params={"seconds": 12})
            return events_of(body), stream_status(response), media

    with Server(paywall) as server:
        events, status, media = asyncio.run(run(server.url))
    assert len(events) == 150 and status.ended == "end" and status.paid == 150 * TOKEN
    assert len(media.content) == 12 * SECOND_BYTES
    assert stream_status(media).paid == 12 * TOKEN  # two increments of ten seconds
    [channel_id] = ledger.channel_ids()
    assert ledger.held(channel_id).charged == 162 * TOKEN
    ledger.close()


def test_a_media_stream_in_a_chunked_body_pays_per_second(streams_node, tmp_path):
    node = streams_node
    paywall, payee, ledger = streamed_site(node, tmp_path)
    payer = fresh_payer(node, tmp_path, "media")
    with streaming(paywall, payer) as (_, client):
        response = client.get("/media", params={"seconds": 25})
    assert response.content == b"".join(bytes([i]) * SECOND_BYTES for i in range(25))
    status = stream_status(response)
    assert status is not None and status.units == 25 and status.stopped is None
    assert status.charged == 25 * TOKEN and status.receipt is None  # no event in a chunked body
    settled(paywall)
    [channel_id] = ledger.channel_ids()
    assert ledger.held(channel_id).charged == 25 * TOKEN
    assert ledger.held(channel_id).ceiling == 30 * TOKEN  # three increments of ten seconds
    payee.claim_all()
    assert node.channels.state(channel_id).claimed == 25 * TOKEN
    ledger.close()


PAUSE = 60.0
"""The site's pause in the cap tests: far longer than any of them may take, so a client that
waited for it instead of breaking off would fail the test's deadline."""


def _capped_sync(url: str, payer: HttpPayer) -> tuple[bytes, bytes, Any, Any]:
    with httpx.Client(base_url=url, transport=PaymentTransport(payer), timeout=30) as client:
        llm = client.get("/v1/complete", params={"tokens": 500})
        media = client.get("/media", params={"seconds": 50})
    return llm.content, media.content, stream_status(llm), stream_status(media)


def _capped_async(url: str, payer: HttpPayer) -> tuple[bytes, bytes, Any, Any]:
    async def run() -> tuple[bytes, bytes, Any, Any]:
        transport = AsyncPaymentTransport(payer)
        async with httpx.AsyncClient(base_url=url, transport=transport, timeout=30) as client:
            llm = await client.get("/v1/complete", params={"tokens": 500})
            media = await client.get("/media", params={"seconds": 50})
        return llm.content, media.content, stream_status(llm), stream_status(media)

    return asyncio.run(run())


def _capped_requests(url: str, payer: HttpPayer) -> tuple[bytes, bytes, Any, Any]:
    import requests

    from micropay.requests_adapter import PaymentAdapter

    with requests.Session() as session:
        session.mount("http://", PaymentAdapter(payer))
        llm = session.get(f"{url}/v1/complete", params={"tokens": 500}, timeout=30)
        media = session.get(f"{url}/media", params={"seconds": 50}, timeout=30)
        # The connection the capped stream was cut on went back to no pool: the session's
        # next request (an unpriced path) is answered, not read from the rest of a cut body.
        again = session.get(f"{url}/nowhere", timeout=30)
        assert again.status_code == 404
    return llm.content, media.content, stream_status(llm), stream_status(media)


@pytest.mark.parametrize("transport", [_capped_sync, _capped_async, _capped_requests])
def test_the_policy_cap_stops_paying_and_breaks_the_stream_off_with_what_was_paid(
    streams_node, tmp_path, transport
):
    """Capped at two increments of the LLM route (200 tokens) and, after that, one of the
    media route (10 seconds): each stream ends at once with what was paid for, instead of
    waiting for the site's pause to time out, and the site records exactly that."""
    node = streams_node
    paywall, _, ledger = streamed_site(node, tmp_path, timeout=PAUSE)
    spend = 2 * STEP + 10 * TOKEN
    payer = fresh_payer(node, tmp_path, transport.__name__, max_spend_per_site=spend)
    with Server(paywall) as server:
        started = time.monotonic()
        llm, media, llm_status, media_status = transport(server.url, payer)
        took = time.monotonic() - started
        settled(paywall)
    assert took < PAUSE / 2, f"the client waited {took:.1f} s for the site's pause"
    assert len(events_of(llm)) == 200  # two increments, then no more
    assert "policy" in llm_status.stopped and llm_status.ended is None
    assert llm_status.charged == llm_status.ceiling == 200 * TOKEN
    assert len(media) == 10 * SECOND_BYTES  # the ten seconds the rest of the cap paid for
    assert "policy" in media_status.stopped and media_status.charged == 210 * TOKEN
    [channel_id] = ledger.channel_ids()
    assert ledger.held(channel_id).charged == 210 * TOKEN
    assert ledger.held(channel_id).ceiling == spend  # never a voucher past the cap
    ledger.close()


@pytest.mark.parametrize("read", [0, 1, 99, 100, 150])
def test_a_client_disconnecting_mid_stream_is_charged_only_what_was_delivered(
    streams_node, tmp_path, read
):
    node = streams_node
    paywall, _, ledger = streamed_site(node, tmp_path)
    payer = fresh_payer(node, tmp_path, f"cut{read}")
    with Server(paywall) as server:
        client = httpx.Client(base_url=server.url, transport=PaymentTransport(payer), timeout=30)
        with client.stream(
            "GET", "/v1/complete", params={"tokens": 1000, "delay": 0.002}
        ) as response:
            got = 0
            for line in response.iter_lines():
                if got >= read:
                    break
                got += line.startswith("data:")
        client.close()
        settled(paywall)
    status = stream_status(response)
    [channel_id] = ledger.channel_ids()
    held = ledger.held(channel_id)
    assert held.charged % TOKEN == 0
    assert got * TOKEN <= held.charged <= held.ceiling  # at least what the client read
    assert held.ceiling <= status.ceiling  # and never a voucher the client did not send
    # Delivered means handed to the server: at most the units of the last increment beyond
    # what the client read, never past the ceiling it had signed.
    assert held.ceiling - STEP <= max(held.charged, got * TOKEN) or held.ceiling == STEP
    ledger.close()


def test_voucher_only_requests_without_a_stream_or_replayed_are_refused(streams_node, tmp_path):
    node = streams_node
    paywall, _, ledger = streamed_site(node, tmp_path)
    payer = fresh_payer(node, tmp_path, "replay")
    other = fresh_payer(node, tmp_path, "other")
    sent: list[httpx.Request] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.headers.get("payment-stream") == "voucher" or (
                sent and "payment-signature" in request.headers
            ):
                sent.append(request)
            return super().handle_request(request)

    with Server(paywall) as server:
        transport = PaymentTransport(payer, Recording())
        with httpx.Client(base_url=server.url, transport=transport, timeout=30) as client:
            first = client.get("/v1/complete", params={"tokens": 150})
            assert stream_status(first).paid == 150 * TOKEN
            [increment] = sent
            # The other payer's voucher, dressed as this channel's: refused, charges nothing.
            with httpx.Client(
                base_url=server.url, transport=PaymentTransport(other, Recording()), timeout=30
            ) as other_client:
                other_client.get("/v1/complete", params={"tokens": 1})
            [foreign] = [r for r in sent[1:] if "payment-signature" in r.headers]
            with httpx.Client(base_url=server.url) as raw:
                # No stream waits: the increment replayed after the stream is refused.
                replay = raw.get(increment.url, headers=dict(increment.headers))
                assert replay.status_code == 409
                assert PaymentRequired.decode(replay.headers["payment-required"]).error == (
                    "no_stream"
                )
                # Replayed into the next stream on the channel: not its next voucher.
                with client.stream(
                    "GET", "/v1/complete", params={"tokens": 50, "delay": 0.01}
                ) as live:
                    lines = live.iter_lines()
                    next(lines)
                    replay = raw.get(increment.url, headers=dict(increment.headers))
                    assert replay.status_code == 402
                    assert PaymentRequired.decode(replay.headers["payment-required"]).error == (
                        "cumulative_mismatch"
                    )
                    mine = PaymentPayload.decode(increment.headers["payment-signature"])
                    theirs = PaymentPayload.decode(foreign.headers["payment-signature"])
                    forged = replace(theirs, config=mine.config).encode()
                    headers = {"payment-signature": forged, "payment-stream": "voucher"}
                    refused = raw.get(increment.url, headers=headers)
                    assert refused.status_code in (400, 402)
                    assert "payment-response" not in refused.headers
                    # A second stream on the channel at once: the channel is busy.
                    busy = httpx.Client(base_url=server.url, transport=PaymentTransport(payer))
                    with busy:
                        assert busy.get("/v1/complete").status_code == 409
                    rest = list(lines)
        settled(paywall)
    assert sum(line.startswith("data:") for line in rest) == 49
    ids = ledger.channel_ids()
    charged = sorted(ledger.held(i).charged for i in ids)
    assert charged == [1 * TOKEN, 200 * TOKEN]  # 150 + 50 delivered; 1 for the other
    ledger.close()


def test_a_site_asking_for_a_voucher_before_delivering_is_not_paid_ahead(streams_node, tmp_path):
    """A hostile site injects the ask after the first token: the client refuses to pay
    more than delivered plus one increment, and sends no voucher-only request."""
    node = streams_node
    paywall, _, ledger = streamed_site(node, tmp_path)
    payer = fresh_payer(node, tmp_path, "hostile")
    voucher_only = 0

    async def hostile(scope, receive, send):
        nonlocal voucher_only
        if scope["type"] == "http" and any(
            name == b"payment-stream" for name, _ in scope["headers"]
        ):
            voucher_only += 1
        state: dict[str, Any] = {"events": 0, "receipt": None}

        async def inject(message):
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", []):
                    if name == b"payment-response":
                        state["receipt"] = Receipt.decode(value.decode())
            await send(message)
            body = message.get("body", b"")
            if state["receipt"] is not None and b"data: tok0" in body:
                receipt = state["receipt"]
                data = {
                    "channel": "0x" + receipt.channel_id.hex(),
                    "charged": str(receipt.ceiling_amount),
                    "ceiling": str(receipt.ceiling_amount + STEP),
                    "units": 100,
                }
                ask = f"event: payment-need-voucher\ndata: {json.dumps(data)}\n\n"
                await send({"type": "http.response.body", "body": ask.encode(), "more_body": True})

        await paywall(scope, receive, inject)

    with streaming(hostile, payer) as (_, client):
        response = client.get("/v1/complete", params={"tokens": 150})
    status = stream_status(response)
    assert status.stopped is not None and "before delivering" in status.stopped
    # The genuine ask at 100 tokens is not paid either once the client stopped paying.
    assert voucher_only == 0 and len(events_of(response.content)) == 100
    # Broken off at the genuine ask (nothing more would come but the site's timeout); the
    # 100 tokens received are acknowledged, and recorded by the site as on any disconnect.
    assert status.ended is None and status.charged == 100 * TOKEN
    settled(paywall)
    [channel_id] = ledger.channel_ids()
    assert ledger.held(channel_id).charged == 100 * TOKEN
    [channel_id] = ledger.channel_ids()
    assert ledger.held(channel_id).ceiling == STEP
    ledger.close()


def test_mid_stream_the_book_holds_what_was_delivered_at_the_last_increment(streams_node, tmp_path):
    """What a restart would find: another handle on the SQLite file, read mid-stream, holds
    the units recorded at the last increment under the new ceiling; settling from it would
    claim no more than was delivered."""
    node = streams_node
    paywall, _, ledger = streamed_site(node, tmp_path)
    payer = fresh_payer(node, tmp_path, "restart")
    with (
        streaming(paywall, payer) as (_, client),
        client.stream("GET", "/v1/complete", params={"tokens": 200, "delay": 0.005}) as response,
    ):
        lines = response.iter_lines()
        got = 0
        while got < 150:
            got += next(lines).startswith("data:")
        reopened = Ledger.open(f"sqlite:///{tmp_path / 'streams.db'}", node.channels.domain)
        [channel_id] = reopened.channel_ids()
        held = reopened.held(channel_id)
        assert (held.charged, held.ceiling) == (100 * TOKEN, 2 * STEP)
        reopened.close()
        list(lines)
    assert stream_status(response).charged == 200 * TOKEN
    assert ledger.held(channel_id).charged == 200 * TOKEN
    ledger.close()


def test_a_handler_failing_mid_stream_ends_it_cleanly_charging_what_was_sent(
    streams_node, tmp_path
):
    node = streams_node
    paywall, _, ledger = streamed_site(node, tmp_path)
    payer = fresh_payer(node, tmp_path, "failing")
    with streaming(paywall, payer) as (_, client):
        response = client.get("/v1/complete", params={"tokens": 300, "fail_at": 130})
    status = stream_status(response)
    assert response.status_code == 200 and len(events_of(response.content)) == 130
    assert status.ended == "error" and status.charged == 130 * TOKEN
    [channel_id] = ledger.channel_ids()
    assert ledger.held(channel_id).charged == 130 * TOKEN
    ledger.close()


def test_the_requests_adapter_pays_a_stream_as_it_is_read(streams_node, tmp_path):
    import requests

    from micropay.requests_adapter import PaymentAdapter

    node = streams_node
    paywall, _, ledger = streamed_site(node, tmp_path)
    payer = fresh_payer(node, tmp_path, "requests")
    with Server(paywall) as server, requests.Session() as session:
        session.mount("http://", PaymentAdapter(payer))
        with session.get(
            f"{server.url}/v1/complete", params={"tokens": 230}, stream=True
        ) as response:
            lines = [line for line in response.iter_lines() if line]
        media = session.get(f"{server.url}/media", params={"seconds": 15})
    status = stream_status(response)
    assert lines == [f"data: tok{i}".encode() for i in range(230)]
    assert status.ended == "end" and status.paid == 230 * TOKEN
    assert len(media.content) == 15 * SECOND_BYTES
    assert stream_status(media).charged == 245 * TOKEN
    ids = ledger.channel_ids()
    assert [ledger.held(i).charged for i in ids] == [245 * TOKEN]
    ledger.close()


def test_a_final_receipt_charging_more_than_was_received_is_refused(streams_node, tmp_path):
    """A hostile site rewrites the stream's final receipt to one more unit than it sent:
    the caller's iteration raises ChargeReceiptError and the channel is not used again."""
    node = streams_node
    paywall, _, ledger = streamed_site(node, tmp_path)
    payer = fresh_payer(node, tmp_path, "inflated")

    async def inflating(scope, receive, send):
        async def rewrite(message):
            body = message.get("body", b"")
            if message["type"] == "http.response.body" and body.startswith(
                b"event: payment-receipt"
            ):
                data = json.loads(body.split(b"data: ", 1)[1])
                receipt = Receipt.decode(data["receipt"])
                more = replace(
                    receipt,
                    signed=None,
                    amount=receipt.amount + TOKEN,
                    cumulative_amount=receipt.cumulative_amount + TOKEN,
                )
                data["receipt"] = more.encode()
                body = f"event: payment-receipt\ndata: {json.dumps(data)}\n\n".encode()
                message = {**message, "body": body}
            await send(message)

        await paywall(scope, receive, rewrite)

    with streaming(inflating, payer) as (_, client):
        with (
            client.stream("GET", "/v1/complete", params={"tokens": 150}) as response,
            pytest.raises(ChargeReceiptError, match="does not charge the 150 units"),
        ):
            b"".join(response.iter_bytes())
        status = stream_status(response)
        assert status.charged == 100 * TOKEN  # acknowledged: the first increment, delivered
        with pytest.raises(PaymentProtocolError, match="not used"):
            client.get("/v1/complete", params={"tokens": 1})
    [channel_id] = ledger.channel_ids()
    assert ledger.held(channel_id).charged == 150 * TOKEN  # the site's own book is honest
    ledger.close()
