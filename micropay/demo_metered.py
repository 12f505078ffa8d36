"""The demo's pay-for-what-you-use scene: metered answers, streams and a refund, on one channel.

An API sells, to one user over one channel:

- ``GET /v1/search`` "up to" :data:`SEARCH_MAX` a query: each voucher authorises the charged
  total plus that maximum (a ceiling), and the handler charges what the query used
  (:data:`PER_RESULT` a result found; nothing when it finds nothing);
- ``GET /v1/complete``, an LLM-style answer streamed as server-sent events at
  :data:`PER_TOKEN` a token, paid :data:`TOKEN_INCREMENT` tokens at a time: the paywall asks
  for each next increment in band and charges only the tokens it sent;
- ``GET /v1/watch``, a media stream in a chunked body at :data:`PER_SECOND` a second of
  :data:`SECOND_BYTES` bytes, paid :data:`SECOND_INCREMENT` seconds at a time.

One search answer turns out wrong and the site refunds its charge off chain, without gas:
the next receipt shows it. Then the site closes the channel: it settles the charged total,
not the ceiling the user signed, and the contract returns the rest of the deposit to the
user in the same transaction. The summary shows the ceiling, every charge, the refund and
what was settled, adding up to the wei.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx
from eth_account.signers.local import LocalAccount
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from web3 import Web3

from micropay._x402 import Receipt
from micropay.channels import ChannelClient
from micropay.http_client import DepositPolicy, HttpPayer, PaymentPolicy, PaymentTransport
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall, UpTo
from micropay.streaming import PerUnit, stream_status

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
PER_TOKEN = 10**11  # an LLM token
TOKEN_INCREMENT = 50  # tokens paid at a time
ANSWER = ("a paid answer streamed one token at a time " * 15).split()  # 135 tokens
PER_SECOND = 2 * 10**11  # a second of media
SECOND_BYTES = 4_000  # the bytes of one second
SECOND_INCREMENT = 10  # seconds paid at a time
SECONDS = 25


def results_for(query: str) -> int:
    """A deterministic stand-in for a search engine: how many results a query finds."""
    if query.startswith("zzzz"):
        return 0
    return 1 + sum(query.encode()) % 10


@dataclass(frozen=True)
class MeteredSummary:
    """What the scene measured, in wei."""

    queries: int
    charges: tuple[int, ...]  # what each search was charged, from its receipt
    tokens: int  # LLM tokens received
    tokens_charged: int  # what the token stream charged
    seconds: int  # seconds of media received
    seconds_charged: int  # what the media stream charged
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
        charged = sum(self.charges) + self.tokens_charged + self.seconds_charged
        return (
            self.tokens_charged == self.tokens * PER_TOKEN
            and self.seconds_charged == self.seconds * PER_SECOND
            and charged - self.refunded == self.charged_total == self.settled
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

    async def complete(request: Request) -> Response:
        async def tokens() -> AsyncIterator[str]:
            for word in ANSWER:
                yield f"data: {word}\n\n"  # one event, one unit: the paywall counts them

        return StreamingResponse(tokens(), media_type="text/event-stream")

    async def watch(request: Request) -> Response:
        async def seconds() -> AsyncIterator[bytes]:
            for second in range(SECONDS):
                yield bytes([second % 256]) * SECOND_BYTES

        return StreamingResponse(seconds(), media_type="video/mp2t")

    app = Starlette(
        routes=[
            Route("/v1/search", search),
            Route("/v1/complete", complete),
            Route("/v1/watch", watch),
        ]
    )
    payee = Payee(channels, key, book=ledger, confirmations=0)
    prices: dict[str, UpTo | PerUnit] = {
        "GET /v1/search": UpTo(SEARCH_MAX),
        "GET /v1/complete": PerUnit(PER_TOKEN, increment=TOKEN_INCREMENT),
        "GET /v1/watch": PerUnit(PER_SECOND, increment=SECOND_INCREMENT, unit_bytes=SECOND_BYTES),
    }
    return Paywall(app, payee=payee, prices=prices)


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
        with client.stream("GET", f"{url}/v1/complete") as response:
            words = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        llm = stream_status(response)
        if llm is None or words != ANSWER:
            raise RuntimeError(f"the token stream broke off after {len(words)} tokens")
        out.print(
            f"an LLM answer streamed {len(words)} tokens at {PER_TOKEN} wei each, paid "
            f"{TOKEN_INCREMENT} at a time in band: charged {llm.paid} wei, the tokens sent "
            f"(the last increment signed up to {llm.ceiling} wei)"
        )
        with client.stream("GET", f"{url}/v1/watch") as response:
            media = b"".join(response.iter_bytes())
        video = stream_status(response)
        if video is None or len(media) != SECONDS * SECOND_BYTES:
            raise RuntimeError(f"the media stream broke off after {len(media)} bytes")
        out.print(
            f"a media stream played {len(media) // SECOND_BYTES} seconds at {PER_SECOND} wei "
            f"a second, paid {SECOND_INCREMENT} seconds at a time: charged {video.paid} wei"
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
        tokens=len(words),
        tokens_charged=llm.paid,
        seconds=len(media) // SECOND_BYTES,
        seconds_charged=video.paid,
        ceiling=held.ceiling,
        refunded=held.refunded,
        charged_total=held.charged,
        settled=settled,
        returned=returned,
        deposit=deposit,
    )
