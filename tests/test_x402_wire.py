"""Every header the paywall and micropay's clients produce is valid x402 v2.

Checked with the official ``x402`` package's models: the 402s (first ask, corrections,
refusals of malformed and mispriced payments), the payloads the httpx (sync and async)
and requests clients send, and the receipts. An unmodified x402 client or server reads
them all.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator

import httpx
import pytest
import requests
from paywall_helpers import Server, chain
from x402_models import Recorder, check_payload, check_receipt, check_required

from micropay._x402 import Offer, PaymentPayload, PaymentRequired, Reason, Receipt
from micropay.example_site import ARTICLES, create_site
from micropay.http_client import (
    AsyncPaymentTransport,
    HttpPayer,
    PaymentPolicy,
    PaymentTransport,
)
from micropay.requests_adapter import PaymentAdapter
from micropay.vouchers import ZERO_ADDRESS, ChannelConfig, VoucherDomain, sign_voucher

pytestmark = pytest.mark.standalone

PRICE = 10**13
SLUG = next(iter(ARTICLES))


@pytest.fixture(scope="module")
def node() -> Iterator:
    with chain() as c:
        yield c


def test_every_reason_code_and_codec_header_validates_offline():
    domain = VoucherDomain(31337, "0x" + "11" * 20)
    offer = Offer(1_000, ZERO_ADDRESS, "0x" + "22" * 20, domain, 10_000, 3_600)
    reasons = [v for k, v in vars(Reason).items() if k.isupper()]
    for reason in reasons:
        model = check_required(
            PaymentRequired((offer,), reason, "an article", "https://news.example/a/1").encode()
        )
        assert model.error == reason
        assert model.accepts[0].extra["contract"] == domain.verifying_contract
    config = ChannelConfig(
        "0x" + "33" * 20, offer.pay_to, ZERO_ADDRESS, "0x" + "44" * 20, 3_600, bytes(32)
    )
    voucher = sign_voucher(domain, config.channel_id, 1_000, b"\x01" * 32)
    for with_offer in (offer, None):
        payload = PaymentPayload(
            offer.network,
            1_000,
            ZERO_ADDRESS,
            offer.pay_to,
            config,
            voucher,
            with_offer,
            "http://a/",
        )
        model = check_payload(payload.encode())
        assert model.accepted.scheme == "channel"
        assert PaymentPayload.decode(payload.encode()).voucher == voucher
    receipt = Receipt(offer.network, config.payer, config.channel_id, 1_000, 1_000, 9_000)
    settled = check_receipt(receipt.encode())
    assert settled.success and settled.transaction == "" and settled.payer == config.payer


def test_the_paywall_and_every_client_speak_valid_x402(node, tmp_path):
    w3 = node.w3
    site = create_site(w3, site_key=node.site, contract=node.channels.address, price=PRICE)
    recorder = Recorder(site.app)
    payer = HttpPayer(w3, node.readers[0], PaymentPolicy(max_price=PRICE), store=tmp_path / "p")
    with Server(recorder) as server:
        url = f"{server.url}/articles/"
        plain = httpx.get(url + SLUG)
        assert plain.status_code == 402
        required = check_required(plain.headers["payment-required"])
        assert required.resource.url == url + SLUG
        assert required.resource.mime_type == "text/html"
        assert "article" in (required.resource.description or "")
        with httpx.Client(transport=PaymentTransport(payer)) as client:
            for _ in range(3):
                assert client.get(url + SLUG).status_code == 200

        async def async_read() -> int:
            transport = AsyncPaymentTransport(payer)
            async with httpx.AsyncClient(transport=transport) as client:
                return (await client.get(url + SLUG)).status_code

        assert asyncio.run(async_read()) == 200
        session = requests.Session()
        session.mount("http://", PaymentAdapter(payer))
        assert session.get(url + SLUG).status_code == 200
        counts = recorder.check_all()
        assert counts["payment-signature"] == counts["payment-response"] == 5
        assert counts["payment-required"] >= 6  # the plain ask, and one per client's first try

        # Refusals: a replayed voucher (stale, with the channel's view), another price, junk.
        last = [v for n, v in recorder.seen if n == "payment-signature"][-1]
        recorder.seen.clear()
        replay = httpx.get(url + SLUG, headers={"payment-signature": last.decode()})
        assert replay.status_code == 402
        stale = check_required(replay.headers["payment-required"])
        assert stale.error == Reason.STALE_VOUCHER and "channel" in (stale.extensions or {})
        obj = json.loads(base64.b64decode(last))
        obj["accepted"]["amount"] = str(PRICE + 1)
        repriced = base64.b64encode(json.dumps(obj).encode()).decode()
        mispriced = httpx.get(url + SLUG, headers={"payment-signature": repriced})
        assert check_required(mispriced.headers["payment-required"]).error == (
            Reason.PRICE_MISMATCH
        )
        junk = httpx.get(url + SLUG, headers={"payment-signature": "not base64!"})
        assert junk.status_code == 400
        assert check_required(junk.headers["payment-required"]).error == Reason.INVALID_BASE64
        answers = [(n, v) for n, v in recorder.seen if n != "payment-signature"]
        assert len(answers) == 3
        for _, value in answers:
            check_required(value)
