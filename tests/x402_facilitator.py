"""The official x402 facilitator, served over HTTP on loopback, for the interop tests.

The ``x402`` package ships the facilitator itself (``x402FacilitatorSync`` with its ``exact``
EVM scheme and ``FacilitatorWeb3Signer``) but no server around it: this is the thin layer
an operator writes, the standard v2 endpoints ``POST /verify``, ``POST /settle`` (body
``{"x402Version": 2, "paymentPayload", "paymentRequirements"}``) and ``GET /supported``,
each answered with the package's own response model. Nothing of the facilitator's logic
lives here, so a site that settles through it talks to x402's code, unmodified.

The sync facilitator is used because the EVM scheme blocks on web3 calls (and on the
receipt in ``/settle``): each request runs it in Starlette's thread pool, so a slow
settlement does not stall ``/supported`` or a concurrent ``/verify``.

    with x402_facilitator(w3, dev_key(9)) as facilitator:
        facilitator.url  # http://127.0.0.1:PORT, for HTTPFacilitatorClient or micropay
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from paywall_helpers import Server
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from web3 import Web3
from x402 import x402FacilitatorSync
from x402.mechanisms.evm import FacilitatorWeb3Signer
from x402.mechanisms.evm.exact import register_exact_evm_facilitator
from x402.schemas import PaymentError, SettleRequest, VerifyRequest

# The receipt wait inside /settle: below the tests' request timeouts, so a stuck chain
# gives the facilitator's own settlement_pending answer rather than a dropped connection.
CONFIRMATION_TIMEOUT = 30.0


@dataclass(frozen=True)
class LocalFacilitator:
    """A running facilitator: where to reach it and who pays the gas of its settlements."""

    url: str
    address: str
    network: str
    facilitator: x402FacilitatorSync


def facilitator_app(facilitator: x402FacilitatorSync) -> Starlette:
    """The v2 HTTP face of ``facilitator``: malformed requests get 400 with a reason."""

    async def parsed(request: Request, model: type[VerifyRequest] | type[SettleRequest]) -> Any:
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict) or body.get("x402Version") != 2:
                raise ValueError("this facilitator speaks x402Version 2")
            return model.model_validate(body)
        except (ValueError, ValidationError) as err:  # JSONDecodeError is a ValueError
            raise _BadRequest(str(err).splitlines()[0]) from None

    async def verify(request: Request) -> Response:
        try:
            ask = await parsed(request, VerifyRequest)
            result = await run_in_threadpool(
                facilitator.verify, ask.payment_payload, ask.payment_requirements
            )
        except (_BadRequest, PaymentError) as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        return JSONResponse(result.model_dump(by_alias=True, exclude_none=True))

    async def settle(request: Request) -> Response:
        try:
            ask = await parsed(request, SettleRequest)
            result = await run_in_threadpool(
                facilitator.settle, ask.payment_payload, ask.payment_requirements
            )
        except (_BadRequest, PaymentError) as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        return JSONResponse(result.model_dump(by_alias=True, exclude_none=True))

    async def supported(request: Request) -> Response:
        return JSONResponse(facilitator.get_supported().model_dump(by_alias=True))

    return Starlette(
        routes=[
            Route("/verify", verify, methods=["POST"]),
            Route("/settle", settle, methods=["POST"]),
            Route("/supported", supported, methods=["GET"]),
        ]
    )


class _BadRequest(Exception):
    """A request body that is not a v2 verify/settle request."""


def rpc_url_of(w3: Web3) -> str:
    """The HTTP endpoint behind ``w3`` (the facilitator's signer opens its own connection)."""
    url = getattr(w3.provider, "endpoint_uri", None)
    if not isinstance(url, str) or not url.startswith("http"):
        raise ValueError("the x402 facilitator needs a node reachable over HTTP (anvil)")
    return url


@contextlib.contextmanager
def x402_facilitator(w3: Web3, key: LocalAccount) -> Iterator[LocalFacilitator]:
    """x402's facilitator for ``exact`` on ``w3``'s chain, settling with ``key`` (which must
    hold ETH for gas), served on 127.0.0.1 for the ``with`` block."""
    network = f"eip155:{w3.eth.chain_id}"
    signer = FacilitatorWeb3Signer(
        private_key="0x" + bytes(key.key).hex(),
        rpc_url=rpc_url_of(w3),
        confirmation_timeout_seconds=CONFIRMATION_TIMEOUT,
    )
    facilitator = x402FacilitatorSync()
    register_exact_evm_facilitator(facilitator, signer, networks=network)
    with Server(facilitator_app(facilitator)) as server:
        yield LocalFacilitator(server.url, key.address, network, facilitator)
