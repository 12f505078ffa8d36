"""A metered site on the suite's chain, paid in an ERC-20 through the real paywall's ASGI app
(httpx's ASGI transport, no socket), for tests/test_charges_stateful.py and
tests/test_charges_hostile.py. Not fixtures: plain functions and a handler."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from micropay._x402 import PaymentPayload, PaymentRequired, Receipt
from micropay.channels import ChannelClient
from micropay.payee import Payee, VoucherBook
from micropay.paywall import Paywall, UpTo
from micropay.streaming import RECEIPT, PerUnit
from micropay.vouchers import ChannelConfig, sign_voucher

PRICE = 1_000  # GET /fixed
MAXIMUM = 5_000  # GET /metered: up to N
MARGIN = 600  # the payee's safety margin before a payer's withdraw ends
DELAY = 2 * MARGIN + 600  # the channels' withdraw delay
UNIT = 100  # GET /stream: a server-sent event
INCREMENT = 10  # units paid at a time
STREAM_WAIT = 0.05  # how long a paused stream waits for the next voucher (a test sends none)
ROUTES = {"fixed": PRICE, "metered": MAXIMUM, "stream": UNIT * INCREMENT}


async def serve(request: Request) -> PlainTextResponse:
    """Charges what the query says (``use``, metered routes) and answers its ``status``."""
    payment = request.state.payment
    if payment.metered:
        payment.charge(int(request.query_params["use"]))
    return PlainTextResponse("served", status_code=int(request.query_params["status"]))


async def stream(request: Request) -> StreamingResponse:
    """Sends ``use`` server-sent events, one unit each; the paywall meters them."""

    async def units() -> Any:
        for n in range(int(request.query_params["use"])):
            yield f"data: unit {n}\n\n"

    return StreamingResponse(units(), media_type="text/event-stream")


def stream_receipt(response: httpx.Response) -> Receipt:
    """The receipt a streamed answer ends with (its ``payment-receipt`` event)."""
    blocks = response.text.split("\n\n")
    final = [b for b in blocks if b.startswith(f"event: {RECEIPT}\n")]
    assert len(final) == 1, response.text[-400:]
    data = json.loads(final[0].split("\ndata: ", 1)[1])
    return Receipt.decode(data["receipt"])


def metered_paywall(channels: ChannelClient, site: Any, book: VoucherBook, token: str) -> Paywall:
    """GET /fixed at PRICE, GET /metered up to MAXIMUM and GET /stream at UNIT an event,
    INCREMENT events per voucher, in ``token``. The payee reads the
    chain for every check (``state_ttl`` 0) and trusts the latest block, so a test that sees
    every transaction can predict every verdict."""
    payee = Payee(channels, site, book=book, safety_margin=MARGIN, state_ttl=0, confirmations=0)
    app = Starlette(
        routes=[Route("/fixed", serve), Route("/metered", serve), Route("/stream", stream)]
    )
    return Paywall(
        app,
        payee=payee,
        prices={
            "GET /fixed": PRICE,
            "GET /metered": UpTo(MAXIMUM),
            "GET /stream": PerUnit(UNIT, increment=INCREMENT, timeout=STREAM_WAIT),
        },
        asset=token,
        min_deposit=2 * MAXIMUM,
        min_withdraw_delay=DELAY,
    )


def payment_header(
    paywall: Paywall, config: ChannelConfig, key: Any, route: str, amount: int
) -> str:
    """A PAYMENT-SIGNATURE for ``route`` carrying ``key``'s voucher for ``amount``."""
    voucher = sign_voucher(paywall.domain, config.channel_id, amount, bytes(key.key))
    return PaymentPayload(
        paywall.network, ROUTES[route], config.token, config.payee, config, voucher
    ).encode()


def get(
    paywall: Paywall, route: str, header: str, use: int = 0, status: int = 200
) -> httpx.Response:
    """One request to the paywall's app, answered in process."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=paywall, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://site") as client:
            return await client.get(
                f"/{route}",
                params={"use": use, "status": status},
                headers={"PAYMENT-SIGNATURE": header},
            )

    return asyncio.run(go())


def refusal_reason(response: httpx.Response) -> str:
    """The reason of a refused request's PAYMENT-REQUIRED (a 402 carries one)."""
    return PaymentRequired.decode(response.headers["payment-required"]).error or ""
