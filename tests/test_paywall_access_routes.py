"""Access receipts (``Paywall(access_period=...)``) stand for a payment only on fixed-price
routes: a metered read may use more than the one it paid for, and a stream delivers as long
as it is paid. Elsewhere the 402 offers no access and a ``PAYMENT-ACCESS`` header is ignored;
and a receipt that charged nothing (a stream's start, a metered read that used nothing) lets
nobody in. Before, a per-unit route streamed to a stream's start receipt for nothing, without
end, and a metered handler's ``payment.charge`` raised (a 500) for a reader let in on one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from paywall_helpers import chain
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from test_paywall import Reader

from micropay._x402 import AccessRequest, PaymentRequired, Receipt
from micropay.errors import ReceiptError
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall, UpTo
from micropay.receipts import sign_access
from micropay.streaming import PerUnit

pytestmark = pytest.mark.standalone

TOKEN = 100  # per unit (one server-sent event)
INCREMENT = 5
STEP = TOKEN * INCREMENT
TOKENS = 50


@pytest.fixture(scope="module")
def node() -> Iterator:
    with chain() as c:
        yield c


async def complete(request: Request) -> StreamingResponse:
    async def generate() -> AsyncIterator[bytes]:
        for i in range(TOKENS):
            yield f"data: tok{i}\n\n".encode()

    return StreamingResponse(generate(), media_type="text/event-stream")


def send(app, headers):
    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://site") as client:
            return await client.get("/v1/complete", headers=headers)

    return asyncio.run(go())


def tokens_in(response: httpx.Response) -> int:
    return sum(1 for i in range(TOKENS) if f"data: tok{i}\n\n" in response.text)


def test_a_streams_start_receipt_lets_nobody_stream_again(node, tmp_path):
    """The reader pays one increment and never the next: the stream stops after INCREMENT
    units. The receipt its start carried (charged 0) is then shown as access."""
    with Ledger.open(f"sqlite:///{tmp_path / 'site.db'}", node.channels.domain) as ledger:
        payee = Payee(node.channels, node.site, book=ledger, confirmations=0)
        app = Starlette(routes=[Route("/v1/complete", complete)])
        prices = {"GET /v1/complete": PerUnit(TOKEN, increment=INCREMENT, timeout=0.3)}
        paywall = Paywall(app, payee=payee, prices=prices, access_period=3600)
        assert PaymentRequired.decode(send(paywall, {}).headers["payment-required"]).access is None
        reader = Reader(node)
        channel_id = reader.payer.config.channel_id
        paid = send(paywall, {"PAYMENT-SIGNATURE": reader.header(STEP, price=STEP)})
        assert paid.status_code == 200 and tokens_in(paid) == INCREMENT
        start = Receipt.decode(paid.headers["payment-response"]).signed
        assert start is not None and start.amount == 0  # nothing was charged at the start
        assert ledger.held(channel_id).charged == STEP
        assert paywall.access is not None
        resource = "GET /v1/complete"
        shown = access_request(node, reader, start, paywall.access.offer(resource).nonce, resource)
        again = send(paywall, {"PAYMENT-ACCESS": shown.encode()})
        assert again.status_code == 402 and again.json()["error"] == "payment_required"
        assert tokens_in(again) == 0
        assert ledger.held(channel_id).charged == STEP  # every unit that left was charged
        # The gate itself lets nobody in on a receipt that charged nothing.
        with pytest.raises(ReceiptError, match="charged nothing"):
            paywall.access.admit(shown, resource, ledger.config)


async def search(request: Request) -> JSONResponse:
    request.state.payment.charge(int(request.query_params.get("used", "0")))  # as documented
    return JSONResponse({"served": True})


def test_a_metered_routes_receipt_is_not_access(node, tmp_path):
    """A metered read's receipt shown as access is ignored (the 402 asks for a voucher), not
    a 500 from a handler handed a payment it cannot charge."""
    with Ledger.open(f"sqlite:///{tmp_path / 'metered.db'}", node.channels.domain) as ledger:
        payee = Payee(node.channels, node.site, book=ledger, confirmations=0)
        app = Starlette(routes=[Route("/v1/complete", search)])
        prices = {"GET /v1/complete": UpTo(STEP)}
        paywall = Paywall(app, payee=payee, prices=prices, access_period=3600)
        assert PaymentRequired.decode(send(paywall, {}).headers["payment-required"]).access is None
        reader = Reader(node, account_index=1)
        paid = send(paywall, {"PAYMENT-SIGNATURE": reader.header(STEP, price=STEP)})
        assert paid.status_code == 200
        receipt = Receipt.decode(paid.headers["payment-response"]).signed
        assert receipt is not None and paywall.access is not None
        resource = "GET /v1/complete"
        nonce = paywall.access.offer(resource).nonce
        again = send(
            paywall,
            {"PAYMENT-ACCESS": access_request(node, reader, receipt, nonce, resource).encode()},
        )
        assert again.status_code == 402 and again.json()["error"] == "payment_required"


def access_request(node, reader, receipt, nonce, resource) -> AccessRequest:
    """``receipt`` shown for ``resource`` under ``nonce``, proved with the channel's key."""
    key = bytes(reader.payer.authorizer_key.key)
    proof = sign_access(node.channels.domain, key, receipt.receipt_id, nonce, resource)
    return AccessRequest(receipt, nonce, proof)
