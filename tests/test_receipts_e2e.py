"""Receipts over real HTTP on anvil: each paid request gets a site-signed receipt that the
reader keeps and the site's ledger records, adding up to what the site settles; and access
receipts let a reader read again what it paid, and nobody else."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from paywall_helpers import Server, chain
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from micropay._x402 import AccessRequest, PaymentRequired, Receipt
from micropay.http_client import HttpPayer, PaymentPolicy, PaymentTransport
from micropay.ledger import Ledger
from micropay.payee import MemoryVoucherBook, Payee
from micropay.paywall import Paywall
from micropay.receipt_log import receipts_path
from micropay.receipts import sign_access, sign_receipt, verify_receipt
from micropay.statements import Charge, summarise

pytestmark = pytest.mark.standalone
pytest_plugins = ["ledger_fixtures"]

PRICE = 10**13


@pytest.fixture(scope="module")
def node() -> Iterator:
    with chain() as c:
        yield c


async def page(request: Request) -> PlainTextResponse:
    payment = request.state.payment
    return PlainTextResponse(f"{request.url.path} for {payment.payer}: {payment.amount}")


def site(node, book, access_period: int | None = None) -> Paywall:
    app = Starlette(routes=[Route("/articles/{slug}", page)])
    payee = Payee(node.channels, node.site, book=book, confirmations=0)
    return Paywall(
        app,
        payee=payee,
        prices={"GET /articles/{slug}": PRICE},
        access_period=access_period,
    )


def reader(node, index: int, home) -> HttpPayer:
    return HttpPayer(
        node.w3, node.readers[index], PaymentPolicy(max_price=PRICE), store=home / "wallet.json"
    )


def test_each_paid_request_has_a_signed_receipt_kept_by_both_sides_and_settled(
    node, ledger_url, tmp_path
):
    with Ledger.open(ledger_url, node.channels.domain) as ledger:
        paywall = site(node, ledger)
        payer = reader(node, 0, tmp_path)
        kept = receipts_path(tmp_path / "wallet.json")
        slugs = ["a", "b", "a", "c", "a"]
        with (
            Server(paywall) as server,
            httpx.Client(base_url=server.url, transport=PaymentTransport(payer)) as client,
        ):
            for n, slug in enumerate(slugs, 1):
                response = client.get(f"/articles/{slug}")
                assert response.status_code == 200
                signed = Receipt.decode(response.headers["payment-response"]).signed
                assert signed is not None and verify_receipt(signed) == node.site.address
                assert (signed.resource, signed.amount) == (f"GET /articles/{slug}", PRICE)
                assert len(kept.read_text().splitlines()) == n  # one line per paid request
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert [k.problem for k in payer.store.receipts.all()] == [None] * 5
        assert [k.resource for k in payer.store.receipts.all()] == [
            f"GET /articles/{slug}" for slug in slugs
        ]
        charges = ledger.charges()
        [channel_id] = ledger.channel_ids()
        assert [c.receipt_id for c in charges] == [
            k.receipt.signed.receipt_id for k in payer.store.receipts.all()
        ]
        assert [verify_receipt(c) for c in charges] == [node.site.address] * 5
        config = paywall.payee.book.config(channel_id)
        claimed_before = node.channels.state(config).claimed  # (the other back end's run)
        paywall.payee.claim_all()
        settled = node.channels.state(config).claimed - claimed_before
        assert sum(c.amount for c in charges) == settled == 5 * PRICE


def _nonce(client: httpx.Client, path: str) -> bytes:
    response = client.get(path)
    assert response.status_code == 402
    access = PaymentRequired.decode(response.headers["payment-required"]).access
    assert access is not None
    return access.nonce


def test_an_access_receipt_lets_its_reader_in_again_and_nobody_else(node, tmp_path):
    with Ledger.open(f"sqlite:///{tmp_path / 'site.db'}", node.channels.domain) as ledger:
        paywall = site(node, ledger, access_period=3600)
        payer = reader(node, 1, tmp_path)
        with (
            Server(paywall) as server,
            httpx.Client(base_url=server.url, transport=PaymentTransport(payer)) as client,
            httpx.Client(base_url=server.url) as plain,
        ):
            first = client.get("/articles/a")
            assert first.status_code == 200 and first.text.endswith(f": {PRICE}")
            again = client.get("/articles/a")  # presented the receipt: let in, not charged
            assert again.status_code == 200 and again.text.endswith(": 0")
            assert "payment-response" not in again.headers
            assert again.headers["cache-control"] == "private, no-store"
            other = client.get("/articles/b")  # another resource is paid
            assert other.status_code == 200 and other.text.endswith(f": {PRICE}")
            assert len(ledger.charges()) == 2 and len(payer.store.receipts.all()) == 2

            signed = payer.store.receipts.all()[0].receipt.signed
            record = payer.store.channel(signed.channel_id)
            session_key = record.authorizer(node.readers[1])
            domain = node.channels.domain

            def present(path: str, receipt=signed, key=session_key, nonce=None) -> httpx.Response:
                nonce = nonce if nonce is not None else _nonce(plain, path)
                proof = sign_access(domain, key, receipt.receipt_id, nonce, f"GET {path}")
                header = AccessRequest(receipt, nonce, proof).encode()
                return plain.get(path, headers={"PAYMENT-ACCESS": header})

            assert present("/articles/a").status_code == 200  # the reader's own proof
            # a copied receipt, proved with another key (a third party's), is refused
            copied = present("/articles/a", key=node.readers[2])
            assert copied.status_code == 402 and copied.json()["error"] == "access_denied"
            assert "session key" in copied.json()["message"]
            # for another resource than the one paid
            wrong = present("/articles/b")
            assert (
                wrong.status_code == 402 and "is for 'GET /articles/a'" in wrong.json()["message"]
            )
            # a nonce issued for another resource, or a made-up one
            stolen = present("/articles/a", nonce=_nonce(plain, "/articles/b"))
            assert "not issued by this site" in stolen.json()["message"]
            assert "not issued" in present("/articles/a", nonce=os.urandom(32)).json()["message"]
            # an expired receipt (signed by the site, older than the period)
            old = sign_receipt(
                domain,
                node.site,
                receipt_id=os.urandom(32),
                channel_id=signed.channel_id,
                payer=signed.payer,
                asset=signed.asset,
                resource=signed.resource,
                amount=PRICE,
                cumulative_amount=signed.cumulative_amount,
                issued_at=int(time.time()) - 3601,
            )
            expired = present("/articles/a", receipt=old)
            assert expired.status_code == 402 and "older than" in expired.json()["message"]
            # a receipt the site did not sign
            forged = sign_receipt(
                domain,
                node.readers[1],
                receipt_id=os.urandom(32),
                channel_id=signed.channel_id,
                payer=signed.payer,
                asset=signed.asset,
                resource=signed.resource,
                amount=PRICE,
                cumulative_amount=signed.cumulative_amount,
                issued_at=int(time.time()),
            )
            assert "not by" in present("/articles/a", receipt=forged).json()["message"]
        assert len(ledger.charges()) == 2  # nothing above was charged


def test_a_site_without_the_opt_in_never_takes_a_receipt_as_payment(node, tmp_path):
    with Ledger.open(f"sqlite:///{tmp_path / 'site.db'}", node.channels.domain) as ledger:
        paywall = site(node, ledger)  # no access_period
        payer = reader(node, 3, tmp_path)
        with (
            Server(paywall) as server,
            httpx.Client(base_url=server.url, transport=PaymentTransport(payer)) as client,
            httpx.Client(base_url=server.url) as plain,
        ):
            assert client.get("/articles/a").text.endswith(f": {PRICE}")
            assert client.get("/articles/a").text.endswith(f": {PRICE}")  # paid again
            signed = payer.store.receipts.all()[0].receipt.signed
            key = payer.store.channel(signed.channel_id).authorizer(node.readers[3])
            nonce = os.urandom(32)
            proof = sign_access(
                node.channels.domain, key, signed.receipt_id, nonce, signed.resource
            )
            header = AccessRequest(signed, nonce, proof).encode()
            refused = plain.get("/articles/a", headers={"PAYMENT-ACCESS": header})
            assert refused.status_code == 402 and refused.json()["error"] == "payment_required"
            required = PaymentRequired.decode(refused.headers["payment-required"])
            assert required.access is None
        assert len(ledger.charges()) == 2


def _rewriting(app, rewrite):
    """The site's app with its PAYMENT-RESPONSE rewritten: a site that lies in receipts."""

    async def lying(scope, receive, send):
        async def send_rewritten(message):
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [
                        (name, rewrite[0](value) if name == b"payment-response" else value)
                        for name, value in message.get("headers", ())
                    ],
                }
            await send(message)

        await app(scope, receive, send_rewritten)

    return lying


def test_a_receipt_that_is_not_the_sites_is_kept_flagged_and_the_content_returned(node, tmp_path):
    paywall = site(node, MemoryVoucherBook(), access_period=3600)
    domain = node.channels.domain

    def resigned(key, resource=None):
        def rewrite(value: bytes) -> bytes:
            receipt = Receipt.decode(value)
            s = receipt.signed
            forged = sign_receipt(
                domain,
                key,
                receipt_id=s.receipt_id,
                channel_id=s.channel_id,
                payer=s.payer,
                asset=s.asset,
                resource=resource or s.resource,
                amount=s.amount,
                cumulative_amount=s.cumulative_amount,
                issued_at=s.issued_at,
            )
            return Receipt.of(forged, receipt.remaining).encode().encode()

        return rewrite

    def unsigned(value: bytes) -> bytes:
        return replace(Receipt.decode(value), signed=None).encode().encode()

    rewrite = [unsigned]
    payer = reader(node, 4, tmp_path)
    with (
        Server(_rewriting(paywall, rewrite)) as server,
        httpx.Client(base_url=server.url, transport=PaymentTransport(payer)) as client,
    ):
        for lie in (unsigned, resigned(node.readers[5]), resigned(node.site, "GET /elsewhere")):
            rewrite[0] = lie
            response = client.get("/articles/a")
            assert response.status_code == 200 and response.text.endswith(f": {PRICE}")
        problems = [k.problem for k in payer.store.receipts.all()]
        assert problems[0] == "the receipt is not signed"
        assert problems[1].startswith("the receipt is signed by 0x") and "not by" in problems[1]
        assert problems[2] == "the receipt is for 'GET /elsewhere', not 'GET /articles/a'"
        lines = summarise([Charge.of_kept(k) for k in payer.store.receipts.all()], "site")
        # The unsigned receipt names no asset, so it stands on a line of its own; every
        # line counts its receipts as unverified, and together they hold the three prices.
        assert sorted((line.asset is None, line.count) for line in lines) == [(False, 2), (True, 1)]
        assert sum(line.total for line in lines) == 3 * PRICE
        assert all(line.unverified == line.count for line in lines)
        # flagged receipts are never presented for access: the reader pays again
        rewrite[0] = lambda value: value
        assert client.get("/articles/a").text.endswith(f": {PRICE}")
    assert len(paywall.book.charges()) == 4
