"""The hostile-token zoo against PaymentChannels and Streams.

Each token or receiver in ``contracts/test/`` breaks one assumption naive code makes. For
each, the tests pin the behaviour the contracts document (TokenTransfers' header, the
WARNING blocks of PaymentChannels and IStreams) and check that no one else's money moves:
the contract still holds exactly what it owes in every other token, other channels and
streams in the same token are untouched, and a party that blocks a payout blocks only
payouts to itself.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest
from channel_helpers import DELAY, advance, gas_cost, make_config
from zoo import UNLIMITED, ZooContract, deploy, encode, eth_balance, revert_name

from micropay.channels import ChannelClient, NothingToClaimError
from micropay.errors import ContractRevertError
from micropay.streams import (
    AmountNotReceivedError,
    FixedStreamConfig,
    OpenStreamConfig,
    StreamsClient,
)
from micropay.vouchers import ZERO_ADDRESS, sign_voucher

SUPPLY = 10**24
_salts = itertools.count(10_000)


@pytest.fixture(scope="session")
def streams(w3, actors) -> StreamsClient:  # type: ignore[no-untyped-def]
    return StreamsClient.deploy(w3, actors.deployer)


@pytest.fixture
def make_token(w3, actors, channels, streams):  # type: ignore[no-untyped-def]
    """Deploy a zoo token; the payer, stranger and relayer hold SUPPLY, approved to both."""

    def make(artifact: str, *args: Any) -> ZooContract:
        token = deploy(w3, artifact, actors.deployer, *args)
        for holder in (actors.payer, actors.stranger, actors.relayer):
            token.send("mint", holder.address, SUPPLY, sender=holder)
            for spender in (channels.address, streams.address):
                token.send("approve", spender, UNLIMITED, sender=holder)
        return token

    return make


@pytest.fixture
def bystanders(w3, actors, channels, usd):  # type: ignore[no-untyped-def]
    """An ETH channel and a token channel of other parties, to show they are never touched."""
    eth_config = make_config(actors.stranger, actors.relayer)
    channels.deposit(eth_config, 777, actors.stranger)
    usd_config = make_config(actors.payer, actors.relayer, token=usd.address)
    channels.deposit(usd_config, 555, actors.payer)

    def untouched() -> None:
        assert channels.state(eth_config).deposited == 777
        assert channels.state(eth_config).claimed == 0
        assert channels.state(usd_config).deposited == 555
        assert channels.state(usd_config).claimed == 0
        assert eth_balance(w3, channels.address) >= 777
        assert usd.balance_of(channels.address) >= 555

    return untouched


def party(address: str) -> SimpleNamespace:
    """A contract account in a role make_config expects an account for."""
    return SimpleNamespace(address=address)


def voucher(channels: ChannelClient, config: Any, amount: int, key: Any) -> Any:
    return sign_voucher(channels.domain, config.channel_id, amount, key)


def sign_claim(channels: ChannelClient, config: Any, signed: Any) -> bytes:
    """Calldata of ``claim`` settling the whole voucher ``signed``."""
    return encode(
        channels,
        "claim",
        config.as_tuple(),
        signed.cumulative_amount,
        signed.cumulative_amount,
        signed.compact_signature,
    )


def as_contract(
    channels: ChannelClient, payee: Any, data: bytes, sender: Any, value: int | None = None
) -> Any:
    """Send ``data`` to the channels contract from a contract payee, through its ``execute``
    (settling is the payee's act); reverts are named as the channels contract names them.
    The receivers' ``execute`` also takes an ETH value, the tokens' does not."""
    args = (channels.address, data) if value is None else (channels.address, value, data)
    return channels._transact(payee.contract.functions.execute(*args), sender)


def now(w3: Any) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])


def fixed_stream(w3: Any, sender: str, recipient: str, token: str, amount: int, **kw: Any):  # type: ignore[no-untyped-def]
    start = now(w3)
    return FixedStreamConfig(
        sender, recipient, token, amount, start, start + 1_000, salt=next(_salts), **kw
    )


def open_stream(sender: str, recipient: str, token: str) -> OpenStreamConfig:
    return OpenStreamConfig(sender, recipient, token, next(_salts))


def reverted(err: pytest.ExceptionInfo[ContractRevertError]) -> str:
    return err.value.error_name


# -- fee on transfer -------------------------------------------------------------------------

FEE_BPS = 100  # 1%


def test_fee_token_channel_is_credited_with_what_arrived(channels, actors, make_token, bystanders):
    fee = make_token("FeeOnTransferToken", FEE_BPS)
    config = make_config(actors.payer, actors.payee, token=fee.address)
    payer_before = fee.balance_of(actors.payer.address)
    channels.deposit(config, 10_000, actors.payer)
    assert fee.balance_of(actors.payer.address) == payer_before - 10_000
    assert channels.state(config).deposited == 9_900
    assert fee.balance_of(channels.address) == 9_900
    # A voucher for the asked-for amount is refused: only what arrived can be promised.
    with pytest.raises(ContractRevertError, match="TotalExceedsDeposit"):
        channels.claim(config, voucher(channels, config, 10_000, actors.payer), actors.payee)
    channels.claim(config, voucher(channels, config, 9_900, actors.payer), actors.payee)
    # The payout pays the fee too; the channel counts what it sent, and holds nothing more.
    assert fee.balance_of(actors.payee.address) == 9_801
    assert channels.state(config).claimed == 9_900
    assert fee.balance_of(channels.address) == 0
    bystanders()


def test_fee_token_refund_returns_the_unclaimed_rest(channels, actors, make_token):
    fee = make_token("FeeOnTransferToken", FEE_BPS)
    config = make_config(actors.payer, actors.payee, token=fee.address)
    channels.deposit(config, 10_000, actors.payer)
    channels.deposit(config, 10_000, actors.stranger)
    channels.claim(config, voucher(channels, config, 5_000, actors.payer), actors.payee)
    channels.request_withdraw(config, actors.payer)
    advance(DELAY)
    before = fee.balance_of(actors.payer.address)
    channels.finish_withdraw(config, actors.stranger)
    refund = 19_800 - 5_000
    assert fee.balance_of(actors.payer.address) == before + refund - refund // 100
    assert fee.balance_of(channels.address) == 0


def test_fee_token_cannot_fund_a_fixed_stream(w3, streams, actors, make_token):
    fee = make_token("FeeOnTransferToken", FEE_BPS)
    config = fixed_stream(w3, actors.payer.address, actors.payee.address, fee.address, 10_000)
    with pytest.raises(AmountNotReceivedError) as err:
        streams.create_fixed(config, actors.payer)
    assert (err.value.arguments["expected"], err.value.arguments["received"]) == (10_000, 9_900)
    assert streams.fixed_state(config).created is False
    assert fee.balance_of(streams.address) == 0


def test_fee_token_open_stream_deposit_is_credited_with_what_arrived(streams, actors, make_token):
    fee = make_token("FeeOnTransferToken", FEE_BPS)
    config = open_stream(actors.payer.address, actors.payee.address, fee.address)
    receipt = streams.create_open(config, 10**18, 10_000, actors.payer)
    assert receipt.amount == 9_900
    streams.top_up(config, 1_000, actors.stranger)
    assert streams.open_state(config).deposited == 9_900 + 990
    assert fee.balance_of(streams.address) == 9_900 + 990


def test_fee_token_open_stream_batch_must_arrive_in_full(streams, actors, make_token):
    fee = make_token("FeeOnTransferToken", FEE_BPS)
    batch = [
        (open_stream(actors.payer.address, actors.payee.address, fee.address), 10**18, 1_000)
        for _ in range(2)
    ]
    with pytest.raises(AmountNotReceivedError):
        streams.create_open_batch(batch, actors.payer)


# -- no return value (USDT-style) ------------------------------------------------------------


def test_no_return_token_channel_works_end_to_end(channels, actors, make_token, bystanders):
    token = make_token("NoReturnToken")
    config = make_config(actors.payer, actors.payee, token=token.address)
    channels.deposit(config, 1_000, actors.payer)
    channels.claim(config, voucher(channels, config, 400, actors.payer), actors.payee)
    before = token.balance_of(actors.payer.address)
    channels.close(config, voucher(channels, config, 700, actors.payer), actors.payee)
    assert token.balance_of(actors.payee.address) == 700
    assert token.balance_of(actors.payer.address) == before + 300
    assert token.balance_of(channels.address) == 0
    bystanders()


def test_no_return_token_failure_still_reverts(channels, actors, make_token):
    token = make_token("NoReturnToken")
    config = make_config(actors.payee, actors.payer, token=token.address)  # payee holds none
    with pytest.raises(ContractRevertError) as err:
        channels.deposit(config, 1, actors.payee)
    assert reverted(err) == "TokenTransfers_TransferFailed"
    assert not channels.state(config).exists


def test_no_return_token_streams_work(w3, streams, actors, make_token):
    token = make_token("NoReturnToken")
    config = fixed_stream(w3, actors.payer.address, actors.payee.address, token.address, 1_000)
    streams.create_fixed(config, actors.payer)
    advance(500)
    paid = streams.withdraw(config, actors.stranger).amount
    refunded = streams.cancel(config, actors.payer).amount
    if token.balance_of(streams.address):  # what streamed between the two calls
        paid += streams.withdraw(config, actors.stranger).amount
    assert token.balance_of(actors.payee.address) == paid
    assert paid + refunded == 1_000
    assert token.balance_of(streams.address) == 0


# -- returns false instead of reverting ------------------------------------------------------


def test_false_returning_deposit_credits_nothing(channels, actors, make_token):
    token = make_token("FalseReturnToken")
    config = make_config(actors.payee, actors.payer, token=token.address)  # no balance
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        channels.deposit(config, 1_000, actors.payee)
    assert not channels.state(config).exists
    assert token.balance_of(channels.address) == 0


def test_false_returning_payout_reverts_and_the_claim_waits(
    channels, actors, make_token, bystanders
):
    token = make_token("FalseReturnToken")
    config = make_config(actors.payer, actors.payee, token=token.address)
    channels.deposit(config, 1_000, actors.payer)
    token.send("setFailing", True, sender=actors.deployer)
    signed = voucher(channels, config, 600, actors.payer)
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        channels.claim(config, signed, actors.payee)
    assert channels.state(config).claimed == 0
    token.send("setFailing", False, sender=actors.deployer)
    channels.claim(config, signed, actors.payee)
    assert token.balance_of(actors.payee.address) == 600
    bystanders()


def test_false_returning_token_cannot_fake_stream_funding(w3, streams, actors, make_token):
    token = make_token("FalseReturnToken")
    token.send("setFailing", True, sender=actors.deployer)
    config = fixed_stream(w3, actors.payer.address, actors.payee.address, token.address, 1_000)
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        streams.create_fixed(config, actors.payer)
    opened = open_stream(actors.payer.address, actors.payee.address, token.address)
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        streams.create_open(opened, 10**18, 1_000, actors.payer)
    assert token.balance_of(streams.address) == 0


def test_false_returning_stream_withdrawal_changes_nothing(w3, streams, actors, make_token):
    token = make_token("FalseReturnToken")
    config = fixed_stream(w3, actors.payer.address, actors.payee.address, token.address, 1_000)
    streams.create_fixed(config, actors.payer)
    advance(2_000)
    token.send("setFailing", True, sender=actors.deployer)
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        streams.withdraw(config, actors.payee)
    assert streams.fixed_state(config).withdrawn == 0
    token.send("setFailing", False, sender=actors.deployer)
    assert streams.withdraw(config, actors.payee).amount == 1_000


# -- re-entrant on transfer ------------------------------------------------------------------

ON_TRANSFER, ON_TRANSFER_FROM = 1, 2


def last_reentry(token: ZooContract, client: Any) -> tuple[bool, str]:
    result = bytes(token.read("lastCallResult"))
    return bool(token.read("lastCallSucceeded")), revert_name(client, result)


def test_reentrant_deposit_is_refused_and_credited_once(channels, actors, make_token, bystanders):
    token = make_token("ReentrantToken")
    config = make_config(actors.payer, actors.payee, token=token.address)
    other = make_config(actors.stranger, actors.payee, token=token.address)
    token.send(
        "arm",
        ON_TRANSFER_FROM,
        channels.address,
        encode(channels, "deposit", other.as_tuple(), 500),
        sender=actors.deployer,
    )
    channels.deposit(config, 1_000, actors.payer)
    assert last_reentry(token, channels) == (False, "ReentrancyLock_Reentered")
    assert channels.state(config).deposited == 1_000
    assert not channels.state(other).exists
    assert token.balance_of(channels.address) == 1_000
    bystanders()


def test_reentrant_payee_cannot_claim_twice(channels, actors, make_token, bystanders):
    token = make_token("ReentrantToken")
    # The token itself is the payee: it re-enters with the payee's rights.
    config = make_config(actors.payer, party(token.address), token=token.address)
    channels.deposit(config, 1_000, actors.payer)
    stale = voucher(channels, config, 150, actors.payer)
    more = voucher(channels, config, 900, actors.payer)
    for function, args in [
        ("claim", (config.as_tuple(), 900, 900, more.compact_signature)),
        ("close", (config.as_tuple(), 900, 900, more.compact_signature)),
    ]:
        token.send(
            "arm",
            ON_TRANSFER,
            channels.address,
            encode(channels, function, *args),
            sender=actors.deployer,
        )
        total = channels.state(config).claimed + 100
        signed = voucher(channels, config, total, actors.payer)
        as_contract(channels, token, sign_claim(channels, config, signed), actors.deployer)
        assert last_reentry(token, channels) == (False, "ReentrancyLock_Reentered")
    assert channels.state(config).claimed == 200
    assert token.balance_of(token.address) == 200
    assert token.balance_of(channels.address) == 800
    with pytest.raises(NothingToClaimError):
        as_contract(channels, token, sign_claim(channels, config, stale), actors.deployer)
    bystanders()


def test_reentrant_payee_cannot_refund_twice(channels, actors, make_token, bystanders):
    token = make_token("ReentrantToken")
    # The token is the payee: while its refund pays the payer, it tries another refund.
    config = make_config(actors.payer, party(token.address), token=token.address)
    channels.deposit(config, 1_000, actors.payer)
    again = encode(channels, "refund", config.as_tuple(), 300)
    token.send("arm", ON_TRANSFER, channels.address, again, sender=actors.deployer)
    before = token.balance_of(actors.payer.address)
    as_contract(channels, token, again, actors.deployer)
    assert last_reentry(token, channels) == (False, "ReentrancyLock_Reentered")
    assert channels.state(config).deposited == 700
    assert token.balance_of(actors.payer.address) == before + 300
    assert token.balance_of(channels.address) == 700
    bystanders()


def test_reentrant_refund_cannot_finish_twice(channels, actors, make_token):
    token = make_token("ReentrantToken")
    config = make_config(party(token.address), actors.payee, token=token.address)
    channels.deposit(config, 1_000, actors.stranger)
    token.send(
        "execute",
        channels.address,
        encode(channels, "requestWithdraw", config.as_tuple()),
        sender=actors.deployer,
    )
    advance(DELAY)
    token.send(
        "arm",
        ON_TRANSFER,
        channels.address,
        encode(channels, "finishWithdraw", config.as_tuple()),
        sender=actors.deployer,
    )
    channels.finish_withdraw(config, actors.stranger)
    assert last_reentry(token, channels) == (False, "ReentrancyLock_Reentered")
    assert token.balance_of(token.address) == 1_000
    assert token.balance_of(channels.address) == 0


def test_reentrant_recipient_cannot_withdraw_a_stream_twice(w3, streams, actors, make_token):
    token = make_token("ReentrantToken")
    config = fixed_stream(w3, actors.payer.address, token.address, token.address, 1_000)
    streams.create_fixed(config, actors.payer)
    advance(400)
    token.send(
        "arm",
        ON_TRANSFER,
        streams.address,
        encode(streams, "withdrawFixed", config.as_abi(), token.address),
        sender=actors.deployer,
    )
    paid = streams.withdraw(config, actors.stranger).amount
    # Withdrawals hold no lock: checks-effects-interactions leaves nothing to take again.
    assert last_reentry(token, streams) == (False, "Streams_NothingToWithdraw")
    assert token.balance_of(token.address) == paid == streams.fixed_state(config).withdrawn
    assert token.balance_of(streams.address) == 1_000 - paid


def test_reentrant_stream_deposit_is_refused(streams, actors, make_token):
    token = make_token("ReentrantToken")
    config = open_stream(actors.payer.address, actors.payee.address, token.address)
    streams.create_open(config, 10**18, 1_000, actors.payer)
    token.send("mint", token.address, 10_000, sender=actors.deployer)
    token.send(
        "execute",
        token.address,
        encode(token, "approve", streams.address, UNLIMITED),
        sender=actors.deployer,
    )
    token.send(
        "arm",
        ON_TRANSFER_FROM,
        streams.address,
        encode(streams, "deposit", config.as_abi(), 5_000),
        sender=actors.deployer,
    )
    streams.top_up(config, 2_000, actors.stranger)
    assert last_reentry(token, streams) == (False, "ReentrancyLock_Reentered")
    assert streams.open_state(config).deposited == 3_000
    assert token.balance_of(streams.address) == 3_000


def test_reentry_across_contracts_keeps_both_ledgers_exact(
    channels, streams, actors, make_token, bystanders
):
    # Each contract measures only its own balance, so a deposit into Streams made from
    # inside a PaymentChannels deposit is credited to the stream, not to the channel.
    token = make_token("ReentrantToken")
    stream = open_stream(actors.payer.address, actors.payee.address, token.address)
    streams.create_open(stream, 10**18, 1, actors.payer)
    token.send("mint", token.address, 10_000, sender=actors.deployer)
    token.send(
        "execute",
        token.address,
        encode(token, "approve", streams.address, UNLIMITED),
        sender=actors.deployer,
    )
    token.send(
        "arm",
        ON_TRANSFER_FROM,
        streams.address,
        encode(streams, "deposit", stream.as_abi(), 4_000),
        sender=actors.deployer,
    )
    config = make_config(actors.payer, actors.payee, token=token.address)
    channels.deposit(config, 1_000, actors.payer)
    assert last_reentry(token, streams)[0] is True
    assert channels.state(config).deposited == 1_000
    assert token.balance_of(channels.address) == 1_000
    assert streams.open_state(stream).deposited == 4_001
    assert token.balance_of(streams.address) == 4_001
    bystanders()


# -- blocklist -------------------------------------------------------------------------------


def test_blocked_payee_blocks_only_its_own_claims(channels, actors, make_token, bystanders):
    token = make_token("BlocklistToken")
    blocked = make_config(actors.payer, actors.payee, token=token.address)
    fine = make_config(actors.payer, actors.stranger, token=token.address)
    channels.deposit(blocked, 1_000, actors.payer)
    channels.deposit(fine, 1_000, actors.payer)
    token.send("setBlocked", actors.payee.address, True, sender=actors.deployer)
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        channels.claim(blocked, voucher(channels, blocked, 500, actors.payer), actors.payee)
    channels.claim(fine, voucher(channels, fine, 500, actors.payer), actors.stranger)
    assert token.balance_of(actors.stranger.address) == SUPPLY + 500
    # The payer is never stuck behind a payee that cannot be paid.
    before = token.balance_of(actors.payer.address)
    channels.request_withdraw(blocked, actors.payer)
    advance(DELAY)
    channels.finish_withdraw(blocked, actors.payer)
    assert token.balance_of(actors.payer.address) == before + 1_000
    assert token.balance_of(channels.address) == 500
    bystanders()


def test_blocked_payer_cannot_stop_the_payee_from_claiming(channels, actors, make_token):
    token = make_token("BlocklistToken")
    config = make_config(actors.payer, actors.payee, token=token.address)
    channels.deposit(config, 1_000, actors.payer)
    token.send("setBlocked", actors.payer.address, True, sender=actors.deployer)
    signed = voucher(channels, config, 700, actors.payer)
    # Closing refunds the payer in the same transaction, so it fails; claiming does not.
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        channels.close(config, signed, actors.payee)
    channels.claim(config, signed, actors.payee)
    assert token.balance_of(actors.payee.address) == 700
    channels.request_withdraw(config, actors.payer)
    advance(DELAY)
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        channels.finish_withdraw(config, actors.payer)
    # The refund waits in the contract until the payer can receive it.
    assert token.balance_of(channels.address) == 300
    token.send("setBlocked", actors.payer.address, False, sender=actors.deployer)
    channels.finish_withdraw(config, actors.stranger)
    assert token.balance_of(channels.address) == 0


def test_blocked_stream_recipient_withdraws_elsewhere(w3, streams, actors, make_token):
    token = make_token("BlocklistToken")
    config = fixed_stream(w3, actors.payer.address, actors.payee.address, token.address, 1_000)
    streams.create_fixed(config, actors.payer)
    advance(2_000)
    token.send("setBlocked", actors.payee.address, True, sender=actors.deployer)
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        streams.withdraw(config, actors.stranger)
    streams.withdraw(config, actors.payee, to=actors.relayer.address)
    assert token.balance_of(actors.relayer.address) == SUPPLY + 1_000
    assert token.balance_of(streams.address) == 0


def test_blocked_stream_sender_cannot_cancel_but_the_recipient_is_paid(
    w3, streams, actors, make_token
):
    token = make_token("BlocklistToken")
    config = fixed_stream(w3, actors.payer.address, actors.payee.address, token.address, 1_000)
    streams.create_fixed(config, actors.payer)
    token.send("setBlocked", actors.payer.address, True, sender=actors.deployer)
    advance(300)
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        streams.cancel(config, actors.payer)
    advance(2_000)
    assert streams.withdraw(config, actors.stranger).amount == 1_000


# -- rebasing (unsupported: these tests pin why) ---------------------------------------------


def test_negative_rebase_makes_one_channel_pay_with_anothers_money(
    channels, actors, make_token, bystanders
):
    token = make_token("RebasingToken")
    first = make_config(actors.payer, actors.payee, token=token.address)
    second = make_config(actors.stranger, actors.relayer, token=token.address)
    channels.deposit(first, 1_000, actors.payer)
    channels.deposit(second, 1_000, actors.stranger)
    token.send("rebase", 10**18 // 2, sender=actors.deployer)
    # The contract now holds 1,000 and owes 2,000: solvency is gone for this token only.
    assert token.balance_of(channels.address) == 1_000
    channels.claim(first, voucher(channels, first, 1_000, actors.payer), actors.payee)
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        channels.claim(second, voucher(channels, second, 1, actors.stranger), actors.relayer)
    bystanders()


def test_positive_rebase_surplus_stays_in_the_contract(channels, actors, make_token):
    token = make_token("RebasingToken")
    config = make_config(actors.payer, actors.payee, token=token.address)
    channels.deposit(config, 1_000, actors.payer)
    token.send("rebase", 2 * 10**18, sender=actors.deployer)
    channels.close(config, voucher(channels, config, 600, actors.payer), actors.payee)
    # Everyone gets exactly what the channel says; the growth is stranded, not paid out.
    assert token.balance_of(actors.payee.address) == 600
    assert token.balance_of(channels.address) == 1_000


def test_negative_rebase_leaves_streams_short(w3, streams, actors, make_token):
    token = make_token("RebasingToken")
    config = fixed_stream(w3, actors.payer.address, actors.payee.address, token.address, 1_000)
    streams.create_fixed(config, actors.payer)
    token.send("rebase", 10**18 // 2, sender=actors.deployer)
    advance(2_000)
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        streams.withdraw(config, actors.stranger)


# -- receivers that refuse ETH or burn all gas -----------------------------------------------


@pytest.mark.parametrize("receiver", ["RevertingReceiver", "GasBurningReceiver"])
def test_payee_that_refuses_eth_blocks_only_itself(w3, channels, actors, receiver, bystanders):
    payee = deploy(w3, receiver, actors.deployer)
    config = make_config(actors.payer, party(payee.address))
    channels.deposit(config, 1_000, actors.payer)
    claim = sign_claim(channels, config, voucher(channels, config, 400, actors.payer))
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        as_contract(channels, payee, claim, actors.deployer, value=0)
    assert channels.state(config).claimed == 0
    channels.request_withdraw(config, actors.payer)
    advance(DELAY)
    before = eth_balance(w3, actors.payer.address)
    channels.finish_withdraw(config, actors.stranger)
    assert eth_balance(w3, actors.payer.address) == before + 1_000
    bystanders()


def test_payer_that_refuses_eth_cannot_block_claims(w3, channels, actors, bystanders):
    payer = deploy(w3, "RevertingReceiver", actors.deployer)
    config = make_config(party(payer.address), actors.payee, authorizer=actors.payer)
    channels.deposit(config, 1_000, actors.stranger)
    signed = voucher(channels, config, 250, actors.payer)
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        channels.close(config, signed, actors.payee)
    before = eth_balance(w3, actors.payee.address)
    receipt = channels.claim(config, signed, actors.payee)
    assert eth_balance(w3, actors.payee.address) == before + 250 - gas_cost(receipt)
    payer.send(
        "execute",
        channels.address,
        0,
        encode(channels, "requestWithdraw", config.as_tuple()),
        sender=actors.deployer,
    )
    advance(DELAY)
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        channels.finish_withdraw(config, actors.stranger)
    payer.send("setAccepting", True, sender=actors.deployer)
    channels.finish_withdraw(config, actors.stranger)
    assert eth_balance(w3, payer.address) == 750
    bystanders()


@pytest.mark.parametrize("receiver", ["RevertingReceiver", "GasBurningReceiver"])
def test_stream_recipient_that_refuses_eth_withdraws_elsewhere(w3, streams, actors, receiver):
    recipient = deploy(w3, receiver, actors.deployer)
    config = fixed_stream(w3, actors.payer.address, recipient.address, ZERO_ADDRESS, 1_000)
    streams.create_fixed(config, actors.payer)
    advance(2_000)
    with pytest.raises(ContractRevertError, match="TokenTransfers_TransferFailed"):
        streams.withdraw(config, actors.stranger)
    before = eth_balance(w3, actors.relayer.address)
    recipient.send(
        "execute",
        streams.address,
        0,
        encode(streams, "withdrawFixed", config.as_abi(), actors.relayer.address),
        sender=actors.deployer,
    )
    assert eth_balance(w3, actors.relayer.address) == before + 1_000
    assert eth_balance(w3, streams.address) == 0
