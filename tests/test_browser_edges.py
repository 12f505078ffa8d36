"""The browser client (web/micropay.js) at its edges, in real Chromium: a hostile site's
corrective 402 that echoes this request's own voucher, an answer lost in flight, two tabs
paying at once, and a deposit the site takes back under the reader's credit.

Uses the fixtures and helpers of tests/test_browser_reader.py (anvil, the test wallet,
SiteReader): each test gets a site of its own and a fresh browser profile.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from test_browser_reader import (  # noqa: F401  (reading: the module's fixture)
    ARTICLES,
    DEPOSIT,
    PRICE,
    SLUGS,
    Reading,
    SiteReader,
    reading,
    second_site,
    settle,
)

pytestmark = pytest.mark.standalone

SPENT = """async () => {
  const db = await new Promise((ok, no) => {
    const r = indexedDB.open('micropay', 1);
    r.onsuccess = () => ok(r.result);
    r.onerror = () => no(r.error);
  });
  const all = await new Promise((ok) => {
    const r = db.transaction('sites').objectStore('sites').getAll();
    r.onsuccess = () => ok(r.result);
  });
  db.close();
  return all.map((s) => s.spent.toString());
}"""


def b64(obj: Any) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def unb64(value: str) -> Any:
    return json.loads(base64.b64decode(value))


@pytest.fixture()
def plain(reading: Reading, tmp_path: Any) -> Iterator[SiteReader]:  # noqa: F811
    """A site of its own that sells no credit, read in a fresh browser profile."""
    with second_site(reading, tmp_path / "ledger.db", 2) as (reader, _):
        yield reader


def test_a_corrective_402_echoing_this_requests_voucher_one_wei_under_is_not_adopted(
    plain: SiteReader,
) -> None:
    """The hostile site: after one honest read, it answers every voucher with a corrective
    402 (``stale_voucher``) whose view is the very voucher the browser just sent (signed by
    its session key, so it checks) but says the charged total is one wei below it.

    What a voucher of this request adds above the request's floor was never served: the
    adopted charged total is capped there (as HttpPayer._resync_charged does), so each round
    signs one wei above the site's best, not a price more. Before, the view was adopted
    unless its charged total was the whole voucher: four rounds took four prices that the
    site could claim, for nothing shown."""
    page = plain.page
    page.goto(f"{plain.url}/articles/{SLUGS[0]}")
    assert settle(page) == "ready"
    page.click("#micropay-pay")
    assert settle(page) == "paid", page.inner_text("#micropay-status")
    [channel_id] = plain.book.channel_ids()
    channel_hex = channel_id if isinstance(channel_id, str) else "0x" + bytes(channel_id).hex()
    assert page.evaluate(SPENT) == [str(PRICE)]
    acknowledged = PRICE  # one read, charged and seen

    signed: list[int] = []

    def hostile(route: Any) -> None:
        sent = route.request.headers.get("payment-signature")
        if sent is None:
            route.continue_()  # the 402 page and the offer: the real site's
            return
        payload = unb64(sent)["payload"]
        total = int(payload["cumulativeAmount"])
        signed.append(total)
        view = {
            "channelId": channel_hex,
            "cumulativeAmount": str(total),
            "signature": payload["signature"],
            "deposited": str(DEPOSIT),
            "charged": str(total - 1),  # one wei under: "already spent, bar a wei"
            "refunded": "0",
        }
        required = {
            "x402Version": 2,
            "error": "stale_voucher",
            "accepts": [],
            "extensions": {"channel": view},
        }
        route.fulfill(
            status=402,
            headers={"PAYMENT-REQUIRED": b64(required), "Content-Type": "application/json"},
            body="{}",
        )

    page.route(f"{plain.url}/articles/**", hostile)
    try:
        outcome = plain.read(1)
    finally:
        page.unroute(f"{plain.url}/articles/**", hostile)
    status = page.inner_text("#micropay-status")
    assert outcome == "refused", status
    assert ARTICLES[SLUGS[1]].paragraphs[0] not in page.content()  # nothing was served
    # One unserved read: at most one price (and a wei or so) authorised above what was seen.
    assert signed, "no voucher went out"
    assert max(signed) - acknowledged < 2 * PRICE, (
        f"one unserved read made the browser sign {len(signed)} vouchers up to "
        f"{(max(signed) - acknowledged) / PRICE:.4f} prices above the acknowledged total; "
        f"it now counts {page.evaluate(SPENT)} as spent; status: {status}"
    )


@pytest.fixture()
def seller(selling: tuple[SiteReader, Any]) -> SiteReader:
    """A site of its own selling credit (k = 4), read in a fresh browser profile."""
    return selling[0]


@pytest.fixture()
def selling(reading: Reading, tmp_path: Any) -> Iterator[tuple[SiteReader, Any]]:  # noqa: F811
    """:func:`seller`, and the site (its payee refunds on chain)."""
    with second_site(reading, tmp_path / "ledger.db", 4, prepay=4) as pair:
        yield pair


def test_credit_the_deposit_no_longer_covers_is_dropped_and_nothing_above_it_is_signed(
    selling: tuple[SiteReader, Any],
) -> None:
    """The site returns on chain all of the deposit it has not charged, under the reader's
    prepaid credit. The token is refused (``insufficient_deposit``); the browser drops it,
    reads the deposit from the chain (not from the site) and signs no voucher above it: the
    reader is told the deposit is spent, and the next read sends nothing."""
    seller, site = selling
    page = seller.page
    page.goto(f"{seller.url}/articles/{SLUGS[0]}")
    assert settle(page) == "ready"
    prepay = page.locator("#micropay-prepay")
    prepay.fill("4")
    prepay.dispatch_event("change")
    page.wait_for_function("document.body.dataset.prepay === '4'")
    page.click("#micropay-pay")
    assert settle(page) == "paid", page.inner_text("#micropay-status")
    ceiling, charged = seller.totals()
    assert (ceiling, charged) == (4 * PRICE, PRICE)  # three reads of credit left
    [channel_id] = seller.book.channel_ids()
    deposited = site.payee.client.state(channel_id).deposited
    site.payee.refund_on_chain(channel_id, deposited - charged)
    seller.sent.clear()
    assert seller.read(1) == "refused"
    assert "deposit is spent" in page.inner_text("#micropay-status")
    assert seller.sent == [("credit", 402)]  # the token, refused; no voucher above the deposit
    assert seller.read(2) == "refused"
    assert seller.sent == [("credit", 402)]  # the token was dropped: nothing more sent
    assert seller.totals() == (4 * PRICE, PRICE)


def test_after_a_lost_answer_the_next_larger_voucher_s_honest_receipt_is_accepted(
    seller: SiteReader,
) -> None:
    """No hostile site here, only a lost answer: a read's voucher reaches the (honest) site,
    which charges it, but the answer never reaches the page (dropped in flight, as by a
    reload mid-payment or a network error). The reader then sets "Reads to prepay" to 4
    and reads again.

    The next voucher is 3 prices above the one the site holds, which it accepts as prepaid
    credit and answers honestly: one price charged on top of the lost read's. A charge the
    browser did not see is accepted up to the highest voucher it had signed before this
    request (the site may hold it), not only up to the ceiling it saw: before, the honest
    receipt was refused and the paid page not shown."""
    page = seller.page
    page.goto(f"{seller.url}/articles/{SLUGS[0]}")
    assert settle(page) == "ready"
    page.click("#micropay-pay")
    assert settle(page) == "paid", page.inner_text("#micropay-status")
    assert seller.totals() == (PRICE, PRICE)

    def lose_answer(route: Any) -> None:
        if "payment-signature" not in route.request.headers:
            route.continue_()
            return
        route.fetch()  # the site gets the voucher and charges it
        route.abort()  # the answer is lost on its way to the page

    page.route(f"{seller.url}/articles/**", lose_answer)
    try:
        assert seller.read(1) == "refused"
    finally:
        page.unroute(f"{seller.url}/articles/**", lose_answer)
    assert seller.totals() == (2 * PRICE, 2 * PRICE)  # charged, never seen

    prepay = page.locator("#micropay-prepay")
    prepay.fill("4")
    prepay.dispatch_event("change")
    page.wait_for_function("document.body.dataset.prepay === '4'")
    seller.sent.clear()
    outcome = seller.read(2)
    status = page.inner_text("#micropay-status")
    ceiling, charged = seller.totals()
    assert charged == 3 * PRICE  # the site charged this read too
    assert outcome == "paid", (
        f"the site charged the read (ceiling {ceiling // PRICE}, charged {charged // PRICE} "
        f"prices; sent {seller.sent}) but the browser refused its honest receipt: {status}"
    )
    assert ARTICLES[SLUGS[2]].paragraphs[0] in page.content()


def _pump(page: Any, until: Any, what: str) -> None:
    for _ in range(400):
        if until():
            return
        page.wait_for_timeout(25)
    raise AssertionError(f"timed out waiting for {what}")


HOLD_SITES = """() => new Promise((started) => {
  // Another tab of the reader's busy with the sites store (a readwrite transaction that
  // lasts until window.releaseSites is set): reads and writes of it queue meanwhile, and
  // IndexedDB runs them in the order they were asked for.
  const open = indexedDB.open('micropay', 1);
  open.onsuccess = () => {
    const db = open.result;
    const store = db.transaction('sites', 'readwrite').objectStore('sites');
    const spin = () => { if (window.releaseSites) { db.close(); return; }
                         store.count().onsuccess = spin; };
    store.count().onsuccess = () => { started(); spin(); };
  };
})"""


def test_two_tabs_paying_at_once_count_every_price_against_the_budget(
    reading: Reading,  # noqa: F811
    plain: SiteReader,
) -> None:
    """Two tabs of one browser read the site at once (no hostile site). Their payments are
    serialised by a Web Lock, but pay() saves the agreed price and the budget field's value
    *before* taking it. It used to read the site's record and put it back whole: when the
    other tab's payment saved its new spent total in between, the old total went back, a
    price paid was forgotten and the budget let one read too many through. Every write of
    the record is now one read-and-write transaction of the fields it changes.

    The interleaving is made deterministic, not changed: tab A's paid request and tab B's
    offer check (the fetch just before pay() reads the site's record) are held in flight,
    and a third tab keeps the sites store busy for a moment, so that tab B's read of the
    site's record and tab A's save of it queue in that order (as they can on any slow
    disk): B reads, A saves, B writes back the old total."""
    a = plain.page
    a.goto(f"{plain.url}/articles/{SLUGS[0]}")
    assert settle(a) == "ready"
    a.click("#micropay-pay")
    assert settle(a) == "paid", a.inner_text("#micropay-status")
    plain.set_budget(3 * PRICE)  # this read and two more
    b = a.context.new_page()
    c = a.context.new_page()
    c.goto(plain.url + "/")  # a free page of the site: same origin, same storage

    held_a: list[Any] = []
    held_b: list[Any] = []

    def hold_paid(route: Any) -> None:
        if "payment-signature" in route.request.headers:
            held_a.append(route)
        else:
            route.continue_()

    def hold_offer(route: Any) -> None:
        if route.request.headers.get("accept") == "application/json":
            held_b.append(route)
        else:
            route.continue_()

    a.route(f"{plain.url}/articles/**", hold_paid)
    b.route(f"{plain.url}/articles/**", hold_offer)
    a.evaluate(f"location.href = {json.dumps(plain.url + '/articles/' + SLUGS[1])}")
    _pump(a, lambda: held_a, "tab A's paid request")  # tab A is inside the lock
    b.evaluate(f"location.href = {json.dumps(plain.url + '/articles/' + SLUGS[2])}")
    _pump(b, lambda: held_b, "tab B's offer check")
    paid_answer = held_a[0].fetch()  # the site charges tab A's voucher
    offer_answer = held_b[0].fetch()
    c.evaluate(HOLD_SITES)
    held_b[0].fulfill(response=offer_answer)
    b.wait_for_timeout(500)  # tab B's read of the site's record is queued
    held_a[0].fulfill(response=paid_answer)
    a.wait_for_timeout(500)  # tab A checked the receipt; its save of the site is queued
    c.evaluate("window.releaseSites = true")  # B reads, A saves, B writes back the old total
    a.unroute(f"{plain.url}/articles/**", hold_paid)
    b.unroute(f"{plain.url}/articles/**", hold_offer)
    assert settle(a) == "paid", a.inner_text("#micropay-status")
    assert settle(b) == "paid", b.inner_text("#micropay-status")
    charged = sum(charge.amount for charge in plain.book.charges())
    assert charged == 3 * PRICE
    spent = [int(s) for s in a.evaluate(SPENT)]
    # The budget is spent: a fourth read must be refused.
    fourth = plain.read(3)
    charged_after = sum(charge.amount for charge in plain.book.charges())
    assert spent == [charged] and fourth == "refused", (
        f"the site charged {charged // PRICE} prices, the browser counts {spent[0] / PRICE} "
        f"as spent; a fourth read under a budget of 3 prices was {fourth}, the site has now "
        f"charged {charged_after // PRICE} prices"
    )
