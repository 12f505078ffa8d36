"""The paying HTTP clients: consumer protection before signing, persistence, recovery
after lost state without paying twice, and refusing a site that breaks the protocol."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import SimpleNamespace

import httpx
import pytest
import requests
from eth_account import Account
from paywall_helpers import Server, chain

from micropay._x402 import ChannelView, Offer, PaymentPayload, PaymentRequired, Reason, Receipt
from micropay.errors import (
    DepositLimitError,
    HostileSiteError,
    OfferNotAllowedError,
    PayerStoreError,
    PaymentPolicyError,
    PaymentProtocolError,
    PriceLimitError,
    SpendingLimitError,
)
from micropay.example_site import create_site
from micropay.http_client import (
    AsyncPaymentTransport,
    DepositPolicy,
    HttpPayer,
    PaymentPolicy,
    PaymentTransport,
    derive_session_key,
    site_of,
)
from micropay.payee import MemoryVoucherBook, Payee
from micropay.paywall import Paywall
from micropay.requests_adapter import PaymentAdapter
from micropay.vouchers import ZERO_ADDRESS, VoucherDomain
from micropay.wallet import Wallet

PRICE = 10**13
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
SITE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OFFER = Offer(PRICE, ZERO_ADDRESS, SITE, VoucherDomain(31337, CONTRACT), 10 * PRICE, 7200)


# -- policy, keys and store (no chain) -------------------------------------------------------


def offline_payer(policy: PaymentPolicy) -> HttpPayer:
    w3 = SimpleNamespace(eth=SimpleNamespace(chain_id=31337))
    account = SimpleNamespace(address=SITE, key=b"\x01" * 32)
    return HttpPayer(w3, account, policy)  # type: ignore[arg-type]


@pytest.mark.offchain
def test_deposit_policy_sizes_the_deposit_within_its_cap():
    assert DepositPolicy(requests=100).amount(OFFER) == 100 * PRICE
    assert DepositPolicy(requests=2).amount(OFFER) == 10 * PRICE  # the site's minimum
    assert DepositPolicy(requests=100, maximum=50 * PRICE).amount(OFFER) == 50 * PRICE
    with pytest.raises(DepositLimitError):
        DepositPolicy(maximum=5 * PRICE).amount(OFFER)
    # 1000 prices by default, whatever the deposit asked for; None lifts the cap.
    assert DepositPolicy(requests=2000).amount(OFFER) == 1000 * PRICE
    assert DepositPolicy(requests=2000, max_requests=None).amount(OFFER) == 2000 * PRICE
    with pytest.raises(DepositLimitError, match="above the cap of 5000"):
        DepositPolicy(max_requests=5).amount(replace(OFFER, price=1000))


@pytest.mark.offchain
@pytest.mark.parametrize(
    ("policy", "error"),
    [
        (
            PaymentPolicy(max_price=PRICE - 1, trusted_contracts=frozenset([CONTRACT])),
            PriceLimitError,
        ),
        (
            PaymentPolicy(
                max_price=PRICE,
                networks=frozenset(["eip155:1"]),
                trusted_contracts=frozenset([CONTRACT]),
            ),
            OfferNotAllowedError,
        ),
        (
            PaymentPolicy(
                max_price=PRICE,
                assets=frozenset(["0x" + "11" * 20]),
                trusted_contracts=frozenset([CONTRACT]),
            ),
            OfferNotAllowedError,
        ),
        (
            PaymentPolicy(max_price=PRICE, trusted_contracts=frozenset(["0x" + "22" * 20])),
            OfferNotAllowedError,
        ),
        (
            PaymentPolicy(
                max_price=PRICE, max_withdraw_delay=3600, trusted_contracts=frozenset([CONTRACT])
            ),
            OfferNotAllowedError,
        ),
    ],
)
def test_offers_outside_the_policy_are_refused_before_anything_happens(policy, error):
    with pytest.raises(error):
        offline_payer(policy).choose(PaymentRequired((OFFER,)))


@pytest.mark.offchain
@pytest.mark.parametrize(
    "fields",
    [
        {"max_price": -1},
        {"max_price": 1.5},
        {"expected_requests": 0},
        {"channel_open_cost": -1},
        {"max_spend_per_site": -5},
        {"max_spend_per_period": 2.5},
        {"period": 0},
    ],
    ids=lambda fields: next(iter(fields)),
)
def test_a_policy_that_cannot_mean_what_it_says_is_refused_when_made(fields):
    values = {"max_price": 10, **fields}
    with pytest.raises(PaymentPolicyError, match=next(iter(fields))):
        PaymentPolicy(**values)


@pytest.mark.offchain
def test_an_offer_on_another_chain_is_refused():
    other = Offer(PRICE, ZERO_ADDRESS, SITE, VoucherDomain(1, CONTRACT), PRICE, 7200)
    policy = PaymentPolicy(max_price=PRICE, trusted_contracts=frozenset([CONTRACT]))
    with pytest.raises(OfferNotAllowedError, match="no node for eip155:1"):
        offline_payer(policy).choose(PaymentRequired((other,)))


@pytest.mark.offchain
def test_session_keys_are_derived_again_from_the_payer_key_alone():
    account = SimpleNamespace(key=b"\x07" * 32)
    first = derive_session_key(account, 1, CONTRACT, SITE, ZERO_ADDRESS, 0)
    assert first.address == derive_session_key(account, 1, CONTRACT, SITE, ZERO_ADDRESS, 0).address
    others = {
        derive_session_key(account, 1, CONTRACT, SITE, ZERO_ADDRESS, 1).address,
        derive_session_key(account, 2, CONTRACT, SITE, ZERO_ADDRESS, 0).address,
        derive_session_key(account, 1, CONTRACT, CONTRACT, ZERO_ADDRESS, 0).address,
    }
    assert first.address not in others and len(others) == 3


@pytest.mark.offchain
def test_a_corrupt_store_is_an_error_not_a_blank_slate(tmp_path):
    path = tmp_path / "store.json"
    path.write_text("{not json")
    with pytest.raises(PayerStoreError, match="unreadable"):
        Wallet(path)


# -- against a real site on anvil ------------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> Iterator:
    with chain() as c:
        yield c


@pytest.fixture
def site(node):
    site = create_site(node.w3, site_key=node.site, contract=node.channels.address, price=PRICE)
    with Server(site.app) as server:
        yield SimpleNamespace(site=site, url=server.url, book=site.payee.book)


def read(site, payer, count, path="/articles/vouchers-explained"):
    with httpx.Client(base_url=site.url, transport=PaymentTransport(payer)) as client:
        for _ in range(count):
            response = client.get(path)
            assert response.status_code == 200, response.text


def held(site) -> list[int]:
    return [site.book.best(cid).cumulative_amount for cid in site.book.channel_ids()]


@pytest.mark.standalone
def test_the_site_cap_stops_payment_before_signing(node, site):
    payer = HttpPayer(
        node.w3, node.readers[0], PaymentPolicy(max_price=PRICE, max_spend_per_site=3 * PRICE)
    )
    read(site, payer, 3)
    with pytest.raises(SpendingLimitError, match="above its cap"):
        read(site, payer, 1)
    assert held(site) == [3 * PRICE]


@pytest.mark.standalone
def test_the_period_cap_counts_every_site(node, site):
    payer = HttpPayer(
        node.w3,
        node.readers[1],
        PaymentPolicy(max_price=PRICE, max_spend_per_period=2 * PRICE, period=60),
    )
    read(site, payer, 2)
    with pytest.raises(SpendingLimitError, match="within 60 s"):
        read(site, payer, 1)
    assert held(site) == [2 * PRICE]


@pytest.mark.standalone
def test_a_price_above_the_cap_opens_no_channel(node, site):
    reader = node.readers[2]
    nonce = node.w3.eth.get_transaction_count(reader.address)
    payer = HttpPayer(node.w3, reader, PaymentPolicy(max_price=PRICE - 1))
    with pytest.raises(PriceLimitError):
        read(site, payer, 1)
    assert node.w3.eth.get_transaction_count(reader.address) == nonce
    assert held(site) == []


@pytest.mark.standalone
def test_a_lost_store_is_recovered_from_the_chain_and_each_request_paid_once(node, site, tmp_path):
    reader = node.readers[3]
    store = tmp_path / "reader.json"
    read(site, HttpPayer(node.w3, reader, PaymentPolicy(max_price=PRICE), store=store), 5)
    [channel_id] = site.book.channel_ids()
    deposited = node.channels.state(channel_id).deposited
    store.unlink()
    again = HttpPayer(node.w3, reader, PaymentPolicy(max_price=PRICE), store=store)
    read(site, again, 5)
    assert site.book.channel_ids() == [channel_id]  # the same channel, found on chain
    assert held(site) == [10 * PRICE]
    assert node.channels.state(channel_id).deposited == deposited  # no second deposit


@pytest.mark.standalone
def test_a_stale_store_is_corrected_by_the_sites_signed_view(node, site, tmp_path):
    reader = node.readers[4]
    store, backup = tmp_path / "reader.json", tmp_path / "backup.json"
    payer = HttpPayer(node.w3, reader, PaymentPolicy(max_price=PRICE), store=store)
    read(site, payer, 3)
    shutil.copy(store, backup)
    read(site, payer, 4)
    shutil.copy(backup, store)  # the client forgets its last four payments
    restored = HttpPayer(node.w3, reader, PaymentPolicy(max_price=PRICE), store=store)
    read(site, restored, 3)
    assert held(site) == [10 * PRICE]
    # What the site held beyond the stale record is counted as spent again.
    assert restored.store.site_spend(site_of(site.url)) == 10 * PRICE


@pytest.mark.standalone
def test_after_the_site_loses_its_book_the_client_pays_on_top_of_the_claimed_total(node, tmp_path):
    site = create_site(node.w3, site_key=node.site, contract=node.channels.address, price=PRICE)
    payer = HttpPayer(node.w3, node.readers[5], PaymentPolicy(max_price=PRICE))
    with Server(site.app) as server:
        read(SimpleNamespace(url=server.url), payer, 4)
    [channel_id] = site.payee.book.channel_ids()
    site.payee.claim(channel_id)
    amnesiac = create_site(
        node.w3,
        site_key=node.site,
        contract=node.channels.address,
        price=PRICE,
        book=MemoryVoucherBook(),
    )
    with Server(amnesiac.app) as server:
        read(SimpleNamespace(url=server.url), payer, 2)  # its view: 4 prices, claimed on chain
    assert amnesiac.payee.book.best(channel_id).cumulative_amount == 6 * PRICE


@pytest.mark.standalone
def test_the_async_transport_and_the_requests_adapter_share_the_channel(node, site):
    payer = HttpPayer(node.w3, node.readers[6], PaymentPolicy(max_price=PRICE))

    async def read_async():
        transport = AsyncPaymentTransport(payer)
        async with httpx.AsyncClient(base_url=site.url, transport=transport) as client:
            responses = await asyncio.gather(
                *(client.get("/articles/fees-eat-micropayments") for _ in range(6))
            )
        return [r.status_code for r in responses]

    assert asyncio.run(read_async()) == [200] * 6
    session = requests.Session()
    session.mount("http://", PaymentAdapter(payer))
    for _ in range(3):
        assert session.get(site.url + "/articles/leaving-a-channel").status_code == 200
    assert held(site) == [9 * PRICE]


# -- a site that breaks the protocol -----------------------------------------------------------


def tampering(app, change):
    """ASGI middleware that rewrites the paywall's answers on their way out."""

    async def middleware(scope, receive, send):
        async def send_changed(message):
            await send(change(message) if message["type"] == "http.response.start" else message)

        await app(scope, receive, send_changed)

    return middleware


@pytest.mark.standalone
def test_a_view_the_client_never_signed_is_refused(node):
    site = create_site(node.w3, site_key=node.site, contract=node.channels.address, price=PRICE)

    def lie(message):
        if message["status"] != 200:
            return message
        offer = site.app.offer(PRICE)
        view = ChannelView(bytes(32), 50 * PRICE, b"\x11" * 64 + b"\x1b")
        for name, value in message["headers"]:
            if name == b"payment-response":
                view = ChannelView(
                    Receipt.decode(value).channel_id, 50 * PRICE, b"\x11" * 64 + b"\x1b"
                )
        required = PaymentRequired((offer,), Reason.CUMULATIVE_MISMATCH, "", "", view)
        return {
            "type": "http.response.start",
            "status": 402,
            "headers": [(b"payment-required", required.encode().encode())],
        }

    payer = HttpPayer(node.w3, node.readers[7], PaymentPolicy(max_price=PRICE))
    with (
        Server(tampering(site.app, lie)) as server,
        pytest.raises(PaymentProtocolError, match="never signed"),
    ):
        read(SimpleNamespace(url=server.url), payer, 1)


@pytest.mark.standalone
def test_a_receipt_that_contradicts_the_voucher_is_refused(node):
    site = create_site(node.w3, site_key=node.site, contract=node.channels.address, price=PRICE)

    def overcharge(message):
        headers = []
        for name, value in message["headers"]:
            if name == b"payment-response":
                receipt = Receipt.decode(value)
                value = (
                    Receipt(
                        receipt.network,
                        receipt.payer,
                        receipt.channel_id,
                        2 * PRICE,
                        receipt.cumulative_amount,
                        0,
                    )
                    .encode()
                    .encode()
                )
            headers.append((name, value))
        return {**message, "headers": headers}

    payer = HttpPayer(node.w3, node.readers[0], PaymentPolicy(max_price=PRICE))
    with (
        Server(tampering(site.app, overcharge)) as server,
        pytest.raises(PaymentProtocolError, match="does not match"),
    ):
        read(SimpleNamespace(url=server.url), payer, 1)


@pytest.mark.standalone
def test_a_contract_that_is_not_payment_channels_is_not_trusted(node):
    site = create_site(node.w3, site_key=node.site, contract=node.channels.address, price=PRICE)
    fake = Offer(
        PRICE,
        ZERO_ADDRESS,
        node.site.address,
        VoucherDomain(node.w3.eth.chain_id, node.site.address),
        PRICE,
        7200,
    )

    def swap(message):
        required = PaymentRequired((fake,))
        return {**message, "headers": [(b"payment-required", required.encode().encode())]}

    payer = HttpPayer(node.w3, node.readers[1], PaymentPolicy(max_price=PRICE))
    with (
        Server(tampering(site.app, swap)) as server,
        pytest.raises(OfferNotAllowedError, match="not micropay's PaymentChannels"),
    ):
        read(SimpleNamespace(url=server.url), payer, 1)


# -- a site that lies to be paid twice, on the session's chain (in-process, anvil) -------------


class Turncoat:
    """A real site that can turn: it serves honestly, echoes each voucher it is sent back as
    its "stale" view of the channel (``echo``), calls the open channel unknown
    (``unknown``), asks to be paid to another payee after each voucher (``new_payee``), or
    serves one request and loses the answer (``lose_answer``). ``received`` is every total
    it was sent a voucher for, ``channels`` the channel of each."""

    def __init__(self, site) -> None:
        self.app = site.app
        self.mode = "honest"
        self.received: list[int] = []
        self.channels: list[bytes] = []
        self.payees = iter(Account.create().address for _ in range(10))

    async def __call__(self, scope, receive, send):
        header = dict(scope.get("headers", [])).get(b"payment-signature")
        if header is None:
            return await self.app(scope, receive, send)
        voucher = PaymentPayload.decode(header).voucher
        self.received.append(voucher.cumulative_amount)
        self.channels.append(voucher.channel_id)
        offer = self.app.offer(PRICE)
        if self.mode == "echo":
            view = ChannelView(voucher.channel_id, voucher.cumulative_amount, voucher.signature)
            required = PaymentRequired((offer,), Reason.STALE_VOUCHER, "", "", view)
            return await refuse(send, required)
        if self.mode == "unknown":
            return await refuse(send, PaymentRequired((offer,), Reason.UNKNOWN_CHANNEL, "", ""))
        if self.mode == "new_payee":
            elsewhere = replace(offer, pay_to=next(self.payees))
            return await refuse(send, PaymentRequired((elsewhere,), Reason.PRICE_MISMATCH, "", ""))
        if self.mode == "lose_answer":  # served and recorded, but the answer never arrives
            self.mode = "honest"

            async def lost(message):
                pass

            await self.app(scope, receive, lost)
            await send({"type": "http.response.start", "status": 502, "headers": []})
            return await send({"type": "http.response.body", "body": b""})
        return await self.app(scope, receive, send)


async def refuse(send, required: PaymentRequired) -> None:
    headers = [(b"payment-required", required.encode().encode())]
    await send({"type": "http.response.start", "status": 402, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def turncoat(w3, actors, channels):
    site = create_site(w3, site_key=actors.payee, contract=channels.address, price=PRICE)
    app = Turncoat(site)
    with Server(app) as server:
        yield SimpleNamespace(app=app, url=server.url, book=site.payee.book, payee=site.payee)


def test_a_site_echoing_the_voucher_it_was_sent_gets_one_price_per_request(w3, actors, turncoat):
    payer = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE))
    read(turncoat, payer, 3)  # the site acknowledged 3 prices
    turncoat.app.mode = "echo"
    with pytest.raises(HostileSiteError) as raised:
        read(turncoat, payer, 1)
    assert max(turncoat.app.received) == 4 * PRICE  # base + one price, not max_rounds of them
    assert raised.value.site == site_of(turncoat.url)
    assert raised.value.claimed == 4 * PRICE
    assert str(raised.value).startswith(f"{site_of(turncoat.url)} claims a total of {4 * PRICE}")
    # Refusing again costs one more price at most: the site holds the last voucher anyway.
    with pytest.raises(HostileSiteError):
        read(turncoat, payer, 1)
    assert max(turncoat.app.received) == 5 * PRICE
    assert held(turncoat) == [3 * PRICE]  # the honest book; the echoes were never served


def test_a_site_calling_an_open_channel_unknown_gets_one_price_and_keeps_the_channel(
    w3, actors, turncoat
):
    payer = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE))
    read(turncoat, payer, 2)
    turncoat.app.mode = "unknown"
    with httpx.Client(base_url=turncoat.url, transport=PaymentTransport(payer)) as client:
        assert client.get("/articles/vouchers-explained").status_code == 402
    # The chain shows the channel open: the client neither drops it nor opens another.
    assert turncoat.app.received == [PRICE, 2 * PRICE, 3 * PRICE]
    assert len(set(turncoat.app.channels)) == 1
    turncoat.app.mode = "honest"
    read(turncoat, payer, 1)  # the unserved voucher is re-sent, not a new price on top
    assert turncoat.app.received[-1] == 3 * PRICE and held(turncoat) == [3 * PRICE]


def test_a_site_asking_for_another_payee_each_round_gets_one_price_per_request(
    w3, actors, turncoat
):
    payer = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE))
    read(turncoat, payer, 1)
    nonce = w3.eth.get_transaction_count(actors.payer.address)
    turncoat.app.mode = "new_payee"
    with pytest.raises(HostileSiteError, match="asks to be paid on another channel") as raised:
        read(turncoat, payer, 1)
    # One price on the open channel; no channel opened for the new payee in this request.
    assert turncoat.app.received == [PRICE, 2 * PRICE]
    assert raised.value.site == site_of(turncoat.url) and raised.value.claimed == 2 * PRICE
    assert w3.eth.get_transaction_count(actors.payer.address) == nonce


def test_a_voucher_whose_answer_was_lost_is_built_on_after_a_restart(
    w3, actors, turncoat, tmp_path
):
    store = tmp_path / "reader.json"
    payer = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE), store=store)
    read(turncoat, payer, 2)
    turncoat.app.mode = "lose_answer"
    with httpx.Client(base_url=turncoat.url, transport=PaymentTransport(payer)) as client:
        assert client.get("/articles/vouchers-explained").status_code == 502
    assert held(turncoat) == [3 * PRICE]  # served: the site holds the third voucher
    # A new run re-sends that voucher; the site's stale view of it predates this request
    # (the store saved it before it was sent), so the client builds on it.
    restarted = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE), store=store)
    read(turncoat, restarted, 1)
    assert held(turncoat) == [4 * PRICE]
    assert turncoat.app.received == [PRICE, 2 * PRICE, 3 * PRICE, 3 * PRICE, 4 * PRICE]


def test_a_site_ahead_of_a_lost_store_is_followed_without_paying_twice(w3, actors, turncoat):
    read(turncoat, HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE)), 3)
    forgetful = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE))  # a blank store
    read(turncoat, forgetful, 2)
    assert held(turncoat) == [5 * PRICE]
    assert turncoat.app.received == [PRICE, 2 * PRICE, 3 * PRICE, PRICE, 4 * PRICE, 5 * PRICE]


def test_a_total_claimed_on_chain_is_built_on_by_a_client_whose_store_is_behind(
    w3, actors, channels, turncoat, tmp_path
):
    store, backup = tmp_path / "reader.json", tmp_path / "backup.json"
    read(turncoat, HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE), store=store), 1)
    shutil.copy(store, backup)
    read(turncoat, HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE), store=store), 2)
    [channel_id] = turncoat.book.channel_ids()
    turncoat.payee.claim(channel_id)
    shutil.copy(backup, store)  # the client is two payments behind...
    amnesiac = create_site(  # ...and the site kept nothing but what the chain shows claimed
        w3, site_key=actors.payee, contract=channels.address, price=PRICE, book=MemoryVoucherBook()
    )
    restored = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE), store=store)
    with Server(amnesiac.app) as server:
        read(SimpleNamespace(url=server.url), restored, 1)
    assert amnesiac.payee.book.best(channel_id).cumulative_amount == 4 * PRICE


# -- a site that asks for a large deposit ------------------------------------------------------

FIFTY_ETH = 50 * 10**18


@pytest.fixture
def greedy(w3, actors, channels):
    """A real paywall charging one README price per article but asking a 50 ETH deposit."""
    pages = create_site(w3, site_key=actors.payee, contract=channels.address, price=PRICE).app.app
    paywall = Paywall(
        pages,
        payee=Payee(channels, actors.payee),
        prices={"GET /articles/{slug}": PRICE},
        min_deposit=FIFTY_ETH,
    )
    app = Turncoat(SimpleNamespace(app=paywall))
    with Server(app) as server:
        yield SimpleNamespace(app=app, url=server.url, book=paywall.payee.book)


def test_a_deposit_far_above_the_price_is_refused_before_any_transaction(w3, actors, greedy):
    nonce = w3.eth.get_transaction_count(actors.payer.address)
    payer = HttpPayer(w3, actors.payer, PaymentPolicy(max_price=PRICE))  # the README's policy
    with pytest.raises(DepositLimitError, match=f"deposit of {FIFTY_ETH}, above the cap of"):
        read(greedy, payer, 1)
    assert w3.eth.get_transaction_count(actors.payer.address) == nonce  # nothing sent on chain
    assert greedy.app.received == []  # and no voucher signed for the site


def test_a_large_deposit_is_locked_only_when_the_policy_says_so(w3, actors, channels, greedy):
    policy = PaymentPolicy(max_price=PRICE, deposit=DepositPolicy(max_requests=None))
    read(greedy, HttpPayer(w3, actors.payer, policy), 1)
    [channel_id] = greedy.book.channel_ids()
    assert channels.state(channel_id).deposited == FIFTY_ETH


# -- the network failing mid-exchange ------------------------------------------------------------


class _DropsPaidRetries:
    """Loopback HTTP whose paid retries fail ``drops`` times before they leave the client, as
    a connection reset would: the site never sees those vouchers."""

    def __init__(self, inner, drops: int) -> None:
        self.inner, self.drops = inner, drops

    def _drop(self, request: httpx.Request) -> bool:
        if "payment-signature" in request.headers and self.drops:
            self.drops -= 1
            return True
        return False

    def handle_request(self, request):
        if self._drop(request):
            raise httpx.ConnectError("connection reset", request=request)
        return self.inner.handle_request(request)

    async def handle_async_request(self, request):
        if self._drop(request):
            raise httpx.ConnectError("connection reset", request=request)
        return await self.inner.handle_async_request(request)

    def close(self):
        self.inner.close()

    async def aclose(self):
        await self.inner.aclose()


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_request_lost_on_the_wire_frees_its_channel_and_its_share_of_the_caps(
    w3, actors, turncoat, driver
):
    """One exchange serves both transports; a failure while sending must release the
    channel's lock (else the next request waits forever) and what the request reserved
    against the site's cap (else the cap shrinks by a price per failure)."""
    payer = HttpPayer(
        w3, actors.payer, PaymentPolicy(max_price=PRICE, max_spend_per_site=2 * PRICE)
    )
    path = "/articles/vouchers-explained"

    def run_sync() -> list[object]:
        outcomes: list[object] = []
        inner = _DropsPaidRetries(httpx.HTTPTransport(), drops=2)
        with httpx.Client(base_url=turncoat.url, transport=PaymentTransport(payer, inner)) as c:
            for _ in range(5):
                try:
                    outcomes.append(c.get(path, timeout=30).status_code)
                except (httpx.ConnectError, SpendingLimitError) as err:
                    outcomes.append(type(err))
        return outcomes

    async def run_async() -> list[object]:
        outcomes: list[object] = []
        inner = _DropsPaidRetries(httpx.AsyncHTTPTransport(), drops=2)
        transport = AsyncPaymentTransport(payer, inner)
        async with httpx.AsyncClient(base_url=turncoat.url, transport=transport) as c:
            for _ in range(5):
                try:
                    outcomes.append((await asyncio.wait_for(c.get(path), 30)).status_code)
                except (httpx.ConnectError, SpendingLimitError) as err:
                    outcomes.append(type(err))
        return outcomes

    if driver == "sync":
        with ThreadPoolExecutor(1) as pool:  # a leaked lock would hang: bound the wait
            outcomes = pool.submit(run_sync).result(timeout=120)
    else:
        outcomes = asyncio.run(run_async())
    assert outcomes == [httpx.ConnectError, httpx.ConnectError, 200, 200, SpendingLimitError]
    assert turncoat.app.received == [PRICE, 2 * PRICE]  # the dropped vouchers never arrived
    assert held(turncoat) == [2 * PRICE]
