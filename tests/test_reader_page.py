"""The 402 page a browser gets: every value from the site's configuration is escaped, and
the offer's JSON cannot close the script element that holds it. No chain needed."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from micropay._x402 import Offer
from micropay.reader_page import SCRIPT_PATH, reader_page, script, wants_html
from micropay.vouchers import ZERO_ADDRESS, VoucherDomain

pytestmark = pytest.mark.offchain

CONTRACT = "0xc0C68246210785562DdAED507F07AcB78292204B"
SITE = "0x3325a78425F17a7E487Eb5666b2bFd93aBb06c70"
HOSTILE = "</script><script>alert(1)</script><b onmouseover='x'>&"


def offer() -> Offer:
    return Offer(10**13, ZERO_ADDRESS, SITE, VoucherDomain(31337, CONTRACT), 10**14, 7200)


def test_config_values_are_escaped_in_the_page() -> None:
    page = reader_page(offer(), f"http://news.example/{HOSTILE}", HOSTILE, "/n'ews").decode()
    assert "<script>alert" not in page and "onmouseover='x'" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page
    assert f'src="/n&#x27;ews{SCRIPT_PATH}"' in page
    # one module script, one JSON script: nothing the description or URL added
    assert len(re.findall(r"<script\b", page)) == 2


def test_the_offer_json_round_trips_and_cannot_break_out() -> None:
    page = reader_page(offer(), "http://news.example/a", "An article").decode()
    found = re.search(r'<script type="application/json" id="micropay-offer">(.*?)</script>', page)
    assert found is not None
    assert json.loads(found.group(1)) == offer().to_json()
    assert "0.00001 ETH (10000000000000 wei)" in page and "2 hours" in page


def test_only_browsers_get_the_page_and_the_script_ships() -> None:
    assert wants_html(b"text/html,application/xhtml+xml,*/*;q=0.8")
    assert not wants_html(b"*/*") and not wants_html(b"application/json") and not wants_html(None)
    assert script().startswith(b"// micropay browser client")


def test_the_prepay_field_is_shown_only_where_the_site_sells_credit() -> None:
    plain = reader_page(offer(), "http://news.example/a", "An article").decode()
    assert "micropay-prepay" not in plain and "Prepaid credit" not in plain
    selling = replace(offer(), prepay=25)
    page = reader_page(selling, "http://news.example/a", "An article").decode()
    assert page.count('id="micropay-prepay"') == 1
    assert "up to 25 reads per signature" in page and "(0: one at a time, up to 25)" in page
    found = re.search(r'<script type="application/json" id="micropay-offer">(.*?)</script>', page)
    assert found is not None and json.loads(found.group(1))["extra"]["prepay"] == 25
