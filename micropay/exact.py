"""x402's ``exact`` EVM scheme: one request, one EIP-3009 ``transferWithAuthorization``.

The site offers ``{"scheme": "exact", "network", "amount", "asset": token, "payTo",
"maxTimeoutSeconds", "extra": {"name", "version"}}`` (the token's EIP-712 domain); the client
signs a transfer of exactly ``amount`` to ``payTo`` under that domain and sends
``{"accepted": offer, "payload": {"signature", "authorization": {"from", "to", "value",
"validAfter", "validBefore", "nonce"}}}``. The site settles it itself
(:class:`ExactSettler`: its key submits the transfer on its node and waits for the receipt)
or through an x402 facilitator (:class:`~micropay.facilitator.FacilitatorSettler`) before it
serves, and answers with x402's SettleResponse carrying the transaction hash.

One authorization is settled at most once: the token marks its nonce used, and before any
gas is spent the settler *claims* the nonce in an :class:`AuthorizationBook` (the ledger's
``exact_authorizations`` table, SQLite or PostgreSQL, shared by every worker process; or
:class:`MemoryAuthorizationBook` for one process). The claim is the arbiter between
workers: the loser answers 409 ``settlement_pending``. A resent payment that was settled
gets the same receipt again (and the content) while its authorization is still within
its window: a client whose response was lost can retry, and one payment buys no more than
what a retry within ``maxTimeoutSeconds`` fetches. A payment may carry x402's
``payment-identifier`` extension: the id is bound to its authorization in the same book, so
a second payment under one id is refused rather than settled.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3.exceptions import TimeExhausted, TransactionNotFound

from micropay._contracts import _REVERTS, submit_transaction
from micropay._eip3009 import Authorization, AuthorizationToken, TokenDomain
from micropay._keccak import keccak256
from micropay._x402 import (
    _BYTES32_RE,
    _SIGNATURE_RE,
    MAX_PAYMENT_HEADER,
    MAX_SERVER_HEADER,
    PAYMENT_IDENTIFIER,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    Reason,
    _address,
    _decode,
    _encode,
    _field,
    _hex,
    _uint,
    _version,
    chain_id_of,
    encode_payment,
    network_of,
    offer_terms,
    payment_id_of,
)
from micropay.errors import (
    InvalidSignatureError,
    MicropayError,
    PaymentDeclinedError,
    PaymentHeaderError,
    VoucherError,
)

SCHEME: Final = "exact"
# Time the settler keeps for itself: an authorization that expires sooner could be mined
# after its window closes (x402's own facilitator keeps six seconds too).
SETTLE_MARGIN: Final = 6
# A claim without a transaction after this long was left by a worker that died before it
# submitted: another worker may take it over.
STALE_CLAIM: Final = 120.0
# topic0 of EIP-3009's ``AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)``
AUTHORIZATION_USED_TOPIC: Final = keccak256(b"AuthorizationUsed(address,bytes32)")
TRANSFER_TOPIC: Final = keccak256(b"Transfer(address,address,uint256)")
# How far back a resend looks for a transfer that settled a claim recorded failed: a claim
# is made inside the authorization's window, and a resend is only honoured inside it too,
# so the transfer is at most maxTimeoutSeconds old (5,000 blocks: over 20 minutes on the
# fastest chains).
LOOKBACK_BLOCKS: Final = 5_000


# -- the offer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExactOffer:
    """What a 402 offers for one request in ``exact``: ``price`` of ``asset`` to ``pay_to``."""

    price: int
    asset: str
    pay_to: str
    chain_id: int
    token_name: str
    token_version: str
    max_timeout_seconds: int = 60
    # Whatever else the site put in ``extra``: echoed back in ``accepted``, as an x402 server
    # matches every field of ``extra`` it declared.
    other_extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def network(self) -> str:
        return network_of(self.chain_id)

    @property
    def domain(self) -> TokenDomain:
        return TokenDomain(self.token_name, self.token_version, self.chain_id, self.asset)

    def to_json(self) -> dict[str, Any]:
        terms = offer_terms(
            SCHEME, self.network, self.price, self.asset, self.pay_to, self.max_timeout_seconds
        )
        extra = {**self.other_extra, "name": self.token_name, "version": self.token_version}
        return {**terms, "extra": extra}

    @classmethod
    def from_json(cls, obj: Any) -> ExactOffer:
        where = "accepts[]"
        if not isinstance(obj, dict) or obj.get("scheme") != SCHEME:
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where} is not an exact offer")
        chain_id = chain_id_of(_field(obj, "network", str, where))
        if chain_id is None:
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where}.network is not eip155")
        extra = _field(obj, "extra", dict, where)
        if extra.get("assetTransferMethod", "eip3009") != "eip3009":
            raise PaymentHeaderError(
                Reason.INVALID_PAYLOAD, f"{where} asks for {extra['assetTransferMethod']!r}"
            )
        timeout = _field(obj, "maxTimeoutSeconds", int, where)
        if timeout <= 0:
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where} has no time to pay in")
        return cls(
            price=_uint(obj, "amount", where),
            asset=_address(obj, "asset", where),
            pay_to=_address(obj, "payTo", where),
            chain_id=chain_id,
            token_name=_field(extra, "name", str, f"{where}.extra"),
            token_version=_field(extra, "version", str, f"{where}.extra"),
            max_timeout_seconds=timeout,
            other_extra={k: v for k, v in extra.items() if k not in ("name", "version")},
        )


# -- PAYMENT-SIGNATURE -----------------------------------------------------------------------


@dataclass(frozen=True)
class ExactPayload:
    """An ``exact`` PAYMENT-SIGNATURE: the offer accepted and the signed authorization."""

    network: str
    price: int
    asset: str
    pay_to: str
    authorization: Authorization
    signature: bytes
    offer: ExactOffer | None = None
    resource: str = ""
    payment_id: str | None = None  # x402's payment-identifier extension

    def encode(self) -> str:
        extensions = None
        if self.payment_id is not None:
            info = {"required": False, "id": self.payment_id}
            extensions = {PAYMENT_IDENTIFIER: {"info": info}}
        return encode_payment(
            offer_terms(SCHEME, self.network, self.price, self.asset, self.pay_to),
            self.offer.to_json() if self.offer is not None else None,
            self.resource,
            {
                "signature": "0x" + self.signature.hex(),
                "authorization": self.authorization.to_json(),
            },
            extensions,
        )

    @classmethod
    def decode(cls, value: str | bytes) -> ExactPayload:
        obj = _decode(value, MAX_PAYMENT_HEADER, PAYMENT_SIGNATURE)
        _version(obj, PAYMENT_SIGNATURE)
        accepted = _field(obj, "accepted", dict, PAYMENT_SIGNATURE)
        if accepted.get("scheme") != SCHEME:
            raise PaymentHeaderError(Reason.UNSUPPORTED_SCHEME, "not an exact payment")
        payload = _field(obj, "payload", dict, PAYMENT_SIGNATURE)
        auth = _field(payload, "authorization", dict, "payload")
        where = "payload.authorization"
        try:
            authorization = Authorization(
                payer=_address(auth, "from", where),
                pay_to=_address(auth, "to", where),
                value=_uint(auth, "value", where),
                valid_after=_uint(auth, "validAfter", where),
                valid_before=_uint(auth, "validBefore", where),
                nonce=_hex(auth, "nonce", _BYTES32_RE, where),
            )
        except VoucherError as err:
            raise PaymentHeaderError(Reason.INVALID_PAYLOAD, f"{where}: {err}") from None
        signature = _hex(payload, "signature", _SIGNATURE_RE, "payload")
        if len(signature) != 65:
            raise PaymentHeaderError(
                Reason.INVALID_PAYLOAD, "payload.signature must be 65 bytes (r, s, v)"
            )
        return cls(
            network=_field(accepted, "network", str, "accepted"),
            price=_uint(accepted, "amount", "accepted"),
            asset=_address(accepted, "asset", "accepted"),
            pay_to=_address(accepted, "payTo", "accepted"),
            authorization=authorization,
            signature=signature,
            payment_id=payment_id_of(obj),
        )


# -- PAYMENT-RESPONSE ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExactReceipt:
    """x402's SettleResponse for a settled ``exact`` payment: the transaction that paid."""

    network: str
    payer: str
    transaction: bytes
    amount: int

    def encode(self) -> str:
        return _encode(
            {
                "success": True,
                "transaction": "0x" + self.transaction.hex(),
                "network": self.network,
                "payer": self.payer,
                "amount": str(self.amount),
                "scheme": SCHEME,
            }
        )

    @classmethod
    def decode(cls, value: str | bytes) -> ExactReceipt:
        return cls.read(value, None)

    @classmethod
    def read(cls, value: str | bytes, price: int | None) -> ExactReceipt:
        """A SettleResponse as any x402 server sends it, where ``amount`` is optional (the
        ``price`` paid stands for it when absent; None: it must be there). Raises
        :class:`PaymentHeaderError` unless it reports success with a transaction hash."""
        obj = _decode(value, MAX_SERVER_HEADER, PAYMENT_RESPONSE)
        if obj.get("success") is not True:
            why = obj.get("errorReason")
            raise PaymentHeaderError(
                Reason.INVALID_PAYLOAD,
                "not a successful settlement" + (f": {why}" if isinstance(why, str) else ""),
            )
        if price is None or obj.get("amount") is not None:
            price = _uint(obj, "amount", PAYMENT_RESPONSE)
        return cls(
            network=_field(obj, "network", str, PAYMENT_RESPONSE),
            payer=_address(obj, "payer", PAYMENT_RESPONSE),
            transaction=_hex(obj, "transaction", _BYTES32_RE, PAYMENT_RESPONSE),
            amount=price,
        )


# -- the book of authorizations --------------------------------------------------------------


@dataclass(frozen=True)
class Settlement:
    """One authorization the site has taken on: ``claimed`` (being settled, ``transaction``
    once submitted), ``settled`` (``receipt`` is the PAYMENT-RESPONSE) or ``failed``."""

    token: str
    authorizer: str
    nonce: bytes
    signature: bytes
    valid_before: int
    state: str
    claimed_at: float
    transaction: bytes | None = None
    receipt: str | None = None
    reason: str | None = None


class AuthorizationBook(Protocol):
    """Where claims on authorizations live; ``claim`` is atomic across its users."""

    def claim(self, settlement: Settlement, stale_before: float) -> Settlement | None:
        """Take ``settlement`` (state ``claimed``): None if this caller now holds it, else
        the record that stands (a claim older than ``stale_before`` without a transaction
        is taken over)."""

    def update(self, settlement: Settlement) -> None:
        """Record the claim's progress (its transaction, or its outcome)."""

    def bind(self, payment_id: str, settlement: Settlement) -> bool:
        """Tie a ``payment-identifier`` id to ``settlement``'s authorization (token,
        authorizer, nonce, signature), atomically: True if the id is now, or already was,
        this authorization's; False if it names another."""


class MemoryAuthorizationBook:
    """An :class:`AuthorizationBook` for one process (lost on restart: use the ledger)."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str, bytes], Settlement] = {}
        self._ids: dict[str, tuple[str, str, bytes, bytes]] = {}
        self._lock = threading.Lock()

    def claim(self, settlement: Settlement, stale_before: float) -> Settlement | None:
        key = (settlement.token, settlement.authorizer, settlement.nonce)
        with self._lock:
            held = self._records.get(key)
            stale = (
                held is not None
                and held.state == "claimed"
                and held.transaction is None
                and held.claimed_at < stale_before
            )
            if held is None or stale:
                self._records[key] = settlement
                return None
            return held

    def update(self, settlement: Settlement) -> None:
        with self._lock:
            self._records[(settlement.token, settlement.authorizer, settlement.nonce)] = settlement

    def bind(self, payment_id: str, settlement: Settlement) -> bool:
        s = settlement
        paid = (s.token, s.authorizer, s.nonce, s.signature)
        with self._lock:
            return self._ids.setdefault(payment_id, paid) == paid


# -- verifying and settling ------------------------------------------------------------------


class ExactSettlerBase(ABC):
    """What every ``exact`` settler shares: the offer, the checks that need no chain, the
    claim in the book, resends, and the site's own check of the mined transfer.

    Subclasses say how a claimed authorization is put on chain (:meth:`_submit`):
    :class:`ExactSettler` with the site's key, :class:`~micropay.facilitator.FacilitatorSettler`
    through an x402 facilitator. Either way the content is served only once the site's own
    node shows the transfer mined with the token's ``AuthorizationUsed(from, nonce)`` and
    ``Transfer(from, to, value)`` events in it.

    ``timeout``: how long a request waits for its transfer to be mined; past it the request
    gets 402 ``settlement_timeout`` and the claim keeps the transaction, so the payer's
    resend is served once it is mined (and never submitted again).
    """

    def __init__(
        self,
        token: AuthorizationToken,
        *,
        book: AuthorizationBook | None = None,
        timeout: float = 30.0,
        max_timeout_seconds: int = 60,
    ) -> None:
        self.token = token
        self.book: AuthorizationBook = book if book is not None else MemoryAuthorizationBook()
        self.timeout = timeout
        self.max_timeout_seconds = max_timeout_seconds
        self.domain = token.domain()
        self.network = network_of(self.domain.chain_id)

    def offer(self, price: int, pay_to: str) -> ExactOffer:
        d = self.domain
        return ExactOffer(
            price, d.verifying_contract, pay_to, d.chain_id, d.name, d.version,
            self.max_timeout_seconds,
        )  # fmt: skip

    def check(self, payload: ExactPayload, offer: ExactOffer, now: float) -> None:
        """Everything that needs no chain: the payment is for this offer, in its window,
        signed by its ``from``. Raises :class:`PaymentDeclinedError`."""
        a = payload.authorization
        if payload.network != offer.network:
            raise PaymentDeclinedError(
                Reason.WRONG_NETWORK, f"this site is paid on {offer.network}"
            )
        if payload.asset != offer.asset:
            raise PaymentDeclinedError(Reason.WRONG_ASSET, f"this site is paid in {offer.asset}")
        if payload.pay_to != offer.pay_to or a.pay_to != offer.pay_to:
            raise PaymentDeclinedError(Reason.WRONG_PAYEE, f"this site is paid to {offer.pay_to}")
        if payload.price != offer.price or a.value != offer.price:
            raise PaymentDeclinedError(
                Reason.PRICE_MISMATCH,
                f"this resource costs exactly {offer.price}; the authorization is for {a.value}",
            )
        if a.valid_after >= now:
            raise PaymentDeclinedError(
                Reason.AUTHORIZATION_NOT_YET_VALID,
                f"the authorization is valid only after {a.valid_after}",
            )
        if a.valid_before <= now + SETTLE_MARGIN:
            raise PaymentDeclinedError(
                Reason.AUTHORIZATION_EXPIRED,
                f"the authorization expires at {a.valid_before}, too soon to settle",
            )
        try:
            signer = a.signer(self.domain, payload.signature)
        except InvalidSignatureError as err:
            raise PaymentDeclinedError(Reason.INVALID_SIGNATURE, str(err)) from None
        if signer != a.payer:
            raise PaymentDeclinedError(
                Reason.INVALID_SIGNATURE,
                "the authorization is not signed by its 'from' under this token's domain",
            )

    def settle(self, payload: ExactPayload) -> ExactReceipt:
        """Settle a checked payment (blocking: call it off the event loop) and return its
        receipt, or the receipt it already has; :class:`PaymentDeclinedError` otherwise.

        A payment carrying a ``payment-identifier`` id binds the id to its authorization
        first: the same id on another authorization is refused (409
        ``payment_id_conflict``) before anything is claimed or settled."""
        a = payload.authorization
        now = time.time()
        claim = Settlement(
            self.token.address, a.payer, a.nonce, payload.signature, a.valid_before,
            "claimed", now,
        )  # fmt: skip
        if payload.payment_id is not None and not self.book.bind(payload.payment_id, claim):
            raise PaymentDeclinedError(
                Reason.PAYMENT_ID_CONFLICT,
                f"payment id {payload.payment_id!r} was already used for another payment",
                409,
            )
        held = self.book.claim(claim, stale_before=now - STALE_CLAIM)
        if held is not None:
            return self._resent(held, payload, now)
        return self._submit(claim, payload)

    def _resent(self, held: Settlement, payload: ExactPayload, now: float) -> ExactReceipt:
        """A payment whose nonce the book already holds."""
        if held.signature != payload.signature:
            raise PaymentDeclinedError(
                Reason.AUTHORIZATION_USED, "this authorization's nonce was already used"
            )
        if held.state == "claimed" and held.transaction is not None:
            held = self._await(held, payload, timeout=0)
        if held.state == "claimed":
            raise PaymentDeclinedError(
                Reason.SETTLEMENT_PENDING, "this payment is being settled; resend it soon", 409
            )
        if held.state == "failed" and now < held.valid_before:
            held = self._settled_elsewhere(held, payload)
        if held.state == "failed":
            raise PaymentDeclinedError(Reason.SETTLEMENT_FAILED, held.reason or "failed")
        # A resend is answered within the offer's window from the settlement, not until the
        # validBefore the payer chose (a year away would buy a year of reads for one price).
        closes = min(held.valid_before, held.claimed_at + self.max_timeout_seconds)
        if now >= closes or held.receipt is None:
            raise PaymentDeclinedError(
                Reason.AUTHORIZATION_USED, "this payment was settled and its window has closed"
            )
        return ExactReceipt.decode(held.receipt)

    @abstractmethod
    def _submit(self, claim: Settlement, payload: ExactPayload) -> ExactReceipt:
        """Put the claimed authorization on chain and :meth:`_finish`; on a failure that
        sent nothing, record it (``failed``, or the claim released for a later resend)."""

    def _finish(self, claim: Settlement, payload: ExactPayload, tx_hash: bytes) -> ExactReceipt:
        """Record the submitted transaction, then wait for it on the site's own node."""
        submitted = replace(claim, transaction=tx_hash)
        self.book.update(submitted)
        settled = self._await(submitted, payload, timeout=self.timeout)
        if settled.state == "claimed":
            raise PaymentDeclinedError(
                Reason.SETTLEMENT_TIMEOUT,
                f"transaction 0x{tx_hash.hex()} is not mined yet; resend the same payment",
            )
        if settled.state == "failed":
            raise PaymentDeclinedError(Reason.SETTLEMENT_FAILED, settled.reason or "failed")
        assert settled.receipt is not None
        return ExactReceipt.decode(settled.receipt)

    def _fail(self, claim: Settlement, declined: PaymentDeclinedError) -> PaymentDeclinedError:
        """Record that ``claim`` will never settle (its nonce is not sent again)."""
        self.book.update(replace(claim, state="failed", reason=str(declined)))
        return declined

    def _await(self, held: Settlement, payload: ExactPayload, timeout: float) -> Settlement:
        """Wait up to ``timeout`` for the claim's transaction; record and return the outcome
        (still ``claimed`` if it is not mined yet). Settled means: mined, succeeded, and it
        pays this authorization (:meth:`_pays`)."""
        assert held.transaction is not None
        w3 = self.token.w3
        tx_hash = HexBytes(held.transaction)
        try:
            if timeout > 0:
                mined = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
            else:
                mined = w3.eth.get_transaction_receipt(tx_hash)
        except (TimeExhausted, TransactionNotFound):
            return held
        a = payload.authorization
        if mined["status"] != 1:
            reason = f"transaction 0x{tx_hash.hex()} was mined and reverted"
            outcome = replace(held, state="failed", reason=reason)
        elif not self._pays(mined, a):
            reason = f"transaction 0x{tx_hash.hex()} does not use this authorization"
            outcome = replace(held, state="failed", reason=reason)
        else:
            receipt = ExactReceipt(self.network, a.payer, bytes(tx_hash), a.value)
            outcome = replace(held, state="settled", receipt=receipt.encode())
        self.book.update(outcome)
        return outcome

    def _pays(self, mined: Any, a: Authorization) -> bool:
        """Whether the receipt holds the token's ``AuthorizationUsed(from, nonce)`` and its
        ``Transfer(from, to, value)``: this authorization, paid as it says."""
        token = self.token.address.lower()
        payer, pay_to = _address_topic(a.payer), _address_topic(a.pay_to)
        used = moved = False
        for log in mined["logs"]:
            if str(log["address"]).lower() != token:
                continue
            topics = [bytes(t) for t in log["topics"]]
            used = used or topics == [AUTHORIZATION_USED_TOPIC, payer, a.nonce]
            moved = moved or (
                topics == [TRANSFER_TOPIC, payer, pay_to]
                and bytes(log["data"]) == a.value.to_bytes(32, "big")
            )
        return used and moved

    def _settled_elsewhere(self, held: Settlement, payload: ExactPayload) -> Settlement:
        """A claim recorded ``failed`` whose authorization the token shows used after all
        (a facilitator that settled but did not say so, a transfer someone else submitted):
        find the transaction by the token's ``AuthorizationUsed`` event and, if it pays this
        authorization, record the payment settled."""
        a = payload.authorization
        if not self.token.authorization_used(a.payer, a.nonce):
            return held
        w3 = self.token.w3
        latest = w3.eth.block_number
        logs = w3.eth.get_logs(
            {
                "address": self.token.address,
                "topics": [
                    "0x" + AUTHORIZATION_USED_TOPIC.hex(),
                    "0x" + _address_topic(a.payer).hex(),
                    "0x" + a.nonce.hex(),
                ],
                "fromBlock": max(0, latest - LOOKBACK_BLOCKS),
                "toBlock": latest,
            }
        )
        for log in logs:
            found = replace(held, state="claimed", transaction=bytes(log["transactionHash"]))
            outcome = self._await(found, payload, timeout=0)
            if outcome.state == "settled":
                return outcome
        return held


def _address_topic(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


class ExactSettler(ExactSettlerBase):
    """Settles ``exact`` payments for one token with the site's own key on its node."""

    def __init__(
        self,
        token: AuthorizationToken,
        account: LocalAccount,
        *,
        book: AuthorizationBook | None = None,
        timeout: float = 30.0,
        max_timeout_seconds: int = 60,
    ) -> None:
        super().__init__(token, book=book, timeout=timeout, max_timeout_seconds=max_timeout_seconds)
        self.account = account

    def _submit(self, claim: Settlement, payload: ExactPayload) -> ExactReceipt:
        a = payload.authorization
        try:
            if self.token.authorization_used(a.payer, a.nonce):
                raise PaymentDeclinedError(
                    Reason.AUTHORIZATION_USED, "the token shows this nonce used or cancelled"
                )
            balance = self.token.balance_of(a.payer)
            if balance < a.value:
                raise PaymentDeclinedError(
                    Reason.INSUFFICIENT_FUNDS, f"{a.payer} holds {balance}, less than {a.value}"
                )
            call = self.token.contract.functions.transferWithAuthorization(
                a.payer, a.pay_to, a.value, a.valid_after, a.valid_before, a.nonce,
                payload.signature[64], payload.signature[:32], payload.signature[32:64],
            )  # fmt: skip
            try:
                tx_hash, _ = submit_transaction(self.token.w3, call, self.account)
            except _REVERTS as err:  # the estimate ran it and it reverts: nothing was sent
                raise PaymentDeclinedError(
                    Reason.SETTLEMENT_FAILED, str(self.token.decode_revert(err))
                ) from None
        except PaymentDeclinedError as declined:
            raise self._fail(claim, declined) from None
        except MicropayError as err:  # the node refused the transaction: nothing was sent
            raise self._fail(
                claim, PaymentDeclinedError(Reason.SETTLEMENT_FAILED, str(err))
            ) from None
        except Exception:  # the node is unreachable: let a resend try again later
            self.book.update(replace(claim, claimed_at=0.0))
            raise
        return self._finish(claim, payload, bytes(tx_hash))


def payload_scheme(value: str | bytes) -> str | None:
    """The scheme a PAYMENT-SIGNATURE names, or None if it names none (cheap: no checks)."""
    try:
        obj = _decode(value, MAX_PAYMENT_HEADER, PAYMENT_SIGNATURE)
    except PaymentHeaderError:
        return None
    accepted = obj.get("accepted")
    scheme = accepted.get("scheme") if isinstance(accepted, dict) else None
    return scheme if isinstance(scheme, str) else None


__all__ = [
    "SCHEME",
    "AuthorizationBook",
    "ExactOffer",
    "ExactPayload",
    "ExactReceipt",
    "ExactSettler",
    "ExactSettlerBase",
    "MemoryAuthorizationBook",
    "Settlement",
    "payload_scheme",
]
