"""The paywall on trio: Hypercorn's trio worker serving it on loopback, a SQLite ledger, the
real HttpPayer and the contract on anvil.

On asyncio, a ledger write is awaited as a future of the running loop (the ledger's writer
settles it). trio has no such loop: the paywall then takes the writer's thread future and
waits for it in a worker thread (``paywall._committed``). These tests pay through that path,
a voucher per request and prepaid credit, one reader and several at once, and check that
every request was served by trio and that the ledger holds exactly what was charged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import sniffio
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from ledger_helpers import writes_held
from paywall_helpers import chain, fund, receipt_of
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from micropay.devnode import free_port
from micropay.http_client import HttpPayer, PaymentPolicy, PaymentTransport
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall

pytestmark = pytest.mark.standalone

PRICE = 10**12
K = 4


@pytest.fixture(scope="module")
def node() -> Iterator[Any]:
    with chain() as c:
        yield c


async def article(request: Request) -> JSONResponse:
    """Says which async library served it and how it was paid."""
    return JSONResponse(
        {
            "library": sniffio.current_async_library(),
            "credit": "payment-credit" in request.headers,
            "payer": request.state.payment.payer,
        }
    )


class TrioServer:
    """Hypercorn's trio worker serving ``app`` on 127.0.0.1 in a thread, for a ``with`` block."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._config = Config()
        self._config.bind = [f"127.0.0.1:{self.port}"]
        self._config.accesslog = None
        self._config.errorlog = None
        self._app = app
        self._started = threading.Event()
        self._stop = threading.Event()
        self._failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            async def stopped() -> None:
                while not self._stop.is_set():
                    await trio.sleep(0.02)

            async with trio.open_nursery() as nursery:
                await nursery.start(self._serve, stopped)
                self._started.set()

        try:
            trio.run(main)
        except BaseException as err:  # reported by __exit__ or __enter__
            self._failed.append(err)
            self._started.set()

    async def _serve(self, stopped: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await serve(self._app, self._config, shutdown_trigger=stopped, task_status=task_status)

    def __enter__(self) -> TrioServer:
        self._thread.start()
        if not self._started.wait(timeout=10) or self._failed:
            raise RuntimeError(f"hypercorn did not start: {self._failed}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "hypercorn did not stop"
        assert not self._failed, self._failed


def site(node: Any, tmp_path: Any, prepay: int | None = None) -> tuple[Paywall, Ledger]:
    ledger = Ledger.open(_url(tmp_path), node.channels.domain)
    payee = Payee(node.channels, node.site, book=ledger, confirmations=0)
    app = Starlette(routes=[Route("/articles/{slug}", article)])
    paywall = Paywall(app, payee=payee, prices={"GET /articles/{slug}": PRICE}, prepay=prepay)
    return paywall, ledger


def _url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'site.db'}"


def answered_after_its_commit(client: httpx.Client, path: str, url: str) -> httpx.Response:
    """``GET path`` while the ledger's table is write-locked from outside: no answer may come
    before the lock goes and the charge's commit with it."""
    with ThreadPoolExecutor(1) as pool:
        with writes_held(url):
            answer = pool.submit(client.get, path)
            time.sleep(0.5)
            assert not answer.done(), "answered before its charge was committed"
        return answer.result(timeout=30)


def reader(node: Any, tmp_path: Any, prepay: int = 0) -> HttpPayer:
    [account] = fund(node.w3, node.deployer, 1, 10**18)
    policy = PaymentPolicy(max_price=max(1, prepay) * PRICE, prepay=prepay)
    return HttpPayer(node.w3, account, policy, store=tmp_path / f"{account.address}.json")


def test_a_voucher_per_request_is_committed_before_trio_answers(node, tmp_path):
    paywall, ledger = site(node, tmp_path)
    payer = reader(node, tmp_path)
    with (
        TrioServer(paywall) as server,
        httpx.Client(base_url=server.url, transport=PaymentTransport(payer)) as client,
    ):
        for n in range(1, 11):
            response = client.get(f"/articles/{n}")
            assert response.status_code == 200, response.text
            assert response.json()["library"] == "trio"
            receipt = receipt_of(response)
            assert receipt.signed is not None and receipt.cumulative_amount == n * PRICE
            # The receipt left after its write: the ledger holds the charge already.
            assert ledger.held(receipt.channel_id).charged == n * PRICE
        held = answered_after_its_commit(client, "/articles/held", _url(tmp_path))
        assert held.status_code == 200 and receipt_of(held).cumulative_amount == 11 * PRICE
        unpaid = httpx.get(f"{server.url}/articles/again")  # no payment: a 402, not a 500
        assert unpaid.status_code == 402
    [channel_id] = ledger.channel_ids()
    assert sum(charge.amount for charge in ledger.charges()) == 11 * PRICE
    assert ledger.best(channel_id).cumulative_amount == 11 * PRICE
    assert ledger.commit_stats().accepts == 11
    ledger.close()


def test_prepaid_credit_is_charged_through_the_worker_thread_wait(node, tmp_path):
    paywall, ledger = site(node, tmp_path, prepay=K)
    payer = reader(node, tmp_path, prepay=K)
    with (
        TrioServer(paywall) as server,
        httpx.Client(base_url=server.url, transport=PaymentTransport(payer)) as client,
    ):
        answers = [client.get(f"/articles/{n}") for n in range(2 * K - 1)]
        answers.append(answered_after_its_commit(client, "/articles/held", _url(tmp_path)))
    assert [a.status_code for a in answers] == [200] * (2 * K)
    assert {a.json()["library"] for a in answers} == {"trio"}
    # One voucher per K requests, the others on its credit.
    assert [a.json()["credit"] for a in answers] == ([False] + [True] * (K - 1)) * 2
    assert [receipt_of(a).cumulative_amount for a in answers] == [
        n * PRICE for n in range(1, 2 * K + 1)
    ]
    [channel_id] = ledger.channel_ids()
    assert ledger.held(channel_id).charged == 2 * K * PRICE
    assert ledger.best(channel_id).cumulative_amount == 2 * K * PRICE
    ledger.close()


def test_readers_at_once_share_commits_and_the_ledger_adds_up(node, tmp_path):
    paywall, ledger = site(node, tmp_path)
    payers = [reader(node, tmp_path) for _ in range(4)]
    reads = 15
    with TrioServer(paywall) as server:

        def read(payer: HttpPayer) -> list[tuple[int, str]]:
            transport = PaymentTransport(payer)
            with httpx.Client(base_url=server.url, transport=transport) as client:
                answers = [client.get(f"/articles/{n}") for n in range(reads)]
                return [(a.status_code, a.json()["library"]) for a in answers]

        with ThreadPoolExecutor(len(payers)) as pool:
            served = list(pool.map(read, payers))
    assert served == [[(200, "trio")] * reads] * len(payers)
    assert len(ledger.channel_ids()) == len(payers)
    for channel_id in ledger.channel_ids():
        assert ledger.held(channel_id).charged == reads * PRICE
    assert sum(charge.amount for charge in ledger.charges()) == len(payers) * reads * PRICE
    stats = ledger.commit_stats()
    assert stats.accepts == len(payers) * reads
    assert stats.commits <= stats.accepts
    ledger.close()
