"""HTTP clients that pay a 402 by themselves: an httpx transport (sync and async).

::

    payer = HttpPayer(w3, account, PaymentPolicy(max_price=10_000, max_spend_per_site=10**6),
                      store="~/.micropay/http.json")
    with httpx.Client(transport=PaymentTransport(payer)) as client:
        client.get("https://news.example/articles/42")       # pays, retries, checks the receipt

On a 402 whose ``PAYMENT-REQUIRED`` offers the ``channel`` scheme, the client picks the
first offer its :class:`PaymentPolicy` allows, opens a channel to that site's payee on
first contact (deposit sized by :class:`DepositPolicy`), signs a voucher for the channel's
acknowledged total plus the price, retries the request with ``PAYMENT-SIGNATURE`` and
checks the ``PAYMENT-RESPONSE`` receipt. Requests on one channel go one at a time.

An ``exact`` offer (x402's EVM scheme, :mod:`micropay.exact`) is paid with one EIP-3009
authorization per request: exactly the price to ``payTo`` under the offer's token domain,
sent in ``PAYMENT-SIGNATURE``, the ``PAYMENT-RESPONSE`` checked to be this payer's
settlement. When a 402 offers both, :meth:`PaymentPolicy.prefers_channel` decides (the
rule is in docs/protocol.md). Both schemes go through one exchange (:meth:`HttpPayer.exchange`)
and one set of caps.

Consumer protection: the price per request, the spend per site and per period, the
networks, assets and contracts, the deposit and the withdraw delay are all capped by the
policy, and every cap is checked before anything is signed or deposited
(:class:`~micropay.errors.PaymentPolicyError`). Unless the policy names trusted
contracts, a contract is used only if its code is the PaymentChannels micropay ships.

Losing state does not mean paying twice. Channel keys are derived from the payer's key
(:func:`derive_session_key`), so a client whose store is gone finds its channels on chain
again; a site that holds a different total answers with its view of the channel, which
the client accepts only if it is backed by the client's own signature (or equals what was
claimed on chain), then pays exactly one price on top.

A lying site cannot turn one request into several prices. A view may move the client's
base only to a total that predates the request: at most what the client had signed on
the channel before (its store saves that before each voucher leaves), or a total this
process never signed (a voucher from before the store was lost or restored). The voucher
the client has just sent, echoed back as "stale", is neither: the client stops with
:class:`~micropay.errors.HostileSiteError`, having signed one price above the site's
acknowledged total. See ``micropay.requests_adapter`` for the requests library.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Generic, NoReturn, TypeVar
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3

from micropay._artifacts import runtime_code_matches
from micropay._eip3009 import AuthorizationToken, authorize
from micropay._x402 import (
    PAYMENT_ACCESS,
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    PAYMENT_STREAM,
    AccessRequest,
    ChannelView,
    Offer,
    OfferJSON,
    PaymentPayload,
    PaymentRequired,
    Reason,
    Receipt,
)
from micropay.channels import ChannelClient
from micropay.credit import PAYMENT_CREDIT, peek
from micropay.errors import (
    ChargeReceiptError,
    DepositLimitError,
    HostileSiteError,
    InvalidSignatureError,
    OfferNotAllowedError,
    PaymentHeaderError,
    PaymentPolicyError,
    PaymentProtocolError,
    PaymentRefusedError,
    PriceLimitError,
    SettlementReceiptError,
    SpendingLimitError,
)
from micropay.exact import SCHEME as EXACT
from micropay.exact import SETTLE_MARGIN, ExactOffer, ExactPayload, ExactReceipt
from micropay.payer import Payer
from micropay.receipt_log import KeptReceipt
from micropay.receipts import receipt_problem, sign_access
from micropay.streaming import STATUS_EXTENSION, VOUCHER_ONLY, PaidStream
from micropay.vouchers import ChannelConfig, Voucher, VoucherVerifier
from micropay.wallet import (
    ChannelStatus,
    Wallet,
    WalletChannel,
    channel_salt,
    derive_session_key,
    slots,
)

__all__ = [
    "AsyncPaymentTransport",
    "DepositPolicy",
    "HttpPayer",
    "PaymentPolicy",
    "PaymentTransport",
    "derive_session_key",
]

_R = TypeVar("_R")
_O = TypeVar("_O", Offer, ExactOffer)
_log = logging.getLogger("micropay.http_client")
_BUSY_PAUSE = 0.05


# -- policy ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DepositPolicy:
    """How much to lock in a channel when it is opened, or topped up once it runs dry.

    Enough for ``requests`` requests at the offered price, at least ``minimum`` and the
    site's own minimum deposit, and never above the caps: ``max_requests`` prices (None:
    no such cap) and ``maximum`` base units (None: no such cap). A site whose minimum
    deposit is above a cap is refused with :class:`~micropay.errors.DepositLimitError`
    before anything is signed or sent.

    The proportional cap is on by default because the site names both the price and the
    minimum deposit: without it, a site asking 0.00001 ETH per article could make a reader
    lock 50 ETH for the withdraw delay, all of it within reach of the channel's session
    key. 1000 prices is ten times the default deposit, room for a site that needs a larger
    deposit to make its claims worth their gas, and as the price is capped by
    ``PaymentPolicy.max_price`` it bounds every deposit absolutely too: at most
    ``1000 * max_price`` base units of the asset (0.01 ETH for ``max_price=10**13`` wei),
    in whatever token the policy allows, without the client knowing its decimals.
    """

    requests: int = 100
    minimum: int = 0
    maximum: int | None = None
    max_requests: int | None = 1000

    def cap(self, offer: Offer) -> int | None:
        """The most this policy locks in a channel for the offer (None: no cap)."""
        caps = [] if self.maximum is None else [self.maximum]
        if self.max_requests is not None:
            caps.append(self.max_requests * offer.price)
        return min(caps) if caps else None

    def amount(self, offer: Offer) -> int:
        wanted = max(offer.price * self.requests, self.minimum, offer.min_deposit, offer.price)
        cap = self.cap(offer)
        if cap is None:
            return wanted
        needed = max(offer.min_deposit, offer.price)
        if needed > cap:
            raise DepositLimitError(
                f"the site needs a deposit of {needed}, above the cap of {cap} "
                f"(DepositPolicy maximum={self.maximum}, max_requests={self.max_requests} "
                f"at a price of {offer.price})"
            )
        return min(wanted, cap)


@dataclass(frozen=True)
class PaymentPolicy:
    """The limits a paying client never crosses; amounts in the asset's base units.

    ``networks``/``assets``/``trusted_contracts``: None allows any (contracts are then
    checked to be micropay's PaymentChannels by their code). ``period`` is the length in
    seconds of the rolling window ``max_spend_per_period`` applies to, over all sites.
    ``withdraw_delay`` is what the client asks for (raised to a site's minimum, up to
    ``max_withdraw_delay``): how long its unspent deposit can stay locked after it asks
    for it back.

    ``expected_requests`` and ``channel_open_cost`` choose between ``channel`` and
    ``exact`` when a site offers both (:meth:`prefers_channel`): how many requests the
    client expects to pay a site from now on, and what opening a channel costs it beyond
    the prices, in the asset's base units (the gas of its deposit and of taking the rest
    back, valued in the asset by the caller: micropay has no price oracle).
    """

    max_price: int
    max_spend_per_site: int | None = None
    max_spend_per_period: int | None = None
    period: float = 86_400.0
    networks: frozenset[str] | None = None
    assets: frozenset[str] | None = None
    trusted_contracts: frozenset[str] | None = None
    withdraw_delay: int = 86_400
    max_withdraw_delay: int = 7 * 86_400
    deposit: DepositPolicy = field(default_factory=DepositPolicy)
    expected_requests: int = 100
    channel_open_cost: int = 0
    prepay: int = 0
    """Buy prepaid credit where a site sells it (``extra.prepay``): one voucher pays for up
    to this many requests (0, the default: one voucher per request). What it prepays counts
    whole against ``max_price`` and the spending caps when it is signed; a stolen credit
    token spends at most that (see docs/protocol.md, "Prepaid credit")."""

    def __post_init__(self) -> None:
        # A policy that cannot mean what it says is refused when it is made, not when the
        # first 402 arrives: a negative cap would refuse everything, a zero expected count
        # would divide the channel-or-exact rule by nothing.
        for name, least in (
            ("max_price", 0),
            ("expected_requests", 1),
            ("channel_open_cost", 0),
            ("prepay", 0),
        ):
            value = getattr(self, name)
            if type(value) is not int or value < least:
                raise PaymentPolicyError(
                    f"PaymentPolicy.{name} must be an integer >= {least}, not {value!r}"
                )
        for name in ("max_spend_per_site", "max_spend_per_period"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 0):
                raise PaymentPolicyError(
                    f"PaymentPolicy.{name} must be None or an integer >= 0, not {value!r}"
                )
        if not self.period > 0:
            raise PaymentPolicyError(f"PaymentPolicy.period must be positive, not {self.period!r}")
        for name in ("assets", "trusted_contracts"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, frozenset(to_checksum_address(a) for a in value))
        if self.networks is not None:
            object.__setattr__(self, "networks", frozenset(self.networks))

    def allows(self, offer: Offer) -> str | None:
        """Why the offer is not allowed (None if it is); prices are checked separately."""
        why = self.allows_terms(offer)
        if why is not None:
            return why
        if self.trusted_contracts is not None and offer.contract not in self.trusted_contracts:
            return f"contract {offer.contract} is not trusted"
        if offer.min_withdraw_delay > self.max_withdraw_delay:
            return (
                f"a withdraw delay of {offer.min_withdraw_delay} s is above the "
                f"{self.max_withdraw_delay} s allowed"
            )
        return None

    def allows_terms(self, offer: Offer | ExactOffer) -> str | None:
        """Why an offer's network or asset is not allowed (None if both are): all an
        ``exact`` offer is checked for, beside its price."""
        if self.networks is not None and offer.network not in self.networks:
            return f"network {offer.network} is not allowed"
        if self.assets is not None and offer.asset not in self.assets:
            return f"asset {offer.asset} is not allowed"
        return None

    def prefers_channel(self, channel_price: int, exact_price: int, *, channel_open: bool) -> bool:
        """Whether a channel is the cheaper way to pay ``expected_requests`` requests, from
        the payer's side: ``n * channel_price + open`` against ``n * exact_price``, where
        ``open`` is ``channel_open_cost`` unless a channel to the site is already open (then
        it is spent). Ties go to the channel. The settlement gas of either scheme is the
        site's, and the deposit a channel locks comes back, so neither counts."""
        n = self.expected_requests
        opening = 0 if channel_open else self.channel_open_cost
        return n * channel_price + opening <= n * exact_price


# -- the paying agent ------------------------------------------------------------------------


class Verdict(Enum):
    """What a response to a paid retry means for the driver loop."""

    PAID = "paid"  # 2xx with a valid receipt
    NOT_CHARGED = "not_charged"  # the handler did not succeed; nothing was charged
    RETRY = "retry"  # the site corrected us (resync, top-up, new channel): sign again
    BUSY = "busy"  # another request on the channel is being served: wait, send again
    REFUSED = "refused"  # a 402 the client cannot fix: hand it to the caller


@dataclass
class _Channel:
    """An open channel in memory: its :class:`Payer` (which signs, within the deposit, and
    keeps the acknowledged and highest signed totals), its place in the store, and the lock
    that serialises its requests.

    ``signed_here`` holds the totals this process signed above the acknowledged total: a
    site that shows one of them as spent, above what a request started from, is showing
    a voucher of that same request (or of one running beside it), not an earlier payment.
    """

    key: str  # the offer's (see _offer_key)
    stored: WalletChannel  # what the wallet holds of it, as last saved
    payer: Payer
    lock: threading.Lock = field(default_factory=threading.Lock)
    retired: bool = False
    signed_here: set[int] = field(default_factory=set)
    claimable: bool = True  # False once the chain shows it finished or absent
    suspended: str | None = None
    """Why the channel is not used (a receipt failed its check) until a view resyncs it."""
    ceiling: int = 0
    """The best voucher the site is known to hold (a prepaid ceiling may be above the
    acknowledged charged total): a site selling credit takes vouchers above it only."""
    credit: Pending | None = None
    """Prepaid credit to spend (its header is the token; its voucher the prepaid one)."""

    @property
    def config(self) -> ChannelConfig:
        return self.payer.config

    @property
    def record(self) -> WalletChannel:
        """What the wallet should hold of it now."""
        return self.stored.with_payer(self.payer)


# channel id -> (the channel, the highest total the client had signed on it when this request
# first signed there): what one pay() call may build on (see HttpPayer._resync), and where it
# has already put a price the site could claim (see HttpPayer._one_channel_per_request).
Floors = dict[bytes, tuple[_Channel, int]]


@dataclass(frozen=True)
class Pending:
    """A voucher sent and not yet answered."""

    site: str
    offer: Offer
    channel: _Channel
    voucher: Voucher
    header: str
    floor: int  # the channel's highest signed total before this request signed on it
    resource: str | None = None  # "METHOD /path" of the request, for its receipt
    base: int = 0  # the charged total the voucher builds on (the acknowledged total)
    unseen: int = 0
    """Prepaid credit above ``base`` the site may have charged meanwhile, unseen here (the
    token is a bearer's: a copy of it, or an answer lost): the receipt may count it."""
    reserved: int = 0  # what it holds against the spending caps until it is answered


@dataclass(frozen=True)
class ExactPending:
    """An ``exact`` authorization signed for one request and not yet settled; its price
    is reserved against the caps until the site answers (see HttpPayer.sign_exact)."""

    site: str
    offer: ExactOffer
    payload: ExactPayload
    header: str
    resource: str | None = None  # "METHOD /path" of the request

    @property
    def nonce(self) -> bytes:
        return self.payload.authorization.nonce

    def resendable(self, now: float) -> bool:
        """Whether a site would still settle it if sent now (it refuses an authorization
        that expires within its settling margin)."""
        return now + 2 * SETTLE_MARGIN < self.payload.authorization.valid_before

    def expired(self, now: float) -> bool:
        """Whether no block can take it any more: the token's answer is then final."""
        return now > self.payload.authorization.valid_before + SETTLE_MARGIN


class HttpPayer:
    """Pays 402s for HTTP clients: policy, channels, vouchers, receipts. Thread-safe.

    One instance can serve any number of transports, sync or async (not both at once for
    the same site). ``w3`` is the chain it pays on; offers on other chains are refused.
    """

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        policy: PaymentPolicy,
        *,
        store: Wallet | Path | str | None = None,
        max_rounds: int = 4,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.policy = policy
        self.store = store if isinstance(store, Wallet) else Wallet(store)
        self.max_rounds = max_rounds
        self._chain_id = w3.eth.chain_id
        self._lock = threading.Lock()
        self._opening: dict[str, threading.Lock] = {}
        self._channels: dict[str, _Channel] = {}
        self._clients: dict[str, ChannelClient] = {}
        self._trusted: dict[str, bool] = {}
        self._reserved: dict[str, int] = {}  # site -> amount signed but not yet answered
        # channel id -> the stream its last paid request began, until the transport takes it
        self._streams: dict[bytes, PaidStream] = {}
        # exact authorizations sent whose answer was lost, by nonce: resent, not re-signed
        self._unanswered: dict[bytes, ExactPending] = {}
        self._credits: dict[str, _Channel] = {}  # site -> the channel with prepaid credit

    # -- choosing and opening (may block on the chain) -----------------------------------------

    def choose(self, required: PaymentRequired) -> Offer:
        """The first ``channel`` offer the policy allows, or the reason none is."""
        offers = required.channel_offers
        if not offers:
            raise PaymentProtocolError("the 402 offers no 'channel' payment")
        offer, reasons = _first_allowed(offers, self._refusal)
        if offer is None:
            self._refuse(offers, reasons)
        return offer

    def choose_payment(self, required: PaymentRequired) -> Offer | ExactOffer:
        """The offer to pay, ``channel`` or ``exact``: the first of each scheme that the
        policy allows; of two, the channel if :meth:`PaymentPolicy.prefers_channel` finds
        it cheaper for the expected requests (offers in two different assets do not
        compare: then the scheme the site lists first); else the reason none is allowed."""
        channels, exacts = required.channel_offers, _exact_offers(required)
        if not channels and not exacts:
            raise PaymentProtocolError("the 402 offers no 'channel' or 'exact' payment")
        channel, reasons = _first_allowed(channels, self._refusal)
        exact, exact_reasons = _first_allowed(exacts, self._exact_refusal)
        if channel is not None and exact is not None:
            if channel.asset != exact.asset:
                return channel if isinstance(required.offers[0], Offer) else exact
            open_ = self._has_channel(channel)
            cheaper = self.policy.prefers_channel(channel.price, exact.price, channel_open=open_)
            return channel if cheaper else exact
        if channel is not None:
            return channel
        if exact is not None:
            return exact
        self._refuse([*channels, *exacts], [*reasons, *exact_reasons])

    def _refuse(self, offers: Sequence[Offer | ExactOffer], reasons: list[str]) -> NoReturn:
        prices = [o.price for o in offers if o.price > self.policy.max_price]
        if len(prices) == len(reasons):
            raise PriceLimitError(
                f"the price {min(prices)} is above the maximum of {self.policy.max_price} per "
                "request"
            )
        raise OfferNotAllowedError("; ".join(reasons))

    def _price_refusal(self, price: int) -> str | None:
        """What is wrong with an offer's price in either scheme: 0 (nothing to build a
        voucher of, or to divide credit into) or above the policy's ``max_price``."""
        if price <= 0:
            return "a price of 0 (a site charges something, or asks for no payment)"
        if price > self.policy.max_price:
            return f"price {price} above {self.policy.max_price}"
        return None

    def _exact_refusal(self, offer: ExactOffer) -> str | None:
        why = self._price_refusal(offer.price)
        if why is not None:
            return why
        if offer.chain_id != self._chain_id:
            return f"no node for {offer.network} (this client pays on eip155:{self._chain_id})"
        return self.policy.allows_terms(offer)

    def _has_channel(self, offer: Offer) -> bool:
        """Whether this client holds a live channel for the offer (its opening is spent)."""
        channel = self._channels.get(_offer_key(offer))
        if channel is not None and not channel.retired:
            return True
        return self._stored_for(offer) is not None

    def _refusal(self, offer: Offer) -> str | None:
        why = self._price_refusal(offer.price)
        if why is not None:
            return why
        if offer.domain.chain_id != self._chain_id:
            return f"no node for {offer.network} (this client pays on eip155:{self._chain_id})"
        why = self.policy.allows(offer)
        if why is not None:
            return why
        if self.policy.trusted_contracts is None and not self._is_payment_channels(offer.contract):
            return f"{offer.contract} is not micropay's PaymentChannels contract"
        return None

    def _is_payment_channels(self, address: str) -> bool:
        with self._lock:
            known = self._trusted.get(address)
        if known is None:
            code = bytes(self.w3.eth.get_code(to_checksum_address(address)))
            known = runtime_code_matches(ChannelClient.ARTIFACT, code)
            with self._lock:
                self._trusted[address] = known
        return known

    def channel_for(self, offer: Offer) -> _Channel:
        """This client's channel for the offer: in memory, in the store, on chain, or new."""
        key = _offer_key(offer)
        channel = self._channels.get(key)
        if channel is not None and not channel.retired:
            return channel
        with self._lock:
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:  # one thread opens; the others wait and use its channel
            channel = self._channels.get(key)
            if channel is not None and not channel.retired:
                return channel
            record = self._stored_for(offer)
            if record is None:
                channel = self._find_or_open(key, offer)
            else:
                channel = _Channel(key, record, record.payer(self._client(offer), self.account))
            self._channels[key] = channel
            return channel

    def _stored_for(self, offer: Offer) -> WalletChannel | None:
        """The wallet's live channel for the offer: one this client would open for it (its
        session key derived for the offer, the offer's withdraw delay), not retired."""
        for record in self.store.channels():
            live = record.retired is None and record.chain_id == self._chain_id
            if (
                live
                and record.index is not None
                and record.config == self._config(offer, record.index)
            ):
                return record
        return None

    def _client(self, offer: Offer) -> ChannelClient:
        return self._client_at(offer.contract)

    def _client_at(self, contract: str) -> ChannelClient:
        client = self._clients.get(contract)
        if client is None:
            client = ChannelClient(self.w3, contract)
            self._clients[contract] = client
        return client

    def _session_key(self, offer: Offer, index: int) -> LocalAccount:
        return derive_session_key(
            self.account, self._chain_id, offer.contract, offer.pay_to, offer.asset, index
        )

    def _config(self, offer: Offer, index: int) -> ChannelConfig:
        return ChannelConfig(
            payer=self.account.address,
            payee=offer.pay_to,
            token=offer.asset,
            authorizer=self._session_key(offer, index).address,
            withdraw_delay=self._withdraw_delay(offer),
            salt=channel_salt(index),
        )

    def _withdraw_delay(self, offer: Offer) -> int:
        return max(self.policy.withdraw_delay, offer.min_withdraw_delay)

    def _find_or_open(self, key: str, offer: Offer) -> _Channel:
        """With no record: the channel left on chain by an earlier run, else a new one."""
        client = self._client(offer)
        first_free = 0
        for index, config, state in slots(client, lambda i: self._config(offer, i)):
            first_free = index  # the last slot is the first never used
            if state.exists and not state.finished and not state.withdraw_requested:
                # Found again: the site will correct the total from its own records.
                found = Payer(
                    client,
                    self.account,
                    config,
                    self._session_key(offer, index),
                    acknowledged=state.claimed,
                    deposited=state.deposited,
                )
                return self._saved(_Channel(key, WalletChannel.of(found, index), found))
        deposit = self.policy.deposit.amount(offer)
        payer = Payer.open(
            client,
            self.account,
            offer.pay_to,
            deposit,
            token=offer.asset,
            withdraw_delay=self._withdraw_delay(offer),
            session_key=self._session_key(offer, first_free),
            salt=channel_salt(first_free),
        )
        # A new channel: nothing was refunded on it yet.
        opened = WalletChannel.of(payer, first_free, refunded=0)
        return self._saved(_Channel(key, opened, payer))

    def _retire(self, channel: _Channel, why: str) -> None:
        """Pay no more on a channel; the wallet keeps it for its withdraw."""
        channel.retired = True
        channel.stored = replace(channel.stored, retired=why)
        self.store.retire(channel.config.channel_id, why)

    def _saved(self, channel: _Channel) -> _Channel:
        channel.stored = channel.record
        self.store.put(channel.stored)
        return channel

    def ensure_funded(self, channel: _Channel, offer: Offer) -> None:
        """Top the channel up if the next payment would exceed its deposit (call under the
        channel's lock)."""
        payer = channel.payer
        _, total = self._next_total(offer, channel)
        if total <= payer.deposited:
            return
        amount = self.policy.deposit.amount(offer)
        payer.top_up(max(amount, total - payer.deposited))
        self._set(channel, deposited=payer.deposited)

    def _next_total(self, offer: Offer, channel: _Channel) -> tuple[int, int]:
        """What the next voucher builds on and its total: the acknowledged total plus the
        price, or where the site sells prepaid credit, its best ceiling plus as many prices
        as the policy prepays (within ``max_price`` and, where possible, the deposit)."""
        payer, price = channel.payer, offer.price
        if not offer.prepay:
            # One above the best voucher the site holds if the price would not rise above it
            # (a metered charge below its maximum, a refund): the site takes no voucher twice.
            if offer.stream is not None:  # a stream delivers on its whole voucher
                return payer.acknowledged, payer.acknowledged + price
            return payer.acknowledged, max(payer.acknowledged + price, channel.ceiling + 1)
        top = max(payer.acknowledged, channel.ceiling)
        left = top - payer.acknowledged  # credit the client lost track of: it carries over
        count = min(offer.prepay, self.policy.prepay, (self.policy.max_price - left) // price)
        if top + price <= payer.deposited:
            count = min(count, (payer.deposited - top) // price)
        return top, top + max(count, 1) * price

    # -- signing (fast; under the channel's lock) ------------------------------------------------

    def sign(
        self,
        site: str,
        offer: Offer,
        channel: _Channel,
        floors: Floors,
        resource: str | None = None,
        resource_url: str = "",
        owed: int = 0,
    ) -> Pending:
        """Check the spending caps, then sign the voucher for one more request.

        ``owed``: what the channel's acknowledged total rose by in memory since it was last
        saved (a stream's delivered units), counted against the site in the same write as
        the new highest total, so a stream's increment costs one wallet write, not two.

        ``resource`` ("METHOD /path") binds the receipt; ``resource_url`` is the 402's absolute
        URL, echoed in the payload as x402 clients do. ``floors`` belongs to the request (one
        per pay() call): the first voucher it signs
        on a channel fixes what later views in the same request may move the base to. The
        new highest total is saved before the voucher is returned to be sent, so a later
        request (or run) knows the site may hold it."""
        if channel.suspended is not None:
            raise PaymentProtocolError(
                f"{site}: the channel is not used until it is resynchronised: {channel.suspended}"
            )
        payer = channel.payer
        top, total = self._next_total(offer, channel)
        # A metered offer's maximum, or what a prepaid voucher authorises: counted whole.
        # (Without credit, a voucher one above the site's best authorises nothing the site
        # could not settle already: the request is charged at most its price.)
        exposure = total - payer.acknowledged if offer.prepay else offer.price
        if exposure > self.policy.max_price:
            raise PriceLimitError(
                f"{site}: the next voucher would authorise {exposure} (credit the site still "
                f"holds, plus one price), above the maximum of {self.policy.max_price}"
            )
        self._reserve(site, exposure, time.time(), owed)
        _, floor = floors.setdefault(payer.config.channel_id, (channel, payer.highest_signed))
        try:
            raised = total > payer.highest_signed
            voucher = payer.voucher_for(total)  # within the deposit, or PaymentRefusedError
            if owed:
                self._record(channel, site, owed)
            elif raised:  # saved before it is sent: a later run knows the site may hold it
                self._saved(channel)
        except BaseException:
            self._release(site, exposure)
            raise
        channel.signed_here.add(total)
        payload = PaymentPayload(
            offer.network,
            offer.price,
            offer.asset,
            offer.pay_to,
            payer.config,
            voucher,
            offer,
            resource_url,
        )
        return Pending(
            site,
            offer,
            channel,
            voucher,
            payload.encode(),
            floor,
            resource,
            base=payer.acknowledged,
            # Where credit is sold, the site may have charged unseen up to its best ceiling,
            # or up to a voucher signed before this request whose answer was lost (the site
            # may hold it): that is counted as spent when the receipt shows it.
            unseen=max(top, floor) - payer.acknowledged if offer.prepay else 0,
            reserved=exposure,
        )

    def _reserve(self, site: str, price: int, now: float, owed: int = 0) -> None:
        """Check the site's and the period's caps with ``price`` more, counting what was
        signed and is not yet answered (and ``owed``, spent but not yet saved), and hold
        ``price`` until :meth:`_release`."""
        with self._lock:
            in_flight = sum(self._reserved.values()) + owed
            site_total = self.store.site_spend(site) + self._reserved.get(site, 0) + owed + price
            cap = self.policy.max_spend_per_site
            if cap is not None and site_total > cap:
                raise SpendingLimitError(
                    f"paying {price} would take {site} to {site_total}, above its cap of {cap}"
                )
            cap = self.policy.max_spend_per_period
            if cap is not None:
                period_total = self.store.spend_since(now - self.policy.period) + in_flight + price
                if period_total > cap:
                    raise SpendingLimitError(
                        f"paying {price} would spend {period_total} within "
                        f"{self.policy.period:g} s, above the cap of {cap}"
                    )
            self._reserved[site] = self._reserved.get(site, 0) + price

    def _release(self, site: str, price: int) -> None:
        with self._lock:
            self._reserved[site] -= price

    def _one_channel_per_request(self, site: str, offer: Offer, floors: Floors) -> None:
        """Refuse to pay ``offer`` on a second channel within one request (before one is
        opened for it) while the site may still claim the voucher this request signed on the
        first: a site that answers "unknown channel", "closing" or a new payee after each
        voucher would otherwise be paid once per round. A new request may pay there."""
        current = self._channels.get(_offer_key(offer))
        for other, _ in floors.values():
            if (other is current and not other.retired) or not other.claimable:
                continue
            total = other.payer.highest_signed
            raise HostileSiteError(
                site,
                total,
                f"{site} was sent a voucher for a total of {total} on channel "
                f"0x{other.config.channel_id.hex()} in this request and asks to be paid "
                "on another channel; it can still claim that voucher, so this request pays "
                "nothing more (retry the request to pay on the new channel)",
            )

    # -- concluding ------------------------------------------------------------------------------

    def conclude(self, pending: Pending, status: int, headers: Mapping[str, str]) -> Verdict:
        """Read the site's answer to a voucher and update the channel (under its lock)."""
        try:
            return self._conclude(pending, status, headers)
        finally:
            self._release(pending.site, pending.reserved)

    def _conclude(self, pending: Pending, status: int, headers: Mapping[str, str]) -> Verdict:
        channel = pending.channel
        if 200 <= status < 300:
            try:
                receipt, unseen = self._check_receipt(pending, headers.get(PAYMENT_RESPONSE))
            except PaymentProtocolError as err:
                # The site may hold the voucher whole: count it so, and stop using the
                # channel until a view resyncs it (at most one maximum beyond what was seen).
                self._advance(
                    pending,
                    pending.voucher.cumulative_amount,
                    pending.voucher.signature,
                    spent=pending.offer.price,
                )
                channel.suspended = str(err)
                raise
            charged, ceiling = receipt.cumulative_amount, pending.voucher.cumulative_amount
            channel.stored = replace(channel.stored, refunded=receipt.refunded)
            # Build the next voucher on the charged total; the signature stands for it only
            # when the charge took the whole voucher.
            self._advance(
                pending,
                charged,
                pending.voucher.signature if charged == ceiling else None,
                spent=receipt.amount + unseen,
            )
            channel.ceiling = max(channel.ceiling, receipt.ceiling_amount)
            if pending.reserved:  # a voucher's signed receipt (a credit's statement is not)
                self._keep(pending, receipt)
                self._take_credit(pending, receipt, headers.get(PAYMENT_CREDIT))
            if pending.offer.stream is not None:
                with self._lock:
                    stream = PaidStream(pending, pending.offer.stream, charged)
                    self._streams[channel.config.channel_id] = stream
            return Verdict.PAID
        if status == 409:
            return Verdict.BUSY
        if status not in (400, 402) or PAYMENT_REQUIRED not in headers:
            return Verdict.NOT_CHARGED
        try:
            required = PaymentRequired.decode(headers[PAYMENT_REQUIRED])
        except PaymentHeaderError as err:
            raise PaymentProtocolError(f"the site's 402 is malformed: {err}") from None
        reason = required.error
        if reason in (Reason.STALE_VOUCHER, Reason.CUMULATIVE_MISMATCH) and required.channel:
            self._resync(pending, required.channel)
            return Verdict.RETRY
        if reason == Reason.INSUFFICIENT_DEPOSIT:
            state = self._client(pending.offer).state(channel.config)
            if state.deposited >= pending.voucher.cumulative_amount:
                return Verdict.REFUSED  # the chain covers it: the site is wrong, not us
            self._set(channel, deposited=state.deposited)  # next round tops up
            return Verdict.RETRY
        if reason in (Reason.CHANNEL_CLOSING, Reason.UNKNOWN_CHANNEL):
            state = self._client(pending.offer).state(channel.config)
            if state.exists and not state.finished and not state.withdraw_requested:
                return Verdict.REFUSED  # the chain shows it open: the site is wrong, not us
            channel.claimable = state.exists and not state.finished
            self._retire(channel, reason)
            return Verdict.RETRY
        if reason == Reason.PRICE_MISMATCH:
            return Verdict.RETRY  # the price changed; the next round reads the new offer
        return Verdict.REFUSED

    def _advance(
        self, pending: Pending, cumulative: int, signature: bytes | None, spent: int
    ) -> None:
        _acknowledge(pending.channel, cumulative, signature)
        self._record(pending.channel, pending.site, spent)

    def _record(self, channel: _Channel, site: str, spent: int) -> None:
        """Save the channel's position and what it cost ``site``, in one wallet write."""
        now = time.time()
        channel.stored = self.store.record(
            channel.record, site, spent, now, now - self.policy.period
        )

    def _set(self, channel: _Channel, *, deposited: int) -> None:
        """Record a deposit the chain showed (after a top-up, or on a site's complaint)."""
        channel.payer.deposited = deposited
        self._saved(channel)

    def _check_receipt(self, pending: Pending, value: str | None) -> tuple[Receipt, int]:
        """The site's receipt, checked against the voucher it answers: the same channel and
        ceiling (the voucher), a charge of the price (a fixed offer) or from 0 to it (a
        metered one), and a charged total that is what the client saw before plus the charge,
        less exactly the refunds the receipt reports beyond those seen (never above the
        ceiling), plus at most the prepaid credit it may have charged unseen
        (:attr:`Pending.unseen`), which is returned with the receipt. Raises
        :class:`ChargeReceiptError` (or :class:`PaymentProtocolError` for a missing or
        malformed receipt)."""
        if value is None:
            raise PaymentProtocolError("the site served a paid request without a receipt")
        try:
            receipt = Receipt.decode(value)
        except PaymentHeaderError as err:
            raise PaymentProtocolError(f"the site's receipt is malformed: {err}") from None
        site, offer, voucher = pending.site, pending.offer, pending.voucher
        wrong = "the receipt does not match the voucher"
        base = pending.base  # the charged total the voucher (or the credit) builds on
        if receipt.channel_id != pending.channel.config.channel_id:
            raise ChargeReceiptError(site, f"{wrong}: it is for another channel")
        if receipt.ceiling_amount != voucher.cumulative_amount:
            raise ChargeReceiptError(
                site,
                f"{wrong}: its ceiling {receipt.ceiling_amount} is not the voucher's "
                f"{voucher.cumulative_amount}",
            )
        if receipt.cumulative_amount > voucher.cumulative_amount:
            raise ChargeReceiptError(
                site,
                f"{wrong}: its charged total {receipt.cumulative_amount} is above the "
                f"{voucher.cumulative_amount} the client signed",
            )
        fixed = not offer.metered
        if (fixed and receipt.amount != offer.price) or not 0 <= receipt.amount <= offer.price:
            raise ChargeReceiptError(
                site,
                f"{wrong}: it charges {receipt.amount} for an offer of "
                f"{'' if fixed else 'up to '}{offer.price}",
            )
        seen = pending.channel.stored.refunded
        if seen is not None and receipt.refunded < seen:
            raise ChargeReceiptError(
                site, f"{wrong}: its refunded total {receipt.refunded} fell from {seen}"
            )
        # With the refunds seen unknown (a new process), any refund only lowers the total.
        refunds = receipt.refunded - seen if seen is not None else None
        expected = base + receipt.amount
        unseen = 0 if refunds is None else receipt.cumulative_amount - (expected - refunds)
        if (refunds is not None and not 0 <= unseen <= pending.unseen) or (
            refunds is None and receipt.cumulative_amount > expected + pending.unseen
        ):
            raise ChargeReceiptError(
                site,
                f"{wrong}: its charged total {receipt.cumulative_amount} is not the "
                f"{base} seen before plus the charge of {receipt.amount}"
                + ("" if not refunds else f" less the refunds of {refunds}")
                + ("" if not pending.unseen else f" (and up to {pending.unseen} of credit)"),
            )
        return receipt, unseen

    def _take_credit(self, pending: Pending, receipt: Receipt, token: str | None) -> None:
        """Keep the prepaid credit a paid voucher left, if the policy buys credit and the
        token is for this channel, this voucher and this price (a token the site did not
        issue just fails at the site, which then asks for a voucher)."""
        channel = pending.channel
        channel.credit = None
        if token is None or not self.policy.prepay or not pending.offer.prepay:
            return
        try:
            said = peek(token)
        except PaymentHeaderError:
            return
        voucher = pending.voucher
        if (said.channel_id, said.ceiling, said.price) != (
            channel.config.channel_id,
            voucher.cumulative_amount,
            pending.offer.price,
        ) or receipt.cumulative_amount + said.price > said.ceiling:
            return
        channel.credit = replace(pending, header=token, reserved=0)
        with self._lock:
            self._credits[pending.site] = channel

    def holds_credit(self, site: str) -> bool:
        """Whether this client holds prepaid credit for ``site`` (its transport then sends
        the request with it first)."""
        channel = self._credits.get(site)
        return channel is not None and channel.credit is not None

    def spend_credit(
        self, site: str, answer: Callable[[_R], tuple[int, Mapping[str, str]]], resource: str
    ) -> Generator[_Step, Any, _R | None]:
        """Send a request with the site's prepaid credit, if this client holds some (a
        generator of steps, as :meth:`exchange`): the answer's statement is checked as a
        receipt (this channel and prepaid ceiling, one price, the charged total one price
        up) and counted. Returns the response, or None if no credit was sent. A 402 drops the
        credit, whatever its reason (spent, superseded, a deposit that no longer covers it,
        a channel closing, a reason this client does not know yet): the caller pays the 402
        as usual, and the credit left carries over into that voucher."""
        channel = self._credits.get(site)
        if channel is None:
            return None
        yield _Hold(channel)
        try:
            credit = channel.credit
            if credit is None or channel.retired or channel.suspended is not None:
                return None
            base = channel.payer.acknowledged
            unseen = max(0, credit.voucher.cumulative_amount - credit.offer.price - base)
            credit = replace(credit, base=base, unseen=unseen, resource=resource)
            response = yield _Send(PAYMENT_CREDIT, credit.header)
            status, headers = answer(response)
            if 200 <= status < 300 and PAYMENT_RESPONSE in headers:
                self.conclude(credit, status, headers)  # counted; checked like a receipt
                if (
                    channel.payer.acknowledged + credit.offer.price
                    > credit.voucher.cumulative_amount
                ):
                    channel.credit = None  # spent: the next request pays a voucher
            elif status == 402:  # refused (spent, superseded, unfunded, closing...): pay instead
                channel.credit = None
            return response  # type: ignore[no-any-return]
        finally:
            yield _Release(channel)

    def _keep(self, pending: Pending, receipt: Receipt) -> None:
        """Append the receipt to the wallet's receipts, flagged if its signature is not the
        channel payee's or it names another resource than the one requested: the content
        was paid for either way, and is returned (see :mod:`micropay.receipt_log`)."""
        problem = receipt_problem(
            receipt.signed, pending.channel.config.payee, pending.offer.domain
        )
        if problem is None and pending.resource is not None:
            assert receipt.signed is not None
            if receipt.signed.resource != pending.resource:
                problem = (
                    f"the receipt is for {receipt.signed.resource!r}, not {pending.resource!r}"
                )
        if problem is not None:
            _log.warning("%s: %s", pending.site, problem)
        kept = KeptReceipt(
            site=pending.site,
            resource=pending.resource or (receipt.signed.resource if receipt.signed else ""),
            recorded_at=int(time.time()),
            problem=problem,
            receipt=receipt,
        )
        self.store.receipts.append(kept)

    def _access_header(self, site: str, resource: str, required_header: str) -> str | None:
        """A ``PAYMENT-ACCESS`` for ``resource``, if the site takes access receipts and the
        wallet holds an unflagged receipt of it within the site's period, on a channel of
        this payer. It moves no money: it proves, with the channel's session key, that
        this reader is the one the receipt was given to (see :mod:`micropay.access`)."""
        try:
            access = PaymentRequired.decode(required_header).access
        except PaymentHeaderError:
            return None
        if access is None:
            return None
        kept = self.store.receipts.latest(site, resource, int(time.time()) - access.period)
        if kept is None or kept.receipt.signed is None:
            return None
        signed = kept.receipt.signed
        record = self.store.channel(signed.channel_id)
        if record is None or record.config.payer != self.account.address:
            return None
        proof = sign_access(
            signed.domain,
            record.authorizer(self.account),
            signed.receipt_id,
            access.nonce,
            resource,
        )
        return AccessRequest(signed, access.nonce, proof).encode()

    def _resync(self, pending: Pending, view: ChannelView) -> None:
        """Adopt the site's total for the channel, if it stands for requests already paid.

        The total must be backed (the client's signature is on the view's voucher, or the
        chain shows it claimed) and predate this request: at most the request's floor, or
        a total this process never signed, which can only come from before it (a lost or
        restored store). A total this process signed above the floor was signed during
        this request: adopting it would pay a second price for one unserved request.
        """
        channel, site, total = pending.channel, pending.site, view.cumulative_amount
        payer = channel.payer
        if view.charged_total < total:  # a charged total below the ceiling the view proves
            self._resync_charged(pending, view)
            return
        if view.channel_id != payer.config.channel_id:
            raise PaymentProtocolError(f"{site}'s view is of another channel")
        voucher = view.voucher
        if voucher is not None:
            try:
                VoucherVerifier(pending.offer.domain).verify(
                    voucher, bytes.fromhex(payer.config.authorizer[2:])
                )
            except InvalidSignatureError:
                raise HostileSiteError(
                    site, total, f"{site} claims a total of {total} this client never signed"
                ) from None
        else:
            claimed = self._client(pending.offer).state(payer.config).claimed
            if total != claimed:
                raise HostileSiteError(
                    site,
                    total,
                    f"{site} claims a total of {total} without a voucher; the chain says "
                    f"{claimed} was claimed",
                )
        if total > pending.floor and total in channel.signed_here:
            raise HostileSiteError(
                site,
                total,
                f"{site} claims a total of {total} as already spent, but this client signed "
                f"it during this request (it had signed {pending.floor} before); it pays "
                "nothing more on top",
            )
        # What the site holds above our record was paid before we lost track: count it.
        spent = max(0, total - payer.acknowledged)
        channel.stored = replace(channel.stored, refunded=view.refunded)
        channel.ceiling = total
        self._advance(pending, total, view.signature, spent=spent)

    def _resync_charged(self, pending: Pending, view: ChannelView) -> None:
        """Adopt a view whose charged total is below its voucher (metered charges or refunds):
        the voucher must be the client's own, and the charged total at most it (the site can
        claim no more than it charged, and the voucher bounds that). A charged total below
        what the client holds is a refund or a loss of the site's, in the client's favour."""
        channel, site = pending.channel, pending.site
        payer = channel.payer
        voucher = view.voucher
        if view.channel_id != payer.config.channel_id:
            raise PaymentProtocolError(f"{site}'s view is of another channel")
        if voucher is None:
            raise HostileSiteError(
                site, view.charged_total, f"{site} shows a charged total without a voucher"
            )
        try:
            VoucherVerifier(pending.offer.domain).verify(
                voucher, bytes.fromhex(payer.config.authorizer[2:])
            )
        except InvalidSignatureError:
            raise HostileSiteError(
                site,
                view.cumulative_amount,
                f"{site} shows a voucher for {view.cumulative_amount} this client never signed",
            ) from None
        charged = view.charged_total
        if voucher.cumulative_amount > pending.floor and voucher.cumulative_amount in (
            channel.signed_here
        ):
            # The voucher of this very request: what it adds above the floor was never served.
            charged = min(charged, max(pending.floor, payer.acknowledged))
        spent = max(0, charged - payer.acknowledged)
        channel.stored = replace(channel.stored, refunded=view.refunded)
        channel.ceiling = voucher.cumulative_amount  # the client's own: a prepaid ceiling
        channel.credit = None
        self._advance(pending, charged, None, spent=spent)
        channel.suspended = None

    # -- streamed responses (micropay.streaming) ---------------------------------------------

    def paid_stream(self, headers: Mapping[str, str]) -> PaidStream | None:
        """The stream a paid response begins (its offer priced per unit), taken once: what
        the transport meters the body with. None for any other response."""
        value = headers.get(PAYMENT_RESPONSE)
        if value is None:
            return None
        try:
            channel_id = Receipt.decode(value).channel_id
        except PaymentHeaderError:
            return None
        with self._lock:
            return self._streams.pop(channel_id, None)

    def pay_increment(self, stream: PaidStream) -> Pending | None:
        """Sign a stream's next increment, once every unit paid for has arrived: those units
        are acknowledged (the site is owed them), then the ceiling plus one increment is
        signed under the policy's caps, topping the deposit up if needed (may block on the
        chain). None when the policy refuses: ``stream.status.stopped`` says why, and the
        stream ends with what was paid for."""
        last, status = stream.pending, stream.status
        channel, offer = last.channel, last.offer
        with channel.lock:
            owed = max(0, status.ceiling - status.charged)
            if owed:
                _acknowledge(channel, status.ceiling, last.voucher.signature)
                status.paid += owed
                status.charged = status.ceiling
            try:
                self._reserve(last.site, offer.price, time.time(), owed)  # caps before a top-up
                self._release(last.site, offer.price)
                self.ensure_funded(channel, offer)
                pending = self.sign(last.site, offer, channel, {}, last.resource, owed=owed)
            except PaymentRefusedError as err:
                self._record(channel, last.site, owed)  # the units arrived: they are owed
                status.stopped = f"the policy stops paying: {err}"
                return None
            except BaseException:
                self._record(channel, last.site, owed)
                raise
        stream.sent(pending)
        return pending

    def conclude_increment(
        self, stream: PaidStream, pending: Pending, status: int, headers: Mapping[str, str]
    ) -> None:
        """Read the answer to a voucher-only request: a 200 whose receipt is for this
        channel, under the voucher just sent, charging exactly the units paid for before it
        (all delivered). Anything else stops paying the stream (``status.stopped``); a
        receipt that breaks the rules raises :class:`ChargeReceiptError`."""
        try:
            if status != 200:
                why = _reason(headers) or str(status)
                stream.status.stopped = f"the site refused the stream's next voucher: {why}"
                return
            receipt = self._stream_receipt(stream, pending, headers.get(PAYMENT_RESPONSE))
            if receipt.cumulative_amount != stream.status.charged:
                self._stream_refused(stream, receipt, "it charges other than the units paid for")
            stream.status.ceiling = pending.voucher.cumulative_amount
            self._keep(pending, receipt)
        finally:
            self._release(pending.site, pending.offer.price)

    def conclude_stream(self, stream: PaidStream) -> None:
        """The stream's body has ended: adopt its final receipt (on SSE), which must charge
        exactly the units received, or (a chunked body, which carries none) acknowledge the
        units received, at most the ceiling. So does an SSE stream this client gave up on
        (the site asked for a voucher it will not sign: it delivered all it will). Any other
        broken-off SSE stream acknowledges nothing more: the site's next 402 shows what it
        recorded."""
        last, status = stream.pending, stream.status
        ceiling = last.voucher.cumulative_amount
        with last.channel.lock:
            if stream.final is None:
                if not stream.terms.unit_bytes and not stream.given_up:
                    return
                charged = min(stream.delivered_total, ceiling)
                receipt = None
            else:
                receipt = self._stream_receipt(stream, last, stream.final.get("receipt"))
                charged = receipt.cumulative_amount
                if charged != stream.delivered_total:
                    self._stream_refused(
                        stream, receipt, f"it does not charge the {status.units} units received"
                    )
                reason = stream.final.get("reason")
                status.ended = reason if isinstance(reason, str) else None
                status.receipt = receipt
            if charged > status.charged:
                signature = last.voucher.signature if charged == ceiling else None
                self._advance(last, charged, signature, spent=charged - status.charged)
                status.paid += charged - status.charged
                status.charged = charged
            if receipt is not None:
                self._keep(last, receipt)

    def metered_body(
        self,
        stream: PaidStream,
        chunks: Iterable[bytes],
        send_voucher: Callable[[str], tuple[int, Mapping[str, str]]],
    ) -> Generator[bytes, None, bool]:
        """A paid stream's body as the caller reads it, for a blocking transport (httpx's,
        the requests adapter): ``chunks`` is the body as it arrives; the paywall's events are
        stripped, and each next increment is paid when it is due by
        ``send_voucher(header)``, which sends the voucher-only request with that
        ``PAYMENT-SIGNATURE`` and returns its status and headers. The final receipt is
        checked when the body ends.

        Returns whether the body was read to its end: not when this client gave up
        (:attr:`~micropay.streaming.PaidStream.given_up`), and the caller then closes the
        connection."""
        for chunk in chunks:
            content, due = stream.feed(chunk)
            if content:
                yield content
            pending = self.pay_increment(stream) if due else None
            if pending is not None:
                try:
                    status, headers = send_voucher(pending.header)
                except BaseException:
                    self.conclude_increment(stream, pending, 0, {})
                    raise
                self.conclude_increment(stream, pending, status, headers)
            if stream.given_up:
                self.conclude_stream(stream)
                return False
        rest = stream.end()
        if rest:
            yield rest
        self.conclude_stream(stream)
        return True

    def _stream_receipt(self, stream: PaidStream, pending: Pending, value: object) -> Receipt:
        """A stream's receipt, for its channel and under the voucher ``pending`` sent, charging
        no less than the client acknowledged and no more than that voucher."""
        if not isinstance(value, str):
            raise PaymentProtocolError("the site's stream answer carries no receipt")
        try:
            receipt = Receipt.decode(value)
        except PaymentHeaderError as err:
            raise PaymentProtocolError(f"the site's stream receipt is malformed: {err}") from None
        if receipt.channel_id != pending.channel.config.channel_id:
            self._stream_refused(stream, receipt, "it is for another channel")
        if receipt.ceiling_amount != pending.voucher.cumulative_amount:
            self._stream_refused(stream, receipt, "its ceiling is not the voucher sent")
        if not stream.status.charged <= receipt.cumulative_amount <= receipt.ceiling_amount:
            self._stream_refused(stream, receipt, "its charged total is out of bounds")
        return receipt

    def _stream_refused(self, stream: PaidStream, receipt: Receipt, why: str) -> NoReturn:
        """A stream receipt that breaks the rules: stop paying, suspend the channel, raise."""
        message = (
            f"the stream receipt does not match: {why} (charged {receipt.cumulative_amount}, "
            f"ceiling {receipt.ceiling_amount}; acknowledged {stream.status.charged} after "
            f"{stream.status.units} units)"
        )
        stream.status.stopped = message
        stream.pending.channel.suspended = message
        raise ChargeReceiptError(stream.pending.site, message)

    # -- exact: one EIP-3009 transfer per request -------------------------------------------

    def sign_exact(
        self,
        site: str,
        offer: ExactOffer,
        resource: str | None = None,
        resource_url: str = "",
    ) -> ExactPending:
        """The authorization to send for one request in ``exact`` (may read the chain).

        If a request for the same resource and offer sent one whose answer was lost and it
        is still within its window, that one is sent again: the token takes each nonce
        once and the site answers a settled one with its receipt, so a resend can never
        pay twice, where a new authorization could. Otherwise, after the spending caps, a
        new one: exactly the price to ``payTo`` under the offer's token domain, a fresh
        random nonce, valid from 0 (as x402's client signs) until ``maxTimeoutSeconds``
        from now. Its price stays reserved against the caps until the site answers."""
        now = time.time()
        self._sweep_unanswered(now)
        with self._lock:
            for nonce, held in list(self._unanswered.items()):
                same = (held.site, held.resource, held.offer) == (site, resource, offer)
                if same and held.resendable(now):
                    del self._unanswered[nonce]
                    return held
        self._reserve(site, offer.price, now)
        try:
            authorization, signature = authorize(
                offer.domain,
                self.account,
                offer.pay_to,
                offer.price,
                int(now) + offer.max_timeout_seconds,
            )
        except BaseException:
            self._release(site, offer.price)
            raise
        payload = ExactPayload(
            offer.network, offer.price, offer.asset, offer.pay_to, authorization, signature,
            offer, resource_url,
        )  # fmt: skip
        return ExactPending(site, offer, payload, payload.encode(), resource)

    def conclude_exact(
        self, pending: ExactPending, status: int, headers: Mapping[str, str]
    ) -> Verdict:
        """Read the site's answer to an ``exact`` payment (may read the chain).

        A 2xx is PAID: its price is counted once against the caps, then its PAYMENT-RESPONSE
        must show this authorization settled (else :class:`SettlementReceiptError`). A 409
        or a ``settlement_timeout`` is BUSY: the site is still settling it, the same
        authorization is sent again and its price stays reserved. Anything else is
        REFUSED: if the token shows the nonce used (the site settled and served nothing,
        or its handler failed after settling), the price is counted as spent; else it stays
        reserved until the authorization's window closes, as a lost answer's does, since a
        site that refused it still holds it and may settle it later (the next request for
        the same resource and offer sends it again rather than a second one)."""
        if 200 <= status < 300:
            self._spent(pending)
            self._check_settlement(pending, headers.get(PAYMENT_RESPONSE))
            return Verdict.PAID
        if status == 409 or _reason(headers) == Reason.SETTLEMENT_TIMEOUT:
            return Verdict.BUSY
        if self._was_settled(pending):
            _log.warning("%s settled an exact payment and answered %d", pending.site, status)
            self._spent(pending)
        else:
            self._keep_unanswered(pending)
        return Verdict.REFUSED

    def _exchange_exact(
        self,
        site: str,
        offer: ExactOffer,
        resource_url: str,
        answer: Callable[[_R], tuple[int, Mapping[str, str]]],
        resource: str | None,
    ) -> Generator[_Step, Any, _R | None]:
        """The ``exact`` part of :meth:`exchange`: send one authorization, resend that same
        one while the site is settling it, and hand any other answer back."""
        pending = yield _Blocking(self.sign_exact, (site, offer, resource, resource_url))
        for round_ in range(self.max_rounds):
            try:
                response = yield _Send(PAYMENT_SIGNATURE, pending.header)
            except BaseException:
                self._keep_unanswered(pending)  # the site may have settled it: resend later
                raise
            status, headers = answer(response)
            verdict = yield _Blocking(self.conclude_exact, (pending, status, headers))
            if verdict is not Verdict.BUSY:
                return response  # type: ignore[no-any-return]
            if round_ == self.max_rounds - 1 or not pending.resendable(time.time()):
                self._keep_unanswered(pending)
                return response  # type: ignore[no-any-return]
            yield _Discard(response)
            yield _Pause(_BUSY_PAUSE * (round_ + 1))
        return None

    def _keep_unanswered(self, pending: ExactPending) -> None:
        with self._lock:
            self._unanswered[pending.nonce] = pending

    def _sweep_unanswered(self, now: float) -> None:
        """Settle the account of unanswered authorizations whose window has closed: the
        price was spent if the token shows the nonce used, else it is released."""
        with self._lock:
            expired = [held for held in self._unanswered.values() if held.expired(now)]
            for held in expired:
                del self._unanswered[held.nonce]
        for held in expired:
            if self._was_settled(held):
                self._spent(held)
            else:
                self._release(held.site, held.offer.price)

    def _was_settled(self, pending: ExactPending) -> bool:
        """Whether the token shows the authorization's nonce used (unreadable: assume so,
        as the site may hold it)."""
        token = AuthorizationToken(self.w3, pending.offer.asset)
        try:
            return token.authorization_used(self.account.address, pending.nonce)
        except Exception as err:  # not a token this client can read: count the price
            _log.warning("cannot read %s's authorization state: %s", pending.offer.asset, err)
            return True

    def _spent(self, pending: ExactPending) -> None:
        """Count a settled ``exact`` payment once, then release its reservation."""
        now = time.time()
        self.store.spent(pending.site, pending.offer.price, now, now - self.policy.period)
        self._release(pending.site, pending.offer.price)

    def _check_settlement(self, pending: ExactPending, value: str | None) -> ExactReceipt:
        site, offer = pending.site, pending.offer
        if value is None:
            raise SettlementReceiptError(
                site, f"{site} served an exact payment without a PAYMENT-RESPONSE"
            )
        try:
            receipt = ExactReceipt.read(value, offer.price)
        except PaymentHeaderError as err:
            raise SettlementReceiptError(
                site, f"{site}'s PAYMENT-RESPONSE is not a settlement: {err}"
            ) from None
        for what, said, expected in (
            ("payer", receipt.payer, self.account.address),
            ("network", receipt.network, offer.network),
            ("amount", receipt.amount, offer.price),
        ):
            if said != expected:
                raise SettlementReceiptError(
                    site,
                    f"{site}'s PAYMENT-RESPONSE names {what} {said}, not {expected}: it is not "
                    "the settlement of this payment",
                )
        return receipt

    # -- the payer's channels ----------------------------------------------------------------

    def channels(self) -> list[ChannelStatus]:
        """Every channel of this payer key on this chain that the wallet holds, beside what
        the chain says of it (state, spent, unspent deposit, withdraw time)."""
        return self.store.statuses(self.w3, self.account.address)

    def withdraw(self, site: str) -> list[ChannelStatus]:
        """Take back what is left of the deposits of the channels that paid ``site`` (a URL
        or an origin): asks to withdraw each open one (it takes no payment from then on;
        the site may still claim what it holds until the delay ends) and finishes each whose
        delay has passed. Call it again after the delay; returns the new statuses."""
        origin = site_of(site)
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        statuses = []
        for status in self.channels():
            record = status.channel
            if origin not in record.sites or status.state in ("finished", "absent"):
                continue
            payer = record.payer(self._client_at(record.contract), self.account)
            why = "withdrawn by the payer"
            for channel in self._channels.values():
                if channel.config == record.config:
                    self._retire(channel, why)  # and a request still on it cannot revive it
            self.store.retire(record.channel_id, why)
            if not status.chain.withdraw_requested:
                payer.request_withdraw()
            elif now >= status.chain.closes_at:
                payer.finish_withdraw()
            statuses.append(ChannelStatus(record, payer.state()))
        return statuses

    # -- the 402 exchange: written once, driven by the sync and the async transports ---------

    def exchange(
        self,
        site: str,
        required_header: str,
        answer: Callable[[_R], tuple[int, Mapping[str, str]]],
        resource: str | None = None,
    ) -> Generator[_Step, Any, _R | None]:
        """Pay for one request, as a generator of the I/O it needs (as httpx writes
        ``DigestAuth.auth_flow``): it yields steps (:class:`_Blocking` chain calls, the
        channel's lock, :class:`_Send` of the paid retry, ...) and is sent each one's result;
        a step that fails is thrown back in. :meth:`pay` and :meth:`apay` perform the steps,
        one with plain calls, the other without blocking its event loop, so the protocol
        (rounds, floors, verdicts) exists once. Returns the final response (None if the site
        offered nothing payable after a refusal).

        ``resource`` (``"METHOD /path"``) names what is requested: receipts are kept under
        it, and where the site takes access receipts and the wallet holds one for it, the
        first try presents that receipt instead of paying."""
        floors: Floors = {}
        if resource is not None:
            access = self._access_header(site, resource, required_header)
            if access is not None:
                response = yield _Send(PAYMENT_ACCESS, access)
                status, headers = answer(response)
                if status != 402 or PAYMENT_REQUIRED not in headers:
                    return response  # type: ignore[no-any-return]
                yield _Discard(response)  # refused (expired, say): pay as usual
                required_header = headers[PAYMENT_REQUIRED]
        for round_ in range(self.max_rounds):
            required = _decode_required(required_header)
            # Once this request sent a voucher the site may claim, only a channel pays for
            # it: an exact transfer on top would pay twice for one request.
            offer = yield _Blocking(self.choose if floors else self.choose_payment, (required,))
            if isinstance(offer, ExactOffer):
                exact = self._exchange_exact(site, offer, required.resource, answer, resource)
                return (yield from exact)
            self._one_channel_per_request(site, offer, floors)
            channel = yield _Blocking(self.channel_for, (offer,))
            yield _Hold(channel)
            try:
                yield _Blocking(self.ensure_funded, (channel, offer))
                pending = self.sign(
                    site, offer, channel, floors, resource, resource_url=required.resource
                )
                try:
                    response = yield _Send(PAYMENT_SIGNATURE, pending.header)
                except BaseException:
                    self.conclude(pending, 0, {})  # not answered: nothing was charged
                    raise
                status, headers = answer(response)
                verdict = yield _Blocking(self.conclude, (pending, status, headers))
            finally:
                yield _Release(channel)
            if verdict in (Verdict.PAID, Verdict.NOT_CHARGED, Verdict.REFUSED):
                return response  # type: ignore[no-any-return]
            if round_ == self.max_rounds - 1:
                return response  # type: ignore[no-any-return]
            yield _Discard(response)
            if verdict is Verdict.BUSY:
                yield _Pause(_BUSY_PAUSE * (round_ + 1))
            else:
                required_header = headers.get(PAYMENT_REQUIRED, required_header)
        return None

    def pay(
        self,
        site: str,
        required_header: str,
        send: Callable[[str, str], _R],
        answer: Callable[[_R], tuple[int, Mapping[str, str]]],
        discard: Callable[[_R], None],
        resource: str | None = None,
    ) -> _R | None:
        """Drive :meth:`exchange` with plain calls: ``send(name, value)`` retries the
        request with that header added (a voucher, or an access receipt), ``discard``
        drops a response that is not the final one."""
        flow = self.exchange(site, required_header, answer, resource)
        return self.drive(flow, send, discard)

    def drive(
        self,
        flow: Generator[_Step, Any, _R | None],
        send: Callable[[str, str], _R],
        discard: Callable[[_R], None],
    ) -> _R | None:
        """Perform a flow's steps (:meth:`exchange`, :meth:`spend_credit`) with plain calls."""
        run = _Run(flow)
        while (step := run.next_step()) is not None:
            try:
                if isinstance(step, _Blocking):
                    run.result_of_step = step.call(*step.args)
                elif isinstance(step, _Send):
                    run.result_of_step = send(step.name, step.value)
                elif isinstance(step, _Hold):
                    step.channel.lock.acquire()
                elif isinstance(step, _Release):
                    step.channel.lock.release()
                elif isinstance(step, _Discard):
                    discard(step.response)
                else:
                    time.sleep(step.seconds)
            except BaseException as err:
                run.error_of_step = err
        return run.result

    async def apay(
        self,
        site: str,
        required_header: str,
        send: Callable[[str, str], Awaitable[_R]],
        answer: Callable[[_R], tuple[int, Mapping[str, str]]],
        discard: Callable[[_R], Awaitable[None]],
        locks: dict[bytes, anyio.Lock],
        resource: str | None = None,
    ) -> _R | None:
        """Drive :meth:`exchange` for async transports: chain calls run in a worker thread,
        and requests on one channel are serialised by ``locks`` (the transport's, bound to
        its event loop)."""
        flow = self.exchange(site, required_header, answer, resource)
        return await self.adrive(flow, send, discard, locks)

    async def adrive(
        self,
        flow: Generator[_Step, Any, _R | None],
        send: Callable[[str, str], Awaitable[_R]],
        discard: Callable[[_R], Awaitable[None]],
        locks: dict[bytes, anyio.Lock],
    ) -> _R | None:
        """Perform a flow's steps without blocking the event loop (see :meth:`apay`)."""
        run = _Run(flow)
        while (step := run.next_step()) is not None:
            try:
                if isinstance(step, _Blocking):
                    run.result_of_step = await anyio.to_thread.run_sync(step.call, *step.args)
                elif isinstance(step, _Send):
                    run.result_of_step = await send(step.name, step.value)
                elif isinstance(step, _Hold):
                    channel_id = step.channel.config.channel_id
                    await locks.setdefault(channel_id, anyio.Lock()).acquire()
                elif isinstance(step, _Release):
                    locks[step.channel.config.channel_id].release()
                elif isinstance(step, _Discard):
                    await discard(step.response)
                else:
                    await anyio.sleep(step.seconds)
            except BaseException as err:
                run.error_of_step = err
        return run.result

    # -- one round for hosts that send the request themselves (micropay.x402_plugin) ---------

    def prepare(self, site: str, offer: Offer, floors: Floors, resource_url: str = "") -> Pending:
        """The first half of one round of :meth:`exchange`, for a host that sends the paid
        request itself and hands the answer to :meth:`conclude` (the x402 SDK's client, through
        :class:`micropay.x402_plugin.ChannelScheme`): this request may pay on the offer's
        channel, which is found or opened and topped up if needed (blocking on the chain),
        then the voucher is signed. Check the offer with :meth:`choose` first; ``floors``
        belongs to the request, as in :meth:`exchange`."""
        self._one_channel_per_request(site, offer, floors)
        channel = self.channel_for(offer)
        with channel.lock:
            self.ensure_funded(channel, offer)
            return self.sign(site, offer, channel, floors, resource_url=resource_url)

    def conclude_served(self, pending: Pending) -> None:
        """Count a voucher paid whose request the site served (a 2xx with a successful
        receipt) when the host kept none of the receipt's channel fields, as the x402 SDK
        does with a ``PAYMENT-RESPONSE`` whose fields are outside its SettleResponse model:
        the channel moves on as in :meth:`conclude`, and no receipt is kept (call it under
        the channel's lock)."""
        try:
            voucher, price = pending.voucher, pending.offer.price
            self._advance(pending, voucher.cumulative_amount, voucher.signature, price)
        finally:
            self._release(pending.site, pending.reserved)


def _acknowledge(channel: _Channel, cumulative: int, signature: bytes | None) -> None:
    """Move the channel's acknowledged total (in memory; the caller saves it)."""
    channel.payer.acknowledge(cumulative, signature)
    # Totals at or below an acknowledged one stand for requests the site served.
    channel.signed_here = {total for total in channel.signed_here if total > cumulative}


# -- the steps of an exchange ----------------------------------------------------------------


@dataclass(frozen=True)
class _Blocking:
    """A call that may wait on the chain: async drivers run it in a worker thread."""

    call: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(frozen=True)
class _Send:
    """Resend the request with this header (``PAYMENT-SIGNATURE`` or ``PAYMENT-ACCESS``);
    the response is sent back."""

    name: str
    value: str


@dataclass(frozen=True)
class _Hold:
    """Take the channel's lock: one request at a time per channel."""

    channel: _Channel


@dataclass(frozen=True)
class _Release:
    channel: _Channel


@dataclass(frozen=True)
class _Discard:
    """A response that is not the one returned to the caller: read and close it."""

    response: Any


@dataclass(frozen=True)
class _Pause:
    seconds: float


_Step = _Blocking | _Send | _Hold | _Release | _Discard | _Pause


class _Run(Generic[_R]):
    """One exchange in progress: hands its driver the next step and feeds the step's
    result (or exception) back in; ``result`` is the exchange's once it has returned."""

    def __init__(self, flow: Generator[_Step, Any, _R | None]) -> None:
        self._flow = flow
        self.result: _R | None = None
        self.result_of_step: Any = None
        self.error_of_step: BaseException | None = None

    def next_step(self) -> _Step | None:
        value, error = self.result_of_step, self.error_of_step
        self.result_of_step = self.error_of_step = None
        try:
            return self._flow.throw(error) if error is not None else self._flow.send(value)
        except StopIteration as done:
            self.result = done.value
            return None


def _decode_required(value: str) -> PaymentRequired:
    try:
        return PaymentRequired.decode(value)
    except PaymentHeaderError as err:
        raise PaymentProtocolError(f"the site's PAYMENT-REQUIRED is malformed: {err}") from None


def _first_allowed(
    offers: Sequence[_O], refusal: Callable[[_O], str | None]
) -> tuple[_O | None, list[str]]:
    """The first offer ``refusal`` finds nothing against, and the reasons for those before."""
    reasons: list[str] = []
    for offer in offers:
        why = refusal(offer)
        if why is None:
            return offer, reasons
        reasons.append(why)
    return None, reasons


def _exact_offers(required: PaymentRequired) -> tuple[ExactOffer, ...]:
    """The 402's ``exact`` offers this client can read (a malformed one is skipped)."""
    offers = []
    for offer in required.offers:
        if isinstance(offer, OfferJSON) and offer.scheme == EXACT:
            try:
                offers.append(ExactOffer.from_json(offer.obj))
            except PaymentHeaderError as err:
                _log.warning("skipping a malformed exact offer: %s", err)
    return tuple(offers)


def _reason(headers: Mapping[str, str]) -> str | None:
    """The reason code of a 402's PAYMENT-REQUIRED (None if it has none it can read)."""
    value = headers.get(PAYMENT_REQUIRED)
    if value is None:
        return None
    try:
        return PaymentRequired.decode(value).error
    except PaymentHeaderError:
        return None


def _offer_key(offer: Offer) -> str:
    return f"{offer.network}|{offer.contract}|{offer.pay_to}|{offer.asset}"


def site_of(url: str) -> str:
    """The origin spending caps are counted by: ``scheme://host:port``."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


# -- httpx -----------------------------------------------------------------------------------


def _httpx_answer(response: httpx.Response) -> tuple[int, Mapping[str, str]]:
    return response.status_code, response.headers


def _with_payment(request: httpx.Request, name: str, value: str) -> httpx.Request:
    headers = httpx.Headers(request.headers)
    headers[name] = value
    return httpx.Request(
        request.method,
        request.url,
        headers=headers,
        content=request.content,
        extensions=request.extensions,
    )


def _payable(request: httpx.Request, response: httpx.Response) -> bool:
    return (
        response.status_code == 402
        and PAYMENT_REQUIRED in response.headers
        and PAYMENT_SIGNATURE not in request.headers
        and PAYMENT_ACCESS not in request.headers
    )


def resource_of(method: str, path: str) -> str:
    """``"METHOD /path"``: what a receipt names, from a request's (decoded) path."""
    return f"{method.upper()} {path or '/'}"


class PaymentTransport(httpx.BaseTransport):
    """An httpx transport that pays 402s through ``payer`` and retries."""

    def __init__(self, payer: HttpPayer, transport: httpx.BaseTransport | None = None) -> None:
        self.payer = payer
        self._inner = transport if transport is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        site = site_of(str(request.url))

        def send(name: str, value: str) -> httpx.Response:
            return self._inner.handle_request(_with_payment(request, name, value))

        def discard(answer: httpx.Response) -> None:
            answer.read()
            answer.close()

        response = None
        if self.payer.holds_credit(site):  # spend it: no 402 round trip, no signature
            request.read()
            resource = resource_of(request.method, request.url.path)
            flow = self.payer.spend_credit(site, _httpx_answer, resource)
            response = self.payer.drive(flow, send, discard)
        if response is None:
            response = self._inner.handle_request(request)
        if not _payable(request, response):
            return response
        required = response.headers[PAYMENT_REQUIRED]
        response.read()
        response.close()
        request.read()

        paid = self.payer.pay(
            site,
            required,
            send,
            _httpx_answer,
            discard,
            resource_of(request.method, request.url.path),
        )
        return _answer(
            self.payer,
            response,
            paid,
            lambda p, s: _SyncStream(self.payer, self._inner, request, p, s),
        )

    def close(self) -> None:
        self._inner.close()


class AsyncPaymentTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`PaymentTransport` (chain I/O runs in worker threads)."""

    def __init__(self, payer: HttpPayer, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.payer = payer
        self._inner = transport if transport is not None else httpx.AsyncHTTPTransport()
        self._locks: dict[bytes, anyio.Lock] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        site = site_of(str(request.url))

        async def send(name: str, value: str) -> httpx.Response:
            return await self._inner.handle_async_request(_with_payment(request, name, value))

        async def discard(answer: httpx.Response) -> None:
            await answer.aread()
            await answer.aclose()

        response = None
        if self.payer.holds_credit(site):  # spend it: no 402 round trip, no signature
            await request.aread()
            resource = resource_of(request.method, request.url.path)
            flow = self.payer.spend_credit(site, _httpx_answer, resource)
            response = await self.payer.adrive(flow, send, discard, self._locks)
        if response is None:
            response = await self._inner.handle_async_request(request)
        if not _payable(request, response):
            return response
        required = response.headers[PAYMENT_REQUIRED]
        await response.aread()
        await response.aclose()
        await request.aread()

        paid = await self.payer.apay(
            site,
            required,
            send,
            _httpx_answer,
            discard,
            self._locks,
            resource_of(request.method, request.url.path),
        )
        return _answer(
            self.payer,
            response,
            paid,
            lambda p, s: _AsyncStream(self.payer, self._inner, request, p, s),
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


# -- streamed responses: the body as the caller sees it, paid as it goes ----------------------


_Inner = httpx.BaseTransport | httpx.AsyncBaseTransport


def _voucher_only(request: httpx.Request, header: str) -> httpx.Request:
    """The voucher-only request of a stream's next increment: the same method and URL, the
    voucher, the marker, and no body (see micropay.streaming)."""
    headers = httpx.Headers(request.headers)
    for name in ("content-length", "content-type", "transfer-encoding"):
        headers.pop(name, None)
    headers[PAYMENT_SIGNATURE] = header
    headers[PAYMENT_STREAM] = VOUCHER_ONLY
    return httpx.Request(
        request.method, request.url, headers=headers, extensions=request.extensions
    )


def _answer(
    payer: HttpPayer,
    unpaid: httpx.Response,
    paid: httpx.Response | None,
    body_of: Callable[[httpx.Response, PaidStream], httpx.SyncByteStream | httpx.AsyncByteStream],
) -> httpx.Response:
    """The response a transport returns: the 402 if nothing was paid, the paid response, or,
    if it begins a stream priced per unit, the paid one's status and headers with its body
    metered by ``body_of`` (the stream's status in its extensions)."""
    if paid is None:
        return unpaid
    stream = payer.paid_stream(paid.headers) if paid.is_success else None
    if stream is None:
        return paid
    body = body_of(paid, stream)
    return httpx.Response(
        paid.status_code,
        headers=paid.headers,
        stream=body,
        extensions={**paid.extensions, STATUS_EXTENSION: stream.status},
    )


class _StreamBody:
    """What a paid stream's body reads from and pays with: the payer, the transport under
    the paying one (``inner``), the request (for its voucher-only twins), the paid response
    and the stream's :class:`PaidStream`."""

    def __init__(
        self,
        payer: HttpPayer,
        inner: _Inner,
        request: httpx.Request,
        paid: httpx.Response,
        stream: PaidStream,
    ) -> None:
        self._payer, self._inner, self._request = payer, inner, request
        self._paid, self._stream = paid, stream


class _SyncStream(_StreamBody, httpx.SyncByteStream):
    """A paid stream's body for :class:`PaymentTransport`: the paywall's events stripped,
    each next increment paid by a voucher-only request when it is due."""

    _inner: httpx.BaseTransport

    def __iter__(self) -> Iterator[bytes]:
        def send_voucher(header: str) -> tuple[int, Mapping[str, str]]:
            answer = self._inner.handle_request(_voucher_only(self._request, header))
            answer.read()
            answer.close()
            return answer.status_code, answer.headers

        try:
            yield from self._payer.metered_body(self._stream, self._paid.iter_raw(), send_voucher)
        finally:
            self._paid.close()

    def close(self) -> None:
        self._paid.close()


class _AsyncStream(_StreamBody, httpx.AsyncByteStream):
    """The async twin of :class:`_SyncStream` (signing, which may top up, runs in a thread)."""

    _inner: httpx.AsyncBaseTransport

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream = self._stream
        try:
            async for chunk in self._paid.aiter_raw():
                content, due = stream.feed(chunk)
                if content:
                    yield content
                if due:
                    await self._pay()
                if stream.given_up:
                    break
            else:
                rest = stream.end()
                if rest:
                    yield rest
            await anyio.to_thread.run_sync(self._payer.conclude_stream, stream)
        finally:
            await self._paid.aclose()

    async def _pay(self) -> None:
        payer, stream = self._payer, self._stream
        pending = await anyio.to_thread.run_sync(payer.pay_increment, stream)
        if pending is None:
            return
        try:
            request = _voucher_only(self._request, pending.header)
            answer = await self._inner.handle_async_request(request)
            await answer.aread()
            await answer.aclose()
        except BaseException:
            payer.conclude_increment(stream, pending, 0, {})
            raise
        conclude = payer.conclude_increment  # keeps the receipt (a file write): off the loop
        await anyio.to_thread.run_sync(
            conclude, stream, pending, answer.status_code, answer.headers
        )

    async def aclose(self) -> None:
        await self._paid.aclose()
