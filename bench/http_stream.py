"""The per-unit overhead of a metered stream: the same SSE answer, priced per unit and free.

A uvicorn server (in a thread of this process) serves one handler twice: ``/free`` unpriced
and ``/paid`` priced ``PerUnit(1, increment=100)`` on a durable SQLite ledger. The client
is the real HttpPayer behind PaymentTransport, so every increment is the whole protocol: the
paywall pauses and asks in band, the transport signs the next voucher and sends the
voucher-only request, the paywall checks it and commits the charge write, the stream goes
on, and its final receipt is checked. Both ends share this process (and its GIL), so the
figure is the client's and the server's cost together: µs added per unit delivered,
(paid - free) / units, median of the runs. It is printed twice: with the payer's wallet on
disk, as HttpPayer keeps it by default (each increment saves the new highest voucher and the
spend, fsync'd, before the voucher leaves: most of the cost), and in memory (the protocol and
the site's durable ledger alone).

Run with ``make bench`` or ``python -m bench.http_stream [--units N] [--increment K] [--runs R]``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import uvicorn
from eth_account import Account
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from micropay.channels import ChannelClient
from micropay.devnode import anvil
from micropay.http_client import HttpPayer, PaymentPolicy, PaymentTransport
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall
from micropay.streaming import PerUnit, stream_status

_MNEMONIC = "test test test test test test test test test test test junk"
UNIT = b"data: tok\n\n"


async def tokens(request: Request) -> StreamingResponse:
    count = int(request.query_params["units"])

    async def generate() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield UNIT

    return StreamingResponse(generate(), media_type="text/event-stream")


def _serve(app: Paywall) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def _stream(client: httpx.Client, path: str, units: int) -> float:
    start = time.perf_counter()
    with client.stream("GET", path, params={"units": units}) as response:
        received = sum(1 for _ in response.iter_lines() if _)
    elapsed = time.perf_counter() - start
    if received != units:
        raise RuntimeError(f"{path}: {received} units of {units}")
    status = stream_status(response)
    if path == "/paid" and (status is None or status.ended != "end"):
        raise RuntimeError(f"the paid stream did not end cleanly: {status}")
    return elapsed


def measure(units: int, increment: int, runs: int, wallet_on_disk: bool = True) -> dict[str, float]:
    Account.enable_unaudited_hdwallet_features()
    keys = [Account.from_mnemonic(_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(3)]
    with anvil() as w3, tempfile.TemporaryDirectory() as tmp:
        channels = ChannelClient.deploy(w3, keys[0])
        ledger = Ledger.open(f"sqlite:///{Path(tmp) / 'site.db'}", channels.domain)
        payee = Payee(channels, keys[1], book=ledger, confirmations=0)
        app = Starlette(routes=[Route("/paid", tokens), Route("/free", tokens)])
        paywall = Paywall(app, payee=payee, prices={"GET /paid": PerUnit(1, increment=increment)})
        store = Path(tmp) / "payer.json" if wallet_on_disk else None
        payer = HttpPayer(w3, keys[2], PaymentPolicy(max_price=increment), store=store)
        server, thread, url = _serve(paywall)
        try:
            with httpx.Client(base_url=url, transport=PaymentTransport(payer)) as client:
                _stream(client, "/paid", units)  # opens the channel, warms up
                _stream(client, "/free", units)
                free = [_stream(client, "/free", units) for _ in range(runs)]
                paid = [_stream(client, "/paid", units) for _ in range(runs)]
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            ledger.close()
    free_s, paid_s = statistics.median(free), statistics.median(paid)
    return {
        "free_s": free_s,
        "paid_s": paid_s,
        "added_us": (paid_s - free_s) / units * 1e6,
        "free_us": free_s / units * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--increment", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    print(
        f"metered SSE stream, {args.units} units in increments of {args.increment} "
        f"({args.units // args.increment} vouchers), SQLite ledger, median of {args.runs}:"
    )
    for on_disk, wallet in ((True, "on disk (fsync per write)"), (False, "in memory")):
        figures = measure(args.units, args.increment, args.runs, on_disk)
        print(
            f"  payer's wallet {wallet}: free {figures['free_s'] * 1e3:.1f} ms "
            f"({figures['free_us']:.1f} µs/unit), paid {figures['paid_s'] * 1e3:.1f} ms: "
            f"{figures['added_us']:.1f} µs added per unit"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
