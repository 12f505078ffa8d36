"""An ASGI paywall: priced routes answer 402 until a request carries a voucher that pays.

Use it with Starlette or FastAPI (or any ASGI app)::

    app.add_middleware(
        Paywall, payee=Payee(channels, site_key, book=ledger),
        prices={"GET /articles/{slug}": 1_000, "GET /archive/{path:path}": 5_000},
    )

Unpriced routes pass through untouched. A browser asking for a priced page without a
payment gets a 402 page to pay from, and the script it pays with is served at
``/.well-known/micropay/micropay.js`` (:mod:`micropay.reader_page`).

On a priced route the paywall decodes the
``PAYMENT-SIGNATURE`` header (:mod:`micropay._x402`), checks that the voucher adds exactly
the price to what the book holds for the channel, that it is the channel authorizer's and
that the deposit covers it (through :class:`~micropay.payee.Payee`), and lets the handler
run with ``request.state.payment`` (:class:`Payment`) set. Anything wrong is a 4xx whose
JSON body and ``PAYMENT-REQUIRED`` header carry a reason code; never a 5xx, never content.

Routes are matched on the path the app routes on: the request path without the app's root
path (``uvicorn --root-path /news``, or Starlette's ``Mount("/shop", app)``), as Starlette's
router strips it. Matching the raw path would let ``/news/articles/x`` miss the priced
``/articles/{slug}`` that the router then runs. And the paywall fails closed: on a route
it does not price, ``request.state.payment`` is a stand-in whose every attribute raises
:class:`~micropay.errors.RouteNotPricedError`, answered as a 403 ``route_not_priced``, so a
handler that expects a payment never runs its paid part without one.

When is a request charged? Only when the handler answers with a 2xx. The voucher is
checked *before* the handler runs but written to the book only when the handler's status
line arrives, before a byte of it is sent: at that moment the book's atomic
``accept_if_higher`` decides. If it refuses (another process took the same voucher), the
handler's response is dropped and a 402 goes out instead, so no content leaves unpaid.
A handler that fails, or answers 3xx/4xx/5xx, has charged nothing, and the client's next
voucher is the same total again. (The alternative, accepting first and rolling back on
failure, needs an undo in every book and leaves a window where a failed request counts.)
A 2xx response whose body breaks off after the status line stays charged: the status is
the paywall's only signal.

Metered routes (``prices={"GET /search": UpTo(5_000)}`` or ``PricedRoute.parse(...,
metered=True)``): the price is a maximum N. The voucher is the channel's charged total plus
N, as for a fixed price; the handler says what it used with
``request.state.payment.charge(amount)`` (0 to N, the last call standing; none: 0), and the
write at the status line moves the charged total by that much, keeping the voucher as the
ceiling. :meth:`Paywall.refund` refunds a charge off chain. docs/protocol.md has the rules.

Streamed routes (``prices={"GET /v1/complete": PerUnit(10**9, increment=100)}``): the answer
is charged per unit the handler sends (a server-sent event, or ``unit_bytes`` of a chunked
body), paid an increment at a time; the next increment is asked for in band and paid by a
voucher-only request (``PAYMENT-STREAM: voucher``). :mod:`micropay.streaming` has the design.

Receipts: at that same moment the paywall signs the charge's receipt with the payee key
(:mod:`micropay.receipts`) and hands it to ``accept_if_higher`` with the voucher, so a
durable book records the charge in the transaction that takes the voucher; the receipt
goes out in ``PAYMENT-RESPONSE`` only if it was recorded. With ``access_period`` a reader
may instead present an earlier receipt of the same resource and be served uncharged
(:mod:`micropay.access` has the rule); without it ``PAYMENT-ACCESS`` is never read.

Concurrency: requests on the same channel are served one at a time per process (a second
one meanwhile gets 409 ``channel_busy``; a client pays one request after another), so the
check before the handler and the write after it see the same book. Across processes the
book's ``accept_if_higher`` is the arbiter, told what this process read (``over``): of two
identical vouchers only one is taken, and a voucher priced over a total that another
process has since moved is refused, not stored for less than its price. So the paywall
may price a request over the best voucher it stored itself last, without reading the book
again: if another process has moved the channel since, the reader's voucher (signed over
the newer total) does not match, and the paywall reads the book before refusing anything;
a voucher that matches only the stale total is refused by the write (``over``), after the
handler ran, and no content leaves. A channel served by one process therefore costs one
write per request and no read.

Why strict equality (cumulative = charged total + price) rather than "at least the price": a client
whose request failed after it signed must be able to send the same total again, and a
client that lost its state must be told the true total, not be allowed to overpay. A
mismatch gets 402 with the paywall's view of the channel (its best voucher, or what was
claimed on chain if it holds none); the view is shown only to a request signed by the
channel's authorizer.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn, TypeAlias, TypeVar

import anyio.to_thread

from micropay._x402 import (
    SCHEME as CHANNEL,
)
from micropay._x402 import (
    AccessRequest,
    ChannelView,
    Offer,
    OfferJSON,
    PaymentPayload,
    PaymentRequired,
    Reason,
    Receipt,
    StreamTerms,
    network_of,
)
from micropay.access import AccessGate
from micropay.channels import ChannelState
from micropay.charging import Held, Refund
from micropay.credit import MAX_PRICE, CreditKey, CreditReason, CreditToken
from micropay.errors import (
    ChargeError,
    InsufficientDepositError,
    InvalidSignatureError,
    PaymentDeclinedError,
    PaymentHeaderError,
    ReceiptError,
    RouteNotPricedError,
    StaleVoucherError,
    VoucherError,
    VoucherRejectedError,
)
from micropay.exact import SCHEME as EXACT
from micropay.exact import ExactOffer, ExactPayload, ExactSettlerBase, payload_scheme
from micropay.payee import Checked, CommittingBook, MemoryVoucherBook, Payee, VoucherBook
from micropay.reader_page import SCRIPT_PATH, reader_page, script, wants_html
from micropay.receipts import SignedReceipt, sign_receipt
from micropay.streaming import VOUCHER_ONLY, PerUnit, StreamMeter
from micropay.vouchers import ZERO_ADDRESS, ChannelConfig, Voucher, VoucherVerifier

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger("micropay.paywall")
_T = TypeVar("_T")
_V = TypeVar("_V")
_HEADER: Final = b"payment-signature"
_ACCESS_HEADER: Final = b"payment-access"
_STREAM_HEADER: Final = b"payment-stream"
_CREDIT_HEADER: Final = b"payment-credit"


class _Meter:
    """What a metered handler charged so far (None: it never said)."""

    __slots__ = ("charged",)

    def __init__(self) -> None:
        self.charged: int | None = None


@dataclass(frozen=True)
class Payment:
    """``request.state.payment`` on a priced route: who pays and how much for this request.

    ``amount`` is the most this request is charged: a fixed route's price, or a metered
    route's maximum. It is charged only if the handler answers 2xx. On a metered route the
    handler says what it used with :meth:`charge`; ``cumulative_amount`` is the voucher's
    amount, the ceiling the payer authorised for this request. A reader let in on an access
    receipt has ``amount`` 0 and the total of the receipt it showed.
    """

    payer: str
    amount: int
    channel_id: bytes
    cumulative_amount: int
    scheme: str = "channel"
    transaction: bytes | None = None  # ``exact``: the settled transfer (channel_id is b"")
    metered: bool = False
    streamed: bool = False  # priced per unit: the paywall counts what the handler sends
    _meter: _Meter = field(default_factory=_Meter, repr=False, compare=False)

    def charge(self, amount: int) -> None:
        """Say what this request used, on a metered route: an ``int`` from 0 to
        :attr:`amount`. A second call replaces the first (the handler states the total it
        used, so it may report a running total as it goes); only the last one counts, and
        only if the answer is 2xx. A handler that never calls it charges 0: the payer only
        authorised "up to", and a site that forgets to meter should not take the maximum.

        Raises :class:`ChargeError` for anything else (a bool, a float, a negative amount,
        more than the maximum, or a call on a route that is not metered)."""
        if self.streamed:
            raise ChargeError("this route is priced per unit: the paywall counts what it sends")
        if not self.metered:
            raise ChargeError(f"this route has a fixed price of {self.amount}; it is not metered")
        if type(amount) is not int:
            raise ChargeError(f"a charge is an int of base units, not {type(amount).__name__}")
        if not 0 <= amount <= self.amount:
            raise ChargeError(f"a charge is from 0 to this route's maximum {self.amount}: {amount}")
        self._meter.charged = amount

    @property
    def charged(self) -> int:
        """What the request is charged if it answers 2xx: the price of a fixed route, or what
        a metered handler last passed to :meth:`charge` (0 if it never did)."""
        if not self.metered:
            return self.amount
        return self._meter.charged or 0


@dataclass(frozen=True)
class UpTo:
    """A metered price in ``prices=``: ``{"GET /api/search": UpTo(5_000)}`` charges up to
    5,000 base units per request, what the handler says it used."""

    maximum: int


# -- prices --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PricedRoute:
    """``METHOD /path/{param}/{rest:path}`` and its price in base units (``*`` = any method).

    ``description`` and ``mime_type`` say what the resource is, in the 402 (x402's
    ResourceInfo); without a description the 402 names the route and its price.
    """

    method: str
    pattern: str
    price: int
    regex: re.Pattern[str]
    description: str = ""
    mime_type: str = ""
    schemes: tuple[str, ...] = (CHANNEL,)
    metered: bool = False
    """``price`` is a maximum: the handler charges what it used (``payment.charge``)."""
    stream: PerUnit | None = None
    """A streamed answer priced per unit (:mod:`micropay.streaming`); ``price`` is then one
    increment (``stream.increment`` units at ``stream.price``), sold as a metered price."""

    @classmethod
    def parse(
        cls,
        route: str,
        price: int | UpTo | PerUnit,
        *,
        description: str = "",
        mime_type: str = "",
        schemes: Iterable[str] = (CHANNEL,),
        metered: bool = False,
    ) -> PricedRoute:
        """``schemes``: how the route may be paid, in the order the 402 offers them:
        ``channel``, ``exact`` (one EIP-3009 transfer per request: the paywall needs an
        :class:`~micropay.exact.ExactSettler`) or both, ``channel`` first, as it is the
        cheaper for a reader who comes back.

        ``metered`` (or a price given as :class:`UpTo`): the price is the most a request may
        be charged; the handler says what it used. Metered routes are sold in ``channel``
        only (an ``exact`` transfer cannot be partly taken back).

        A price given as :class:`~micropay.streaming.PerUnit` streams: the answer is charged
        per unit delivered, paid in increments asked for in band (metered, ``channel`` only).
        """
        stream = None
        if isinstance(price, PerUnit):
            stream, price, metered = price, price.price * price.increment, True
        elif isinstance(price, UpTo):
            price, metered = price.maximum, True
        method, _, pattern = route.strip().partition(" ")
        if not pattern:
            method, pattern = "*", method
        if not pattern.startswith("/"):
            raise ValueError(f"a priced route is 'METHOD /path', not {route!r}")
        if type(price) is not int or price <= 0:
            raise ValueError(f"the price of {route!r} must be a positive integer of base units")
        parts = []
        for piece in re.split(r"(\{[^}]*\})", _normalise(pattern)):
            if piece.startswith("{"):
                _, _, kind = piece[1:-1].partition(":")
                parts.append(".*" if kind == "path" else "[^/]+")
            else:
                parts.append(re.escape(piece))
        offered = tuple(schemes)
        if not offered or set(offered) - {CHANNEL, EXACT} or len(set(offered)) != len(offered):
            raise ValueError(f"{route!r}: schemes are 'channel' and/or 'exact', not {offered!r}")
        if metered and offered != (CHANNEL,):
            raise ValueError(f"{route!r}: a metered route is sold in 'channel' only")
        return cls(
            method.upper(),
            pattern,
            price,
            re.compile("".join(parts)),
            description,
            mime_type,
            offered,
            metered,
            stream,
        )

    @property
    def what(self) -> str:
        """The resource's description in a 402."""
        if self.description:
            return self.description
        if self.stream is not None:
            return (
                f"{self.method} {self.pattern}, streamed at {self.stream.price} per unit, "
                f"paid {self.stream.increment} units ahead"
            )
        if self.metered:
            return f"{self.method} {self.pattern}, paid per request, up to {self.price}"
        return f"{self.method} {self.pattern}, paid per request"

    def matches(self, method: str, path: str) -> bool:
        if self.method not in ("*", method) and not (self.method == "GET" and method == "HEAD"):
            return False
        return self.regex.fullmatch(path) is not None


def _normalise(path: str) -> str:
    """Collapse repeated slashes and drop a trailing one, so ``//a/b/`` is priced as ``/a/b``.

    Routers differ in how they treat those spellings; pricing every spelling that might
    reach a priced handler is the safe side.
    """
    if "//" in path:
        path = re.sub(r"/{2,}", "/", path)
    return path[:-1] if len(path) > 1 and path.endswith("/") else path


# -- refusals ------------------------------------------------------------------------------


class PaymentRefusal(PaymentDeclinedError):
    """A payment the paywall does not take: answer with this status and reason instead of
    serving. ``view`` is the paywall's record of the channel, shown (in a 402's
    ``extensions.channel``) to a voucher that does not follow it; only a request signed by
    the channel's authorizer is given one. Raised by :meth:`Paywall.check_channel_payment`
    and :meth:`Paywall.record_channel_payment` for hosts that answer the request themselves
    (:mod:`micropay.x402_plugin`)."""

    def __init__(self, status: int, reason: str, message: str, view: ChannelView | None = None):
        super().__init__(reason, message, status)
        self.message = message
        self.view = view


_Refusal = PaymentRefusal  # the name the middleware's own code uses


@dataclass(frozen=True)
class ChannelCheck:
    """A ``channel`` payment that passed every check before the handler: what the payee's
    checks found, the charged total the book held (``held``; 0: nothing), which the write
    must still find, and the total the charge adds to (``base``: the charged total, or what
    is claimed on chain if the book holds nothing)."""

    payload: PaymentPayload
    price: int
    checked: Checked
    held: int
    base: int = 0
    refunded: int = 0
    metered: bool = False
    ceiling: int = 0
    """The best voucher the book held (0: none), which the write must still find: another
    process may take a voucher without moving the charged total (a refund, a charge of 0)."""


# -- the middleware ------------------------------------------------------------------------


class Paywall:
    """ASGI middleware charging per request through payment channels to ``payee``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        payee: Payee,
        prices: Mapping[str, int | UpTo | PerUnit] | Iterable[PricedRoute],
        asset: str = ZERO_ADDRESS,
        min_deposit: int | None = None,
        min_withdraw_delay: int | None = None,
        book_in_thread: bool | None = None,
        exact: ExactSettlerBase | None = None,
        access_period: int | None = None,
        reader_page: bool = True,
        prepay: int | None = None,
    ) -> None:
        """``payee`` settles later (``payee.claim_all()``); its book records the vouchers.

        ``asset``: the token channels must be in (the zero address for ETH).
        ``min_deposit``: the least deposit a channel needs before its first voucher counts
        (default ten times the highest price: a claim should be worth its gas).
        ``min_withdraw_delay``: the shortest withdraw delay accepted (default twice the
        payee's safety margin, so a payer's withdraw request leaves time to claim).
        ``book_in_thread``: read the book off the event loop (default: unless it is the
        in-memory book, whose calls take microseconds, or a SQLite ledger, whose reads never
        wait for its writer). A ledger's writes never take a thread of the loop's: its own
        writer commits them, and the loop awaits the commit.
        ``exact``: settles the routes offered in ``exact`` (their price is in its token):
        an :class:`~micropay.exact.ExactSettler` (the site's key submits each transfer) or a
        :class:`~micropay.facilitator.FacilitatorSettler` (an x402 facilitator does). Their
        402s declare x402's ``payment-identifier`` extension: a resend under the same id
        is the same payment, an id sent again with another payment is refused.
        ``access_period``: opt in to access receipts: a reader who paid for a resource
        within this many seconds is let in again without a charge when it presents the
        receipt and proves it holds the channel's session key (see :mod:`micropay.access`;
        None, the default: every request pays).
        ``reader_page``: answer a browser's unpaid request for a route sold in ``channel``
        with the 402 page readers pay from, and serve its script at
        ``/.well-known/micropay/micropay.js`` (:mod:`micropay.reader_page`); False keeps
        the JSON 402 for every client.
        ``prepay``: sell prepaid credit (:mod:`micropay.credit`): one voucher may prepay up to
        this many requests (at least 2) of a fixed-price ``channel`` route, the following
        ones carrying the ``PAYMENT-CREDIT`` token the paid answer gives; their charges are
        checked with a keyed hash, not a signature. A paywall with metered routes cannot
        (their next voucher builds on the charged total, below a prepaid ceiling).
        """
        self.app = app
        self.payee = payee
        self.book: VoucherBook = payee.book
        if isinstance(prices, Mapping):
            routes = [PricedRoute.parse(route, price) for route, price in prices.items()]
        else:
            routes = list(prices)
        if not routes and min_deposit is None:
            raise ValueError("a paywall needs at least one priced route (or a min_deposit)")
        self.routes: tuple[PricedRoute, ...] = tuple(routes)
        if exact is None and any(EXACT in r.schemes for r in routes):
            raise ValueError("a route offered in 'exact' needs a settler (exact=ExactSettler(...))")
        self.exact = exact
        self.asset = payee.client.w3.to_checksum_address(asset)
        self.min_deposit = (
            min_deposit if min_deposit is not None else 10 * max(r.price for r in routes)
        )
        low, high = payee.client.withdraw_delay_bounds()
        wanted = min_withdraw_delay if min_withdraw_delay is not None else 2 * payee.safety_margin
        self.min_withdraw_delay = min(max(wanted, low), high)
        self.domain = payee.client.domain
        self.network = network_of(self.domain.chain_id)
        self._pay_to = payee.account.address
        self._payee_key = bytes(payee.account.key)
        self._verifier = VoucherVerifier(self.domain)
        # The payee's cached chain state is read again (in a thread) before the checker would
        # find it expired, so the checker never reads the chain on the event loop.
        self._state_ttl = payee.state_ttl * 0.8
        self.access = (
            None if access_period is None else AccessGate(self.domain, payee.account, access_period)
        )
        self.reader_page = reader_page
        self._busy: set[bytes] = set()
        self._streams: dict[bytes, StreamMeter] = {}  # channel id -> its stream in progress
        self._offers: dict[tuple[int, bool, StreamTerms | None], Offer] = {}
        # Per channel, what this paywall last stored or read (bounded, least recently used
        # first out): the next request that pays exactly one price over its charged total
        # needs no read before its handler (see "Concurrency" above).
        self._stored: OrderedDict[bytes, Held] = OrderedDict()
        self._max_stored = payee.max_cached_channels
        # Asked once: a check against a runtime protocol costs tens of µs.
        self._committing = self.book if isinstance(self.book, CommittingBook) else None
        if book_in_thread is None:
            if self._committing is not None:
                book_in_thread = self._committing.blocking_reads
            else:
                book_in_thread = not isinstance(self.book, MemoryVoucherBook)
        self._book_in_thread = book_in_thread
        if prepay is not None and (type(prepay) is not int or prepay < 2):
            raise ValueError(f"prepay is a count of requests of at least 2, not {prepay!r}")
        if prepay is not None and any(r.metered for r in routes):
            raise ValueError("prepaid credit is sold on fixed prices; this paywall meters some")
        if prepay is not None and any(r.price >= MAX_PRICE for r in routes):
            raise ValueError("prepaid credit is sold on prices below 2**128")
        self.prepay = prepay or 0
        self._credit = None if prepay is None else CreditKey(self._payee_key, self.domain)
        # The configuration of each channel with credit (bounded like _stored): a credit
        # request names only the channel, and reading the book for it would cost a trip.
        self._configs: OrderedDict[bytes, ChannelConfig] = OrderedDict()

    # -- ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_path(scope)
        if self.reader_page and route == SCRIPT_PATH and scope["method"] in ("GET", "HEAD"):
            await _send_script(send, scope["method"] == "HEAD")
            return
        priced = self.route_of(scope["method"], route)
        if priced is None:
            await self._pass_unpriced(scope, receive, send, route)
            return
        price = priced.price
        path = _Resource(request_url(scope), priced, f"{scope['method']} {scope['path']}")
        raw: bytes | None = None
        accept: bytes | None = None
        credit: bytes | None = None
        count = 0
        for name, value in scope["headers"]:
            if name == _HEADER:
                raw = value
                count += 1
            elif name == b"accept":
                accept = value
            elif name == _CREDIT_HEADER:
                credit = b"" if credit is not None else value  # two: neither counts
        if raw is None and credit is not None and self._sells_credit(priced):
            await self._serve_credit(scope, receive, send, path, credit)
            return
        if raw is None:
            access = self._access_header(scope, priced)
            if access is not None:
                await self._serve_access(scope, receive, send, price, path, access)
                return
            if self.reader_page and CHANNEL in priced.schemes and wants_html(accept):
                await self._send_reader_page(scope, send, path)
                return
            await self._refuse(send, price, path, _Refusal(402, Reason.PAYMENT_REQUIRED, _ASK))
            return
        if count > 1:
            refusal = _Refusal(400, Reason.DUPLICATE_HEADER, "send one PAYMENT-SIGNATURE header")
            await self._refuse(send, price, path, refusal)
            return
        # Only routes sold in ``exact`` peek at the scheme: the channel hot path decodes once.
        if EXACT in priced.schemes:
            if payload_scheme(raw) == EXACT:
                await self._serve_exact(scope, receive, send, raw, path)
                return
            if CHANNEL not in priced.schemes:
                refusal = _Refusal(400, Reason.UNSUPPORTED_SCHEME, "this route is paid in 'exact'")
                await self._refuse(send, price, path, refusal)
                return
        try:
            payload = PaymentPayload.decode(raw)
            self._check_offer(payload, price)
        except PaymentHeaderError as err:
            await self._refuse(send, price, path, _Refusal(err.status, err.reason, str(err)))
            return
        except _Refusal as offer_refusal:
            await self._refuse(send, price, path, offer_refusal)
            return
        channel_id = payload.config.channel_id
        if priced.stream is not None and _header(scope, _STREAM_HEADER) == VOUCHER_ONLY.encode():
            await self._take_stream_voucher(send, path, payload)
            return
        if channel_id in self._busy:
            refusal = _Refusal(
                409, Reason.CHANNEL_BUSY, "a request on this channel is being served"
            )
            await self._refuse(send, price, path, refusal)
            return
        self._busy.add(channel_id)
        try:
            try:
                check = await self._preflight(
                    payload, price, streamed=priced.stream is not None, metered=priced.metered
                )
            except _Refusal as check_refusal:
                await self._refuse(send, price, path, check_refusal)
                return
            await self._serve(scope, receive, send, path, check)
        finally:
            self._busy.discard(channel_id)

    def _access_on(self, route: PricedRoute) -> AccessGate | None:
        """The gate that lets a reader in again on ``route`` on its receipt: only on a fixed
        price, whose every read is the same thing for the same charge (a metered read may
        use more than the one paid for, a stream delivers as long as it is paid)."""
        return None if route.metered or route.stream is not None else self.access

    def _access_header(self, scope: Scope, route: PricedRoute) -> bytes | None:
        """The request's one ``PAYMENT-ACCESS``, if this paywall takes access receipts on
        ``route`` (elsewhere a receipt never stands for a payment: the header is ignored)."""
        if self._access_on(route) is None:
            return None
        values = [value for name, value in scope["headers"] if name == _ACCESS_HEADER]
        return values[0] if len(values) == 1 else None

    async def _serve_access(
        self, scope: Scope, receive: Receive, send: Send, price: int, path: _Resource, raw: bytes
    ) -> None:
        """Serve, charging nothing, a reader who shows an access receipt (see
        :mod:`micropay.access` for what is checked); anything else gets the 402 it would
        have had, with a fresh nonce, and pays."""
        assert self.access is not None
        try:
            request = AccessRequest.decode(raw)
            admit = functools.partial(self.access.admit, request, path.name, self.book.config)
            receipt = await self._with_book(admit)
        except PaymentHeaderError as err:
            await self._refuse(send, price, path, _Refusal(err.status, err.reason, str(err)))
            return
        except ReceiptError as err:
            await self._refuse(send, price, path, _Refusal(402, Reason.ACCESS_DENIED, str(err)))
            return
        scope.setdefault("state", {})["payment"] = Payment(
            receipt.payer, 0, receipt.channel_id, receipt.cumulative_amount
        )

        async def send_private(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": _private(list(message.get("headers", ())))}
            await send(message)

        await self.app(scope, receive, send_private)

    async def _pass_unpriced(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        """Run the app on a route this paywall does not price, failing closed if the handler
        turns out to expect a payment (it reads ``request.state.payment``)."""
        unpaid = _Unpaid(scope["method"], route)
        # setdefault: an outer paywall that priced the request keeps its Payment.
        if scope.setdefault("state", {}).setdefault("payment", unpaid) is not unpaid:
            await self.app(scope, receive, send)
            return
        started = refused = False

        async def refuse() -> None:
            nonlocal refused
            if not refused:
                refused = True
                _log.error("%s", unpaid.read)
                await _send_json(send, 403, Reason.ROUTE_NOT_PRICED, str(unpaid.read), [])

        async def send_guarded(message: Message) -> None:
            nonlocal started
            if unpaid.read is not None:
                # The handler asked for its payment: whatever the app answers now (its
                # error page for RouteNotPricedError, or content) is replaced by the 403.
                if started:
                    raise unpaid.read  # content already left: the server cuts it short
                await refuse()
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_guarded)
        except RouteNotPricedError:
            if started:
                raise
        if unpaid.read is not None and not started:
            await refuse()

    def price_of(self, method: str, path: str) -> int | None:
        """The price of a request (``path`` as the app routes on it, see
        :func:`route_path`), or None if its route is free."""
        route = self.route_of(method, path)
        return None if route is None else route.price

    def route_of(self, method: str, path: str) -> PricedRoute | None:
        """The priced route a request falls under, or None if it is free."""
        path = _normalise(path)
        for route in self.routes:
            if route.matches(method, path):
                return route
        return None

    def offer(self, price: int, metered: bool = False, stream: PerUnit | None = None) -> Offer:
        """What a 402 offers for a route of this price (``metered``: up to this price;
        ``stream``: priced per unit, ``price`` being one increment)."""
        terms = None if stream is None else stream.terms
        offer = self._offers.get((price, metered, terms))
        if offer is None:
            offer = Offer(
                price=price,
                asset=self.asset,
                pay_to=self._pay_to,
                domain=self.domain,
                min_deposit=self.min_deposit,
                min_withdraw_delay=self.min_withdraw_delay,
                metered=metered,
                stream=terms,
                prepay=0 if metered else self.prepay,
            )
            self._offers[(price, metered, terms)] = offer
        return offer

    def exact_offer(self, price: int) -> ExactOffer:
        """What a 402 offers in ``exact`` for a route of this price."""
        if self.exact is None:
            raise ValueError("this paywall has no exact settler")
        return self.exact.offer(price, self._pay_to)

    def _offers_for(self, route: PricedRoute) -> tuple[Offer | OfferJSON, ...]:
        return tuple(
            self.offer(route.price, route.metered, route.stream)
            if scheme == CHANNEL
            else OfferJSON(EXACT, self.exact_offer(route.price).to_json())
            for scheme in route.schemes
        )

    async def _serve_exact(
        self, scope: Scope, receive: Receive, send: Send, raw: bytes, path: _Resource
    ) -> None:
        """Check an ``exact`` payment, settle it (off the event loop), then serve: the
        content leaves only after the transfer is mined."""
        assert self.exact is not None
        price = path.route.price
        try:
            payload = ExactPayload.decode(raw)
            self.exact.check(payload, self.exact_offer(price), time.time())
            receipt = await anyio.to_thread.run_sync(self.exact.settle, payload)
        except (PaymentHeaderError, PaymentDeclinedError) as err:
            await self._refuse(send, price, path, _Refusal(err.status, err.reason, str(err)))
            return
        except Exception as err:  # the node is down or unreachable: say so, serve nothing
            _log.warning("cannot settle an exact payment: %s", err)
            refusal = _Refusal(503, Reason.CHAIN_UNAVAILABLE, "the site cannot reach its chain")
            await self._refuse(send, price, path, refusal)
            return
        scope.setdefault("state", {})["payment"] = Payment(
            receipt.payer, price, b"", price, EXACT, receipt.transaction
        )
        header = (b"payment-response", receipt.encode().encode("ascii"))

        async def send_with_receipt(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": _paid_headers(message, header)}
            await send(message)

        await self.app(scope, receive, send_with_receipt)

    # -- checks ------------------------------------------------------------------------------

    def _check_offer(self, payload: PaymentPayload, price: int) -> None:
        """The payment is for what this paywall offers; cheap checks before any crypto."""
        if payload.network != self.network:
            raise _Refusal(402, Reason.WRONG_NETWORK, f"this site is paid on {self.network}")
        if payload.asset != self.asset:
            raise _Refusal(402, Reason.WRONG_ASSET, f"this site is paid in {self.asset}")
        if payload.pay_to != self._pay_to:
            raise _Refusal(402, Reason.WRONG_PAYEE, f"this site is paid to {self._pay_to}")
        if payload.price != price:
            raise _Refusal(402, Reason.PRICE_MISMATCH, f"this resource costs {price}")
        self._check_terms(payload.config)

    def _check_terms(self, config: ChannelConfig) -> None:
        """The channel is one this paywall sells on: its asset, its payee, a withdraw delay
        long enough. A voucher's channel is checked before its signature; a credit's, whose
        token names only the channel, when its configuration is found (the credit key is the
        payee's, so a token another paywall of the payee issued checks)."""
        if config.token != self.asset:
            raise _Refusal(402, Reason.WRONG_ASSET, f"this site is paid in {self.asset}")
        if config.payee != self._pay_to:
            raise _Refusal(402, Reason.WRONG_PAYEE, f"this site is paid to {self._pay_to}")
        if config.withdraw_delay < self.min_withdraw_delay:
            raise _Refusal(
                402,
                Reason.WITHDRAW_DELAY_TOO_SHORT,
                f"channels need a withdraw delay of at least {self.min_withdraw_delay} s",
            )

    async def _preflight(
        self, payload: PaymentPayload, price: int, *, streamed: bool = False, metered: bool = False
    ) -> ChannelCheck:
        """Every check but the write: the voucher must be exactly the channel's charged total
        plus ``price`` (the route's price, or its maximum if metered). Returns the check: what
        the payee's checks found (the channel's state for the receipt, whether the confirmed
        deposit covers the voucher), the charged total the book held (0: nothing), which the
        write must still find, and the total the charge adds to."""
        config, voucher = payload.config, payload.voucher
        channel_id = config.channel_id
        state = self.payee.cached_state(channel_id, max_age=self._state_ttl)
        if state is not None and voucher.cumulative_amount > state.deposited:
            # Only the authorizer may make us read the chain again for a top-up.
            self._verify_or_refuse(config, voucher)
            state = await self._refresh(channel_id)
        elif state is None:
            state = await self._refresh(channel_id)
        if not state.exists:
            raise _Refusal(402, Reason.UNKNOWN_CHANNEL, "the channel has no deposit on chain")
        held = self._stored.get(channel_id)
        # The remembered totals stand in for a read only for a voucher of exactly the charged
        # total plus the price: one above the best ceiling would follow a stale copy as well
        # as the book (a refund elsewhere lowers the charged total, not the ceiling).
        if held is None or not self._follows(voucher, held, state, price, True):
            held = await self._read_held(channel_id)  # unknown here, or moved elsewhere
        if held is None:
            if state.deposited < self.min_deposit:
                raise _Refusal(
                    402,
                    Reason.DEPOSIT_TOO_SMALL,
                    f"deposit at least {self.min_deposit} before paying here",
                )
            previous = state.claimed  # vouchers at or below it are worth nothing any more
        else:
            previous = max(held.charged, state.claimed)
        top = self._top(held, state)
        if not self._follows(voucher, held, state, price, streamed):
            self._verify_or_refuse(config, voucher)  # only the authorizer may see the view
            view = _view(channel_id, held, state)
            what = "charged total" if top == previous else "prepaid ceiling"
            due = top + price if self.prepay else self._due(held, state, price, streamed)
            upto = f" (up to {top + self.prepay * price})" if self.prepay else ""
            above = "" if self.prepay or due == top + price else " (one above its best voucher)"
            if voucher.cumulative_amount <= top:
                raise _Refusal(
                    402,
                    Reason.STALE_VOUCHER,
                    f"the channel's {what} is {top}; pay {due}{upto}{above}",
                    view,
                )
            raise _Refusal(
                402,
                Reason.CUMULATIVE_MISMATCH,
                f"the channel's {what} is {top}; the next voucher is for {due}{upto}{above}",
                view,
            )
        try:
            # What was read above is what the checks compare with: one read.
            checked = self.payee.check_over(config, voucher, held)
        except InvalidSignatureError as err:
            raise _Refusal(402, Reason.INVALID_SIGNATURE, str(err)) from None
        except VoucherRejectedError as err:
            shown = None
            if isinstance(err, StaleVoucherError | InsufficientDepositError):
                shown = _view(channel_id, held, state)
            raise _Refusal(402, err.reason, str(err), shown) from None
        except VoucherError as err:
            raise _Refusal(400, Reason.INVALID_PAYLOAD, str(err)) from None
        return ChannelCheck(
            payload,
            price,
            checked,
            0 if held is None else held.charged,
            previous,
            0 if held is None else held.refunded,
            metered,
            0 if held is None else held.ceiling,
        )

    def _top(self, held: Held | None, state: ChannelState) -> int:
        """What the next voucher builds on: the charged total, or with prepaid credit on sale
        the best ceiling (a voucher never repeats one the book holds, so none can be
        replayed; the credit left below the ceiling carries over into the new one)."""
        if held is None:
            return state.claimed
        return max(held.ceiling if self.prepay else held.charged, state.claimed)

    def _follows(
        self, voucher: Voucher, held: Held | None, state: ChannelState, price: int, streamed: bool
    ) -> bool:
        """Whether the voucher is the one this request must carry (:meth:`_due`), or with
        prepaid credit on sale, the best ceiling plus 1 to ``prepay`` prices."""
        if not self.prepay:
            return voucher.cumulative_amount == self._due(held, state, price, streamed)
        step = voucher.cumulative_amount - self._top(held, state)
        return 0 < step <= self.prepay * price and step % price == 0

    def _due(self, held: Held | None, state: ChannelState, price: int, streamed: bool) -> int:
        """The one voucher a request must carry without prepaid credit: the charged total plus
        the price, or, where that would not rise above the best ceiling the book holds (a
        metered charge below its maximum, a stream cut short, a refund), one base unit above
        that ceiling. So every voucher the book takes is above every one it took before, and
        a voucher seen on the wire never pays a second time; the payer authorises at most one
        base unit beyond the charged total plus the price.

        A stream's first voucher is the charged total plus one increment, as before: the
        paywall delivers on all of a stream's ceiling, so a voucher one above the best would
        have it deliver more than the increment the payer's policy priced. That voucher may
        repeat one the book took (after a refund or a stream cut short): replayed, it starts
        a stream charged at most one increment (docs/protocol.md)."""
        due = self._top(held, state) + price
        return due if held is None or streamed else max(due, held.ceiling + 1)

    async def _with_book(self, call: Callable[[], _T]) -> _T:
        """Run a call that reaches the book: off the event loop unless the book is in memory."""
        if self._book_in_thread:
            return await anyio.to_thread.run_sync(call)
        return call()

    def _verify_or_refuse(self, config: ChannelConfig, voucher: Voucher) -> None:
        try:
            self._verifier.verify(voucher, bytes.fromhex(config.authorizer[2:]))
        except InvalidSignatureError as err:
            raise _Refusal(402, Reason.INVALID_SIGNATURE, str(err)) from None

    async def _refresh(self, channel_id: bytes) -> ChannelState:
        """Read the channel from the chain into the payee's cache (which keeps only channels
        that exist, so strangers naming made-up channels cannot grow it)."""
        try:
            state = await anyio.to_thread.run_sync(self.payee.refresh, channel_id)
        except Exception as err:  # the node is down or unreachable: say so, serve nothing
            _log.warning("cannot read channel 0x%s from the chain: %s", channel_id.hex(), err)
            raise _Refusal(
                503, Reason.CHAIN_UNAVAILABLE, "the site cannot reach its chain"
            ) from None
        return state

    # -- serving -----------------------------------------------------------------------------

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, path: _Resource, check: ChannelCheck
    ) -> None:
        price = path.route.price
        config, voucher = check.payload.config, check.payload.voucher
        payment = Payment(
            config.payer,
            price,
            config.channel_id,
            voucher.cumulative_amount,
            metered=check.metered,
            streamed=path.route.stream is not None,
        )
        scope.setdefault("state", {})["payment"] = payment
        if path.route.stream is not None:
            await self._serve_stream(scope, receive, send, path, check)
            return

        async def charge() -> list[tuple[bytes, bytes]]:
            # A refusal here: another process moved the channel since our checks. The voucher
            # passed the signature check, so the requester is the authorizer: it sees the view.
            receipt = await self.record_channel_payment(check, path.name, charge=payment.charged)
            headers = [(b"payment-response", receipt.encode().encode("ascii"))]
            credit = self._credit_left(config, receipt, price)
            if credit is not None:
                headers.append((_CREDIT_HEADER, credit.encode("ascii")))
            return headers

        await self.app(scope, receive, self._charging(send, path, charge))

    def _charging(
        self,
        send: Send,
        path: _Resource,
        charge: Callable[[], Awaitable[list[tuple[bytes, bytes]]]],
    ) -> Send:
        """The handler's ``send`` on a paid request: at a 2xx status line, ``charge`` (which
        returns the headers to add) before a byte goes out; if it is refused, the refusal is
        sent instead and the handler's body dropped."""
        replaced = False

        async def send_charging(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the handler's response was replaced by a refusal: drop its body
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                try:
                    added = await charge()
                except PaymentRefusal as refusal:
                    replaced = True
                    await self._refuse(send, path.route.price, path, refusal)
                    return
                message = {**message, "headers": _paid_headers(message, *added)}
            await send(message)

        return send_charging

    # -- prepaid credit (micropay.credit) ----------------------------------------------------

    def _sells_credit(self, route: PricedRoute) -> bool:
        return self._credit is not None and CHANNEL in route.schemes and not route.metered

    def _credit_left(self, config: ChannelConfig, receipt: Receipt, price: int) -> str | None:
        """The ``PAYMENT-CREDIT`` token for what a paid voucher left to spend (None: less than
        one price left, or no credit on sale)."""
        ceiling = receipt.ceiling_amount
        if self._credit is None or ceiling - receipt.cumulative_amount < price:
            return None
        _keep_latest(self._configs, config.channel_id, config, self._max_stored)
        return self._credit.issue(CreditToken(config.channel_id, ceiling, price))

    async def _serve_credit(
        self, scope: Scope, receive: Receive, send: Send, path: _Resource, raw: bytes
    ) -> None:
        """Serve a request that spends prepaid credit: the token's tag is checked (a keyed
        hash, no signature), the book must hold its ceiling with a price left below it, and
        the charge is written at the status line as a voucher's is (same one-at-a-time rule
        per channel, same compare-and-swap on the charged total)."""
        assert self._credit is not None
        price = path.route.price
        try:
            token = self._credit.check(raw)
        except PaymentHeaderError as err:
            await self._refuse(send, price, path, _Refusal(err.status, err.reason, str(err)))
            return
        if token.price != price:
            refusal = _Refusal(
                402,
                CreditReason.CREDIT_PRICE_MISMATCH,
                f"this credit pays {token.price} a request; this resource costs {price}",
            )
            await self._refuse(send, price, path, refusal)
            return
        channel_id = token.channel_id
        if channel_id in self._busy:
            refusal = _Refusal(409, Reason.CHANNEL_BUSY, "a request on this channel is served")
            await self._refuse(send, price, path, refusal)
            return
        self._busy.add(channel_id)
        try:
            try:
                config, held, state = await self._credit_check(token)
            except _Refusal as refusal:
                await self._refuse(send, price, path, refusal)
                return
            scope.setdefault("state", {})["payment"] = Payment(
                config.payer, price, channel_id, token.ceiling
            )

            async def charge() -> list[tuple[bytes, bytes]]:
                receipt = await self._charge_credit(token, config, held, state)
                return [(b"payment-response", receipt.encode().encode("ascii"))]

            await self.app(scope, receive, self._charging(send, path, charge))
        finally:
            self._busy.discard(channel_id)

    async def _credit_check(self, token: CreditToken) -> tuple[ChannelConfig, Held, ChannelState]:
        """The channel's configuration, what the book holds and its state, if the credit
        can pay one more price here: the book's best ceiling is the token's, the channel is
        one this paywall sells on, its deposit covers the charge, and it is not closing.
        Raises :class:`PaymentRefusal`."""
        channel_id = token.channel_id
        held = self._stored.get(channel_id)
        if held is None or held.ceiling != token.ceiling:
            held = await self._read_held(channel_id)  # after a restart, or another process
        if held is None or held.ceiling != token.ceiling:
            raise _Refusal(
                402,
                CreditReason.CREDIT_SUPERSEDED,
                "the site holds another voucher for this channel than this credit's: pay with "
                "a voucher",
            )
        config = self._configs.get(channel_id)
        if config is None:  # after a restart, another process, or another paywall of the payee
            config = await self._with_book(functools.partial(self.book.config, channel_id))
            if config is None:  # cannot be: the book holds a voucher for it
                raise _Refusal(402, Reason.UNKNOWN_CHANNEL, "the site holds nothing for it")
            self._check_terms(config)  # kept only once checked (as _credit_left's were)
            _keep_latest(self._configs, channel_id, config, self._max_stored)
        state = self.payee.cached_state(channel_id, max_age=self._state_ttl)
        if state is None:
            state = await self._refresh(channel_id)
        self._check_credit_left(held, token, state)
        if state.finished or (
            state.withdraw_requested and state.closes_at - time.time() < self.payee.safety_margin
        ):
            raise _Refusal(402, Reason.CHANNEL_CLOSING, "the channel is closing: no more credit")
        return config, held, state

    @staticmethod
    def _check_credit_left(held: Held, token: CreditToken, state: ChannelState) -> None:
        """One more price is left of the credit, and the deposit still covers it: a deposit
        that fell below the prepaid ceiling (returned on chain by the site, or reorged away)
        leaves the credit above it uncollectable, so it is not served."""
        charged = held.charged + token.price
        if charged > held.ceiling:
            raise _Refusal(
                402,
                CreditReason.CREDIT_SPENT,
                f"this credit is spent ({held.charged} of {held.ceiling} charged): pay with a "
                "voucher",
            )
        if charged > state.deposited:
            raise _Refusal(
                402,
                Reason.INSUFFICIENT_DEPOSIT,
                f"the channel's deposit ({state.deposited}) no longer covers this credit "
                f"({held.charged} charged): top it up and pay with a voucher",
            )

    async def _charge_credit(
        self, token: CreditToken, config: ChannelConfig, held: Held, state: ChannelState
    ) -> Receipt:
        """Charge one price against the credit: the book's compare-and-swap from the charged
        total read to one price more, durable before this returns. If another process moved
        the channel meanwhile, read it again and charge over what it holds while a price is
        left (the handler has run; nothing is granted twice, as each write adds one price to
        a total it read). The answer is an unsigned statement (see docs/protocol.md)."""
        for _ in range(8):
            charged = held.charged + token.price
            try:
                if self._committing is not None:  # the ledger: swap the charged total only
                    await _committed(
                        functools.partial(
                            self._committing.charge_soon,
                            config.channel_id,
                            held.ceiling,
                            held.charged,
                            charged,
                        )
                    )
                else:
                    await self._write(config, held.voucher, over=held.charged, charged=charged)
            except StaleVoucherError:
                again = await self._read_held(config.channel_id)
                if again is None or again.ceiling != token.ceiling:
                    raise _Refusal(
                        402, CreditReason.CREDIT_SUPERSEDED, "the channel moved on: pay again"
                    ) from None
                self._check_credit_left(again, token, state)
                held = again
                continue
            self._remember(config.channel_id, Held(held.voucher, charged, held.refunded))
            return Receipt(
                network=self.network,
                payer=config.payer,
                channel_id=config.channel_id,
                amount=token.price,
                cumulative_amount=charged,
                remaining=state.deposited - charged,
                ceiling=token.ceiling,
                refunded=held.refunded,
            )
        raise _Refusal(409, Reason.CHANNEL_BUSY, "the channel is being charged elsewhere")

    async def _serve_stream(
        self, scope: Scope, receive: Receive, send: Send, path: _Resource, check: ChannelCheck
    ) -> None:
        """A streamed route: the handler runs under a :class:`StreamMeter`, which charges the
        units it delivers and asks for each next increment (see :mod:`micropay.streaming`)."""
        assert path.route.stream is not None
        channel_id = check.payload.config.channel_id

        async def refuse(refusal: PaymentRefusal) -> None:
            await self._refuse(send, path.route.price, path, refusal)

        meter = StreamMeter(self, check, path.name, path.route.stream, refuse)
        self._streams[channel_id] = meter
        try:
            await meter.run(self.app, scope, receive, send)
        finally:
            del self._streams[channel_id]

    async def _take_stream_voucher(
        self, send: Send, path: _Resource, payload: PaymentPayload
    ) -> None:
        """A voucher-only request: the next increment of the channel's stream in progress,
        answered with its receipt and no content (409 ``no_stream`` if none is waiting)."""
        price = path.route.price  # the offer's terms are checked: the voucher is next
        try:
            meter = self._streams.get(payload.config.channel_id)
            if meter is None:
                raise _Refusal(409, Reason.NO_STREAM, "no stream on this channel waits")
            receipt = await meter.take(payload)
        except _Refusal as refusal:
            await self._refuse(send, price, path, refusal)
            return
        body = json.dumps(
            {"ceiling": str(receipt.ceiling_amount), "charged": str(receipt.cumulative_amount)}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    (b"payment-response", receipt.encode().encode("ascii")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    # -- for hosts that answer the request themselves (micropay.x402_plugin) ------------------

    async def check_channel_payment(self, payload: PaymentPayload, price: int) -> ChannelCheck:
        """Every check the paywall makes before its handler runs, for a ``channel`` payment
        of ``price``: the offer's terms, then the channel's state, deposit and signature
        through the payee, and that the voucher adds exactly the price to the book's charged
        total. Nothing is recorded. Raises :class:`PaymentRefusal` (with the channel's view
        where the voucher does not follow the book)."""
        self._check_offer(payload, price)
        return await self._preflight(payload, price)

    async def record_channel_payment(
        self, check: ChannelCheck, resource: str, *, charge: int | None = None
    ) -> Receipt:
        """Charge a checked payment whose handler answered 2xx: ``charge`` (default: the whole
        price; a metered route's handler says less) on top of the charged total the check
        read. Signs the receipt for ``resource`` (``"METHOD /path"``) and records it with the
        voucher (the new ceiling, if higher) and the new charged total in one write, the
        book's ``accept_if_higher`` compare-and-swap over the charged total the check read.
        Returns the receipt for ``PAYMENT-RESPONSE``. Raises :class:`PaymentRefusal`
        ``stale_voucher``, with the channel's view, if another process moved the channel (a
        charge or a refund) since the check."""
        config, voucher = check.payload.config, check.payload.voucher
        amount = check.price if charge is None else charge
        if type(amount) is not int or not 0 <= amount <= check.price:
            raise ChargeError(f"a charge is an int from 0 to {check.price}: {amount!r}")
        charged = check.base + amount
        state = check.checked.state
        signed = sign_receipt(
            self.domain,
            self._payee_key,
            receipt_id=os.urandom(32),
            channel_id=config.channel_id,
            payer=config.payer,
            asset=config.token,
            resource=resource,
            amount=amount,
            cumulative_amount=charged,
            issued_at=int(time.time()),
        )
        # The charge is recorded with the voucher, in one transaction, or not at all;
        # the receipt goes out once that transaction is durable.
        try:
            await self._store(config, voucher, check, charged, signed)
        except StaleVoucherError as err:
            view = _view(config.channel_id, await self._read_held(config.channel_id), state)
            raise PaymentRefusal(402, Reason.STALE_VOUCHER, str(err), view) from None
        return Receipt.of(
            signed,
            state.deposited - charged,
            ceiling=voucher.cumulative_amount,
            refunded=check.refunded,
        )

    async def refund(self, channel_id: bytes, amount: int, reason: str = "") -> Refund:
        """:meth:`Payee.refund <micropay.payee.Payee.refund>` off the event loop (it reads
        the chain and writes the book): lower the channel's charged total by ``amount``; the
        channel's next receipt reports it. Raises :class:`~micropay.errors.RefundError`."""
        refund = await anyio.to_thread.run_sync(self.payee.refund, channel_id, amount, reason)
        self._stored.pop(channel_id, None)  # read the book again before the next charge
        return refund

    async def _read_held(self, channel_id: bytes) -> Held | None:
        """What the book holds for the channel, now (and remembered as the latest)."""
        held = await self._with_book(functools.partial(self.book.held, channel_id))
        if held is not None:
            self._remember(channel_id, held)
        return held

    def _remember(self, channel_id: bytes, held: Held) -> None:
        _keep_latest(self._stored, channel_id, held, self._max_stored)

    async def _store(
        self,
        config: ChannelConfig,
        voucher: Voucher,
        check: ChannelCheck,
        charged: int,
        charge: SignedReceipt,
    ) -> int:
        """A voucher's charge write (:meth:`_write`), remembered as the channel's latest."""
        increment = await self._write(
            config,
            voucher,
            over=check.held,
            ceiling=check.ceiling,
            covered=check.checked.covered,
            charged=charged,
            charge=charge,
        )
        before = self._stored.get(config.channel_id)
        best = voucher
        if before is not None and before.ceiling > voucher.cumulative_amount:
            best = before.voucher
        self._remember(config.channel_id, Held(best, charged, check.refunded))
        return increment

    async def _write(
        self,
        config: ChannelConfig,
        voucher: Voucher,
        *,
        over: int,
        charged: int,
        ceiling: int | None = None,
        covered: bool = False,
        charge: SignedReceipt | None = None,
    ) -> int:
        """The book's ``accept_if_higher``: a book with a writer of its own (the ledger) is
        awaited, not called from a thread; the result comes after the commit. ``ceiling``:
        the best voucher read with ``over``, which a ledger (shared by processes) must still
        hold; a book of this process's own is moved by this paywall alone, one request per
        channel at a time."""

        def this_write(method: Callable[..., _T], **more: Any) -> Callable[..., _T]:
            return functools.partial(
                method,
                config,
                voucher,
                over=over,
                covered=covered,
                charge=charge,
                charged=charged,
                **more,
            )

        book = self._committing
        if book is not None:
            return await _committed(this_write(book.accept_soon, ceiling=ceiling))
        return await self._with_book(this_write(self.book.accept_if_higher))

    async def _send_reader_page(self, scope: Scope, send: Send, path: _Resource) -> None:
        """The 402 a browser gets: the page to pay from, with the usual header."""
        refusal = _Refusal(402, Reason.PAYMENT_REQUIRED, _ASK)
        page = reader_page(
            self.offer(path.route.price, path.route.metered, path.route.stream),
            path.url,
            path.route.what,
            scope.get("root_path", ""),
        )
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(page)).encode()),
            (b"cache-control", b"no-store"),
            (b"vary", b"accept"),
            self._required_header(path, refusal),
        ]
        await send({"type": "http.response.start", "status": 402, "headers": headers})
        await send({"type": "http.response.body", "body": page})

    async def _refuse(self, send: Send, price: int, path: _Resource, refusal: _Refusal) -> None:
        header = [self._required_header(path, refusal)]
        await _send_json(send, refusal.status, refusal.reason, refusal.message, header)

    def _required_header(self, path: _Resource, refusal: _Refusal) -> tuple[bytes, bytes]:
        gate = self._access_on(path.route)
        required = PaymentRequired(
            offers=self._offers_for(path.route),
            error=refusal.reason,
            description=path.route.what,
            resource=path.url,
            channel=refusal.view,
            mime_type=path.route.mime_type,
            access=None if gate is None else gate.offer(path.name),
            payment_identifier=EXACT in path.route.schemes,
        )
        return (b"payment-required", required.encode().encode("ascii"))


def _keep_latest(cache: OrderedDict[bytes, _V], key: bytes, value: _V, bound: int) -> None:
    """Keep ``value`` as the latest of ``cache``, least recently kept out past ``bound``."""
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > bound:
        cache.popitem(last=False)


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The value of a request header (the first, if it is sent twice)."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _paid_headers(message: Message, *added: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """A paid response's headers: the handler's, the receipt (and a credit token), and no
    shared caching."""
    return _private([*message.get("headers", ()), *added])


def _private(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Paid content must not be served from a shared cache to the next reader."""
    if not any(name.lower() == b"cache-control" for name, _ in headers):
        headers.append((b"cache-control", b"private, no-store"))
    return headers


async def _send_script(send: Send, head_only: bool) -> None:
    """The browser client, unpriced; revalidated by pages so a new micropay takes effect."""
    body = script()
    headers = [
        (b"content-type", b"text/javascript; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-cache"),
        (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head_only else body})


async def _send_json(
    send: Send, status: int, reason: str, message: str, headers: list[tuple[bytes, bytes]]
) -> None:
    """An error answer: the reason code and message as JSON, never cached."""
    body = json.dumps({"error": reason, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Unpaid:
    """``request.state.payment`` on a route the paywall does not price: false, and reading
    any of its fields raises :class:`RouteNotPricedError` and marks the request (``read``),
    so the paywall answers a 403 even if the app catches the error."""

    __slots__ = ("_request", "read")

    def __init__(self, method: str, route: str) -> None:
        self._request = f"{method} {route}"
        self.read: RouteNotPricedError | None = None

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<no payment: {self._request} is not priced>"

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):  # copy, pickle and friends probing for hooks
            raise AttributeError(name)
        self.read = RouteNotPricedError(
            f"the handler of {self._request} reads request.state.payment.{name}, but the "
            "paywall prices no route that matches it: add the route to its prices"
        )
        raise self.read


@dataclass(frozen=True)
class _Resource:
    """The request a 402 is about: its absolute URL and the priced route it falls under."""

    url: str
    route: PricedRoute
    name: str
    """``METHOD /path``: what a receipt and an access receipt name."""


def request_url(scope: Scope) -> str:
    """The absolute URL of a request, as x402 names a resource: the scheme the server saw,
    the ``Host`` header (or the server's address), the full path and the query."""
    host = None
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = value.decode("latin-1")
            break
    if not host:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] in (None, 80, 443) else f"{server[0]}:{server[1]}"
    query = scope.get("query_string", b"")
    suffix = "?" + query.decode("latin-1") if query else ""
    return f"{scope.get('scheme', 'http')}://{host}{scope['path']}{suffix}"


def route_path(scope: Scope) -> str:
    """The path the app routes on: ``scope["path"]`` without a leading ``root_path``.

    Starlette's router strips the root path the same way (its helper for it is private, so
    the rule is restated here): servers started with ``--root-path`` and ``Mount`` both keep
    the full path in ``path`` and the prefix in ``root_path``. A path that does not start
    with the root path (an older server that already stripped it) is used as it is.
    """
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if len(path) == len(root):
        return "/"
    return path[len(root) :] if path[len(root)] == "/" else path


def _view(channel_id: bytes, held: Held | None, state: ChannelState) -> ChannelView:
    """What the site holds for a channel, to show its authorizer: the best voucher with the
    charged and refunded totals, or with none, what was claimed on chain (vouchers at or
    below it are worth nothing)."""
    if held is None:
        return ChannelView(channel_id, state.claimed, None, state.deposited)
    return ChannelView(
        channel_id,
        held.ceiling,
        held.voucher.signature,
        state.deposited,
        charged=max(held.charged, state.claimed),
        refunded=held.refunded,
    )


_ASK = "this resource is paid per request: retry with a PAYMENT-SIGNATURE header"


async def _committed(write: Callable[..., Future[_T] | asyncio.Future[_T]]) -> _T:
    """The result of a write the ledger's writer commits (``write`` takes the loop to
    settle on as ``loop``): on an asyncio loop, a future of it, awaited without a thread of
    ours; on any other loop (trio), a thread's future, waited for in a worker thread."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        future = write(loop=None)
        return await anyio.to_thread.run_sync(future.result)
    future = write(loop=loop)
    if isinstance(future, asyncio.Future):
        return await future
    return await asyncio.wrap_future(future, loop=loop)  # a book that keeps to threads
