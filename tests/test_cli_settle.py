"""A site's cash-out from the command line, against a real anvil: vouchers collected over
HTTP into a SQLite ledger, then `micropay ledger show`, `settle --dry-run`, `settle` and
`watch --once`, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from paywall_helpers import Server

from micropay.channels import ChannelClient
from micropay.deployments import DeploymentRegistry, deploy
from micropay.devnode import anvil
from micropay.example_site import create_site
from micropay.http_client import HttpPayer, PaymentPolicy, PaymentTransport
from micropay.ledger import Ledger
from micropay.networks import dev_keys
from micropay.vouchers import VoucherDomain

pytestmark = pytest.mark.standalone

MICROPAY = shutil.which("micropay", path=str(Path(sys.executable).parent))
KEYS = dev_keys(8)
SITE, READERS, RELAYER = KEYS[2], (KEYS[3], KEYS[4]), "6"  # the relayer pays the claims' gas
# Settling is the payee's act: the relayer's claims carry the site's signature of each total.
RELAYED = ("--payee-key-env", "SITE_KEY")
PRICE = 1000
ARTICLE = "/articles/vouchers-explained"


@dataclass(frozen=True)
class Shop:
    url: str
    """The site's ledger."""
    book: Any
    read: Callable[[int, int], None]


@pytest.fixture(scope="module")
def chain_w3():
    with anvil() as w3:
        yield w3


@pytest.fixture(scope="module")
def settle_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("settle")


@pytest.fixture(scope="module")
def contract(chain_w3, settle_dir) -> str:
    """Both contracts deployed by the SDK and recorded where the CLI looks (saves a run)."""
    deployment = deploy(chain_w3, KEYS[0])
    DeploymentRegistry(settle_dir / "home" / "deployments.json").record(deployment)
    return deployment.channels


@pytest.fixture(scope="module")
def micropay(chain_w3, settle_dir, contract):
    env = {
        **os.environ,
        "MICROPAY_LOCAL_RPC": chain_w3.provider.endpoint_uri,
        "MICROPAY_HOME": str(settle_dir / "home"),
        "MICROPAY_NETWORK": "anvil",
        "NO_COLOR": "1",
        "COLUMNS": "250",
    }
    env.pop("MICROPAY_PRIVATE_KEY", None)
    env["SITE_KEY"] = SITE.key.hex()

    def invoke(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [MICROPAY, "--dev-account", RELAYER, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=settle_dir,
            timeout=120,
        )
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    return invoke


@pytest.fixture(scope="module")
def site(chain_w3, settle_dir, contract):
    """The example site on loopback, keeping its vouchers in a SQLite ledger; ``read(i, n)``
    has reader ``i`` pay for ``n`` articles over HTTP."""
    url = f"sqlite:///{settle_dir / 'site.db'}"
    shop = create_site(chain_w3, site_key=SITE, contract=contract, price=PRICE, ledger_url=url)
    with Server(shop.app) as server:
        readers = [
            HttpPayer(
                chain_w3,
                key,
                PaymentPolicy(max_price=PRICE),
                store=settle_dir / f"wallet{n}.json",
            )
            for n, key in enumerate(READERS)
        ]
        clients = [
            httpx.Client(base_url=server.url, transport=PaymentTransport(reader))
            for reader in readers
        ]

        def read(reader: int, articles: int) -> None:
            for _ in range(articles):
                assert clients[reader].get(ARTICLE).status_code == 200

        read(0, 3)
        read(1, 5)
        try:
            yield Shop(url, shop.payee.book, read)
        finally:
            for client in clients:
                client.close()
            shop.payee.book.close()


def channels_of(site: Shop) -> dict[str, int]:
    """Each channel's best voucher, as the site's ledger holds it."""
    book = site.book
    return {"0x" + cid.hex(): book.best(cid).cumulative_amount for cid in book.channel_ids()}


def test_ledger_show_lists_the_channels_the_site_holds(micropay, site, chain_w3, contract):
    listed = json.loads(micropay("ledger", "show", "--ledger", site.url, "--json").stdout)
    assert {row["channel_id"]: row["best_voucher"] for row in listed} == channels_of(site)
    assert sorted(row["best_voucher"] for row in listed) == [3 * PRICE, 5 * PRICE]
    for row in listed:
        assert row["payer"] in {r.address for r in READERS}
        assert (row["claimed"], row["unclaimed"], row["state"]) == (0, row["best_voucher"], "open")
        assert row["deposit"] >= row["best_voucher"] and row["withdraw_requested"] is False
    table = micropay("ledger", "show", "--ledger", site.url).stdout
    for channel_id in channels_of(site):
        assert channel_id in table  # never cut
    assert "0.000000000000005 ETH (5000 wei)" in table


def test_settle_dry_run_shows_amounts_and_gas_and_sends_nothing(micropay, site, chain_w3):
    relayer = KEYS[int(RELAYER)].address
    before = (chain_w3.eth.block_number, chain_w3.eth.get_transaction_count(relayer))
    balance = chain_w3.eth.get_balance(SITE.address)
    shown = micropay("settle", *RELAYED, "--ledger", site.url, "--dry-run").stdout
    dry = json.loads(
        micropay("settle", *RELAYED, "--ledger", site.url, "--dry-run", "--json").stdout
    )
    assert dry["dry_run"] is True
    assert {c["channel_id"]: c["amount"] for c in dry["claims"]} == channels_of(site)
    assert {c["status"] for c in dry["claims"]} == {"would claim"}
    [tx] = dry["transactions"]
    assert tx["claims"] == 2 and tx["estimated_gas"] > 21_000 and tx["tx_hash"] is None
    assert dry["totals"]["amounts"] == [{"token": "0x" + "0" * 40, "symbol": "ETH", "amount": 8000}]
    for channel_id in channels_of(site):
        assert channel_id in shown
    assert "would claim" in shown and "0.000000000000003 ETH (3000 wei)" in shown
    assert f"1: estimated gas {tx['estimated_gas']:,} for 2 claim(s)" in shown
    assert f"estimated gas {tx['estimated_gas']:,}" in shown and "would move" in shown
    # No transaction was sent: no block, no nonce used, no money moved.
    assert (chain_w3.eth.block_number, chain_w3.eth.get_transaction_count(relayer)) == before
    assert chain_w3.eth.get_balance(SITE.address) == balance


def test_settle_claims_every_channel_in_one_claim_many(micropay, site, chain_w3, contract):
    client = ChannelClient(chain_w3, contract)
    balance = chain_w3.eth.get_balance(SITE.address)
    settled = json.loads(micropay("settle", *RELAYED, "--ledger", site.url, "--json").stdout)
    [tx] = settled["transactions"]
    assert tx["claims"] == 2 and tx["gas_used"] > 21_000 and tx["error"] is None
    sent = chain_w3.eth.get_transaction(tx["tx_hash"])
    selector = client.contract.encode_abi("claimManyFor", args=[[], []])[2:10]
    assert sent["to"] == contract and bytes(sent["input"])[:4].hex() == selector
    assert chain_w3.eth.get_transaction_receipt(tx["tx_hash"])["gasUsed"] == tx["gas_used"]
    # The site (not the relayer, who paid the gas) got exactly what its vouchers say.
    assert chain_w3.eth.get_balance(SITE.address) - balance == 8 * PRICE
    assert {c["status"] for c in settled["claims"]} == {"claimed"}
    again = micropay("settle", *RELAYED, "--ledger", site.url)
    assert again.stdout.startswith("nothing to claim") and again.stdout.count("\n") == 1


def test_watch_once_claims_what_the_policy_finds_due(micropay, site, chain_w3):
    owed = channels_of(site)
    site.read(0, 2)  # 2000 more owed on the first reader's channel, 1000 on the second's
    site.read(1, 1)
    [larger] = [cid for cid, total in channels_of(site).items() if total - owed[cid] == 2 * PRICE]
    balance = chain_w3.eth.get_balance(SITE.address)
    common = ("watch", *RELAYED, "--once", "--confirmations", "0", "--ledger", site.url)
    quiet = micropay(*common, "--quiet", "--threshold", "eth=1000000")
    assert quiet.stdout == "" and chain_w3.eth.get_balance(SITE.address) == balance
    # Both are due at 1000; a batch of one claims the larger first, the other waits a round.
    watched = micropay(*common, "--threshold", "eth=1000", "--max-batch", "1").stdout
    [claim] = [line for line in watched.splitlines() if line.startswith("claimed")]
    assert f"0.000000000000002 ETH (2000 wei) on {larger} (threshold) in tx 0x" in claim
    assert "gas " in claim and "for 1 claim(s)" in claim
    assert "round 1: 2 channel(s) watched, 1 claim(s) made" in watched
    assert chain_w3.eth.get_balance(SITE.address) - balance == 2 * PRICE


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("settle", "--ledger", "sqlite:///typo.db"), "no voucher ledger at typo.db"),
        (("ledger", "show", "--ledger", "sqlite:///other.db"), "holds vouchers for chain 31337"),
        (("ledger", "show", "--ledger", "sqlite:///garbage.db"), "is not a SQLite database"),
        (("settle", "--ledger", "sqlite:///site.db", "--gas-multiple", "-1"), "gas_multiple"),
        (("watch", "--ledger", "sqlite:///site.db", "--threshold", "eth=lots"), "--threshold"),
    ],
    ids=["missing", "foreign", "not-sqlite", "bad-gas-multiple", "bad-threshold"],
)
def test_bad_input_is_one_line_and_exit_1(micropay, site, settle_dir, args, message):
    Ledger.open(
        f"sqlite:///{settle_dir / 'other.db'}", VoucherDomain(31337, "0x" + "ab" * 20)
    ).close()
    (settle_dir / "garbage.db").write_text("not a database")
    result = micropay(*args, ok=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not (settle_dir / "typo.db").exists()  # a mistyped ledger is not created
