"""Two paywall processes (two Ledger objects) on one ledger: a voucher one of them took never
pays again on the other.

docs/protocol.md ("Charged totals, metered routes and refunds"): "Replays: a voucher the site
took never pays again, as the next is always above it." The paywall keeps, per channel, what
it last stored itself (``Paywall._stored``) and lets a voucher of exactly *its* remembered
charged total plus the price through without reading the ledger. The ledger's write is a
compare-and-swap on the charged total only (``_ACCEPT_OVER``: ``WHERE v.charged_amount = ?``),
and now on the best ceiling too. Whenever another process moves the ceiling up while the
charged total ends where it was (a refund after a charge, or a zero metered charge), a replay
of the voucher that other process took matched the stale cache and a compare-and-swap on the
charged total alone, and was charged and served again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from paywall_helpers import chain, shared_ledger
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from test_paywall import PRICE, Reader, get, make_site

from micropay.payee import Payee
from micropay.paywall import Paywall, UpTo

pytestmark = pytest.mark.standalone


@pytest.fixture(scope="module")
def node() -> Iterator:
    with chain() as c:
        yield c


def test_a_voucher_taken_on_one_process_and_refunded_never_pays_again_on_another(node, tmp_path):
    """Two worker processes (two Ledger objects) on one ledger file.

    1. The reader pays PRICE on ``first`` (first remembers charged = ceiling = PRICE).
    2. The reader pays 2*PRICE on ``second``: ledger charged = ceiling = 2*PRICE.
    3. The site refunds PRICE (on the second process): ledger charged PRICE, ceiling 2*PRICE.
    4. Anyone who saw the 2*PRICE voucher on the wire replays it to ``first``. The protocol's
       next voucher is max(PRICE + PRICE, 2*PRICE + 1) = 2*PRICE + 1, so the replay must be
       refused; ``first`` instead prices it over its stale memory (charged PRICE), the
       compare-and-swap over PRICE holds, and the replayed voucher is charged and served a
       second time, silently taking back the refund.
    """
    reader = Reader(node)
    channel_id = reader.payer.config.channel_id
    with shared_ledger(node.channels.domain, tmp_path / "shared.db") as (one, two):
        first, second = make_site(node, book=one), make_site(node, book=two)
        assert get(first.app, "/articles/a", reader.header(PRICE)).status_code == 200
        paid = reader.header(2 * PRICE)
        assert get(second.app, "/articles/b", paid).status_code == 200
        second.payee.refund(channel_id, PRICE, "goodwill")
        assert one.held(channel_id).charged == PRICE
        assert one.held(channel_id).ceiling == 2 * PRICE

        replayed = get(first.app, "/articles/c", paid)  # the attacker's replay

        charges = [c.cumulative_amount for c in one.charges()]
        assert replayed.status_code == 402, (replayed.status_code, replayed.text, charges)
        assert "slug" not in replayed.text
        assert one.held(channel_id).charged == PRICE  # the refund stands
        assert charges == [PRICE, 2 * PRICE]  # the 2*PRICE voucher was charged once


async def search(request: Request) -> JSONResponse:
    request.state.payment.charge(int(request.query_params.get("used", "0")))
    return JSONResponse({"served": True})


def metered_site(node, book):
    app = Starlette(routes=[Route("/search", search)])
    payee = Payee(node.channels, node.site, book=book)
    app.add_middleware(Paywall, payee=payee, prices={"GET /search": UpTo(PRICE)})
    return app


def test_a_metered_voucher_charged_zero_on_one_process_never_pays_again_on_another(node, tmp_path):
    """Same hole without a refund: a metered route ("up to PRICE") on two processes.

    1. The reader pays on ``first`` and uses PRICE: charged = ceiling = PRICE (first remembers).
    2. The reader pays V = 2*PRICE on ``second``, whose handler charges 0: ledger charged PRICE,
       ceiling 2*PRICE. V is spent: the next voucher is max(2*PRICE, 2*PRICE + 1).
    3. A replay of V on ``first`` matches first's stale memory (PRICE + PRICE) and the
       compare-and-swap (charged still PRICE): it is served and charged up to PRICE again.
    """
    reader = Reader(node, account_index=1)
    channel_id = reader.payer.config.channel_id
    with shared_ledger(node.channels.domain, tmp_path / "metered.db") as (one, two):
        first, second = metered_site(node, one), metered_site(node, two)
        assert get(first, f"/search?used={PRICE}", reader.header(PRICE)).status_code == 200
        voucher = reader.header(2 * PRICE)
        assert get(second, "/search?used=0", voucher).status_code == 200
        assert (one.held(channel_id).charged, one.held(channel_id).ceiling) == (PRICE, 2 * PRICE)

        replayed = get(first, f"/search?used={PRICE}", voucher)  # the replay

        assert replayed.status_code == 402, (replayed.status_code, replayed.text)
        assert "served" not in replayed.text
        assert one.held(channel_id).charged == PRICE
        assert [c.cumulative_amount for c in one.charges()] == [PRICE, PRICE]
