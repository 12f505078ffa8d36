"""The whole story in one run: what ``make demo`` and ``micropay demo`` show.

1. deploy PaymentChannels and Streams;
2. a reader opens a channel to a content site and reads 1,000 paid articles over real
   HTTP 402 (uvicorn on loopback, the httpx client paying by itself);
3. the site settles every one of them in one transaction;
4. a second reader replays the first reader's payment header and is refused;
5. a third reader asks for its deposit back; the watchtower claims the site's vouchers
   before the withdraw delay ends, and the reader gets exactly the rest;
6. an employer pays a salary through a stream over (simulated) days;
7. an x402 agent (the official ``x402`` client, unmodified) pays a token-priced API ten times
   with x402's ``exact`` scheme, then a thousand times with micropay's ``channel`` scheme
   registered in the same client (:mod:`micropay.demo_x402`);
8. an API user pays searches priced "up to" a maximum, charged what each used, an LLM answer
   streamed at a price per token and a media stream priced per second, both paid in
   increments asked for in band; one wrong answer is refunded off chain, and the close
   settles the charged total, not the ceiling (:mod:`micropay.demo_metered`);
9. a summary: payments, gas against paying each article on chain (a plain ETH transfer
   and an ERC-20 transfer, measured in the same run), and every balance, showing that
   every wei is accounted for.

It runs on any network :func:`micropay.networks.connect` knows with funded test accounts:
the embedded chain by default, a throw-away anvil or hardhat, or an RPC URL on loopback
serving a dev chain (``MICROPAY_DEMO_NETWORK=http://127.0.0.1:8545``).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from web3 import Web3

from micropay import demo_metered, demo_x402
from micropay._contracts import RawCall, send_transaction
from micropay._x402 import PAYMENT_SIGNATURE
from micropay.channels import ChannelClient
from micropay.demo_metered import MeteredSummary
from micropay.demo_x402 import AgentSummary, receipts_since
from micropay.deployments import deploy
from micropay.devnode import free_port
from micropay.errors import NetworkError
from micropay.example_site import ARTICLES, create_site
from micropay.http_client import DepositPolicy, HttpPayer, PaymentPolicy, PaymentTransport
from micropay.ledger import Ledger
from micropay.networks import Connection, connect
from micropay.payer import Payer
from micropay.settlement import SettlementPolicy
from micropay.streams import ETH, FixedStreamConfig, StreamsClient
from micropay.tokens import TokenClient
from micropay.watchtower import Watchtower

PRICE = 10**13  # 0.00001 ETH an article
DAY = 86_400


@dataclass
class Summary:
    """What the demo measured; the tests check that its balances add up."""

    network: str
    articles: int = 0
    paid_for_articles: int = 0
    settled_in_one_tx: int = 0
    settlement_gas: int = 0
    channel_gas: int = 0
    eth_transfer_gas: int = 21_000
    erc20_transfer_gas: int = 0
    replay_status: int = 0
    replay_reason: str = ""
    watchtower_claimed: int = 0
    withdraw_refund: int = 0
    salary_paid: int = 0
    salary_expected: int = 0
    agent: AgentSummary | None = None
    """the x402 scene, when the x402 package is installed"""
    metered: MeteredSummary | None = None
    balances: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    """actor -> (start, end, gas paid)"""
    contract_delta: int = 0

    def net(self, actor: str) -> int:
        start, end, gas = self.balances[actor]
        return end - start + gas

    @property
    def conserved(self) -> bool:
        """Every wei that left someone arrived somewhere (gas aside), and every base unit of
        the x402 agent's token reached the site or waits in its channel."""
        eth = sum(self.net(a) for a in self.balances) + self.contract_delta == 0
        metered = self.metered is None or self.metered.adds_up
        return eth and metered and (self.agent is None or self.agent.conserved)


class _Recorder(httpx.BaseTransport):
    """Keeps the last payment header the client sent, for the replay scene."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.last_payment: str | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if PAYMENT_SIGNATURE in request.headers:
            self.last_payment = request.headers[PAYMENT_SIGNATURE]
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@contextmanager
def _serve(app: object) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the demo site did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _gas_by_sender(w3: Web3, first_block: int) -> dict[str, int]:
    """Wei each address paid for gas in blocks from ``first_block`` on."""
    paid: dict[str, int] = {}
    for receipt in receipts_since(w3, first_block):
        sender = receipt["from"]
        paid[sender] = paid.get(sender, 0) + receipt["gasUsed"] * receipt["effectiveGasPrice"]
    return paid


def run(
    connection: Connection,
    articles: int = 1_000,
    console: Console | None = None,
    agent_requests: int = 1_000,
) -> Summary:
    """Tell the story on ``connection``; print as it goes; return the figures.

    ``agent_requests``: how many requests the x402 agent pays in ``channel``."""
    out = console or Console(highlight=False, width=max(Console().width, 132))
    w3 = connection.w3
    keys = connection.dev_keys
    if len(keys) < 9:
        raise NetworkError(
            f"the demo needs 9 funded test accounts, which {connection.name} does not offer: "
            "run it on embedded, anvil, hardhat or a loopback RPC URL serving a dev chain"
        )
    deployer, site_key, reader, other_reader, leaver, employer, employee, agent, user = keys[:9]
    actors: dict[str, LocalAccount] = {
        "deployer": deployer,
        "site": site_key,
        "reader": reader,
        "second reader": other_reader,
        "leaving reader": leaver,
        "employer": employer,
        "employee": employee,
        "x402 agent": agent,
        "API user": user,
    }
    summary = Summary(connection.name, articles=articles)
    first_block = w3.eth.block_number + 1
    start = {name: w3.eth.get_balance(key.address) for name, key in actors.items()}

    out.rule(f"[bold]micropay demo[/bold] on {connection.name} (chain {w3.eth.chain_id})")
    deployment = deploy(w3, deployer)
    channels = ChannelClient(w3, deployment.channels)
    contract_start = w3.eth.get_balance(channels.address)
    out.print(f"deployed PaymentChannels {deployment.channels} and Streams {deployment.streams}")

    with tempfile.TemporaryDirectory(prefix="micropay-demo-") as folder:
        ledger = Ledger.open(f"sqlite:///{Path(folder) / 'site-ledger.db'}", channels.domain)
        site = create_site(
            w3, site_key=site_key, contract=channels.address, price=PRICE, book=ledger
        )
        with _serve(site.app) as url:
            # -- a reader pays for articles over HTTP 402 --------------------------------------
            policy = PaymentPolicy(
                max_price=PRICE,
                max_spend_per_site=2 * articles * PRICE,
                deposit=DepositPolicy(requests=articles + 200, max_requests=articles + 200),
            )
            payer = HttpPayer(w3, reader, policy, store=Path(folder) / "reader.json")
            recorder = _Recorder()
            slugs = list(ARTICLES)
            with (
                httpx.Client(transport=PaymentTransport(payer, recorder)) as client,
                Progress(console=out, transient=True) as progress,
            ):
                task = progress.add_task("reading paid articles", total=articles)
                for i in range(articles):
                    response = client.get(f"{url}/articles/{slugs[i % len(slugs)]}")
                    if response.status_code != 200:
                        raise RuntimeError(f"article {i} answered {response.status_code}")
                    progress.advance(task)
            [channel_id] = ledger.channel_ids()
            summary.paid_for_articles = ledger.best(channel_id).cumulative_amount  # type: ignore[union-attr]
            out.print(
                f"reader read {articles} articles at {PRICE} wei each: "
                f"{summary.paid_for_articles} wei in vouchers, no transaction per article"
            )

            # -- the site settles all of them at once -------------------------------------------
            receipt = site.payee.claim_all()
            assert receipt is not None
            summary.settlement_gas = int(receipt["gasUsed"])
            summary.settled_in_one_tx = channels.state(channel_id).claimed
            out.print(
                f"site settled {summary.settled_in_one_tx} wei in one transaction "
                f"({summary.settlement_gas:,} gas)"
            )

            # -- a second reader replays the first reader's payment -------------------------------
            replay = httpx.get(
                f"{url}/articles/{slugs[0]}",
                headers={PAYMENT_SIGNATURE: recorder.last_payment or ""},
            )
            summary.replay_status = replay.status_code
            summary.replay_reason = str(replay.json().get("error", ""))
            out.print(
                f"second reader replayed a voucher: HTTP {replay.status_code} "
                f"({summary.replay_reason}), no article served"
            )

        # -- an x402 agent pays with exact, then with channel, through the official SDK ----------
        # Before the scenes that move the chain's clock: x402's client dates its authorizations
        # by the wall clock.
        if demo_x402.available():
            summary.agent = demo_x402.run(
                w3,
                deployer=deployer,
                site_key=site_key,
                agent=agent,
                channels=channels,
                folder=Path(folder),
                serve=_serve,
                out=out,
                channel_requests=agent_requests,
            )
        else:
            out.print("x402 scene left out: the x402 package is not installed (micropay[x402])")

        # -- an API user pays for what each search used; one charge is refunded ---------------
        summary.metered = demo_metered.run(
            w3,
            site_key=site_key,
            user=user,
            channels=channels,
            folder=Path(folder),
            serve=_serve,
            out=out,
        )

        # -- a reader leaves; the watchtower claims in time --------------------------------------
        leaving = Payer.open(channels, leaver, site_key.address, 100 * PRICE, withdraw_delay=3600)
        for _ in range(40):
            site.payee.accept(leaving.config, leaving.pay(PRICE))
        leaving.request_withdraw()
        tower = Watchtower(
            channels, ledger, site_key, SettlementPolicy(), confirmations=0, poll_interval=0.1
        )
        report = tower.run_once()
        summary.watchtower_claimed = channels.state(leaving.config).claimed
        out.print(
            f"leaving reader asked to withdraw; the watchtower claimed "
            f"{summary.watchtower_claimed} wei for the site at once "
            f"({len(report.claimed)} channel(s))"
        )
        connection.advance(3600)
        before = w3.eth.get_balance(leaver.address)
        done = leaving.finish_withdraw()
        summary.withdraw_refund = (
            w3.eth.get_balance(leaver.address)
            - before
            + done["gasUsed"] * done["effectiveGasPrice"]
        )
        out.print(
            f"after the delay the reader got back {summary.withdraw_refund} wei, "
            "exactly what it had not spent"
        )
        ledger.close()

    # -- a salary stream over simulated days -----------------------------------------------------
    streams = StreamsClient(w3, deployment.streams)
    now = int(w3.eth.get_block("latest")["timestamp"])
    salary = FixedStreamConfig(
        sender=employer.address,
        recipient=employee.address,
        token=ETH,
        amount=3 * 10**18,
        start=now + 1,
        end=now + 1 + 30 * DAY,
    )
    streams.create_fixed(salary, employer)
    paid = 0
    for days in (10, 21):  # the second step passes the stream's end
        connection.advance(days * DAY)
        paid += streams.withdraw(salary, employee).amount
        out.print(f"+{days} days: employee has withdrawn {paid} wei of the salary")
    summary.salary_paid = paid
    summary.salary_expected = salary.amount

    # -- paying on chain instead, measured in the same run ------------------------------------
    token = TokenClient.deploy(w3, deployer, "Demo USD", "dUSD", 6)
    token.mint(reader.address, 10**9, deployer)
    token.transfer(other_reader.address, 1, reader)  # warm the recipient, as a shop would be
    summary.erc20_transfer_gas = int(token.transfer(other_reader.address, 1, reader)["gasUsed"])
    eth_transfer = send_transaction(w3, RawCall(w3, site_key.address), deployer, value=1)
    summary.eth_transfer_gas = int(eth_transfer["gasUsed"])

    gas = _gas_by_sender(w3, first_block)
    summary.channel_gas = summary.settlement_gas + _deposit_gas(
        w3, channels, reader.address, first_block
    )
    for name, key in actors.items():
        summary.balances[name] = (
            start[name],
            w3.eth.get_balance(key.address),
            gas.get(key.address, 0),
        )
    summary.contract_delta = w3.eth.get_balance(channels.address) - contract_start
    summary.contract_delta += w3.eth.get_balance(streams.address)
    _print_summary(out, summary)
    return summary


def _deposit_gas(w3: Web3, channels: ChannelClient, payer: str, first_block: int) -> int:
    """Gas the reader's own transactions to the channels contract used (its deposit)."""
    total = 0
    for number in range(first_block, w3.eth.block_number + 1):
        transactions: list[Any] = list(w3.eth.get_block(number, True)["transactions"])
        for tx in transactions:
            if tx["from"] == payer and tx["to"] == channels.address:
                total += w3.eth.get_transaction_receipt(tx["hash"])["gasUsed"]
    return total


def _print_summary(out: Console, s: Summary) -> None:
    per_payment = s.channel_gas / s.articles
    table = Table(title=f"micropay demo summary ({s.network})")
    table.add_column("what")
    table.add_column("figure", justify="right")
    table.add_row("paid articles (HTTP 402, one voucher each)", f"{s.articles:,}")
    table.add_row(
        "paid in vouchers / settled on chain (wei)",
        f"{s.paid_for_articles:,} / {s.settled_in_one_tx:,}",
    )
    table.add_row("gas: reader's deposit + site's one settlement", f"{s.channel_gas:,}")
    table.add_row("gas per payment with micropay", f"{per_payment:,.1f}")
    table.add_row("gas per payment as plain ETH transfers", f"{s.eth_transfer_gas:,}")
    table.add_row("gas per payment as ERC-20 transfers (measured)", f"{s.erc20_transfer_gas:,}")
    table.add_row("saving against ETH transfers", f"{s.eth_transfer_gas / per_payment:,.0f}x")
    table.add_row("replayed voucher", f"HTTP {s.replay_status} {s.replay_reason}")
    table.add_row("watchtower claimed before the withdraw", f"{s.watchtower_claimed:,} wei")
    table.add_row("refund to the leaving reader", f"{s.withdraw_refund:,} wei")
    table.add_row("salary streamed / promised", f"{s.salary_paid:,} / {s.salary_expected:,}")
    if s.agent is not None:
        a = s.agent
        table.add_row(
            "x402 agent, exact: payments / gas per payment",
            f"{a.exact_payments:,} / {a.exact_gas_per_payment:,.0f}",
        )
        table.add_row(
            "x402 agent, channel: payments / gas per payment",
            f"{a.channel_payments:,} / {a.channel_gas_per_payment:,.1f}",
        )
        table.add_row(
            "x402 agent's USDC: spent = to the site + left in its channel (base units)",
            f"{a.agent_spent:,} = {a.site_received:,} + {a.channel_held:,}",
        )
    if s.metered is not None:
        m = s.metered
        table.add_row(
            "metered searches: answers / charged (wei)",
            f"{m.queries:,} / {sum(m.charges):,}",
        )
        table.add_row(
            "streamed LLM tokens / media seconds: units / charged (wei)",
            f"{m.tokens:,} / {m.tokens_charged:,}; {m.seconds:,} / {m.seconds_charged:,}",
        )
        charged = sum(m.charges) + m.tokens_charged + m.seconds_charged
        table.add_row(
            "metered: charged - refunded = settled (last ceiling signed)",
            f"{charged:,} - {m.refunded:,} = {m.settled:,} ({m.ceiling:,})",
        )
        table.add_row(
            "metered: settled + returned = deposit",
            f"{m.settled:,} + {m.returned:,} = {m.deposit:,}",
        )
    out.print(table)

    balances = Table(title="balances in wei: every change is a payment or gas")
    for column in ("actor", "balance change", "gas paid", "change net of gas"):
        balances.add_column(column, justify="right" if column != "actor" else "left")
    for actor in s.balances:
        start, end, gas = s.balances[actor]
        balances.add_row(actor, f"{end - start:+,}", f"{gas:,}", f"{s.net(actor):+,}")
    balances.add_row("held by the contracts (unspent deposits)", "", "", f"{s.contract_delta:+,}")
    out.print(balances)
    verdict = "[green]nothing lost[/green]" if s.conserved else "[red]MISMATCH[/red]"
    out.print(
        f"sum of all net changes: {sum(s.net(a) for a in s.balances) + s.contract_delta:+,} "
        f"wei: {verdict}"
    )


def main(network: str = "embedded", articles: int = 1_000) -> Summary:
    """Run the demo on ``network`` (starting a throw-away node for anvil/hardhat)."""
    with connect(network, start_node=True) as connection:
        return run(connection, articles)
