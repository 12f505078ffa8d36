"""The demo's pay-for-what-you-use scene: metered answers, and a refund, on one channel.

An API sells ``GET /v1/search`` "up to" :data:`SEARCH_MAX` a query: each voucher authorises
the charged total plus that maximum (a ceiling), and the handler charges what the query used
(:data:`PER_RESULT` a result found; nothing when it finds nothing). One answer turns out
wrong and the site refunds its charge off chain, without gas: the next receipt shows it.
Then the site closes the channel: it settles the charged total, not the ceiling the user
signed, and the contract returns the rest of the deposit to the user in the same
transaction. The summary shows the ceiling, every charge, the refund and what was settled,
adding up to the wei.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx
from eth_account.signers.local import LocalAccount
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from web3 import Web3

from micropay._x402 import Receipt
from micropay.channels import ChannelClient
from micropay.http_client import DepositPolicy, HttpPayer, PaymentPolicy, PaymentTransport
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall, UpTo

SEARCH_MAX = 10**13  # at most 0.00001 ETH a query
PER_RESULT = 10**12  # charged per result found
QUERIES = (
    "payment channels",
    "eip-712",
    "unidirectional",
    "zzzz-nothing",  # finds nothing: charged 0
    "x402 exact",
    "cumulative vouchers",
    "reorg depth",
    "watchtower",
    "ceiling",
    "refund",
)
WRONG = "reorg depth"  # the answer the site refunds


def results_for(query: str) -> int:
    """A deterministic stand-in for a search engine: how many results a query finds."""
    if query.startswith("zzzz"):
        return 0
    return 1 + sum(query.encode()) % 10


@dataclass(frozen=True)
class MeteredSummary:
    """What the scene measured, in wei."""

    queries: int
    charges: tuple[int, ...]  # what each answer was charged, from its receipt
    ceiling: int  # the best voucher the user signed (the most the site could have settled)
    refunded: int
    charged_total: int  # the site's book after the refund
    settled: int  # claimed on chain by the close
    returned: int  # the rest of the deposit, back to the user at the close
    deposit: int

    @property
    def adds_up(self) -> bool:
        """Charges less the refund are what the book holds, what was settled, and the deposit
        is exactly what was settled plus what came back."""
        return (
            sum(self.charges) - self.refunded == self.charged_total == self.settled
            and self.settled + self.returned == self.deposit
            and self.settled <= self.ceiling
        )


def _site(channels: ChannelClient, key: LocalAccount, ledger: Ledger) -> Paywall:
    async def search(request: Request) -> Response:
        query = request.query_params.get("q", "")
        found = results_for(query)
        request.state.payment.charge(found * PER_RESULT)  # what this answer used
        hits = [f"{query} #{n}" for n in range(1, found + 1)]
        return JSONResponse({"query": query, "results": hits})

    app = Starlette(routes=[Route("/v1/search", search)])
    payee = Payee(channels, key, book=ledger, confirmations=0)
    return Paywall(app, payee=payee, prices={"GET /v1/search": UpTo(SEARCH_MAX)})


def run(
    w3: Web3,
    *,
    site_key: LocalAccount,
    user: LocalAccount,
    channels: ChannelClient,
    folder: Path,
    serve: Callable[[object], AbstractContextManager[str]],
    out: Console,
) -> MeteredSummary:
    """Play the scene; ``serve`` is the demo's context manager that runs an app on loopback."""
    ledger = Ledger.open(f"sqlite:///{folder / 'metered-site.db'}", channels.domain)
    site = _site(channels, site_key, ledger)
    policy = PaymentPolicy(
        max_price=SEARCH_MAX,
        deposit=DepositPolicy(requests=4 * len(QUERIES), max_requests=4 * len(QUERIES)),
    )
    payer = HttpPayer(w3, user, policy, store=folder / "metered-user.json")
    charges: list[int] = []
    with serve(site) as url, httpx.Client(transport=PaymentTransport(payer)) as client:

        def ask(query: str) -> Receipt:
            response = client.get(f"{url}/v1/search", params={"q": query})
            if response.status_code != 200:
                raise RuntimeError(f"search {query!r} answered {response.status_code}")
            receipt = Receipt.decode(response.headers["payment-response"])
            charges.append(receipt.amount)
            return receipt

        receipts = [ask(query) for query in QUERIES]
        channel_id = receipts[0].channel_id
        wrong = receipts[QUERIES.index(WRONG)]
        out.print(
            f"an API user asked {len(QUERIES)} searches priced up to {SEARCH_MAX} wei each: "
            f"charged {', '.join(str(c) for c in charges)} wei (what each used)"
        )
        refund = site.payee.refund(channel_id, wrong.amount, f"wrong answer to {WRONG!r}")
        out.print(
            f"the site refunded the {wrong.amount} wei charged for {WRONG!r}, off chain: "
            f"charged total {refund.charged} wei"
        )
        after = ask("after the refund")
        out.print(
            f"the next receipt shows it: refunded {after.refunded} wei, "
            f"charged total {after.cumulative_amount} wei"
        )
    held = ledger.held(channel_id)
    assert held is not None
    deposit = channels.state(channel_id).deposited
    before = w3.eth.get_balance(user.address)
    close = site.payee.close(channel_id)
    returned = w3.eth.get_balance(user.address) - before
    settled = channels.state(channel_id).claimed
    out.print(
        f"the site closed the channel: settled {settled} wei (the charged total, not the "
        f"{held.ceiling} wei ceiling the user signed; {int(close['gasUsed']):,} gas) and the "
        f"user got {returned} wei back in the same transaction"
    )
    ledger.close()
    return MeteredSummary(
        queries=len(charges),
        charges=tuple(charges),
        ceiling=held.ceiling,
        refunded=held.refunded,
        charged_total=held.charged,
        settled=settled,
        returned=returned,
        deposit=deposit,
    )
