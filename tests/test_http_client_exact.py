"""micropay's own paying clients in x402's ``exact`` scheme: httpx (sync and async) and
requests pay micropay's paywall one EIP-3009 transfer per request, under the same policy
caps as ``channel``; the choice between the two schemes; a site that lies in its receipt;
and an unmodified x402 FastAPI server from the ``x402`` package, settling through the
package's own facilitator (``tests/x402_facilitator.py``).

Real parts: anvil, the USDC-like token, the paywall on uvicorn over loopback, a SQLite
ledger. Balances are checked to the base unit.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import requests
from eth_account import Account
from exact_helpers import PRICE, exact_site
from fastapi import FastAPI
from paywall_helpers import Server, chain
from x402 import x402ResourceServer
from x402.http import FacilitatorConfig, HTTPFacilitatorClient
from x402.http.middleware.fastapi import PaymentMiddlewareASGI
from x402.mechanisms.evm.exact import ExactEvmServerScheme
from x402_facilitator import x402_facilitator
from x402_models import Recorder, check_receipt

from micropay._eip3009 import AuthorizationToken
from micropay._x402 import Offer, OfferJSON, PaymentRequired, Reason
from micropay.errors import (
    OfferNotAllowedError,
    PriceLimitError,
    SettlementReceiptError,
    SpendingLimitError,
)
from micropay.exact import ExactOffer, ExactReceipt
from micropay.http_client import (
    AsyncPaymentTransport,
    HttpPayer,
    PaymentPolicy,
    PaymentTransport,
    site_of,
)
from micropay.requests_adapter import PaymentAdapter
from micropay.vouchers import VoucherDomain
from micropay.wallet import Wallet

pytestmark = pytest.mark.standalone

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CONTRACT = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
SITE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


# -- the rule between channel and exact (no chain) ---------------------------------------------


def offline_payer(policy: PaymentPolicy) -> HttpPayer:
    w3 = SimpleNamespace(eth=SimpleNamespace(chain_id=31337))
    account = SimpleNamespace(address=SITE, key=b"\x01" * 32)
    return HttpPayer(w3, account, policy)  # type: ignore[arg-type]


def both(channel_price: int, exact_price: int, exact_asset: str = TOKEN) -> PaymentRequired:
    channel = Offer(channel_price, TOKEN, SITE, VoucherDomain(31337, CONTRACT), 0, 3600)
    exact = ExactOffer(exact_price, exact_asset, SITE, 31337, "USD Coin", "2")
    return PaymentRequired((channel, OfferJSON("exact", exact.to_json())))


@pytest.mark.offchain
def test_a_channel_is_chosen_when_it_is_cheaper_for_the_expected_requests():
    # A channel at 9000 a request that costs 500000 to open, against exact at 10000:
    # 9000n + 500000 <= 10000n from n = 500 requests on.
    required = both(9_000, 10_000)

    def chosen(expected: int, open_cost: int = 500_000) -> str:
        policy = PaymentPolicy(
            max_price=10_000,
            trusted_contracts=frozenset({CONTRACT}),
            expected_requests=expected,
            channel_open_cost=open_cost,
        )
        offer = offline_payer(policy).choose_payment(required)
        return "channel" if isinstance(offer, Offer) else "exact"

    assert [chosen(n) for n in (1, 499, 500, 1000)] == ["exact", "exact", "channel", "channel"]
    assert chosen(1, open_cost=0) == "channel"  # nothing to open: the lower price wins
    policy = PaymentPolicy(max_price=10_000, expected_requests=1000, channel_open_cost=1)
    assert policy.prefers_channel(10_000, 10_000, channel_open=True)  # a tie: the channel
    assert not policy.prefers_channel(10_000, 10_000, channel_open=False)
    # Prices in two assets do not compare: the site's order stands.
    other = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"
    payer = offline_payer(PaymentPolicy(max_price=10**6, trusted_contracts=frozenset({CONTRACT})))
    assert isinstance(payer.choose_payment(both(10**6, 1, exact_asset=other)), Offer)


@pytest.mark.offchain
def test_an_exact_offer_outside_the_policy_is_refused_and_the_channel_is_paid():
    required = both(10_000, 1)
    trusted = frozenset({CONTRACT})
    elsewhere = PaymentPolicy(max_price=10_000, trusted_contracts=trusted, networks=frozenset())
    with pytest.raises(OfferNotAllowedError, match="network eip155:31337 is not allowed"):
        offline_payer(elsewhere).choose_payment(required)
    cheap = offline_payer(PaymentPolicy(max_price=10_000, trusted_contracts=trusted))
    assert isinstance(cheap.choose_payment(required), ExactOffer)  # 1 beats 10000
    other = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"
    only_other = PaymentPolicy(max_price=10_000, assets=frozenset({other}))
    with pytest.raises(OfferNotAllowedError, match=f"asset {TOKEN} is not allowed"):
        offline_payer(only_other).choose_payment(required)


# -- against micropay's paywall on anvil -------------------------------------------------------


@pytest.fixture(scope="module")
def xc_node() -> Iterator[Any]:
    with chain() as c:
        yield c


@pytest.fixture(scope="module")
def xc_usdc(xc_node: Any) -> AuthorizationToken:
    token = AuthorizationToken.deploy(xc_node.w3, xc_node.deployer, "USD Coin", "USDC")
    for reader in xc_node.readers:
        token.mint(reader.address, 10**9, xc_node.deployer)
    return token


@pytest.fixture
def xc_site(xc_node: Any, xc_usdc: AuthorizationToken, tmp_path: Any) -> Callable[..., Any]:
    """Serve the exact-helpers site (``schemes`` as asked), recording its x402 headers."""
    servers: list[Server] = []

    def serve(schemes: tuple[str, ...] = ("exact",), wrap: Any = None, timeout: float = 30) -> Any:
        app = exact_site(
            xc_node.w3,
            xc_node.channels.address,
            xc_usdc.address,
            xc_node.site,
            f"sqlite:///{tmp_path / f'l{len(servers)}.db'}",
            schemes=schemes,
            timeout=timeout,
        )
        recorder = Recorder(app)
        server = Server(recorder if wrap is None else wrap(recorder)).__enter__()
        servers.append(server)
        return SimpleNamespace(url=f"{server.url}/report", recorder=recorder)

    yield serve
    for server in servers:
        server.__exit__(None, None, None)


def balances(usdc: AuthorizationToken, *accounts: Any) -> list[int]:
    return [usdc.balance_of(a.address) for a in accounts]


def signatures_sent(site: Any) -> int:
    return sum(1 for name, _ in site.recorder.seen if name == "payment-signature")


def get_httpx(payer: HttpPayer, url: str) -> httpx.Response:
    with httpx.Client(transport=PaymentTransport(payer), timeout=60) as client:
        return client.get(url)


def get_async(payer: HttpPayer, url: str) -> httpx.Response:
    async def fetch() -> httpx.Response:
        async with httpx.AsyncClient(transport=AsyncPaymentTransport(payer), timeout=60) as c:
            return await c.get(url)

    return asyncio.run(fetch())


def get_requests(payer: HttpPayer, url: str) -> requests.Response:
    with requests.Session() as session:
        session.mount("http://", PaymentAdapter(payer))
        return session.get(url, timeout=60)


TRANSPORTS = {"httpx": get_httpx, "httpx-async": get_async, "requests": get_requests}


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_each_transport_pays_an_exact_only_route(xc_node, xc_usdc, xc_site, transport):
    get = TRANSPORTS[transport]
    reader = xc_node.readers[list(TRANSPORTS).index(transport)]
    site = xc_site()
    payer = HttpPayer(xc_node.w3, reader, PaymentPolicy(max_price=PRICE))
    before = balances(xc_usdc, reader, xc_node.site)
    eth_nonce = xc_node.w3.eth.get_transaction_count(reader.address)
    for _ in range(2):
        response = get(payer, site.url)
        assert response.status_code == 200, response.text
        assert response.text == f"report for {reader.address} (exact)"
        settled = check_receipt(response.headers["payment-response"])
        assert settled.success and settled.payer == reader.address
        receipt = ExactReceipt.decode(response.headers["payment-response"])
        tx = xc_node.w3.eth.get_transaction_receipt(receipt.transaction)
        assert tx["status"] == 1 and tx["from"] == xc_node.site.address
    assert balances(xc_usdc, reader, xc_node.site) == [before[0] - 2 * PRICE, before[1] + 2 * PRICE]
    assert xc_node.w3.eth.get_transaction_count(reader.address) == eth_nonce  # no gas paid
    assert payer.store.site_spend(site_of(site.url)) == 2 * PRICE  # each counted once
    counts = site.recorder.check_all()  # every header both ways is valid x402
    assert counts == {"payment-required": 2, "payment-signature": 2, "payment-response": 2}


def test_policy_refusals_sign_nothing_and_move_nothing(xc_node, xc_usdc, xc_site):
    reader = xc_node.readers[3]
    site = xc_site()
    other = Account.create().address
    refusals = [
        (PaymentPolicy(max_price=PRICE - 1), PriceLimitError),
        (PaymentPolicy(max_price=PRICE, assets=frozenset({other})), OfferNotAllowedError),
        (PaymentPolicy(max_price=PRICE, networks=frozenset({"eip155:1"})), OfferNotAllowedError),
        (PaymentPolicy(max_price=PRICE, max_spend_per_site=PRICE - 1), SpendingLimitError),
        (PaymentPolicy(max_price=PRICE, max_spend_per_period=PRICE - 1), SpendingLimitError),
    ]
    before = balances(xc_usdc, reader, xc_node.site)
    for policy, error in refusals:
        with pytest.raises(error):
            get_httpx(HttpPayer(xc_node.w3, reader, policy), site.url)
    assert signatures_sent(site) == 0
    assert balances(xc_usdc, reader, xc_node.site) == before
    # The caps count what was paid: one payment fits, the next would cross them.
    for cap in ({"max_spend_per_site": PRICE}, {"max_spend_per_period": PRICE, "period": 600}):
        payer = HttpPayer(xc_node.w3, reader, PaymentPolicy(max_price=PRICE, **cap))
        assert get_httpx(payer, site.url).status_code == 200
        with pytest.raises(SpendingLimitError):
            get_requests(payer, site.url)
    assert signatures_sent(site) == 2
    assert balances(xc_usdc, reader, xc_node.site) == [before[0] - 2 * PRICE, before[1] + 2 * PRICE]


def test_with_both_schemes_offered_the_rule_picks_each_way(xc_node, xc_usdc, xc_site):
    site = xc_site(schemes=("channel", "exact"))
    fresh, returning = xc_node.readers[4], xc_node.readers[5]
    # Same price both ways: opening a channel that costs anything makes exact cheaper...
    costly = PaymentPolicy(max_price=PRICE, expected_requests=1000, channel_open_cost=1)
    before = balances(xc_usdc, fresh)
    response = get_httpx(HttpPayer(xc_node.w3, fresh, costly), site.url)
    assert response.text == f"report for {fresh.address} (exact)"
    assert balances(xc_usdc, fresh) == [before[0] - PRICE]
    # ... and a free opening makes the channel cheaper (a tie goes to the channel).
    store = Wallet()
    payer = HttpPayer(xc_node.w3, returning, PaymentPolicy(max_price=PRICE), store=store)
    response = get_httpx(payer, site.url)
    assert response.text == f"report for {returning.address} (channel)"
    # Once the channel is open its cost is spent: even a costly policy stays on it.
    payer = HttpPayer(xc_node.w3, returning, costly, store=store)
    for _ in range(2):
        assert get_httpx(payer, site.url).text == f"report for {returning.address} (channel)"
    assert len(store.channels()) == 1
    assert store.site_spend(site_of(site.url)) == 3 * PRICE


def tampered(change: Callable[[dict[str, Any]], None]) -> Any:
    """ASGI middleware that rewrites the site's PAYMENT-RESPONSE with ``change``."""

    def wrap(app: Any) -> Any:
        async def lying(scope: Any, receive: Any, send: Any) -> None:
            async def rewrite(message: Any) -> None:
                if message["type"] == "http.response.start":
                    headers = []
                    for name, value in message.get("headers", ()):
                        if name.lower() == b"payment-response":
                            obj = json.loads(base64.b64decode(value))
                            change(obj)
                            value = base64.b64encode(json.dumps(obj).encode())
                        headers.append((name, value))
                    message = {**message, "headers": headers}
                await send(message)

            await app(scope, receive, rewrite)

        return lying

    return wrap


LIES: dict[str, Callable[[dict[str, Any]], None]] = {
    "another payer": lambda r: r.update(payer=Account.create().address),
    "another amount": lambda r: r.update(amount=str(PRICE - 1)),
    "another network": lambda r: r.update(network="eip155:1"),
    "no transaction": lambda r: r.update(transaction=""),
    "no success": lambda r: r.update(success=False),
}


@pytest.mark.parametrize("lie", list(LIES))
def test_a_receipt_that_is_not_this_settlement_is_named(xc_node, xc_usdc, xc_site, lie):
    reader = xc_node.readers[6]
    site = xc_site(wrap=tampered(LIES[lie]))
    payer = HttpPayer(xc_node.w3, reader, PaymentPolicy(max_price=PRICE))
    before = balances(xc_usdc, reader)
    with pytest.raises(SettlementReceiptError, match="PAYMENT-RESPONSE") as raised:
        get_httpx(payer, site.url)
    assert raised.value.site == site_of(site.url)
    # The site holds the authorization and settled it: counted once, as it was paid.
    assert balances(xc_usdc, reader) == [before[0] - PRICE]
    assert payer.store.site_spend(site_of(site.url)) == PRICE


class LosesFirstAnswer(httpx.BaseTransport):
    """Delivers every request, but drops the answer to the first paid one (a lost
    response after the site settled)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.paid: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if "payment-signature" in request.headers:
            self.paid.append(request.headers["payment-signature"])
            if len(self.paid) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset", request=request)
        return response


def test_a_request_resent_after_a_lost_answer_resends_the_same_authorization(
    xc_node, xc_usdc, xc_site
):
    reader = xc_node.readers[7]
    site = xc_site()
    payer = HttpPayer(xc_node.w3, reader, PaymentPolicy(max_price=PRICE))
    before = balances(xc_usdc, reader, xc_node.site)
    inner = LosesFirstAnswer()
    with httpx.Client(transport=PaymentTransport(payer, inner), timeout=60) as client:
        with pytest.raises(httpx.ReadError):
            client.get(site.url)
        response = client.get(site.url)  # the caller tries again
        assert response.status_code == 200, response.text
    assert len(inner.paid) == 2 and inner.paid[0] == inner.paid[1]  # sent again, not re-signed
    assert balances(xc_usdc, reader, xc_node.site) == [before[0] - PRICE, before[1] + PRICE]
    assert payer.store.site_spend(site_of(site.url)) == PRICE
    # A new request after that is a new payment.
    assert get_httpx(payer, site.url).status_code == 200
    assert balances(xc_usdc, reader) == [before[0] - 2 * PRICE]


def test_a_payment_the_site_is_still_settling_is_sent_again_never_signed_again(
    xc_node, xc_usdc, xc_site
):
    w3 = xc_node.w3
    reader = Account.create()
    xc_usdc.mint(reader.address, 10 * PRICE, xc_node.deployer)
    site = xc_site(timeout=0.5)
    payer = HttpPayer(w3, reader, PaymentPolicy(max_price=PRICE, max_spend_per_site=PRICE))
    before = balances(xc_usdc, reader, xc_node.site)
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        # settlement_timeout, then settlement_pending: the same authorization each time,
        # until the rounds run out and the 409 is handed back.
        response = get_httpx(payer, site.url)
        assert response.status_code == 409, response.text
        assert response.json()["error"] == Reason.SETTLEMENT_PENDING
        w3.provider.make_request("evm_mine", [])
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
    # Still reserved against the site's cap, and sent again by the next request: served.
    response = get_httpx(payer, site.url)
    assert response.status_code == 200, response.text
    sent = [v for name, v in site.recorder.seen if name == "payment-signature"]
    assert len(sent) == payer.max_rounds + 1 and len(set(sent)) == 1
    assert balances(xc_usdc, reader, xc_node.site) == [before[0] - PRICE, before[1] + PRICE]
    assert payer.store.site_spend(site_of(site.url)) == PRICE
    with pytest.raises(SpendingLimitError):  # the cap of one price is reached: no more
        get_httpx(payer, site.url)


def test_a_402_after_an_exact_payment_is_handed_back_and_held_until_its_window_closes(
    xc_node, xc_usdc, xc_site
):
    penniless = Account.create()  # holds no token: the site cannot settle its transfer
    site = xc_site()
    payer = HttpPayer(xc_node.w3, penniless, PaymentPolicy(max_price=PRICE))
    before = balances(xc_usdc, xc_node.site)
    response = get_requests(payer, site.url)
    assert response.status_code == 402
    assert response.json()["error"] == Reason.INSUFFICIENT_FUNDS
    assert signatures_sent(site) == 1  # signed once, not again
    assert balances(xc_usdc, xc_node.site) == before
    assert payer.store.site_spend(site_of(site.url)) == 0
    # The site still holds the authorization until its window closes (it could settle it
    # later): its price stays reserved, and the next request sends the same one again
    # rather than a second authorization.
    assert payer._reserved[site_of(site.url)] == PRICE
    assert get_requests(payer, site.url).status_code == 402
    assert signatures_sent(site) == 2
    assert payer._reserved[site_of(site.url)] == PRICE
    assert payer.store.site_spend(site_of(site.url)) == 0


# -- an unmodified x402 server, settling through x402's own facilitator ------------------------


def x402_weather_app(facilitator_url: str, pay_to: str, usdc: AuthorizationToken) -> Any:
    """A FastAPI app paywalled by the ``x402`` package alone: its middleware, an
    x402ResourceServer with the package's exact EVM server scheme, and an HTTP
    facilitator client pointed at ``facilitator_url``."""
    domain = usdc.domain()
    network = f"eip155:{domain.chain_id}"
    server = x402ResourceServer(HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url)))
    server.register(network, ExactEvmServerScheme())
    price = {
        "amount": str(PRICE),
        "asset": usdc.address,
        "extra": {"name": domain.name, "version": domain.version},
    }
    accepts = {"scheme": "exact", "payTo": pay_to, "price": price, "network": network}
    routes = {"GET /weather": {"accepts": accepts}}
    app = FastAPI()

    @app.get("/weather")
    async def weather() -> dict[str, str]:
        return {"weather": "sunny"}

    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)
    return app


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_micropay_pays_an_unmodified_x402_server_and_facilitator(xc_node, xc_usdc, transport):
    w3 = xc_node.w3
    reader = Account.create()  # holds the token and no ETH: exact needs none
    xc_usdc.mint(reader.address, 10 * PRICE, xc_node.deployer)
    pay_to = xc_node.site.address
    before = balances(xc_usdc, reader, xc_node.site)
    with x402_facilitator(w3, xc_node.deployer) as facilitator:
        recorder = Recorder(x402_weather_app(facilitator.url, pay_to, xc_usdc))
        with Server(recorder) as server:
            url = f"{server.url}/weather"
            policy = PaymentPolicy(max_price=PRICE, assets=frozenset({xc_usdc.address}))
            payer = HttpPayer(w3, reader, policy)
            response = TRANSPORTS[transport](payer, url)
            assert response.status_code == 200, response.text
            assert response.json() == {"weather": "sunny"}
            settled = check_receipt(response.headers["payment-response"])
            assert settled.success and settled.payer == reader.address
            assert settled.network == f"eip155:{w3.eth.chain_id}"
            tx = w3.eth.get_transaction_receipt(settled.transaction)
            assert tx["status"] == 1 and tx["from"] == facilitator.address
    assert balances(xc_usdc, reader, xc_node.site) == [before[0] - PRICE, before[1] + PRICE]
    assert payer.store.site_spend(site_of(url)) == PRICE
    counts = recorder.check_all()  # x402's models read what micropay sent
    assert counts["payment-signature"] == 1 and counts["payment-response"] == 1
