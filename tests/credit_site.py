"""A paywall selling prepaid credit on a SQLite ledger file, as its own OS process, for the
restart tests of tests/test_paywall_credit.py:

    python tests/credit_site.py RPC CONTRACT SITE_KEY PORT LEDGER_PATH PREPAY PRICE

It serves ``GET /articles/{slug}`` at PRICE with ``Paywall(prepay=PREPAY)`` until it is
killed; a line ``ready`` on stdout says it listens.
"""

from __future__ import annotations

import socket
import sys

import uvicorn
from eth_account import Account
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from web3 import HTTPProvider, Web3

from micropay.channels import ChannelClient
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall


async def article(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"article {request.path_params['slug']}")


def main(rpc: str, contract: str, key: str, port: str, path: str, prepay: str, price: str) -> None:
    client = ChannelClient(Web3(HTTPProvider(rpc)), contract)
    ledger = Ledger.open(f"sqlite:///{path}", client.domain)
    payee = Payee(client, Account.from_key(key), book=ledger, confirmations=0)
    app = Starlette(routes=[Route("/articles/{slug}", article)])
    paywall = Paywall(
        app, payee=payee, prices={"GET /articles/{slug}": int(price)}, prepay=int(prepay)
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(port)))
    config = uvicorn.Config(paywall, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    print("ready", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main(*sys.argv[1:])
