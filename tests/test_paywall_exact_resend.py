"""One ``exact`` payment sent again: a settled authorization is answered with its receipt and
the content (``ExactSettlerBase._resent``), so a client whose response was lost can retry,
but only within the offer's ``maxTimeoutSeconds`` of the settlement, whatever
``validBefore`` the payer signed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from exact_helpers import PRICE, exact_offer_of, funded_usdc, pay, signed
from paywall_helpers import Server, chain
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from micropay._eip3009 import AuthorizationToken
from micropay.channels import ChannelClient
from micropay.exact import ExactSettler
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall, PricedRoute

pytestmark = pytest.mark.standalone


@pytest.fixture(scope="module")
def rnode() -> Iterator:
    with chain() as c:
        yield c


@pytest.fixture(scope="module")
def rusdc(rnode):  # type: ignore[no-untyped-def]
    return funded_usdc(rnode)


def _site(node, usdc, ledger_url: str, max_timeout_seconds: int = 60):  # type: ignore[no-untyped-def]
    """Two distinct paid resources at the same price, sold in ``exact``, settled by the
    site's key, ids and claims in the SQLite ledger."""
    client = ChannelClient.attach(node.w3, node.channels.address)
    ledger = Ledger.open(ledger_url, client.domain)
    payee = Payee(client, node.site, book=ledger)
    settler = ExactSettler(
        AuthorizationToken(node.w3, usdc.address),
        node.site,
        book=ledger.authorizations,
        max_timeout_seconds=max_timeout_seconds,
    )

    async def report(request: Request) -> Response:
        return PlainTextResponse("the report")

    async def archive(request: Request) -> Response:
        return PlainTextResponse("the archive")

    routes = [
        PricedRoute.parse("GET /report", PRICE, schemes=("exact",)),
        PricedRoute.parse("GET /archive", PRICE, schemes=("exact",)),
    ]
    app = Starlette(routes=[Route("/report", report), Route("/archive", archive)])
    return Paywall(app, payee=payee, prices=routes, asset=usdc.address, exact=settler)


def test_a_far_valid_before_buys_no_resend_past_max_timeout_seconds(rnode, rusdc, tmp_path):
    # The site offers maxTimeoutSeconds = 10. The attacker signs its authorization with
    # validBefore an hour ahead, pays once, and keeps resending the same payment. Every
    # resend while validBefore was ahead used to be served again: a year-long validBefore
    # was a year of content for one price.
    reader = rnode.readers[1]
    site = _site(rnode, rusdc, f"sqlite:///{tmp_path / 'l.db'}", max_timeout_seconds=10)
    with Server(site) as server:
        url = f"{server.url}/report"
        offer = exact_offer_of(httpx.get(url))
        assert offer.max_timeout_seconds == 10
        before = rusdc.balance_of(rnode.site.address)
        payment = signed(offer, reader, valid_before=int(time.time()) + 3600)
        first = pay(url, payment)
        assert first.status_code == 200, first.text
        time.sleep(12)  # past maxTimeoutSeconds: a retry of a lost response is long over
        served = [pay(url, payment).status_code for _ in range(5)]
        assert rusdc.balance_of(rnode.site.address) == before + PRICE  # paid once
        # Past maxTimeoutSeconds the payment buys nothing more.
        assert served == [402] * 5, f"one payment served {1 + served.count(200)} times"
