"""The replay matrix: a voucher is worth something in exactly one place.

Each case is checked on chain (the contract refuses) and, where the payee can tell, by the
SDK's verifier too, so the payee never accepts what the contract would refuse.
"""

from __future__ import annotations

import pytest
from channel_helpers import DELAY, advance, make_config
from eth_account import Account
from eth_account.messages import encode_typed_data

from micropay.channels import (
    ChannelClient,
    ChannelFinishedError,
    VoucherSignatureRejectedError,
)
from micropay.errors import InvalidSignatureError
from micropay.vouchers import SECP256K1_N, Voucher, VoucherDomain, VoucherVerifier, sign_voucher

ETH = 10**18


@pytest.fixture
def opened(channels, actors):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    return config


def raw_claim(channels, config, amount, signature, sender):
    call = channels.contract.functions.claim(config.as_tuple(), amount, amount, signature)
    return channels._transact(call, sender)


def sdk_refuses(channels, config, voucher):
    with pytest.raises(InvalidSignatureError):
        VoucherVerifier(channels.domain).verify(voucher, bytes.fromhex(config.authorizer[2:]))


def test_voucher_for_another_chain_id_is_worthless(channels, actors, opened):
    foreign = VoucherDomain(channels.domain.chain_id + 1, channels.address)
    voucher = sign_voucher(foreign, opened.channel_id, 100, actors.payer)
    sdk_refuses(channels, opened, voucher)
    with pytest.raises(VoucherSignatureRejectedError):
        channels.claim(opened, voucher, actors.payee)


def test_voucher_for_another_contract_is_worthless(channels, actors, opened, w3):
    other = ChannelClient.deploy(w3, actors.deployer)
    other.deposit(opened, ETH, actors.payer)  # the same channel id exists there too
    voucher = sign_voucher(other.domain, opened.channel_id, 100, actors.payer)
    other.claim(opened, voucher, actors.payee)  # valid where it was meant to be
    sdk_refuses(channels, opened, voucher)
    with pytest.raises(VoucherSignatureRejectedError):
        channels.claim(opened, voucher, actors.payee)


def test_voucher_for_another_channel_is_worthless(channels, actors, opened):
    sibling = make_config(actors.payer, actors.payee)  # same parties, same authorizer
    channels.deposit(sibling, ETH, actors.payer)
    voucher = sign_voucher(channels.domain, sibling.channel_id, 100, actors.payer)
    moved = Voucher(opened.channel_id, 100, voucher.signature)
    sdk_refuses(channels, opened, moved)
    with pytest.raises(VoucherSignatureRejectedError):
        channels.claim(opened, moved, actors.payee)


def test_finished_channel_id_cannot_be_reused(channels, actors, opened):
    old = sign_voucher(channels.domain, opened.channel_id, 100, actors.payer)
    channels.request_withdraw(opened, actors.payer)
    advance(DELAY)
    channels.finish_withdraw(opened, actors.payer)
    with pytest.raises(ChannelFinishedError):
        channels.deposit(opened, ETH, actors.payer)
    with pytest.raises(ChannelFinishedError):
        channels.claim(opened, old, actors.payee)


def test_high_s_signature_is_refused(channels, actors, opened):
    voucher = sign_voucher(channels.domain, opened.channel_id, 100, actors.payer)
    s = int.from_bytes(voucher.signature[32:64], "big")
    twin = (
        voucher.signature[:32]
        + (SECP256K1_N - s).to_bytes(32, "big")
        + bytes([55 - voucher.signature[64]])
    )
    sdk_refuses(channels, opened, Voucher(opened.channel_id, 100, twin))
    with pytest.raises(VoucherSignatureRejectedError):
        raw_claim(channels, opened, 100, twin, actors.payee)


@pytest.mark.parametrize("v", [0, 1, 29])
def test_v_variants_are_refused(channels, actors, opened, v):
    voucher = sign_voucher(channels.domain, opened.channel_id, 100, actors.payer)
    variant = voucher.signature[:64] + bytes([v])
    with pytest.raises(InvalidSignatureError):
        VoucherVerifier(channels.domain).verify(
            Voucher(opened.channel_id, 100, variant), bytes.fromhex(opened.authorizer[2:])
        )
    with pytest.raises(VoucherSignatureRejectedError):
        raw_claim(channels, opened, 100, variant, actors.payee)


def test_flipped_recovery_id_is_refused(channels, actors, opened):
    voucher = sign_voucher(channels.domain, opened.channel_id, 100, actors.payer)
    flipped = voucher.signature[:64] + bytes([55 - voucher.signature[64]])
    sdk_refuses(channels, opened, Voucher(opened.channel_id, 100, flipped))
    with pytest.raises(VoucherSignatureRejectedError):
        raw_claim(channels, opened, 100, flipped, actors.payee)


@pytest.mark.parametrize("signature", [bytes(65), bytes(64) + b"\x1b", b"\x01" * 32 + bytes(33)])
def test_signatures_recovering_the_zero_signer_are_refused(channels, actors, opened, signature):
    with pytest.raises(VoucherSignatureRejectedError):
        raw_claim(channels, opened, 100, signature, actors.payee)


@pytest.mark.parametrize("signature", [b"", b"\x01" * 63, b"\x01" * 66])
def test_signatures_of_other_lengths_are_refused(channels, actors, opened, signature):
    with pytest.raises(VoucherSignatureRejectedError):
        raw_claim(channels, opened, 100, signature, actors.payee)


def test_voucher_from_the_wrong_authorizer_is_refused(channels, actors):
    config = make_config(actors.payer, actors.payee, actors.relayer)  # a session key
    channels.deposit(config, ETH, actors.payer)
    voucher = sign_voucher(channels.domain, config.channel_id, 100, actors.payer)
    sdk_refuses(channels, config, voucher)
    with pytest.raises(VoucherSignatureRejectedError):
        channels.claim(config, voucher, actors.payee)


def test_signature_over_another_message_type_is_refused(channels, actors, opened):
    # The same fields under another EIP-712 type (a look-alike "Payment") sign another digest.
    typed = channels.domain.typed_data(opened.channel_id, 100)
    typed["types"]["Payment"] = typed["types"].pop("Voucher")
    typed["primaryType"] = "Payment"
    typed["message"]["cumulativeAmount"] = 100
    signed = Account.sign_message(encode_typed_data(full_message=typed), actors.payer.key)
    voucher = Voucher(opened.channel_id, 100, bytes(signed.signature))
    sdk_refuses(channels, opened, voucher)
    with pytest.raises(VoucherSignatureRejectedError):
        channels.claim(opened, voucher, actors.payee)


def test_voucher_after_the_channel_closed_is_refused(channels, actors, opened):
    later = sign_voucher(channels.domain, opened.channel_id, 500, actors.payer)
    channels.close(
        opened, sign_voucher(channels.domain, opened.channel_id, 100, actors.payer), actors.payee
    )
    with pytest.raises(ChannelFinishedError):
        channels.claim(opened, later, actors.payee)


def test_contract_authorizer_signs_through_eip1271(channels, actors, project, accounts):
    wallet = project.MockERC1271Wallet.deploy(actors.payer.address, sender=accounts[0])
    config = make_config(actors.payer, actors.payee, type("W", (), {"address": wallet.address}))
    channels.deposit(config, ETH, actors.payer)
    by_owner = sign_voucher(channels.domain, config.channel_id, 300, actors.payer)
    raw_claim(channels, config, 300, by_owner.signature, actors.payee)
    assert channels.state(config).claimed == 300
    by_stranger = sign_voucher(channels.domain, config.channel_id, 400, actors.stranger)
    with pytest.raises(VoucherSignatureRejectedError):
        raw_claim(channels, config, 400, by_stranger.signature, actors.payee)
