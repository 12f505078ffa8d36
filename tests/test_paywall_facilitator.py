"""The paywall settles ``exact`` through an x402 facilitator named by URL.

Real parts throughout: anvil, the USDC-like token, uvicorn on loopback for the site and
for every facilitator, the ledger on SQLite and PostgreSQL. The honest facilitator is the
``x402`` package's own (tests/x402_facilitator.py), paid by the package's own client. The
hostile ones are small HTTP servers on loopback that time out, answer garbage, or claim a
settlement that did not happen; each gets a 402 with its reason, nothing served, and no
authorization is ever sent to ``/settle`` twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx
import pytest
from exact_helpers import PRICE, exact_offer_of, exact_site, funded_usdc, pay, signed, site_workers
from paywall_helpers import Server, chain, dev_key
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from x402 import x402Client
from x402.http.clients import x402_httpx_transport
from x402.mechanisms.evm.exact import ExactEvmScheme
from x402_facilitator import x402_facilitator
from x402_models import check_receipt, check_required

from micropay._x402 import Reason
from micropay.facilitator import MAX_RESPONSE, FacilitatorSettler

pytestmark = pytest.mark.standalone
pytest_plugins = ["ledger_fixtures"]


@pytest.fixture(scope="module")
def fac_node() -> Iterator:
    with chain() as c:
        yield c


@pytest.fixture(scope="module")
def fac_usdc(fac_node):  # type: ignore[no-untyped-def]
    return funded_usdc(fac_node)


@pytest.fixture(scope="module")
def official_facilitator(fac_node) -> Iterator:  # type: ignore[no-untyped-def]
    # dev key 9 pays the facilitator's gas; it is no test's payer (readers[7] is unused).
    with x402_facilitator(fac_node.w3, dev_key(9)) as facilitator:
        yield facilitator


def official_client_get(url: str, reader, asset: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    client = x402Client()
    client.register("eip155:31337", ExactEvmScheme(reader))
    client.set_spend_controls({"allowed_assets": [{"network": "eip155:31337", "asset": asset}]})

    async def fetch() -> httpx.Response:
        async with httpx.AsyncClient(transport=x402_httpx_transport(client)) as http:
            return await http.get(url, timeout=60)

    return asyncio.run(fetch())


def test_the_official_client_pays_through_the_official_facilitator(
    fac_node, fac_usdc, official_facilitator, ledger_url
):
    w3, reader = fac_node.w3, fac_node.readers[0]
    site = exact_site(
        w3, fac_node.channels.address, fac_usdc.address, fac_node.site, ledger_url,
        schemes=("exact",), facilitator=official_facilitator.url,
    )  # fmt: skip
    site_before = fac_usdc.balance_of(fac_node.site.address)
    reader_before = fac_usdc.balance_of(reader.address)
    gas_payer_before = fac_usdc.balance_of(official_facilitator.address)
    with Server(site) as server:
        response = official_client_get(f"{server.url}/report", reader, fac_usdc.address)
        assert response.status_code == 200, response.text
        assert response.text == f"report for {reader.address} (exact)"
        settled = check_receipt(response.headers["payment-response"])
        assert settled.success and settled.payer == reader.address
        assert settled.amount == str(PRICE) and settled.network == "eip155:31337"
        tx = w3.eth.get_transaction_receipt(settled.transaction)
        # The facilitator's key submitted it, not the site's.
        assert tx["status"] == 1 and tx["from"] == official_facilitator.address
    assert fac_usdc.balance_of(reader.address) == reader_before - PRICE
    assert fac_usdc.balance_of(fac_node.site.address) == site_before + PRICE
    assert fac_usdc.balance_of(official_facilitator.address) == gas_payer_before


def test_the_settler_reads_what_a_facilitator_supports(fac_usdc, official_facilitator):
    usdc = fac_usdc
    with FacilitatorSettler(official_facilitator.url, usdc) as settler:
        assert settler.supports()
    with Server(Hostile().app()) as hostile, FacilitatorSettler(hostile.url, usdc) as settler:
        assert not settler.supports()  # no /supported at all
    assert settler._http.is_closed  # the with block closed its client
    with pytest.raises(ValueError, match="http"):
        FacilitatorSettler("file:///etc/passwd", usdc)


def test_a_resent_payment_is_served_again_and_not_sent_to_settle_twice(
    fac_node, fac_usdc, official_facilitator, tmp_path
):
    reader = fac_node.readers[1]
    seen: list[str] = []
    spy = _Spy(official_facilitator.url, seen)
    with Server(spy.app()) as proxy:
        site = exact_site(
            fac_node.w3, fac_node.channels.address, fac_usdc.address, fac_node.site,
            f"sqlite:///{tmp_path / 'l.db'}", facilitator=proxy.url,
        )  # fmt: skip
        before = fac_usdc.balance_of(fac_node.site.address)
        with Server(site) as server:
            url = f"{server.url}/report"
            payment = signed(exact_offer_of(httpx.get(url)), reader)
            first, again = pay(url, payment), pay(url, payment)
    assert first.status_code == again.status_code == 200, again.text
    assert first.headers["payment-response"] == again.headers["payment-response"]
    assert seen == ["verify", "settle"]  # the resend was answered from the book
    assert fac_usdc.balance_of(fac_node.site.address) == before + PRICE


def test_two_workers_send_one_authorization_to_settle_once(
    fac_node, fac_usdc, official_facilitator, ledger_url
):
    reader = fac_node.readers[4]
    seen: list[str] = []
    with Server(_Spy(official_facilitator.url, seen).app()) as proxy, site_workers(
        fac_node.w3, fac_node.channels.address, fac_usdc.address, fac_node.site,
        ledger_url, facilitator=proxy.url,
    ) as urls:  # fmt: skip
        offer = exact_offer_of(httpx.get(urls[0]))
        before = fac_usdc.balance_of(fac_node.site.address)
        for _ in range(3):  # three authorizations, each sent to both workers at once
            payment = signed(offer, reader)
            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(pay, urls, [payment] * len(urls)))
            statuses = sorted(a.status_code for a in answers)
            assert statuses in ([200, 200], [200, 409]), [a.text for a in answers]
            receipts = {a.headers["payment-response"] for a in answers if a.status_code == 200}
            assert len(receipts) == 1
    assert seen.count("settle") == 3  # one /settle per authorization, whichever worker sent it
    assert fac_usdc.balance_of(fac_node.site.address) == before + 3 * PRICE


class _Spy:
    """A loopback proxy to the real facilitator that records which endpoints were called."""

    def __init__(self, upstream: str, seen: list[str]) -> None:
        self.upstream, self.seen = upstream, seen

    def app(self) -> Starlette:
        async def forward(request: Request) -> Response:
            endpoint = request.url.path.strip("/")
            self.seen.append(endpoint)
            async with httpx.AsyncClient() as http:
                answer = await http.post(
                    f"{self.upstream}/{endpoint}", content=await request.body(), timeout=60
                )
            return Response(answer.content, answer.status_code, media_type="application/json")

        return Starlette(routes=[Route(f"/{e}", forward, methods=["POST"]) for e in _ENDPOINTS])


# -- hostile facilitators --------------------------------------------------------------------

_ENDPOINTS = ("verify", "settle")
Answer = Callable[[dict], Awaitable[Response]]


class Hostile:
    """A facilitator on loopback whose answers each test case sets; it counts its calls."""

    def __init__(self) -> None:
        self.verify: Answer = _valid
        self.settle: Answer = _valid
        self.calls = {"verify": 0, "settle": 0}

    def app(self) -> Starlette:
        async def endpoint(request: Request) -> Response:
            name = request.url.path.strip("/")
            self.calls[name] += 1
            body = json.loads(await request.body())
            answer = self.verify if name == "verify" else self.settle
            return await answer(body)

        return Starlette(routes=[Route(f"/{e}", endpoint, methods=["POST"]) for e in _ENDPOINTS])


def _payer(body: dict) -> str:
    return str(body["paymentPayload"]["payload"]["authorization"]["from"])


async def _valid(body: dict) -> Response:
    return JSONResponse({"isValid": True, "payer": _payer(body)})


def _sleeps(seconds: float) -> Answer:
    async def answer(body: dict) -> Response:
        await anyio.sleep(seconds)
        return await _valid(body)

    return answer


def _raw(content: bytes, status: int = 200) -> Answer:
    async def answer(body: dict) -> Response:
        return Response(content, status, media_type="application/json")

    return answer


def _settled(**fields: object) -> Answer:
    """A SettleResponse claiming success, with ``fields`` over an honest-looking one."""

    async def answer(body: dict) -> Response:
        obj = {"success": True, "network": "eip155:31337", "payer": _payer(body)}
        obj.update(fields)
        return JSONResponse({k: v for k, v in obj.items() if v is not None})

    return answer


def test_hostile_facilitators_get_a_402_with_a_reason_and_nothing_is_settled_twice(
    fac_node, fac_usdc, tmp_path
):
    w3 = fac_node.w3
    reader, other = fac_node.readers[2], fac_node.readers[3]
    # A real transaction of the token that settles nothing: a facilitator may name it.
    unrelated = fac_usdc.mint(other.address, 1, fac_node.deployer)["transactionHash"]
    hostile = Hostile()
    with Server(hostile.app()) as facilitator:
        site = exact_site(
            w3, fac_node.channels.address, fac_usdc.address, fac_node.site,
            f"sqlite:///{tmp_path / 'l.db'}", facilitator=facilitator.url,
            timeout=2.0, verify_timeout=1.0,
        )  # fmt: skip
        with Server(site) as server:
            url = f"{server.url}/report"
            offer = exact_offer_of(httpx.get(url))
            site_before = fac_usdc.balance_of(fac_node.site.address)
            reader_before = fac_usdc.balance_of(reader.address)

            def case(verify: Answer, settle: Answer, reason: str, resent: str) -> str:
                """Pay once and resend: the reasons, and how often /settle was called."""
                hostile.verify, hostile.settle = verify, settle
                hostile.calls = {"verify": 0, "settle": 0}
                payment = signed(offer, reader)
                first, again = pay(url, payment), pay(url, payment)
                for response, expected in ((first, reason), (again, resent)):
                    assert response.status_code == 402, response.text
                    assert response.json()["error"] == expected, response.text
                    assert check_required(response.headers["payment-required"]).error == expected
                    assert "payment-response" not in response.headers
                nonce = payment.authorization.nonce
                assert not fac_usdc.authorization_used(reader.address, nonce)
                return str(first.json()["message"])

            unavailable, invalid = (
                Reason.FACILITATOR_UNAVAILABLE,
                Reason.FACILITATOR_INVALID_RESPONSE,
            )
            failed, refused = Reason.SETTLEMENT_FAILED, Reason.FACILITATOR_REFUSED

            # Before /settle: nothing was sent to settle, so a resend asks again.
            assert "timed out" in case(_sleeps(3), _valid, unavailable, unavailable)
            assert hostile.calls == {"verify": 2, "settle": 0}
            case(_raw(b"<html>not json</html>"), _valid, invalid, invalid)
            case(_raw(b'{"valid": "yes"}'), _valid, invalid, invalid)
            case(_raw(b"[true]"), _valid, invalid, invalid)
            case(_raw(b'{"isValid": true}', 500), _valid, unavailable, unavailable)
            huge = json.dumps({"isValid": True, "pad": "x" * MAX_RESPONSE}).encode()
            assert "more than" in case(_raw(huge), _valid, invalid, invalid)
            refusal = b'{"isValid": false, "invalidReason": "insufficient_funds"}'
            assert "insufficient_funds" in case(_raw(refusal), _valid, refused, refused)
            assert hostile.calls == {"verify": 2, "settle": 0}
            stranger = _raw(json.dumps({"isValid": True, "payer": other.address}).encode())
            assert "another payer" in case(stranger, _valid, invalid, invalid)

            # /settle was sent and did not cleanly succeed: never sent again.
            for settle, reason, says in (
                (_sleeps(4), unavailable, "timed out"),
                (_raw(b"garbage"), invalid, "not JSON"),
                (_raw(b'{"success": "true"}'), invalid, "boolean success"),
                (_raw(b'{"success": false, "errorReason": "nope", "transaction": "",'
                      b' "network": "eip155:31337"}'), refused, "nope"),
                (_settled(), invalid, "without a transaction hash"),
                (_settled(transaction="0x1234"), invalid, "without a transaction hash"),
                (_settled(transaction="0x" + unrelated.hex().removeprefix("0x"),
                          payer=other.address), invalid, "another payer"),
                (_settled(transaction="0x" + "ab" * 32, network="eip155:1"), invalid,
                 "eip155:1"),
                (_settled(transaction="0x" + "ab" * 32, amount="1"), invalid, "amount"),
            ):  # fmt: skip
                message = case(_valid, settle, reason, failed)
                assert says in message and "nonce 0x" in message, message
                assert hostile.calls == {"verify": 1, "settle": 1}

            # A success naming a real transaction that used another authorization, or none:
            # the site's own node shows it does not pay this one.
            named = _settled(transaction="0x" + unrelated.hex().removeprefix("0x"))
            assert "does not use this authorization" in case(_valid, named, failed, failed)
            assert hostile.calls == {"verify": 1, "settle": 1}

            # A success naming a transaction the site's node never saw: not served; the
            # claim keeps the hash, so a resend looks for it again and /settle is not asked.
            hostile.settle = _settled(transaction="0x" + "cd" * 32)
            hostile.calls = {"verify": 0, "settle": 0}
            payment = signed(offer, reader)
            first, again = pay(url, payment), pay(url, payment)
            assert (first.status_code, first.json()["error"]) == (402, Reason.SETTLEMENT_TIMEOUT)
            assert (again.status_code, again.json()["error"]) == (409, Reason.SETTLEMENT_PENDING)
            assert hostile.calls == {"verify": 1, "settle": 1}

            # A facilitator that settles but answers too late: the site records the claim
            # failed and never sends it again; the payer's resend finds the transfer on the
            # site's node and is served, once.
            late = signed(offer, reader)

            async def settles_late(body: dict) -> Response:
                def submit() -> None:
                    fac_usdc.transfer_with_authorization(
                        late.authorization, late.signature, fac_node.deployer
                    )

                await anyio.to_thread.run_sync(submit)
                await anyio.sleep(4)
                return JSONResponse({"success": False, "errorReason": "too late anyway"})

            hostile.verify, hostile.settle = _valid, settles_late
            hostile.calls = {"verify": 0, "settle": 0}
            first = pay(url, late)
            assert (first.status_code, first.json()["error"]) == (402, unavailable)
            again, third = pay(url, late), pay(url, late)
            assert again.status_code == third.status_code == 200, again.text
            settled = check_receipt(again.headers["payment-response"])
            assert settled.payer == reader.address and settled.amount == str(PRICE)
            assert again.headers["payment-response"] == third.headers["payment-response"]
            assert hostile.calls == {"verify": 1, "settle": 1}

    # Of every payment above, only the one the facilitator did settle moved money.
    assert fac_usdc.balance_of(fac_node.site.address) == site_before + PRICE
    assert fac_usdc.balance_of(reader.address) == reader_before - PRICE
