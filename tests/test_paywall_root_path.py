"""The paywall under a root path, on a real uvicorn and the session's chain: priced routes are
matched on the path the app routes on (``uvicorn --root-path``, Starlette ``Mount``), and a
handler that expects a payment never runs without one."""

from __future__ import annotations

import httpx
import pytest
from paywall_helpers import Server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from micropay.example_site import create_site
from micropay.http_client import HttpPayer, PaymentPolicy, PaymentTransport
from micropay.payee import Payee
from micropay.paywall import Paywall, route_path

PRICE = 10**13
ARTICLE = "/articles/vouchers-explained"


@pytest.fixture
def site(w3, actors, channels):
    return create_site(w3, site_key=actors.payee, contract=channels.address, price=PRICE)


def _paid_and_unpaid(base: str, payer: HttpPayer, site) -> None:
    """Unpaid: a 402 and nothing charged. Paid: the article, charged once."""
    unpaid = httpx.get(base + ARTICLE)
    assert unpaid.status_code == 402, unpaid.text
    assert unpaid.json()["error"] == "payment_required"
    assert site.payee.book.channel_ids() == []
    with httpx.Client(transport=PaymentTransport(payer)) as client:
        paid = client.get(base + ARTICLE)
    assert paid.status_code == 200, paid.text
    [channel_id] = site.payee.book.channel_ids()
    assert site.payee.book.best(channel_id).cumulative_amount == PRICE


def test_a_site_served_with_a_root_path_charges_its_priced_routes(w3, actors, site):
    payer = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE))
    with Server(site.app, root_path="/news") as server:  # as `uvicorn --root-path /news`
        _paid_and_unpaid(server.url, payer, site)


def test_a_site_mounted_under_a_prefix_charges_its_priced_routes(w3, actors, site):
    async def home(request: Request) -> Response:
        return JSONResponse({"free": True})

    outer = Starlette(routes=[Route("/", home), Mount("/shop", app=site.app)])
    payer = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE))
    with Server(outer) as server:
        assert httpx.get(server.url + "/").json() == {"free": True}
        _paid_and_unpaid(server.url + "/shop", payer, site)


@pytest.mark.parametrize("wiring", ["wrapped", "add_middleware"])
def test_a_handler_expecting_payment_on_an_unpriced_route_never_runs_its_paid_part(
    w3, actors, channels, wiring
):
    """The price table misses a route whose handler reads the payment: a 403 naming it, not
    free content and not a 500; a handler that takes payment optionally still runs."""
    served: list[str] = []

    async def extra(request: Request) -> Response:
        payment = request.state.payment
        served.append(payment.payer)  # the paid part: must not run unpaid
        return JSONResponse({"paid_by": payment.payer})

    async def maybe(request: Request) -> Response:
        payment = request.state.payment
        return JSONResponse({"paid": bool(payment)})

    pages = Starlette(routes=[Route("/extras/{slug}", extra), Route("/maybe", maybe)])
    options = {"payee": Payee(channels, actors.payee), "prices": {"GET /articles/{slug}": PRICE}}
    if wiring == "wrapped":  # the app's own error page (a 500) is inside the paywall
        app = Paywall(pages, **options)
    else:  # the error page is outside: the exception reaches the paywall first
        pages.add_middleware(Paywall, **options)
        app = pages
    with Server(app) as server:
        refused = httpx.get(server.url + "/extras/bonus")
        assert refused.status_code == 403
        assert refused.json()["error"] == "route_not_priced"
        assert "GET /extras/bonus" in refused.json()["message"]
        assert served == []
        assert httpx.get(server.url + "/maybe").json() == {"paid": False}


@pytest.mark.offchain
@pytest.mark.parametrize(
    ("path", "root", "route"),
    [
        ("/news/articles/a", "/news", "/articles/a"),
        ("/news", "/news", "/"),
        ("/newsroom/a", "/news", "/newsroom/a"),  # not under the root: as it is
        ("/articles/a", "/news", "/articles/a"),  # a server that already stripped it
        ("/articles/a", "", "/articles/a"),
    ],
)
def test_the_route_path_drops_the_root_path_only_at_a_segment_boundary(path, root, route):
    assert route_path({"path": path, "root_path": root}) == route
