"""EIP-2098 64-byte signatures, which the contract takes, are taken at every entry point of the
SDK too (``Voucher``, the ``PAYMENT-SIGNATURE`` payload, a site's channel view) and normalised
once, so one signature sent in both forms is one voucher: served once, counted once, claimed
on the session's chain."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from paywall_helpers import Server

from micropay._x402 import ChannelView, PaymentHeaderError, PaymentPayload
from micropay.errors import InvalidSignatureError, VoucherError
from micropay.example_site import create_site
from micropay.payer import Payer
from micropay.vouchers import SECP256K1_N, Voucher, VoucherVerifier, full_signature

PRICE = 10**13
ARTICLE = "/articles/vouchers-explained"


def _compact(voucher: Voucher) -> Voucher:
    """The same voucher, built from its 64-byte form."""
    return Voucher(voucher.channel_id, voucher.cumulative_amount, voucher.compact_signature)


def _header(payer: Payer, voucher: Voucher, signature: bytes) -> str:
    """A PAYMENT-SIGNATURE for ``voucher`` whose signature is written as ``signature``."""
    config = payer.config
    network = f"eip155:{payer.client.domain.chain_id}"
    encoded = PaymentPayload(network, PRICE, config.token, config.payee, config, voucher).encode()
    obj = json.loads(base64.b64decode(encoded))
    obj["payload"]["signature"] = "0x" + signature.hex()
    return base64.b64encode(json.dumps(obj).encode()).decode()


def compact_hex(voucher: Voucher) -> str:
    return voucher.compact_signature.hex()


@pytest.fixture
def payer(channels, actors):
    return Payer.open(channels, actors.payer, actors.payee.address, 10**17)


def test_a_compact_signature_makes_the_same_voucher_as_its_full_form(channels, payer):
    voucher = payer.pay(PRICE)
    compact = _compact(voucher)
    assert compact == voucher and compact.signature == voucher.signature
    assert len(compact.signature) == 65
    parsed = Voucher.from_json({**voucher.to_json(), "signature": "0x" + compact_hex(voucher)})
    assert parsed == voucher
    verifier = VoucherVerifier(channels.domain)
    verifier.verify(compact, bytes.fromhex(payer.config.authorizer[2:]))


@pytest.mark.parametrize("size", [0, 1, 63, 66, 130])
def test_a_signature_of_any_other_length_is_refused_naming_it(payer, size):
    voucher = payer.pay(PRICE)
    with pytest.raises(InvalidSignatureError, match=f"not {size}"):
        Voucher(voucher.channel_id, voucher.cumulative_amount, bytes(size))
    with pytest.raises(VoucherError):
        Voucher.from_json({**voucher.to_json(), "signature": "0x" + "00" * size})


def test_a_compact_signature_with_a_high_s_is_refused_as_its_full_form_is(channels, payer):
    """The top bit of a compact signature is the parity, so only s < 2^255 can be written; of
    those, s above n/2 is the malleable twin, refused in either form."""
    voucher = payer.pay(PRICE)
    high_s = SECP256K1_N // 2 + 1
    assert high_s < 1 << 255
    for y_parity in (0, 1):
        compact = voucher.signature[:32] + ((y_parity << 255) | high_s).to_bytes(32, "big")
        high = Voucher(voucher.channel_id, voucher.cumulative_amount, compact)
        assert high.signature[64] == 27 + y_parity
        with pytest.raises(InvalidSignatureError, match="high-s"):
            VoucherVerifier(channels.domain).recover(high)


def test_a_channel_view_with_a_compact_signature_is_the_voucher_the_client_signed(payer):
    voucher = payer.pay(PRICE)
    view = ChannelView.from_json(
        {
            "channelId": "0x" + voucher.channel_id.hex(),
            "cumulativeAmount": str(voucher.cumulative_amount),
            "signature": "0x" + compact_hex(voucher),
        }
    )
    assert view.voucher == voucher and view.signature == voucher.signature
    assert full_signature(voucher.compact_signature) == voucher.signature


def test_a_payment_header_of_odd_signature_size_is_refused(payer):
    voucher = payer.pay(PRICE)
    with pytest.raises(PaymentHeaderError, match="right size"):
        PaymentPayload.decode(_header(payer, voucher, voucher.signature[:63]))


def test_a_paywall_serves_a_compact_voucher_once_and_its_payee_claims_it(
    w3, actors, channels, payer
):
    """Paid in the 64-byte form, replayed in the 65-byte form: one article, one price, and
    the payee's claim of the stored voucher moves exactly that price on chain."""
    site = create_site(w3, site_key=actors.payee, contract=channels.address, price=PRICE)
    voucher = payer.pay(PRICE)
    with Server(site.app) as server:
        paid = httpx.get(
            server.url + ARTICLE,
            headers={"PAYMENT-SIGNATURE": _header(payer, voucher, voucher.compact_signature)},
        )
        assert paid.status_code == 200, paid.text
        replay = httpx.get(
            server.url + ARTICLE,
            headers={"PAYMENT-SIGNATURE": _header(payer, voucher, voucher.signature)},
        )
        assert replay.status_code == 402, replay.text
        assert replay.json()["error"] == "stale_voucher"
    best = site.payee.book.best(payer.config.channel_id)
    assert best == voucher and best.cumulative_amount == PRICE
    before = w3.eth.get_balance(actors.payee.address)
    # Anyone may relay a claim the payee signed.
    receipt = channels.claim_each([(payer.config, best)], actors.payer, payee_key=actors.payee)
    assert receipt["status"] == 1
    assert w3.eth.get_balance(actors.payee.address) - before == PRICE
    assert channels.state(payer.config).claimed == PRICE
