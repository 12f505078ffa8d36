"""The payer's wallet file: one format for the CLI and the HTTP client, older files migrated,
nothing secret written but what cannot be derived, corruption an error and never a blank
slate. (The wallet on a real chain, through the CLI and HttpPayer, is in test_cli.py.)"""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from micropay.errors import PayerStoreError
from micropay.vouchers import ZERO_ADDRESS, ChannelConfig
from micropay.wallet import Wallet, channel_salt, derive_session_key

pytestmark = pytest.mark.offchain

PAYER = Account.from_key(b"\x11" * 32)
SITE = "0x" + "ab" * 20
CONTRACT = "0x" + "cd" * 20


def _config(index: int) -> ChannelConfig:
    key = derive_session_key(PAYER, 31337, CONTRACT, SITE, ZERO_ADDRESS, index)
    salt = channel_salt(index)
    return ChannelConfig(PAYER.address, SITE, ZERO_ADDRESS, key.address, 86_400, salt)


def _first_format_record(index: int, cumulative: int) -> dict:
    return {
        "index": index,
        "config": _config(index).to_json(),
        "cumulative": str(cumulative),
        "signature": None,
        "deposited": "1000",
        "highestSigned": str(cumulative + 10),
    }


def test_the_http_clients_first_store_format_is_upgraded_in_place(tmp_path):
    key = f"eip155:31337|{CONTRACT}|{SITE}|{ZERO_ADDRESS}"
    path = tmp_path / "http.json"
    path.write_text(
        json.dumps(
            {
                "format": 1,
                "channels": {key: _first_format_record(1, 40)},
                "retired": [{"key": key, "why": "channel_closing", **_first_format_record(0, 7)}],
                "siteSpend": {"http://127.0.0.1:8000": "47"},
                "recent": [[1.0, "47"]],
            }
        )
    )
    wallet = Wallet(path)
    retired, live = sorted(wallet.channels(), key=lambda c: c.retired is None)
    assert (live.index, live.acknowledged, live.highest_signed, live.retired) == (1, 40, 50, None)
    assert (retired.index, retired.retired) == (0, "channel_closing")
    assert live.chain_id == 31337 and live.contract.lower() == CONTRACT
    assert live.authorizer(PAYER).address == _config(1).authorizer  # derived, not stored
    assert wallet.site_spend("http://127.0.0.1:8000") == 47
    saved = json.loads(path.read_text())
    assert saved["format"] == 2 and len(saved["channels"]) == 2
    assert path.stat().st_mode & 0o077 == 0
    assert Wallet(path).channels() == wallet.channels()  # and reads back the same


def test_a_channel_belongs_only_to_its_payer(tmp_path):
    key = f"eip155:31337|{CONTRACT}|{SITE}|{ZERO_ADDRESS}"
    (tmp_path / "old.json").write_text(
        json.dumps(
            {
                "format": 1,
                "channels": {key: _first_format_record(0, 0)},
                "siteSpend": {},
                "recent": [],
            }
        )
    )
    [record] = Wallet(tmp_path / "old.json").channels()
    with pytest.raises(PayerStoreError, match="belongs to payer"):
        record.authorizer(Account.create())


@pytest.mark.parametrize(
    "text", ["{not json", '{"format": 9}', '{"format": 2, "channels": [{"chainId": 1}]}']
)
def test_an_unreadable_wallet_is_an_error_not_a_blank_slate(tmp_path, text):
    path = tmp_path / "wallet.json"
    path.write_text(text)
    with pytest.raises(PayerStoreError, match="unreadable"):
        Wallet(path)
    assert path.read_text() == text  # nothing replaced


def test_a_corrupt_channel_file_of_an_older_cli_stops_the_import_and_keeps_the_files(tmp_path):
    folder = tmp_path / "channels"
    folder.mkdir()
    bad = folder / ("00" * 32 + ".json")
    bad.write_text("{half a file")
    with pytest.raises(PayerStoreError, match="corrupt"):
        Wallet(tmp_path / "wallet.json", legacy_folder=folder)
    assert bad.exists() and not (tmp_path / "wallet.json").exists()


_SPEND_LOOP = """
import sys, time
from micropay.wallet import Wallet
wallet = Wallet(sys.argv[1])
for _ in range(int(sys.argv[3])):
    wallet.spent(sys.argv[2], 7, time.time(), 0)
"""


def test_two_processes_spending_from_one_wallet_count_every_payment(tmp_path):
    """Two processes record payments on one wallet file at once: each change takes in what
    the other wrote (under the file's lock) before writing, so none is put back over. (The
    wallet used to be read once, at open, and rewritten whole from memory: the last writer
    won, and a period cap saw part of what was spent.)"""
    import subprocess
    import sys

    store = tmp_path / "wallet.json"
    runs = [
        subprocess.Popen([sys.executable, "-c", _SPEND_LOOP, str(store), site, "40"])
        for site in ("https://a.example", "https://b.example")
    ]
    try:
        assert [run.wait(timeout=120) for run in runs] == [0, 0]
    finally:
        for run in runs:
            run.kill()
    wallet = Wallet(store)
    assert wallet.site_spend("https://a.example") == wallet.site_spend("https://b.example") == 280
    assert wallet.spend_since(0) == 560


def test_a_wallet_sees_what_another_opened_on_the_same_file_spent(tmp_path):
    """Two wallets open on one file (two processes, as far as the file knows): each one's
    caps read what the other spent, and a channel record one writes is not dropped by the
    other's next write."""
    store = tmp_path / "wallet.json"
    first, second = Wallet(store), Wallet(store)
    first.spent("https://a.example", 5, 1_000.0, 0)
    assert second.site_spend("https://a.example") == 5
    second.spent("https://b.example", 3, 1_001.0, 0)
    assert first.spend_since(0) == 8 and Wallet(store).spend_since(0) == 8
