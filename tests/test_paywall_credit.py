"""Prepaid credit end to end: a real uvicorn on loopback, the real HttpPayer, the real
contract on anvil and a SQLite ledger (PostgreSQL too where a fixture says so).

One voucher prepays up to k requests; the paid answer carries a ``PAYMENT-CREDIT`` token
bound to the channel, the prepaid ceiling and the price; the next requests carry the token
and are charged one price each against the ceiling, in the ledger, before they are
answered. Refused: forged, foreign, superseded and spent tokens. A server restarted (a
real process, SIGKILLed) loses no credit and grants none twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from paywall_helpers import Server, chain, fund, paying, receipt_of
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from micropay._x402 import PaymentRequired
from micropay.credit import CreditKey, CreditToken, peek
from micropay.devnode import free_port
from micropay.errors import PriceLimitError
from micropay.http_client import HttpPayer, PaymentPolicy, PaymentTransport
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall, UpTo

pytestmark = pytest.mark.standalone
pytest_plugins = ["ledger_fixtures"]

PRICE = 10**12
K = 5
SITE = Path(__file__).resolve().parent / "credit_site.py"


@pytest.fixture(scope="module")
def credit_node() -> Iterator:
    with chain() as c:
        yield c


async def article(request: Request) -> JSONResponse:
    """Says how it was paid: a voucher, or credit."""
    payment = request.state.payment
    return JSONResponse(
        {
            "voucher": "payment-signature" in request.headers,
            "credit": "payment-credit" in request.headers,
            "ceiling": payment.cumulative_amount,
        }
    )


def credit_site(node, tmp_path, url=None, prepay=K):
    ledger = Ledger.open(url or f"sqlite:///{tmp_path / 'site.db'}", node.channels.domain)
    payee = Payee(node.channels, node.site, book=ledger, confirmations=0)
    app = Starlette(routes=[Route("/articles/{slug}", article), Route("/dear/{slug}", article)])
    paywall = Paywall(
        app,
        payee=payee,
        prices={"GET /articles/{slug}": PRICE, "GET /dear/{slug}": 2 * PRICE},
        prepay=prepay,
    )
    return paywall, payee, ledger


def credit_reader(node, account, tmp_path, prepay=K, max_price=K * PRICE) -> HttpPayer:
    return HttpPayer(
        node.w3,
        account,
        PaymentPolicy(max_price=max_price, prepay=prepay),
        store=tmp_path / f"{account.address}.json",
    )


def test_the_offer_says_prepay_and_a_paywall_refuses_what_cannot_be_prepaid(credit_node, tmp_path):
    paywall, payee, ledger = credit_site(credit_node, tmp_path)
    with Server(paywall) as server, httpx.Client(base_url=server.url) as client:
        required = PaymentRequired.decode(client.get("/articles/a").headers["payment-required"])
    [offer] = required.offers
    assert offer.prepay == K and offer.to_json()["extra"]["prepay"] == K
    app = Starlette()
    with pytest.raises(ValueError, match="at least 2"):
        Paywall(app, payee=payee, prices={"GET /a": PRICE}, prepay=1)
    with pytest.raises(ValueError, match="meters"):
        Paywall(app, payee=payee, prices={"GET /a": PRICE, "GET /m": UpTo(PRICE)}, prepay=K)
    plain = Paywall(app, payee=payee, prices={"GET /a": PRICE})
    assert "prepay" not in plain.offer(PRICE).to_json()["extra"]  # fixed offers as before
    ledger.close()


def test_k_requests_on_one_voucher_then_a_new_voucher_and_settlement_claims_the_charges(
    credit_node, tmp_path, ledger_url
):
    """On SQLite and PostgreSQL: k requests served on one voucher with k charges in the
    ledger; the k+1th pays a new voucher whose signed receipt confirms every statement."""
    node = credit_node
    paywall, payee, ledger = credit_site(node, tmp_path, ledger_url)
    [account] = fund(node.w3, node.deployer, 1, 10**18)
    payer = credit_reader(node, account, tmp_path)
    statements = []
    with paying(paywall, payer) as client:
        first = client.get("/articles/0")
        assert first.json() == {"voucher": True, "credit": False, "ceiling": K * PRICE}
        receipt = receipt_of(first)
        assert receipt.signed is not None and receipt.amount == PRICE
        assert (receipt.cumulative_amount, receipt.ceiling) == (PRICE, K * PRICE)
        token = peek(first.headers["payment-credit"])
        assert (token.ceiling, token.price) == (K * PRICE, PRICE)
        [channel_id] = ledger.channel_ids()
        assert token.channel_id == channel_id
        for n in range(1, K):
            response = client.get(f"/articles/{n}")
            assert response.json() == {"voucher": False, "credit": True, "ceiling": K * PRICE}
            statement = receipt_of(response)
            assert statement.signed is None  # a running statement: no signature to make
            assert (statement.amount, statement.cumulative_amount) == (PRICE, (n + 1) * PRICE)
            assert statement.ceiling == K * PRICE
            statements.append(statement)
            assert ledger.held(channel_id).charged == (n + 1) * PRICE  # durable before answered
        # The credit is spent: the next request pays a new voucher, without the caller noticing.
        again = client.get("/articles/next")
        assert again.json()["voucher"] and again.json()["ceiling"] == 2 * K * PRICE
        signed = receipt_of(again)
        assert signed.signed is not None
        # The signed receipt confirms every unsigned statement before it: its charged total
        # is the sum of every charge the client saw.
        charges = [receipt.amount] + [s.amount for s in statements] + [signed.amount]
        assert signed.signed.cumulative_amount == sum(charges) == (K + 1) * PRICE
    assert payer.store.site_spend(next(iter(payer._credits))) == (K + 1) * PRICE
    held = ledger.held(channel_id)
    assert (held.charged, held.ceiling) == ((K + 1) * PRICE, 2 * K * PRICE)
    payee.claim_all()
    assert node.channels.state(channel_id).claimed == (K + 1) * PRICE  # charges, not ceiling
    ledger.close()


def test_forged_foreign_superseded_and_spent_tokens_are_refused(credit_node, tmp_path):
    node = credit_node
    paywall, _, ledger = credit_site(node, tmp_path)
    payer = credit_reader(node, node.readers[0], tmp_path)
    with paying(paywall, payer) as client:
        paid = client.get("/articles/0")
        raw = paid.headers["payment-credit"]
        [channel_id] = ledger.channel_ids()
        with httpx.Client(base_url=str(client.base_url)) as thief:

            def spend(token: str, path: str = "/articles/x") -> httpx.Response:
                return thief.get(path, headers={"payment-credit": token})

            def reason(response: httpx.Response) -> tuple[int, str]:
                return response.status_code, response.json()["error"]

            assert reason(spend("garbage")) == (400, "invalid_credit")
            assert reason(spend(raw + "A")) == (400, "invalid_credit")
            flipped = raw[:-3] + ("B" if raw[-3] != "B" else "C") + raw[-2:]
            assert reason(spend(flipped)) == (402, "forged_credit")
            other = CreditKey(bytes(node.readers[1].key), node.channels.domain)  # not the site
            foreign = other.issue(CreditToken(channel_id, K * PRICE, PRICE))
            assert reason(spend(foreign)) == (402, "forged_credit")
            site_key = CreditKey(bytes(node.site.key), node.channels.domain)
            # Another channel's id under the site's own key: the book holds no such ceiling.
            unknown = site_key.issue(CreditToken(b"\x07" * 32, K * PRICE, PRICE))
            assert reason(spend(unknown)) == (402, "credit_superseded")
            higher = site_key.issue(CreditToken(channel_id, 2 * K * PRICE, PRICE))
            assert reason(spend(higher)) == (402, "credit_superseded")
            assert reason(spend(raw, "/dear/x")) == (402, "credit_price_mismatch")
            # A stolen token spends the channel's prepaid credit and nothing more.
            for _ in range(K - 1):
                assert spend(raw).status_code == 200
            assert reason(spend(raw)) == (402, "credit_spent")
            assert ledger.held(channel_id).charged == K * PRICE
            # Two headers: neither counts.
            response = thief.get("/articles/x", headers=[("payment-credit", raw)] * 2)
            assert reason(response) == (400, "invalid_credit")
        # The owner's transport finds its credit spent and pays a voucher, unharmed.
        after = client.get("/articles/1")
        assert after.status_code == 200 and after.json()["voucher"]
        assert receipt_of(after).cumulative_amount == (K + 1) * PRICE
        # The old token is now superseded (the book holds the new ceiling).
        assert thief_status(client, raw) == (402, "credit_superseded")
    ledger.close()


def test_credit_the_deposit_no_longer_covers_is_refused_and_the_reader_pays_a_voucher(
    credit_node, tmp_path
):
    """A deposit that falls below the prepaid ceiling (here the site returns on chain all it
    has not charged; a reorg could take it too) leaves the credit above it uncollectable: a
    token is refused once its next charge is above the deposit, and the reader's transport
    drops it and pays a voucher, topping up. Every charge stays claimable."""
    node = credit_node
    paywall, payee, ledger = credit_site(node, tmp_path)
    [account] = fund(node.w3, node.deployer, 1, 10**18)
    with paying(paywall, credit_reader(node, account, tmp_path)) as client:
        token = client.get("/articles/0").headers["payment-credit"]  # K prepaid, 1 charged
        [channel_id] = ledger.channel_ids()
        payee.refund_on_chain(channel_id, node.channels.state(channel_id).deposited - PRICE)
        assert node.channels.state(channel_id).deposited == PRICE  # the one charged
        assert thief_status(client, token) == (402, "insufficient_deposit")
        assert ledger.held(channel_id).charged == PRICE  # nothing served, nothing charged
        again = client.get("/articles/1")
        assert again.status_code == 200 and again.json()["voucher"]  # not the token
        assert client.get("/articles/2").json()["credit"]  # credit the new deposit covers
    held, state = ledger.held(channel_id), node.channels.state(channel_id)
    assert held.charged == 3 * PRICE <= state.deposited
    payee.claim_all()
    assert node.channels.state(channel_id).claimed == 3 * PRICE
    ledger.close()


def test_a_token_pays_only_where_its_channel_could_pay_a_voucher(credit_node, tmp_path):
    """The credit key is the payee's, so another paywall of the same payee and ledger (or
    this one restarted with other terms) checks the tag of a token it never issued: the
    channel must still be one it sells on, as a voucher's must (asset, withdraw delay)."""
    node = credit_node
    _, payee, ledger = credit_site(node, tmp_path)
    paywall = credit_site_with(payee)
    [account] = fund(node.w3, node.deployer, 1, 10**18)
    with paying(paywall, credit_reader(node, account, tmp_path)) as client:
        token = client.get("/articles/0").headers["payment-credit"]  # an ETH channel's
        [channel_id] = ledger.channel_ids()
        delay = ledger.config(channel_id).withdraw_delay
    in_a_token = credit_site_with(payee, asset="0x" + "a0" * 20)
    longer = credit_site_with(payee, min_withdraw_delay=delay + 1)
    assert longer.min_withdraw_delay == delay + 1
    for other, refusal in ((in_a_token, "wrong_asset"), (longer, "withdraw_delay_too_short")):
        with Server(other) as server, httpx.Client(base_url=server.url) as reader:
            response = reader.get("/articles/1", headers={"payment-credit": token})
            assert (response.status_code, response.json()["error"]) == (402, refusal)
    assert ledger.held(channel_id).charged == PRICE  # nothing charged elsewhere
    with Server(paywall) as server, httpx.Client(base_url=server.url) as reader:
        response = reader.get("/articles/1", headers={"payment-credit": token})
        assert response.json()["credit"]  # still good where it was bought
    assert ledger.held(channel_id).charged == 2 * PRICE
    ledger.close()


class LosingAnswers(httpx.HTTPTransport):
    """Sends every request; while ``losing``, the answer to a paid one is lost on its way
    back (the site has served and charged it), as a dropped connection loses it."""

    losing = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if self.losing and "payment-signature" in request.headers:
            response.read()
            response.close()
            raise httpx.ReadError("the answer was lost", request=request)
        return response


def test_a_charge_whose_answer_was_lost_is_counted_by_the_next_vouchers_receipt(
    credit_node, tmp_path
):
    """A voucher reaches the site and is charged, but its answer is lost. The next voucher
    (here from a run that prepays more) is above the one the site holds, and its honest
    receipt counts the lost charge too: it is accepted, and counted as spent, up to the
    voucher signed before (the site may hold it), rather than refused as a charge the
    client never authorised (which also suspended the channel)."""
    node = credit_node
    paywall, _, ledger = credit_site(node, tmp_path)
    [account] = fund(node.w3, node.deployer, 1, 10**18)
    losing = LosingAnswers()
    with Server(paywall) as server:
        single = credit_reader(node, account, tmp_path, prepay=1)
        with httpx.Client(
            base_url=server.url, transport=PaymentTransport(single, losing)
        ) as client:
            assert client.get("/articles/0").json()["voucher"]
            losing.losing = True
            with pytest.raises(httpx.ReadError):
                client.get("/articles/1")
        [channel_id] = ledger.channel_ids()
        held = ledger.held(channel_id)
        assert (held.ceiling, held.charged) == (2 * PRICE, 2 * PRICE)  # charged, never seen
        more = credit_reader(node, account, tmp_path, prepay=K)
        with httpx.Client(base_url=server.url, transport=PaymentTransport(more)) as client:
            response = client.get("/articles/2")
            assert response.json()["voucher"]
            receipt = receipt_of(response)
            # One price for this read on top of the lost one's, under a voucher K - 1 prices
            # above the one the site held.
            assert (receipt.amount, receipt.cumulative_amount) == (PRICE, 3 * PRICE)
            assert receipt.ceiling == (K + 1) * PRICE
            assert client.get("/articles/3").json()["credit"]  # and its credit spends
    assert (
        more.store.site_spend(next(iter(more._credits)))
        == 4 * PRICE
        == ledger.held(channel_id).charged
    )
    ledger.close()


def credit_site_with(payee: Payee, **terms) -> Paywall:
    """A paywall of ``payee`` selling credit on the articles, with other ``terms``."""
    app = Starlette(routes=[Route("/articles/{slug}", article)])
    return Paywall(app, payee=payee, prices={"GET /articles/{slug}": PRICE}, prepay=K, **terms)


def thief_status(client: httpx.Client, token: str) -> tuple[int, str]:
    with httpx.Client(base_url=str(client.base_url)) as other:
        response = other.get("/articles/y", headers={"payment-credit": token})
        return response.status_code, response.json()["error"]


def test_the_policy_caps_the_prepaid_amount_when_it_is_signed(credit_node, tmp_path):
    """max_price bounds what one voucher prepays; a client that does not opt in buys one
    request per voucher even from a site that sells credit; the per-site cap counts the
    prepaid amount whole."""
    node = credit_node
    paywall, _, ledger = credit_site(node, tmp_path)
    accounts = fund(node.w3, node.deployer, 3, 10**18)
    capped = credit_reader(node, accounts[0], tmp_path, prepay=K, max_price=3 * PRICE)
    plain = credit_reader(node, accounts[1], tmp_path, prepay=0)
    with paying(paywall, capped) as client:
        response = client.get("/articles/a")
        assert response.json()["ceiling"] == 3 * PRICE  # three prepaid, not five
    with paying(paywall, plain) as client:
        response = client.get("/articles/a")
        assert response.json()["ceiling"] == PRICE and "payment-credit" not in response.headers
        assert client.get("/articles/b").json() == {
            "voucher": True,
            "credit": False,
            "ceiling": 2 * PRICE,
        }
    site_capped = HttpPayer(
        node.w3,
        accounts[2],
        PaymentPolicy(max_price=K * PRICE, prepay=K, max_spend_per_site=2 * PRICE),
        store=tmp_path / "site-capped.json",
    )
    with paying(paywall, site_capped) as client, pytest.raises(Exception) as err:
        client.get("/articles/a")
    assert "cap" in str(err.value)
    ledger.close()


def test_a_lost_token_carries_the_credit_left_into_the_next_voucher(credit_node, tmp_path):
    """A client that lost its token (a new process) signs over the site's prepaid ceiling,
    never below it: the credit left carries over, and no voucher the book holds can be
    replayed (the first known limit of metered charges does not arise here)."""
    node = credit_node
    paywall, _, ledger = credit_site(node, tmp_path)
    [account] = fund(node.w3, node.deployer, 1, 10**18)
    with paying(paywall, credit_reader(node, account, tmp_path)) as client:
        client.get("/articles/0")
        client.get("/articles/1")  # credit: 2 of 5 charged
        [channel_id] = ledger.channel_ids()
        best = ledger.held(channel_id).voucher
    # The ceiling voucher, replayed by someone who saw it, is stale: not one price is taken.
    with Server(paywall) as server, httpx.Client(base_url=server.url) as thief:
        from micropay._x402 import PaymentPayload

        offer = PaymentRequired.decode(thief.get("/articles/z").headers["payment-required"])
        config = ledger.config(channel_id)
        payload = PaymentPayload(
            offer.offers[0].network,
            PRICE,
            offer.offers[0].asset,
            offer.offers[0].pay_to,
            config,
            best,
            offer.offers[0],
        )
        replay = thief.get("/articles/z", headers={"payment-signature": payload.encode()})
        assert replay.status_code == 402 and replay.json()["error"] == "stale_voucher"
    fresh = credit_reader(node, account, tmp_path, prepay=2, max_price=K * PRICE)
    with paying(paywall, fresh) as client:
        response = client.get("/articles/2")
        assert response.json()["voucher"]
        receipt = receipt_of(response)
        # 3 prices were left under the old ceiling; the new voucher adds 2 on top of it.
        assert (receipt.cumulative_amount, receipt.ceiling) == (3 * PRICE, (K + 2) * PRICE)
        assert peek(response.headers["payment-credit"]).ceiling == (K + 2) * PRICE
        assert client.get("/articles/3").json()["credit"]
    assert ledger.held(channel_id).charged == 4 * PRICE
    with pytest.raises(PriceLimitError):  # 4 prices left + 1 is above a max_price of 2
        tight = credit_reader(node, account, tmp_path, prepay=2, max_price=2 * PRICE)
        with paying(paywall, tight) as client:
            client.get("/articles/4")
    ledger.close()


def test_fifty_concurrent_requests_on_one_token_never_grant_twice(credit_node, tmp_path):
    """One process: the paywall serves one request per channel at a time (the rest get 409
    channel_busy), so its in-memory count cannot race; 50 at once on one token are served
    at most the credit left, and the ledger's charged total is exactly what was served."""
    node = credit_node
    paywall, _, ledger = credit_site(node, tmp_path, prepay=20)
    payer = credit_reader(node, node.readers[2], tmp_path, prepay=20, max_price=20 * PRICE)
    with paying(paywall, payer) as client:
        token = client.get("/articles/0").headers["payment-credit"]
        base = str(client.base_url)
    [channel_id] = ledger.channel_ids()

    async def hammer() -> list[int]:
        async with httpx.AsyncClient(base_url=base) as raw:
            answers = await asyncio.gather(
                *(raw.get(f"/articles/{n}", headers={"payment-credit": token}) for n in range(50))
            )
        return [a.status_code for a in answers]

    with Server(paywall) as server:
        base = server.url
        statuses = []
        while ledger.held(channel_id).charged < 20 * PRICE:
            statuses += asyncio.run(hammer())
    served = statuses.count(200)
    assert served == 19  # the 19 prices left under the ceiling, each once
    assert set(statuses) <= {200, 402, 409}
    assert ledger.held(channel_id).charged == 20 * PRICE
    ledger.close()


def test_two_ledgers_on_one_database_never_grant_the_same_credit_twice(
    credit_node, tmp_path, ledger_url
):
    """Two paywalls, each with its own Ledger (its own connections and writer, as two worker
    processes have) on one SQLite file or PostgreSQL database, spending one token at once:
    the charge write's compare-and-swap on the charged total arbitrates."""
    node = credit_node
    first, _, ledger = credit_site(node, tmp_path, ledger_url, prepay=20)
    second, _, other = credit_site(node, tmp_path, ledger_url, prepay=20)
    payer = credit_reader(node, node.readers[3], tmp_path, prepay=20, max_price=20 * PRICE)
    with paying(first, payer) as client:
        token = client.get("/articles/0").headers["payment-credit"]
    [channel_id] = ledger.channel_ids()

    async def hammer(urls: list[str]) -> list[int]:
        async with httpx.AsyncClient() as raw:
            answers = await asyncio.gather(
                *(
                    raw.get(f"{urls[n % 2]}/articles/{n}", headers={"payment-credit": token})
                    for n in range(40)
                )
            )
        return [a.status_code for a in answers]

    with Server(first) as one, Server(second) as two:
        statuses: list[int] = []
        for _ in range(20):
            statuses += asyncio.run(hammer([one.url, two.url]))
            if ledger.held(channel_id).charged == 20 * PRICE:
                break
    assert statuses.count(200) == 19
    assert ledger.held(channel_id).charged == other.held(channel_id).charged == 20 * PRICE
    ledger.close()
    other.close()


class _SiteProcess:
    """tests/credit_site.py as its own OS process on a fixed port."""

    def __init__(self, node, path: Path, port: int) -> None:
        rpc = node.w3.provider.endpoint_uri
        args = [rpc, node.channels.address, "0x" + bytes(node.site.key).hex(), str(port)]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        self.process = subprocess.Popen(
            [sys.executable, str(SITE), *args, str(path), str(K), str(PRICE)], env=env
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.url + "/articles/probe", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the site process did not start") from None
                time.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def test_a_killed_and_restarted_server_loses_no_credit_and_grants_none_twice(credit_node, tmp_path):
    node = credit_node
    path, port = tmp_path / "restart.db", free_port()
    [account] = fund(node.w3, node.deployer, 1, 10**18)
    payer = credit_reader(node, account, tmp_path)
    site = _SiteProcess(node, path, port)
    try:
        with httpx.Client(base_url=site.url, transport=PaymentTransport(payer)) as client:
            paid = client.get("/articles/0")
            token = paid.headers["payment-credit"]
            assert client.get("/articles/1").status_code == 200  # credit: 2 of 5 charged
            site.kill()  # SIGKILL: whatever was answered is on disk
            site = _SiteProcess(node, path, port)
            # The restarted server takes the same token (its key is derived from the payee
            # key) and counts on from the ledger: 3 prices are left, and only 3.
            for n in range(2, K):
                response = client.get(f"/articles/{n}")
                assert response.status_code == 200
                statement = receipt_of(response)  # unsigned: the credit paid, no voucher
                assert statement.signed is None
                assert statement.cumulative_amount == (n + 1) * PRICE
            with httpx.Client(base_url=site.url) as raw:
                spent = raw.get("/articles/x", headers={"payment-credit": token})
                assert spent.status_code == 402 and spent.json()["error"] == "credit_spent"
            site.kill()
            site = _SiteProcess(node, path, port)
            with httpx.Client(base_url=site.url) as raw:
                spent = raw.get("/articles/x", headers={"payment-credit": token})
                assert spent.json()["error"] == "credit_spent"  # still spent after a restart
            assert receipt_of(client.get("/articles/next")).signed is not None  # a voucher
    finally:
        site.kill()
    ledger = Ledger.open(f"sqlite:///{path}", node.channels.domain)
    [channel_id] = ledger.channel_ids()
    assert ledger.held(channel_id).charged == (K + 1) * PRICE
    ledger.close()


def test_the_async_transport_spends_credit_and_buys_more_unnoticed(credit_node, tmp_path):
    from micropay.http_client import AsyncPaymentTransport

    node = credit_node
    paywall, _, ledger = credit_site(node, tmp_path, prepay=3)
    [account] = fund(node.w3, node.deployer, 1, 10**18)
    payer = credit_reader(node, account, tmp_path, prepay=3, max_price=3 * PRICE)

    async def read(url: str) -> list[dict]:
        transport = AsyncPaymentTransport(payer)
        async with httpx.AsyncClient(base_url=url, transport=transport) as client:
            return [(await client.get(f"/articles/{n}")).json() for n in range(7)]

    with Server(paywall) as server:
        answers = asyncio.run(read(server.url))
    assert [a["voucher"] for a in answers] == [True, False, False, True, False, False, True]
    [channel_id] = ledger.channel_ids()
    assert ledger.held(channel_id).charged == 7 * PRICE
    ledger.close()


def test_the_ledger_charge_under_a_held_ceiling_is_a_compare_and_swap(credit_node, ledger_url):
    """``Ledger.charge_soon``: the charged total moves from exactly the total read, under
    exactly the ceiling read; anything else is StaleVoucherError and writes nothing."""
    from eth_account import Account

    from micropay.errors import StaleVoucherError
    from micropay.vouchers import ChannelConfig, sign_voucher

    domain = credit_node.channels.domain
    ledger = Ledger.open(ledger_url, domain)
    key = Account.create()
    config = ChannelConfig(
        payer=key.address,
        payee=credit_node.site.address,
        token="0x" + "00" * 20,
        authorizer=key.address,
        withdraw_delay=86_400,
        salt=bytes(32),
    )
    voucher = sign_voucher(domain, config.channel_id, K * PRICE, key)
    ledger.accept_if_higher(config, voucher, charged=PRICE)
    assert ledger.charge_soon(config.channel_id, K * PRICE, PRICE, 2 * PRICE).result() == PRICE
    for ceiling, over in ((K * PRICE, PRICE), (2 * K * PRICE, 2 * PRICE)):  # stale total; ceiling
        with pytest.raises(StaleVoucherError):
            ledger.charge_soon(config.channel_id, ceiling, over, over + PRICE).result()
    with pytest.raises(StaleVoucherError):  # no row at all
        ledger.charge_soon(b"\x09" * 32, K * PRICE, PRICE, 2 * PRICE).result()
    held = ledger.held(config.channel_id)
    assert (held.charged, held.ceiling) == (2 * PRICE, K * PRICE)
    ledger.close()
