"""Vouchers as ceilings (issue 13): the payee settles the total it charged, up to a voucher's
ceiling; settling is the payee's act (or relayed with its signature); the payee can refund
unspent deposit while the channel stays open. Each hostile case reverts with its named error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from channel_helpers import EthLedger, make_config
from eth_account import Account
from eth_utils.abi import function_abi_to_4byte_selector
from hexbytes import HexBytes

from micropay.channels import (
    ChannelFinishedError,
    NothingToClaimError,
    NotPayeeError,
    PayeeSignatureRejectedError,
    RefundExceedsUnspentError,
    TotalExceedsCeilingError,
    TotalExceedsDepositError,
    VoucherSignatureRejectedError,
    ZeroRefundError,
)
from micropay.errors import VoucherError
from micropay.vouchers import (
    PAYEE_CLAIM_TYPE,
    PAYEE_CLAIM_TYPEHASH,
    VoucherDomain,
    recover_digest,
    sign_payee_claim,
    sign_voucher,
)

ETH = 10**18


def signed(channels, config, ceiling, key):
    return sign_voucher(channels.domain, config.channel_id, ceiling, key)


def consent(channels, config, total, key):
    return sign_payee_claim(channels.domain, config.channel_id, total, key)


@pytest.fixture
def open_channel(channels, actors):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, 1_000, actors.payer)
    return config


# -- settling below the ceiling --------------------------------------------------------------


def test_claim_settles_the_total_the_payee_chose_not_the_ceiling(
    channels, actors, open_channel, w3
):
    ceiling = signed(channels, open_channel, 800, actors.payer)
    book = EthLedger(w3, actors.payee.address)
    receipt = book.paid_gas(
        actors.payee.address, channels.claim(open_channel, ceiling, actors.payee, total=300)
    )
    assert book.delta(actors.payee.address) == 300
    assert channels.state(open_channel).claimed == 300
    [event] = channels.contract.events.Claimed().process_receipt(receipt)
    assert event.args.totalClaimed == 300
    # The same voucher settles a later, larger charged total: only the difference moves.
    channels.claim(open_channel, ceiling, actors.payee, total=800)
    assert channels.state(open_channel).claimed == 800


def test_the_default_total_is_the_whole_voucher(channels, actors, open_channel):
    channels.claim(open_channel, signed(channels, open_channel, 450, actors.payer), actors.payee)
    assert channels.state(open_channel).claimed == 450


def test_a_ceiling_above_the_deposit_settles_a_total_within_it(channels, actors, open_channel):
    # The ceiling bounds what the payer authorised; the deposit bounds what moves.
    over = signed(channels, open_channel, 5_000, actors.payer)
    channels.claim(open_channel, over, actors.payee, total=1_000)
    assert channels.state(open_channel).claimed == 1_000


def test_a_total_above_the_ceiling_is_refused(channels, actors, open_channel):
    ceiling = signed(channels, open_channel, 500, actors.payer)
    with pytest.raises(TotalExceedsCeilingError) as info:
        channels.claim(open_channel, ceiling, actors.payee, total=501)
    assert (info.value.arguments["totalClaimed"], info.value.arguments["ceiling"]) == (501, 500)
    assert channels.state(open_channel).claimed == 0


def test_a_total_above_the_deposit_is_refused(channels, actors, open_channel):
    with pytest.raises(TotalExceedsDepositError, match="the 1000 the channel holds"):
        channels.claim(
            open_channel,
            signed(channels, open_channel, 2_000, actors.payer),
            actors.payee,
            total=1_001,
        )


@pytest.mark.parametrize("total", [199, 200], ids=["below", "equal"])
def test_a_total_not_above_the_settled_one_is_refused(channels, actors, open_channel, total):
    ceiling = signed(channels, open_channel, 900, actors.payer)
    channels.claim(open_channel, ceiling, actors.payee, total=200)
    with pytest.raises(NothingToClaimError) as info:
        channels.claim(open_channel, ceiling, actors.payee, total=total)
    assert info.value.arguments == {
        "channelId": "0x" + open_channel.channel_id.hex(),
        "totalClaimed": total,
        "claimed": 200,
    }
    assert channels.state(open_channel).claimed == 200


def test_claim_many_settles_each_channels_own_total(channels, actors):
    configs = [make_config(actors.payer, actors.payee) for _ in range(3)]
    for config in configs:
        channels.deposit(config, 1_000, actors.payer)
    channels.claim_many(
        [
            (configs[0], signed(channels, configs[0], 900, actors.payer), 100),
            (configs[1], signed(channels, configs[1], 900, actors.payer)),
            (configs[2], signed(channels, configs[2], 900, actors.payer), 900),
        ],
        actors.payee,
    )
    assert [channels.state(c).claimed for c in configs] == [100, 900, 900]


def test_close_settles_the_chosen_total_and_refunds_the_rest(channels, actors, open_channel, w3):
    book = EthLedger(w3, actors.payer.address, actors.payee.address)
    receipt = channels.close(
        open_channel, signed(channels, open_channel, 900, actors.payer), actors.payee, total=250
    )
    book.paid_gas(actors.payee.address, receipt)
    assert (book.delta(actors.payee.address), book.delta(actors.payer.address)) == (250, 750)
    [closed] = channels.contract.events.Closed().process_receipt(receipt)
    assert (closed.args.totalClaimed, closed.args.refunded) == (250, 750)


def test_close_with_a_total_above_the_ceiling_is_refused(channels, actors, open_channel):
    with pytest.raises(TotalExceedsCeilingError):
        channels.close(
            open_channel,
            signed(channels, open_channel, 100, actors.payer),
            actors.payee,
            total=101,
        )
    assert not channels.state(open_channel).finished


# -- a third party that saw a voucher --------------------------------------------------------


@pytest.mark.parametrize("who", ["payer", "relayer", "stranger"])
def test_a_third_party_cannot_claim_a_voucher_it_saw(channels, actors, open_channel, who):
    seen = signed(channels, open_channel, 1_000, actors.payer)
    call = channels.contract.functions.claim(
        open_channel.as_tuple(), 1_000, 1_000, seen.compact_signature
    )
    with pytest.raises(NotPayeeError) as info:
        channels._transact(call, getattr(actors, who))
    assert info.value.arguments["caller"] == getattr(actors, who).address
    assert channels.state(open_channel).claimed == 0


def test_a_third_party_cannot_claim_many_with_vouchers_it_saw(channels, actors, open_channel):
    seen = signed(channels, open_channel, 1_000, actors.payer)
    with pytest.raises(NotPayeeError):
        channels.claim_many([(open_channel, seen)], actors.stranger)
    assert channels.state(open_channel).claimed == 0


def test_the_sdk_will_not_relay_without_the_payees_key(channels, actors, open_channel):
    seen = signed(channels, open_channel, 1_000, actors.payer)
    with pytest.raises(VoucherError, match="only the payee"):
        channels.claim_each([(open_channel, seen)], actors.relayer)
    with pytest.raises(VoucherError, match="only the payee"):
        channels.claim_each([(open_channel, seen)], actors.relayer, payee_key=actors.stranger)


# -- relayed claims ----------------------------------------------------------------------------


def test_a_relayed_claim_settles_what_the_payee_signed(channels, actors, open_channel, w3):
    voucher = signed(channels, open_channel, 1_000, actors.payer)
    book = EthLedger(w3, actors.payee.address)
    channels.claim_for(
        open_channel, voucher, consent(channels, open_channel, 400, actors.payee), actors.relayer
    )
    assert book.delta(actors.payee.address) == 400
    assert channels.state(open_channel).claimed == 400


def test_claim_each_relays_with_the_payees_key(channels, actors):
    configs = [make_config(actors.payer, actors.payee) for _ in range(2)]
    for config in configs:
        channels.deposit(config, 1_000, actors.payer)
    items = [(c, signed(channels, c, 700, actors.payer), 300) for c in configs]
    channels.claim_each(items[:1], actors.relayer, payee_key=actors.payee)
    channels.claim_each([(c, v, 500) for c, v, _ in items], actors.relayer, payee_key=actors.payee)
    assert [channels.state(c).claimed for c in configs] == [500, 500]


def test_a_relayed_claim_with_a_bad_payee_signature_is_refused(channels, actors, open_channel):
    voucher = signed(channels, open_channel, 1_000, actors.payer)
    forged = consent(channels, open_channel, 1_000, actors.stranger)
    with pytest.raises(PayeeSignatureRejectedError) as info:
        channels.claim_for(open_channel, voucher, forged, actors.stranger)
    assert info.value.arguments["payee"] == actors.payee.address
    # The payee's signature of one total does not settle another.
    other_total = consent(channels, open_channel, 100, actors.payee)
    call = channels.contract.functions.claimFor(
        open_channel.as_tuple(), 1_000, 1_000, voucher.compact_signature, other_total.signature
    )
    with pytest.raises(PayeeSignatureRejectedError):
        channels._transact(call, actors.stranger)
    assert channels.state(open_channel).claimed == 0


def test_a_payee_signature_is_spent_once_its_total_is_claimed(channels, actors, open_channel):
    voucher = signed(channels, open_channel, 1_000, actors.payer)
    once = consent(channels, open_channel, 600, actors.payee)
    channels.claim_for(open_channel, voucher, once, actors.relayer)
    with pytest.raises(NothingToClaimError):
        channels.claim_for(open_channel, voucher, once, actors.stranger)


def test_a_relayed_claim_still_needs_the_authorizers_voucher(channels, actors, open_channel):
    forged = signed(channels, open_channel, 1_000, actors.stranger)
    with pytest.raises(VoucherSignatureRejectedError):
        channels.claim_for(
            open_channel,
            forged,
            consent(channels, open_channel, 500, actors.payee),
            actors.relayer,
        )


def test_claim_many_for_needs_one_payee_signature_per_claim(channels, actors, open_channel):
    voucher = signed(channels, open_channel, 1_000, actors.payer)
    call = channels.contract.functions.claimManyFor(
        [(open_channel.as_tuple(), 500, 1_000, voucher.compact_signature)], []
    )
    with pytest.raises(PayeeSignatureRejectedError, match="1 claims need as many"):
        channels._transact(call, actors.relayer)


def test_claim_many_for_refuses_more_payee_signatures_than_claims(channels, actors, open_channel):
    voucher = signed(channels, open_channel, 1_000, actors.payer)
    payee_claim = consent(channels, open_channel, 500, actors.payee)
    call = channels.contract.functions.claimManyFor(
        [(open_channel.as_tuple(), 500, 1_000, voucher.compact_signature)],
        [payee_claim.signature, payee_claim.signature],
    )
    with pytest.raises(PayeeSignatureRejectedError, match="1 claims need as many"):
        channels._transact(call, actors.relayer)
    assert channels.state(open_channel).claimed == 0


def test_claim_many_for_checks_every_claims_payee_signature(channels, actors):
    """One forged consent in a relayed batch refuses the whole batch, wherever it is."""
    configs = [make_config(actors.payer, actors.payee) for _ in range(2)]
    for config in configs:
        channels.deposit(config, 1_000, actors.payer)
    vouchers = [signed(channels, c, 1_000, actors.payer) for c in configs]
    good = [consent(channels, c, 400, actors.payee) for c in configs]
    forged = [consent(channels, c, 400, actors.stranger) for c in configs]
    for consents in ([good[0], forged[1]], [forged[0], good[1]]):
        with pytest.raises(PayeeSignatureRejectedError):
            channels.claim_many_for(
                [(c, v, 400) for c, v in zip(configs, vouchers, strict=True)],
                consents,
                actors.stranger,
            )
    assert [channels.state(c).claimed for c in configs] == [0, 0]
    channels.claim_many_for(
        [(c, v, 400) for c, v in zip(configs, vouchers, strict=True)], good, actors.relayer
    )
    assert [channels.state(c).claimed for c in configs] == [400, 400]


def test_a_relayed_batch_pays_one_payee_in_each_channels_own_token(channels, actors, usd, w3):
    """One payee's ETH and token channels in one claimManyFor: each payout goes out in its
    channel's token (a batch cut by payee alone would pay the token claim in ETH)."""
    configs = [
        make_config(actors.payer, actors.payee),
        make_config(actors.payer, actors.payee, token=usd.address),
    ]
    for config in configs:
        channels.deposit(config, 1_000, actors.payer)
    items = [(c, signed(channels, c, 1_000, actors.payer), 400) for c in configs]
    eth_before = w3.eth.get_balance(actors.payee.address)
    usd_before = usd.balance_of(actors.payee.address)
    channels.claim_each(items, actors.relayer, payee_key=actors.payee)  # claimManyFor
    assert w3.eth.get_balance(actors.payee.address) - eth_before == 400
    assert usd.balance_of(actors.payee.address) - usd_before == 400
    assert [channels.state(c).claimed for c in configs] == [400, 400]


# -- on-chain refunds --------------------------------------------------------------------------


def test_a_refund_returns_unspent_deposit_and_the_channel_stays_open(
    channels, actors, open_channel, w3
):
    channels.claim(
        open_channel, signed(channels, open_channel, 1_000, actors.payer), actors.payee, total=300
    )
    book = EthLedger(w3, actors.payer.address)
    receipt = channels.refund(open_channel, 200, actors.payee)
    assert book.delta(actors.payer.address) == 200
    state = channels.state(open_channel)
    assert (state.deposited, state.claimed, state.phase) == (800, 300, "open")
    [event] = channels.contract.events.Refunded().process_receipt(receipt)
    assert (event.args.channelId, event.args.totalDeposited) == (open_channel.channel_id, 800)
    # The voucher's ceiling is untouched; what moves is bounded by what is left.
    ceiling = signed(channels, open_channel, 1_000, actors.payer)
    with pytest.raises(TotalExceedsDepositError):
        channels.claim(open_channel, ceiling, actors.payee, total=801)
    channels.claim(open_channel, ceiling, actors.payee, total=800)
    channels.deposit(open_channel, 50, actors.payer)  # a top-up after a refund adds as before
    assert channels.state(open_channel).deposited == 850


def test_an_erc20_refund_pays_the_payer_in_the_token(channels, actors, usd):
    config = make_config(actors.payer, actors.payee, token=usd.address)
    channels.deposit(config, 1_000, actors.payer)
    before = usd.balance_of(actors.payer.address)
    channels.refund(config, 1_000, actors.payee)
    assert usd.balance_of(actors.payer.address) - before == 1_000
    assert channels.state(config).deposited == 0


def test_a_refund_above_the_unspent_deposit_is_refused(channels, actors, open_channel):
    channels.claim(open_channel, signed(channels, open_channel, 400, actors.payer), actors.payee)
    with pytest.raises(RefundExceedsUnspentError) as info:
        channels.refund(open_channel, 601, actors.payee)
    assert (info.value.arguments["amount"], info.value.arguments["unspent"]) == (601, 600)
    assert channels.state(open_channel).deposited == 1_000


@pytest.mark.parametrize("who", ["payer", "relayer", "stranger"])
def test_only_the_payee_may_refund(channels, actors, open_channel, who):
    with pytest.raises(NotPayeeError):
        channels.refund(open_channel, 1, getattr(actors, who))


def test_a_refund_of_nothing_is_refused(channels, actors, open_channel):
    with pytest.raises(ZeroRefundError):
        channels.refund(open_channel, 0, actors.payee)


def test_a_finished_channel_refunds_nothing_more(channels, actors, open_channel):
    channels.close(open_channel, None, actors.payee)
    with pytest.raises(ChannelFinishedError):
        channels.refund(open_channel, 1, actors.payee)


def test_a_channel_never_funded_has_nothing_to_refund(channels, actors):
    with pytest.raises(RefundExceedsUnspentError):
        channels.refund(make_config(actors.payer, actors.payee), 1, actors.payee)


# -- the protocol document -------------------------------------------------------------------


def test_the_protocol_document_shows_the_payee_claim_byte_for_byte(channels):
    text = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    assert PAYEE_CLAIM_TYPE in text
    assert f"0x{PAYEE_CLAIM_TYPEHASH.hex()}" in text
    domain = VoucherDomain(31337, "0xc0C68246210785562DdAED507F07AcB78292204B")
    channel_id = bytes.fromhex("77fd0f66ea475ee65e6b8f186ca3ab312d2fd7afe17d73f2f74e7ef84c06aa73")
    digest = domain.payee_claim_digest(channel_id, 25_000_000_000_000)
    assert f"0x{domain.separator.hex()}" in text and f"0x{digest.hex()}" in text
    site = Account.from_key(b"\x03" * 32)
    signed = sign_payee_claim(domain, channel_id, 25_000_000_000_000, site)
    assert f"0x{signed.signature.hex()}" in text and site.address in text
    assert recover_digest(digest, signed.signature) == bytes.fromhex(site.address[2:])
    # Every selector and the new event's topic, as the shipped ABI has them.
    for entry in channels.contract.abi:
        if entry["type"] == "function" and entry["name"] in CHANGED:
            assert f"(`0x{function_abi_to_4byte_selector(entry).hex()}`)" in text, entry["name"]
    assert f"`0x{HexBytes(channels.contract.events.Refunded.topic).hex()}`" in text


CHANGED = {"claim", "claimFor", "claimMany", "claimManyFor", "close", "refund"}
