"""Throughput and latency of a paywalled route against the same route unpriced.

One uvicorn server process serves each handler twice, at ``/free/...`` and ``/paid/...``;
the paywall prices only the second. Two handlers: a minimal one (512 bytes of text, the
worst case for the ratio: nearly all of a paid request's cost is then the payment) and the
example site's article page. The load comes from this process over keep-alive loopback
connections, one payment channel per connection, with every voucher signed before the
clock starts: what is measured is the server (decode, verify, book, receipt), not the
client's signing. Goal: paid throughput at least 0.8 of free.

Run with ``make bench`` or ``python -m bench.http_paywall [--requests N] [--connections C]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from micropay._x402 import PaymentPayload, PaymentRequired
from micropay.channels import ChannelClient
from micropay.devnode import anvil, free_port
from micropay.payer import Payer

PRICE = 1_000
GOAL = 0.8
ROOT = Path(__file__).resolve().parent.parent
_MNEMONIC = "test test test test test test test test test test test junk"


# -- the server process ----------------------------------------------------------------------


def serve(rpc: str, contract: str, site_key: str, port: int) -> None:
    """The server side, run in its own process by :func:`main`."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, PlainTextResponse
    from starlette.routing import Route
    from web3 import HTTPProvider, Web3

    from micropay.example_site import ARTICLES, render_article
    from micropay.payee import Payee
    from micropay.paywall import Paywall

    body = "x" * 512
    articles = list(ARTICLES.values())

    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse(body)

    async def article(request: Request) -> HTMLResponse:
        payment = getattr(request.state, "payment", None)
        payer = payment.payer if payment else "a free reader"
        page = articles[int(request.path_params["n"]) % len(articles)]
        return HTMLResponse(render_article(page, payer, PRICE))

    w3 = Web3(HTTPProvider(rpc))
    payee = Payee(ChannelClient(w3, contract), Account.from_key(site_key), state_ttl=3600)
    routes = [
        Route("/free/minimal/{n}", item),
        Route("/paid/minimal/{n}", item),
        Route("/free/article/{n}", article),
        Route("/paid/article/{n}", article),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(Paywall, payee=payee, prices={"GET /paid/{kind}/{n}": PRICE})
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the load --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    route: str
    requests: int
    seconds: float
    latencies: list[float]
    failures: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _request(path: str, header: str | None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    if header is not None:
        lines.append(f"PAYMENT-SIGNATURE: {header}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _connection(
    port: int, requests: list[bytes], latencies: list[float], failures: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                failures.append(1)
    finally:
        writer.close()


async def _load(port: int, route: str, per_connection: list[list[bytes]]) -> Figures:
    latencies: list[float] = []
    failures: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(*(_connection(port, rs, latencies, failures) for rs in per_connection))
    seconds = time.perf_counter() - started
    return Figures(route, len(latencies), seconds, latencies, len(failures))


def _wait_for(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server process exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the server did not start")


def run(requests: int, connections: int, warmup: int) -> list[tuple[Figures, Figures]]:
    """Start chain and server, open channels, sign every voucher, then measure both routes."""
    Account.enable_unaudited_hdwallet_features()
    keys: list[LocalAccount] = [
        Account.from_mnemonic(_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(10)
    ]
    with anvil() as w3:
        channels = ChannelClient.deploy(w3, keys[0])
        site = keys[1]
        rpc = w3.provider.endpoint_uri  # type: ignore[attr-defined]
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "bench.http_paywall", "--serve", rpc, channels.address]
        command += ["0x" + bytes(site.key).hex(), str(port)]
        server = subprocess.Popen(command, env=env, cwd=ROOT)
        try:
            _wait_for(port, server)
            per = requests // connections + warmup
            # One 402 tells the client what to pay; then one channel per connection.
            offer = PaymentRequired.decode(asyncio.run(_probe(port))).offers[0]
            payers = [
                Payer.open(
                    channels,
                    keys[2 + c % 8],
                    offer.pay_to,
                    PRICE * (2 * per + 1),
                    withdraw_delay=offer.min_withdraw_delay,
                )
                for c in range(connections)
            ]
            pairs = []
            for kind in ("minimal", "article"):
                paid: list[list[bytes]] = []
                for payer in payers:
                    signed = []
                    for n in range(per):
                        voucher = payer.pay(PRICE)
                        header = PaymentPayload(
                            offer.network, PRICE, offer.asset, offer.pay_to, payer.config, voucher
                        ).encode()
                        signed.append(_request(f"/paid/{kind}/{n}", header))
                    paid.append(signed)
                free = [
                    [_request(f"/free/{kind}/{n}", None) for n in range(per)]
                    for _ in range(connections)
                ]
                # Warm both routes (first-sight chain reads, caches), then measure the rest.
                asyncio.run(_load(port, "free", [rs[:warmup] for rs in free]))
                asyncio.run(_load(port, "paid", [rs[:warmup] for rs in paid]))
                free_figures = asyncio.run(_load(port, f"{kind} free", [r[warmup:] for r in free]))
                paid_figures = asyncio.run(_load(port, f"{kind} paid", [r[warmup:] for r in paid]))
                pairs.append((free_figures, paid_figures))
        finally:
            server.terminate()
            server.wait(timeout=10)
    return pairs


async def _probe(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_request("/paid/minimal/0", None))
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    for line in head.decode().split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "payment-required":
            return value.strip()
    raise RuntimeError("the paid route did not answer 402")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per route")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=50, help="per connection")
    parser.add_argument("--serve", nargs=4, metavar=("RPC", "CONTRACT", "KEY", "PORT"))
    args = parser.parse_args(argv)
    if args.serve:
        rpc, contract, key, port = args.serve
        serve(rpc, contract, key, int(port))
        return 0
    pairs = run(args.requests, args.connections, args.warmup)
    print(f"one uvicorn process, {args.connections} keep-alive connections, price {PRICE}")
    print(f"{'route':<15}{'requests':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}")
    failures = 0
    for free, paid in pairs:
        for figures in (free, paid):
            failures += figures.failures
            print(
                f"{figures.route:<15}{figures.requests:>9}{figures.rate:>9.0f}"
                f"{figures.percentile(0.50):>9.2f}{figures.percentile(0.99):>9.2f}"
                f"{figures.failures:>8}"
            )
        ratio = paid.rate / free.rate
        # At saturation one request occupies the server for 1/rate: the paywall's share.
        cost = (1 / paid.rate - 1 / free.rate) * 1e6
        verdict = "met" if ratio >= GOAL else "NOT met"
        kind = free.route.split()[0]
        print(
            f"  {kind}: paid/free throughput {ratio:.2f} (goal >= {GOAL}: {verdict}); "
            f"server time per request {1e6 / free.rate:.0f} µs free, {1e6 / paid.rate:.0f} µs "
            f"paid (+{cost:.0f})"
        )
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
