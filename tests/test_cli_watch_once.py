"""``micropay watch --once`` exits non-zero when the round's claim fails, as ``micropay
settle`` does, so an operator (or a cron job) running one round is not told all is well
while the withdrawing channel is not claimed (it exited 0).

What happens: a payer asks to withdraw; the operator runs one round with a relayer's key
(``--dev-account 6``) but forgets ``--payee-key-env``. The watchtower plans the withdraw
claim; ``claims.submit`` catches the ``VoucherError`` ("only the payee ... settles its
claims") into a failed ``ClaimOutcome``; ``watch`` logs it as one ``error:`` line, then
and now exits 1 ("N claim(s) failed"; the outcomes of ``tower.run_once()`` used to go
unread). ``micropay settle`` in the same situation exits 1
("N claim(s) failed"), and the README says every user error is a non-zero exit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from micropay.channels import ChannelClient
from micropay.deployments import DeploymentRegistry, deploy
from micropay.devnode import anvil
from micropay.ledger import Ledger
from micropay.networks import dev_keys
from micropay.payee import Payee
from micropay.payer import Payer

pytestmark = pytest.mark.standalone

MICROPAY = shutil.which("micropay", path=str(Path(sys.executable).parent))
KEYS = dev_keys(8)
SITE, READER, RELAYER = KEYS[2], KEYS[3], "6"
ETH = 10**18


def test_watch_once_exits_non_zero_when_its_claim_fails(tmp_path):
    with anvil() as w3:
        deployment = deploy(w3, KEYS[0])
        DeploymentRegistry(tmp_path / "home" / "deployments.json").record(deployment)
        client = ChannelClient(w3, deployment.channels)
        url = f"sqlite:///{tmp_path / 'site.db'}"
        with Ledger.open(url, client.domain) as book:
            payee = Payee(client, SITE, book=book, safety_margin=60, confirmations=0)
            payer = Payer.open(client, READER, SITE.address, ETH, withdraw_delay=3600)
            payee.accept(payer.config, payer.pay(10**17))
        payer.request_withdraw()

        env = {
            **os.environ,
            "MICROPAY_LOCAL_RPC": w3.provider.endpoint_uri,
            "MICROPAY_HOME": str(tmp_path / "home"),
            "MICROPAY_NETWORK": "anvil",
            "NO_COLOR": "1",
        }
        env.pop("MICROPAY_PRIVATE_KEY", None)
        result = subprocess.run(
            [
                MICROPAY,
                "--dev-account",
                RELAYER,
                "watch",
                "--once",
                "--confirmations",
                "0",
                "--ledger",
                url,
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert client.state(payer.config).claimed == 0  # the withdraw claim did not go out
        assert "claim failed" in result.stderr, result.stderr
        assert result.returncode != 0, (result.stdout, result.stderr)
