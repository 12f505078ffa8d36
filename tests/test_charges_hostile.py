"""The hostile corpus for charged totals: what a hostile handler, client or race may try on a
metered site, and the named error or the 4xx with its reason each one gets, with no money
moving and nothing written.

The site is the real paywall (its ASGI app, in process), the real payee, a fresh SQLite
ledger and the real contract on the suite's chain, paid in an ERC-20 (see
tests/charges_helpers.py); it runs on every network of the suite.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from charges_helpers import (
    DELAY,
    MAXIMUM,
    PRICE,
    get,
    metered_paywall,
    payment_header,
    refusal_reason,
)
from eth_account import Account
from eth_utils import keccak

from micropay._x402 import PaymentPayload, Reason, Receipt
from micropay.errors import ChargeError, RefundError, StaleVoucherError
from micropay.ledger import Ledger
from micropay.paywall import Payment, PaymentRefusal, Paywall
from micropay.tokens import TokenClient
from micropay.vouchers import ChannelConfig, Voucher

DEPOSIT = 10 * MAXIMUM


@dataclass
class HostileSite:
    paywall: Paywall
    ledger: Ledger
    token: TokenClient
    payer: Any
    holders: list[str]

    def open(self, salt: int, deposit: int = DEPOSIT) -> ChannelConfig:
        config = ChannelConfig(
            self.payer.address,
            self.paywall.payee.account.address,
            self.token.address,
            self.payer.address,
            DELAY,
            keccak(text=f"hostile charges {salt}"),
        )
        self.paywall.payee.client.deposit(config, deposit, self.payer)
        return config

    def header(self, config: ChannelConfig, route: str, amount: int) -> str:
        return payment_header(self.paywall, config, self.payer, route, amount)

    def balances(self) -> dict[str, int]:
        return {owner: self.token.balance_of(owner) for owner in self.holders}

    def snapshot(self, *configs: ChannelConfig) -> tuple[Any, ...]:
        """Everything money depends on: the book's holdings, charges and refunds, the chain's
        channel states and every balance."""
        client = self.paywall.payee.client
        return (
            [self.ledger.held(c.channel_id) for c in configs],
            len(self.ledger.charges()),
            self.ledger.refunds(),
            [client.state(c) for c in configs],
            self.balances(),
        )


@pytest.fixture
def hostile_site(w3, keys, channels, tmp_path):  # type: ignore[no-untyped-def]
    deployer, site, payer = keys[0], keys[7], keys[8]
    token = TokenClient.deploy(w3, deployer, "Hostile USD", "hUSD", 6)
    token.mint(payer.address, 10**15, deployer)
    token.approve(channels.address, 2**256 - 1, payer)
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'hostile.db'}", channels.domain)
    paywall = metered_paywall(channels, site, ledger, token.address)
    holders = [payer.address, site.address, channels.address]
    yield HostileSite(paywall, ledger, token, payer, holders)
    ledger.close()


def paid(site: HostileSite, config: ChannelConfig, route: str, amount: int, use: int) -> Receipt:
    response = get(site.paywall, route, site.header(config, route, amount), use)
    assert response.status_code == 200, response.text
    return Receipt.decode(response.headers["payment-response"])


@pytest.mark.parametrize("charge", [MAXIMUM + 1, -1, 1.5, 2.0, True, False, "5", None, 2**256])
def test_a_handler_charge_that_is_not_an_int_from_0_to_n_is_refused(charge):  # type: ignore[no-untyped-def]
    """In the handler (``Payment.charge``) and on a fixed route: ChargeError, and the charge
    stays what it was (0 if never set)."""
    metered = Payment("0x" + "11" * 20, MAXIMUM, b"\x01" * 32, MAXIMUM, metered=True)
    metered.charge(7)
    with pytest.raises(ChargeError):
        metered.charge(charge)
    assert metered.charged == 7
    fixed = Payment("0x" + "11" * 20, PRICE, b"\x01" * 32, PRICE)
    with pytest.raises(ChargeError):
        fixed.charge(0)
    assert fixed.charged == PRICE


@pytest.mark.parametrize("charge", [MAXIMUM + 1, -1, 1.5, True, "5"])
def test_record_refuses_a_charge_above_n_or_not_an_int_and_writes_nothing(hostile_site, charge):  # type: ignore[no-untyped-def]
    """A host calling the paywall's record step itself with a hostile charge: ChargeError
    before anything is signed or written; the same check then records an honest charge."""
    site = hostile_site
    config = site.open(1)
    payload = PaymentPayload.decode(site.header(config, "metered", MAXIMUM))
    check = asyncio.run(site.paywall.check_channel_payment(payload, MAXIMUM))
    before = site.snapshot(config)
    with pytest.raises(ChargeError):
        asyncio.run(site.paywall.record_channel_payment(check, "GET /metered", charge=charge))
    assert site.snapshot(config) == before
    receipt = asyncio.run(site.paywall.record_channel_payment(check, "GET /metered", charge=3))
    assert (receipt.amount, receipt.cumulative_amount, receipt.ceiling) == (3, 3, MAXIMUM)


def test_vouchers_below_at_or_past_the_charged_total_are_refused(hostile_site):  # type: ignore[no-untyped-def]
    """After a metered charge: a voucher whose ceiling is below the charged total (stale), one
    not exactly the charged total plus N (skipped ahead or short), and a replay of the
    voucher just served: 402 with the reason, nothing written."""
    site = hostile_site
    config = site.open(2)
    assert paid(site, config, "metered", MAXIMUM, 4_000).cumulative_amount == 4_000
    before = site.snapshot(config)
    cases = [
        ("metered", 3_999, Reason.STALE_VOUCHER),  # ceiling below the charged total
        ("metered", 4_000, Reason.STALE_VOUCHER),  # at the charged total: nothing authorised
        ("metered", MAXIMUM, Reason.CUMULATIVE_MISMATCH),  # the voucher just served, again
        ("metered", 4_000 + MAXIMUM + 1, Reason.CUMULATIVE_MISMATCH),  # above total + N
        ("metered", 4_000 + MAXIMUM - 1, Reason.CUMULATIVE_MISMATCH),  # below total + N
        ("fixed", 4_000 + MAXIMUM, Reason.CUMULATIVE_MISMATCH),  # N's voucher on a fixed route
        ("metered", DEPOSIT + 1, Reason.INVALID_SIGNATURE),  # over the deposit, signed wrong:
    ]
    for route, amount, reason in cases[:-1]:
        response = get(site.paywall, route, site.header(config, route, amount), use=1)
        assert (response.status_code, refusal_reason(response)) == (402, reason), (route, amount)
        assert site.snapshot(config) == before
    # Someone else's key over the deposit: refused before the chain is read again for it.
    stranger = Account.from_key(keccak(text="a stranger"))
    route, amount, reason = cases[-1]
    header = payment_header(site.paywall, config, stranger, route, amount)
    response = get(site.paywall, route, header)
    assert (response.status_code, refusal_reason(response)) == (402, reason)
    assert site.snapshot(config) == before


def test_a_served_voucher_never_pays_again_after_a_zero_charge_or_a_refund(hostile_site):  # type: ignore[no-untyped-def]
    """After a zero metered charge (the charged total did not move) or a refund (it went
    down), the charged total plus N is at or below the best voucher: whoever saw a voucher
    served before must not be served with it. The next voucher is one above the best
    ceiling; every served one is refused (402, nothing written)."""
    site = hostile_site
    config = site.open(5)
    paid(site, config, "metered", MAXIMUM, 0)  # charged 0: total + N is MAXIMUM again
    paid(site, config, "metered", MAXIMUM + 1, 3_000)  # so one above: charged 3,000
    paid(site, config, "metered", 3_000 + MAXIMUM, 0)  # charged 3,000 still
    site.paywall.payee.refund(config.channel_id, 3_000, "a wrong answer")  # charged 0
    before = site.snapshot(config)
    # Charged total + N is MAXIMUM: the first voucher served. Every served one is refused.
    for served in (MAXIMUM, MAXIMUM + 1, 3_000 + MAXIMUM):
        response = get(site.paywall, "metered", site.header(config, "metered", served), use=1)
        assert response.status_code == 402, served
        assert refusal_reason(response) in (Reason.STALE_VOUCHER, Reason.CUMULATIVE_MISMATCH)
        assert site.snapshot(config) == before
    receipt = paid(site, config, "metered", 3_000 + MAXIMUM + 1, 10)  # one above the best
    assert (receipt.amount, receipt.cumulative_amount, receipt.refunded) == (10, 10, 3_000)


def test_a_voucher_replayed_into_another_channel_or_route_is_refused(hostile_site):  # type: ignore[no-untyped-def]
    """A served voucher re-labelled as another channel of the same payer (its signature is
    over the first channel), or sent to the other route (its payload's price is the first
    route's): 402 with the reason and nothing written."""
    site = hostile_site
    first, second = site.open(3), site.open(4)
    paid(site, first, "metered", MAXIMUM, 0)  # a zero charge: the same voucher is next again
    paid(site, second, "fixed", PRICE, 0)
    served = PaymentPayload.decode(site.header(first, "metered", MAXIMUM))
    before = site.snapshot(first, second)
    relabelled = PaymentPayload(
        served.network,
        served.price,
        served.asset,
        served.pay_to,
        second,
        Voucher(second.channel_id, PRICE + MAXIMUM, served.voucher.signature),
    )
    response = get(site.paywall, "metered", relabelled.encode())
    assert (response.status_code, refusal_reason(response)) == (402, Reason.INVALID_SIGNATURE)
    response = get(site.paywall, "fixed", served.encode())
    assert (response.status_code, refusal_reason(response)) == (402, Reason.PRICE_MISMATCH)
    assert site.snapshot(first, second) == before


@pytest.mark.parametrize("amount", [0, -1, 1.5, True, "3", None])
def test_a_refund_that_is_not_a_positive_int_is_refused(hostile_site, amount):  # type: ignore[no-untyped-def]
    site = hostile_site
    config = site.open(5)
    paid(site, config, "metered", MAXIMUM, 2_000)
    before = site.snapshot(config)
    with pytest.raises(RefundError) as err:
        site.paywall.payee.refund(config.channel_id, amount, "hostile")
    assert err.value.reason == "invalid_amount"
    with pytest.raises(RefundError) as err:
        site.paywall.payee.refund_on_chain(config.channel_id, amount)
    assert err.value.reason == "invalid_amount"
    assert site.snapshot(config) == before


def test_refunds_above_the_charged_total_or_below_the_claims_are_refused(hostile_site):  # type: ignore[no-untyped-def]
    site = hostile_site
    payee = site.paywall.payee
    config = site.open(6)
    paid(site, config, "metered", MAXIMUM, 2_000)
    before = site.snapshot(config)
    for amount in (2_001, 10**30):
        with pytest.raises(RefundError) as err:
            payee.refund(config.channel_id, amount, "more than charged")
        assert err.value.reason == "exceeds_refundable"
    with pytest.raises(RefundError) as err:
        payee.refund(config.channel_id, 1, 5)  # type: ignore[arg-type]
    assert err.value.reason == "invalid_reason"
    with pytest.raises(RefundError) as err:  # on chain: only deposit nobody was charged for
        payee.refund_on_chain(config.channel_id, DEPOSIT - 2_000 + 1)
    assert err.value.reason == "exceeds_unspent"
    assert site.snapshot(config) == before
    payee.claim(config.channel_id)
    with pytest.raises(RefundError) as err:  # everything charged is settled
        payee.refund(config.channel_id, 1, "after the claim")
    assert err.value.reason == "exceeds_refundable"
    assert site.ledger.held(config.channel_id).charged == 2_000


def test_a_refund_racing_a_charge_wins_and_the_charge_is_refused(hostile_site):  # type: ignore[no-untyped-def]
    """The charge's write is a compare-and-swap over the charged total its check read: a refund
    in between makes it stale (402 with the channel's view), the refund stands, no receipt
    is signed for the stale charge, and a voucher over the refunded total then pays."""
    site = hostile_site
    config = site.open(7)
    paid(site, config, "metered", MAXIMUM, 3_000)
    payload = PaymentPayload.decode(site.header(config, "metered", 3_000 + MAXIMUM))
    check = asyncio.run(site.paywall.check_channel_payment(payload, MAXIMUM))
    refund = asyncio.run(site.paywall.refund(config.channel_id, 1_000, "raced"))
    assert (refund.charged, refund.refunded) == (2_000, 1_000)
    before = site.snapshot(config)
    with pytest.raises(PaymentRefusal) as refused:
        asyncio.run(site.paywall.record_channel_payment(check, "GET /metered", charge=500))
    assert (refused.value.status, refused.value.reason) == (402, Reason.STALE_VOUCHER)
    view = refused.value.view
    assert view is not None and (view.charged_total, view.refunded) == (2_000, 1_000)
    assert site.snapshot(config) == before
    receipt = paid(site, config, "metered", 2_000 + MAXIMUM, 500)
    assert (receipt.cumulative_amount, receipt.refunded) == (2_500, 1_000)


def test_claim_all_settles_a_channel_whose_deposit_a_refund_took_below_its_best_ceiling(
    hostile_site,
):  # type: ignore[no-untyped-def]
    """An on-chain refund may leave the deposit below the best voucher's ceiling (the ceiling
    is charged total + N; only the charged total must stay covered). claim_all must still
    settle the charged total, as claim and close do: it once left such a channel out."""
    site = hostile_site
    payee = site.paywall.payee
    config = site.open(8)
    paid(site, config, "metered", MAXIMUM, 100)
    payee.refund_on_chain(config.channel_id, DEPOSIT - 100)  # every unspent wei back
    state = payee.client.state(config)
    assert state.deposited == 100 < site.ledger.held(config.channel_id).ceiling
    balances = site.balances()
    assert payee.claim_all([config.channel_id]) is not None
    assert payee.client.state(config).claimed == 100
    after = site.balances()
    assert after[payee.account.address] - balances[payee.account.address] == 100


def test_the_book_refuses_a_charged_total_above_the_voucher_or_over_a_stale_read(hostile_site):  # type: ignore[no-untyped-def]
    """The book's charge write itself (what the paywall's record step calls): a charged total
    above the voucher's ceiling is a ValueError, one over a charged total the book no longer
    holds is stale; neither writes anything."""
    site = hostile_site
    config = site.open(9)
    paid(site, config, "metered", MAXIMUM, 1_000)
    voucher = PaymentPayload.decode(site.header(config, "metered", 1_000 + MAXIMUM)).voucher
    before = site.snapshot(config)
    with pytest.raises(ValueError, match="from 0 to the voucher's"):
        site.ledger.accept_if_higher(config, voucher, over=1_000, charged=1_001 + MAXIMUM)
    with pytest.raises(StaleVoucherError):
        site.ledger.accept_if_higher(config, voucher, over=999, charged=1_500)
    assert site.snapshot(config) == before
