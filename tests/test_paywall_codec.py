"""The x402-style header codec: what it writes reads back, and what strangers send is refused
with a reason code and never any other exception."""

from __future__ import annotations

import base64
import contextlib
import json
import os

import pytest
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from micropay._x402 import (
    MAX_PAYMENT_HEADER,
    ChannelView,
    Offer,
    PaymentPayload,
    PaymentRequired,
    Reason,
    Receipt,
    checksum_address,
)
from micropay.errors import PaymentHeaderError
from micropay.vouchers import ZERO_ADDRESS, ChannelConfig, VoucherDomain, sign_voucher

pytestmark = pytest.mark.offchain

DOMAIN = VoucherDomain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
KEY = bytes.fromhex("aa" * 32)
CONFIG = ChannelConfig(
    payer="0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    payee="0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    token=ZERO_ADDRESS,
    authorizer="0x8fd379246834eac74B8419FfdA202CF8051F7A03",
    withdraw_delay=7200,
    salt=(1).to_bytes(32, "big"),
)
VOUCHER = sign_voucher(DOMAIN, CONFIG.channel_id, 5_000, KEY)
OFFER = Offer(1_000, ZERO_ADDRESS, CONFIG.payee, DOMAIN, 10_000, 7200)


def payload_json() -> dict:
    return json.loads(
        base64.b64decode(
            PaymentPayload(
                OFFER.network, 1_000, ZERO_ADDRESS, CONFIG.payee, CONFIG, VOUCHER
            ).encode()
        )
    )


def encode(obj: object) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def reason_of(value: str | bytes) -> str:
    with pytest.raises(PaymentHeaderError) as caught:
        PaymentPayload.decode(value)
    return caught.value.reason


# -- round trips ---------------------------------------------------------------------------


def test_payment_payload_round_trips():
    payload = PaymentPayload(OFFER.network, 1_000, ZERO_ADDRESS, CONFIG.payee, CONFIG, VOUCHER)
    decoded = PaymentPayload.decode(payload.encode())
    assert decoded == payload
    assert decoded.config.channel_id == CONFIG.channel_id


def test_payment_required_round_trips_with_a_view():
    view = ChannelView(CONFIG.channel_id, 5_000, VOUCHER.signature, 100_000)
    required = PaymentRequired((OFFER,), Reason.STALE_VOUCHER, "pay 6000", "/a", view)
    assert PaymentRequired.decode(required.encode()) == required


def test_payment_required_uses_x402_v2_field_names():
    obj = json.loads(base64.b64decode(PaymentRequired((OFFER,), resource="/a").encode()))
    assert obj["x402Version"] == 2
    [offer] = obj["accepts"]
    assert offer["scheme"] == "channel"
    assert offer["network"] == "eip155:31337"
    assert offer["amount"] == "1000"
    assert (offer["asset"], offer["payTo"]) == (ZERO_ADDRESS, CONFIG.payee)
    assert offer["extra"]["contract"] == DOMAIN.verifying_contract
    assert offer["extra"]["domain"] == DOMAIN.to_json()
    assert (offer["extra"]["minDeposit"], offer["extra"]["minWithdrawDelay"]) == ("10000", 7200)


def test_offers_in_other_schemes_are_kept_for_their_parsers_not_errors():
    obj = json.loads(base64.b64decode(PaymentRequired((OFFER,)).encode()))
    other = {"scheme": "exact", "network": "eip155:8453", "amount": "1"}
    obj["accepts"].insert(0, other)
    decoded = PaymentRequired.decode(encode(obj))
    assert decoded.channel_offers == (OFFER,)
    assert decoded.offers[0].scheme == "exact" and decoded.offers[0].to_json() == other


def test_receipt_round_trips():
    receipt = Receipt("eip155:31337", CONFIG.payer, CONFIG.channel_id, 1_000, 5_000, 95_000)
    assert Receipt.decode(receipt.encode()) == receipt


def test_checksum_address_agrees_with_eth_utils():
    for _ in range(200):
        address = "0x" + os.urandom(20).hex()
        assert checksum_address(address) == to_checksum_address(address)
        assert checksum_address(address.upper().replace("0X", "0x")) == to_checksum_address(address)
    wrong_case = "0x70997970C51812dc3A010C7d01b50e0d17dc79c8"  # last letter's case flipped
    assert checksum_address(wrong_case) is None


# -- strict decoding -----------------------------------------------------------------------


def mutate(change) -> str:
    obj = payload_json()
    change(obj)
    return encode(obj)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", Reason.INVALID_JSON),
        ("not base64!", Reason.INVALID_BASE64),
        ("YWJj=", Reason.INVALID_BASE64),  # bad padding
        (base64.b64encode(b"\xff\xfe").decode(), Reason.INVALID_JSON),
        (encode([1, 2]), Reason.INVALID_PAYLOAD),
        (base64.b64encode(b"[" * 5000 + b"]" * 5000).decode()[:4000], Reason.INVALID_JSON),
        (base64.b64encode(b"[" * 2000).decode()[:-1], Reason.INVALID_BASE64),  # truncated
        (base64.b64encode(b'{"a": NaN}').decode(), Reason.INVALID_JSON),
        (base64.b64encode(b'{"a": 1, "a": 2}').decode(), Reason.INVALID_JSON),
        ("A" * (MAX_PAYMENT_HEADER + 1), Reason.HEADER_TOO_LARGE),
    ],
    ids=lambda v: v[:12] if isinstance(v, str) else None,
)
def test_garbage_is_refused_with_a_reason(value, reason):
    assert reason_of(value) == reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda o: o.update(x402Version=1), Reason.UNSUPPORTED_VERSION),
        (lambda o: o.update(x402Version=True), Reason.UNSUPPORTED_VERSION),
        (lambda o: o["accepted"].update(scheme="exact"), Reason.UNSUPPORTED_SCHEME),
        (lambda o: o.pop("payload"), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"].update(cumulativeAmount=5000), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"].update(cumulativeAmount="05000"), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"].update(cumulativeAmount="-1"), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"].update(cumulativeAmount=" 1"), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"].update(cumulativeAmount="1_000"), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"].update(cumulativeAmount="١٢"), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"].update(cumulativeAmount=str(2**256)), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"].update(signature="0x" + "00" * 63), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"].update(signature="0x" + "zz" * 65), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"]["channel"].update(salt="0x01"), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"]["channel"].update(withdrawDelay="7200"), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"]["channel"].update(withdrawDelay=True), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"]["channel"].update(withdrawDelay=-1), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"]["channel"].update(extra=1), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"]["channel"].update(payer=["x"]), Reason.INVALID_PAYLOAD),
        (lambda o: o["payload"]["channel"].update(payer="0x1234"), Reason.INVALID_PAYLOAD),
        (
            lambda o: o["accepted"].update(payTo=CONFIG.payee.lower()[:-1] + "Z"),
            Reason.INVALID_PAYLOAD,
        ),
    ],
)
def test_malformed_fields_are_refused_with_a_reason(change, reason):
    assert reason_of(mutate(change)) == reason


def test_a_cached_configuration_is_not_reused_for_a_differently_typed_field():
    PaymentPayload.decode(mutate(lambda o: None))  # caches the configuration
    assert reason_of(mutate(lambda o: o["payload"]["channel"].update(withdrawDelay=7200.0))) == (
        Reason.INVALID_PAYLOAD
    )


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_header_errors(data):
    for value in (data, base64.b64encode(data)):
        with contextlib.suppress(PaymentHeaderError):
            PaymentPayload.decode(value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    json_values,
    st.sampled_from(
        [
            "x402Version",
            "accepted",
            "payload",
            "channel",
            "cumulativeAmount",
            "signature",
            "salt",
            "payer",
        ]
    ),
)
def test_random_json_in_any_field_raises_only_header_errors(value, field):
    obj = payload_json()
    for holder in (obj, obj["accepted"], obj["payload"], obj["payload"]["channel"]):
        if field in holder:
            holder[field] = value
    with contextlib.suppress(PaymentHeaderError):
        PaymentPayload.decode(encode(obj))
