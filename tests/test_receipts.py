"""Site-signed receipts offline: the digest against eth-account's EIP-712 encoder, every
field bound by the signature, the header codec, and the access proof."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from ledger_helpers import AUTHORIZER, DOMAIN, SITE, channel, charge

from micropay._keccak import keccak256
from micropay._x402 import AccessRequest, Receipt
from micropay.errors import PaymentHeaderError, ReceiptError
from micropay.receipts import (
    ACCESS_TYPE,
    RECEIPT_TYPE,
    access_digest,
    receipt_problem,
    recover_access,
    sign_access,
    verify_receipt,
)
from micropay.vouchers import SECP256K1_N, VoucherDomain, sign_voucher

pytestmark = pytest.mark.offchain

CONFIG = channel(1)


def test_the_receipt_digest_is_eip712_as_eth_account_encodes_it():
    receipt = charge(CONFIG, 7_000, 1_000, resource="GET /articles/café?")
    signable = encode_typed_data(full_message=receipt.typed_data())
    assert Account.recover_message(signable, signature=receipt.signature) == SITE.address
    assert verify_receipt(receipt) == SITE.address
    assert verify_receipt(receipt, SITE.address.lower()) == SITE.address


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 1_001},
        {"cumulative_amount": 7_001},
        {"resource": "GET /articles/2"},
        {"issued_at": 1_767_225_601},
        {"receipt_id": b"\x01" * 32},
        {"channel_id": channel(2).channel_id},
        {"payer": "0x" + "33" * 20},
        {"asset": "0x" + "44" * 20},
        {"domain": VoucherDomain(DOMAIN.chain_id + 1, DOMAIN.verifying_contract)},
        {"domain": VoucherDomain(DOMAIN.chain_id, "0x" + "55" * 20)},
    ],
)
def test_every_field_is_bound_by_the_site_signature(change):
    tampered = replace(charge(CONFIG, 7_000, 1_000), **change)
    assert verify_receipt(tampered) != SITE.address
    with pytest.raises(ReceiptError, match="not by"):
        verify_receipt(tampered, SITE.address)
    assert receipt_problem(tampered, SITE.address, tampered.domain) is not None


def test_malformed_and_malleable_signatures_are_receipt_errors():
    receipt = charge(CONFIG, 7_000)
    with pytest.raises(ReceiptError, match="65 bytes"):
        verify_receipt(replace(receipt, signature=receipt.signature[:64]))
    s = int.from_bytes(receipt.signature[32:64], "big")
    high_s = (
        receipt.signature[:32]
        + (SECP256K1_N - s).to_bytes(32, "big")
        + bytes([55 - receipt.signature[64]])
    )
    with pytest.raises(ReceiptError, match="high-s"):
        verify_receipt(replace(receipt, signature=high_s))
    # a voucher signature never passes for a receipt: another domain name, another type
    voucher = sign_voucher(DOMAIN, CONFIG.channel_id, 7_000, SITE)
    assert verify_receipt(replace(receipt, signature=voucher.signature)) != SITE.address
    assert receipt_problem(None, SITE.address, DOMAIN) == "the receipt is not signed"
    assert receipt_problem(receipt, SITE.address, VoucherDomain(1, DOMAIN.verifying_contract))


def test_the_payment_response_carries_the_signed_receipt_and_old_ones_still_decode():
    signed = charge(CONFIG, 7_000, 1_000)
    header = Receipt.of(signed, 93_000).encode()
    decoded = Receipt.decode(header)
    assert decoded.signed == signed and decoded.remaining == 93_000
    assert verify_receipt(decoded.signed) == SITE.address
    old = Receipt("eip155:31337", CONFIG.payer, CONFIG.channel_id, 1_000, 7_000, 93_000)
    assert Receipt.decode(old.encode()) == old and old.signed is None
    # the header's amount is the signed one: tampering with it breaks the signature
    obj = Receipt.of(signed, 0).to_json()
    tampered = Receipt.from_json({**obj, "amount": "999"}).signed
    assert tampered is not None and tampered.amount == 999
    with pytest.raises(ReceiptError):
        verify_receipt(tampered, SITE.address)
    with pytest.raises(PaymentHeaderError, match="another charge"):
        replace(old, amount=999, signed=signed)
    with pytest.raises(PaymentHeaderError):
        Receipt.from_json({**obj, "issuedAt": "1767225600"})


def test_the_access_proof_is_eip712_and_names_the_nonce_and_resource():
    receipt, nonce = charge(CONFIG, 7_000), os.urandom(32)
    proof = sign_access(DOMAIN, AUTHORIZER, receipt.receipt_id, nonce, "GET /articles/1")
    typed = {
        "types": {
            "EIP712Domain": receipt.typed_data()["types"]["EIP712Domain"],  # type: ignore[index]
            "Access": [
                {"name": "receiptId", "type": "bytes32"},
                {"name": "nonce", "type": "bytes32"},
                {"name": "resource", "type": "string"},
            ],
        },
        "primaryType": "Access",
        "domain": receipt.typed_data()["domain"],
        "message": {
            "receiptId": "0x" + receipt.receipt_id.hex(),
            "nonce": "0x" + nonce.hex(),
            "resource": "GET /articles/1",
        },
    }
    assert Account.recover_message(encode_typed_data(full_message=typed), signature=proof) == (
        AUTHORIZER.address
    )
    assert access_digest(DOMAIN, receipt.receipt_id, nonce, "GET /articles/1") != access_digest(
        DOMAIN, receipt.receipt_id, nonce, "GET /articles/2"
    )
    signer = recover_access(DOMAIN, receipt.receipt_id, nonce, "GET /articles/1", proof)
    assert signer == bytes.fromhex(AUTHORIZER.address[2:])
    request = AccessRequest(receipt, nonce, proof)
    assert AccessRequest.decode(request.encode()) == request


def test_the_protocol_document_shows_a_receipt_that_verifies_as_it_says():
    text = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    [wire] = re.findall(r"^PAYMENT-RESPONSE: (\S+)$", text, re.M)
    signed = Receipt.decode(wire).signed
    assert signed is not None
    assert verify_receipt(signed) == Account.from_key(b"\x03" * 32).address
    assert f"0x{signed.digest.hex()}" in text
    assert RECEIPT_TYPE in text and ACCESS_TYPE in text
    assert f"0x{keccak256(RECEIPT_TYPE.encode()).hex()}" in text
    assert f"0x{keccak256(ACCESS_TYPE.encode()).hex()}" in text
