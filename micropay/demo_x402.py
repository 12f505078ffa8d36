"""The demo's x402 scene: an agent on the official x402 SDK pays a micropay site both ways.

The site sells ``GET /api/quote`` for 0.001 of a USDC-like token (``MockUSDC``: 6 decimals,
EIP-3009) in ``channel`` and in x402's ``exact``. The agent is the unmodified ``x402Client``:
first with only x402's own ``exact`` EVM scheme registered (one EIP-3009 transfer per
request, each settled on chain by the site before it answers), then with micropay's
``ChannelScheme`` registered instead (one channel, a voucher per request, one claim at the
end). Gas is read from the receipts of every transaction the scene sends, so the figure per
payment compares like with like; the token balances show where every base unit went.

It needs the ``x402`` package (``pip install 'micropay[x402]'``; the project's set-up installs
it): without it the scene is left out and the demo says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from web3 import Web3
from web3.types import TxReceipt

from micropay._eip3009 import AuthorizationToken
from micropay.channels import ChannelClient
from micropay.exact import ExactReceipt, ExactSettler
from micropay.http_client import DepositPolicy, HttpPayer, PaymentPolicy
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall, PricedRoute

QUOTE_PRICE = 1_000  # 0.001 of a 6-decimal token


@dataclass(frozen=True)
class AgentSummary:
    """What the x402 scene measured; amounts in the token's base units."""

    exact_payments: int
    exact_paid: int
    exact_gas: int  # the site's transferWithAuthorization transactions
    channel_payments: int
    channel_paid: int
    channel_gas: int  # the agent's approve and deposit, and the site's one claim
    agent_spent: int
    site_received: int
    channel_held: int  # the agent's unspent deposit, still in its channel

    @property
    def conserved(self) -> bool:
        """Every base unit the agent spent reached the site or waits in its channel."""
        return self.agent_spent == self.site_received + self.channel_held

    @property
    def exact_gas_per_payment(self) -> float:
        return self.exact_gas / self.exact_payments

    @property
    def channel_gas_per_payment(self) -> float:
        return self.channel_gas / self.channel_payments


def available() -> bool:
    """Whether the official x402 package is installed (the scene needs its client)."""
    try:
        import x402  # noqa: F401
    except ImportError:
        return False
    return True


def _site(
    w3: Web3, channels: ChannelClient, token: AuthorizationToken, key: LocalAccount, ledger: Ledger
) -> Paywall:
    async def quote(request: Request) -> Response:
        payment = request.state.payment
        return JSONResponse({"quote": "ETH/USD 3141.59", "paid_by": payment.scheme})

    route = PricedRoute.parse(
        "GET /api/quote",
        QUOTE_PRICE,
        description="A price quote",
        mime_type="application/json",
        schemes=("channel", "exact"),
    )
    # x402's client dates an authorization's window by the wall clock; a dev chain whose clock
    # was moved ahead (by an earlier run on the same node) would find every one expired. The
    # site offers a window that long, as a site on such a chain has to.
    ahead = int(w3.eth.get_block("latest")["timestamp"]) - int(time.time())
    window = 60 + max(0, ahead)
    settler = ExactSettler(token, key, book=ledger.authorizations, max_timeout_seconds=window)
    app = Starlette(routes=[Route("/api/quote", quote)])
    payee = Payee(channels, key, book=ledger)
    return Paywall(app, payee=payee, prices=[route], asset=token.address, exact=settler)


def receipts_since(w3: Web3, first_block: int) -> Iterator[TxReceipt]:
    """The receipt of every transaction mined from ``first_block`` on (the demo's gas books)."""
    for number in range(first_block, w3.eth.block_number + 1):
        for tx_hash in w3.eth.get_block(number)["transactions"]:
            yield w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]


def _gas_of_sender(w3: Web3, first_block: int, sender: str) -> int:
    """Gas units the transactions ``sender`` sent from ``first_block`` on used."""
    return sum(int(r["gasUsed"]) for r in receipts_since(w3, first_block) if r["from"] == sender)


def run(
    w3: Web3,
    *,
    deployer: LocalAccount,
    site_key: LocalAccount,
    agent: LocalAccount,
    channels: ChannelClient,
    folder: Path,
    serve: object,
    out: Console,
    exact_requests: int = 10,
    channel_requests: int = 1_000,
) -> AgentSummary:
    """Play the scene; ``serve`` is the demo's context manager that runs an app on loopback."""
    from x402 import SpendControls, x402Client
    from x402.http.clients import x402_httpx_transport
    from x402.mechanisms.evm.exact import ExactEvmScheme
    from x402.mechanisms.evm.signers import EthAccountSigner

    from micropay.x402_plugin import ChannelScheme

    token = AuthorizationToken.deploy(w3, deployer, "USD Coin", "USDC")
    token.mint(agent.address, 10**9, deployer)
    token.mint(site_key.address, 1, deployer)  # the site holds the token already, as a shop does
    network = f"eip155:{w3.eth.chain_id}"
    # The SDK pays only assets it knows unless told: this token is the demo's own.
    known: SpendControls = {"allowed_assets": [{"network": network, "asset": token.address}]}
    ledger = Ledger.open(f"sqlite:///{folder / 'agent-site-ledger.db'}", channels.domain)
    site = _site(w3, channels, token, site_key, ledger)
    agent_start, site_start = token.balance_of(agent.address), token.balance_of(site_key.address)

    async def fetch(client: x402Client, url: str, times: int) -> list[httpx.Response]:
        transport = x402_httpx_transport(client)
        async with httpx.AsyncClient(transport=transport, timeout=60) as http:
            return [await http.get(url) for _ in range(times)]

    with serve(site) as url:  # type: ignore[operator]
        quote = f"{url}/api/quote"
        # -- x402's own exact scheme: one on-chain transfer per request ------------------------
        exact_client = x402Client()
        exact_client.register(network, ExactEvmScheme(EthAccountSigner(agent)))
        exact_client.set_spend_controls(known)
        answers = asyncio.run(fetch(exact_client, quote, exact_requests))
        exact_gas = 0
        for answer in answers:
            if answer.status_code != 200 or answer.json()["paid_by"] != "exact":
                raise RuntimeError(f"an exact payment answered {answer.status_code}: {answer.text}")
            settled = ExactReceipt.decode(answer.headers["payment-response"])
            receipt = w3.eth.get_transaction_receipt(HexBytes(settled.transaction))
            exact_gas += int(receipt["gasUsed"])
        out.print(
            f"x402 agent paid {exact_requests} quotes with x402's exact scheme: "
            f"{exact_requests} transfers settled on chain, {exact_gas:,} gas"
        )

        # -- micropay's channel scheme, registered in the same SDK: one line --------------------
        first_block = w3.eth.block_number + 1
        policy = PaymentPolicy(
            max_price=QUOTE_PRICE,
            deposit=DepositPolicy(requests=channel_requests, max_requests=channel_requests),
        )
        payer = HttpPayer(w3, agent, policy, store=folder / "agent-wallet.json")
        channel_client = x402Client()
        channel_client.register(network, ChannelScheme(payer))
        channel_client.set_spend_controls(known)
        answers = asyncio.run(fetch(channel_client, quote, channel_requests))
        if any(a.status_code != 200 or a.json()["paid_by"] != "channel" for a in answers):
            raise RuntimeError("a channel payment was not served")
    claim = site.payee.claim_all()
    if claim is None:
        raise RuntimeError("the site had nothing to claim")
    channel_gas = _gas_of_sender(w3, first_block, agent.address) + int(claim["gasUsed"])
    [channel_id] = ledger.channel_ids()
    state = channels.state(channel_id)
    ledger.close()
    out.print(
        f"x402 agent paid {channel_requests} quotes with micropay's channel scheme "
        f"(ChannelScheme in its x402Client): an approve and a deposit, "
        f"{channel_requests} vouchers, "
        f"one claim, {channel_gas:,} gas"
    )
    return AgentSummary(
        exact_payments=exact_requests,
        exact_paid=exact_requests * QUOTE_PRICE,
        exact_gas=exact_gas,
        channel_payments=channel_requests,
        channel_paid=state.claimed,
        channel_gas=channel_gas,
        agent_spent=agent_start - token.balance_of(agent.address),
        site_received=token.balance_of(site_key.address) - site_start,
        channel_held=state.deposited - state.claimed,
    )
