"""The reader's side in a browser: the 402 page a priced route shows a browser, and the
script it pays with (``micropay/web/micropay.js``, built by tools/build_web.py).

A browser that asks for a priced page (``Accept: text/html``, no payment header) cannot act
on a JSON body; the paywall answers it with this page instead, still a 402 and still
carrying ``PAYMENT-REQUIRED``. The page states the terms (site, price, deposit, withdraw
delay, network, contract, payee), holds the offer as JSON for the script and has a "pay with
wallet" button. The script is served by the paywall at :data:`SCRIPT_PATH`, unpriced, from
the Python package: no CDN, nothing fetched at run time.

Everything on the page that comes from the site's configuration is HTML-escaped, and the
offer's JSON escapes ``<``, ``>`` and ``&`` so no value can close its ``<script>`` element.
"""

from __future__ import annotations

import html
import json
from functools import cache
from importlib import resources
from typing import Final
from urllib.parse import urlsplit

from micropay._x402 import Offer
from micropay.vouchers import ZERO_ADDRESS

__all__ = ["SCRIPT_PATH", "reader_page", "script", "wants_html"]

SCRIPT_PATH: Final = "/.well-known/micropay/micropay.js"
_KNOWN_CHAINS: Final = {
    1: "Ethereum",
    10: "OP Mainnet",
    8453: "Base",
    84532: "Base Sepolia",
    11155111: "Sepolia",
    31337: "local dev chain",
}


@cache
def script() -> bytes:
    """The browser client's bytes, as shipped in the package."""
    return resources.files("micropay").joinpath("web/micropay.js").read_bytes()


def wants_html(accept: bytes | None) -> bool:
    """Did a browser ask (its navigations send ``Accept: text/html,...``)? API clients send
    ``*/*`` or ``application/json`` and keep getting the JSON body."""
    return accept is not None and b"text/html" in accept.lower()


def _amount(value: int, asset: str) -> str:
    if asset != ZERO_ADDRESS:
        return f"{value} base units of {asset}"
    whole, fraction = divmod(value, 10**18)
    decimals = f"{fraction:018d}".rstrip("0")
    return f"{whole}{'.' + decimals if decimals else ''} ETH ({value} wei)"


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def _script_json(value: object) -> str:
    """JSON safe inside ``<script type="application/json">``."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def reader_page(offer: Offer, url: str, description: str, root_path: str = "") -> bytes:
    """The 402 page for one priced resource, offered in ``channel``."""
    site = urlsplit(url).netloc or url
    chain = offer.domain.chain_id
    network = f"{offer.network} ({_KNOWN_CHAINS.get(chain, 'chain ' + str(chain))})"
    rows = [
        ("Site", site),
        ("What", description),
        ("Price", _amount(offer.price, offer.asset)),
        ("Deposit asked", _amount(offer.min_deposit, offer.asset)),
        ("Withdraw delay", _duration(offer.min_withdraw_delay)),
        ("Network", network),
        ("Contract", offer.contract),
        ("Paid to", offer.pay_to),
    ]
    prepay = ""
    if offer.prepay:
        rows.append(("Prepaid credit", f"up to {offer.prepay} reads per signature, if you choose"))
        prepay = (
            "<label>Reads to prepay with each signature (0: one at a time, up to "
            f'{offer.prepay}): <input id="micropay-prepay" inputmode="numeric" size="5"></label>'
        )
    terms = "".join(
        f"<dt>{html.escape(name)}</dt><dd data-term='{html.escape(name.lower())}'>"
        f"{html.escape(value)}</dd>"
        for name, value in rows
    )
    e = html.escape
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Payment required: {e(description)}</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 44rem; margin: 2rem auto;
       padding: 0 1rem; color: #1d1d1f; }}
dl {{ display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }}
dt {{ font-weight: 600; }} dd {{ margin: 0; overflow-wrap: anywhere; }}
aside {{ border: 1px solid #c8c8cc; border-radius: .5rem; padding: .75rem 1rem;
        margin: 1rem 0; background: #f6f6f8; }}
button {{ font: inherit; padding: .4rem 1rem; margin-right: .5rem; }}
#micropay-status[data-kind=refused] {{ color: #b00020; }}
#micropay-status[data-kind=paid] {{ color: #0a6b2c; }}
</style>
<script type="module" src="{e(root_path + SCRIPT_PATH)}"></script>
</head><body data-micropay="loading">
<main id="micropay-content">
<h1>This page is paid per read</h1>
<p>{e(site)} asks {e(_amount(offer.price, offer.asset))} for it, paid from a payment channel:
your wallet deposits once, then each page is paid with a signature and no further prompt.
What you do not spend comes back to you when you close the channel.</p>
<dl id="micropay-terms">{terms}</dl>
</main>
<aside id="micropay-panel">
<label>Budget for this site, in wei:
<input id="micropay-budget" inputmode="numeric" size="24"></label>
{prepay}
<p>Spent here: <span id="micropay-spent">0 ETH</span> · left of the deposit:
<span id="micropay-left">no channel yet</span></p>
<button id="micropay-pay" type="button">Pay with wallet</button>
<button id="micropay-close" type="button" hidden>Close the channel</button>
<button id="micropay-refund" type="button" hidden>Get the rest back</button>
<p id="micropay-status" role="status"></p>
<noscript>Paying here needs JavaScript and an Ethereum wallet.</noscript>
</aside>
<script type="application/json" id="micropay-offer">{_script_json(offer.to_json())}</script>
</body></html>
"""
    return body.encode("utf-8")
