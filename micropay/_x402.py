"""The wire format of micropay's HTTP 402 protocol: one codec for the paywall and the client.

We follow the header transport of x402 version 2 with our own scheme, ``channel``:

``PAYMENT-REQUIRED`` (server, with 402)
    base64 JSON ``{"x402Version": 2, "error", "resource": {"url", "description",
    "mimeType"}, "accepts": [offer], "extensions": {"channel": view}}``: ``error`` is the
    reason code (:class:`Reason`), ``resource.url`` the absolute URL of the request. An
    *offer* is x402's PaymentRequirements: ``scheme``, ``network`` (CAIP-2
    ``eip155:<chainId>``), ``amount`` (the price per request in base units, a decimal
    string), ``asset`` (token address, zero for ETH), ``payTo``, ``maxTimeoutSeconds`` and
    ``extra``: the channels ``contract``, the voucher ``domain``, ``minDeposit`` and
    ``minWithdrawDelay``. The optional *view* is the server's record of one channel (its
    best voucher), sent when a voucher does not follow it, so a client that lost its state
    resynchronises instead of paying twice. Offers in other schemes (``exact``,
    :mod:`micropay.exact`) are kept as :class:`OfferJSON` for their own parser.
``PAYMENT-SIGNATURE`` (client, on the retry)
    base64 JSON ``{"x402Version": 2, "resource": {"url"}, "accepted": offer, "payload":
    {"channel": config, "cumulativeAmount", "signature"}}``: ``accepted`` echoes the offer
    paid, as x402's PaymentPayload does.
``PAYMENT-RESPONSE`` (server, with the paid content)
    base64 JSON receipt, x402's SettleResponse: ``{"success": true, "transaction": "",
    "scheme", "network", "payer", "channelId", "amount", "cumulativeAmount",
    "remaining"}``: what this request cost, the channel's new total and what is left of
    the deposit. Settlement is deferred to the payee's claim, so no transaction exists
    yet: ``transaction`` is the empty string (x402's value when there is no transaction
    hash), and the channel id says where the payment went. A signed receipt
    (:mod:`micropay.receipts`) adds ``"contract", "asset", "resource", "issuedAt",
    "receiptId", "signature"``; older readers ignore them.
``PAYMENT-ACCESS`` (client, instead of paying, where the site opts in)
    base64 JSON ``{"x402Version": 2, "receipt": {signed receipt}, "nonce", "proof"}``: an
    earlier receipt of the same resource, the nonce of the site's 402
    (``extensions.access``) and the session key's signature over both
    (:mod:`micropay.access`).

Decoding is strict because the paywall decodes what strangers send: a size cap before
anything else, canonical base64, UTF-8 JSON without duplicate keys or NaN, every field of
the expected type, amounts as canonical decimal strings within uint256, hex of the exact
length. Anything else raises :class:`~micropay.errors.PaymentHeaderError` with a
reason code, never another exception.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from micropay._keccak import checksum_address
from micropay.errors import PaymentHeaderError, ReceiptError, VoucherError
from micropay.receipts import SignedReceipt
from micropay.vouchers import (
    DOMAIN_NAME,
    DOMAIN_VERSION,
    ChannelConfig,
    Voucher,
    VoucherDomain,
    full_signature,
)

X402_VERSION: Final = 2
SCHEME: Final = "channel"

PAYMENT_REQUIRED: Final = "PAYMENT-REQUIRED"
PAYMENT_SIGNATURE: Final = "PAYMENT-SIGNATURE"
PAYMENT_RESPONSE: Final = "PAYMENT-RESPONSE"
PAYMENT_ACCESS: Final = "PAYMENT-ACCESS"
PAYMENT_STREAM: Final = "PAYMENT-STREAM"
"""On a request: ``voucher`` marks a voucher-only request, the next increment of a stream."""

# A PAYMENT-SIGNATURE is about 700 bytes; 4 KiB leaves room without inviting abuse.
MAX_PAYMENT_HEADER: Final = 4096
# What a client accepts from a server: a 402 may list several offers.
MAX_SERVER_HEADER: Final = 32768
# A PAYMENT-ACCESS holds a whole receipt, whose resource may be up to 2 KiB.
MAX_ACCESS_HEADER: Final = 8192

_UINT256_MAX: Final = 2**256 - 1
_UINT_RE: Final = re.compile(r"(?:0|[1-9][0-9]{0,77})")
_ADDRESS_RE: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_BYTES32_RE: Final = re.compile(r"0x[0-9a-fA-F]{64}")
# 65 bytes (r, s, v) or 64 bytes (EIP-2098 compact); both normalise to 65 on parsing.
_SIGNATURE_RE: Final = re.compile(r"0x(?:[0-9a-fA-F]{2}){64,65}")
_NETWORK_RE: Final = re.compile(r"eip155:([1-9][0-9]{0,77})")
# Parsed configurations and checksummed addresses remembered (strangers cannot grow it).
_CACHE_SIZE: Final = 8192


class Reason:
    """Reason codes in error bodies; the client branches on them, people read ``message``."""

    PAYMENT_REQUIRED = "payment_required"
    # 400/431: the header is not a payment at all
    HEADER_TOO_LARGE = "header_too_large"
    DUPLICATE_HEADER = "duplicate_header"
    INVALID_BASE64 = "invalid_base64"
    INVALID_JSON = "invalid_json"
    INVALID_PAYLOAD = "invalid_payload"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNSUPPORTED_SCHEME = "unsupported_scheme"
    # 402: a well-formed payment this paywall does not take
    WRONG_NETWORK = "wrong_network"
    WRONG_ASSET = "wrong_asset"
    WRONG_PAYEE = "wrong_payee"
    PRICE_MISMATCH = "price_mismatch"
    WITHDRAW_DELAY_TOO_SHORT = "withdraw_delay_too_short"
    DEPOSIT_TOO_SMALL = "deposit_too_small"
    INVALID_SIGNATURE = "invalid_signature"
    UNKNOWN_CHANNEL = "unknown_channel"
    STALE_VOUCHER = "stale_voucher"
    CUMULATIVE_MISMATCH = "cumulative_mismatch"
    INSUFFICIENT_DEPOSIT = "insufficient_deposit"
    CHANNEL_CLOSING = "channel_closing"
    # 402/409: an ``exact`` authorization the site does not take or could not settle
    AUTHORIZATION_USED = "authorization_used"
    AUTHORIZATION_NOT_YET_VALID = "authorization_not_yet_valid"
    AUTHORIZATION_EXPIRED = "authorization_expired"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    SETTLEMENT_FAILED = "settlement_failed"
    SETTLEMENT_TIMEOUT = "settlement_timeout"
    SETTLEMENT_PENDING = "settlement_pending"
    PAYMENT_ID_CONFLICT = "payment_id_conflict"  # 409: the id names another payment
    # 402: the site settles through an x402 facilitator and it did not settle this payment
    FACILITATOR_UNAVAILABLE = "facilitator_unavailable"  # timed out, unreachable, not 200
    FACILITATOR_REFUSED = "facilitator_refused"  # /verify invalid, or /settle unsuccessful
    FACILITATOR_INVALID_RESPONSE = "facilitator_invalid_response"  # garbage, or not this payment
    ACCESS_DENIED = "access_denied"  # an access receipt that does not let the reader in
    # 403: the handler expects a payment but the paywall prices no route for the request
    ROUTE_NOT_PRICED = "route_not_priced"
    # 409: another request on the same channel is being served
    CHANNEL_BUSY = "channel_busy"
    # 409: a voucher-only request on a channel with no stream in progress
    NO_STREAM = "no_stream"
    # 503: the paywall cannot read the chain (its node is down): nothing is served
    CHAIN_UNAVAILABLE = "chain_unavailable"


# -- JSON and field helpers ----------------------------------------------------------------


def _encode(obj: Mapping[str, Any]) -> str:
    """The header value of a JSON object: compact JSON, base64."""
    return base64.b64encode(_COMPACT.encode(obj).encode()).decode("ascii")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise PaymentHeaderError(Reason.INVALID_JSON, "duplicate key in a JSON object")
    return obj


def _reject_constant(name: str) -> Any:
    raise PaymentHeaderError(Reason.INVALID_JSON, f"{name} is not a JSON number")


# Built once: ``json.dumps`` and ``json.loads`` given options build a new coder per call, a
# cost every paid request would pay twice.
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_STRICT = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def _decode(value: str | bytes, limit: int, what: str) -> dict[str, Any]:
    """Base64 JSON object from a header value, or :class:`PaymentHeaderError`."""
    if len(value) > limit:
        raise PaymentHeaderError(
            Reason.HEADER_TOO_LARGE, f"{what} is {len(value)} bytes; the limit is {limit}", 431
        )
    try:
        if len(value) % 4:  # b64decode tolerates surplus padding; canonical base64 does not
            raise binascii.Error("length is not a multiple of 4")
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PaymentHeaderError(Reason.INVALID_BASE64, f"{what} is not canonical base64") from None
    try:
        obj = _STRICT.decode(raw.decode("utf-8"))
    except PaymentHeaderError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PaymentHeaderError(Reason.INVALID_JSON, f"{what} is not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{what} is not a JSON object")
    return obj


def _field(obj: dict[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in obj:
        raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where} lacks {name!r}")
    value = obj[name]
    # bool is an int subclass; a JSON true is never a number here.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PaymentHeaderError(
            Reason.INVALID_PAYLOAD, f"{where}.{name} must be a JSON {kind.__name__}"
        )
    return value


def _uint(obj: dict[str, Any], name: str, where: str) -> int:
    text = _field(obj, name, str, where)
    if not _UINT_RE.fullmatch(text):
        raise PaymentHeaderError(
            Reason.INVALID_PAYLOAD, f"{where}.{name} must be a canonical decimal string"
        )
    value = int(text)
    if value > _UINT256_MAX:
        raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where}.{name} exceeds uint256")
    return value


def _address(obj: dict[str, Any], name: str, where: str) -> str:
    text = _field(obj, name, str, where)
    checksummed = checksum_address(text)
    if checksummed is None:
        raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where}.{name} is not an address")
    return checksummed


def _hex(obj: dict[str, Any], name: str, pattern: re.Pattern[str], where: str) -> bytes:
    text = _field(obj, name, str, where)
    if not pattern.fullmatch(text):
        raise PaymentHeaderError(
            Reason.INVALID_PAYLOAD, f"{where}.{name} is not hex of the right size"
        )
    return bytes.fromhex(text[2:])


def _version(obj: dict[str, Any], where: str) -> None:
    version = obj.get("x402Version")
    if version != X402_VERSION or isinstance(version, bool):
        raise PaymentHeaderError(
            Reason.UNSUPPORTED_VERSION, f"{where}: x402Version must be {X402_VERSION}"
        )


def network_of(chain_id: int) -> str:
    """The CAIP-2 name of an EVM chain."""
    return f"eip155:{chain_id}"


def chain_id_of(network: str) -> int | None:
    """The chain id in a CAIP-2 ``eip155:<id>`` name, or None for anything else."""
    match = _NETWORK_RE.fullmatch(network)
    return int(match.group(1)) if match else None


# -- the offer (x402 PaymentRequirements) --------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """One way to pay for a resource: the price on one channels deployment, in one asset."""

    price: int
    asset: str
    pay_to: str
    domain: VoucherDomain
    min_deposit: int
    min_withdraw_delay: int
    max_timeout_seconds: int = 60
    metered: bool = False
    """``price`` is the most a request may be charged, not what it is: the voucher is the
    charged total plus ``price``, the receipt says what was charged (``extra.metered``)."""
    stream: StreamTerms | None = None
    """A streamed response priced per unit (``extra.stream``): ``price`` is one increment."""
    prepay: int = 0
    """``extra.prepay``: one voucher may prepay up to this many requests (0: one per voucher;
    see :mod:`micropay.credit`)."""

    @property
    def network(self) -> str:
        return network_of(self.domain.chain_id)

    @property
    def contract(self) -> str:
        return self.domain.verifying_contract

    def to_json(self) -> dict[str, Any]:
        terms = offer_terms(
            SCHEME, self.network, self.price, self.asset, self.pay_to, self.max_timeout_seconds
        )
        extra: dict[str, Any] = {
            "contract": self.contract,
            "domain": self.domain.to_json(),
            "minDeposit": str(self.min_deposit),
            "minWithdrawDelay": self.min_withdraw_delay,
        }
        if self.metered:  # absent on fixed prices: their offers are as before
            extra["metered"] = True
        if self.stream is not None:
            extra["stream"] = self.stream.to_json()
        if self.prepay:  # absent unless the site sells prepaid credit
            extra["prepay"] = self.prepay
        return {**terms, "extra": extra}

    @classmethod
    def from_json(cls, obj: Any) -> Offer | None:
        """The offer, or None if it is for another scheme (a client skips those)."""
        where = "accepts[]"
        if not isinstance(obj, dict):
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where} must hold objects")
        if _field(obj, "scheme", str, where) != SCHEME:
            return None
        extra = _field(obj, "extra", dict, where)
        domain_json = _field(extra, "domain", dict, f"{where}.extra")
        chain_id = chain_id_of(_field(obj, "network", str, where))
        if chain_id is None:
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where}.network is not eip155")
        if (
            domain_json.get("name") != DOMAIN_NAME
            or domain_json.get("version") != DOMAIN_VERSION
            or type(domain_json.get("chainId")) is not int
            or domain_json.get("chainId") != chain_id
        ):
            raise PaymentHeaderError(
                Reason.INVALID_PAYLOAD, f"{where}.extra.domain does not match the network"
            )
        contract = _address(extra, "contract", f"{where}.extra")
        if _address(domain_json, "verifyingContract", f"{where}.extra.domain") != contract:
            raise PaymentHeaderError(
                Reason.INVALID_PAYLOAD, f"{where}.extra.domain is for another contract"
            )
        timeout = _field(obj, "maxTimeoutSeconds", int, where)
        delay = _field(extra, "minWithdrawDelay", int, f"{where}.extra")
        if timeout < 0 or not 0 <= delay < 2**32:
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where} has a negative duration")
        metered = extra.get("metered", False)
        if type(metered) is not bool:
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where}.extra.metered is a boolean")
        price = _uint(obj, "amount", where)
        stream = None
        if "stream" in extra:
            stream = StreamTerms.from_json(_field(extra, "stream", dict, f"{where}.extra"))
            if not metered or stream.unit_price * stream.increment != price:
                raise PaymentHeaderError(
                    Reason.INVALID_PAYLOAD,
                    f"{where}: a stream is metered and its amount is unitPrice x increment",
                )
        prepay = extra.get("prepay", 0)
        if type(prepay) is not int or not 0 <= prepay < 2**32 or (prepay and metered):
            raise PaymentHeaderError(
                Reason.INVALID_PAYLOAD, f"{where}.extra.prepay is a count on a fixed price"
            )
        return cls(
            price=price,
            asset=_address(obj, "asset", where),
            pay_to=_address(obj, "payTo", where),
            domain=VoucherDomain(chain_id, contract),
            min_deposit=_uint(extra, "minDeposit", f"{where}.extra"),
            min_withdraw_delay=delay,
            max_timeout_seconds=timeout,
            metered=metered,
            stream=stream,
            prepay=prepay,
        )


@dataclass(frozen=True)
class StreamTerms:
    """How a streamed response is priced (``extra.stream`` of a ``channel`` offer):
    ``unit_price`` per unit delivered, paid ``increment`` units ahead at most, a unit being
    one server-sent event, or ``unit_bytes`` bytes of a chunked body (0: server-sent
    events). See docs/protocol.md, "Streamed responses"."""

    unit_price: int
    increment: int
    unit_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"unitPrice": str(self.unit_price), "increment": self.increment}
        if self.unit_bytes:
            obj["unitBytes"] = self.unit_bytes
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> StreamTerms:
        where = "extra.stream"
        increment = _field(obj, "increment", int, where)
        unit_bytes = obj.get("unitBytes", 0)
        if type(unit_bytes) is not int or unit_bytes < 0 or increment <= 0:
            raise PaymentHeaderError(
                Reason.INVALID_PAYLOAD, f"{where}: increment > 0 and unitBytes >= 0 are integers"
            )
        unit_price = _uint(obj, "unitPrice", where)
        if unit_price == 0:
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where}.unitPrice is positive")
        return cls(unit_price, increment, unit_bytes)


# -- the server's view of a channel --------------------------------------------------------


@dataclass(frozen=True)
class ChannelView:
    """What the paywall holds for a channel: its best voucher, or the on-chain claimed total.

    ``signature`` is the best voucher's, so the client can check that it signed that total
    itself; None when the paywall holds no voucher and ``cumulative_amount`` is what was
    already claimed on chain (the client can read that itself).

    ``charged`` is the channel's charged total (JSON ``charged``, absent: the whole best
    voucher, as sites before metered prices meant): the next voucher is it plus the price.
    ``refunded`` is the total refunded off chain (JSON ``refunded``, absent: 0).
    """

    channel_id: bytes
    cumulative_amount: int
    signature: bytes | None
    deposited: int | None = None
    charged: int | None = None
    refunded: int = 0

    @property
    def charged_total(self) -> int:
        """What the next voucher builds on: the charged total, or the whole best voucher."""
        return self.cumulative_amount if self.charged is None else self.charged

    def __post_init__(self) -> None:
        # A site may echo the client's signature in the 64-byte form; the client compares
        # it with what it signed, so it is held in the one 65-byte form.
        if self.signature is not None:
            object.__setattr__(self, "signature", full_signature(self.signature))

    @property
    def voucher(self) -> Voucher | None:
        if self.signature is None:
            return None
        return Voucher(self.channel_id, self.cumulative_amount, self.signature)

    def to_json(self) -> dict[str, Any]:
        return {
            "channelId": "0x" + self.channel_id.hex(),
            "cumulativeAmount": str(self.cumulative_amount),
            "signature": None if self.signature is None else "0x" + self.signature.hex(),
            "deposited": None if self.deposited is None else str(self.deposited),
            **({} if self.charged is None else {"charged": str(self.charged)}),
            "refunded": str(self.refunded),
        }

    @classmethod
    def from_json(cls, obj: Any) -> ChannelView:
        where = "extensions.channel"
        if not isinstance(obj, dict):
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where} must be an object")
        signature = None
        if obj.get("signature") is not None:
            signature = _hex(obj, "signature", _SIGNATURE_RE, where)
        deposited = None
        if obj.get("deposited") is not None:
            deposited = _uint(obj, "deposited", where)
        cumulative = _uint(obj, "cumulativeAmount", where)
        charged = None if obj.get("charged") is None else _uint(obj, "charged", where)
        refunded = 0 if obj.get("refunded") is None else _uint(obj, "refunded", where)
        if charged is not None and charged > cumulative:
            raise PaymentHeaderError(
                Reason.INVALID_PAYLOAD, f"{where}.charged is above the voucher's ceiling"
            )
        return cls(
            channel_id=_hex(obj, "channelId", _BYTES32_RE, where),
            cumulative_amount=cumulative,
            signature=signature,
            deposited=deposited,
            charged=charged,
            refunded=refunded,
        )


# -- PAYMENT-REQUIRED ----------------------------------------------------------------------


def offer_terms(
    scheme: str, network: str, price: int, asset: str, pay_to: str, timeout: int | None = None
) -> dict[str, Any]:
    """The terms every x402 offer states, in x402's order and spelling (``amount`` a decimal
    string); the scheme adds its ``extra``."""
    terms: dict[str, Any] = {
        "scheme": scheme,
        "network": network,
        "amount": str(price),
        "asset": asset,
        "payTo": pay_to,
    }
    if timeout is not None:
        terms["maxTimeoutSeconds"] = timeout
    return terms


def encode_payment(
    paid: dict[str, Any],
    offer: dict[str, Any] | None,
    resource: str,
    payload: dict[str, Any],
    extensions: dict[str, Any] | None = None,
) -> str:
    """A ``PAYMENT-SIGNATURE`` header in any scheme: x402's PaymentPayload, whose ``accepted``
    echoes the offer's terms (timeout, extra), as x402 clients do, under what this payload
    pays (``paid``: :func:`offer_terms`)."""
    accepted = {**(offer or {}), **paid}
    accepted.setdefault("maxTimeoutSeconds", Offer.max_timeout_seconds)
    accepted.setdefault("extra", {})
    obj: dict[str, Any] = {"x402Version": X402_VERSION}
    if resource:
        obj["resource"] = resource_json(resource)
    obj["accepted"] = accepted
    obj["payload"] = payload
    if extensions:
        obj["extensions"] = extensions
    return _encode(obj)


# x402's ``payment-identifier`` extension: the site declares it in the 402's extensions, a
# client puts ``info.id`` in its PaymentPayload's extensions, and a resend under the same id
# is the same payment (see micropay.exact).
PAYMENT_IDENTIFIER: Final = "payment-identifier"
_PAYMENT_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,128}")


def payment_identifier_declaration(required: bool = False) -> dict[str, Any]:
    """The extension as the 402 declares it (x402's ``declare_payment_identifier_extension``)."""
    return {
        "info": {"required": required},
        "schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "required": {"type": "boolean"},
                "id": {
                    "type": "string",
                    "minLength": 16,
                    "maxLength": 128,
                    "pattern": "^[a-zA-Z0-9_-]+$",
                },
            },
            "required": ["required"],
        },
    }


def payment_id_of(obj: dict[str, Any]) -> str | None:
    """The ``payment-identifier`` id a PaymentPayload carries: None if it carries none (an
    x402 client echoes the site's declaration without an id); a malformed one is refused."""
    extensions = obj.get("extensions")
    if not isinstance(extensions, dict) or extensions.get(PAYMENT_IDENTIFIER) is None:
        return None
    where = f"extensions.{PAYMENT_IDENTIFIER}"
    info = _field(_field(extensions, PAYMENT_IDENTIFIER, dict, "extensions"), "info", dict, where)
    payment_id = info.get("id")
    if payment_id is None:
        return None
    if not isinstance(payment_id, str) or not _PAYMENT_ID_RE.fullmatch(payment_id):
        raise PaymentHeaderError(
            Reason.INVALID_PAYLOAD,
            f"{where}.info.id must be 16-128 letters, digits, '-' or '_'",
        )
    return payment_id


def resource_json(url: str, description: str = "", mime_type: str = "") -> dict[str, Any]:
    """x402's ResourceInfo: the absolute URL, and what it is where the site says so."""
    obj: dict[str, Any] = {"url": url}
    if description:
        obj["description"] = description
    if mime_type:
        obj["mimeType"] = mime_type
    return obj


@dataclass(frozen=True)
class PaymentRequired:
    """A 402's ``PAYMENT-REQUIRED``: what the resource costs, why the last try failed.

    ``error`` is the reason code (:class:`Reason`); ``resource`` the resource's absolute URL,
    ``description`` and ``mime_type`` what it is (x402's ResourceInfo). Why a payment was
    refused, in words, is in the JSON body, not here: x402 has no field for it.
    """

    offers: tuple[Offer | OfferJSON, ...]
    error: str = Reason.PAYMENT_REQUIRED
    description: str = ""
    resource: str = ""
    channel: ChannelView | None = None
    mime_type: str = ""
    access: AccessOffer | None = None
    payment_identifier: bool = False  # declare x402's payment-identifier extension

    def encode(self) -> str:
        obj: dict[str, Any] = {
            "x402Version": X402_VERSION,
            "error": self.error,
            "resource": resource_json(self.resource, self.description, self.mime_type),
            "accepts": [offer.to_json() for offer in self.offers],
        }
        extensions: dict[str, Any] = {}
        if self.channel is not None:
            extensions["channel"] = self.channel.to_json()
        if self.access is not None:
            extensions["access"] = self.access.to_json()
        if self.payment_identifier:
            extensions[PAYMENT_IDENTIFIER] = payment_identifier_declaration()
        if extensions:
            obj["extensions"] = extensions
        return _encode(obj)

    @classmethod
    def decode(cls, value: str | bytes) -> PaymentRequired:
        """Parse a server's header; offers in schemes other than ``channel`` are kept as
        :class:`OfferJSON` for the schemes' own parsers (a client skips what it cannot pay)."""
        obj = _decode(value, MAX_SERVER_HEADER, PAYMENT_REQUIRED)
        _version(obj, PAYMENT_REQUIRED)
        accepts = _field(obj, "accepts", list, PAYMENT_REQUIRED)
        offers: list[Offer | OfferJSON] = []
        for item in accepts:
            offer = Offer.from_json(item)
            if offer is not None:
                offers.append(offer)
            elif isinstance(item.get("scheme"), str):
                offers.append(OfferJSON(item["scheme"], item))
        extensions = obj.get("extensions")
        channel = None
        if isinstance(extensions, dict) and extensions.get("channel") is not None:
            channel = ChannelView.from_json(extensions["channel"])
        access = None
        if isinstance(extensions, dict) and extensions.get("access") is not None:
            access = AccessOffer.from_json(extensions["access"])
        error = obj.get("error")
        resource = obj.get("resource")
        resource = resource if isinstance(resource, dict) else {}
        description, url, mime_type = (
            resource.get(name) for name in ("description", "url", "mimeType")
        )
        return cls(
            offers=tuple(offers),
            error=error if isinstance(error, str) else Reason.PAYMENT_REQUIRED,
            description=description if isinstance(description, str) else "",
            resource=url if isinstance(url, str) else "",
            channel=channel,
            mime_type=mime_type if isinstance(mime_type, str) else "",
            access=access,
            payment_identifier=isinstance(extensions, dict) and PAYMENT_IDENTIFIER in extensions,
        )

    @property
    def channel_offers(self) -> tuple[Offer, ...]:
        return tuple(offer for offer in self.offers if isinstance(offer, Offer))


@dataclass(frozen=True)
class OfferJSON:
    """An offer in a scheme other than ``channel``, kept as the server sent it, for that
    scheme's own parser (:mod:`micropay.exact` for ``exact``)."""

    scheme: str
    obj: dict[str, Any] = field(hash=False)

    def to_json(self) -> dict[str, Any]:
        return self.obj


# -- PAYMENT-SIGNATURE ---------------------------------------------------------------------

# Parsing a channel configuration checksums four addresses and hashes the id (~80 µs), more
# than verifying the voucher; a channel sends the same configuration with every request.
_config_cache: OrderedDict[tuple[Any, ...], ChannelConfig] = OrderedDict()


def _channel_config(obj: Any) -> ChannelConfig:
    where = "payload.channel"
    if not isinstance(obj, dict):
        raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where} must be an object")
    # Typed key: 3600, 3600.0 and True compare equal in Python but are not equally valid.
    key = tuple((type(obj.get(name)), obj.get(name)) for name in _CONFIG_FIELDS)
    try:
        cached = _config_cache.get(key)
    except TypeError:  # an unhashable value (a list, an object): certainly malformed
        cached = None
    if cached is not None and len(obj) == len(_CONFIG_FIELDS):
        return cached
    if set(obj) != set(_CONFIG_FIELDS):
        raise PaymentHeaderError(
            Reason.INVALID_PAYLOAD, f"{where} must have exactly {', '.join(_CONFIG_FIELDS)}"
        )
    for name in ("payer", "payee", "token", "authorizer"):
        _address(obj, name, where)
    _hex(obj, "salt", _BYTES32_RE, where)
    _field(obj, "withdrawDelay", int, where)
    try:
        config = ChannelConfig.from_json(obj)
    except VoucherError as err:
        raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where}: {err}") from None
    _config_cache[key] = config
    if len(_config_cache) > _CACHE_SIZE:
        _config_cache.popitem(last=False)
    return config


_CONFIG_FIELDS: Final = ("payer", "payee", "token", "authorizer", "withdrawDelay", "salt")


@dataclass(frozen=True)
class PaymentPayload:
    """A ``PAYMENT-SIGNATURE``: which offer the client accepted, and the signed voucher."""

    network: str
    price: int
    asset: str
    pay_to: str
    config: ChannelConfig
    voucher: Voucher
    offer: Offer | None = None  # what ``accepted`` echoes, as x402 clients do
    resource: str = ""  # the 402's resource URL, echoed

    def encode(self) -> str:
        return encode_payment(
            offer_terms(SCHEME, self.network, self.price, self.asset, self.pay_to),
            self.offer.to_json() if self.offer is not None else None,
            self.resource,
            self.payload_json(),
        )

    def payload_json(self) -> dict[str, Any]:
        """The scheme's own part, x402's ``payload``: the channel, the total, the signature
        (what an x402 SDK scheme plugin returns for the SDK to wrap)."""
        return {
            "channel": self.config.to_json(),
            "cumulativeAmount": str(self.voucher.cumulative_amount),
            "signature": "0x" + self.voucher.signature.hex(),
        }

    @classmethod
    def decode(cls, value: str | bytes) -> PaymentPayload:
        obj = _decode(value, MAX_PAYMENT_HEADER, PAYMENT_SIGNATURE)
        _version(obj, PAYMENT_SIGNATURE)
        accepted = _field(obj, "accepted", dict, PAYMENT_SIGNATURE)
        scheme = accepted.get("scheme")
        if scheme != SCHEME:
            raise PaymentHeaderError(
                Reason.UNSUPPORTED_SCHEME, f"scheme {scheme!r} is not supported; use {SCHEME!r}"
            )
        payload = _field(obj, "payload", dict, PAYMENT_SIGNATURE)
        config = _channel_config(payload.get("channel"))
        cumulative = _uint(payload, "cumulativeAmount", "payload")
        signature = _hex(payload, "signature", _SIGNATURE_RE, "payload")
        return cls(
            network=_field(accepted, "network", str, "accepted"),
            price=_uint(accepted, "amount", "accepted"),
            asset=_address(accepted, "asset", "accepted"),
            pay_to=_address(accepted, "payTo", "accepted"),
            config=config,
            voucher=Voucher(config.channel_id, cumulative, signature),
        )


# -- PAYMENT-RESPONSE ----------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    """A ``PAYMENT-RESPONSE``: what a served request was charged and what the channel holds.

    ``signed`` is the site's signed receipt of the charge (None from a site that signs
    none, as micropay sites did before receipts were signed): the same channel, payer,
    amount and total, with the resource, time, asset and receipt id, and the signature.

    ``amount`` is this request's charge and ``cumulative_amount`` the channel's charged total
    after it. ``ceiling`` is the voucher it was charged under (JSON ``ceiling``; absent: the
    charged total, as fixed prices have it) and ``refunded`` the channel's refunded total
    (JSON ``refunded``; absent: 0): a client checks the charged total against both.
    """

    network: str
    payer: str
    channel_id: bytes
    amount: int
    cumulative_amount: int
    remaining: int
    signed: SignedReceipt | None = None
    ceiling: int | None = None
    refunded: int = 0

    @property
    def ceiling_amount(self) -> int:
        """The voucher the charge was made under (the charged total if the site said none)."""
        return self.cumulative_amount if self.ceiling is None else self.ceiling

    def __post_init__(self) -> None:
        signed = self.signed
        if signed is not None and (
            network_of(signed.domain.chain_id),
            signed.payer,
            signed.channel_id,
            signed.amount,
            signed.cumulative_amount,
        ) != (self.network, self.payer, self.channel_id, self.amount, self.cumulative_amount):
            raise PaymentHeaderError(
                Reason.INVALID_PAYLOAD, "the signed receipt is of another charge"
            )

    @classmethod
    def of(
        cls, signed: SignedReceipt, remaining: int, *, ceiling: int | None = None, refunded: int = 0
    ) -> Receipt:
        """The ``PAYMENT-RESPONSE`` carrying a signed receipt."""
        return cls(
            network=network_of(signed.domain.chain_id),
            payer=signed.payer,
            channel_id=signed.channel_id,
            amount=signed.amount,
            cumulative_amount=signed.cumulative_amount,
            remaining=remaining,
            signed=signed,
            ceiling=ceiling,
            refunded=refunded,
        )

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "success": True,
            "transaction": "",
            "scheme": SCHEME,
            "network": self.network,
            "payer": self.payer,
            "channelId": "0x" + self.channel_id.hex(),
            "amount": str(self.amount),
            "cumulativeAmount": str(self.cumulative_amount),
            "remaining": str(self.remaining),
            "refunded": str(self.refunded),
        }
        if self.ceiling is not None:  # a paywall always says; absent, it is the charged total
            obj["ceiling"] = str(self.ceiling)
        signed = self.signed
        if signed is not None:
            obj.update(
                contract=signed.domain.verifying_contract,
                asset=signed.asset,
                resource=signed.resource,
                issuedAt=signed.issued_at,
                receiptId="0x" + signed.receipt_id.hex(),
                signature="0x" + signed.signature.hex(),
            )
        return obj

    def encode(self) -> str:
        return _encode(self.to_json())

    @classmethod
    def decode(cls, value: str | bytes) -> Receipt:
        return cls.from_json(_decode(value, MAX_SERVER_HEADER, PAYMENT_RESPONSE))

    def to_x402_json(self) -> dict[str, Any]:
        """The receipt as an x402 SDK server sends it: x402's SettleResponse keeps only its
        own fields (``success``, ``transaction``, ``network``, ``payer``, ``amount``) and a
        scheme's in ``extra``, so the channel's fields go there (:meth:`from_json` reads
        both forms)."""
        obj = self.to_json()
        own = {name: obj.pop(name) for name in _SETTLE_FIELDS}
        return {**own, "extra": obj}

    @classmethod
    def from_json(cls, obj: Any) -> Receipt:
        """Parse :meth:`to_json`'s form as strictly as a header (receipts files hold it), or
        :meth:`to_x402_json`'s (the channel's fields in ``extra``)."""
        where = PAYMENT_RESPONSE
        if not isinstance(obj, dict):
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where} must be an object")
        if "scheme" not in obj and isinstance(obj.get("extra"), dict):
            extra = obj["extra"]
            if set(extra) & set(_SETTLE_FIELDS):
                raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where}.extra repeats a field")
            obj = {**{k: v for k, v in obj.items() if k != "extra"}, **extra}
        if obj.get("success") is not True or obj.get("scheme") != SCHEME:
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, "not a successful channel receipt")
        network = _field(obj, "network", str, where)
        payer = _address(obj, "payer", where)
        channel_id = _hex(obj, "channelId", _BYTES32_RE, where)
        amount = _uint(obj, "amount", where)
        cumulative = _uint(obj, "cumulativeAmount", where)
        signed = None
        if obj.get("signature") is not None:
            chain_id = chain_id_of(network)
            if chain_id is None:
                raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where}.network is not eip155")
            issued_at = _field(obj, "issuedAt", int, where)
            resource = _field(obj, "resource", str, where)
            try:
                signed = SignedReceipt(
                    domain=VoucherDomain(chain_id, _address(obj, "contract", where)),
                    receipt_id=_hex(obj, "receiptId", _BYTES32_RE, where),
                    channel_id=channel_id,
                    payer=payer,
                    asset=_address(obj, "asset", where),
                    resource=resource,
                    amount=amount,
                    cumulative_amount=cumulative,
                    issued_at=issued_at,
                    signature=_hex(obj, "signature", _SIGNATURE_RE, where),
                )
            except (ReceiptError, VoucherError) as err:
                raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where}: {err}") from None
        return cls(
            network=network,
            payer=payer,
            channel_id=channel_id,
            amount=amount,
            cumulative_amount=cumulative,
            remaining=_uint(obj, "remaining", where),
            signed=signed,
            ceiling=None if obj.get("ceiling") is None else _uint(obj, "ceiling", where),
            refunded=0 if obj.get("refunded") is None else _uint(obj, "refunded", where),
        )


# x402's own SettleResponse fields, beside which a scheme's go in ``extra``.
_SETTLE_FIELDS: Final = ("success", "transaction", "network", "payer", "amount")


# -- access receipts -----------------------------------------------------------------------


@dataclass(frozen=True)
class AccessOffer:
    """In a 402 of a site that takes access receipts: for how long (seconds) a receipt of
    the same resource lets its reader in again, and the nonce to sign for it."""

    period: int
    nonce: bytes

    def to_json(self) -> dict[str, Any]:
        return {"period": self.period, "nonce": "0x" + self.nonce.hex()}

    @classmethod
    def from_json(cls, obj: Any) -> AccessOffer:
        where = "extensions.access"
        if not isinstance(obj, dict):
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where} must be an object")
        period = _field(obj, "period", int, where)
        if period <= 0:
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where}.period must be positive")
        return cls(period, _hex(obj, "nonce", _BYTES32_RE, where))


@dataclass(frozen=True)
class AccessRequest:
    """A ``PAYMENT-ACCESS``: an earlier site-signed receipt, the site's nonce, and the
    proof (signed with the channel's session key) that the presenter controls the channel."""

    receipt: SignedReceipt
    nonce: bytes
    proof: bytes

    def encode(self) -> str:
        return _encode(
            {
                "x402Version": X402_VERSION,
                "receipt": Receipt.of(self.receipt, 0).to_json(),
                "nonce": "0x" + self.nonce.hex(),
                "proof": "0x" + self.proof.hex(),
            }
        )

    @classmethod
    def decode(cls, value: str | bytes) -> AccessRequest:
        obj = _decode(value, MAX_ACCESS_HEADER, PAYMENT_ACCESS)
        _version(obj, PAYMENT_ACCESS)
        receipt = Receipt.from_json(_field(obj, "receipt", dict, PAYMENT_ACCESS)).signed
        if receipt is None:
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, "an access receipt must be signed")
        proof = _hex(obj, "proof", _SIGNATURE_RE, PAYMENT_ACCESS)
        return cls(receipt, _hex(obj, "nonce", _BYTES32_RE, PAYMENT_ACCESS), full_signature(proof))
