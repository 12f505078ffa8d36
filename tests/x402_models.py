"""Check headers against the official x402 package's schema models (a test dependency).

What x402's own SDKs parse is the bar: a header these models refuse is one an unmodified
x402 client or server cannot read.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from x402.schemas import PaymentPayload, PaymentRequired, SettleResponse

HEADERS = ("payment-required", "payment-signature", "payment-response")


def _json(header: str | bytes) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(base64.b64decode(header))
    return obj


def check_required(header: str | bytes) -> PaymentRequired:
    """A PAYMENT-REQUIRED as x402 reads it: an absolute resource URL, a reason in ``error``."""
    model = PaymentRequired.model_validate(_json(header))
    assert model.x402_version == 2
    assert model.resource is not None and model.resource.url.startswith(("http://", "https://"))
    assert model.error, "a 402 says why in error"
    for offer in model.accepts:
        assert offer.max_timeout_seconds > 0
    return model


def check_payload(header: str | bytes) -> PaymentPayload:
    """A PAYMENT-SIGNATURE as an x402 server reads it: ``accepted`` in full, ``resource``."""
    raw = _json(header)
    model = PaymentPayload.model_validate(raw)
    assert "maxTimeoutSeconds" in raw["accepted"] and "extra" in raw["accepted"]
    assert model.resource is not None and model.resource.url.startswith("http")
    return model


def check_receipt(header: str | bytes) -> SettleResponse:
    """A PAYMENT-RESPONSE as x402 reads it (SettleResponse)."""
    model = SettleResponse.model_validate(_json(header))
    assert model.network.startswith("eip155:")
    return model


CHECKS = {
    "payment-required": check_required,
    "payment-signature": check_payload,
    "payment-response": check_receipt,
}


class Recorder:
    """ASGI middleware keeping every x402 header that passes through it, in both directions."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen += [(n.decode(), v) for n, v in scope["headers"] if n.decode() in HEADERS]

        async def recording(message: Any) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", ()):
                    if name.decode().lower() in HEADERS:
                        self.seen.append((name.decode().lower(), value))
            await send(message)

        await self.app(scope, receive, recording)

    def check_all(self) -> dict[str, int]:
        """Validate every header seen; return how many of each kind."""
        counts = dict.fromkeys(HEADERS, 0)
        for name, value in self.seen:
            CHECKS[name](value)
            counts[name] += 1
        return counts
