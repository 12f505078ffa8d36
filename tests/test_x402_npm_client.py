"""The official npm x402 client pays a micropay ``exact`` site from node.

``tests/js/x402_exact_pay.mjs`` runs ``@x402/fetch``'s ``wrapFetchWithPayment`` with
``@x402/evm``'s exact client scheme and a viem local account, all unmodified and pinned in
package-lock.json, against the paywall served by uvicorn on loopback over anvil: once with
the site settling itself, once through the ``x402`` package's own facilitator.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from exact_helpers import PRICE, exact_site, funded_usdc
from paywall_helpers import Server, chain, dev_key
from x402_facilitator import x402_facilitator
from x402_models import check_receipt

pytestmark = pytest.mark.standalone

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "js" / "x402_exact_pay.mjs"


@pytest.fixture(scope="module")
def npm_node() -> Iterator:
    with chain() as c:
        yield c


@pytest.fixture(scope="module")
def npm_usdc(npm_node):  # type: ignore[no-untyped-def]
    return funded_usdc(npm_node)


def test_the_npm_client_is_pinned_exactly_in_package_json_and_its_lock():
    package = json.loads((ROOT / "package.json").read_text())["dependencies"]
    locked = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    for name in ("@x402/fetch", "@x402/evm", "@x402/core", "viem"):
        assert package[name][0].isdigit(), f"{name} is pinned to a version, not a range"
        assert locked[f"node_modules/{name}"]["version"] == package[name]
        assert locked[f"node_modules/{name}"]["integrity"].startswith("sha512-")


def node_pays(url: str, key: bytes, asset: str) -> dict:
    node = shutil.which("node")
    assert node is not None, "node is part of the toolchain (make setup)"
    done = subprocess.run(
        [node, str(SCRIPT), url, "0x" + key.hex(), "eip155:31337", asset],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("settled_by", ["site", "facilitator"])
def test_the_npm_client_pays_an_exact_site(npm_node, npm_usdc, tmp_path, settled_by):
    w3 = npm_node.w3
    reader = npm_node.readers[0 if settled_by == "site" else 1]
    gas_payer = dev_key(9)
    with x402_facilitator(w3, gas_payer) as facilitator:
        site = exact_site(
            w3, npm_node.channels.address, npm_usdc.address, npm_node.site,
            f"sqlite:///{tmp_path / 'l.db'}",
            facilitator=facilitator.url if settled_by == "facilitator" else None,
        )  # fmt: skip
        reader_before = npm_usdc.balance_of(reader.address)
        site_before = npm_usdc.balance_of(npm_node.site.address)
        with Server(site) as server:
            result = node_pays(f"{server.url}/report", bytes(reader.key), npm_usdc.address)
    assert result["status"] == 200, result
    assert result["body"] == f"report for {reader.address} (exact)"
    settled = check_receipt(result["paymentResponse"])
    assert settled.success and settled.payer == reader.address
    assert settled.amount == str(PRICE) and settled.network == "eip155:31337"
    assert result["settled"]["transaction"] == settled.transaction  # as npm decoded it
    tx = w3.eth.get_transaction_receipt(settled.transaction)
    submitter = npm_node.site if settled_by == "site" else gas_payer
    assert tx["status"] == 1 and tx["from"] == submitter.address
    assert npm_usdc.balance_of(reader.address) == reader_before - PRICE
    assert npm_usdc.balance_of(npm_node.site.address) == site_before + PRICE
