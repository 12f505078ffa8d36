"""Stateful property test: many actors, tokens, times and operations against both contracts.

A Hypothesis ``RuleBasedStateMachine`` drives the deployed PaymentChannels and Streams
through the SDK clients, in ETH and three ERC-20s that share both contracts (a plain one, a
fee-on-transfer one and a USDT-style one that returns nothing), with six actors, session
keys, forged and replayed vouchers and moving time. It keeps its own model of every
channel, every stream and every ERC-20 balance, and after each step checks the
invariants of DESIGN.md against the chain:

- solvency: each contract's balance of each token equals what it still owes (not only
  ``>=``: nothing may be stranded either);
- conservation: per channel ``claimed + refunded <= deposited`` (refunded: the payee's
  on-chain refunds and the final return; deposited: everything ever deposited), with
  equality once finished; per stream withdrawn + refunded + still owed = deposited;
- ceilings: a channel's claimed total is at most the ceiling of a valid voucher the
  contract took for it; claims settle totals below their ceilings, by the payee, relayed
  with its signature, by third parties and with forged payee signatures (refused);
- monotonicity: claimed, everything ever deposited (the stored deposit plus the payee's
  refunds), and what streams have paid out, never decrease;
- authority: every actor's ERC-20 balance is exactly what the model says, so money went
  only where a valid voucher or stream sent it; vouchers signed by another key, for
  another channel or for another contract are refused;
- the SDK reading: ``ChannelClient.state`` and ``StreamsClient.*_state`` equal the model.

Every example starts from a chain snapshot and restores it, so examples are independent.
The quick profile runs in ``make test``; ``MICROPAY_HYPOTHESIS_PROFILE=heavy`` for audits.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import ape
import pytest
from audit_profiles import ExampleLog, profile_settings
from channel_helpers import attempt
from eth_account import Account
from eth_utils import keccak
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from web3.logs import DISCARD
from zoo import UNLIMITED, deploy

from micropay.channels import ChannelClient
from micropay.errors import ContractRevertError
from micropay.stream_model import FixedSchedule, FixedStreamState, OpenStreamState
from micropay.streams import FixedStreamConfig, OpenStreamConfig, StreamsClient
from micropay.tokens import TokenClient
from micropay.vouchers import (
    ZERO_ADDRESS,
    ChannelConfig,
    VoucherDomain,
    sign_payee_claim,
    sign_voucher,
)

FEE_BPS = 100
ACTORS = 6
SESSION_KEYS = [Account.from_key(keccak(text=f"session key {i}")) for i in range(3)]
STRANGER_KEY = Account.from_key(keccak(text="not the authorizer"))


@dataclass
class Token:
    name: str
    address: str
    client: Any  # None for ETH
    fee_bps: int = 0

    def received(self, amount: int) -> int:
        return amount - amount * self.fee_bps // 10_000

    def balance(self, w3: Any, owner: str) -> int:
        if self.client is None:
            return int(w3.eth.get_balance(owner))
        return int(self.client.balance_of(owner))


@dataclass
class Channel:
    config: ChannelConfig
    token: Token
    signer: Any
    deposited: int = 0
    """As the contract stores it: deposits less the payee's refunds."""
    claimed: int = 0
    closes_at: int = 0
    finished: bool = False
    returned: int = 0
    """What went back to the payer when the channel finished."""
    ever_deposited: int = 0
    refunded: int = 0
    """The payee's on-chain refunds while the channel was open."""
    ceiling: int = 0
    """The highest ceiling of a valid voucher the contract took for this channel."""


@dataclass
class Fixed:
    config: FixedStreamConfig
    token: Token
    state: FixedStreamState = field(default_factory=lambda: FixedStreamState(created=True))


@dataclass
class Open:
    config: OpenStreamConfig
    token: Token
    state: OpenStreamState


@pytest.fixture
def world(w3, keys, channels):  # type: ignore[no-untyped-def]
    """Streams, three ERC-20s held and approved by every actor, and the actors' keys."""
    deployer = keys[0]
    actors = keys[1 : ACTORS + 1]
    streams = StreamsClient.deploy(w3, deployer)
    usd = TokenClient.deploy(w3, deployer, "Audit USD", "aUSD", 6)
    tokens = [
        Token("ETH", ZERO_ADDRESS, None),
        Token("usd", usd.address, usd),
        Token("fee", "", deploy(w3, "FeeOnTransferToken", deployer, FEE_BPS), FEE_BPS),
        Token("noreturn", "", deploy(w3, "NoReturnToken", deployer)),
    ]
    for token in tokens[1:]:
        token.address = token.client.address
        for actor in actors:
            token.client._transact(
                token.client.contract.functions.mint(actor.address, 10**30), actor
            )
            for spender in (channels.address, streams.address):
                token.client._transact(
                    token.client.contract.functions.approve(spender, UNLIMITED), actor
                )
    return streams, tokens, actors


def test_channels_and_streams_keep_their_invariants(w3, channels, world):  # type: ignore[no-untyped-def]
    streams, tokens, actors = world
    log = ExampleLog("stateful: channels + streams, 4 tokens, 6 actors")
    other_domain = VoucherDomain(w3.eth.chain_id, streams.address)
    machine = _machine(w3, channels, streams, tokens, actors, other_domain, log)
    try:
        run_state_machine_as_test(machine, settings=profile_settings())
    finally:
        log.write()


def _machine(
    w3: Any,
    channels: ChannelClient,
    streams: StreamsClient,
    tokens: list[Token],
    actors: list[Any],
    other_domain: VoucherDomain,
    log: ExampleLog,
) -> type[RuleBasedStateMachine]:
    actor_ids = st.integers(min_value=0, max_value=len(actors) - 1)
    token_ids = st.integers(min_value=0, max_value=len(tokens) - 1)
    amounts = st.integers(min_value=0, max_value=10**6)
    contracts = (channels.address, streams.address)

    class Machine(RuleBasedStateMachine):
        channel_refs = Bundle("channels")
        fixed_refs = Bundle("fixed")
        open_refs = Bundle("open")

        def __init__(self) -> None:
            super().__init__()
            self.snapshot = ape.chain.snapshot()
            self.salt = 0
            self.channels: list[Channel] = []
            self.fixed: list[Fixed] = []
            self.open: list[Open] = []
            self.expected: dict[tuple[str, str], int] = {}
            for token in tokens[1:]:  # ERC-20s: gas blurs ETH balances of senders
                for owner in [*(a.address for a in actors), *contracts]:
                    self.expected[token.name, owner] = token.balance(w3, owner)
            self.seen: dict[bytes, tuple[int, int]] = {}
            self.touched: list[Channel | Fixed | Open] = []
            self.checks = 0
            log.example()

        def teardown(self) -> None:
            ape.chain.restore(self.snapshot)

        # -- helpers -----------------------------------------------------------------------

        def next_salt(self) -> bytes:
            self.salt += 1
            return self.salt.to_bytes(32, "big")

        def touch(self, item: Channel | Fixed | Open) -> Any:
            """Note what a step acts on: the next check reads it (and its token) from chain."""
            self.touched.append(item)
            return item

        def move(self, token: Token, source: str, target: str, amount: int) -> None:
            """Record a transfer the model expects; the token's fee is burned in transit."""
            if token.client is None or amount == 0:
                return
            self.expected[token.name, source] -= amount
            if (token.name, target) in self.expected:
                self.expected[token.name, target] += token.received(amount)

        def attempt(self, step: str, action: Any, error: str | None) -> Any:
            """Run ``action``; it must revert with ``error``, or succeed if that is None."""
            return attempt(log, step, action, error)

        def block_time(self, receipt: Any) -> int:
            return int(w3.eth.get_block(receipt["blockNumber"])["timestamp"])

        def latest_time(self) -> int:
            return int(w3.eth.get_block("latest")["timestamp"])

        def deposit_error(self, channel: Channel, amount: int) -> str | None:
            if channel.finished:
                return "PaymentChannels_ChannelFinished"
            if channel.token.received(amount) == 0:
                return "PaymentChannels_ZeroDeposit"
            return None

        def claim_error(
            self, channel: Channel, total: int, ceiling: int, forged: bool
        ) -> str | None:
            """The contract's verdict on settling ``total`` with a voucher for ``ceiling``."""
            if channel.deposited == 0:
                return "PaymentChannels_ChannelNotFound"
            if channel.finished:
                return "PaymentChannels_ChannelFinished"
            if total <= channel.claimed:
                return "PaymentChannels_NothingToClaim"
            if total > ceiling:
                return "PaymentChannels_TotalExceedsCeiling"
            if total > channel.deposited:
                return "PaymentChannels_TotalExceedsDeposit"
            if forged:
                return "PaymentChannels_InvalidVoucherSignature"
            return None

        def payee_key(self, channel: Channel) -> Any:
            return next(a for a in actors if a.address == channel.config.payee)

        def not_payee(self, channel: Channel) -> Any:
            """An actor that is not the channel's payee (one who saw a voucher)."""
            index = next(i for i, a in enumerate(actors) if a.address == channel.config.payee)
            return actors[(index + 1) % len(actors)]

        def settled(self, channel: Channel, total: int, ceiling: int) -> None:
            """Record a claim the contract took: pay the difference, keep the ceiling."""
            paid = total - channel.claimed
            self.move(channel.token, channels.address, channel.config.payee, paid)
            channel.claimed = total
            channel.ceiling = max(channel.ceiling, ceiling)

        def voucher(self, channel: Channel, amount: int, forgery: int) -> Any:
            """A voucher for ``amount``: 0 genuine, 1 wrong key, 2 other contract, 3 other
            channel."""
            if forgery == 1:
                return sign_voucher(
                    channels.domain, channel.config.channel_id, amount, STRANGER_KEY
                )
            if forgery == 2:
                return sign_voucher(other_domain, channel.config.channel_id, amount, channel.signer)
            if forgery == 3:
                wrong = keccak(channel.config.channel_id)
                signed = sign_voucher(channels.domain, wrong, amount, channel.signer)
                return replace(signed, channel_id=channel.config.channel_id)
            return sign_voucher(channels.domain, channel.config.channel_id, amount, channel.signer)

        # -- channels ----------------------------------------------------------------------

        @rule(
            target=channel_refs,
            payer=actor_ids,
            payee=actor_ids,
            token=token_ids,
            session=st.integers(min_value=-1, max_value=len(SESSION_KEYS) - 1),
            delay=st.sampled_from([600, 3_600, 86_400]),
            amount=amounts,
        )
        def open_channel(
            self, payer: int, payee: int, token: int, session: int, delay: int, amount: int
        ) -> Channel:
            signer = actors[payer] if session < 0 else SESSION_KEYS[session]
            config = ChannelConfig(
                actors[payer].address,
                actors[payee].address,
                tokens[token].address,
                signer.address,
                delay,
                self.next_salt(),
            )
            channel = Channel(config, tokens[token], signer)
            self.channels.append(channel)
            self.deposit(channel, payer, amount)
            return channel

        @rule(channel=channel_refs, funder=actor_ids, amount=amounts)
        def deposit(self, channel: Channel, funder: int, amount: int) -> None:
            self.touch(channel)
            sender = actors[funder]
            receipt = self.attempt(
                "channel deposit",
                lambda: channels.deposit(channel.config, amount, sender),
                self.deposit_error(channel, amount),
            )
            if receipt is not None:
                self.move(channel.token, sender.address, channels.address, amount)
                channel.deposited += channel.token.received(amount)
                channel.ever_deposited += channel.token.received(amount)

        @rule(
            channel=channel_refs,
            percent=st.integers(min_value=0, max_value=120),
            slack=st.sampled_from([0, 0, 1, 50, 10**5, -1]),
            forgery=st.sampled_from([0, 0, 0, 0, 1, 2, 3]),
            mode=st.sampled_from(["payee", "payee", "relayed", "third party", "forged consent"]),
            relayer=actor_ids,
        )
        def claim(
            self, channel: Channel, percent: int, slack: int, forgery: int, mode: str, relayer: int
        ) -> None:
            """Settle a total at or below a voucher's ceiling (``slack`` above it; -1: a total
            one above the ceiling), as the payee, relayed with its signature, or not."""
            self.touch(channel)
            total = channel.claimed + (channel.deposited - channel.claimed) * percent // 100
            ceiling = max(total + slack, 0)
            signed = self.voucher(channel, ceiling, forgery)
            error = self.claim_error(channel, total, ceiling, forgery != 0)
            payee = self.payee_key(channel)
            if mode == "payee":
                action = lambda: channels.claim(channel.config, signed, payee, total=total)  # noqa: E731
            elif mode == "third party":
                seer = self.not_payee(channel)
                action = lambda: channels.claim(channel.config, signed, seer, total=total)  # noqa: E731
                error = "PaymentChannels_NotPayee"
            else:
                key = payee if mode == "relayed" else STRANGER_KEY
                consent = sign_payee_claim(channels.domain, channel.config.channel_id, total, key)
                action = lambda: channels.claim_for(  # noqa: E731
                    channel.config, signed, consent, actors[relayer]
                )
                if mode != "relayed":
                    error = "PaymentChannels_InvalidPayeeSignature"
            if self.attempt(f"claim ({mode})", action, error) is not None:
                self.settled(channel, total, ceiling)

        @rule(
            picks=st.lists(
                st.tuples(st.integers(0, 10**6), st.integers(0, 110), st.integers(0, 1_000)),
                min_size=1,
                max_size=3,
            ),
            relayed=st.booleans(),
            relayer=actor_ids,
        )
        @precondition(lambda self: self.channels)
        def claim_many(
            self, picks: list[tuple[int, int, int]], relayed: bool, relayer: int
        ) -> None:
            # Model the batch in order on copies: all of it lands, or none does. The payee's
            # own batch (claimMany) takes only its channels; a relayed one (claimManyFor)
            # carries each payee's signature.
            first = self.channels[picks[0][0] % len(self.channels)]
            sender = actors[relayer] if relayed else self.payee_key(first)
            batch, error, copies = [], None, {}
            for index, percent, slack in picks:
                channel = self.touch(self.channels[index % len(self.channels)])
                copy = copies.setdefault(id(channel), replace(channel))
                total = copy.claimed + (copy.deposited - copy.claimed) * percent // 100
                if not relayed and channel.config.payee != sender.address:
                    error = error or "PaymentChannels_NotPayee"
                error = error or self.claim_error(copy, total, total + slack, False)
                batch.append((channel, total, total + slack, copy.claimed))
                copy.claimed = max(copy.claimed, total)
            items = [(c.config, self.voucher(c, ceiling, 0), t) for c, t, ceiling, _ in batch]
            if relayed:
                consents = [
                    sign_payee_claim(channels.domain, c.config.channel_id, t, self.payee_key(c))
                    for c, t, _, _ in batch
                ]
                action = lambda: channels.claim_many_for(items, consents, sender)  # noqa: E731
            else:
                action = lambda: channels.claim_many(items, sender)  # noqa: E731
            receipt = self.attempt("claim many", action, error)
            if receipt is None:
                return
            # Payouts go out once per run of consecutive claims to the same payee and
            # token, so a fee-on-transfer token charges each run once, not each claim.
            runs: list[tuple[Channel, int]] = []
            for channel, total, ceiling, before in batch:
                last = runs[-1][0] if runs else None
                if last and (last.config.payee, last.token) == (
                    channel.config.payee,
                    channel.token,
                ):
                    runs[-1] = (last, runs[-1][1] + total - before)
                else:
                    runs.append((channel, total - before))
                channel.claimed = total
                channel.ceiling = max(channel.ceiling, ceiling)
            for channel, paid in runs:
                self.move(channel.token, channels.address, channel.config.payee, paid)

        @rule(
            channel=channel_refs,
            percent=st.integers(min_value=0, max_value=110),
            slack=st.sampled_from([0, 7, 10**5]),
            by_payee=st.booleans(),
            caller=actor_ids,
        )
        def close(
            self, channel: Channel, percent: int, slack: int, by_payee: bool, caller: int
        ) -> None:
            self.touch(channel)
            sender = self.payee_key(channel) if by_payee else actors[caller]
            total = channel.claimed + (channel.deposited - channel.claimed) * percent // 100
            ceiling = total + slack
            signed = self.voucher(channel, ceiling, 0) if total > channel.claimed else None
            if sender.address != channel.config.payee:
                error: str | None = "PaymentChannels_NotPayee"
            elif channel.deposited == 0:
                error = "PaymentChannels_ChannelNotFound"
            elif channel.finished:
                error = "PaymentChannels_ChannelFinished"
            else:
                error = self.claim_error(channel, total, ceiling, False) if signed else None
            receipt = self.attempt(
                "close",
                lambda: channels.close(channel.config, signed, sender, total=total),
                error,
            )
            if receipt is None:
                return
            [event] = channels.contract.events.Closed().process_receipt(receipt, errors=DISCARD)
            if signed is not None:
                self.settled(channel, total, ceiling)
            returned = channel.deposited - channel.claimed
            assert event.args.refunded == returned
            self.move(channel.token, channels.address, channel.config.payer, returned)
            channel.finished, channel.returned, channel.closes_at = True, returned, 0

        @rule(
            channel=channel_refs,
            percent=st.integers(min_value=0, max_value=120),
            by_payee=st.booleans(),
            caller=actor_ids,
        )
        def refund(self, channel: Channel, percent: int, by_payee: bool, caller: int) -> None:
            """The payee returns part of the unspent deposit; the channel stays open."""
            self.touch(channel)
            sender = self.payee_key(channel) if by_payee else actors[caller]
            unspent = channel.deposited - channel.claimed
            amount = unspent * percent // 100
            if sender.address != channel.config.payee:
                error: str | None = "PaymentChannels_NotPayee"
            elif channel.finished:
                error = "PaymentChannels_ChannelFinished"
            elif amount == 0:
                error = "PaymentChannels_ZeroRefund"
            elif amount > unspent:
                error = "PaymentChannels_RefundExceedsUnspent"
            else:
                error = None
            receipt = self.attempt(
                "refund", lambda: channels.refund(channel.config, amount, sender), error
            )
            if receipt is None:
                return
            self.move(channel.token, channels.address, channel.config.payer, amount)
            channel.deposited -= amount
            channel.refunded += amount

        @rule(channel=channel_refs, by_payer=st.booleans(), caller=actor_ids)
        def request_withdraw(self, channel: Channel, by_payer: bool, caller: int) -> None:
            self.touch(channel)
            sender = next(a for a in actors if a.address == channel.config.payer)
            if not by_payer:
                sender = actors[caller]
            if sender.address != channel.config.payer:
                error: str | None = "PaymentChannels_NotPayer"
            elif channel.deposited == 0:
                error = "PaymentChannels_ChannelNotFound"
            elif channel.finished:
                error = "PaymentChannels_ChannelFinished"
            elif channel.closes_at:
                error = "PaymentChannels_WithdrawAlreadyRequested"
            else:
                error = None
            receipt = self.attempt(
                "request withdraw", lambda: channels.request_withdraw(channel.config, sender), error
            )
            if receipt is not None:
                channel.closes_at = self.block_time(receipt) + channel.config.withdraw_delay

        @rule(channel=channel_refs, caller=actor_ids)
        def finish_withdraw(self, channel: Channel, caller: int) -> None:
            self.touch(channel)
            log.step("finish withdraw")
            try:
                receipt = channels.finish_withdraw(channel.config, actors[caller])
            except ContractRevertError as err:
                if channel.deposited == 0:
                    assert err.error_name == "PaymentChannels_ChannelNotFound", err
                elif channel.finished:
                    assert err.error_name == "PaymentChannels_ChannelFinished", err
                elif not channel.closes_at:
                    assert err.error_name == "PaymentChannels_WithdrawNotRequested", err
                else:  # readiness depends on the block's time: check the contract's view of it
                    assert err.error_name == "PaymentChannels_WithdrawNotReady", err
                    assert err.arguments["closesAt"] == channel.closes_at
                    assert err.arguments["timestamp"] < channel.closes_at
                return
            assert not channel.finished and channel.closes_at, "finished a channel it should not"
            assert self.block_time(receipt) >= channel.closes_at
            returned = channel.deposited - channel.claimed
            self.move(channel.token, channels.address, channel.config.payer, returned)
            channel.finished, channel.returned, channel.closes_at = True, returned, 0

        # Around the withdraw delays: the mined block is one second before the next
        # transaction's, so 598 and 3_598 put a finish_withdraw one second early.
        @rule(seconds=st.sampled_from([1, 60, 598, 599, 600, 3_598, 3_599, 3_600, 86_400]))
        def advance_time(self, seconds: int) -> None:
            log.step("advance time")
            ape.chain.mine(deltatime=seconds)

        # -- fixed streams -----------------------------------------------------------------

        @rule(
            target=fixed_refs,
            sender=actor_ids,
            recipient=actor_ids,
            token=token_ids,
            amount=st.integers(min_value=1, max_value=10**6),
            offset=st.integers(min_value=-300, max_value=300),
            duration=st.integers(min_value=400, max_value=5_000),
            cliff=st.integers(min_value=0, max_value=100),
            cancelable=st.booleans(),
        )
        def create_fixed(
            self,
            sender: int,
            recipient: int,
            token: int,
            amount: int,
            offset: int,
            duration: int,
            cliff: int,
            cancelable: bool,
        ) -> Fixed:
            start = self.latest_time() + offset
            config = FixedStreamConfig(
                actors[sender].address,
                actors[recipient].address,
                tokens[token].address,
                amount,
                start,
                start + duration,
                cliff=start + duration * cliff // 100 if cliff else 0,
                cancelable=cancelable,
                salt=self.next_salt(),
            )
            chosen = tokens[token]
            short = chosen.received(amount) != amount
            log.step("create fixed")
            try:
                receipt = streams.create_fixed(config, actors[sender])
            except ContractRevertError as err:
                receipt = None
                if err.error_name == "Streams_EndNotInFuture":  # the node's clock jumped ahead
                    assert err.arguments["timestamp"] >= config.end, err
                else:
                    assert short and err.error_name == "Streams_AmountNotReceived", err
            else:
                assert not short, "a fee-on-transfer token funded a fixed stream"
            stream = self.touch(Fixed(config, chosen))
            if receipt is None:
                stream.state = FixedStreamState()  # never created
            else:
                self.move(chosen, actors[sender].address, streams.address, amount)
                self.fixed.append(stream)
            return stream

        @rule(stream=fixed_refs, by_recipient=st.booleans(), caller=actor_ids, to=actor_ids)
        def withdraw_fixed(self, stream: Fixed, by_recipient: bool, caller: int, to: int) -> None:
            self.touch(stream)
            recipient = stream.config.recipient
            if by_recipient:
                sender = next(a for a in actors if a.address == recipient)
                destination = actors[to].address
            else:
                sender, destination = actors[caller], recipient
            log.step("withdraw fixed")
            schedule = stream.config.schedule
            before = self.latest_time()
            try:
                receipt = streams.withdraw(stream.config, sender, destination)
            except ContractRevertError as err:
                if not stream.state.created:
                    assert err.error_name == "Streams_UnknownStream", err
                else:
                    assert err.error_name == "Streams_NothingToWithdraw", err
                    assert stream.state.withdrawable_at(schedule, before) == 0
                return
            assert stream.state.created
            stream.state, paid = stream.state.after_withdraw(schedule, receipt.timestamp)
            assert receipt.amount == paid > 0
            self.move(stream.token, streams.address, destination, paid)

        @rule(stream=fixed_refs, by_sender=st.booleans(), caller=actor_ids)
        def cancel_fixed(self, stream: Fixed, by_sender: bool, caller: int) -> None:
            self.touch(stream)
            config = stream.config
            sender = actors[caller]
            if by_sender:
                sender = next(a for a in actors if a.address == config.sender)
            log.step("cancel fixed")
            try:
                receipt = streams.cancel(config, sender)
            except ContractRevertError as err:
                if not stream.state.created:
                    expected = "Streams_UnknownStream"
                elif sender.address != config.sender:
                    expected = "Streams_NotSender"
                elif not config.cancelable:
                    expected = "Streams_NotCancelable"
                elif stream.state.canceled_at:
                    expected = "Streams_AlreadyCanceled"
                else:  # everything has streamed by the block's time
                    expected = "Streams_AlreadySettled"
                    assert err.arguments.get("end") == config.end, err
                assert err.error_name == expected, err
                return
            assert stream.state.created and config.cancelable and sender.address == config.sender
            assert not stream.state.canceled_at and receipt.timestamp < config.end
            stream.state, refund = stream.state.after_cancel(config.schedule, receipt.timestamp)
            assert receipt.amount == refund
            self.move(stream.token, streams.address, config.sender, refund)

        # -- open-ended streams ------------------------------------------------------------

        @rule(
            target=open_refs,
            sender=actor_ids,
            recipient=actor_ids,
            token=token_ids,
            rate=st.sampled_from([1, 10**15, 10**17, 10**18, 3 * 10**18 + 7, 10**20]),
            amount=st.integers(min_value=0, max_value=10**5),
        )
        def create_open(
            self, sender: int, recipient: int, token: int, rate: int, amount: int
        ) -> Open:
            chosen = tokens[token]
            config = OpenStreamConfig(
                actors[sender].address, actors[recipient].address, chosen.address, self.next_salt()
            )
            receipt = self.attempt(
                "create open",
                lambda: streams.create_open(config, rate, amount, actors[sender]),
                None,
            )
            credited = chosen.received(amount)
            assert receipt.amount == credited
            self.move(chosen, actors[sender].address, streams.address, amount)
            state = OpenStreamState.created(receipt.timestamp, rate, credited)
            stream = self.touch(Open(config, chosen, state))
            self.open.append(stream)
            return stream

        @rule(stream=open_refs, funder=actor_ids, amount=amounts)
        def top_up(self, stream: Open, funder: int, amount: int) -> None:
            self.touch(stream)
            credited = stream.token.received(amount)
            receipt = self.attempt(
                "top up",
                lambda: streams.top_up(stream.config, amount, actors[funder]),
                None if credited else "Streams_ZeroAmount",
            )
            if receipt is not None:
                assert receipt.amount == credited
                self.move(stream.token, actors[funder].address, streams.address, amount)
                stream.state = stream.state.after_deposit(credited)

        @rule(stream=open_refs, caller=actor_ids)
        def withdraw_open(self, stream: Open, caller: int) -> None:
            self.touch(stream)
            log.step("withdraw open")
            before = self.latest_time()
            recipient = stream.config.recipient
            try:
                receipt = streams.withdraw(stream.config, actors[caller], recipient)
            except ContractRevertError as err:
                assert err.error_name == "Streams_NothingToWithdraw", err
                assert stream.state.withdrawable_at(before) == 0
                return
            stream.state, paid = stream.state.after_withdraw(receipt.timestamp)
            assert receipt.amount == paid > 0
            self.move(stream.token, streams.address, recipient, paid)

        @rule(stream=open_refs, percent=st.integers(min_value=1, max_value=100))
        def refund_open(self, stream: Open, percent: int) -> None:
            self.touch(stream)
            sender = next(a for a in actors if a.address == stream.config.sender)
            amount = stream.state.refundable_at(self.latest_time()) * percent // 100
            log.step("refund open")
            try:
                receipt = streams.refund(stream.config, amount, sender)
            except ContractRevertError as err:
                if amount == 0:
                    assert err.error_name == "Streams_ZeroAmount", err
                else:  # what is refundable shrinks while the stream runs
                    assert err.error_name == "Streams_RefundExceedsUnowed", err
                    assert err.arguments["refundable"] < amount
                return
            assert amount > 0
            stream.state = stream.state.after_refund(receipt.timestamp, amount)
            self.move(stream.token, streams.address, stream.config.sender, amount)

        @rule(stream=open_refs, rate=st.sampled_from([0, 10**16, 2 * 10**18]))
        def change_rate(self, stream: Open, rate: int) -> None:
            """Pause (rate 0), resume a paused stream, or adjust a running one's rate."""
            self.touch(stream)
            sender = next(a for a in actors if a.address == stream.config.sender)
            paused = stream.state.paused
            if rate == 0:
                step, action = "pause", lambda: streams.pause(stream.config, sender)
                error = "Streams_AlreadyPaused" if paused else None
            elif paused:
                step, action = "resume", lambda: streams.resume(stream.config, rate, sender)
                error = None
            else:
                step, action = "adjust", lambda: streams.adjust_rate(stream.config, rate, sender)
                error = None
            receipt = self.attempt(step, action, error)
            if receipt is None:
                return
            if rate == 0:
                stream.state = stream.state.after_pause(receipt.timestamp)
            elif paused:
                stream.state = stream.state.after_resume(receipt.timestamp, rate)
            else:
                stream.state = stream.state.after_adjust_rate(receipt.timestamp, rate)

        # -- invariants --------------------------------------------------------------------

        @invariant()
        def invariants_hold(self) -> None:
            """After every step: solvency of every token in both contracts, and everything the
            step acted on (its channel or stream and every balance in its token) against the
            model. Every tenth check sweeps all channels, streams and balances."""
            self.checks += 1
            full = self.checks % 10 == 0
            items = [*self.channels, *self.fixed, *self.open] if full else self.touched
            self.check_channels([i for i in items if isinstance(i, Channel)])
            self.check_streams([i for i in items if not isinstance(i, Channel)])
            self.check_solvency()
            self.check_balances(tokens if full else [i.token for i in items])
            self.touched.clear()

        def check_channels(self, touched: list[Channel]) -> None:
            for channel in {id(c): c for c in touched}.values():
                state = channels.state(channel.config)
                model = (channel.deposited, channel.claimed, channel.closes_at, channel.finished)
                assert (state.deposited, state.claimed, state.closes_at, state.finished) == model
                self.check_conservation(channel, state)
                self.check_ceiling(channel, state)
                self.check_monotonic(channel, state)

        def check_conservation(self, channel: Channel, state: Any) -> None:
            """refunded + settled <= everything ever deposited; equal once finished."""
            out = state.claimed + channel.refunded + channel.returned
            assert state.claimed <= state.deposited, "claimed above the (net) deposit"
            assert out <= channel.ever_deposited, "refunded + settled above the deposits"
            if state.finished:
                assert out == channel.ever_deposited, "a finished channel stranded money"

        def check_ceiling(self, channel: Channel, state: Any) -> None:
            """What is settled is within the ceiling of a valid voucher the contract took."""
            assert state.claimed <= channel.ceiling, "settled above every valid ceiling"

        def check_monotonic(self, channel: Channel, state: Any) -> None:
            """Settled never decreases, nor does everything ever deposited (the stored
            deposit plus the payee's refunds)."""
            ever = state.deposited + channel.refunded
            last = self.seen.get(channel.config.channel_id, (0, 0))
            assert ever >= last[0], "a deposit was lost"
            assert state.claimed >= last[1], "a settled total went down"
            self.seen[channel.config.channel_id] = (ever, state.claimed)

        def check_streams(self, touched: list[Fixed | Open]) -> None:
            for stream in {id(s): s for s in touched}.values():
                if isinstance(stream, Fixed):
                    state = streams.fixed_state(stream.config)
                    assert state == stream.state
                    schedule: FixedSchedule = stream.config.schedule
                    paid_out = state.withdrawn + state.refunded(schedule)
                    assert paid_out + state.owed(schedule) == stream.config.amount
                else:
                    open_state = streams.open_state(stream.config)
                    assert open_state == stream.state
                    paid_out = open_state.withdrawn + open_state.refunded
                    assert paid_out + open_state.balance == open_state.deposited

        def check_solvency(self) -> None:
            for token in tokens:
                owed_channels = sum(
                    c.deposited - c.claimed
                    for c in self.channels
                    if c.token is token and not c.finished
                )
                owed_streams = sum(
                    f.state.owed(f.config.schedule) for f in self.fixed if f.token is token
                ) + sum(o.state.balance for o in self.open if o.token is token)
                held_channels = token.balance(w3, channels.address)
                held_streams = token.balance(w3, streams.address)
                assert held_channels >= owed_channels, f"PaymentChannels insolvent in {token.name}"
                assert held_streams >= owed_streams, f"Streams insolvent in {token.name}"
                # Nothing stranded either (Streams is deployed per test; the session's
                # PaymentChannels may hold other tests' ETH, so ETH is checked >= there).
                assert held_streams == owed_streams, f"{token.name} stranded in Streams"
                if token.client is not None:
                    assert held_channels == owed_channels, f"{token.name} stranded in channels"

        def check_balances(self, touched: list[Token]) -> None:
            """Authority: every holder of the tokens in play has exactly what the model says."""
            names = {t.name for t in touched}
            for (name, owner), amount in self.expected.items():
                if name in names:
                    token = next(t for t in tokens if t.name == name)
                    assert token.balance(w3, owner) == amount, f"{name} balance of {owner}"

    return Machine
