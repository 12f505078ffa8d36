"""A site's own app: FastAPI pages behind micropay's paywall, priced in a USDC-like token.

What a content site runs for real, as opposed to ``micropay serve``'s demo site: its key
comes from the environment, prices are in an ERC-20 with 6 decimals, accepted vouchers go
to a durable SQLite ledger (a restart loses no money), and the watchtower runs beside the
app in a background thread, claiming in time when a reader asks for its deposit back. The
watchtower starts with the app and stops, after its round in progress, on shutdown.

    MICROPAY_PRIVATE_KEY=0x…  MICROPAY_RPC=http://127.0.0.1:8545  MICROPAY_TOKEN=0x… \\
        uvicorn --factory --app-dir examples token_site:create_app --port 8403

Settings (environment):
    MICROPAY_PRIVATE_KEY   the site's key: it receives the payments and pays claim gas
    MICROPAY_RPC           the node (default http://127.0.0.1:8545)
    MICROPAY_TOKEN         the ERC-20 prices are in (required)
    MICROPAY_PRICE         per report, in token units (default 0.01: a cent of a dollar token)
    MICROPAY_CONTRACT      PaymentChannels (default: its deterministic address, ``micropay deploy``)
    MICROPAY_LEDGER        voucher ledger URL (default sqlite:///token-site.db)
    MICROPAY_CONFIRMATIONS blocks the watchtower waits for (default 2)
    MICROPAY_POLL          seconds between watchtower rounds (default 5)
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal, InvalidOperation

from eth_account import Account
from fastapi import FastAPI, HTTPException, Request
from web3 import HTTPProvider, Web3

from micropay._artifacts import load_artifact
from micropay.channels import ChannelClient
from micropay.deployments import create2_address
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall
from micropay.settlement import SettlementPolicy
from micropay.tokens import TokenClient
from micropay.watchtower import Watchtower

REPORTS = {
    "q3-outlook": "Fees fall as settlement batches grow.",
    "stablecoin-usage": "Most paid reads are priced in dollar tokens.",
}


def _setting(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        raise SystemExit(f"error: set ${name} (see examples/token_site.py)")
    return value


def _token_amount(text: str, decimals: int) -> int:
    """``0.01`` token units in base units; refuses what is not a positive whole base unit."""
    try:
        value = Decimal(text) * 10**decimals
    except InvalidOperation:
        value = Decimal(-1)
    if value <= 0 or value != value.to_integral_value():
        raise SystemExit(f"error: $MICROPAY_PRICE={text!r} is not a positive token amount")
    return int(value)


def create_app() -> FastAPI:
    """Build the app from the environment (uvicorn ``--factory`` calls this)."""
    w3 = Web3(HTTPProvider(_setting("MICROPAY_RPC", "http://127.0.0.1:8545")))
    site_key = Account.from_key(_setting("MICROPAY_PRIVATE_KEY"))
    token = TokenClient(w3, _setting("MICROPAY_TOKEN"))
    decimals = token.decimals()
    price = _token_amount(_setting("MICROPAY_PRICE", "0.01"), decimals)
    default_contract = create2_address(bytes.fromhex(load_artifact("PaymentChannels").bytecode[2:]))
    channels = ChannelClient.attach(w3, _setting("MICROPAY_CONTRACT", default_contract))
    ledger = Ledger.open(_setting("MICROPAY_LEDGER", "sqlite:///token-site.db"), channels.domain)
    payee = Payee(channels, site_key, book=ledger)
    tower = Watchtower(
        channels,
        ledger,
        site_key,
        # Claim once a reader owes a hundred reads, and whenever one asks to withdraw.
        SettlementPolicy(thresholds={token.address: 100 * price}),
        confirmations=int(_setting("MICROPAY_CONFIRMATIONS", "2")),
        poll_interval=float(_setting("MICROPAY_POLL", "5")),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tower.start()
        logging.getLogger("token_site").warning(
            "watchtower started for %s (payee %s, %d base units a report)",
            channels.address,
            site_key.address,
            price,
        )
        try:
            yield
        finally:
            tower.stop()
            ledger.close()
            logging.getLogger("token_site").warning("watchtower stopped")

    app = FastAPI(title="reports, paid per read", lifespan=lifespan)

    @app.get("/")
    async def index() -> dict[str, object]:
        return {"reports": sorted(REPORTS), "price": price, "token": token.address}

    @app.get("/reports/{slug}")
    async def report(slug: str, request: Request) -> dict[str, object]:
        if slug not in REPORTS:  # not charged: the paywall charges 2xx answers only
            raise HTTPException(404, "no such report")
        payment = request.state.payment
        return {"report": REPORTS[slug], "paid": payment.amount, "payer": payment.payer}

    app.add_middleware(
        Paywall, payee=payee, prices={"GET /reports/{slug}": price}, asset=token.address
    )
    return app
