"""``micropay statement`` and ``micropay receipt verify`` end to end: a reader pays a real
paywall over HTTP on its own anvil, then the console script sums its kept receipts and the
site's ledger, and checks receipts, to the exact base unit."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from paywall_helpers import Server, dev_key
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from micropay._x402 import Receipt
from micropay.channels import ChannelClient
from micropay.deployments import DeploymentRegistry, deploy
from micropay.devnode import anvil
from micropay.http_client import HttpPayer, PaymentPolicy, PaymentTransport
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.paywall import Paywall
from micropay.receipt_log import KeptReceipt
from micropay.receipts import sign_receipt

pytestmark = pytest.mark.standalone

PRICE = 10**13
MICROPAY = shutil.which("micropay", path=str(Path(sys.executable).parent))
DAY_ONE = int(datetime(2026, 1, 1, 12, tzinfo=UTC).timestamp())


@pytest.fixture(scope="module")
def statement_world(tmp_path_factory):
    """A deployment recorded in a CLI home, a reader who paid six requests there (and kept
    two more receipts of another day), and the site's ledger of the six charges."""
    folder = tmp_path_factory.mktemp("statement")
    home = folder / "home"
    with anvil() as w3:
        deployment = deploy(w3, dev_key(0))
        DeploymentRegistry(home / "deployments.json").record(deployment)
        channels = ChannelClient(w3, deployment.channels)
        site_key, reader = dev_key(1), dev_key(2)
        ledger_url = f"sqlite:///{folder / 'site.db'}"
        app = Starlette(routes=[Route("/articles/{slug}", _page)])
        with Ledger.open(ledger_url, channels.domain) as ledger:
            paywall = Paywall(
                app,
                payee=Payee(channels, site_key, book=ledger, confirmations=0),
                prices={"GET /articles/{slug}": PRICE},
            )
            payer = HttpPayer(
                w3, reader, PaymentPolicy(max_price=PRICE), store=home / "wallet.json"
            )
            headers = []
            with (
                Server(paywall) as server,
                httpx.Client(base_url=server.url, transport=PaymentTransport(payer)) as client,
            ):
                for slug in ["a", "b", "a", "a", "c", "b"]:
                    response = client.get(f"/articles/{slug}")
                    assert response.status_code == 200
                    headers.append(response.headers["payment-response"])
                site = f"http://127.0.0.1:{server.port}"
            # Two receipts from the same site on another day, kept as the client keeps them.
            last = Receipt.decode(headers[-1]).signed
            for n, amount in enumerate((3 * PRICE, 5 * PRICE), 1):
                signed = sign_receipt(
                    channels.domain,
                    site_key,
                    receipt_id=bytes([n]) * 32,
                    channel_id=last.channel_id,
                    payer=reader.address,
                    asset=last.asset,
                    resource="GET /archive/2025",
                    amount=amount,
                    cumulative_amount=last.cumulative_amount + n * amount,
                    issued_at=DAY_ONE + n,
                )
                payer.store.receipts.append(
                    KeptReceipt(site, "GET /archive/2025", DAY_ONE + n, None, Receipt.of(signed, 0))
                )
        env = {
            **os.environ,
            "MICROPAY_LOCAL_RPC": w3.provider.endpoint_uri,
            "MICROPAY_HOME": str(home),
            "MICROPAY_NETWORK": "anvil",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
        env.pop("MICROPAY_PRIVATE_KEY", None)
        yield {
            "env": env,
            "folder": folder,
            "site": site,
            "site_key": site_key,
            "ledger_url": ledger_url,
            "headers": headers,
        }


async def _page(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"paid {request.state.payment.amount}")


def micropay(world, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MICROPAY, *args],
        capture_output=True,
        text=True,
        env=world["env"],
        cwd=world["folder"],
        timeout=120,
    )


def test_the_readers_statement_by_site_day_and_resource_is_exact(statement_world):
    world = statement_world
    today = datetime.now(UTC).date().isoformat()

    by_site = micropay(world, "statement")
    assert by_site.returncode == 0, by_site.stderr
    [row] = [line for line in by_site.stdout.splitlines() if world["site"] in line]
    assert [cell.strip() for cell in row.split("│")[2:6]] == ["ETH", "8", str(14 * PRICE), "0"]

    by_day = micropay(world, "statement", "--by", "day", "--format", "csv")
    assert by_day.returncode == 0, by_day.stderr
    assert list(csv.DictReader(io.StringIO(by_day.stdout))) == [
        {
            "day": "2026-01-01",
            "asset": "ETH",
            "count": "2",
            "total": str(8 * PRICE),
            "unverified": "0",
        },
        {"day": today, "asset": "ETH", "count": "6", "total": str(6 * PRICE), "unverified": "0"},
    ]

    by_resource = micropay(world, "statement", "--by", "resource", "--format", "json")
    assert by_resource.returncode == 0, by_resource.stderr
    assert json.loads(by_resource.stdout) == [
        {"resource": resource, "asset": "ETH", "count": count, "total": total, "unverified": 0}
        for resource, count, total in [
            ("GET /archive/2025", 2, 8 * PRICE),
            ("GET /articles/a", 3, 3 * PRICE),
            ("GET /articles/b", 2, 2 * PRICE),
            ("GET /articles/c", 1, PRICE),
        ]
    ]


def test_the_sites_statement_sums_its_ledger_charges(statement_world):
    world = statement_world
    result = micropay(
        world, "statement", "--ledger", world["ledger_url"], "--by", "resource", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {
            "resource": f"GET /articles/{slug}",
            "asset": "ETH",
            "count": n,
            "total": n * PRICE,
            "unverified": 0,
        }
        for slug, n in [("a", 3), ("b", 2), ("c", 1)]
    ]
    missing = micropay(world, "statement", "--ledger", f"sqlite:///{world['folder']}/none.db")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("error: no ledger at")


def test_receipt_verify_names_the_signer_and_refuses_a_bad_receipt(statement_world):
    world = statement_world
    header = world["headers"][0]
    good = micropay(
        world, "receipt", "verify", header, "--site", world["site_key"].address, "--json"
    )
    assert good.returncode == 0, good.stderr
    shown = json.loads(good.stdout)
    assert shown["signer"] == world["site_key"].address
    assert (shown["resource"], shown["amount"]) == ("GET /articles/a", PRICE)
    assert shown["channel"] == "0x" + Receipt.decode(header).channel_id.hex()

    # a receipt whose amount was raised after signing, given as a file
    obj = Receipt.decode(header).to_json()
    tampered = world["folder"] / "tampered.json"
    tampered.write_text(json.dumps({**obj, "amount": str(2 * PRICE)}))
    bad = micropay(world, "receipt", "verify", str(tampered), "--site", world["site_key"].address)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad.stderr
    assert bad.stderr.startswith("error: the receipt is signed by 0x")

    other = micropay(world, "receipt", "verify", header, "--site", dev_key(3).address)
    assert other.returncode == 1 and "not by " + dev_key(3).address in other.stderr
    garbage = micropay(world, "receipt", "verify", "not-a-receipt")
    assert garbage.returncode == 1 and garbage.stderr.startswith("error: not a receipt")
