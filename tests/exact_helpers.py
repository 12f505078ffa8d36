"""A site sold in ``channel`` and ``exact``, for the exact-scheme tests, in-process or as a
worker process (``python tests/exact_helpers.py RPC CHANNELS TOKEN KEY LEDGER PORT``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from web3 import Web3

from micropay._eip3009 import AuthorizationToken
from micropay.channels import ChannelClient
from micropay.exact import ExactSettler
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall, PricedRoute

PRICE = 10_000  # 0.01 of a 6-decimal token


def exact_site(
    w3: Web3,
    channels: str,
    token: str,
    site_key: LocalAccount,
    ledger_url: str,
    *,
    timeout: float = 30.0,
    schemes: tuple[str, ...] = ("channel", "exact"),
) -> Any:
    """The paywalled app: ``GET /report`` costs PRICE of the token, in the given schemes."""
    client = ChannelClient.attach(w3, channels)
    ledger = Ledger.open(ledger_url, client.domain)
    payee = Payee(client, site_key, book=ledger)
    settler = ExactSettler(
        AuthorizationToken(w3, token), site_key, book=ledger.authorizations, timeout=timeout
    )

    async def report(request: Request) -> Response:
        payment = request.state.payment
        return PlainTextResponse(f"report for {payment.payer} ({payment.scheme})")

    route = PricedRoute.parse(
        "GET /report", PRICE, description="A paid report", mime_type="text/plain", schemes=schemes
    )
    app = Starlette(routes=[Route("/report", report)])
    return Paywall(app, payee=payee, prices=[route], asset=token, exact=settler)


def main(argv: list[str]) -> None:
    import uvicorn

    rpc, channels, token, key, ledger_url, port = argv
    w3 = Web3(Web3.HTTPProvider(rpc))
    app = exact_site(w3, channels, token, Account.from_key(key), ledger_url)
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", lifespan="off")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main(sys.argv[1:])
