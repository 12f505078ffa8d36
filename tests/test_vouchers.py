"""The voucher codec and the fast verifier, against eth-account's generic EIP-712 encoder."""

from __future__ import annotations

import json

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from micropay.errors import InvalidSignatureError, VoucherError
from micropay.vouchers import (
    SECP256K1_N,
    ChannelConfig,
    Voucher,
    VoucherDomain,
    VoucherVerifier,
    recover_signer,
    sign_voucher,
)

pytestmark = pytest.mark.offchain

KEY = Account.from_key(b"\x11" * 32)
OTHER = Account.from_key(b"\x22" * 32)
DOMAIN = VoucherDomain(1337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")

channel_ids = st.binary(min_size=32, max_size=32)
amounts = st.integers(min_value=0, max_value=2**256 - 1)
chain_ids = st.integers(min_value=1, max_value=2**256 - 1)
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
keys = st.binary(min_size=32, max_size=32).filter(
    lambda b: 0 < int.from_bytes(b, "big") < SECP256K1_N
)


def generic_digest(domain: VoucherDomain, channel_id: bytes, amount: int) -> bytes:
    typed = domain.typed_data(channel_id, amount)
    typed["message"]["cumulativeAmount"] = amount  # eth-account wants the integer
    signable = encode_typed_data(full_message=typed)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


@settings(max_examples=300, deadline=None)
@given(chain_ids, addresses, channel_ids, amounts)
def test_fast_digest_equals_eth_account_encoder(chain_id, contract, channel_id, amount):
    domain = VoucherDomain(chain_id, contract)
    assert domain.digest(channel_id, amount) == generic_digest(domain, channel_id, amount)
    assert VoucherVerifier(domain).digest(channel_id, amount) == domain.digest(channel_id, amount)


@settings(max_examples=100, deadline=None)
@given(keys, chain_ids, addresses, channel_ids, amounts)
def test_sdk_signatures_recover_identically_both_ways(
    secret, chain_id, contract, channel_id, amount
):
    domain = VoucherDomain(chain_id, contract)
    signer = Account.from_key(secret)
    voucher = sign_voucher(domain, channel_id, amount, signer)
    assert recover_signer(domain, voucher) == signer.address
    typed = domain.typed_data(channel_id, amount)
    typed["message"]["cumulativeAmount"] = amount
    assert (
        Account.recover_message(encode_typed_data(full_message=typed), signature=voucher.signature)
        == signer.address
    )


@settings(max_examples=100, deadline=None)
@given(keys, channel_ids, amounts)
def test_eth_account_signatures_verify_on_the_fast_path(secret, channel_id, amount):
    signer = Account.from_key(secret)
    typed = DOMAIN.typed_data(channel_id, amount)
    typed["message"]["cumulativeAmount"] = amount
    signed = Account.sign_message(encode_typed_data(full_message=typed), secret)
    voucher = Voucher(channel_id, amount, bytes(signed.signature))
    VoucherVerifier(DOMAIN).verify(voucher, bytes.fromhex(signer.address[2:]))


def test_typed_data_json_is_what_a_wallet_signs():
    typed = DOMAIN.typed_data(b"\x01" * 32, 2**200)
    wire = json.loads(json.dumps(typed))  # plain JSON, as eth_signTypedData_v4 receives it
    assert wire["primaryType"] == "Voucher"
    assert wire["message"]["cumulativeAmount"] == str(2**200)
    assert wire["domain"] == {
        "name": "micropay",
        "version": "1",
        "chainId": 1337,
        "verifyingContract": DOMAIN.verifying_contract,
    }
    wire["message"]["cumulativeAmount"] = 2**200
    signed = Account.sign_message(encode_typed_data(full_message=wire), KEY.key)
    assert (
        recover_signer(DOMAIN, Voucher(b"\x01" * 32, 2**200, bytes(signed.signature)))
        == KEY.address
    )


def high_s_twin(voucher: Voucher) -> Voucher:
    s = int.from_bytes(voucher.signature[32:64], "big")
    v = voucher.signature[64]
    twin = voucher.signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])
    return Voucher(voucher.channel_id, voucher.cumulative_amount, twin)


def test_high_s_twin_is_rejected_although_eth_account_accepts_it():
    voucher = sign_voucher(DOMAIN, b"\x05" * 32, 10, KEY)
    twin = high_s_twin(voucher)
    typed = DOMAIN.typed_data(b"\x05" * 32, 10)
    typed["message"]["cumulativeAmount"] = 10
    # The reason the verifier checks s itself:
    assert (
        Account.recover_message(encode_typed_data(full_message=typed), signature=twin.signature)
        == KEY.address
    )
    with pytest.raises(InvalidSignatureError, match="high-s"):
        VoucherVerifier(DOMAIN).recover(twin)


@pytest.mark.parametrize("v", [0, 1, 2, 26, 29, 35, 255])
def test_v_other_than_27_or_28_is_rejected(v):
    voucher = sign_voucher(DOMAIN, b"\x05" * 32, 10, KEY)
    bad = Voucher(voucher.channel_id, 10, voucher.signature[:64] + bytes([v]))
    with pytest.raises(InvalidSignatureError, match="27 or 28"):
        VoucherVerifier(DOMAIN).recover(bad)


def test_signature_that_recovers_no_key_is_rejected():
    bad = Voucher(b"\x05" * 32, 10, bytes(64) + b"\x1b")  # r = s = 0
    with pytest.raises(InvalidSignatureError):
        VoucherVerifier(DOMAIN).recover(bad)


@pytest.mark.parametrize("length", [0, 63, 66, 130])  # 64 bytes is the EIP-2098 form
def test_signature_of_the_wrong_length_is_rejected(length):
    with pytest.raises(InvalidSignatureError, match="65 bytes"):
        Voucher(b"\x05" * 32, 10, b"\x01" * length)


def test_voucher_from_another_domain_does_not_verify():
    voucher = sign_voucher(DOMAIN, b"\x05" * 32, 10, KEY)
    authorizer = bytes.fromhex(KEY.address[2:])
    for other in (
        VoucherDomain(1338, DOMAIN.verifying_contract),
        VoucherDomain(1337, "0x" + "ab" * 20),
    ):
        with pytest.raises(InvalidSignatureError, match="not signed by"):
            VoucherVerifier(other).verify(voucher, authorizer)


def test_voucher_signed_by_another_key_does_not_verify():
    voucher = sign_voucher(DOMAIN, b"\x05" * 32, 10, OTHER)
    with pytest.raises(InvalidSignatureError):
        VoucherVerifier(DOMAIN).verify(voucher, bytes.fromhex(KEY.address[2:]))


def test_compact_signature_is_eip2098():
    voucher = sign_voucher(DOMAIN, b"\x05" * 32, 10, KEY)
    compact = voucher.compact_signature
    assert len(compact) == 64 and compact[:32] == voucher.signature[:32]
    y_parity = compact[32] >> 7
    assert y_parity == voucher.signature[64] - 27
    s = int.from_bytes(compact[32:], "big") & ((1 << 255) - 1)
    assert s == int.from_bytes(voucher.signature[32:64], "big")


@settings(max_examples=100, deadline=None)
@given(addresses, addresses, addresses, addresses, st.integers(0, 2**32 - 1), channel_ids)
def test_channel_id_is_keccak_of_the_abi_encoded_config(payer, payee, token, auth, delay, salt):
    config = ChannelConfig(payer, payee, token, auth, delay, salt)
    expected = keccak(
        encode(
            ["(address,address,address,address,uint32,bytes32)"],
            [(payer, payee, token, auth, delay, salt)],
        )
    )
    assert config.channel_id == expected
    assert ChannelConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


@pytest.mark.parametrize(
    "change, message",
    [
        ({"payer": "0x1234"}, "payer is not an address"),
        ({"payee": 5}, "payee is not an address"),
        ({"withdrawDelay": -1}, "withdraw_delay"),
        ({"withdrawDelay": 2**32}, "withdraw_delay"),
        ({"withdrawDelay": "3600"}, "withdraw_delay"),
        ({"withdrawDelay": True}, "withdraw_delay"),
        ({"salt": "0x1234"}, "32 bytes"),
        ({"salt": "zz"}, "0x-prefixed"),
        ({"salt": "0x" + "zz" * 32}, "malformed"),
    ],
)
def test_malformed_config_json_raises_a_named_error(change, message):
    good = ChannelConfig(
        KEY.address, OTHER.address, "0x" + "00" * 20, KEY.address, 3600, b"\x00" * 32
    ).to_json()
    with pytest.raises(VoucherError, match=message):
        ChannelConfig.from_json({**good, **change})


@pytest.mark.parametrize("data", [None, [], "x", {"payer": KEY.address}])
def test_config_json_that_is_not_a_config_raises(data):
    with pytest.raises(VoucherError):
        ChannelConfig.from_json(data)


@pytest.mark.parametrize(
    "channel_id, amount",
    [
        (b"\x00" * 31, 1),
        (b"\x00" * 33, 1),
        ("00" * 32, 1),
        (b"\x00" * 32, -1),
        (b"\x00" * 32, 2**256),
        (b"\x00" * 32, 1.0),
        (b"\x00" * 32, True),
    ],
)
def test_out_of_range_voucher_fields_raise(channel_id, amount):
    with pytest.raises(VoucherError):
        DOMAIN.digest(channel_id, amount)
