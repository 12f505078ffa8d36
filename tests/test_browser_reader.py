"""A reader in a real browser pays the example site: Debian's Chromium driven by Playwright,
a test wallet (EIP-1193, announced by EIP-6963) that forwards to a throw-away anvil, which
signs eth_sendTransaction and eth_signTypedData_v4 for its dev accounts.

The scenarios run in order on one site and one reader: the first visit opens a channel,
ten more articles and a reload pay without a wallet prompt, cleared storage recovers the
channel through the corrective 402 without paying twice, a price above the budget and a
tampered offer are refused (the latter before the wallet is asked anything), and the reader
closes and gets the rest back; the site's ledger and the chain then agree to the wei. Then
a wallet on the wrong chain is asked to switch, and an ERC-20 site is paid through a permit.
Each step's screenshot lands in .reports/browser/.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from paywall_helpers import Server, dev_key
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from micropay.devnode import anvil
from micropay.example_site import ARTICLES, ContentSite, create_site
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall, UpTo
from micropay.reader_page import SCRIPT_PATH
from micropay.tokens import TokenClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from chromium import ensure_installed

pytestmark = pytest.mark.standalone

REPORTS = Path(__file__).resolve().parent.parent / ".reports" / "browser"
PROMPTS = ("eth_requestAccounts", "eth_sendTransaction", "eth_signTypedData_v4")
PRICE = 10**13
DEPOSIT = 100 * PRICE  # room for every article the scenarios read
SLUGS = list(ARTICLES)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READER = dev_key(3)

# The wallet the page finds: every request goes to the test (window.micropayWallet, a
# Playwright binding), which answers accounts itself and forwards the rest to anvil.
PROVIDER = """
(() => {
  const provider = {
    request: ({ method, params }) => window.micropayWallet(method, params || []),
    on() {}, removeListener() {},
  };
  const info = { uuid: '5f1f2e4c-0000-4000-8000-000000000001', name: 'micropay test wallet',
    icon: 'data:image/svg+xml,<svg xmlns="http://www.w3.org/2000/svg"/>',
    rdns: 'dev.micropay.test' };
  const announce = () => window.dispatchEvent(new CustomEvent('eip6963:announceProvider',
    { detail: Object.freeze({ info, provider }) }));
  window.addEventListener('eip6963:requestProvider', announce);
  announce();
})();
"""


@dataclass
class Wallet:
    """What the page asked its wallet, and the transactions it sent."""

    w3: Any
    calls: list[str] = field(default_factory=list)
    transactions: list[str] = field(default_factory=list)

    def prompts(self) -> list[str]:
        return [method for method in self.calls if method in PROMPTS]

    chain_shown: str | None = None
    """A chain id the wallet pretends to be on until the page asks it to switch."""

    def answer(self, _source: Any, method: str, params: list[Any]) -> Any:
        self.calls.append(method)
        if method in ("eth_requestAccounts", "eth_accounts"):
            return [READER.address]
        if method == "eth_chainId" and self.chain_shown is not None:
            return self.chain_shown
        if method == "wallet_switchEthereumChain":
            self.chain_shown = None  # the reader accepts the switch
            return None
        reply = self.w3.provider.make_request(method, params)
        if "error" in reply:
            raise RuntimeError(reply["error"].get("message", str(reply["error"])))
        if method == "eth_sendTransaction":
            self.transactions.append(reply["result"])
        return reply["result"]


@dataclass
class Reading:
    site: ContentSite
    url: str
    wallet: Wallet
    browser: Browser
    pages: dict[str, Page] = field(default_factory=dict)
    reads: int = 0
    start_balance: int = 0

    def context(self) -> BrowserContext:
        """A browser profile of its own (fresh storage), with the test wallet."""
        context = self.browser.new_context()
        context.expose_binding("micropayWallet", self.wallet.answer)
        context.add_init_script(PROVIDER)
        return context


@pytest.fixture(scope="module")
def reading(tmp_path_factory) -> Iterator[Reading]:
    REPORTS.mkdir(parents=True, exist_ok=True)
    executable = ensure_installed()
    ledger = tmp_path_factory.mktemp("browser") / "ledger.db"
    with anvil() as w3:
        site = create_site(
            w3,
            site_key=dev_key(1),
            price=PRICE,
            ledger_url=f"sqlite:///{ledger}",
            min_deposit=DEPOSIT,
        )
        with Server(site.app) as server, sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(executable), headless=True, args=CHROMIUM_ARGS
            )
            try:
                state = Reading(site, server.url, Wallet(w3), browser)
                state.start_balance = w3.eth.get_balance(READER.address)
                yield state
            finally:
                browser.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(REPORTS / f"{name}.png"), full_page=True)


def settle(page: Page) -> str:
    """Wait until the script has paid or refused, and say which."""
    page.wait_for_function(
        "['paid', 'refused', 'ready'].includes(document.body.dataset.micropay)", timeout=60_000
    )
    return str(page.evaluate("document.body.dataset.micropay"))


def article_url(reading: Reading, n: int) -> str:
    return f"{reading.url}/articles/{SLUGS[n % len(SLUGS)]}"


def charged(reading: Reading) -> int:
    return sum(charge.amount for charge in reading.site.payee.book.charges())


def test_402_page_and_script_are_served_to_a_browser(reading: Reading) -> None:
    browser_ask = httpx.get(article_url(reading, 0), headers={"Accept": "text/html"})
    assert browser_ask.status_code == 402
    assert browser_ask.headers["content-type"].startswith("text/html")
    required = json.loads(base64.b64decode(browser_ask.headers["payment-required"]))
    assert required["error"] == "payment_required"
    assert (
        "0.00001 ETH" in browser_ask.text
        and "0.001 ETH" in browser_ask.text
        and "Pay with wallet" in browser_ask.text
    )
    api_ask = httpx.get(article_url(reading, 0))
    assert api_ask.status_code == 402 and api_ask.json()["error"] == "payment_required"
    script = httpx.get(reading.url + SCRIPT_PATH)
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )


def test_first_visit_opens_a_channel_and_shows_the_article(reading: Reading) -> None:
    page = reading.context().new_page()
    reading.pages["reader"] = page
    answer = page.goto(article_url(reading, 0))
    assert answer is not None and answer.status == 402
    assert settle(page) == "ready"
    shot(page, "01-402-page")
    page.click("#micropay-pay")
    assert settle(page) == "paid"
    reading.reads += 1
    assert page.locator("h1").first.inner_text() == ARTICLES[SLUGS[0]].title
    assert sorted(reading.wallet.prompts()) == sorted(PROMPTS)  # connect, key, one deposit
    assert charged(reading) == PRICE
    shot(page, "02-first-article-paid")


def test_ten_more_articles_ask_the_wallet_nothing(reading: Reading) -> None:
    page = reading.pages["reader"]
    reading.wallet.calls.clear()
    for n in range(1, 11):
        page.goto(article_url(reading, n))
        assert settle(page) == "paid", page.inner_text("#micropay-status")
        assert page.locator("h1").first.inner_text() == ARTICLES[SLUGS[n % len(SLUGS)]].title
        reading.reads += 1
    assert reading.wallet.prompts() == []
    assert charged(reading) == reading.reads * PRICE
    shot(page, "03-eleventh-article")


def test_a_reload_keeps_the_session_key(reading: Reading) -> None:
    page = reading.pages["reader"]
    reading.wallet.calls.clear()
    page.reload()
    assert settle(page) == "paid"
    reading.reads += 1
    assert reading.wallet.prompts() == []
    assert charged(reading) == reading.reads * PRICE
    shot(page, "04-after-reload")


def test_a_link_on_a_free_page_is_paid_in_place(reading: Reading) -> None:
    page = reading.pages["reader"]
    reading.wallet.calls.clear()
    page.goto(reading.url + "/")
    page.evaluate("window.stayedOnThePage = true")
    page.click(f"a[href='/articles/{SLUGS[1]}']")
    page.wait_for_function("document.body.dataset.micropay === 'paid'")
    reading.reads += 1
    assert page.evaluate("window.stayedOnThePage === true")  # paid in place: no navigation
    assert page.locator("h1").first.inner_text() == ARTICLES[SLUGS[1]].title
    assert reading.wallet.prompts() == []
    assert charged(reading) == reading.reads * PRICE
    shot(page, "04b-link-paid-in-place")


def test_cleared_storage_recovers_through_the_corrective_402(reading: Reading) -> None:
    reading.pages["reader"].context.close()
    page = reading.context().new_page()  # the same wallet, no IndexedDB: storage cleared
    reading.pages["reader"] = page
    corrections: list[str] = []

    def note(response: Any) -> None:
        if response.status == 402 and response.request.headers.get("payment-signature"):
            corrections.append(
                json.loads(base64.b64decode(response.headers["payment-required"]))["error"]
            )

    page.on("response", note)
    reading.wallet.calls.clear()
    page.goto(article_url(reading, 0))
    assert settle(page) == "ready"
    page.click("#micropay-pay")
    assert settle(page) == "paid", page.inner_text("#micropay-status")
    reading.reads += 1
    assert corrections == ["stale_voucher"]  # the site shows what it holds; one round
    assert "eth_sendTransaction" not in reading.wallet.calls  # no second channel, no deposit
    assert charged(reading) == reading.reads * PRICE  # one price for one article
    best = reading.site.payee.book.best(reading.site.payee.book.channel_ids()[0])
    assert best is not None and best.cumulative_amount == reading.reads * PRICE
    shot(page, "05-recovered-after-cleared-storage")


def test_a_price_above_the_budget_is_refused(reading: Reading) -> None:
    page = reading.pages["reader"]
    spent = reading.reads * PRICE
    budget = page.locator("#micropay-budget")
    budget.fill(str(spent + PRICE - 1))
    budget.dispatch_event("change")
    page.wait_for_function(f"document.body.dataset.budget === '{spent + PRICE - 1}'")
    reading.wallet.calls.clear()
    page.goto(article_url(reading, 1))
    assert settle(page) == "refused"
    assert "budget" in page.inner_text("#micropay-status")
    assert ARTICLES[SLUGS[1]].paragraphs[0] not in page.content()
    assert reading.wallet.prompts() == []
    assert charged(reading) == reading.reads * PRICE
    shot(page, "06-over-budget-refused")
    budget.fill(str(10**15))
    budget.dispatch_event("change")
    page.wait_for_function(f"document.body.dataset.budget === '{10**15}'")


@pytest.mark.parametrize(
    ("term", "tampered"),
    [
        ("payTo", lambda o: {**o, "payTo": dev_key(7).address}),
        (
            "contract",
            lambda o: {
                **o,
                "extra": {
                    **o["extra"],
                    "contract": dev_key(7).address,
                    "domain": {**o["extra"]["domain"], "verifyingContract": dev_key(7).address},
                },
            },
        ),
        (
            "chain",
            lambda o: {
                **o,
                "network": "eip155:1",
                "extra": {**o["extra"], "domain": {**o["extra"]["domain"], "chainId": 1}},
            },
        ),
    ],
)
def test_a_tampered_offer_is_refused_before_the_wallet_is_asked(
    reading: Reading, term: str, tampered: Any
) -> None:
    context = reading.context()
    page = context.new_page()
    url = article_url(reading, 2)

    def tamper(route: Any) -> None:
        if "text/html" not in route.request.headers.get("accept", ""):
            route.continue_()
            return
        answer = route.fetch()
        body = answer.text()
        start = body.index('id="micropay-offer">') + len('id="micropay-offer">')
        end = body.index("</script>", start)
        offer = tampered(json.loads(body[start:end]))
        route.fulfill(response=answer, body=body[:start] + json.dumps(offer) + body[end:])

    page.route(url, tamper)
    reading.wallet.calls.clear()
    page.goto(url)
    assert settle(page) == "ready"
    page.click("#micropay-pay")
    assert settle(page) == "refused"
    assert "not the one the site makes" in page.inner_text("#micropay-status")
    assert reading.wallet.calls == []  # not a read, not a prompt
    assert ARTICLES[SLUGS[2]].paragraphs[0] not in page.content()
    shot(page, f"07-tampered-{term}-refused")
    context.close()
    assert charged(reading) == reading.reads * PRICE


def test_the_reader_closes_and_gets_the_rest_back(reading: Reading) -> None:
    page = reading.pages["reader"]
    w3, payee = reading.site.w3, reading.site.payee
    page.goto(article_url(reading, 2))
    assert settle(page) == "paid"
    reading.reads += 1
    page.click("#micropay-close")
    page.wait_for_function("document.getElementById('micropay-status').dataset.kind === 'closing'")
    shot(page, "08-closing")
    site_before = w3.eth.get_balance(payee.account.address)
    claim = payee.claim_all()  # the site claims what it holds during the withdraw delay
    assert claim is not None
    claim_gas = claim["gasUsed"] * claim["effectiveGasPrice"]
    channel_id = payee.book.channel_ids()[0]
    config = payee.book.config(channel_id)
    assert config is not None
    w3.provider.make_request("evm_increaseTime", [config.withdraw_delay + 1])
    w3.provider.make_request("evm_mine", [])
    page.click("#micropay-refund")
    page.wait_for_function("document.getElementById('micropay-status').dataset.kind === 'refunded'")
    shot(page, "09-refunded")
    total = reading.reads * PRICE
    state = reading.site.channels.state(config)
    assert state.finished and state.claimed == total == charged(reading)
    assert w3.eth.get_balance(payee.account.address) - site_before == total - claim_gas
    gas = 0
    for tx in reading.wallet.transactions:
        receipt = w3.eth.get_transaction_receipt(tx)
        gas += receipt["gasUsed"] * receipt["effectiveGasPrice"]
    spent = reading.start_balance - w3.eth.get_balance(READER.address)
    assert spent == total + gas  # deposit back less what was read, to the wei


def test_a_wallet_on_another_chain_is_asked_to_switch(reading: Reading) -> None:
    """After the close: a new visit opens the payer's next channel (slot 1), once the wallet
    has switched from the chain it was on to the offer's."""
    context = reading.context()
    page = context.new_page()
    reading.wallet.calls.clear()
    reading.wallet.chain_shown = "0x1"
    page.goto(article_url(reading, 0))
    assert settle(page) == "ready"
    page.click("#micropay-pay")
    assert settle(page) == "paid", page.inner_text("#micropay-status")
    calls = reading.wallet.calls
    assert calls.index("wallet_switchEthereumChain") < calls.index("eth_requestAccounts")
    assert calls.count("eth_sendTransaction") == 1  # slot 0 is withdrawn: a new channel
    assert len(reading.site.payee.book.channel_ids()) == 2
    context.close()


def test_a_token_channel_opens_with_a_permit_signed_in_the_wallet(reading: Reading) -> None:
    """An ERC-20 site: the wallet signs an EIP-2612 permit and sends one transaction
    (depositWithPermit); later pages are paid silently, in the token."""
    w3 = reading.site.w3
    token = TokenClient.deploy(w3, dev_key(0), "Mock Token", "MOCK", 18)
    token.mint(READER.address, 10 * DEPOSIT, dev_key(0))
    site = create_site(
        w3, site_key=dev_key(5), price=PRICE, asset=token.address, min_deposit=DEPOSIT
    )
    with Server(site.app) as server:
        context = reading.context()
        page = context.new_page()
        reading.wallet.calls.clear()
        page.goto(f"{server.url}/articles/{SLUGS[0]}")
        assert settle(page) == "ready"
        assert "base units of" in page.inner_text("#micropay-terms")
        page.click("#micropay-pay")
        assert settle(page) == "paid", page.inner_text("#micropay-status")
        shot(page, "10-token-article-paid")
        signatures = reading.wallet.prompts().count("eth_signTypedData_v4")
        assert signatures == 2  # the session key, the permit
        assert reading.wallet.prompts().count("eth_sendTransaction") == 1
        reading.wallet.calls.clear()
        page.goto(f"{server.url}/articles/{SLUGS[1]}")
        assert settle(page) == "paid"
        assert reading.wallet.prompts() == []
        context.close()
    assert token.balance_of(READER.address) == 10 * DEPOSIT - DEPOSIT
    assert token.balance_of(site.channels.address) == DEPOSIT
    assert sum(charge.amount for charge in site.payee.book.charges()) == 2 * PRICE


@dataclass
class SiteReader:
    """A second site (its ledger ``book``), read by the reader in a browser profile of its
    own; ``sent`` is each paid fetch's kind and status, in order."""

    book: Any
    url: str
    page: Page
    sent: list[tuple[str, int]] = field(default_factory=list)

    def read(self, what: int | str) -> str:
        """Read article number ``what``, or the path ``what``, and say how it ended."""
        path = what if isinstance(what, str) else f"/articles/{SLUGS[what % len(SLUGS)]}"
        self.page.goto(self.url + path)
        return settle(self.page)

    def read_rewritten(self, what: int | str, paid_with: str, change: Any) -> str:
        """:meth:`read` through a hostile site: the ``PAYMENT-RESPONSE`` of a paid answer to
        a request carrying ``paid_with`` is decoded, passed to ``change`` and sent on
        re-encoded (what the site charged is left as it is)."""

        def rewrite(route: Any) -> None:
            answer = route.fetch()
            if paid_with not in route.request.headers or answer.status != 200:
                route.fulfill(response=answer)
                return
            said = json.loads(base64.b64decode(answer.headers["payment-response"]))
            change(said)
            forged = base64.b64encode(json.dumps(said).encode()).decode()
            route.fulfill(response=answer, headers={**answer.headers, "payment-response": forged})

        self.page.route(f"{self.url}/**", rewrite)
        try:
            return self.read(what)
        finally:
            self.page.unroute(f"{self.url}/**", rewrite)

    def set_budget(self, value: int) -> None:
        self.page.locator("#micropay-budget").fill(str(value))
        self.page.locator("#micropay-budget").dispatch_event("change")
        self.page.wait_for_function(f"document.body.dataset.budget === '{value}'")

    def totals(self) -> tuple[int, int]:
        """The site's best voucher and charged total for the reader's one channel."""
        [channel_id] = self.book.channel_ids()
        held = self.book.held(channel_id)
        return held.voucher.cumulative_amount, held.charged

    def watch(self) -> SiteReader:
        """Note each paid fetch's kind (voucher or credit) and status in :attr:`sent`."""

        def note(response: Any) -> None:
            headers = response.request.headers
            if "payment-credit" in headers:
                self.sent.append(("credit", response.status))
            elif "payment-signature" in headers:
                self.sent.append(("voucher", response.status))

        self.page.on("response", note)
        return self


PREPAY = 4
TAMPER_TOKEN = """async () => {
  const db = await new Promise((ok, no) => {
    const r = indexedDB.open('micropay', 1);
    r.onsuccess = () => ok(r.result);
    r.onerror = () => no(r.error);
  });
  const all = await new Promise((ok) => {
    const r = db.transaction('channels').objectStore('channels').getAll();
    r.onsuccess = () => ok(r.result);
  });
  const record = all.find((c) => c.credit);
  const token = record.credit.token;  // a character of its tag changed: not the site's tag
  record.credit.token = token.slice(0, 120) + (token[120] === 'A' ? 'B' : 'A') + token.slice(121);
  await new Promise((ok, no) => {
    const tx = db.transaction('channels', 'readwrite');
    tx.objectStore('channels').put(record); tx.oncomplete = ok; tx.onerror = () => no(tx.error);
  });
  db.close();
}"""


@contextmanager
def second_site(
    reading: Reading, ledger: Path, key: int, **options: Any
) -> Iterator[tuple[SiteReader, ContentSite]]:
    """A second example site (``create_site`` with ``options``, paid to dev account ``key``,
    its SQLite ledger at ``ledger``), served on loopback and read in a browser profile of
    its own."""
    site = create_site(
        reading.site.w3,
        site_key=dev_key(key),
        price=PRICE,
        ledger_url=f"sqlite:///{ledger}",
        min_deposit=DEPOSIT,
        **options,
    )
    with Server(site.app) as server:
        context = reading.context()
        try:
            yield SiteReader(site.payee.book, server.url, context.new_page()).watch(), site
        finally:
            context.close()


@pytest.fixture(scope="module")
def credit(reading: Reading, tmp_path_factory: Any) -> Iterator[SiteReader]:
    ledger = tmp_path_factory.mktemp("credit") / "ledger.db"
    with second_site(reading, ledger, 6, prepay=PREPAY) as (reader, _):
        yield reader


def test_a_credit_site_is_paid_a_voucher_a_read_until_the_reader_prepays(
    reading: Reading, credit: SiteReader
) -> None:
    """Credit is the reader's choice (off until set): the page offers it, each read is paid
    with its own voucher, one price above the site's best; set, one voucher prepays."""
    page = credit.page
    page.goto(f"{credit.url}/articles/{SLUGS[0]}")
    assert settle(page) == "ready"
    assert f"up to {PREPAY} reads per signature" in page.inner_text("#micropay-terms")
    assert page.input_value("#micropay-prepay") == "0"
    page.click("#micropay-pay")
    assert settle(page) == "paid", page.inner_text("#micropay-status")
    assert credit.read(1) == "paid"
    assert credit.sent == [("voucher", 200)] * 2
    assert credit.totals() == (2 * PRICE, 2 * PRICE)
    prepay = page.locator("#micropay-prepay")
    prepay.fill(str(PREPAY + 10))  # above what the site sells: the site's most
    prepay.dispatch_event("change")
    page.wait_for_function(f"document.body.dataset.prepay === '{PREPAY}'")
    reading.wallet.calls.clear()
    assert credit.read(2) == "paid"
    assert f"Prepaid for {PREPAY - 1} more" in page.inner_text("#micropay-status")
    # Its best ceiling (2 prices) plus PREPAY prices, one of them charged now.
    assert credit.totals() == ((2 + PREPAY) * PRICE, 3 * PRICE)
    assert reading.wallet.prompts() == []
    shot(page, "11-credit-bought")


def test_prepaid_reads_send_the_token_and_sign_nothing(
    reading: Reading, credit: SiteReader
) -> None:
    receipts = len(credit.book.charges())
    credit.sent.clear()
    for n in range(3, 3 + PREPAY - 1):
        assert credit.read(n) == "paid", credit.page.inner_text("#micropay-status")
        assert credit.page.locator("h1").first.inner_text() == ARTICLES[SLUGS[n % len(SLUGS)]].title
    assert credit.sent == [("credit", 200)] * (PREPAY - 1)
    assert credit.totals() == ((2 + PREPAY) * PRICE, (2 + PREPAY) * PRICE)  # all of it charged
    assert len(credit.book.charges()) == receipts  # statements: nothing signed
    # Spent: the next read pays a new voucher, PREPAY prices above the ceiling.
    assert credit.read(10) == "paid"
    assert credit.sent[-1] == ("voucher", 200)
    assert credit.totals() == ((2 + 2 * PREPAY) * PRICE, (3 + PREPAY) * PRICE)
    assert reading.wallet.prompts() == []
    shot(credit.page, "12-credit-spent-then-renewed")


def test_a_token_the_site_refuses_is_dropped_and_one_voucher_pays(credit: SiteReader) -> None:
    """A token the site did not issue (here: its tag changed in storage) is refused; the
    browser pays the read with a voucher instead, and the credit left under the old ceiling
    carries over into it: one price charged for one read."""
    credit.page.evaluate(TAMPER_TOKEN)
    ceiling, charged = credit.totals()
    credit.sent.clear()
    assert credit.read(11) == "paid", credit.page.inner_text("#micropay-status")
    assert credit.sent == [("credit", 402), ("voucher", 200)]
    assert credit.totals() == (ceiling + PREPAY * PRICE, charged + PRICE)
    assert credit.read(12) == "paid"  # the new token
    assert credit.sent[-1] == ("credit", 200)
    assert credit.totals() == (ceiling + PREPAY * PRICE, charged + 2 * PRICE)


def test_a_statement_that_charges_more_than_the_price_is_refused(credit: SiteReader) -> None:
    """A site answering a credit read with a statement of two prices (rewritten in flight):
    the browser shows nothing of the page and says why; the credit is kept for a read the
    site states honestly."""
    page = credit.page

    def overcharge(statement: dict[str, Any]) -> None:
        statement["amount"] = str(2 * PRICE)
        statement["cumulativeAmount"] = str(int(statement["cumulativeAmount"]) + PRICE)

    assert credit.read_rewritten(13, "payment-credit", overcharge) == "refused"
    assert "receipt that does not match the credit" in page.inner_text("#micropay-status")
    assert ARTICLES[SLUGS[13 % len(SLUGS)]].paragraphs[0] not in page.content()
    shot(page, "13-overcharging-statement-refused")


def test_the_budget_caps_credit_and_what_a_voucher_prepays(credit: SiteReader) -> None:
    page = credit.page
    ceiling, charged = credit.totals()
    # What the browser counts as spent here is what the site charged: the read it refused
    # above was charged, and the next statement counts it (credit charged unseen).
    credit.set_budget(charged + PRICE)  # one more read
    assert credit.read(13) == "paid"
    credit.sent.clear()
    assert credit.read(14) == "refused"
    assert "budget" in page.inner_text("#micropay-status")
    assert credit.sent == []  # refused here: neither the token nor a voucher went out
    assert credit.totals() == (ceiling, charged + PRICE)
    # Room for the credit left and two prices more: the credit is spent first, then the
    # next voucher prepays two reads, not PREPAY.
    left = (ceiling - charged - PRICE) // PRICE
    credit.set_budget(charged + PRICE + left * PRICE + 2 * PRICE)
    for n in range(left):
        assert credit.read(15 + n) == "paid"
    assert credit.sent == [("credit", 200)] * left
    assert credit.read(20) == "paid"
    assert credit.sent[-1] == ("voucher", 200)
    assert credit.totals() == (ceiling + 2 * PRICE, ceiling + PRICE)
    shot(page, "14-credit-within-budget")
    # With the token refused, the credit left under the ceiling counts against the budget
    # with the next voucher's price: a budget of one price more is not enough.
    page.evaluate(TAMPER_TOKEN)
    ceiling, charged = credit.totals()
    credit.set_budget(charged + PRICE)
    credit.sent.clear()
    assert credit.read(21) == "refused"
    assert credit.sent == [("credit", 402)]
    assert "budget" in page.inner_text("#micropay-status")
    assert credit.totals() == (ceiling, charged)


def test_a_receipt_counting_more_unseen_credit_than_there_was_is_refused(
    credit: SiteReader,
) -> None:
    """A voucher's receipt may count credit the site charged without the browser seeing it,
    up to what was prepaid under the old ceiling (one price here: its token was refused),
    but no more: a receipt claiming that and one price more is refused and nothing shown.
    The next read resynchronises through the site's corrective 402 and pays one price."""
    page = credit.page
    credit.set_budget(10**15)
    ceiling, charged = credit.totals()
    assert ceiling - charged == PRICE

    def inflate(receipt: dict[str, Any]) -> None:
        receipt["cumulativeAmount"] = str(int(receipt["cumulativeAmount"]) + 2 * PRICE)

    assert credit.read_rewritten(22, "payment-signature", inflate) == "refused"
    assert "receipt that does not match the voucher" in page.inner_text("#micropay-status")
    assert credit.totals() == (ceiling + PREPAY * PRICE, charged + PRICE)  # the site charged
    credit.sent.clear()
    assert credit.read(23) == "paid", page.inner_text("#micropay-status")
    assert credit.sent == [("voucher", 402), ("voucher", 200)]  # stale, then the next one
    assert credit.totals()[1] == charged + 2 * PRICE


MAXIMUM = 5 * PRICE


async def search(request: Request) -> HTMLResponse:
    """A metered page: ``/search/{used}`` charges ``used`` prices, at most MAXIMUM."""
    used = int(request.path_params["used"])
    request.state.payment.charge(used * PRICE)
    return HTMLResponse(f"<!doctype html><title>search</title><h1>used {used}</h1>")


async def page_of(request: Request) -> HTMLResponse:
    slug = request.path_params["slug"]
    return HTMLResponse(f"<!doctype html><title>{slug}</title><h1>article {slug}</h1>")


@pytest.fixture(scope="module")
def metered(reading: Reading, tmp_path_factory: Any) -> Iterator[tuple[SiteReader, Paywall]]:
    """A site with a metered route (up to MAXIMUM) and a fixed one (PRICE) on one channel."""
    ledger = Ledger.open(
        f"sqlite:///{tmp_path_factory.mktemp('metered') / 'ledger.db'}",
        reading.site.channels.domain,
    )
    payee = Payee(reading.site.channels, dev_key(8), book=ledger, confirmations=0)
    app = Starlette(routes=[Route("/search/{used}", search), Route("/articles/{slug}", page_of)])
    paywall = Paywall(
        app,
        payee=payee,
        prices={"GET /search/{used}": UpTo(MAXIMUM), "GET /articles/{slug}": PRICE},
        min_deposit=DEPOSIT,
    )
    with Server(paywall) as server:
        context = reading.context()
        try:
            yield SiteReader(ledger, server.url, context.new_page()).watch(), paywall
        finally:
            context.close()
            ledger.close()


def test_a_metered_read_pays_what_it_used_and_a_voucher_goes_one_above_the_ceiling(
    metered: tuple[SiteReader, Paywall],
) -> None:
    """Each metered voucher authorises the maximum above the charged total; the receipt says
    what was used. When that would not rise above the site's best voucher (a read that used
    nothing), the next voucher is one above it, on the metered route and the fixed one."""
    site, _ = metered
    site.page.goto(f"{site.url}/search/2")
    assert settle(site.page) == "ready"
    site.page.click("#micropay-pay")
    assert settle(site.page) == "paid", site.page.inner_text("#micropay-status")
    assert site.page.locator("h1").first.inner_text() == "used 2"
    assert site.totals() == (MAXIMUM, 2 * PRICE)
    assert site.read("/search/0") == "paid"
    assert site.totals() == (2 * PRICE + MAXIMUM, 2 * PRICE)
    assert site.read("/search/1") == "paid"  # 2 + 5 prices is the ceiling already: one above
    assert site.totals() == (2 * PRICE + MAXIMUM + 1, 3 * PRICE)
    assert site.read("/articles/a") == "paid"  # fixed: 4 prices would not rise above it either
    assert site.totals() == (2 * PRICE + MAXIMUM + 2, 4 * PRICE)
    assert site.sent == [("voucher", 200)] * 4  # no corrective round, nothing refused
    shot(site.page, "15-metered-and-one-above")


def test_a_refund_shows_in_the_next_receipt_and_is_not_paid_again(
    metered: tuple[SiteReader, Paywall],
) -> None:
    site, paywall = metered
    [channel_id] = site.book.channel_ids()
    ceiling, charged = site.totals()
    with ThreadPoolExecutor(1) as pool:  # this thread's event loop is Playwright's
        pending = pool.submit(asyncio.run, paywall.refund(channel_id, PRICE, "a wrong answer"))
        refund = pending.result(timeout=30)
    assert (refund.charged, refund.refunded) == (charged - PRICE, PRICE)
    site.sent.clear()
    assert site.read("/articles/b") == "paid", site.page.inner_text("#micropay-status")
    # One price on top of the refunded total, under a voucher one above the ceiling: the
    # receipt reports the refund and the browser's charged total follows it.
    assert site.totals() == (ceiling + 1, charged)
    assert site.read("/search/5") == "paid"
    assert site.totals() == (charged + MAXIMUM, charged + MAXIMUM)
    assert site.sent == [("voucher", 200)] * 2


def test_a_metered_receipt_above_its_maximum_is_refused(
    metered: tuple[SiteReader, Paywall],
) -> None:
    """The charge above the maximum is refused even where the charged total adds up (here
    with as much more said to be refunded): it is what the reader's budget counts."""
    site, _ = metered

    def overcharge(receipt: dict[str, Any]) -> None:
        receipt["amount"] = str(int(receipt["amount"]) + MAXIMUM)
        receipt["refunded"] = str(int(receipt.get("refunded", "0")) + MAXIMUM)

    assert site.read_rewritten("/search/1", "payment-signature", overcharge) == "refused"
    assert "receipt that does not match the voucher" in site.page.inner_text("#micropay-status")
    assert "used 1" not in site.page.content()


def test_rebuilding_the_browser_client_gives_the_shipped_bytes() -> None:
    """micropay/web/micropay.js is what tools/build_web.py makes from web/ and the pinned
    npm packages: nobody edited the shipped file, and nobody forgot to rebuild it."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "tools/build_web.py", "--check"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout
