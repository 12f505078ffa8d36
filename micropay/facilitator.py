"""Settling x402 ``exact`` payments through an x402 facilitator named by URL.

A site that does not want to hold a funded key on its node hands each payment to a
facilitator: the standard x402 v2 ``POST {url}/verify`` then ``POST {url}/settle``, both
with the body ``{"x402Version": 2, "paymentPayload", "paymentRequirements"}``; ``/verify``
answers x402's VerifyResponse (``isValid``, ``invalidReason``, ``payer``), ``/settle`` its
SettleResponse (``success``, ``transaction``, ``network``, ``payer``, ``amount``).

A facilitator is trusted with nothing the site can check itself:

- the paywall checks the payment first (offer, window, signature: :meth:`check`) and
  claims its nonce in the :class:`~micropay.exact.AuthorizationBook` before anything is
  sent, so one authorization goes to ``/settle`` at most once, across worker processes;
- every answer is read strictly: HTTP 200, a JSON object under :data:`MAX_RESPONSE` bytes,
  of the documented shape, naming this payer, network and amount; anything else is a 402
  with a reason (``facilitator_unavailable``, ``facilitator_refused``,
  ``facilitator_invalid_response``) and nothing is served;
- a successful ``/settle`` is believed only once the site's **own node** shows its
  transaction mined, successful and carrying the token's ``AuthorizationUsed`` event for
  this payer and nonce (the same check :class:`~micropay.exact.ExactSettler` makes of its
  own transactions): a facilitator that names another payment's transaction, or invents
  one, gets nothing served.

What a failure leaves behind: before ``/settle`` was sent (``/verify`` timed out, refused
or answered garbage) the claim is released, so a resend of the same payment tries again.
Once ``/settle`` was sent and its outcome is not a clean success, the authorization is
recorded ``failed`` and is never sent again, since the facilitator may have submitted it.
If it did, the payer's resend (within the authorization's window) finds the transfer on
the site's node by the token's ``AuthorizationUsed`` event and is served with its receipt;
the 402 message names the nonce for the operator in any case.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any, Final

import httpx

from micropay._eip3009 import AuthorizationToken
from micropay._x402 import X402_VERSION, Reason
from micropay.errors import PaymentDeclinedError
from micropay.exact import (
    SCHEME,
    AuthorizationBook,
    ExactPayload,
    ExactReceipt,
    ExactSettlerBase,
    Settlement,
)

# A facilitator's answers are a few hundred bytes; more is not an answer.
MAX_RESPONSE: Final = 64 * 1024
_TX_HASH_RE: Final = re.compile(r"0x[0-9a-fA-F]{64}")
_MAX_QUOTED: Final = 200  # of a facilitator's own words, in our 402 message


class FacilitatorSettler(ExactSettlerBase):
    """Settles ``exact`` payments for one token through the x402 facilitator at ``url``.

    ``token`` is read on the site's own node (its EIP-712 domain, and the receipt of every
    transaction the facilitator reports). ``verify_timeout`` bounds ``/verify``;
    ``timeout`` bounds ``/settle`` (which waits for the transfer to be mined) and then the
    site's own wait for the receipt. ``headers`` go with every request (a facilitator's API
    key, for instance).
    """

    def __init__(
        self,
        url: str,
        token: AuthorizationToken,
        *,
        book: AuthorizationBook | None = None,
        timeout: float = 30.0,
        verify_timeout: float = 10.0,
        max_timeout_seconds: int = 60,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(token, book=book, timeout=timeout, max_timeout_seconds=max_timeout_seconds)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"a facilitator is named by an http(s) URL, not {url!r}")
        self.url = url.rstrip("/")
        self.verify_timeout = verify_timeout
        self._http = httpx.Client(
            headers=headers, transport=transport, follow_redirects=False, trust_env=False
        )

    def close(self) -> None:
        """Close the HTTP client's connections to the facilitator (the settler is then
        unusable); ``with FacilitatorSettler(...) as settler:`` does it on exit."""
        self._http.close()

    def __enter__(self) -> FacilitatorSettler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def supports(self) -> bool:
        """Whether ``GET {url}/supported`` lists x402 v2 ``exact`` on this site's network
        (a start-up check for the operator; any failure to answer that is a no)."""
        try:
            response = self._http.get(f"{self.url}/supported", timeout=self.verify_timeout)
            if response.status_code != 200 or len(response.content) > MAX_RESPONSE:
                return False
            kinds = response.json().get("kinds")
        except (httpx.HTTPError, ValueError, AttributeError):
            return False
        wanted = {"x402Version": X402_VERSION, "scheme": SCHEME, "network": self.network}
        return isinstance(kinds, list) and any(
            isinstance(kind, dict) and wanted.items() <= kind.items() for kind in kinds
        )

    # -- what goes to the facilitator ----------------------------------------------------

    def request_body(self, payload: ExactPayload) -> dict[str, Any]:
        """The v2 verify/settle body for a checked payment: the site's own offer as the
        requirements (the payment was checked against it), and as what the payer accepted."""
        requirements = self.offer(payload.price, payload.pay_to).to_json()
        payment: dict[str, Any] = {
            "x402Version": X402_VERSION,
            "accepted": requirements,
            "payload": {
                "signature": "0x" + payload.signature.hex(),
                "authorization": payload.authorization.to_json(),
            },
        }
        return {
            "x402Version": X402_VERSION,
            "paymentPayload": payment,
            "paymentRequirements": requirements,
        }

    def _submit(self, claim: Settlement, payload: ExactPayload) -> ExactReceipt:
        body = self.request_body(payload)
        try:
            self._verify(body, payload)
        except PaymentDeclinedError:
            self.book.update(_released(claim))  # nothing was sent to settle
            raise
        try:
            tx_hash = self._settle(body, payload)
        except PaymentDeclinedError as declined:
            nonce = "0x" + payload.authorization.nonce.hex()
            raise self._fail(
                claim, PaymentDeclinedError(declined.reason, f"{declined} (nonce {nonce})")
            ) from None
        return self._finish(claim, payload, tx_hash)

    def _verify(self, body: dict[str, Any], payload: ExactPayload) -> None:
        answer = self._post("verify", body, self.verify_timeout)
        valid = answer.get("isValid")
        if not isinstance(valid, bool):
            raise _invalid("/verify", "has no boolean isValid")
        _check_payer(answer, payload, "/verify")
        if not valid:
            raise PaymentDeclinedError(
                Reason.FACILITATOR_REFUSED,
                f"the facilitator refused the payment: {_words(answer, 'invalidReason')}",
            )

    def _settle(self, body: dict[str, Any], payload: ExactPayload) -> bytes:
        answer = self._post("settle", body, self.timeout)
        success = answer.get("success")
        if not isinstance(success, bool):
            raise _invalid("/settle", "has no boolean success")
        if not success:
            raise PaymentDeclinedError(
                Reason.FACILITATOR_REFUSED,
                f"the facilitator did not settle: {_words(answer, 'errorReason')}",
            )
        transaction = answer.get("transaction")
        if not isinstance(transaction, str) or not _TX_HASH_RE.fullmatch(transaction):
            raise _invalid("/settle", "reports success without a transaction hash")
        if answer.get("network") != self.network:
            raise _invalid("/settle", f"reports a settlement on {answer.get('network')!r}")
        _check_payer(answer, payload, "/settle")
        amount = answer.get("amount")
        if amount is not None and amount != str(payload.authorization.value):
            raise _invalid("/settle", f"reports an amount of {amount!r}")
        return bytes.fromhex(transaction[2:])

    def _post(self, endpoint: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """POST ``body`` and return the JSON object answered, read up to MAX_RESPONSE."""
        where = f"/{endpoint}"
        try:
            with self._http.stream(
                "POST", f"{self.url}/{endpoint}", json=body, timeout=timeout
            ) as response:
                raw = bytearray()
                for chunk in response.iter_bytes():
                    raw += chunk
                    if len(raw) > MAX_RESPONSE:
                        raise _invalid(where, f"answered more than {MAX_RESPONSE} bytes")
                status = response.status_code
        except httpx.TimeoutException:
            raise PaymentDeclinedError(
                Reason.FACILITATOR_UNAVAILABLE, f"the facilitator's {where} timed out"
            ) from None
        except httpx.HTTPError as err:
            raise PaymentDeclinedError(
                Reason.FACILITATOR_UNAVAILABLE, f"the facilitator's {where} failed: {err}"
            ) from None
        if status != 200:
            raise PaymentDeclinedError(
                Reason.FACILITATOR_UNAVAILABLE, f"the facilitator's {where} answered {status}"
            )
        try:
            answer = json.loads(bytes(raw))
        except ValueError:  # not JSON, or not UTF-8
            raise _invalid(where, "answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise _invalid(where, "answered JSON that is not an object")
        return answer


def _released(claim: Settlement) -> Settlement:
    """The claim left for a resend to take over at once (it never reached /settle)."""
    return replace(claim, claimed_at=0.0)


def _check_payer(answer: dict[str, Any], payload: ExactPayload, where: str) -> None:
    payer = answer.get("payer")
    if payer is not None and (
        not isinstance(payer, str) or payer.lower() != payload.authorization.payer.lower()
    ):
        raise _invalid(where, f"answers for another payer ({str(payer)[:_MAX_QUOTED]})")


def _invalid(where: str, what: str) -> PaymentDeclinedError:
    return PaymentDeclinedError(
        Reason.FACILITATOR_INVALID_RESPONSE, f"the facilitator's {where} {what}"
    )


def _words(answer: dict[str, Any], field: str) -> str:
    """The facilitator's reason code, bounded, for our message."""
    value = answer.get(field)
    return str(value)[:_MAX_QUOTED] if value is not None else "no reason given"


__all__ = ["MAX_RESPONSE", "FacilitatorSettler"]
