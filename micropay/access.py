"""Access receipts: a site that opts in lets a reader in again on the receipt it already paid.

A reader who paid for ``GET /articles/42`` an hour ago should not pay twice for reading it
again, if the site says so (``Paywall(..., access_period=86400)``). The 402 of such a site
carries ``extensions.access = {period, nonce}``; the reader answers with
``PAYMENT-ACCESS``: the site-signed receipt of its earlier charge, the nonce, and an
``Access(receiptId, nonce, resource)`` signature by the channel's session key. The site
lets it in, charging nothing, only if every one of these holds:

1. the receipt is signed by this site's payee key, in this site's receipt domain (chain
   and PaymentChannels contract);
2. it is for this very resource (``METHOD /path``, exactly as requested);
3. it was issued at most ``period`` seconds ago (and not in the future);
4. the nonce is one this site issued for this resource, at most ``nonce_ttl`` seconds ago
   (an HMAC under a key derived from the payee key: every server process of the site
   checks it, none keeps state);
5. the proof is signed by the authorizer (session key) of the receipt's channel, as the
   site's book holds the channel, and that channel is the receipt payer's.

Why the proof: a receipt is evidence meant to be shown (to a dispute, an auditor), so it
must not work as a bearer token; what only the reader has is the channel's session key.
A copied receipt without that key is refused. Limits: a whole ``PAYMENT-ACCESS`` header
seen in transit can be replayed for the same resource until its nonce expires (use
HTTPS, as for any cookie); a reader may share its session key, and with it the channel's
deposit; and the site must still hold the channel's configuration (a durable ledger
does; the in-memory book forgets it on restart, and the reader then pays again).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable

from eth_account.signers.local import LocalAccount

from micropay._keccak import keccak256
from micropay._x402 import AccessOffer, AccessRequest
from micropay.errors import ReceiptError
from micropay.receipts import SignedReceipt, recover_access, verify_receipt
from micropay.vouchers import ChannelConfig, VoucherDomain

__all__ = ["AccessGate"]

_NONCE_TAG = b"micropay access nonce v1"
_CLOCK_SKEW = 5  # seconds a receipt or nonce may seem to come from the future


class AccessGate:
    """The site's side of access receipts: issues nonces and admits receipts (the rule is
    in the module docstring)."""

    def __init__(
        self, domain: VoucherDomain, account: LocalAccount, period: int, nonce_ttl: int = 120
    ) -> None:
        if type(period) is not int or period <= 0:
            raise ValueError(f"access_period must be a positive number of seconds: {period!r}")
        self.domain = domain
        self.period = period
        self.nonce_ttl = nonce_ttl
        self._payee = account.address
        self._secret = keccak256(_NONCE_TAG + bytes(account.key))

    def offer(self, resource: str) -> AccessOffer:
        """What a 402 for ``resource`` says about access: the period and a fresh nonce."""
        return AccessOffer(self.period, self.nonce(resource, int(time.time())))

    def nonce(self, resource: str, issued_at: int) -> bytes:
        """8 bytes of issue time, 8 random, 16 of HMAC over both and the resource."""
        head = issued_at.to_bytes(8, "big") + os.urandom(8)
        return head + self._mac(head, resource)

    def _mac(self, head: bytes, resource: str) -> bytes:
        return hmac.new(self._secret, head + resource.encode(), hashlib.sha256).digest()[:16]

    def admit(
        self,
        request: AccessRequest,
        resource: str,
        config_of: Callable[[bytes], ChannelConfig | None],
        now: int | None = None,
    ) -> SignedReceipt:
        """The receipt that lets this request in, or :class:`ReceiptError` saying why not.
        ``config_of`` finds a channel's configuration in the site's book."""
        now = int(time.time()) if now is None else now
        receipt, nonce = request.receipt, request.nonce
        issued = int.from_bytes(nonce[:8], "big")
        if not hmac.compare_digest(nonce[16:], self._mac(nonce[:16], resource)):
            raise ReceiptError("the access nonce was not issued by this site for this resource")
        if not now - self.nonce_ttl <= issued <= now + _CLOCK_SKEW:
            raise ReceiptError("the access nonce has expired: sign the new one")
        if receipt.domain != self.domain:
            raise ReceiptError("the receipt is for another chain or contract")
        verify_receipt(receipt, self._payee)
        if receipt.resource != resource:
            raise ReceiptError(f"the receipt is for {receipt.resource!r}, not {resource!r}")
        if receipt.amount == 0:  # a stream's start, a metered read that used nothing: unpaid
            raise ReceiptError("the receipt charged nothing: it pays for no access")
        if not now - self.period <= receipt.issued_at <= now + _CLOCK_SKEW:
            raise ReceiptError(f"the receipt is older than the access period ({self.period} s)")
        config = config_of(receipt.channel_id)
        if config is None or config.payer != receipt.payer:
            raise ReceiptError("the site holds no such channel of the receipt's payer")
        signer = recover_access(self.domain, receipt.receipt_id, nonce, resource, request.proof)
        if signer != bytes.fromhex(config.authorizer[2:]):
            raise ReceiptError("the access proof is not signed by the channel's session key")
        return receipt
