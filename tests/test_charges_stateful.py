"""Stateful property test: charged totals, refunds and settlement exact to the wei.

A Hypothesis ``RuleBasedStateMachine`` drives the real paywall (its ASGI app, through
httpx's ASGI transport: the middleware, a real Starlette handler that charges, the receipt),
the real :class:`~micropay.payee.Payee`, a real book (the durable SQLite ledger in a fresh
file per example, or the in-memory book) and the real PaymentChannels contract, in an
ERC-20 so every balance is exact (ETH balances are blurred by gas). Its Python model holds,
per channel: the deposit, the best ceiling, the charged total, the refunded totals off and
on chain, what is claimed, the withdraw and the finish, and every actor's token balance.

Rules: fixed-price and metered ("up to N") requests with handler charges from 0 to N and
non-2xx answers (charge nothing); streamed answers priced per event, paid one increment at a
time, of fewer, as many or more events than the increment covers (the client then sends no
next voucher: the stream pauses, waits, and ends charging what it delivered); a replayed
PAYMENT-SIGNATURE (into its own channel, any route, or re-labelled as another channel);
off-chain refunds (valid, above what is refundable, zero, negative, non-int, bool); on-chain
refunds of unspent deposit; top-ups; claims of one channel and of several; the payer's
withdraw request and finish; the payee's close; moving time. Every step's outcome (the 2xx
and its receipt, or the 402 and its reason, or the named error, or the revert) is predicted
by the model before it runs.

After every step, against the chain and the book: the chain's state equals the model's;
settled <= the best ceiling; settled never decreases; charged total <= best ceiling;
charged total >= claimed; refunded (off chain) + charged total = everything ever charged
(and the book's charges and refunds lists add up to it); claimed + refunded on chain +
returned <= deposited (equal once finished); every token balance equals the model's; the
client's view, built from the receipts it was sent alone, equals the book's.

Why the ASGI transport and hand-signed vouchers rather than uvicorn and the HttpPayer: the
HttpPayer opens, funds and tops up channels by its own policy, which would fight the
machine's own top-up, refund and withdraw rules (the model must know every deposit), and a
socket per step costs time without exercising more of the paywall. The client here is an
honest one that signs what the protocol says (the charged total, or what is claimed, plus
the route's price) and checks each receipt as the HttpPayer does.

Why streams stop at one increment here: httpx's ASGI transport hands back a response only
once its body is complete, so the client cannot answer the in-band ask for the next voucher
while the body is still coming; tests/test_paywall_streams.py pays many increments over real
sockets, with cuts at every point. Here the stream's charges go through the same ``charged``
as every other receipt, so every invariant covers them.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ape
import httpx
import pytest
from audit_profiles import ExampleLog, profile_settings
from channel_helpers import attempt
from charges_helpers import (
    DELAY,
    INCREMENT,
    MARGIN,
    MAXIMUM,
    ROUTES,
    UNIT,
    get,
    metered_paywall,
    payment_header,
    refusal_reason,
    stream_receipt,
)
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from micropay._x402 import PaymentPayload, Reason, Receipt
from micropay.channels import ChannelClient
from micropay.errors import ContractRevertError, RefundError, UnknownChannelError
from micropay.ledger import Ledger
from micropay.payee import MemoryVoucherBook
from micropay.tokens import TokenClient
from micropay.vouchers import ChannelConfig, Voucher

PAYERS = 3
_salts = itertools.count(1)


@dataclass
class Channel:
    """The model of one channel: the chain's part, the book's part and the client's view."""

    config: ChannelConfig
    key: Any
    # on chain
    deposited: int = 0
    """As the contract stores it: deposits less the payee's on-chain refunds."""
    ever_deposited: int = 0
    claimed: int = 0
    refunded_on_chain: int = 0
    closes_at: int = 0
    finished: bool = False
    returned: int = 0
    # the book
    ceiling: int = 0
    """The best voucher the book holds (0: it holds nothing)."""
    charged: int = 0
    refunded: int = 0
    ever_charged: int = 0
    # the client's view, from the receipts alone
    receipts: list[Receipt] = field(default_factory=list)
    headers: list[tuple[str, str, int]] = field(default_factory=list)
    """PAYMENT-SIGNATURE headers sent and served: (route, header, voucher amount)."""

    @property
    def held(self) -> bool:
        return self.ceiling > 0


@pytest.fixture
def charges_world(w3, keys, channels):  # type: ignore[no-untyped-def]
    """A 6-decimal token the payers hold and approved, the site's key and the payers'."""
    deployer, site = keys[0], keys[7]
    payers = keys[8 : 8 + PAYERS]
    token = TokenClient.deploy(w3, deployer, "Charges USD", "cUSD", 6)
    for payer in payers:
        token.mint(payer.address, 10**15, deployer)
        token.approve(channels.address, 2**256 - 1, payer)
    return token, site, payers


@pytest.mark.parametrize("book", ["ledger", "memory"])
def test_charges_refunds_and_settlement_are_exact_to_the_wei(  # type: ignore[no-untyped-def]
    w3, channels, charges_world, book
):
    token, site, payers = charges_world
    log = ExampleLog(f"stateful: charged totals, refunds, settlement ({book} book)")
    machine = _machine(w3, channels, token, site, payers, book, log)
    try:
        run_state_machine_as_test(machine, settings=profile_settings())
    finally:
        log.write()


def _machine(
    w3: Any,
    channels: ChannelClient,
    token: TokenClient,
    site: Any,
    payers: list[Any],
    book_kind: str,
    log: ExampleLog,
) -> type[RuleBasedStateMachine]:
    payer_ids = st.integers(min_value=0, max_value=len(payers) - 1)
    holders = [*(p.address for p in payers), site.address, channels.address]
    network = f"eip155:{w3.eth.chain_id}"

    class Machine(RuleBasedStateMachine):
        channel_refs = Bundle("channels")

        def __init__(self) -> None:
            super().__init__()
            self.directory = tempfile.TemporaryDirectory()
            if book_kind == "ledger":
                url = f"sqlite:///{Path(self.directory.name) / 'site.db'}"
                self.book: Any = Ledger.open(url, channels.domain)
            else:
                self.book = MemoryVoucherBook()
            self.paywall = metered_paywall(channels, site, self.book, token.address)
            self.payee = self.paywall.payee
            self.channels: list[Channel] = []
            self.expected = {owner: token.balance_of(owner) for owner in holders}
            self.seen: dict[bytes, int] = {}
            self.touched: list[Channel] = []
            self.checks = 0
            log.example()

        def teardown(self) -> None:
            if isinstance(self.book, Ledger):
                self.book.close()
            self.directory.cleanup()

        # -- helpers -----------------------------------------------------------------------

        def touch(self, channel: Channel) -> Channel:
            self.touched.append(channel)
            return channel

        def move(self, source: str, target: str, amount: int) -> None:
            self.expected[source] -= amount
            self.expected[target] += amount

        def latest_time(self) -> int:
            return int(w3.eth.get_block("latest")["timestamp"])

        def attempt(self, step: str, action: Any, error: str | None) -> Any:
            """Run a transaction; it must revert with ``error``, or succeed if that is None."""
            return attempt(log, step, action, error)

        def get(self, route: str, header: str, use: int, status: int) -> httpx.Response:
            return get(self.paywall, route, header, use, status)

        def header(self, channel: Channel, route: str, amount: int) -> str:
            return payment_header(self.paywall, channel.config, channel.key, route, amount)

        def due(self, channel: Channel, price: int, streamed: bool = False) -> int:
            """The voucher the next request must carry: the charged total (or what is
            claimed, if more) plus the price, or one above the best ceiling if that is not
            above it (the paywall takes no voucher twice); a stream's is the charged total
            plus one increment."""
            due = max(channel.charged, channel.claimed) + price
            return max(due, channel.ceiling + 1) if channel.held and not streamed else due

        def refusal(
            self, channel: Channel, voucher: int, price: int, streamed: bool = False
        ) -> str | None:
            """The paywall's verdict on a validly signed voucher for ``channel``, or None."""
            if channel.deposited == 0:
                return Reason.UNKNOWN_CHANNEL
            if not channel.held and channel.deposited < 2 * MAXIMUM:
                return Reason.DEPOSIT_TOO_SMALL
            previous = max(channel.charged, channel.claimed)
            if voucher != self.due(channel, price, streamed):
                return Reason.STALE_VOUCHER if voucher <= previous else Reason.CUMULATIVE_MISMATCH
            if channel.finished:
                return Reason.CHANNEL_CLOSING
            if channel.closes_at and channel.closes_at - self.latest_time() <= MARGIN:
                return Reason.CHANNEL_CLOSING  # the borderline second is settled below
            if voucher > channel.deposited:
                return Reason.INSUFFICIENT_DEPOSIT
            return None

        def serve(
            self, channel: Channel, route: str, header: str, voucher: int, use: int, status: int
        ) -> None:
            """Send one request and check its outcome against the model, then apply it."""
            price = ROUTES[route]
            expected = self.refusal(channel, voucher, price)
            borderline = channel.closes_at and channel.closes_at - self.latest_time() == MARGIN
            response = self.get(route, header, use, status)
            if expected == Reason.CHANNEL_CLOSING and borderline and response.status_code < 400:
                expected = None  # the payee's clock had not reached the margin's last second
            if expected is not None:
                assert response.status_code == 402, (expected, response.text)
                assert refusal_reason(response) == expected
                assert "payment-response" not in response.headers
                return
            assert response.status_code == status, response.text
            if not 200 <= status < 300:  # nothing charged, nothing stored
                assert "payment-response" not in response.headers
                return
            charge = use if route == "metered" else ROUTES[route]
            receipt = Receipt.decode(response.headers["payment-response"])
            self.charged(channel, receipt, voucher, charge)
            channel.headers.append((route, header, voucher))

        def charged(self, channel: Channel, receipt: Receipt, voucher: int, charge: int) -> None:
            """Check one receipt for ``charge`` under ``voucher`` against the model, then
            apply it: the one place a charge enters the model (a ``stream`` rule calls it
            per receipt, with the units delivered as the charge)."""
            assert receipt.channel_id == channel.config.channel_id
            assert receipt.amount == charge
            assert receipt.ceiling_amount == voucher
            assert receipt.cumulative_amount == max(channel.charged, channel.claimed) + charge
            assert receipt.refunded == channel.refunded
            assert receipt.signed is not None and receipt.signed.amount == charge
            channel.charged = receipt.cumulative_amount
            channel.ever_charged += charge
            channel.ceiling = max(channel.ceiling, voucher)
            channel.receipts.append(receipt)

        # -- channels ----------------------------------------------------------------------

        @initialize(target=channel_refs, payer=payer_ids, deposit=st.sampled_from([3, 20]))
        def first(self, payer: int, deposit: int) -> Channel:
            """Every example starts with a funded channel (its first request can pay)."""
            return self.open(payer, deposit * MAXIMUM)

        @rule(
            target=channel_refs,
            payer=payer_ids,
            deposit=st.sampled_from([MAXIMUM, 2 * MAXIMUM, 3 * MAXIMUM + 7, 20 * MAXIMUM]),
        )
        def open(self, payer: int, deposit: int) -> Channel:
            key = payers[payer]
            config = ChannelConfig(
                payer=key.address,
                payee=site.address,
                token=token.address,
                authorizer=key.address,
                withdraw_delay=DELAY,
                salt=next(_salts).to_bytes(32, "big"),
            )
            channel = self.touch(Channel(config, key))
            self.attempt("open", lambda: channels.deposit(config, deposit, key), None)
            self.move(key.address, channels.address, deposit)
            channel.deposited = channel.ever_deposited = deposit
            self.channels.append(channel)
            return channel

        @rule(channel=channel_refs, amount=st.sampled_from([1, MAXIMUM, 4 * MAXIMUM]))
        def top_up(self, channel: Channel, amount: int) -> None:
            self.touch(channel)
            error = "PaymentChannels_ChannelFinished" if channel.finished else None
            receipt = self.attempt(
                "top up", lambda: channels.deposit(channel.config, amount, channel.key), error
            )
            if receipt is not None:
                self.move(channel.config.payer, channels.address, amount)
                channel.deposited += amount
                channel.ever_deposited += amount

        # -- charges -----------------------------------------------------------------------

        @rule(
            channel=channel_refs,
            requests=st.lists(
                st.tuples(
                    st.booleans(),
                    st.one_of(
                        st.sampled_from([0, 1, MAXIMUM - 1, MAXIMUM]), st.integers(0, MAXIMUM)
                    ),
                    st.sampled_from([200, 200, 200, 200, 201, 204, 302, 404, 500]),
                ),
                min_size=1,
                max_size=6,
            ),
        )
        def request(self, channel: Channel, requests: list[tuple[bool, int, int]]) -> None:
            """An honest client pays a few requests, each for the charged total (or what is
            claimed, if more) plus the route's price; the handler charges ``use`` (metered)
            and answers ``status``. (A ``stream`` rule goes beside this one: open a streamed
            route with the same voucher, deliver k units, cut at any point, and apply what
            its receipts say through ``charged``, so every invariant covers it.)"""
            self.touch(channel)
            for metered, use, status in requests:
                route = "metered" if metered else "fixed"
                voucher = self.due(channel, ROUTES[route])
                log.step(f"request {route}")
                header = self.header(channel, route, voucher)
                self.serve(channel, route, header, voucher, use, status)

        @rule(
            channel=channel_refs,
            units=st.sampled_from([0, 1, INCREMENT - 1, INCREMENT, INCREMENT + 1, 3 * INCREMENT]),
        )
        def stream(self, channel: Channel, units: int) -> None:
            """A streamed answer of ``units`` events at UNIT each, paid one increment at a
            time: the voucher is the charged total (or what is claimed) plus one increment.
            The client sends no next voucher, so a longer stream pauses after the increment
            and ends unpaid; either way the book charges the events delivered, no more."""
            self.touch(channel)
            voucher = self.due(channel, ROUTES["stream"], streamed=True)
            log.step("stream")
            header = self.header(channel, "stream", voucher)
            expected = self.refusal(channel, voucher, ROUTES["stream"], streamed=True)
            response = self.get("stream", header, units, 200)
            if expected is not None:
                assert response.status_code == 402, (expected, response.text)
                assert refusal_reason(response) == expected
                return
            assert response.status_code == 200, response.text
            delivered = min(units, INCREMENT)
            assert response.text.count("data: unit ") == delivered
            started = Receipt.decode(response.headers["payment-response"])
            self.charged(channel, started, voucher, 0)  # the stream starts charging nothing
            self.charged(channel, stream_receipt(response), voucher, delivered * UNIT)
            log.step("stream charged")

        # Hypothesis picks among rules evenly: two more names for this one make charges,
        # what the machine is about, a fifth of the steps.
        request_more = request
        request_again = request

        @precondition(lambda self: any(c.headers for c in self.channels))
        @rule(
            data=st.data(), into=channel_refs, route=st.sampled_from(["fixed", "metered"]),
            relabel=st.booleans(),
        )  # fmt: skip
        def replay(self, data: Any, into: Channel, route: str, relabel: bool) -> None:
            """Someone who saw a served PAYMENT-SIGNATURE sends it again: to any route, as it
            was, or with its voucher re-labelled as ``into``'s channel. Only the one replay
            the protocol allows (the voucher is again exactly the charged total plus the
            price, after a zero charge or a refund) may pass, and it charges as a request."""
            source = data.draw(st.sampled_from([c for c in self.channels if c.headers]))
            sent_route, header, amount = data.draw(st.sampled_from(source.headers))
            self.touch(source)
            self.touch(into)
            log.step("replay")
            if relabel and into is not source:
                payload = PaymentPayload.decode(header)
                forged = Voucher(into.config.channel_id, amount, payload.voucher.signature)
                price = ROUTES[route]
                header = PaymentPayload(
                    network, price, token.address, site.address, into.config, forged
                ).encode()
                response = self.get(route, header, 0, 200)
                if into.deposited == 0:
                    expected = Reason.UNKNOWN_CHANNEL
                elif not into.held and into.deposited < 2 * MAXIMUM:
                    expected = Reason.DEPOSIT_TOO_SMALL
                else:
                    expected = Reason.INVALID_SIGNATURE
                assert response.status_code == 402
                assert refusal_reason(response) == expected
                return
            if route != sent_route:
                response = self.get(route, header, 0, 200)
                assert response.status_code == 402  # the payload's price is the other route's
                assert refusal_reason(response) == Reason.PRICE_MISMATCH
                return
            self.serve(source, route, header, amount, 0, 200)

        # -- refunds -----------------------------------------------------------------------

        @rule(
            channel=channel_refs,
            kind=st.sampled_from(["part", "all", "above", "zero", "negative", "float", "bool"]),
            through_paywall=st.booleans(),
        )
        def refund(self, channel: Channel, kind: str, through_paywall: bool) -> None:
            """The payee refunds off chain: within what is refundable (the charged total less
            what is claimed), above it, or not a positive int: the named error, no change."""
            self.touch(channel)
            refundable = channel.charged - channel.claimed
            amount: Any = {
                "part": max(refundable // 3, 1),
                "all": refundable,
                "above": refundable + 1,
                "zero": 0,
                "negative": -1,
                "float": 1.0,
                "bool": True,
            }[kind]
            if kind in ("zero", "negative", "float", "bool") or amount <= 0:
                error: str | None = "invalid_amount"
            elif not channel.held:
                error = "unknown_channel"
            elif amount > refundable:
                error = "exceeds_refundable"
            else:
                error = None
            log.step("refund")
            try:
                if through_paywall:
                    done = asyncio.run(self.paywall.refund(channel.config.channel_id, amount, kind))
                else:
                    done = self.payee.refund(channel.config.channel_id, amount, kind)
            except RefundError as err:
                assert err.reason == error, (err.reason, error)
                return
            assert error is None, f"refund {amount!r}: expected {error}"
            channel.charged -= amount
            channel.refunded += amount
            assert (done.amount, done.charged, done.refunded) == (
                amount,
                channel.charged,
                channel.refunded,
            )

        refund_again = refund

        @rule(channel=channel_refs, part=st.sampled_from([1, 2, 100]))
        def refund_on_chain(self, channel: Channel, part: int) -> None:
            """The payee returns unspent deposit (1/part of it, or one more than there is)."""
            self.touch(channel)
            unspent = channel.deposited - max(channel.charged, channel.claimed)
            amount = unspent // part if part != 100 else unspent + 1
            log.step("refund on chain")
            if amount <= 0:
                error = "invalid_amount"
            elif not channel.held:
                error = "unknown_channel"
            elif amount > unspent:
                error = "exceeds_unspent"
            elif channel.finished:
                with pytest.raises(ContractRevertError) as reverted:
                    self.payee.refund_on_chain(channel.config.channel_id, amount)
                assert reverted.value.error_name == "PaymentChannels_ChannelFinished"
                return
            else:
                self.payee.refund_on_chain(channel.config.channel_id, amount)
                self.move(channels.address, channel.config.payer, amount)
                channel.deposited -= amount
                channel.refunded_on_chain += amount
                return
            with pytest.raises(RefundError) as refused:
                self.payee.refund_on_chain(channel.config.channel_id, amount)
            assert refused.value.reason == error

        # -- settlement --------------------------------------------------------------------

        def claimable(self, channel: Channel) -> int:
            """What a claim pays now: the charged total over what is claimed."""
            if channel.finished or not channel.held:
                return 0
            return max(min(channel.charged, channel.deposited) - channel.claimed, 0)

        def claimed_now(self, channel: Channel) -> None:
            paid = self.claimable(channel)
            self.move(channels.address, site.address, paid)
            channel.claimed += paid

        @rule(channel=channel_refs, batch=st.booleans())
        def claim(self, channel: Channel, batch: bool) -> None:
            """The payee claims one channel: with ``claim`` (the contract says why nothing is
            claimable), or as a batch of one (``claim_all``, the watchtower's path: nothing
            is sent when nothing is claimable)."""
            self.touch(channel)
            log.step("claim")
            if batch:
                receipt = self.payee.claim_all([channel.config.channel_id] if channel.held else [])
                assert (receipt is None) == (self.claimable(channel) == 0)
                self.claimed_now(channel)
                return
            if not channel.held:
                with pytest.raises(UnknownChannelError):
                    self.payee.claim(channel.config.channel_id)
                return
            if channel.deposited == 0:  # refunded whole on chain before any charge
                error: str | None = "PaymentChannels_ChannelNotFound"
            elif channel.finished:
                error = "PaymentChannels_ChannelFinished"
            elif self.claimable(channel) == 0:
                error = "PaymentChannels_NothingToClaim"
            else:
                error = None
            if self.attempt("claim", lambda: self.payee.claim(channel.config.channel_id), error):
                self.claimed_now(channel)

        @precondition(lambda self: len(self.channels) >= 2)
        @rule(data=st.data())
        def claim_many(self, data: Any) -> None:
            """claim_all over some channels: those with nothing claimable are left out."""
            chosen = data.draw(
                st.lists(st.sampled_from(self.channels), min_size=1, max_size=4, unique_by=id)
            )
            for channel in chosen:
                self.touch(channel)
            log.step("claim many")
            ids = [c.config.channel_id for c in chosen if c.held]
            receipt = self.payee.claim_all(ids)
            paying = [c for c in chosen if self.claimable(c) > 0]
            assert (receipt is None) == (not paying)
            for channel in paying:
                self.claimed_now(channel)

        @rule(channel=channel_refs)
        def close(self, channel: Channel) -> None:
            """The payee closes: claims the charged total, the rest goes back to the payer."""
            self.touch(channel)
            log.step("close")
            if not channel.held:
                with pytest.raises(UnknownChannelError):
                    self.payee.close(channel.config.channel_id)
                return
            if channel.deposited == 0:
                error: str | None = "PaymentChannels_ChannelNotFound"
            elif channel.finished:
                error = "PaymentChannels_ChannelFinished"
            else:
                error = None
            if self.attempt("close", lambda: self.payee.close(channel.config.channel_id), error):
                self.claimed_now(channel)
                self.finish(channel)

        def finish(self, channel: Channel) -> None:
            returned = channel.deposited - channel.claimed
            self.move(channels.address, channel.config.payer, returned)
            channel.finished, channel.returned, channel.closes_at = True, returned, 0

        @rule(channel=channel_refs, finish=st.booleans())
        def withdraw(self, channel: Channel, finish: bool) -> None:
            """The payer asks to withdraw, or finishes withdrawing (anyone may send it)."""
            self.touch(channel)
            if finish:
                self.finish_withdraw(channel)
                return
            if channel.deposited == 0:
                error: str | None = "PaymentChannels_ChannelNotFound"
            elif channel.finished:
                error = "PaymentChannels_ChannelFinished"
            elif channel.closes_at:
                error = "PaymentChannels_WithdrawAlreadyRequested"
            else:
                error = None
            receipt = self.attempt(
                "request withdraw",
                lambda: channels.request_withdraw(channel.config, channel.key),
                error,
            )
            if receipt is not None:
                block = w3.eth.get_block(receipt["blockNumber"])
                channel.closes_at = int(block["timestamp"]) + DELAY

        def finish_withdraw(self, channel: Channel) -> None:
            log.step("finish withdraw")
            try:
                receipt = channels.finish_withdraw(channel.config, channel.key)
            except ContractRevertError as err:
                if channel.deposited == 0:
                    assert err.error_name == "PaymentChannels_ChannelNotFound", err
                elif channel.finished:
                    assert err.error_name == "PaymentChannels_ChannelFinished", err
                elif not channel.closes_at:
                    assert err.error_name == "PaymentChannels_WithdrawNotRequested", err
                else:  # readiness is the block's time: check the contract's view of it
                    assert err.error_name == "PaymentChannels_WithdrawNotReady", err
                    assert err.arguments["timestamp"] < channel.closes_at
                return
            block = w3.eth.get_block(receipt["blockNumber"])
            assert channel.closes_at and int(block["timestamp"]) >= channel.closes_at
            assert not channel.finished
            self.finish(channel)

        @rule(seconds=st.sampled_from([1, 60, MARGIN, DELAY - MARGIN, DELAY, 86_400]))
        def advance_time(self, seconds: int) -> None:
            log.step("advance time")
            ape.chain.mine(deltatime=seconds)

        # -- invariants --------------------------------------------------------------------

        @invariant()
        def exact_to_the_wei(self) -> None:
            """After every step, what it touched (every tenth check: everything) against the
            chain and the book, and every token balance."""
            self.checks += 1
            every = self.checks % 10 == 0
            items = self.channels if every else self.touched
            for channel in {id(c): c for c in items}.values():
                self.check_chain(channel)
                self.check_book(channel)
                self.check_client_view(channel)
            for owner, amount in self.expected.items():
                assert token.balance_of(owner) == amount, f"token balance of {owner}"
            self.touched.clear()

        def check_chain(self, channel: Channel) -> None:
            state = channels.state(channel.config)
            model = (channel.deposited, channel.claimed, channel.closes_at, channel.finished)
            assert (state.deposited, state.claimed, state.closes_at, state.finished) == model
            out = state.claimed + channel.refunded_on_chain + channel.returned
            assert out <= channel.ever_deposited, "refunded + settled above the deposits"
            assert state.deposited + channel.refunded_on_chain == channel.ever_deposited
            if state.finished:
                assert out == channel.ever_deposited, "a finished channel stranded money"
            last = self.seen.get(channel.config.channel_id, 0)
            assert state.claimed >= last, "a settled total went down"
            self.seen[channel.config.channel_id] = state.claimed

        def check_book(self, channel: Channel) -> None:
            cid = channel.config.channel_id
            held = self.book.held(cid)
            if not channel.held:
                assert held is None
                assert channel.claimed == 0  # nothing settles without a voucher
                return
            assert held is not None
            assert (held.ceiling, held.charged, held.refunded) == (
                channel.ceiling,
                channel.charged,
                channel.refunded,
            )
            assert channel.claimed <= held.ceiling, "settled above the best ceiling"
            assert held.charged <= held.ceiling, "charged above the best ceiling"
            assert held.charged >= channel.claimed, "claimed more than was charged"
            assert held.charged + held.refunded == channel.ever_charged
            charges = [c for c in self.book.charges() if c.channel_id == cid]
            assert sum(c.amount for c in charges) == channel.ever_charged
            assert sum(r.amount for r in self.book.refunds(cid)) == held.refunded

        def check_client_view(self, channel: Channel) -> None:
            """What a client holding only its receipts knows agrees with the book, as the
            HttpPayer checks it: each receipt's charged total is the one before plus its
            charge less the refunds in between, never above its ceiling; the charges add up
            to everything ever charged, and the last total less the refunds since is the
            book's charged total."""
            total = refunded = 0
            for receipt in channel.receipts:
                assert receipt.cumulative_amount <= receipt.ceiling_amount
                assert receipt.refunded >= refunded, "a receipt's refunded total fell"
                grew = receipt.refunded - refunded
                assert receipt.cumulative_amount == total + receipt.amount - grew
                total, refunded = receipt.cumulative_amount, receipt.refunded
            assert total - (channel.refunded - refunded) == channel.charged
            charged = sum(r.amount for r in channel.receipts)
            assert charged == channel.ever_charged == channel.charged + channel.refunded

    return Machine
