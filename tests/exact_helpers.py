"""A site sold in ``channel`` and ``exact``, for the exact-scheme tests, in-process or as a
worker process (``python tests/exact_helpers.py RPC CHANNELS TOKEN KEY LEDGER PORT
[FACILITATOR_URL]``), and the payments the tests send it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from web3 import Web3
from x402_models import check_required

from micropay._eip3009 import AuthorizationToken, authorize
from micropay.channels import ChannelClient
from micropay.devnode import free_port
from micropay.exact import ExactOffer, ExactPayload, ExactSettler, ExactSettlerBase
from micropay.facilitator import FacilitatorSettler
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall, PricedRoute

PRICE = 10_000  # 0.01 of a 6-decimal token


def funded_usdc(node: Any) -> AuthorizationToken:
    """The USDC-like test token on a test chain (paywall_helpers.chain), every reader
    holding 1,000 of it."""
    token = AuthorizationToken.deploy(node.w3, node.deployer, "USD Coin", "USDC")
    for reader in node.readers:
        token.mint(reader.address, 10**9, node.deployer)
    return token


def exact_site(
    w3: Web3,
    channels: str,
    token: str,
    site_key: LocalAccount,
    ledger_url: str,
    *,
    timeout: float = 30.0,
    schemes: tuple[str, ...] = ("channel", "exact"),
    facilitator: str | None = None,
    verify_timeout: float = 10.0,
    max_timeout_seconds: int = 60,
) -> Any:
    """The paywalled app: ``GET /report`` costs PRICE of the token, in the given schemes,
    settled by the site's key, or by the x402 facilitator at the URL ``facilitator``, under
    an ``exact`` offer of ``max_timeout_seconds``."""
    client = ChannelClient.attach(w3, channels)
    ledger = Ledger.open(ledger_url, client.domain)
    payee = Payee(client, site_key, book=ledger)
    usdc, book = AuthorizationToken(w3, token), ledger.authorizations
    settler: ExactSettlerBase
    if facilitator is None:
        settler = ExactSettler(
            usdc, site_key, book=book, timeout=timeout, max_timeout_seconds=max_timeout_seconds
        )
    else:
        settler = FacilitatorSettler(
            facilitator,
            usdc,
            book=book,
            timeout=timeout,
            verify_timeout=verify_timeout,
            max_timeout_seconds=max_timeout_seconds,
        )

    async def report(request: Request) -> Response:
        payment = request.state.payment
        return PlainTextResponse(f"report for {payment.payer} ({payment.scheme})")

    route = PricedRoute.parse(
        "GET /report", PRICE, description="A paid report", mime_type="text/plain", schemes=schemes
    )
    app = Starlette(routes=[Route("/report", report)])
    return Paywall(app, payee=payee, prices=[route], asset=token, exact=settler)


def exact_offer_of(response: httpx.Response) -> ExactOffer:
    required = check_required(response.headers["payment-required"])
    [offer] = [o for o in required.accepts if o.scheme == "exact"]
    return ExactOffer.from_json(offer.model_dump(by_alias=True))


def pay(url: str, payload: ExactPayload) -> httpx.Response:
    return httpx.get(url, headers={"payment-signature": payload.encode()}, timeout=60)


def signed(offer: ExactOffer, reader, **changes):  # type: ignore[no-untyped-def]
    """An exact payload for ``offer``, with fields of the authorization or the offer changed."""
    domain = changes.pop("domain", offer.domain)
    valid_before = changes.pop("valid_before", int(time.time()) + 60)
    authorization, signature = authorize(
        domain,
        reader,
        changes.pop("to", offer.pay_to),
        changes.pop("value", offer.price),
        valid_before,
        valid_after=changes.pop("valid_after", 0),
        nonce=changes.pop("nonce", None),
    )
    fields = {"network": offer.network, "price": offer.price, "asset": offer.asset}
    fields.update(changes)
    return ExactPayload(
        fields["network"], fields["price"], fields["asset"], offer.pay_to, authorization,
        signature, offer,
    )  # fmt: skip


@contextlib.contextmanager
def site_workers(
    w3: Web3,
    channels: str,
    token: str,
    site_key: LocalAccount,
    ledger_url: str,
    count: int = 2,
    facilitator: str | None = None,
) -> Iterator[list[str]]:
    """``count`` worker processes serving :func:`exact_site` over one ledger; yields the
    URL of ``GET /report`` on each, once every one answers."""
    rpc = str(getattr(w3.provider, "endpoint_uri", ""))
    ports = [free_port() for _ in range(count)]
    key = "0x" + bytes(site_key.key).hex()
    args = [rpc, channels, token, key, ledger_url]
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, *args, str(port), *([facilitator] if facilitator else [])],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        for port in ports
    ]
    try:
        urls = [f"http://127.0.0.1:{port}/report" for port in ports]
        deadline = time.monotonic() + 60
        for url in urls:
            while True:
                try:
                    httpx.get(url)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "a worker did not start"
                    time.sleep(0.2)
        yield urls
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)


def main(argv: list[str]) -> None:
    import uvicorn

    rpc, channels, token, key, ledger_url, port, *facilitator = argv
    w3 = Web3(Web3.HTTPProvider(rpc))
    app = exact_site(
        w3, channels, token, Account.from_key(key), ledger_url,
        facilitator=facilitator[0] if facilitator else None,
    )  # fmt: skip
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", lifespan="off")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main(sys.argv[1:])
