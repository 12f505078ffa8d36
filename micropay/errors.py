"""micropay's exceptions: one root, mixed with the builtin each one resembles.

Catch :class:`MicropayError` to catch anything the toolkit raises on purpose::

    MicropayError
    ├── ArtifactError (LookupError)        a shipped contract artifact is missing or unreadable
    ├── VoucherError (ValueError)          a voucher or channel configuration is malformed
    │   └── InvalidSignatureError          not the authorizer's, high-s, bad v or length
    ├── VoucherRejectedError (ValueError)  the payee refuses a well-formed voucher (.reason)
    │   ├── UnknownChannelError            no such channel on chain, or not ours to accept
    │   ├── StaleVoucherError              its cumulative amount does not grow
    │   ├── InsufficientDepositError       it promises more than the channel holds
    │   └── ChannelClosingError            finished, or the payer's withdraw ends too soon
    ├── PaymentRefusedError (ValueError)   the payer will not sign: over its deposit or caps
    │   └── PaymentPolicyError             a consumer-protection limit stops the payment
    │       ├── PriceLimitError            the price per request is above the cap
    │       ├── SpendingLimitError         the site's or the period's spending cap
    │       ├── DepositLimitError          the deposit the site needs is above the cap
    │       └── OfferNotAllowedError       network, asset, contract or delay not allowed
    ├── PaymentHeaderError (ValueError)    a payment header is malformed (.reason, .status)
    ├── PaymentDeclinedError (ValueError)  an ``exact`` payment the site does not take or
    │   │                                  could not settle (.reason, .status)
    │   └── paywall.PaymentRefusal         a ``channel`` payment the paywall's checks refuse
    │                                      (.view: its record of the channel, or None)
    ├── PaymentProtocolError (RuntimeError) a paywall answered outside the protocol: an
    │   │                                  undecodable 402, a receipt that contradicts the
    │   │                                  voucher
    │   ├── HostileSiteError               a site claims the client owes it a total it cannot
    │   │                                  back with a signature the client made before
    │   │                                  this request (.site, .claimed)
    │   ├── SettlementReceiptError         an ``exact`` payment's PAYMENT-RESPONSE is not the
    │   │                                  settlement of this payer's authorization (.site)
    │   └── ChargeReceiptError             a ``channel`` receipt's charged total is above the
    │                                      ceiling signed, or fell without a refund (.site)
    ├── ReceiptError (ValueError)          a site's receipt is malformed or not signed by
    │                                      the key it should be (the site's payee)
    ├── PayerStoreError (OSError)          the payer's wallet is unreadable, or lacks a channel
    ├── LedgerError (RuntimeError)         the voucher ledger cannot be opened or used
    │   ├── LedgerURLError (ValueError)    the ledger URL is malformed or names no back end
    │   ├── LedgerCorruptError             the file or a row is damaged: not a database,
    │   │                                  truncated, a malformed row, a bad signature
    │   └── ForeignLedgerError             the ledger or a row belongs to another chain or
    │                                      contract than the one it is opened for
    ├── RouteNotPricedError (LookupError)  a handler read ``request.state.payment`` on a
    │                                      route the paywall does not price (answered 403)
    ├── ChargeError (ValueError)           a metered handler's ``payment.charge(amount)``
    │                                      is not an int from 0 to the route's maximum
    ├── RefundError (ValueError)           a refund the payee refuses (.reason): not a positive
    │                                      int, above what is refundable, unknown channel
    ├── PayeeConfigError (ValueError)      a payee parameter makes no sense (confirmations)
    ├── SettlementPolicyError (ValueError) a settlement policy parameter makes no sense
    ├── WatchtowerConfigError (ValueError) a watchtower or chain-follower parameter makes
    │                                      no sense (confirmations, poll interval, ...)
    ├── NetworkError (ConnectionError)     unknown network, no node, no time travel there
    ├── ContractCodeError (LookupError)    an address holds no code, or not the code a
    │                                      client needs (micropay's own, an ERC-20's)
    ├── ContractRevertError (RuntimeError) a contract call reverted; named by the contract's
    │   │                                  custom error (``.error_name``, ``.arguments``)
    │   ├── channels.py: ChannelConfigError, ChannelNotFoundError, ChannelFinishedError,
    │   │   TotalExceedsDepositError (alias VoucherExceedsDepositError),
    │   │   TotalExceedsCeilingError, NothingToClaimError, VoucherSignatureRejectedError,
    │   │   PayeeSignatureRejectedError, RefundExceedsUnspentError, ZeroRefundError,
    │   │   NotPayerError, NotPayeeError, WithdrawAlreadyRequestedError,
    │   │   WithdrawNotRequestedError, WithdrawNotReadyError, ZeroDepositError,
    │   │   DepositTooLargeError
    │   └── streams.py: StreamConfigError, StreamExistsError, UnknownStreamError,
    │       AmountNotReceivedError, DepositTooLargeError, NotStreamSenderError,
    │       NotStreamRecipientError, NothingToWithdrawError, StreamNotCancelableError,
    │       StreamPauseError, RefundExceedsUnownedError
    └── TransactionFailedError (RuntimeError)  refused by the node, or mined with status 0
        └── InsufficientFundsError             the sender cannot pay value plus gas

A revert is raised as the most specific class registered for its custom error name with
:func:`register_revert`, so callers can catch the one failure they expect; every revert,
registered or not, is a :class:`ContractRevertError` with the decoded arguments.
Modules that add branches document them here, so the whole tree reads in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class MicropayError(Exception):
    """Root of every exception micropay raises deliberately."""


class ArtifactError(MicropayError, LookupError):
    """A compiled contract artifact shipped with the package is missing or malformed."""


class VoucherError(MicropayError, ValueError):
    """A voucher, domain or channel configuration is malformed."""


class InvalidSignatureError(VoucherError):
    """The signature is not the authorizer's, or is in a form the contract refuses."""


class VoucherRejectedError(MicropayError, ValueError):
    """The payee refuses a well-formed voucher; ``reason`` is a short machine-readable code."""

    reason = "rejected"


class UnknownChannelError(VoucherRejectedError):
    """The channel does not exist on chain, or pays someone else, in another token or contract."""

    reason = "unknown_channel"


class StaleVoucherError(VoucherRejectedError):
    """The voucher's cumulative amount is not above the best one already accepted."""

    reason = "stale_voucher"


class InsufficientDepositError(VoucherRejectedError):
    """The voucher promises more than the channel's deposit."""

    reason = "insufficient_deposit"


class ChannelClosingError(VoucherRejectedError):
    """The channel is finished, or the payer's withdraw completes within the safety margin."""

    reason = "channel_closing"


class PaymentRefusedError(MicropayError, ValueError):
    """The payer refuses to sign: the payment would exceed its deposit or a spending cap."""


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


class PaymentHeaderError(MicropayError, ValueError):
    """A ``PAYMENT-*`` header cannot be decoded into what the protocol says it carries.

    ``reason`` is the machine-readable code a paywall puts in its error body and ``status``
    the HTTP status it answers with (400 for garbage, 431 for an oversized header).
    """

    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class PaymentDeclinedError(MicropayError, ValueError):
    """A well-formed ``exact`` payment the site does not take, or could not settle.

    Like :class:`PaymentHeaderError`, it carries the ``reason`` code and HTTP ``status``
    (402, or 409 while another worker settles the same authorization) the paywall answers.
    """

    def __init__(self, reason: str, message: str, status: int = 402) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class PaymentProtocolError(MicropayError, RuntimeError):
    """A paywall answered in a way the protocol does not allow; nothing more is paid to it."""


class HostileSiteError(PaymentProtocolError):
    """A site's view of the channel would make the client pay again for the same request.

    Raised when a site says a total is already spent that the client cannot prove it signed
    before the request began (or that the chain shows claimed): a forged signature, or the
    voucher the client has just sent echoed back as "stale". ``site`` is the origin and
    ``claimed`` the total it asserted; the client has signed at most one price on top of
    what it held before the request.
    """

    def __init__(self, site: str, claimed: int, message: str) -> None:
        super().__init__(message)
        self.site = site
        self.claimed = claimed


class SettlementReceiptError(PaymentProtocolError):
    """A site answered an ``exact`` payment with a PAYMENT-RESPONSE that does not show this
    payer's authorization settled: no success, no transaction, or another payer, network
    or amount. The payment is counted as spent all the same (the site holds the
    authorization); ``site`` is the origin."""

    def __init__(self, site: str, message: str) -> None:
        super().__init__(message)
        self.site = site


class ChargeReceiptError(PaymentProtocolError):
    """A site's ``channel`` receipt breaks the charged-total rules: the charged total is above
    the ceiling the client signed, below what the site reported before by more than the
    refunds it reports, or its charge does not add up. The client stops using the channel
    until it resynchronises (its next 402 view); it signed at most one request's maximum
    beyond the total the site acknowledged. ``site`` is the origin."""

    def __init__(self, site: str, message: str) -> None:
        super().__init__(message)
        self.site = site


class ReceiptError(MicropayError, ValueError):
    """A receipt is malformed, or its signature is not the site's."""


class PayerStoreError(MicropayError, OSError):
    """The payer's wallet is unreadable, lacks a channel, or holds one of another payer or
    deployment."""


class LedgerError(MicropayError, RuntimeError):
    """The voucher ledger cannot be opened or used (server down, directory missing, ...)."""


class LedgerURLError(LedgerError, ValueError):
    """The ledger URL is malformed or names a back end micropay does not have."""


class LedgerCorruptError(LedgerError):
    """The ledger's storage or one of its rows is damaged; the message names what and where.

    Raised instead of skipping the damaged data: a payee must never lose a voucher quietly.
    """


class ForeignLedgerError(LedgerError):
    """The ledger, or one row in it, was written for another chain or contract."""


class RouteNotPricedError(MicropayError, LookupError):
    """A handler read ``request.state.payment`` on a route no priced pattern matches.

    The handler expects to be paid, so running it would serve paid content free: the
    paywall answers a 403 ``route_not_priced`` in place of whatever the app sends, and logs
    the route, which belongs in its ``prices``. (A handler that takes payment optionally
    tests ``if request.state.payment:``, which is false there and raises nothing.)
    """


class ChargeError(MicropayError, ValueError):
    """A metered handler called ``request.state.payment.charge`` with something that is not an
    ``int`` from 0 to the route's maximum (a bool, a float, a negative amount, too much).

    Raised in the handler, so the bug is found where it is; the request then charges nothing
    unless a valid charge was made before (the last valid call stands)."""


class RefundError(MicropayError, ValueError):
    """The payee refuses a refund; ``reason`` is a short machine-readable code:
    ``invalid_amount`` (not a positive int), ``exceeds_refundable`` (it would take the charged
    total below what is claimed on chain, or below 0), ``exceeds_unspent`` (an on-chain refund
    of deposit that is charged or claimed), ``unknown_channel`` (the book holds nothing),
    ``invalid_reason`` (the reason is not text)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PayeeConfigError(MicropayError, ValueError):
    """A payee parameter is out of range."""


class SettlementPolicyError(MicropayError, ValueError):
    """A settlement policy parameter is out of range or inconsistent."""


class WatchtowerConfigError(MicropayError, ValueError):
    """A watchtower or chain-follower parameter is out of range."""


class NetworkError(MicropayError, ConnectionError):
    """The network is unknown, unreachable, or cannot do what was asked (e.g. move time)."""


class ContractCodeError(MicropayError, LookupError):
    """The address holds no code, or not what its client needs: micropay's shipped runtime
    code for PaymentChannels and Streams, ERC-20 answers for a token. Raised before any
    transaction is sent, so money never goes to an address that cannot account for it."""


class TransactionFailedError(MicropayError, RuntimeError):
    """The node refused a transaction, or mined it with status 0 and no decodable reason."""


class InsufficientFundsError(TransactionFailedError):
    """The sender's balance does not cover the transaction's value plus its gas."""


class ContractRevertError(MicropayError, RuntimeError):
    """A contract call reverted with a custom error (or a reason we could not decode).

    ``error_name`` is the Solidity error's name (``PaymentChannels_ChannelFinished``) and
    ``arguments`` its decoded parameters by name. ``detail`` is the human part of the
    message alone (what happened and what to do), for a front end that shows one line
    and the error's name beside it; it is the whole message where no template is known.
    """

    def __init__(
        self, error_name: str, arguments: Mapping[str, Any], message: str, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.error_name = error_name
        self.arguments = dict(arguments)
        self.detail = detail or message


# error name -> (exception class, message template over the error's arguments)
_REVERTS: dict[str, tuple[type[ContractRevertError], str]] = {}


def register_revert(
    error_name: str, message: str
) -> Callable[[type[ContractRevertError]], type[ContractRevertError]]:
    """Class decorator: raise this class, with this message, for that custom error.

    ``message`` is a ``str.format`` template over the error's argument names, written for
    the person reading the exception (what happened and what to do), not the contract.
    """

    def decorate(cls: type[ContractRevertError]) -> type[ContractRevertError]:
        _REVERTS[error_name] = (cls, message)
        return cls

    return decorate


def revert_error(error_name: str, arguments: Mapping[str, Any]) -> ContractRevertError:
    """Build the exception for a decoded custom error."""
    cls, template = _REVERTS.get(error_name, (ContractRevertError, ""))
    try:
        detail = template.format(**arguments) if template else ""
    except (KeyError, IndexError, ValueError):
        detail = ""
    shown = ", ".join(f"{k}={v}" for k, v in arguments.items())
    message = f"{error_name}({shown})" + (f": {detail}" if detail else "")
    return cls(error_name, arguments, message, detail)
