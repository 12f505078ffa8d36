"""Prepaid credit: one voucher pays for up to k requests of a fixed price; the next ones carry a
server-issued credit token, checked with a keyed hash instead of a signature.

A paywall opts in with ``Paywall(..., prepay=k)``: its fixed-price ``channel`` offers say
``extra.prepay: k``. A client that opts in (``PaymentPolicy(prepay=j)``) signs a voucher whose
ceiling is the channel's best ceiling plus ``n * price`` (1 <= n <= k); the paywall charges one
price for that request and answers with ``PAYMENT-CREDIT``: a token bound to the channel, the
ceiling and the price. The client sends the token instead of a voucher on the following
requests; each one charges the price against the ceiling (charged total + price <= ceiling),
written to the book with the same compare-and-swap on the charged total as a voucher's charge
and durable before the response goes out. docs/protocol.md ("Prepaid credit") has the rules
and the trade-off.

The token (``PAYMENT-CREDIT``, base64url without padding, 113 bytes before encoding)::

    version (1 byte, 1) | channel id (32) | ceiling (32, big-endian) | price (16, big-endian)
    | tag (32): BLAKE2b-256 keyed with the credit key, over the 81 bytes before it

The credit key is derived from the payee key (BLAKE2b keyed with it, personalised
``micropay-credit``, over the chain id and the channels contract), not configured: every worker
process of the site already holds the payee key, so they all accept each other's tokens, a
restarted server accepts the tokens it gave out before (no credit is lost to a restart), and a
site has no second secret to provision, rotate or leak. The domain separation keeps the key
from meaning anything elsewhere (it signs nothing; a token is worthless on another chain or
deployment). Forging a token needs the payee key, which can sign claims anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from micropay.errors import PaymentHeaderError
from micropay.vouchers import VoucherDomain

PAYMENT_CREDIT: Final = "PAYMENT-CREDIT"
VERSION: Final = 1
_BODY: Final = 1 + 32 + 32 + 16
_SIZE: Final = _BODY + 32
# base64url of 113 bytes without padding: 151 characters.
MAX_CREDIT_HEADER: Final = 256
MAX_PRICE: Final = 2**128
"""Prices at or above this cannot be sold as credit (the token holds a 16-byte price)."""


class CreditReason:
    """Reason codes of the credit refusals (402 unless said): the client drops its token and
    pays with a voucher on any of them."""

    INVALID_CREDIT = "invalid_credit"  # 400: not a token at all
    FORGED_CREDIT = "forged_credit"  # its tag is not this site's
    CREDIT_SUPERSEDED = "credit_superseded"  # the book holds another ceiling for the channel
    CREDIT_SPENT = "credit_spent"  # the credit left is below the price
    CREDIT_PRICE_MISMATCH = "credit_price_mismatch"  # bought for another price than this route's


@dataclass(frozen=True)
class CreditToken:
    """A prepaid credit: ``channel_id``'s credit up to its best voucher ``ceiling``, spent
    ``price`` per request."""

    channel_id: bytes
    ceiling: int
    price: int

    def __post_init__(self) -> None:
        if len(self.channel_id) != 32 or not 0 <= self.ceiling < 2**256:
            raise ValueError("a credit token names a 32-byte channel id and a uint256 ceiling")
        if not 0 < self.price < MAX_PRICE:
            raise ValueError(f"a credit token's price is from 1 to 2**128 - 1, not {self.price}")

    def body(self) -> bytes:
        return (
            bytes([VERSION])
            + self.channel_id
            + self.ceiling.to_bytes(32, "big")
            + self.price.to_bytes(16, "big")
        )


class CreditKey:
    """Issues and checks credit tokens with a key derived from the payee key (see the module
    docstring for why derived)."""

    __slots__ = ("_key",)

    def __init__(self, payee_key: bytes, domain: VoucherDomain) -> None:
        where = domain.chain_id.to_bytes(32, "big") + bytes.fromhex(domain.verifying_contract[2:])
        self._key = hashlib.blake2b(
            where, key=payee_key, person=b"micropay-credit", digest_size=32
        ).digest()

    def _tag(self, body: bytes) -> bytes:
        return hashlib.blake2b(body, key=self._key, digest_size=32).digest()

    def issue(self, token: CreditToken) -> str:
        """The ``PAYMENT-CREDIT`` header value of ``token``."""
        body = token.body()
        return base64.urlsafe_b64encode(body + self._tag(body)).rstrip(b"=").decode("ascii")

    def check(self, value: str | bytes) -> CreditToken:
        """The token a header carries, if this key issued it. Raises
        :class:`PaymentHeaderError`: ``invalid_credit`` (400) for anything that is not a token,
        ``forged_credit`` (402) for a token whose tag does not check (compared in constant
        time)."""
        raw = decode(value)
        body, tag = raw[:_BODY], raw[_BODY:]
        if not hmac.compare_digest(tag, self._tag(body)):
            raise PaymentHeaderError(
                CreditReason.FORGED_CREDIT, "this credit token was not issued by this site", 402
            )
        return _token(raw)


def decode(value: str | bytes) -> bytes:
    """The token's bytes (its tag unchecked): canonical unpadded base64url of the right size
    and version, else :class:`PaymentHeaderError` ``invalid_credit``."""
    if len(value) > MAX_CREDIT_HEADER:
        raise PaymentHeaderError(CreditReason.INVALID_CREDIT, "a credit token is 151 characters")
    text = value if isinstance(value, bytes) else value.encode("ascii", "replace")
    try:
        raw = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _SIZE or raw[0] != VERSION or base64.urlsafe_b64encode(raw).rstrip(b"=") != text:
        raise PaymentHeaderError(CreditReason.INVALID_CREDIT, "this is not a credit token")
    return raw


def peek(value: str) -> CreditToken:
    """What a token says (unchecked: the client cannot check the tag; it checks the token
    against the voucher it has just sent)."""
    return _token(decode(value))


def _token(raw: bytes) -> CreditToken:
    try:
        return CreditToken(
            raw[1:33], int.from_bytes(raw[33:65], "big"), int.from_bytes(raw[65:81], "big")
        )
    except ValueError as err:  # a price of 0: no token this paywall issues or takes
        raise PaymentHeaderError(
            CreditReason.INVALID_CREDIT, f"not a credit token: {err}"
        ) from None
