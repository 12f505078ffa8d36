"""Every PaymentChannels operation, its success and each named failure, through the SDK client."""

from __future__ import annotations

import pytest
from channel_helpers import DELAY, EthLedger, advance, make_config

from micropay.channels import (
    ChannelConfigError,
    ChannelFinishedError,
    ChannelNotFoundError,
    NothingToClaimError,
    NotPayeeError,
    NotPayerError,
    VoucherExceedsDepositError,
    VoucherSignatureRejectedError,
    WithdrawAlreadyRequestedError,
    WithdrawNotReadyError,
    WithdrawNotRequestedError,
    ZeroDepositError,
)
from micropay.errors import ContractRevertError
from micropay.vouchers import ZERO_ADDRESS, ChannelConfig, sign_payee_claim, sign_voucher

ETH = 10**18


def voucher(channels, config, amount, key):
    return sign_voucher(channels.domain, config.channel_id, amount, key)


# -- deposit ---------------------------------------------------------------------------------


def test_first_deposit_opens_an_eth_channel(channels, actors, w3):
    config = make_config(actors.payer, actors.payee)
    receipt = channels.deposit(config, ETH, actors.payer)
    state = channels.state(config)
    assert (state.deposited, state.claimed, state.closes_at, state.finished) == (ETH, 0, 0, False)
    [event] = channels.contract.events.Deposited().process_receipt(receipt)
    assert event.args.channelId == config.channel_id
    assert event.args.funder == actors.payer.address
    assert (event.args.amount, event.args.totalDeposited) == (ETH, ETH)
    assert w3.eth.get_balance(channels.address) == ETH


def test_channel_id_on_chain_matches_the_sdk(channels, actors):
    config = make_config(actors.payer, actors.payee, actors.relayer, salt=2**255 + 7)
    assert channels.contract.functions.channelId(config.as_tuple()).call() == config.channel_id


def test_anyone_may_top_up_and_the_total_grows(channels, actors):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    channels.deposit(config, 2 * ETH, actors.stranger)
    assert channels.state(config).deposited == 3 * ETH


def test_erc20_deposit_pulls_the_tokens(channels, actors, usd):
    config = make_config(actors.payer, actors.payee, token=usd.address)
    before = usd.balance_of(actors.payer.address)
    channels.deposit(config, 5_000_000, actors.payer)
    assert usd.balance_of(actors.payer.address) == before - 5_000_000
    assert usd.balance_of(channels.address) == 5_000_000
    assert channels.state(config).deposited == 5_000_000


def test_deposit_with_permit_needs_no_prior_approval(channels, actors, usd, w3):
    funder = actors.stranger
    usd.mint(funder.address, 1_000, actors.deployer)
    config = make_config(actors.payer, actors.payee, token=usd.address)
    deadline = 2**64
    permit = usd.sign_permit(funder, channels.address, 1_000, deadline)
    channels.deposit_with_permit(config, 1_000, deadline, permit, funder)
    assert channels.state(config).deposited == 1_000
    assert usd.balance_of(funder.address) == 0


def test_deposit_with_an_already_used_permit_still_works_if_allowed(channels, actors, usd):
    funder = actors.stranger
    usd.mint(funder.address, 1_000, actors.deployer)
    config = make_config(actors.payer, actors.payee, token=usd.address)
    permit = usd.sign_permit(funder, channels.address, 1_000, 2**64)
    v, r, s = permit
    # Front-run: someone submits the permit first; the deposit must not fail for it.
    usd._transact(
        usd.contract.functions.permit(funder.address, channels.address, 1_000, 2**64, v, r, s),
        actors.relayer,
    )
    channels.deposit_with_permit(config, 1_000, 2**64, permit, funder)
    assert channels.state(config).deposited == 1_000


def test_eth_deposit_with_wrong_value_is_refused(channels, actors):
    config = make_config(actors.payer, actors.payee)
    call = channels.contract.functions.deposit(config.as_tuple(), ETH)
    with pytest.raises(ContractRevertError) as info:
        channels._transact(call, actors.payer, value=ETH - 1)
    assert info.value.error_name == "TokenTransfers_WrongValue"
    assert info.value.arguments == {"sent": ETH - 1, "expected": ETH}


def test_erc20_deposit_with_eth_attached_is_refused(channels, actors, usd):
    config = make_config(actors.payer, actors.payee, token=usd.address)
    call = channels.contract.functions.deposit(config.as_tuple(), 10)
    with pytest.raises(ContractRevertError, match="TokenTransfers_UnexpectedValue"):
        channels._transact(call, actors.payer, value=1)


def test_zero_deposit_is_refused(channels, actors):
    with pytest.raises(ZeroDepositError):
        channels.deposit(make_config(actors.payer, actors.payee), 0, actors.payer)


def test_deposit_without_allowance_is_refused(channels, actors, usd):
    config = make_config(actors.stranger, actors.payee, token=usd.address)
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        channels.deposit(config, 10, actors.stranger)


@pytest.mark.parametrize("field", ["payer", "payee", "authorizer"])
def test_config_with_a_zero_address_is_refused(channels, actors, field):
    base = make_config(actors.payer, actors.payee)
    fields = {**base.__dict__, field: ZERO_ADDRESS}
    fields.pop("channel_id")
    with pytest.raises(ChannelConfigError, match="PaymentChannels_ZeroAddress"):
        channels.deposit(ChannelConfig(**fields), ETH, actors.payer)


@pytest.mark.parametrize("delay", [0, 599, 90 * 86400 + 1, 2**32 - 1])
def test_withdraw_delay_outside_bounds_is_refused(channels, actors, delay):
    config = make_config(actors.payer, actors.payee, delay=delay)
    with pytest.raises(ChannelConfigError, match="WithdrawDelayOutOfRange"):
        channels.deposit(config, ETH, actors.payer)


def test_withdraw_delay_bounds_are_inclusive(channels, actors):
    low, high = channels.withdraw_delay_bounds()
    assert (low, high) == (600, 90 * 86400)
    for delay in (low, high):
        channels.deposit(make_config(actors.payer, actors.payee, delay=delay), 1, actors.payer)


def test_deposit_above_the_112_bit_limit_is_refused(channels, actors, usd):
    usd.mint(actors.payer.address, 2**112, actors.deployer)
    config = make_config(actors.payer, actors.payee, token=usd.address)
    channels.deposit(config, 2**112 - 1, actors.payer)
    with pytest.raises(ContractRevertError, match="PaymentChannels_DepositTooLarge"):
        channels.deposit(config, 1, actors.payer)


# -- claim -----------------------------------------------------------------------------------


def test_claim_pays_the_payee_and_keeps_the_channel_open(channels, actors, w3):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    book = EthLedger(w3, actors.payee.address)
    receipt = channels.claim(
        config, voucher(channels, config, ETH // 4, actors.payer), actors.payee
    )
    book.paid_gas(actors.payee.address, receipt)
    assert book.delta(actors.payee.address) == ETH // 4
    state = channels.state(config)
    assert (state.claimed, state.finished) == (ETH // 4, False)
    [event] = channels.contract.events.Claimed().process_receipt(receipt)
    assert event.args.totalClaimed == ETH // 4


def test_second_claim_pays_only_the_difference(channels, actors, w3):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    channels.claim(config, voucher(channels, config, 100, actors.payer), actors.payee)
    book = EthLedger(w3, actors.payee.address)
    receipt = channels.claim(config, voucher(channels, config, 350, actors.payer), actors.payee)
    book.paid_gas(actors.payee.address, receipt)
    assert book.delta(actors.payee.address) == 250
    assert channels.state(config).claimed == 350


def test_a_relayer_claim_pays_the_payee_never_the_relayer(channels, actors, usd):
    config = make_config(actors.payer, actors.payee, token=usd.address)
    channels.deposit(config, 1_000, actors.payer)
    relayer_before = usd.balance_of(actors.relayer.address)
    consent = sign_payee_claim(channels.domain, config.channel_id, 600, actors.payee)
    channels.claim_for(
        config, voucher(channels, config, 600, actors.payer), consent, actors.relayer
    )
    assert usd.balance_of(actors.payee.address) == 600
    assert usd.balance_of(actors.relayer.address) == relayer_before


def test_claim_with_an_old_voucher_is_refused(channels, actors):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    old = voucher(channels, config, 100, actors.payer)
    channels.claim(config, voucher(channels, config, 200, actors.payer), actors.payee)
    with pytest.raises(NothingToClaimError) as info:
        channels.claim(config, old, actors.payee)
    assert info.value.arguments["claimed"] == 200


def test_claim_above_the_deposit_is_refused(channels, actors):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, 1_000, actors.payer)
    with pytest.raises(VoucherExceedsDepositError, match="the 1000 the channel holds"):
        channels.claim(config, voucher(channels, config, 1_001, actors.payer), actors.payee)


def test_claim_on_a_channel_never_opened_is_refused(channels, actors):
    config = make_config(actors.payer, actors.payee)
    with pytest.raises(ChannelNotFoundError):
        channels.claim(config, voucher(channels, config, 1, actors.payer), actors.payee)


def test_claim_signed_by_someone_else_is_refused(channels, actors):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    with pytest.raises(VoucherSignatureRejectedError):
        channels.claim(config, voucher(channels, config, 1, actors.stranger), actors.payee)


def test_session_key_authorizer_signs_and_the_payer_key_does_not(channels, actors):
    session = actors.relayer
    config = make_config(actors.payer, actors.payee, session)
    channels.deposit(config, ETH, actors.payer)
    with pytest.raises(VoucherSignatureRejectedError):
        channels.claim(config, voucher(channels, config, 5, actors.payer), actors.payee)
    channels.claim(config, voucher(channels, config, 5, session), actors.payee)
    assert channels.state(config).claimed == 5


def test_claim_accepts_the_full_65_byte_signature_too(channels, actors):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    signed = voucher(channels, config, 77, actors.payer)
    call = channels.contract.functions.claim(config.as_tuple(), 77, 77, signed.signature)
    channels._transact(call, actors.payee)
    assert channels.state(config).claimed == 77


def test_claim_many_settles_several_channels_in_one_transaction(channels, actors, usd, w3):
    payers = [actors.payer, actors.stranger, actors.relayer]
    configs = [make_config(p, actors.payee) for p in payers]
    for p, c in zip(payers, configs, strict=True):
        channels.deposit(c, ETH, p)
    token_config = make_config(actors.payer, actors.payee, token=usd.address)
    channels.deposit(token_config, 900, actors.payer)
    book = EthLedger(w3, actors.payee.address)
    batch = [
        (c, voucher(channels, c, (i + 1) * 1000, p))
        for i, (p, c) in enumerate(zip(payers, configs, strict=True))
    ]
    batch.append((token_config, voucher(channels, token_config, 900, actors.payer)))
    receipt = channels.claim_many(batch, actors.payee)
    book.paid_gas(actors.payee.address, receipt)
    assert book.delta(actors.payee.address) == 6000
    assert usd.balance_of(actors.payee.address) == 900
    assert [channels.state(c).claimed for c in configs] == [1000, 2000, 3000]
    assert len(channels.contract.events.Claimed().process_receipt(receipt)) == 4


def test_claim_many_is_all_or_nothing(channels, actors):
    good = make_config(actors.payer, actors.payee)
    bad = make_config(actors.payer, actors.payee)
    channels.deposit(good, ETH, actors.payer)
    channels.deposit(bad, 10, actors.payer)
    with pytest.raises(VoucherExceedsDepositError):
        channels.claim_many(
            [
                (good, voucher(channels, good, 5, actors.payer)),
                (bad, voucher(channels, bad, 11, actors.payer)),
            ],
            actors.payee,
        )
    assert channels.state(good).claimed == 0


def test_claim_many_with_no_claims_is_refused(channels, actors):
    with pytest.raises(ContractRevertError, match="PaymentChannels_EmptyBatch"):
        channels.claim_many([], actors.payee)


def test_claim_many_of_mixed_payees_pays_each_its_own(channels, actors, w3):
    to_payee = make_config(actors.payer, actors.payee)
    to_other = make_config(actors.payer, actors.stranger)
    for c in (to_payee, to_other):
        channels.deposit(c, ETH, actors.payer)
    book = EthLedger(w3, actors.payee.address, actors.stranger.address)
    channels.claim_many_for(
        [
            (to_payee, voucher(channels, to_payee, 10, actors.payer)),
            (to_other, voucher(channels, to_other, 20, actors.payer)),
        ],
        [
            sign_payee_claim(channels.domain, to_payee.channel_id, 10, actors.payee),
            sign_payee_claim(channels.domain, to_other.channel_id, 20, actors.stranger),
        ],
        actors.relayer,
    )
    assert book.delta(actors.payee.address) == 10
    assert book.delta(actors.stranger.address) == 20


# -- close -----------------------------------------------------------------------------------


def test_close_claims_and_refunds_the_rest_at_once(channels, actors, w3):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    book = EthLedger(w3, actors.payer.address, actors.payee.address)
    receipt = channels.close(
        config, voucher(channels, config, ETH // 3, actors.payer), actors.payee
    )
    book.paid_gas(actors.payee.address, receipt)
    assert book.delta(actors.payee.address) == ETH // 3
    assert book.delta(actors.payer.address) == ETH - ETH // 3
    state = channels.state(config)
    assert state.finished and state.claimed == ETH // 3
    [closed] = channels.contract.events.Closed().process_receipt(receipt)
    assert (closed.args.totalClaimed, closed.args.refunded) == (ETH // 3, ETH - ETH // 3)


def test_close_without_a_new_voucher_refunds_everything_unclaimed(channels, actors, usd):
    config = make_config(actors.payer, actors.payee, token=usd.address)
    channels.deposit(config, 1_000, actors.payer)
    channels.claim(config, voucher(channels, config, 400, actors.payer), actors.payee)
    payer_before = usd.balance_of(actors.payer.address)
    channels.close(config, None, actors.payee)
    assert usd.balance_of(actors.payer.address) == payer_before + 600
    assert usd.balance_of(channels.address) == 0


def test_only_the_payee_may_close(channels, actors):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    for who in (actors.payer, actors.stranger):
        with pytest.raises(NotPayeeError):
            channels.close(config, None, who)


def test_close_with_a_forged_voucher_is_refused(channels, actors):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    with pytest.raises(VoucherSignatureRejectedError):
        channels.close(config, voucher(channels, config, ETH, actors.payee), actors.payee)


# -- withdraw --------------------------------------------------------------------------------


def test_withdraw_returns_what_is_unclaimed_after_the_delay(channels, actors, w3):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    channels.claim(config, voucher(channels, config, 10**17, actors.payer), actors.payee)
    receipt = channels.request_withdraw(config, actors.payer)
    [event] = channels.contract.events.WithdrawRequested().process_receipt(receipt)
    block_time = w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert event.args.closesAt == block_time + DELAY == channels.state(config).closes_at
    advance(DELAY)
    book = EthLedger(w3, actors.payer.address)
    book.paid_gas(actors.payer.address, channels.finish_withdraw(config, actors.payer))
    assert book.delta(actors.payer.address) == ETH - 10**17
    assert channels.state(config).finished


def test_payee_can_still_claim_during_the_delay(channels, actors, w3):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    channels.request_withdraw(config, actors.payer)
    advance(DELAY - 60)
    channels.claim(config, voucher(channels, config, ETH // 2, actors.payer), actors.payee)
    advance(60)
    book = EthLedger(w3, actors.payer.address)
    channels.finish_withdraw(config, actors.relayer)  # anyone may trigger; the payer is paid
    assert book.delta(actors.payer.address) == ETH - ETH // 2


def test_finish_before_the_delay_is_refused(channels, actors):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    channels.request_withdraw(config, actors.payer)
    advance(DELAY - 30)
    with pytest.raises(WithdrawNotReadyError):
        channels.finish_withdraw(config, actors.payer)


def test_finish_without_a_request_is_refused(channels, actors):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    with pytest.raises(WithdrawNotRequestedError):
        channels.finish_withdraw(config, actors.payer)


def test_only_the_payer_may_request_a_withdraw(channels, actors):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    for who in (actors.payee, actors.stranger):
        with pytest.raises(NotPayerError):
            channels.request_withdraw(config, who)


def test_a_second_withdraw_request_does_not_restart_the_delay(channels, actors):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    channels.request_withdraw(config, actors.payer)
    with pytest.raises(WithdrawAlreadyRequestedError):
        channels.request_withdraw(config, actors.payer)


def test_withdraw_request_on_an_unknown_channel_is_refused(channels, actors):
    with pytest.raises(ChannelNotFoundError):
        channels.request_withdraw(make_config(actors.payer, actors.payee), actors.payer)


# -- finished is final -----------------------------------------------------------------------


@pytest.fixture(params=["closed", "withdrawn"])
def finished_channel(request, channels, actors):
    config = make_config(actors.payer, actors.payee)
    channels.deposit(config, ETH, actors.payer)
    if request.param == "closed":
        channels.close(config, voucher(channels, config, 10, actors.payer), actors.payee)
    else:
        channels.request_withdraw(config, actors.payer)
        advance(DELAY)
        channels.finish_withdraw(config, actors.payer)
    return config


def test_a_finished_channel_takes_no_deposit(channels, actors, finished_channel):
    with pytest.raises(ChannelFinishedError):
        channels.deposit(finished_channel, ETH, actors.payer)


def test_a_finished_channel_honours_no_voucher(channels, actors, finished_channel):
    with pytest.raises(ChannelFinishedError):
        channels.claim(
            finished_channel, voucher(channels, finished_channel, 20, actors.payer), actors.payee
        )


def test_a_finished_channel_cannot_be_closed_or_withdrawn_again(channels, actors, finished_channel):
    with pytest.raises(ChannelFinishedError):
        channels.close(finished_channel, None, actors.payee)
    with pytest.raises(ChannelFinishedError):
        channels.request_withdraw(finished_channel, actors.payer)
    with pytest.raises(ChannelFinishedError):
        channels.finish_withdraw(finished_channel, actors.payer)


# -- EIP-712 / EIP-5267 ----------------------------------------------------------------------


def test_eip5267_domain_describes_the_voucher_domain(channels, w3):
    fields, name, version, chain_id, contract, salt, extensions = (
        channels.contract.functions.eip712Domain().call()
    )
    assert fields == b"\x0f"
    assert (name, version, chain_id, contract) == (
        "micropay",
        "1",
        w3.eth.chain_id,
        channels.address,
    )
    assert salt == bytes(32) and extensions == []
    assert channels.contract.functions.DOMAIN_SEPARATOR().call() == channels.domain.separator


def test_contract_digest_equals_the_sdk_digest(channels):
    for channel_id, amount in [(bytes(32), 0), (b"\xff" * 32, 2**256 - 1), (b"\x01" * 32, 12345)]:
        assert channels.voucher_digest(channel_id, amount) == channels.domain.digest(
            channel_id, amount
        )
        assert channels.payee_claim_digest(
            channel_id, amount
        ) == channels.domain.payee_claim_digest(channel_id, amount)
