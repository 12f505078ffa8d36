"""The paywall sells a route in x402's ``exact`` scheme and settles each payment itself.

Real parts throughout: anvil, the USDC-like token, uvicorn on loopback, a SQLite ledger
(and two worker processes racing on one authorization). The first payment comes from the
official ``x402`` Python client with its ``exact`` EVM scheme, unmodified: the interop
proof. The hostile ones are signed with micropay's own EIP-712 code (``_eip3009``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from exact_helpers import PRICE, exact_offer_of, exact_site, funded_usdc, pay, signed, site_workers
from paywall_helpers import Server, chain
from x402 import x402Client
from x402.http.clients import x402_httpx_transport
from x402.mechanisms.evm.exact import ExactEvmScheme
from x402_models import check_receipt, check_required

from micropay._eip3009 import sign_cancel
from micropay._x402 import Reason
from micropay.exact import ExactPayload, ExactReceipt

pytestmark = pytest.mark.standalone

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def node() -> Iterator:
    with chain() as c:
        yield c


@pytest.fixture(scope="module")
def usdc(node):  # type: ignore[no-untyped-def]
    return funded_usdc(node)


def test_the_official_x402_client_pays_an_exact_offer(node, usdc, tmp_path):
    w3 = node.w3
    reader = node.readers[0]
    site = exact_site(
        w3, node.channels.address, usdc.address, node.site, f"sqlite:///{tmp_path / 'l.db'}"
    )
    before = usdc.balance_of(reader.address), usdc.balance_of(node.site.address)
    with Server(site) as server:
        url = f"{server.url}/report"
        ask = httpx.get(url)
        assert ask.status_code == 402
        schemes = [o.scheme for o in check_required(ask.headers["payment-required"]).accepts]
        assert schemes == ["channel", "exact"]  # channel first: cheaper for a returning reader

        client = x402Client()
        client.register("eip155:31337", ExactEvmScheme(reader))
        # The SDK pays only assets it knows unless told: this token is the test's own.
        client.set_spend_controls(
            {"allowed_assets": [{"network": "eip155:31337", "asset": usdc.address}]}
        )

        async def fetch() -> httpx.Response:
            async with httpx.AsyncClient(transport=x402_httpx_transport(client)) as http:
                return await http.get(url, timeout=60)

        response = asyncio.run(fetch())
        assert response.status_code == 200, response.text
        assert response.text == f"report for {reader.address} (exact)"
        settled = check_receipt(response.headers["payment-response"])
        assert settled.success and settled.payer == reader.address
        assert settled.amount == str(PRICE)
        tx = w3.eth.get_transaction_receipt(settled.transaction)
        assert tx["status"] == 1 and tx["from"] == node.site.address  # the site settled it
    assert usdc.balance_of(reader.address) == before[0] - PRICE
    assert usdc.balance_of(node.site.address) == before[1] + PRICE


def test_exact_payments_the_site_must_refuse(node, usdc, tmp_path):
    w3 = node.w3
    reader, other = node.readers[1], node.readers[2]
    site = exact_site(
        w3, node.channels.address, usdc.address, node.site, f"sqlite:///{tmp_path / 'l.db'}"
    )
    with Server(site) as server:
        url = f"{server.url}/report"
        offer = exact_offer_of(httpx.get(url))
        before = usdc.balance_of(node.site.address)

        def refused(payload: ExactPayload, reason: str, status: int = 402) -> None:
            response = pay(url, payload)
            assert response.status_code == status, response.text
            assert check_required(response.headers["payment-required"]).error == reason
            assert response.json()["error"] == reason

        # A payment, then the same payment resent: one transfer, the same receipt.
        good = signed(offer, reader)
        first, again = pay(url, good), pay(url, good)
        assert first.status_code == again.status_code == 200
        assert first.headers["payment-response"] == again.headers["payment-response"]
        assert usdc.balance_of(node.site.address) == before + PRICE
        # Another authorization under the same nonce (another window) is a replay.
        twin = signed(offer, reader, nonce=good.authorization.nonce, valid_before=2**40)
        refused(twin, Reason.AUTHORIZATION_USED)
        # A nonce used on the token behind the site's back, and one cancelled.
        used = signed(offer, reader)
        usdc.transfer_with_authorization(used.authorization, used.signature, other)
        refused(used, Reason.AUTHORIZATION_USED)
        cancelled = signed(offer, reader)
        nonce = cancelled.authorization.nonce
        cancel = sign_cancel(offer.domain, reader, nonce)
        usdc.cancel_authorization(reader.address, nonce, cancel, other)
        refused(cancelled, Reason.AUTHORIZATION_USED)
        # To someone else, below, above the price; outside the window.
        refused(signed(offer, reader, to=other.address), Reason.WRONG_PAYEE)
        refused(signed(offer, reader, value=PRICE - 1, price=PRICE - 1), Reason.PRICE_MISMATCH)
        refused(signed(offer, reader, value=PRICE + 1), Reason.PRICE_MISMATCH)
        soon = int(time.time()) + 2
        refused(signed(offer, reader, valid_before=soon), Reason.AUTHORIZATION_EXPIRED)
        refused(
            signed(offer, reader, valid_after=int(time.time()) + 600),
            Reason.AUTHORIZATION_NOT_YET_VALID,
        )
        # Another chain; another token; this token's name on another chain's domain.
        refused(signed(offer, reader, network="eip155:1"), Reason.WRONG_NETWORK)
        refused(signed(offer, reader, asset=other.address), Reason.WRONG_ASSET)
        foreign = type(offer.domain)(offer.token_name, "2", 1, offer.asset)
        refused(signed(offer, reader, domain=foreign), Reason.INVALID_SIGNATURE)
        # A reader without the funds.
        refused(signed(offer, Account.create()), Reason.INSUFFICIENT_FUNDS)
        # Junk in the exact shape is a 400, not a 500.
        obj = json.loads(base64.b64decode(good.encode()))
        obj["payload"]["authorization"]["nonce"] = "0x12"
        junk = base64.b64encode(json.dumps(obj).encode()).decode()
        response = httpx.get(url, headers={"payment-signature": junk})
        assert response.status_code == 400
        assert response.json()["error"] == Reason.INVALID_PAYLOAD
    # The good payment, and the one submitted behind the site's back: nothing else moved.
    assert usdc.balance_of(node.site.address) == before + 2 * PRICE


def test_an_exact_only_route_refuses_channel_payments_and_a_settlement_timeout_is_resent(
    node, usdc, tmp_path
):
    w3 = node.w3
    reader = node.readers[3]
    site = exact_site(
        w3,
        node.channels.address,
        usdc.address,
        node.site,
        f"sqlite:///{tmp_path / 'l.db'}",
        timeout=1.0,
        schemes=("exact",),
    )
    with Server(site) as server:
        url = f"{server.url}/report"
        ask = httpx.get(url)
        assert [o.scheme for o in check_required(ask.headers["payment-required"]).accepts] == [
            "exact"
        ]
        offer = exact_offer_of(ask)
        obj = json.loads(base64.b64decode(signed(offer, reader).encode()))
        obj["accepted"]["scheme"] = "channel"
        channel = base64.b64encode(json.dumps(obj).encode()).decode()
        refusal = httpx.get(url, headers={"payment-signature": channel})
        assert (refusal.status_code, refusal.json()["error"]) == (400, Reason.UNSUPPORTED_SCHEME)

        before = usdc.balance_of(node.site.address)
        payment = signed(offer, reader, valid_before=int(time.time()) + 300)
        w3.provider.make_request("evm_setAutomine", [False])
        try:
            slow = pay(url, payment)
            assert (slow.status_code, slow.json()["error"]) == (402, Reason.SETTLEMENT_TIMEOUT)
            pending = pay(url, payment)
            assert (pending.status_code, pending.json()["error"]) == (
                409,
                Reason.SETTLEMENT_PENDING,
            )
            w3.provider.make_request("evm_mine", [])
        finally:
            w3.provider.make_request("evm_setAutomine", [True])
        served = pay(url, payment)
        assert served.status_code == 200
        receipt = ExactReceipt.decode(served.headers["payment-response"])
        assert w3.eth.get_transaction_receipt(receipt.transaction)["status"] == 1
    assert usdc.balance_of(node.site.address) == before + PRICE


def test_two_worker_processes_settle_one_authorization_once(node, usdc, tmp_path):
    w3 = node.w3
    reader = node.readers[4]
    ledger = f"sqlite:///{tmp_path / 'shared.db'}"
    with site_workers(w3, node.channels.address, usdc.address, node.site, ledger) as urls:
        offer = exact_offer_of(httpx.get(urls[0]))
        before = usdc.balance_of(node.site.address), usdc.balance_of(reader.address)
        for _ in range(3):  # three authorizations, each sent to both workers at once
            payment = signed(offer, reader)
            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(pay, urls, [payment] * len(urls)))
            statuses = sorted(a.status_code for a in answers)
            assert statuses in ([200, 200], [200, 409]), [a.text for a in answers]
            receipts = {a.headers["payment-response"] for a in answers if a.status_code == 200}
            assert len(receipts) == 1  # both served: the same receipt, one transfer
        assert usdc.balance_of(node.site.address) == before[0] + 3 * PRICE
        assert usdc.balance_of(reader.address) == before[1] - 3 * PRICE


def test_a_far_valid_before_buys_no_resend_past_max_timeout_seconds(node, usdc, tmp_path):
    """A settled payment sent again is answered (a client whose response was lost retries)
    only within the offer's ``maxTimeoutSeconds`` of its settlement, whatever ``validBefore``
    the payer signed. Here the offer says 10 s and the attacker signs an hour ahead, pays
    once, and keeps resending the same payment; every resend while ``validBefore`` was
    ahead used to be served again (a year ahead: a year of reads for one price)."""
    reader = node.readers[1]
    ledger = f"sqlite:///{tmp_path / 'l.db'}"
    site = exact_site(
        node.w3, node.channels.address, usdc.address, node.site, ledger, max_timeout_seconds=10
    )
    with Server(site) as server:
        url = f"{server.url}/report"
        offer = exact_offer_of(httpx.get(url))
        assert offer.max_timeout_seconds == 10
        before = usdc.balance_of(node.site.address)
        payment = signed(offer, reader, valid_before=int(time.time()) + 3600)
        first = pay(url, payment)
        assert first.status_code == 200, first.text
        time.sleep(12)  # past maxTimeoutSeconds: a retry of a lost response is long over
        served = [pay(url, payment).status_code for _ in range(5)]
        assert usdc.balance_of(node.site.address) == before + PRICE  # paid once
        # Past maxTimeoutSeconds the payment buys nothing more.
        assert served == [402] * 5, f"one payment served {1 + served.count(200)} times"
