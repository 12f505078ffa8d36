"""Throughput and latency of a paywalled route on each voucher book, beside the free route.

One uvicorn server process serves each handler unpriced at ``/free/...`` and priced, once
per book, at ``/memory/paid/...`` (the in-memory book), ``/sqlite/paid/...`` (a durable
SQLite ledger in a temporary directory), ``/postgres/paid/...`` (a PostgreSQL ledger on a
throw-away server started through tools/postgres.py, stopped afterwards) and
``/credit/paid/...`` (prepaid credit on its own SQLite ledger: ``Paywall(prepay=PREPAY)``,
one voucher per PREPAY requests, the others carrying the ``PAYMENT-CREDIT`` token the
voucher's answer gave); and, as the floor of them all, ``/noop/paid/...``: the same app
behind an ASGI layer that does nothing but pass the request on, sent the same requests as
credit's (a token-sized ``PAYMENT-CREDIT`` header included), so its row is the most any
paywall could reach on this machine and server. Two handlers: a
minimal one (512 bytes of text, the worst case for the ratio: nearly all of a paid request's
cost is then the payment) and the example site's article page. The load comes from this
process over keep-alive loopback connections, one payment channel per connection and book,
with every voucher signed before the clock starts: what is measured is the server (decode,
verify, book, receipt), not the client's signing.

Per row: requests/s, paid/free, the server time a paid request adds (at saturation one
request occupies the server for 1/rate), p50 and p99. Goals: on SQLite at most 150 µs added
and p99 at most 10 ms; on PostgreSQL at least 1,000 paid requests/s; prepaid credit at least
0.8 of the free route's rate (the no-op row says how much of that one layer already takes).

Run with ``make bench`` or ``python -m bench.http_paywall [--requests N] [--connections C]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from micropay._x402 import Offer, PaymentPayload, PaymentRequired
from micropay.channels import ChannelClient
from micropay.devnode import anvil, free_port
from micropay.payer import Payer

PRICE = 1_000
SQLITE_ADDED_US = 150
SQLITE_P99_MS = 10
POSTGRES_RATE = 1_000
CREDIT_RATIO = 0.8
PREPAY = 100
BOOKS = ("memory", "sqlite", "postgres", "credit", "noop")
NOOP = "noop"
"""Not a book: the floor row, an ASGI layer that passes every request on unpaid."""
KINDS = ("minimal", "article")
ROOT = Path(__file__).resolve().parent.parent
_PROFILE = "MICROPAY_BENCH_PROFILE"
"""Set by ``--profile``: the server runs under cProfile and writes its stats there."""
_MNEMONIC = "test test test test test test test test test test test junk"


# -- the server process ----------------------------------------------------------------------


def serve(rpc: str, contract: str, site_key: str, port: int, ledgers: dict[str, str]) -> None:
    """The server side, run in its own process by :func:`main`: one paywall per book in
    ``ledgers`` (book name -> ledger URL; ``memory`` has none), each served at its name."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
    from starlette.routing import Mount, Route
    from starlette.types import ASGIApp, Receive, Scope, Send
    from web3 import HTTPProvider, Web3

    from micropay.example_site import ARTICLES, render_article
    from micropay.ledger import Ledger
    from micropay.payee import Payee, VoucherBook
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
    client = ChannelClient(w3, contract)
    site = Account.from_key(site_key)
    handlers = [Route("/minimal/{n}", item), Route("/article/{n}", article)]
    opened: dict[str, Ledger] = {}

    async def stats(request: Request) -> JSONResponse:
        """Each ledger's writer so far: accepts and the transactions they took."""
        return JSONResponse({name: vars(ledger.commit_stats()) for name, ledger in opened.items()})

    # Each prefix is its own app, as a site is: the free routes run one Starlette stack, and
    # each paid book runs one too, behind its paywall. (Mounting the paywalls under a shared
    # Starlette would give every paid request a second router and middleware stack to pay for.)
    apps: dict[str, ASGIApp] = {
        "free": Starlette(routes=[Mount("/free", routes=handlers)]),
        "stats": Starlette(routes=[Route("/stats", stats)]),
    }
    apps[NOOP] = _PassOn(Starlette(routes=[Mount(f"/{NOOP}/paid", routes=handlers)]))
    for name, url in ledgers.items():
        book: VoucherBook | None = None
        if name != "memory":
            book = opened[name] = Ledger.open(url, client.domain)
        payee = Payee(client, site, book=book, state_ttl=3600)
        apps[name] = Paywall(
            Starlette(routes=[Mount(f"/{name}/paid", routes=handlers)]),
            payee=payee,
            prices={f"GET /{name}/paid/{{kind}}/{{n}}": PRICE},
            prepay=PREPAY if name == "credit" else None,
        )
    missing = PlainTextResponse("no such route", status_code=404)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        """Hand each request to the app of its path's first segment."""
        target = apps.get(scope["path"].split("/", 2)[1]) if scope["type"] == "http" else None
        await (target or missing)(scope, receive, send)

    # No lifespan: nothing here starts on it, and the dispatcher answers only HTTP.
    options: dict[str, Any] = {"log_level": "warning", "access_log": False, "lifespan": "off"}
    profile = os.environ.get(_PROFILE)
    if not profile:
        uvicorn.run(app, host="127.0.0.1", port=port, **options)
        return
    import cProfile
    import signal

    from micropay.ledger._group import GroupCommit

    # uvicorn raises the stopping signal again once it has shut down: let it land here, so
    # the stats are written.
    signal.signal(signal.SIGTERM, lambda number, frame: None)
    writers = cProfile.Profile()  # every ledger writer's thread (one runs at a time here)
    run_writer = GroupCommit._run

    def profiled_writer(self: GroupCommit) -> None:
        writers.enable()
        try:
            run_writer(self)
        finally:
            writers.disable()

    GroupCommit._run = profiled_writer  # type: ignore[method-assign]
    with cProfile.Profile() as profiler:  # the event loop's thread
        uvicorn.run(app, host="127.0.0.1", port=port, **options)
    for ledger in opened.values():
        ledger.close()
    profiler.dump_stats(profile)
    if opened:  # without a ledger no writer ran, and pstats cannot read an empty profile
        writers.dump_stats(profile + ".writer")


class _PassOn:
    """An ASGI layer that does nothing: what any middleware in front of the app costs at the
    least (one more coroutine per request), the floor under every paywall row."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


# -- the load --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    route: str
    requests: int
    seconds: float
    latencies: list[float]
    failures: int
    cpu: float
    """Seconds of CPU the server process (all its threads) spent on the run."""
    loop_cpu: float
    """Seconds of it on the event loop's thread: the one every request waits for, so its
    share per request bounds the rate (the rest is the ledger's writer, on another core)."""

    @property
    def cpu_us(self) -> float:
        """Server CPU per request, µs: unlike 1/rate, what other load on the machine leaves."""
        return self.cpu / self.requests * 1e6

    @property
    def loop_us(self) -> float:
        """The event loop's CPU per request, µs."""
        return self.loop_cpu / self.requests * 1e6

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


_CREDIT = b"PAYMENT-CREDIT: <token>"
"""A request that spends prepaid credit: the connection puts in the last token it was given."""
_TOKEN_SIZE = 151
"""Characters of a ``PAYMENT-CREDIT`` token (micropay.credit): the no-op row's requests carry
one of this size, so that they are as long as credit's."""


def _request(path: str, header: str | None, credit: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    if header is not None:
        lines.append(f"PAYMENT-SIGNATURE: {header}")
    if credit:
        lines.append(_CREDIT.decode())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _connection(
    port: int,
    requests: list[bytes],
    latencies: list[float],
    failures: list[int],
    token: list[bytes],
) -> None:
    """Send the requests one after another; ``token`` holds the connection's latest
    ``PAYMENT-CREDIT`` (kept across loads: the warm-up's voucher pays for what follows)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            if _CREDIT in request:
                request = request.replace(b"<token>", token[0] if token else b"A" * _TOKEN_SIZE)
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                elif line[:15].lower() == b"payment-credit:":
                    token[:] = [line[15:].strip()]
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                failures.append(1)
    finally:
        writer.close()


async def _load(
    port: int,
    route: str,
    per_connection: list[list[bytes]],
    server: int,
    tokens: list[list[bytes]] | None = None,
) -> Figures:
    latencies: list[float] = []
    failures: list[int] = []
    if tokens is None:
        tokens = [[] for _ in per_connection]
    cpu, loop_cpu = _cpu_seconds(server), _cpu_seconds(server, server)
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _connection(port, rs, latencies, failures, token)
            for rs, token in zip(per_connection, tokens, strict=True)
        )
    )
    seconds = time.perf_counter() - started
    cpu, loop_cpu = _cpu_seconds(server) - cpu, _cpu_seconds(server, server) - loop_cpu
    return Figures(route, len(latencies), seconds, latencies, len(failures), cpu, loop_cpu)


def _cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User and system CPU time of a process so far, or of one of its threads (its main
    thread's id is the process id); Linux /proc, elsewhere 0."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


@contextmanager
def _ledgers(books: tuple[str, ...]) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """The ledger URL of each book (``memory``: none), and why a book could not be set up;
    the PostgreSQL server and the SQLite file are removed afterwards."""
    urls: dict[str, str] = {}
    missing: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="micropay-bench-") as directory:
        if "memory" in books:
            urls["memory"] = ""
        if "sqlite" in books:
            urls["sqlite"] = f"sqlite:///{directory}/ledger.db"
        if "credit" in books:
            urls["credit"] = f"sqlite:///{directory}/credit.db"
        if "postgres" not in books:
            yield urls, missing
            return
        sys.path.insert(0, str(ROOT / "tools"))
        from postgres import PostgresUnavailable, throwaway_postgres

        try:
            server = throwaway_postgres()
            url = server.__enter__().url
        except PostgresUnavailable as err:
            missing["postgres"] = str(err)
            yield urls, missing
            return
        try:
            urls["postgres"] = url
            yield urls, missing
        finally:
            server.__exit__(None, None, None)


def run(
    requests: int,
    connections: int,
    warmup: int,
    books: tuple[str, ...],
    kinds: tuple[str, ...],
    profile: str | None = None,
) -> tuple[list[tuple[Figures, list[Figures]]], dict[str, str], dict[str, float]]:
    """Start chain, ledgers and server, open channels, sign every voucher, then measure the
    free route and each book's paid route, per handler."""
    Account.enable_unaudited_hdwallet_features()
    keys: list[LocalAccount] = [
        Account.from_mnemonic(_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(10)
    ]
    with anvil() as w3, _ledgers(books) as (urls, missing):
        channels = ChannelClient.deploy(w3, keys[0])
        site = keys[1]
        rpc = w3.provider.endpoint_uri  # type: ignore[attr-defined]
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if profile:
            env[_PROFILE] = profile
        command = [sys.executable, "-m", "bench.http_paywall", "--serve", rpc, channels.address]
        command += ["0x" + bytes(site.key).hex(), str(port)]
        command += [f"--ledger={name}={url}" for name, url in urls.items()]
        server = subprocess.Popen(command, env=env, cwd=ROOT)
        measured = []
        batches: dict[str, float] = {}
        try:
            _wait_for(port, server)
            per = requests // connections + warmup
            # One 402 tells the client what to pay; then one channel per connection and book.
            rows = [*urls, *([NOOP] if NOOP in books else [])]
            offer: Offer | None = None
            payers: dict[str, list[Payer]] = {}
            if urls:
                probed = PaymentRequired.decode(asyncio.run(_probe(port, next(iter(urls)))))
                first = probed.offers[0]
                assert isinstance(first, Offer)
                offer = first
                payers = {
                    book: [
                        Payer.open(
                            channels,
                            keys[2 + c % 8],
                            offer.pay_to,
                            PRICE * (len(kinds) * per + PREPAY),
                            withdraw_delay=offer.min_withdraw_delay,
                        )
                        for c in range(connections)
                    ]
                    for book in urls
                }
            for kind in kinds:
                free = [
                    [_request(f"/free/{kind}/{n}", None) for n in range(per)]
                    for _ in range(connections)
                ]
                asyncio.run(_load(port, "free", [rs[:warmup] for rs in free], server.pid))
                free_figures = asyncio.run(
                    _load(port, f"{kind} free", [r[warmup:] for r in free], server.pid)
                )
                paid_figures = []
                for book in rows:
                    prepay = PREPAY if book == "credit" else 1
                    if book == NOOP:  # credit's requests, to a layer that lets them through
                        paid = [
                            [_request(f"/{NOOP}/paid/{kind}/{n}", None, True) for n in range(per)]
                            for _ in range(connections)
                        ]
                    else:
                        assert offer is not None
                        paid = [
                            _signed(payer, offer, f"/{book}/paid/{kind}", per, prepay)
                            for payer in payers[book]
                        ]
                    tokens: list[list[bytes]] = [[] for _ in paid]
                    # Warm (first-sight chain reads, caches), then measure the rest.
                    warm = [rs[:warmup] for rs in paid]
                    asyncio.run(_load(port, "paid", warm, server.pid, tokens))
                    before = asyncio.run(_stats(port)).get(book)
                    rest = [r[warmup:] for r in paid]
                    figures = asyncio.run(_load(port, f"{kind} {book}", rest, server.pid, tokens))
                    after = asyncio.run(_stats(port)).get(book)
                    if before is not None and after is not None:
                        accepts = after["accepts"] - before["accepts"]
                        commits = after["commits"] - before["commits"]
                        batches[figures.route] = accepts / max(commits, 1)
                    paid_figures.append(figures)
                measured.append((free_figures, paid_figures))
        finally:
            server.terminate()
            server.wait(timeout=10)
    return measured, missing, batches


async def _stats(port: int) -> dict[str, dict[str, int]]:
    """The server's ledger writers' counts (GET /stats)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_request("/stats", None))
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:"
    )
    body = await reader.readexactly(length)
    writer.close()
    stats: dict[str, dict[str, int]] = json.loads(body)
    return stats


def _signed(payer: Payer, offer: Offer, prefix: str, count: int, prepay: int = 1) -> list[bytes]:
    """``count`` requests, each carrying the next voucher of ``payer``'s channel; with
    ``prepay``, one in every ``prepay`` does (for that many prices), the others spend the
    credit it bought."""
    signed = []
    for n in range(count):
        if n % prepay:
            signed.append(_request(f"{prefix}/{n}", None, credit=True))
            continue
        voucher = payer.pay(PRICE * prepay)
        header = PaymentPayload(
            offer.network, PRICE, offer.asset, offer.pay_to, payer.config, voucher
        ).encode()
        signed.append(_request(f"{prefix}/{n}", header))
    return signed


async def _probe(port: int, book: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_request(f"/{book}/paid/minimal/0", None))
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    for line in head.decode().split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "payment-required":
            return value.strip()
    raise RuntimeError("the paid route did not answer 402")


def _verdicts(kind: str, free: Figures, paid: Figures) -> list[str]:
    """The goals a row is held to, met or not, and by how much if not."""
    book = paid.route.split()[1]
    added = (1 / paid.rate - 1 / free.rate) * 1e6
    p99 = paid.percentile(0.99)
    said = []
    if book == "sqlite":
        said.append(_goal(f"{kind} sqlite: added", added, SQLITE_ADDED_US, "µs"))
        said.append(_goal(f"{kind} sqlite: p99", p99, SQLITE_P99_MS, "ms"))
    if book == "postgres":
        rate = paid.rate
        verdict = (
            "met" if rate >= POSTGRES_RATE else f"NOT met, short by {POSTGRES_RATE - rate:.0f}"
        )
        said.append(f"{kind} postgres: {rate:.0f} paid req/s (goal >= {POSTGRES_RATE}: {verdict})")
    if book == "credit":
        ratio = paid.rate / free.rate
        verdict = (
            "met" if ratio >= CREDIT_RATIO else f"NOT met, short by {CREDIT_RATIO - ratio:.2f}"
        )
        said.append(f"{kind} credit: paid/free {ratio:.2f} (goal >= {CREDIT_RATIO}: {verdict})")
    if book == NOOP:
        # What the credit goal allows a request beyond a free one, and what is left of it
        # once the layer alone is paid for.
        allowed = (1 / CREDIT_RATIO - 1) / free.rate * 1e6
        said.append(
            f"{kind} no-op layer: paid/free {paid.rate / free.rate:.2f}, {added:+.1f} µs; of the "
            f"{allowed:.1f} µs the credit goal allows beyond a free request, "
            f"{allowed - added:.1f} µs are left for a paywall's own work"
        )
    return said


def _goal(what: str, value: float, limit: float, unit: str) -> str:
    verdict = "met" if value <= limit else f"NOT met, over by {value - limit:.1f} {unit}"
    return f"{what} {value:.1f} {unit} (goal <= {limit} {unit}: {verdict})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per route")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=50, help="per connection")
    parser.add_argument("--books", default=",".join(BOOKS), help="of " + ", ".join(BOOKS))
    parser.add_argument("--kinds", default=",".join(KINDS), help="of " + ", ".join(KINDS))
    parser.add_argument(
        "--profile", metavar="FILE", help="run the server under cProfile, stats to FILE"
    )
    parser.add_argument("--serve", nargs=4, metavar=("RPC", "CONTRACT", "KEY", "PORT"))
    parser.add_argument("--ledger", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        rpc, contract, key, port = args.serve
        ledgers = dict(entry.split("=", 1) for entry in args.ledger)
        serve(rpc, contract, key, int(port), ledgers)
        return 0
    books = tuple(b for b in args.books.split(",") if b)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if set(books) - set(BOOKS) or set(kinds) - set(KINDS) or not kinds:
        parser.error(f"books are of {BOOKS}, kinds of {KINDS}")
    measured, missing, batches = run(
        args.requests, args.connections, args.warmup, books, kinds, args.profile
    )
    print(f"one uvicorn process, {args.connections} keep-alive connections, price {PRICE}")
    header = f"{'route':<18}{'requests':>9}{'req/s':>9}{'paid/free':>10}{'added µs':>10}"
    header += f"{'p50 ms':>9}{'p99 ms':>9}{'cpu µs':>8}{'+cpu µs':>9}{'loop µs':>9}"
    print(header + f"{'failed':>8}")
    failures = 0
    verdicts = []
    for free, paid in measured:
        kind = free.route.split()[0]
        for figures in (free, *paid):
            failures += figures.failures
            if figures is free:
                ratio, added, added_cpu = "", "", ""
            else:
                ratio = f"{figures.rate / free.rate:.2f}"
                added = f"+{(1 / figures.rate - 1 / free.rate) * 1e6:.0f}"
                added_cpu = f"+{figures.cpu_us - free.cpu_us:.0f}"
                verdicts += _verdicts(kind, free, figures)
            print(
                f"{figures.route:<18}{figures.requests:>9}{figures.rate:>9.0f}{ratio:>10}"
                f"{added:>10}{figures.percentile(0.50):>9.2f}{figures.percentile(0.99):>9.2f}"
                f"{figures.cpu_us:>8.0f}{added_cpu:>9}{figures.loop_us:>9.0f}{figures.failures:>8}"
            )
    for book, why in missing.items():
        print(f"{book}: not measured ({why})")
    print(
        "added µs: server time per paid request beyond a free one, at saturation (1/rate);\n"
        "cpu µs: the server's CPU time per request (what load from other programs on the\n"
        "machine leaves unchanged, unlike rates and latencies); loop µs: the part of it on\n"
        "the event loop's thread, which serves every request in turn (a ledger's writer\n"
        "thread runs beside it)"
    )
    for route, size in batches.items():
        print(f"  {route}: {size:.1f} accepts per durable commit (group commit)")
    for line in verdicts:
        print("  " + line)
    if args.profile:
        import pstats

        print(f"\nserver profile ({args.profile}), event loop thread, by own time:")
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)
        if Path(args.profile + ".writer").exists():
            print(f"\nledger writers' threads ({args.profile}.writer), by own time:")
            pstats.Stats(args.profile + ".writer").sort_stats("tottime").print_stats(15)
    return 0 if failures == 0 and not missing else 1


if __name__ == "__main__":
    sys.exit(main())
