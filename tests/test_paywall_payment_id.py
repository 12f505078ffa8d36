"""x402's ``payment-identifier`` extension on the paywall's ``exact`` routes.

The 402 declares the extension; a payment carrying an id binds it, in the ledger (SQLite
and PostgreSQL), to its authorization: the same payment resent under the id gets the same
response and is not settled again; another payment under the same id is refused (409
``payment_id_conflict``) before anything is claimed or settled. The first payment comes
from the official ``x402`` client with a client extension that adds the id.

(The SDK's own helpers, ``x402.extensions.payment_identifier``, cannot be imported here:
the ``x402.extensions`` package needs ``jsonschema``, the ``x402[extensions]`` extra, which
the dev install does not pull in; the wire shape below is the one those helpers write.)
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from exact_helpers import PRICE, exact_offer_of, exact_site, funded_usdc, pay, signed
from paywall_helpers import Server, chain
from x402 import x402Client
from x402.http.clients import x402_httpx_transport
from x402.mechanisms.evm.exact import ExactEvmScheme
from x402_models import check_receipt, check_required

from micropay._x402 import PAYMENT_IDENTIFIER, Reason
from micropay.exact import ExactPayload

pytestmark = pytest.mark.standalone
pytest_plugins = ["ledger_fixtures"]

PAYMENT_ID = "pay_0123456789abcdef0123"


@pytest.fixture(scope="module")
def pid_node() -> Iterator:
    with chain() as c:
        yield c


@pytest.fixture(scope="module")
def pid_usdc(pid_node):  # type: ignore[no-untyped-def]
    return funded_usdc(pid_node)


class PaymentIdentifier:
    """An ``x402Client`` extension adding a fixed id where the site declares the extension,
    as x402's ``append_payment_identifier_to_extensions`` does."""

    key = PAYMENT_IDENTIFIER
    hooks = None
    transport_hooks = None

    def __init__(self, payment_id: str) -> None:
        self.payment_id = payment_id

    def enrich_payment_payload(self, payload: Any, required: Any) -> Any:
        extensions = dict(payload.extensions or required.extensions or {})
        declared = extensions.get(PAYMENT_IDENTIFIER)
        if isinstance(declared, dict) and isinstance(declared.get("info"), dict):
            info = {**declared["info"], "id": self.payment_id}
            extensions[PAYMENT_IDENTIFIER] = {**declared, "info": info}
        return payload.model_copy(update={"extensions": extensions})


def with_id(payload: ExactPayload, payment_id: str) -> ExactPayload:
    return replace(payload, payment_id=payment_id)


def test_a_payment_id_makes_a_resend_the_same_payment_and_another_payment_a_conflict(
    pid_node, pid_usdc, ledger_url
):
    reader = pid_node.readers[0]
    site = exact_site(
        pid_node.w3, pid_node.channels.address, pid_usdc.address, pid_node.site, ledger_url
    )
    before = pid_usdc.balance_of(pid_node.site.address)
    with Server(site) as server:
        url = f"{server.url}/report"
        ask = httpx.get(url)
        declared = check_required(ask.headers["payment-required"]).extensions
        assert declared is not None
        assert declared[PAYMENT_IDENTIFIER]["info"] == {"required": False}
        schema = declared[PAYMENT_IDENTIFIER]["schema"]
        assert schema["properties"]["id"]["minLength"] == 16 and schema["required"] == ["required"]

        client = x402Client()
        client.register("eip155:31337", ExactEvmScheme(reader))
        client.set_spend_controls(
            {"allowed_assets": [{"network": "eip155:31337", "asset": pid_usdc.address}]}
        )
        client.register_extension(PaymentIdentifier(PAYMENT_ID))

        async def fetch() -> httpx.Response:
            async with httpx.AsyncClient(transport=x402_httpx_transport(client)) as http:
                return await http.get(url, timeout=60)

        paid = asyncio.run(fetch())
        assert paid.status_code == 200, paid.text
        assert check_receipt(paid.headers["payment-response"]).amount == str(PRICE)

        # Another payment (a fresh authorization) under the official client's id: refused.
        offer = exact_offer_of(ask)
        conflict = pay(url, with_id(signed(offer, reader), PAYMENT_ID))
        assert conflict.status_code == 409, conflict.text
        assert conflict.json()["error"] == Reason.PAYMENT_ID_CONFLICT
        assert check_required(conflict.headers["payment-required"]).error == (
            Reason.PAYMENT_ID_CONFLICT
        )

        # One payment under its own id, resent: one transfer, the same answer.
        mine = with_id(signed(offer, reader), "order-42_aaaaaaaaaaaa")
        first, again = pay(url, mine), pay(url, mine)
        assert first.status_code == again.status_code == 200, again.text
        assert first.headers["payment-response"] == again.headers["payment-response"]
        # Its authorization under another id is still the one payment: the id is new, so
        # it binds, and the nonce's claim answers with the receipt it already has.
        other_id = pay(url, with_id(mine, "order-43_aaaaaaaaaaaa"))
        assert other_id.headers["payment-response"] == first.headers["payment-response"]
        # The reused id on yet another authorization is refused, whatever it carries.
        reused = pay(url, with_id(signed(offer, reader), "order-42_aaaaaaaaaaaa"))
        assert reused.status_code == 409

    assert pid_usdc.balance_of(pid_node.site.address) == before + 2 * PRICE


def test_a_malformed_payment_id_is_refused_before_anything_is_settled(pid_node, pid_usdc, tmp_path):
    reader = pid_node.readers[1]
    site = exact_site(
        pid_node.w3, pid_node.channels.address, pid_usdc.address, pid_node.site,
        f"sqlite:///{tmp_path / 'l.db'}",
    )  # fmt: skip
    before = pid_usdc.balance_of(reader.address)
    with Server(site) as server:
        url = f"{server.url}/report"
        offer = exact_offer_of(httpx.get(url))
        good = json.loads(base64.b64decode(signed(offer, reader).encode()))
        for extension in (
            {"info": {"required": False, "id": "short"}},
            {"info": {"required": False, "id": "has spaces in it, sixteen+"}},
            {"info": {"required": False, "id": 1234567890123456789}},
            {"info": "pay_0123456789abcdef"},
            "pay_0123456789abcdef",
        ):
            obj = {**good, "extensions": {PAYMENT_IDENTIFIER: extension}}
            header = base64.b64encode(json.dumps(obj).encode()).decode()
            response = httpx.get(url, headers={"payment-signature": header})
            assert response.status_code == 400, (extension, response.text)
            assert response.json()["error"] == Reason.INVALID_PAYLOAD
        # The server's own declaration echoed back without an id is no id at all.
        echoed = {**good, "extensions": {PAYMENT_IDENTIFIER: {"info": {"required": False}}}}
        header = base64.b64encode(json.dumps(echoed).encode()).decode()
        assert httpx.get(url, headers={"payment-signature": header}).status_code == 200
    assert pid_usdc.balance_of(reader.address) == before - PRICE
