"""The example content site: Starlette pages, the paywall in front, a payee that settles later.

A few paid articles and one free page. ``micropay serve`` (or ``python -m
micropay.example_site``) runs it with uvicorn; ``micropay demo`` drives it over real HTTP.

Why an embedded chain by default: the example then runs with nothing else installed or
started (``make demo``). Point it at a node with ``--rpc`` (anvil, hardhat, a testnet);
on a node with unlocked accounts (anvil, hardhat) the site funds a fresh key for its
claims and deploys PaymentChannels itself, on a testnet give ``--site-key`` and
``--contract`` (or let it deploy with the site key's funds).
"""

from __future__ import annotations

import argparse
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from web3 import HTTPProvider, Web3

from micropay.channels import ChannelClient
from micropay.networks import embedded_chain
from micropay.payee import Payee, VoucherBook
from micropay.paywall import Paywall, PricedRoute
from micropay.reader_page import SCRIPT_PATH
from micropay.vouchers import ZERO_ADDRESS

DEFAULT_PRICE = 10**13  # 0.00001 ETH per article
SITE_FUNDING = 10 * 10**18  # what a fresh site key gets on a dev chain, for claim gas


@dataclass(frozen=True)
class Article:
    title: str
    paragraphs: tuple[str, ...]


ARTICLES: dict[str, Article] = {
    "fees-eat-micropayments": Article(
        "Why a fee per transfer kills micropayments",
        (
            "A payment of a tenth of a cent cannot carry a fee of five cents.",
            "Channels lock money once and move it with signatures that cost nothing to send.",
        ),
    ),
    "vouchers-explained": Article(
        "Vouchers: promises that only grow",
        (
            "Each voucher states the total owed so far, so only the latest one matters.",
            "The site keeps the best voucher per reader and claims it whenever it likes.",
        ),
    ),
    "leaving-a-channel": Article(
        "Getting your deposit back",
        (
            "A reader who stops reading asks to withdraw; after the delay the rest is theirs.",
            "During the delay the site can still claim what it was promised, and no more.",
        ),
    ),
}


@dataclass(frozen=True)
class ContentSite:
    """The app and what a demo or a test needs around it (chain, payee for settling)."""

    app: Paywall
    """The ASGI app: the paywall in front of the site's Starlette pages."""
    payee: Payee
    channels: ChannelClient
    w3: Web3
    price: int


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>{body}</body></html>"
    )


def render_index(price: int, asset: str) -> str:
    """The free page: what there is to read and what it costs."""
    unit = "wei" if asset == ZERO_ADDRESS else f"base units of {asset}"
    items = "".join(
        f"<li><a href='/articles/{slug}' data-micropay>{html.escape(a.title)}</a></li>"
        for slug, a in ARTICLES.items()
    )
    # The reader page's script pays the marked links in place for a reader who already
    # pays the site (micropay.reader_page); without a wallet they are plain links.
    return _page(
        "micropay news",
        f"<script type='module' src='{SCRIPT_PATH}'></script>"
        f"<main id='micropay-content'><h1>micropay news</h1><p>Each article costs {price} "
        f"{unit}, paid per read through a payment channel (HTTP 402).</p><ul>{items}</ul></main>",
    )


def render_article(article: Article, payer: str, amount: int) -> str:
    paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in article.paragraphs)
    return _page(
        article.title,
        f"<h1>{html.escape(article.title)}</h1>{paragraphs}"
        f"<footer>Paid {amount} by {html.escape(payer)}. Thank you.</footer>",
    )


def _funded_key(w3: Web3) -> LocalAccount:
    """A fresh key funded by the node's first unlocked account (dev chains only)."""
    if not w3.eth.accounts:
        raise RuntimeError("this node unlocks no account: give the site's key (--site-key)")
    key: LocalAccount = Account.create()
    tx_hash = w3.eth.send_transaction(
        {"from": w3.eth.accounts[0], "to": key.address, "value": Web3.to_wei(SITE_FUNDING, "wei")}
    )
    w3.eth.wait_for_transaction_receipt(tx_hash)
    return key


def create_site(
    w3: Web3 | None = None,
    *,
    site_key: LocalAccount | None = None,
    contract: str | None = None,
    price: int = DEFAULT_PRICE,
    asset: str = ZERO_ADDRESS,
    book: VoucherBook | None = None,
    ledger_url: str | None = None,
    min_deposit: int | None = None,
    prepay: int | None = None,
) -> ContentSite:
    """Build the site. Defaults: embedded chain, fresh funded key, a new deployment, vouchers
    kept in memory (``ledger_url="sqlite:///path.db"`` keeps them across restarts), the
    paywall's least deposit (ten prices), no prepaid credit (``prepay=k``: one voucher may
    pay for up to k articles, see docs/protocol.md)."""
    w3 = w3 if w3 is not None else embedded_chain().w3
    site_key = site_key if site_key is not None else _funded_key(w3)
    channels = (
        ChannelClient.attach(w3, contract) if contract else ChannelClient.deploy(w3, site_key)
    )
    if book is None and ledger_url is not None:
        from micropay.ledger import Ledger

        book = Ledger.open(ledger_url, channels.domain)
    payee = Payee(channels, site_key, book=book)

    async def index(request: Request) -> Response:
        return HTMLResponse(render_index(price, asset))

    async def article(request: Request) -> Response:
        found = ARTICLES.get(request.path_params["slug"])
        if found is None:  # a 404 is not charged: the paywall charges 2xx only
            return HTMLResponse(_page("Not found", "<h1>No such article</h1>"), status_code=404)
        payment = request.state.payment
        return HTMLResponse(render_article(found, payment.payer, payment.amount))

    pages = Starlette(routes=[Route("/", index), Route("/articles/{slug}", article)])
    # Wrapping (rather than pages.add_middleware) hands us the instance to show the demo.
    route = PricedRoute.parse(
        "GET /articles/{slug}",
        price,
        description="One article of micropay news, paid per read",
        mime_type="text/html",
    )
    paywall = Paywall(
        pages, payee=payee, prices=[route], asset=asset, min_deposit=min_deposit, prepay=prepay
    )
    return ContentSite(paywall, payee, channels, w3, price)


def create_app(w3: Web3 | None = None, **options: Any) -> Paywall:
    """The ASGI app alone (see :func:`create_site` for the options)."""
    return create_site(w3, **options).app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the micropay example content site.")
    parser.add_argument("--rpc", help="node URL (default: an embedded in-process chain)")
    parser.add_argument(
        "--site-key",
        default=os.environ.get("MICROPAY_SITE_KEY"),
        help="hex private key of the payee (default $MICROPAY_SITE_KEY, or a funded new key)",
    )
    parser.add_argument("--contract", help="PaymentChannels address (default: deploy one)")
    parser.add_argument("--price", type=int, default=DEFAULT_PRICE, help="base units per article")
    parser.add_argument("--asset", default=ZERO_ADDRESS, help="token address (default ETH)")
    parser.add_argument("--ledger", help="durable voucher ledger URL, e.g. sqlite:///ledger.db")
    parser.add_argument(
        "--prepay", type=int, help="sell prepaid credit: up to this many articles per voucher"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8402)
    args = parser.parse_args(argv)

    import uvicorn

    w3 = Web3(HTTPProvider(args.rpc)) if args.rpc else None
    site = create_site(
        w3,
        site_key=Account.from_key(args.site_key) if args.site_key else None,
        contract=args.contract,
        price=args.price,
        asset=args.asset,
        ledger_url=args.ledger,
        prepay=args.prepay,
    )
    print(
        f"micropay news on http://{args.host}:{args.port}  chain {site.w3.eth.chain_id}  "
        f"contract {site.channels.address}  payee {site.payee.account.address}",
        flush=True,
    )
    uvicorn.run(site.app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
