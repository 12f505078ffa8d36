"""docs/testnet.md runs: its shell blocks, in order, in one bash, against an anvil standing in
for a public testnet, with a USDC-like token and a real PostgreSQL ledger. What the runbook
asks the operator to set (the node's URL, the two keys, the token, the ledger) the test sets;
nothing else is special-cased. The money adds up afterwards, on chain."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_process import ROOT, checkout_env, stop_group

from micropay.channels import ChannelClient
from micropay.devnode import anvil
from micropay.networks import dev_keys
from micropay.tokens import TokenClient

pytestmark = pytest.mark.standalone

RUNBOOK = (ROOT / "docs" / "testnet.md").read_text(encoding="utf8")
BLOCKS = re.findall(r"```sh\n(.*?)```", RUNBOOK, re.S)


def test_the_runbook_covers_the_operators_path():
    text = "\n".join(BLOCKS)
    commands = ("deploy", "serve", "get", "watch", "ledger show", "settle --ledger", "statement")
    for command in commands:
        assert f"micropay $SITE {command}" in text or f"micropay $READER {command}" in text


def test_every_command_in_the_runbook_runs_on_anvil(tmp_path: Path, postgres_ledger_url: str):
    script = tmp_path / "runbook.sh"
    script.write_text(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + "\n".join(BLOCKS),
        encoding="utf8",
    )
    deployer, site, reader = dev_keys(3)
    with anvil() as w3:
        usdc = TokenClient.deploy(w3, deployer, "USD Coin (test)", "USDC", 6)
        usdc.mint(reader.address, 100 * 10**6, deployer)  # the testnet faucet
        env = {
            **checkout_env(tmp_path / "unused-home"),
            "RPC_URL": w3.provider.endpoint_uri,
            "SITE_KEY": "0x" + bytes(site.key).hex(),
            "READER_KEY": "0x" + bytes(reader.key).hex(),
            "SITE_ADDRESS": site.address,
            "TOKEN": usdc.address,
            "LEDGER_URL": postgres_ledger_url,
        }
        env.pop("MICROPAY_HOME")
        # As an operator with the virtualenv activated: `micropay` is on PATH.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        process = subprocess.Popen(
            ["bash", str(script)],
            cwd=tmp_path,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = process.communicate(timeout=600)
        finally:
            stop_group(process)
        assert process.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"

        price = 10_000  # 0.01units of a 6-decimal token
        assert out.count(f"Paid {price} by {reader.address}") == 3  # three articles served
        # The site's CSV statement: one day, three charges, three prices.
        assert re.search(rf"^\d{{4}}-\d\d-\d\d,.*\b3\b.*\b{3 * price}\b", out, re.M), out
        assert re.search(rf"^\s*signer\s+{site.address}$", out, re.M), "the receipt verified"
        # Three paid articles, settled to the site by the runbook's cash-out, to the unit.
        assert usdc.balance_of(site.address) == 3 * price
        [entry] = json.loads((tmp_path / "site" / "deployments.json").read_text()).values()
        contract = ChannelClient(w3, entry["channels"]).address  # checks the contract's code
        # The reader's unspent deposit waits in the contract; nothing else moved.
        held = usdc.balance_of(reader.address) + usdc.balance_of(contract)
        assert held == 100 * 10**6 - 3 * price
