"""micropay's ``channel`` scheme inside the official x402 Python SDK: a client and a server plugin.

An agent already on x402 adds one line to pay micropay sites at channel prices::

    client = x402Client()                                   # or x402ClientSync
    client.register("eip155:*", ChannelScheme(payer))       # payer: a micropay HttpPayer
    async with httpx.AsyncClient(transport=x402_httpx_transport(client)) as http:
        await http.get("https://news.example/articles/42")  # opens a channel once, then vouchers

A server on x402 takes ``channel`` payments through micropay's payee and ledger::

    channel = ChannelServerScheme(Payee(channels, site_key, book=ledger), min_deposit=10**14)
    server = x402ResourceServer([channel.facilitator, *other_facilitators])
    server.register(channel.network, channel)
    routes = {"GET /articles/*": RouteConfig(accepts=channel.option(10**13))}
    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)

The client plugin is a thin host for :class:`~micropay.http_client.HttpPayer`: the policy
caps, the channel opened on first contact (its session key derived from the payer's key),
the voucher, the corrective 402 and the receipt are HttpPayer's, through its
:meth:`~micropay.http_client.HttpPayer.prepare` and
:meth:`~micropay.http_client.HttpPayer.conclude`. The SDK's transport tells a scheme how its
payment was answered through the scheme's ``on_payment_response`` hook and, when the hook
says it recovered, signs once more with the same 402: that is how a reader whose wallet
lost its state resynchronises on the site's view of the channel (``extensions.channel``)
and pays exactly one price, as with micropay's own transports. The SDK keeps of a
``PAYMENT-RESPONSE`` only its SettleResponse fields (and ``extra``): a receipt whose channel
fields are in ``extra`` (the server plugin's) is checked and kept; from a micropay paywall,
whose receipt has them at the top level, the SDK passes on only ``success``, ``payer``,
``network`` and ``amount``, which are checked, and the wallet keeps no signed receipt.

The SDK calls a scheme synchronously, so chain calls (opening or topping up a channel)
block its event loop while they last. Requests on one channel go one at a time: a payment
the SDK never reports back (a transport error) counts as unanswered, and the site's
corrective 402 settles the truth on the next one.

The server plugin builds the same offer micropay's :class:`~micropay.paywall.Paywall`
makes and checks and records vouchers with the Paywall's own code
(:meth:`~micropay.paywall.Paywall.check_channel_payment`,
:meth:`~micropay.paywall.Paywall.record_channel_payment`). The facilitator of ``channel``
is local, :attr:`ChannelServerScheme.facilitator`: x402's verify is the paywall's checks
and its settle records the voucher in the payee's book (the payee claims later, many
vouchers per transaction), so ``transaction`` is empty, and the signed receipt goes in
``extra``. A refusal keeps its micropay reason code as x402's ``invalidReason``, which the
SDK puts in the 402's ``error``; a voucher that does not follow the book also gets the
channel's view in ``extensions.channel``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final

from x402.http.types import PaymentOption
from x402.interfaces import PaymentFlowConfig, SchemePaymentRequiredContext
from x402.mechanisms.evm.default_assets import ExactDefaultAssetInfo, find_default_asset
from x402.payment_flow import AUTHORIZATION_PAYMENT_FLOW
from x402.schemas import (
    AssetAmount,
    Network,
    PaymentCreationContext,
    PaymentRequirements,
    PaymentResponseContext,
    Price,
    RecoveredResponseResult,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyContext,
    VerifyResponse,
)
from x402.schemas import PaymentPayload as X402Payload

from micropay._keccak import checksum_address
from micropay._x402 import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    SCHEME,
    Offer,
    PaymentPayload,
    PaymentRequired,
    _encode,
)
from micropay.errors import PaymentHeaderError, PaymentProtocolError
from micropay.http_client import Floors, HttpPayer, Pending, Verdict, site_of
from micropay.payee import Payee
from micropay.paywall import ChannelCheck, PaymentRefusal, Paywall, Scope
from micropay.vouchers import ZERO_ADDRESS

__all__ = ["ChannelFacilitator", "ChannelScheme", "ChannelServerScheme"]


# -- the client plugin -----------------------------------------------------------------------


@dataclass
class _Request:
    """One request the SDK pays: where, the floors HttpPayer keeps per request, the voucher
    in flight, and whether the SDK's one retry after a recovery is still to come."""

    site: str
    url: str
    floors: Floors = field(default_factory=dict)
    pending: Pending | None = None
    recovering: bool = False
    recovered: bool = False


class ChannelScheme:
    """An x402 ``SchemeNetworkClient`` for ``channel``, paying through ``payer``.

    Register it with an ``x402Client`` or ``x402ClientSync``:
    ``client.register("eip155:*", ChannelScheme(payer))``; it pays only on the chain of
    ``payer.w3`` and within ``payer.policy``. The SDK's own spend controls apply first: it
    passes a scheme only offers in assets it knows (USDC and the like, see
    :meth:`find_default_asset`) unless they are listed in ``allowed_assets``; for channels
    in ETH (the zero address) that is
    ``client.set_spend_controls({"allowed_assets": [{"network": "eip155:*", "asset":
    ZERO_ADDRESS}]})``, with the price still capped by ``payer.policy.max_price``.
    """

    scheme: Final = SCHEME

    def __init__(self, payer: HttpPayer) -> None:
        self.payer = payer
        # Per request: the SDK's hooks and create_payment_payload run in the request's own
        # context (its task, or its thread for the sync client), one after the other.
        self._request: ContextVar[_Request | None] = ContextVar(
            f"micropay_channel_request_{id(self)}", default=None
        )

    @staticmethod
    def find_default_asset(asset: str, network: str) -> ExactDefaultAssetInfo | None:
        """The SDK's spend controls pass offers in the stablecoins its EVM schemes know
        (USDC on Base, ...) under their dollar cap without being told: channels in those
        tokens pass as ``exact`` offers in them do (ETH is not one of them)."""
        return find_default_asset(asset, network)

    @property
    def scheme_hooks(self) -> dict[str, Callable[..., Any]]:
        """The SDK's client hooks for this scheme: where a request starts, and its answer."""
        return {
            "on_before_payment_creation": self.before_payment_creation,
            "on_payment_response": self.on_payment_response,
        }

    def before_payment_creation(self, context: PaymentCreationContext) -> None:
        """A request starts (or the SDK signs again after a recovery): note its site, whose
        spending caps apply, and settle a voucher the SDK never reported back."""
        request = self._request.get()
        if request is not None and request.pending is not None:
            self._unanswered(request)
        if request is not None and request.recovering:
            request.recovering = False
            return
        resource = getattr(context.payment_required, "resource", None)
        url = resource.url if resource is not None else ""
        pay_to = context.selected_requirements.pay_to
        self._request.set(_Request(site_of(url) if url else f"x402:{pay_to}", url))

    def create_payment_payload(self, requirements: PaymentRequirements) -> dict[str, Any]:
        """The ``channel`` payload for one request: HttpPayer checks the offer against its
        policy, finds or opens the channel, tops it up and signs the next voucher."""
        request = self._request.get()
        if request is None:  # called outside the SDK's flow: a request of its own
            request = _Request(f"x402:{requirements.pay_to}", "")
            self._request.set(request)
        if request.pending is not None:
            self._unanswered(request)
        try:
            offer = Offer.from_json(requirements.model_dump(by_alias=True, exclude_none=True))
        except PaymentHeaderError as err:
            raise PaymentProtocolError(f"the site's channel offer is malformed: {err}") from None
        if offer is None:
            raise PaymentProtocolError(f"not a channel offer: {requirements.scheme!r}")
        chosen = self.payer.choose(PaymentRequired((offer,)))
        pending = self.payer.prepare(request.site, chosen, request.floors, request.url)
        request.pending = pending
        paid = PaymentPayload(
            chosen.network,
            chosen.price,
            chosen.asset,
            chosen.pay_to,
            pending.channel.config,
            pending.voucher,
        )
        return paid.payload_json()

    def on_payment_response(
        self, context: PaymentResponseContext
    ) -> RecoveredResponseResult | None:
        """The site's answer to the voucher: HttpPayer reads it (receipt, corrective 402);
        where it should sign again (a resync, a top-up, a new channel) the SDK is asked to
        recover, which it does once, with a fresh payload."""
        request = self._request.get()
        pending = request.pending if request is not None else None
        if request is None or pending is None:
            return None
        if (
            context.payment_payload.payload.get("signature")
            != "0x" + pending.voucher.signature.hex()
        ):
            return None  # not the voucher this request has in flight
        request.pending = None
        with pending.channel.lock:
            verdict = self._conclude(pending, context)
        if verdict is Verdict.RETRY and not request.recovered:
            request.recovering = request.recovered = True
            return RecoveredResponseResult()
        return None

    def _conclude(self, pending: Pending, context: PaymentResponseContext) -> Verdict:
        settled = context.settle_response
        if settled is not None and settled.success:
            receipt = settled.model_dump(by_alias=True, exclude_none=True)
            if "channelId" in (settled.extra or {}):
                return self.payer.conclude(pending, 200, {PAYMENT_RESPONSE: _encode(receipt)})
            self.payer.conclude_served(pending)
            _check_settled(settled, pending)
            return Verdict.PAID
        if context.payment_required is not None:
            required = context.payment_required.model_dump(by_alias=True, exclude_none=True)
            return self.payer.conclude(pending, 402, {PAYMENT_REQUIRED: _encode(required)})
        return self.payer.conclude(pending, 402, {})  # a settlement that failed: not charged

    def _unanswered(self, request: _Request) -> None:
        pending, request.pending = request.pending, None
        if pending is not None:
            with pending.channel.lock:
                self.payer.conclude(pending, 0, {})


def _check_settled(settled: SettleResponse, pending: Pending) -> None:
    """What the SDK kept of a micropay receipt must match the voucher's charge."""
    offer, config = pending.offer, pending.channel.config
    amount = settled.amount if settled.amount is not None else str(offer.price)
    payer = checksum_address(settled.payer or "") if settled.payer else config.payer
    if (settled.network, payer, amount) != (offer.network, config.payer, str(offer.price)):
        raise PaymentProtocolError(
            f"the receipt (charged {settled.amount} to {settled.payer} on {settled.network}) "
            f"does not match the voucher (price {offer.price} from {config.payer} on "
            f"{offer.network})"
        )


# -- the server plugin -----------------------------------------------------------------------


@dataclass
class _Seen:
    """What one request's payment was found to be, from its verify to its 402 or settle."""

    resource: str
    voucher: tuple[bytes, int, bytes] | None = None
    check: ChannelCheck | None = None
    refusal: PaymentRefusal | None = None


async def _no_app(scope: Scope, receive: Any, send: Any) -> None:
    raise RuntimeError("the x402 plugin's paywall checks payments; it serves nothing")


class ChannelServerScheme:
    """An x402 ``SchemeNetworkServer`` for ``channel``, taking payments to ``payee``.

    ``asset``, ``min_deposit`` and ``min_withdraw_delay`` are the paywall's terms (see
    :class:`~micropay.paywall.Paywall`; ``min_deposit`` is needed here, as the prices are
    in the x402 routes). Register it and its facilitator with an ``x402ResourceServer``;
    :meth:`option` is a route's ``accepts``. Prices are in the asset's base units (an
    ``int``, a decimal string or an ``AssetAmount`` in the asset), not dollars.
    """

    scheme: Final = SCHEME
    default_asset_transfer_method: Final = "default"
    # Verified before the handler, recorded after it answers 2xx: a failed request is free.
    payment_flows: Final[Mapping[str, PaymentFlowConfig]] = {"default": AUTHORIZATION_PAYMENT_FLOW}

    def __init__(
        self,
        payee: Payee,
        *,
        min_deposit: int,
        asset: str = ZERO_ADDRESS,
        min_withdraw_delay: int | None = None,
        book_in_thread: bool | None = None,
    ) -> None:
        self.paywall = Paywall(
            _no_app,
            payee=payee,
            prices=(),
            asset=asset,
            min_deposit=min_deposit,
            min_withdraw_delay=min_withdraw_delay,
            book_in_thread=book_in_thread,
        )
        self.pay_to: str = payee.account.address
        self.facilitator = ChannelFacilitator(self)
        self._seen: ContextVar[_Seen | None] = ContextVar(
            f"micropay_channel_seen_{id(self)}", default=None
        )

    @property
    def network(self) -> Network:
        return self.paywall.network

    def option(
        self, price: int, max_timeout_seconds: int = Offer.max_timeout_seconds
    ) -> PaymentOption:
        """A route's ``accepts`` entry for ``price`` base units, with the paywall's timeout."""
        return PaymentOption(
            scheme=SCHEME,
            pay_to=self.pay_to,
            price=AssetAmount(amount=str(price), asset=self.paywall.asset),
            network=self.network,
            max_timeout_seconds=max_timeout_seconds,
        )

    def parse_price(self, price: Price, network: Network) -> AssetAmount:
        if network != self.network:
            raise ValueError(f"channel payments here are on {self.network}, not {network}")
        if isinstance(price, AssetAmount):
            if checksum_address(price.asset) != self.paywall.asset:
                raise ValueError(f"channel payments here are in {self.paywall.asset}")
            amount = price.amount
        elif isinstance(price, int) and not isinstance(price, bool):
            amount = str(price)
        elif isinstance(price, str) and price.isdigit():
            amount = price
        else:
            raise ValueError(f"a channel price is in base units of the asset, not {price!r}")
        if int(amount) <= 0:
            raise ValueError("a channel price must be positive")
        return AssetAmount(amount=str(int(amount)), asset=self.paywall.asset)

    def enhance_payment_requirements(
        self,
        requirements: PaymentRequirements,
        supported_kind: SupportedKind,
        extensions: list[str],
    ) -> PaymentRequirements:
        """The offer's ``extra`` (contract, voucher domain, minimum deposit and withdraw
        delay), as micropay's paywall offers it."""
        if checksum_address(requirements.pay_to) != self.pay_to:
            raise ValueError(f"channel payments here go to the payee {self.pay_to}")
        offer = self.paywall.offer(int(requirements.amount))
        return requirements.model_copy(
            update={"extra": {**(requirements.extra or {}), **offer.to_json()["extra"]}}
        )

    # -- hooks the SDK runs for this scheme ------------------------------------------------

    def before_verify(self, context: VerifyContext) -> None:
        """A request's payment is about to be checked: note what its receipt names."""
        http = getattr(context.transport_context, "request", None)
        if http is not None:
            resource = f"{http.method.upper()} {http.adapter.get_path()}"
        else:
            info = getattr(context.payment_payload, "resource", None)
            resource = info.url if info is not None else ""
        self._seen.set(_Seen(resource))

    def enrich_payment_required_response(self, context: SchemePaymentRequiredContext) -> None:
        """A 402 for a voucher that does not follow the book carries the channel's view in
        ``extensions.channel`` (only a voucher signed by the channel's authorizer is shown
        one), so a client that lost its state resumes instead of paying twice. x402 has no
        place for it in the accepts, so it goes in the response being built."""
        seen = self._seen.get()
        refusal = seen.refusal if seen is not None else None
        if refusal is None or refusal.view is None or context.error != refusal.reason:
            return None
        response = context.payment_required_response
        response.extensions = {**(response.extensions or {}), "channel": refusal.view.to_json()}
        return None

    # -- what the facilitator does for it ----------------------------------------------------

    def _seen_now(self, payload: X402Payload) -> _Seen:
        seen = self._seen.get()
        if seen is None:  # verify or settle called without the SDK's hooks
            resource = payload.resource.url if payload.resource is not None else ""
            seen = _Seen(resource)
            self._seen.set(seen)
        return seen

    async def verify(
        self, payload: X402Payload, requirements: PaymentRequirements
    ) -> VerifyResponse:
        seen = self._seen_now(payload)
        seen.check = seen.refusal = None
        try:
            ours = _ours(payload)
            seen.voucher = _voucher_key(ours)
            seen.check = await self.paywall.check_channel_payment(ours, int(requirements.amount))
        except PaymentHeaderError as err:
            return VerifyResponse(
                is_valid=False, invalid_reason=err.reason, invalid_message=str(err)
            )
        except PaymentRefusal as refusal:
            seen.refusal = refusal
            return VerifyResponse(
                is_valid=False,
                invalid_reason=refusal.reason,
                invalid_message=refusal.message,
                payer=ours.config.payer,
            )
        return VerifyResponse(is_valid=True, payer=ours.config.payer)

    async def settle(
        self, payload: X402Payload, requirements: PaymentRequirements
    ) -> SettleResponse:
        seen = self._seen_now(payload)
        payer = None
        try:
            ours = _ours(payload)
            payer = ours.config.payer
            check = seen.check if seen.voucher == _voucher_key(ours) else None
            if check is None or check.price != int(requirements.amount):
                check = await self.paywall.check_channel_payment(ours, int(requirements.amount))
            seen.check = None  # a check stands for one write
            receipt = await self.paywall.record_channel_payment(check, seen.resource)
        except (PaymentHeaderError, PaymentRefusal) as err:
            return SettleResponse(
                success=False,
                error_reason=err.reason,
                error_message=str(err),
                payer=payer,
                transaction="",
                network=requirements.network,
            )
        return SettleResponse.model_validate(receipt.to_x402_json())


def _ours(payload: X402Payload) -> PaymentPayload:
    """The SDK's payload decoded as strictly as the paywall decodes the header."""
    return PaymentPayload.decode(_encode(payload.model_dump(by_alias=True, exclude_none=True)))


def _voucher_key(payload: PaymentPayload) -> tuple[bytes, int, bytes]:
    voucher = payload.voucher
    return voucher.channel_id, voucher.cumulative_amount, voucher.signature


class ChannelFacilitator:
    """x402's ``FacilitatorClient`` for ``channel``, in process: its verify is the paywall's
    checks and its settle records the voucher in the payee's book (nothing goes on chain
    until the payee claims). Pass it to ``x402ResourceServer`` beside any HTTP facilitator."""

    def __init__(self, scheme: ChannelServerScheme) -> None:
        self._scheme = scheme

    def get_supported(self) -> SupportedResponse:
        kind = SupportedKind(x402_version=2, scheme=SCHEME, network=self._scheme.network)
        return SupportedResponse(kinds=[kind])

    async def verify(
        self, payload: X402Payload, requirements: PaymentRequirements
    ) -> VerifyResponse:
        return await self._scheme.verify(payload, requirements)

    async def settle(
        self, payload: X402Payload, requirements: PaymentRequirements
    ) -> SettleResponse:
        return await self._scheme.settle(payload, requirements)
