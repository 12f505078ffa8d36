"""Fixed streams: every operation, every named failure and the boundary times, via the SDK."""

from __future__ import annotations

import time
from dataclasses import replace

import ape
import pytest
from streams_fixtures import (
    DAY,
    assert_fixed_matches_model,
    at,
    balance,
    fee_token,
    fixed_config,
    mine_at,
    now,
    people,
    revert_args,
    salt,
    streams,
    tok6,
    tok18,
)

from micropay.errors import ContractRevertError
from micropay.stream_model import FixedStatus, FixedStreamState
from micropay.streams import (
    ETH,
    AmountNotReceivedError,
    FixedStreamConfig,
    NothingToWithdrawError,
    NotStreamRecipientError,
    NotStreamSenderError,
    StreamConfigError,
    StreamExistsError,
    StreamNotCancelableError,
    UnknownStreamError,
)

__all__ = ["fee_token", "people", "streams", "tok6", "tok18"]  # fixtures used below


def _later(w3, people, token=ETH, **overrides):
    """A stream starting 100 s from now, cliff at +140, end at +200. "Now" is the later of
    the latest block and the wall clock: on the in-process chain the next block takes the
    wall clock, and under load the latest block can be minutes old."""
    t0 = max(now(w3), int(time.time())) + 100
    fields = {"amount": 999_999, "start": t0, "cliff": t0 + 40, "end": t0 + 100}
    fields.update(overrides)
    return fixed_config(people, token, **fields)


# -- create ----------------------------------------------------------------------------------


def test_create_fixed_eth_stream_locks_the_amount_and_announces_every_parameter(
    w3, streams, people
):
    config = _later(w3, people)
    before = balance(w3, ETH, streams.address)
    receipt = streams.create_fixed(config, people.sender)
    assert receipt.stream_id == config.stream_id
    assert receipt.amount == config.amount
    assert balance(w3, ETH, streams.address) - before == config.amount
    assert streams.fixed_state(config) == FixedStreamState(created=True)
    assert streams.fixed_config(config.stream_id) == config


def test_create_fixed_erc20_stream_pulls_the_amount_from_the_funder(w3, streams, people, tok18):
    # The funder pays; the sender keeps the right to cancel and gets the refund.
    config = _later(w3, people, tok18.address, amount=5 * 10**18)
    funder_before = tok18.balance_of(people.funder)
    streams.create_fixed(config, people.funder)
    assert funder_before - tok18.balance_of(people.funder) == config.amount
    assert tok18.balance_of(streams.address) == config.amount
    sender_before = tok18.balance_of(people.sender)
    streams.cancel(config, people.sender)
    assert tok18.balance_of(people.sender) - sender_before == config.amount


def test_fixed_stream_id_on_chain_matches_the_sdk(w3, streams, people, tok6):
    config = FixedStreamConfig(
        people.sender,
        people.recipient,
        tok6.address,
        2**128 - 1,
        1,
        2**40 - 1,
        0,
        False,
        2**256 - 1,
    )
    assert streams.contract.functions.fixedStreamId(config.as_abi()).call() == config.stream_id


@pytest.mark.parametrize(
    ("field", "value", "error_name"),
    [
        ("sender", ETH, "Streams_ZeroSender"),
        ("recipient", ETH, "Streams_ZeroRecipient"),
        ("amount", 0, "Streams_ZeroAmount"),
    ],
)
def test_create_refuses_zero_parties_and_amount(w3, streams, people, field, value, error_name):
    config = _later(w3, people)
    bad = replace(config, **{field: value})
    with pytest.raises(StreamConfigError) as raised:
        streams.create_fixed(bad, people.sender)
    assert raised.value.error_name == error_name


@pytest.mark.parametrize(
    ("start", "cliff", "end"),
    [(100, 0, 100), (100, 0, 99), (100, 99, 200), (100, 201, 200)],
    ids=["start=end", "end<start", "cliff<start", "cliff>end"],
)
def test_create_refuses_times_out_of_order(w3, streams, people, start, cliff, end):
    t0 = now(w3)
    config = fixed_config(people, start=t0 + start, cliff=t0 + cliff if cliff else 0, end=t0 + end)
    with pytest.raises(StreamConfigError) as raised:
        streams.create_fixed(config, people.sender)
    assert raised.value.error_name == "Streams_InvalidTimes"
    assert raised.value.arguments == {"start": config.start, "cliff": config.cliff, "end": end + t0}


def test_create_accepts_a_cliff_at_start_or_at_end_and_a_start_in_the_past(w3, streams, people):
    t0 = now(w3)
    for start, cliff, end in [
        (t0 + 10, t0 + 10, t0 + 20),
        (t0 + 10, t0 + 20, t0 + 20),
        (t0 - DAY, 0, t0 + DAY),
    ]:
        config = fixed_config(people, start=start, cliff=cliff, end=end)
        assert streams.create_fixed(config, people.sender).stream_id == config.stream_id


def test_create_refuses_an_end_not_in_the_future(w3, streams, people):
    t = now(w3) + 50
    config = fixed_config(people, start=t - 100, end=t)
    at(t)
    with pytest.raises(StreamConfigError) as raised:
        streams.create_fixed(config, people.sender)
    assert raised.value.error_name == "Streams_EndNotInFuture"
    assert raised.value.arguments == {"end": t, "timestamp": t}


def test_create_refuses_a_second_stream_with_the_same_parameters(w3, streams, people):
    config = _later(w3, people)
    streams.create_fixed(config, people.sender)
    with pytest.raises(StreamExistsError) as raised:
        streams.create_fixed(config, people.funder)
    assert raised.value.arguments == {"streamId": "0x" + config.stream_id.hex()}


def test_create_refuses_eth_value_other_than_the_amount(w3, streams, people, tok18):
    config = _later(w3, people)
    call = streams.contract.functions.createFixedStream(config.as_abi())
    with pytest.raises(ContractRevertError) as raised:
        streams._transact(call, people.sender, config.amount - 1)
    assert raised.value.error_name == "TokenTransfers_WrongValue"
    erc20 = _later(w3, people, tok18.address)
    call = streams.contract.functions.createFixedStream(erc20.as_abi())
    with pytest.raises(ContractRevertError) as raised:
        streams._transact(call, people.sender, 1)
    assert raised.value.error_name == "TokenTransfers_UnexpectedValue"


def test_create_refuses_a_fee_on_transfer_token_that_delivers_less(w3, streams, people, fee_token):
    config = _later(w3, people, fee_token.address, amount=10_000)
    with pytest.raises(AmountNotReceivedError) as raised:
        streams.create_fixed(config, people.sender)
    assert revert_args(raised.value) == {
        "token": fee_token.address,
        "expected": 10_000,
        "received": 9_900,
    }


# -- boundary times --------------------------------------------------------------------------


def _boundaries(config: FixedStreamConfig) -> list[int]:
    s, c, e = config.start, config.cliff, config.end
    return [s - 1, s, c - 1, c, e - 1, e, e + 1]


@pytest.mark.parametrize(
    ("cliff", "expected"),
    [
        (40, [0, 0, 0, 399_999, 989_999, 999_999, 999_999]),
        (None, [0, 0, 389_999, 399_999, 989_999, 999_999, 999_999]),
    ],
    ids=["cliff", "no-cliff"],
)
def test_views_at_every_boundary_time_equal_the_model(w3, streams, people, cliff, expected):
    """0 before start and cliff, floor(999,999 * elapsed / 100) between, all from the end."""
    t0 = now(w3) + 100
    config = fixed_config(
        people, amount=999_999, start=t0, cliff=t0 + cliff if cliff else 0, end=t0 + 100
    )
    streams.create_fixed(config, people.sender)
    model = FixedStreamState(created=True)
    seen = []
    c = t0 + 40  # without a cliff, the same instants show the linear part
    for t in [t0 - 1, t0, c - 1, c, config.end - 1, config.end, config.end + 1]:
        mine_at(t)
        assert_fixed_matches_model(streams, config, model, t)
        seen.append(streams.fixed_amounts(config).streamed)
    assert seen == expected


def test_withdrawals_at_every_boundary_time_pay_exactly_the_model(w3, streams, people):
    config = _later(w3, people)
    streams.create_fixed(config, people.sender)
    model = FixedStreamState(created=True)
    paid = []
    for t in _boundaries(config):
        at(t)
        expected = model.withdrawable_at(config.schedule, t)
        before = balance(w3, ETH, people.recipient)
        if expected == 0:
            with pytest.raises(NothingToWithdrawError):
                streams.withdraw(config, people.stranger)
            paid.append(0)
            continue
        receipt = streams.withdraw(config, people.stranger)  # a third party, to the recipient
        assert receipt.timestamp == t
        model, amount = model.after_withdraw(config.schedule, t)
        assert receipt.amount == amount == balance(w3, ETH, people.recipient) - before
        paid.append(amount)
        assert_fixed_matches_model(streams, config, model, t)
    assert paid == [0, 0, 0, 399_999, 989_999 - 399_999, 999_999 - 989_999, 0]
    assert sum(paid) == config.amount  # no dust


@pytest.mark.parametrize("offset", range(7), ids=["s-1", "s", "c-1", "c", "e-1", "e", "e+1"])
def test_cancel_at_each_boundary_time_splits_exactly(w3, streams, people, tok18, offset):
    config = _later(w3, people, tok18.address)
    streams.create_fixed(config, people.funder)
    t = _boundaries(config)[offset]
    at(t)
    if t >= config.end:
        with pytest.raises(StreamNotCancelableError) as raised:
            streams.cancel(config, people.sender)
        assert raised.value.error_name == "Streams_AlreadySettled"
        return
    sender_before = tok18.balance_of(people.sender)
    receipt = streams.cancel(config, people.sender)
    model, refund = FixedStreamState(created=True).after_cancel(config.schedule, t)
    assert receipt.amount == refund == tok18.balance_of(people.sender) - sender_before
    # What streamed before the cancellation stays withdrawable, later too.
    mine_at(t + 1_000)
    assert_fixed_matches_model(streams, config, model, t + 1_000)
    keeps = config.amount - refund
    if keeps:
        assert streams.withdraw(config, people.recipient).amount == keeps
    assert tok18.balance_of(streams.address) == 0


# -- withdraw --------------------------------------------------------------------------------


def test_recipient_may_withdraw_to_any_address_it_names(w3, streams, people):
    config = _later(w3, people, cliff=0)
    streams.create_fixed(config, people.sender)
    at(config.end)
    before = balance(w3, ETH, people.other)
    receipt = streams.withdraw(config, people.recipient, to=people.other)
    assert receipt.amount == config.amount == balance(w3, ETH, people.other) - before
    [event] = streams.contract.events.Withdrawn().process_receipt(receipt_of(w3, receipt))
    assert (event.args.to, event.args.amount, event.args.totalWithdrawn) == (
        people.other,
        config.amount,
        config.amount,
    )


def receipt_of(w3, receipt):
    return w3.eth.get_transaction_receipt(receipt.tx_hash)


def test_a_third_party_may_only_withdraw_to_the_recipient(w3, streams, people):
    config = _later(w3, people, cliff=0)
    streams.create_fixed(config, people.sender)
    at(config.start + 50)
    with pytest.raises(NotStreamRecipientError) as raised:
        streams.withdraw(config, people.stranger, to=people.stranger)
    assert raised.value.error_name == "Streams_WithdrawalToOther"
    assert revert_args(raised.value)["caller"] == people.stranger
    assert streams.withdraw(config, people.stranger).amount == 499_999


def test_withdraw_refuses_the_zero_address_and_unknown_streams(w3, streams, people):
    config = _later(w3, people, cliff=0)
    with pytest.raises(UnknownStreamError):
        streams.withdraw(config, people.recipient)
    streams.create_fixed(config, people.sender)
    at(config.end)
    with pytest.raises(StreamConfigError) as raised:
        streams.withdraw(config, people.recipient, to=ETH)
    assert raised.value.error_name == "Streams_ZeroDestination"


def test_a_changed_parameter_names_another_stream(w3, streams, people):
    config = _later(w3, people, cliff=0)
    streams.create_fixed(config, people.sender)
    at(config.end)
    forged = replace(config, amount=config.amount * 2)
    with pytest.raises(UnknownStreamError):
        streams.withdraw(forged, people.recipient)


def test_erc20_withdrawal_after_the_end_depletes_the_stream(w3, streams, people, tok6):
    config = _later(w3, people, tok6.address, amount=1_234_567)
    streams.create_fixed(config, people.sender)
    at(config.end + DAY)
    before = tok6.balance_of(people.recipient)
    assert streams.withdraw(config, people.recipient).amount == config.amount
    assert tok6.balance_of(people.recipient) - before == config.amount
    assert streams.fixed_status(config) == FixedStatus.DEPLETED
    with pytest.raises(NothingToWithdrawError):
        streams.withdraw(config, people.recipient)


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_failures_are_named(w3, streams, people):
    config = _later(w3, people)
    with pytest.raises(UnknownStreamError):
        streams.cancel(config, people.sender)
    streams.create_fixed(config, people.sender)
    with pytest.raises(NotStreamSenderError) as raised:
        streams.cancel(config, people.recipient)
    assert revert_args(raised.value)["caller"] == people.recipient
    streams.cancel(config, people.sender)
    with pytest.raises(StreamNotCancelableError) as raised:
        streams.cancel(config, people.sender)
    assert raised.value.error_name == "Streams_AlreadyCanceled"
    fixed = _later(w3, people, cancelable=False)
    streams.create_fixed(fixed, people.sender)
    with pytest.raises(StreamNotCancelableError) as raised:
        streams.cancel(fixed, people.sender)
    assert raised.value.error_name == "Streams_NotCancelable"


def test_cancel_refunds_the_sender_at_once_and_freezes_the_recipients_share(w3, streams, people):
    config = _later(w3, people, cliff=0)
    streams.create_fixed(config, people.funder)  # funded by someone else
    at(config.start + 30)
    sender_before = balance(w3, ETH, people.sender)
    receipt = w3.eth.get_transaction_receipt(streams.cancel(config, people.sender).tx_hash)
    gas = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    refund = config.amount - 299_999
    assert balance(w3, ETH, people.sender) - sender_before + gas == refund
    [event] = streams.contract.events.Canceled().process_receipt(receipt)
    assert (event.args.refunded, event.args.recipientAmount) == (refund, 299_999)
    assert streams.fixed_status(config) == FixedStatus.CANCELED
    at(config.end + 10)
    assert streams.withdraw(config, people.stranger).amount == 299_999
    assert streams.fixed_status(config) == FixedStatus.DEPLETED
    assert balance(w3, ETH, streams.address) == 0


# -- transfer --------------------------------------------------------------------------------


def test_recipient_hands_the_stream_on_and_only_the_new_recipient_controls_it(w3, streams, people):
    config = _later(w3, people, cliff=0)
    streams.create_fixed(config, people.sender)
    with pytest.raises(NotStreamRecipientError) as raised:
        streams.transfer(config, people.stranger, people.stranger)
    assert raised.value.error_name == "Streams_NotRecipient"
    for bad in (ETH, people.recipient):
        with pytest.raises(StreamConfigError) as raised:
            streams.transfer(config, bad, people.recipient)
        assert raised.value.error_name == "Streams_InvalidNewRecipient"
    receipt = streams.transfer(config, people.other, people.recipient)
    [event] = streams.contract.events.RecipientTransferred().process_receipt(
        receipt_of(w3, receipt)
    )
    assert (event.args["from"], event.args.to) == (people.recipient, people.other)
    assert streams.recipient_of(config) == people.other
    assert streams.fixed_state(config).transferred
    at(config.start + 10)
    with pytest.raises(NotStreamRecipientError):  # the old recipient lost its say
        streams.withdraw(config, people.recipient, to=people.recipient)
    before = balance(w3, ETH, people.other)
    assert streams.withdraw(config, people.stranger).amount == 99_999  # defaults to the new one
    assert balance(w3, ETH, people.other) - before == 99_999
    streams.transfer(config, people.recipient, people.other)  # and it can hand it back
    assert streams.recipient_of(config) == people.recipient


def test_transfer_of_an_unknown_stream_is_refused(w3, streams, people):
    with pytest.raises(UnknownStreamError):
        streams.transfer(_later(w3, people), people.other, people.recipient)


# -- batch -----------------------------------------------------------------------------------


def test_batch_creates_every_stream_funded_by_one_transfer(w3, streams, people, tok18):
    t0 = now(w3) + 10
    configs = [
        fixed_config(
            people,
            tok18.address,
            amount=10**18 + i,
            start=t0,
            end=t0 + 100 * (i + 1),
            cliff=t0 + i,
            cancelable=i % 2 == 0,
        )
        for i in range(4)
    ]
    before = tok18.balance_of(people.sender)
    receipt = streams.create_fixed_batch(configs, people.sender)
    assert receipt.stream_ids == tuple(c.stream_id for c in configs)
    assert before - tok18.balance_of(people.sender) == sum(c.amount for c in configs)
    for config in configs:
        assert streams.fixed_config(config.stream_id) == config
        assert streams.fixed_state(config).created


def test_batch_failures_are_named(w3, streams, people, tok18):
    t0 = now(w3) + 10
    a = fixed_config(people, start=t0, end=t0 + 100)
    b = fixed_config(people, tok18.address, start=t0, end=t0 + 100)
    with pytest.raises(StreamConfigError) as raised:
        streams.create_fixed_batch([], people.sender)
    assert raised.value.error_name == "Streams_EmptyBatch"
    with pytest.raises(StreamConfigError) as raised:
        streams.create_fixed_batch([a, b], people.sender)
    assert raised.value.error_name == "Streams_BatchTokenMismatch"
    assert revert_args(raised.value) == {"index": 1, "expected": ETH, "token": tok18.address}
    with pytest.raises(StreamExistsError):
        streams.create_fixed_batch([a, a], people.sender)
    bad = replace(a, salt=salt(), end=t0 - 1)
    with pytest.raises(StreamConfigError):  # all or nothing: the good one is not created
        streams.create_fixed_batch([a, bad], people.sender)
    assert not streams.fixed_state(a).created
    call = streams.contract.functions.createFixedStreams([a.as_abi()])
    with pytest.raises(ContractRevertError) as raised:
        streams._transact(call, people.sender, a.amount + 1)
    assert raised.value.error_name == "TokenTransfers_WrongValue"


# -- status ----------------------------------------------------------------------------------


def test_status_walks_pending_streaming_settled_depleted(w3, streams, people, project):
    config = _later(w3, people)
    # ape decodes view reverts on all three networks (the SDK's reads: see test_streams_open).
    with ape.reverts(project.Streams.at(streams.address).Streams_UnknownStream):
        project.Streams.at(streams.address).fixedStatus(config.as_abi())
    streams.create_fixed(config, people.sender)
    assert streams.fixed_status(config) == FixedStatus.PENDING
    mine_at(config.start)
    assert streams.fixed_status(config) == FixedStatus.STREAMING
    mine_at(config.end)
    assert streams.fixed_status(config) == FixedStatus.SETTLED
    streams.withdraw(config, people.recipient)
    assert streams.fixed_status(config) == FixedStatus.DEPLETED


def test_cancel_before_start_leaves_nothing_to_withdraw(w3, streams, people):
    config = _later(w3, people)
    streams.create_fixed(config, people.sender)
    assert streams.cancel(config, people.sender).amount == config.amount
    assert streams.fixed_status(config) == FixedStatus.DEPLETED
    at(config.end)
    with pytest.raises(NothingToWithdrawError):
        streams.withdraw(config, people.recipient)
