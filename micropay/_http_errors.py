"""The HTTP 402 layer's exceptions, kept here until they move into :mod:`micropay.errors`.

They extend the tree drawn in ``micropay/errors.py``::

    MicropayError
    ├── PaymentHeaderError (ValueError)       a payment header is malformed (.reason, .status)
    ├── PaymentProtocolError (RuntimeError)   a paywall answered outside the protocol: an
    │                                         undecodable 402, a receipt that contradicts the
    │                                         voucher, a view of the channel it cannot prove
    └── PaymentRefusedError (ValueError)      (exists) the payer will not sign
        └── PaymentPolicyError                a consumer-protection limit stops the payment
            ├── PriceLimitError               the price per request is above the cap
            ├── SpendingLimitError            the site's or the period's spending cap
            ├── DepositLimitError             the deposit the site needs is above the cap
            └── OfferNotAllowedError          network, asset, contract or delay not allowed

Every :class:`PaymentPolicyError` is raised before anything is signed or deposited.
"""

from __future__ import annotations

from micropay.errors import MicropayError, PaymentRefusedError


class PaymentHeaderError(MicropayError, ValueError):
    """A ``PAYMENT-*`` header cannot be decoded into what the protocol says it carries.

    ``reason`` is the machine-readable code a paywall puts in its error body and ``status``
    the HTTP status it answers with (400 for garbage, 431 for an oversized header).
    """

    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class PaymentProtocolError(MicropayError, RuntimeError):
    """A paywall answered in a way the protocol does not allow; nothing more is paid to it."""


class PaymentPolicyError(PaymentRefusedError):
    """A consumer-protection limit refuses the payment (before anything is signed)."""


class PriceLimitError(PaymentPolicyError):
    """The price asked for one request is above the policy's maximum."""


class SpendingLimitError(PaymentPolicyError):
    """Paying would take the site's total or the period's total above its cap."""


class DepositLimitError(PaymentPolicyError):
    """The deposit the site asks for is above what the policy lets the client lock up."""


class OfferNotAllowedError(PaymentPolicyError):
    """No offered way to pay is allowed: network, asset, contract or withdraw delay."""
